package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/firewall/nftables"
	"github.com/knit-dev/knit/internal/testutil"
)

// The soak test makes and removes containers for many cycles (run --rm,
// and run -d then rm -f, with a published port, on the default network and
// on a DNS-enabled one, where the run --rm asks an outside name, which the
// DNS server forwards from the container's namespace, through a socket
// that must not keep it, or its veth, alive) and then checks that nothing
// grew: links, mounts,
// nft elements and rules, processes, the DNS server's open files, the
// store's keys, and the store file beyond the size it reached in its first
// cycles (bbolt reuses freed pages, it does not shrink the file).
//
// KNIT_SOAK=N sets the cycles (default soakDefault, about a minute);
// KNIT_SOAK_TIME (a Go duration) bounds the time, default soakDefaultTime
// for the default count and an hour otherwise. The test stops at the
// bound, reports how many cycles ran and checks what it has.

const (
	soakDefault     = 200
	soakDefaultTime = 90 * time.Second
	soakWarmup      = 20 // cycles before the baseline: first-time objects
	soakBatch       = 25 // cycles per command in the sandbox
	// soakStoreSlack is how much the store file may exceed its high-water
	// mark: a few pages of bbolt's free list and a grown mmap step.
	soakStoreSlack = 64 << 10
)

// soakScript runs cycles FROM to TO-1; cycle i's kind is i%4. It stops at
// the first failure, saying which.
const soakScript = `knit=$1; bb=$2; i=$3; end=$4; p=$5
while [ "$i" -lt "$end" ]; do
	case $((i % 4)) in
	0) out=$("$knit" run --rm --network soak -p "$p" --rootfs "$bb" sh -c 'nslookup outside.test | grep -qF 203.0.113.7' 2>&1) ;;
	1) out=$("$knit" run -d --name "soak$i" -p "$p" --rootfs "$bb" sleep 300 2>&1) &&
	   out=$("$knit" rm -f "soak$i" 2>&1) ;;
	2) out=$("$knit" run --rm -p "$p" --rootfs "$bb" true 2>&1) ;;
	3) out=$("$knit" run -d --name "soak$i" --network soak -p "$p" --rootfs "$bb" sleep 300 2>&1) &&
	   out=$("$knit" rm -f "soak$i" 2>&1) ;;
	esac || { echo "cycle $i (kind $((i % 4))): $out"; exit 1; }
	i=$((i + 1))
done`

// soakFigures are the quantities that must not grow.
type soakFigures struct {
	links, mounts, nftElems, nftLines, procs, dnsFds, storeKeys, storeBuckets int
	storeSize                                                                 int
	dnsRSS                                                                    string
}

func (f soakFigures) String() string {
	return fmt.Sprintf("links %d, mounts %d, nft elements %d, nft lines %d, processes %d, DNS server fds %d (RSS %s), store buckets %d, keys %d, file %d bytes",
		f.links, f.mounts, f.nftElems, f.nftLines, f.procs, f.dnsFds, f.dnsRSS, f.storeBuckets, f.storeKeys, f.storeSize)
}

func soakMeasure(t *testing.T, s *testutil.Sandbox) soakFigures {
	t.Helper()
	// The last commands' knit-linger holders (their netfilter sockets,
	// kept 0.2 s after they exit) end by themselves; one caught between
	// fork and exec, or not yet reaped, has no name of its own to tell
	// it by. The count waits for them, up to a few seconds.
	st := assertConsistent(t, s, "soak")
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if !slices.ContainsFunc(st.procs, func(p sandboxProc) bool { return strings.HasPrefix(p.args, nftables.LingerName+" ") }) {
			break
		}
		st = readState(t, s)
	}
	time.Sleep(300 * time.Millisecond) // past any holder started just before the last read
	st = assertConsistent(t, s, "soak")
	f := soakFigures{storeSize: st.storeSize, procs: len(st.procs) - 1} // minus the shell that listed them
	f.links = len(strings.Split(strings.TrimSpace(s.MustRun(t, "ip", "-o", "link")), "\n"))
	f.mounts = len(strings.Split(strings.TrimSpace(s.MustRun(t, "cat", "/proc/self/mountinfo")), "\n"))
	f.nftElems = len(nftOwnerRE.FindAllString(st.nft, -1))
	f.nftLines = strings.Count(st.nft, "\n")
	for _, m := range st.buckets {
		f.storeKeys += len(m)
	}
	f.storeBuckets = len(st.buckets)
	dns := filepath.Join(s.ExecRoot(), "dns", "server.pid")
	out := s.MustRun(t, "sh", "-c", `pid=$(cat "$1") && ls "/proc/$pid/fd" | wc -l && grep VmRSS "/proc/$pid/status"`, "sh", dns)
	fields := strings.Fields(out)
	if len(fields) < 3 {
		t.Fatalf("DNS server: %q", out)
	}
	f.dnsFds, _ = strconv.Atoi(fields[0])
	f.dnsRSS = fields[2] + " kB"
	return f
}

func TestSoak(t *testing.T) {
	cycles, budget := soakDefault, soakDefaultTime
	if v := os.Getenv("KNIT_SOAK"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("KNIT_SOAK=%q: want a number of cycles", v)
		}
		cycles, budget = n, time.Hour
	}
	if v := os.Getenv("KNIT_SOAK_TIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("KNIT_SOAK_TIME=%q: %v", v, err)
		}
		budget = d
	}
	s := sandbox(t)
	// The knit binary and the rootfs are copied into the sandbox: a long
	// soak outlives the minute after which another test binary may take
	// this one's artifact cache for a dead one's and remove it.
	knit, bb, dnstool := filepath.Join(s.Dir(), "knit"), filepath.Join(s.Dir(), "busybox"), filepath.Join(s.Dir(), "dnstool")
	_, tool := dnsRootfs(t)
	s.MustRun(t, "cp", "-a", testutil.KnitBinary(t), knit)
	s.MustRun(t, "cp", "-a", testutil.Busybox(t), bb)
	s.MustRun(t, "cp", "-a", tool, dnstool)
	// The host's resolver, which answers the outside name the cycles ask.
	s.Start(t, "ip", "netns", "exec", "world", dnstool, "serve", "-listen", "198.51.100.2:53", "outside.test=203.0.113.7")
	eventually(t, func() (string, error) { // listening before the first cycle asks it
		r := s.Run(dnstool, "query", "-server", "198.51.100.2:53", "outside.test")
		if !strings.Contains(r.Stdout, "A 203.0.113.7") {
			return r.Stdout + r.Stderr, errors.New("the world's DNS server does not answer yet")
		}
		return r.Stdout, nil
	})
	s.MustRun(t, knit, "network", "create", "soak")
	// A container that stays: its network, its DNS server and its
	// supervisor live through every cycle.
	s.MustRun(t, knit, "run", "-d", "--name", "anchor", "-h", "anchor", "--network", "soak", "-p", "8090:80",
		"--rootfs", bb, "httpd", "-f", "-p", "80", "-h", "/etc")

	// A random host port each cycle: the store must not grow by a bucket
	// per port ever used (empty buckets are deleted).
	publish := "8081:80"
	if knownBugs() {
		publish = "80"
	}
	batch := func(from, to int) {
		t.Helper()
		if r := s.Run("sh", "-c", soakScript, "sh", knit, bb, strconv.Itoa(from), strconv.Itoa(to), publish); r.Code != 0 {
			t.Fatalf("soak cycles %d-%d: exit %d\n%s%s", from, to-1, r.Code, r.Stdout, r.Stderr)
		}
	}
	batch(0, soakWarmup)
	before := soakMeasure(t, s)
	highWater := before.storeSize

	start := time.Now()
	done := soakWarmup
	for done < soakWarmup+cycles && time.Since(start) < budget {
		next := min(done+soakBatch, soakWarmup+cycles)
		batch(done, next)
		done = next
		if (done-soakWarmup)%1000 == 0 {
			rss := s.Run("sh", "-c", `grep -h 'VmRSS\|Threads' "/proc/$(cat "$1")/status" | tr -s ' \t' ' ' | tr '\n' ' '`, "sh",
				filepath.Join(s.ExecRoot(), "dns", "server.pid")).Stdout
			t.Logf("soak: %d cycles, %v; DNS server: %s", done-soakWarmup, time.Since(start).Round(time.Second), rss)
		}
	}
	took := time.Since(start)
	ran := done - soakWarmup
	reaches(t, s, world, "198.51.100.1", 8090, "anchor")
	after := soakMeasure(t, s)
	t.Logf("soak: %d cycles (of %d asked) in %v, %.1f ms per cycle", ran, cycles, took.Round(time.Millisecond),
		float64(took.Microseconds())/1000/float64(max(ran, 1)))
	t.Logf("before: %v", before)
	t.Logf("after:  %v", after)
	if ran < cycles {
		t.Logf("soak: stopped at the time bound %v", budget)
	}
	grew := func(what string, b, a int) {
		if a > b {
			t.Errorf("%s grew from %d to %d over %d cycles", what, b, a, ran)
		}
	}
	grew("links", before.links, after.links)
	grew("mounts", before.mounts, after.mounts)
	grew("nft elements", before.nftElems, after.nftElems)
	grew("nft table lines", before.nftLines, after.nftLines)
	grew("processes", before.procs, after.procs)
	grew("DNS server fds", before.dnsFds, after.dnsFds)
	grew("store keys", before.storeKeys, after.storeKeys)
	grew("store buckets", before.storeBuckets, after.storeBuckets)
	grew("store file (beyond its high-water mark and slack)", highWater+soakStoreSlack, after.storeSize)
}

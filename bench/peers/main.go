// Command peers measures knit side by side with the tools a user would pick
// instead, on this machine and in the same run, and prints the figures in
// Go's benchmark format (bench/report turns them into a Markdown report and
// a PNG chart). It needs root; every measurement runs in a throwaway
// network, mount and PID namespace of its own, so nothing touches the
// machine's network and nothing it starts outlives it.
//
//	go build -o /tmp/peers ./bench/peers && sudo /tmp/peers -quick > out.txt
//
// Sections (-sections, comma-separated):
//
//	attach    attach and detach of a container with one published port at
//	          the 1st, 10th, 100th and 1000th container, per tool: knit
//	          (engine API), the floor (bench/peers/floor), the CNI reference
//	          chain bridge+host-local+portmap via cnitool, netavark via its
//	          JSON; each tool in a fresh namespace. With -knit-bin and
//	          -docker, also whole commands as a user types them: `knit run
//	          -d -p`/`knit rm -f` and `docker run -d -p`/`docker rm -f`
//	          (dockerd started in the sandbox). The tools that take seconds
//	          (knit, knit without -p, the floor) run -rounds times in turn and
//	          report the median round; before each tool's sandbox, the run
//	          waits until the kernel has destroyed the previous one's
//	          namespaces
//	datapath  iperf3 through knit's bridge vs a hand-made veth pair, and
//	          through a published port vs direct
//	dns       knit's DNS server vs aardvark-dns, same names, same load
//
// Lines that are not benchmark results are "key: value" configuration
// lines (machine, date, notes), which benchmark tools carry along.
package main

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/knit-dev/knit/internal/runner"
)

// Flags, shared by the parent and the sandboxed children it starts (the
// parent passes its own values on).
var (
	quick    = flag.Bool("quick", false, "containers up to the 100th only, fewer samples and repeats")
	sections = flag.String("sections", "attach,datapath,dns", "sections to run, comma-separated")
	tools    = flag.String("tools", "knit,floor,cni,netavark,knit-noport", "tools of the attach section, comma-separated")
	samples  = flag.Int("samples", 0, "attach/detach samples per level (0: 20, or 10 with -quick)")
	rounds   = flag.Int("rounds", 0, "rounds of the attach tools that take seconds (knit, knit-noport, floor), in turn; each figure is the median of the rounds' (0: 5, or 3 with -quick)")
	budget   = flag.Duration("budget", 10*time.Minute, "time a tool may take to reach its levels in the attach section; past it, the higher levels are skipped and the report says so")
	knitCNI  = flag.String("knit-cni", "", "HOOK: a knit binary to measure as a CNI plugin via cnitool (column \"knit-cni\"); empty leaves the column out")
	knitBin  = flag.String("knit-bin", "", "a knit binary to measure as a whole command, `knit run -d`/`knit rm -f` (column \"knit-cli\"); empty leaves the column out")
	dnsperfT = flag.Int("dnsperf-threads", 1, "dnsperf's threads (-T) in the DNS section: one is dnsperf's default, and what the report's dnsperf figures use")
	dnsPin   = flag.Bool("dns-pin", false, "DNS section: each server on the last CPU only, the loads on the others (taskset), so that the load is not what bounds a server")
	docker   = flag.Bool("docker", false, "also measure Docker as a whole command, `docker run -d`/`docker rm -f`, with Debian's dockerd in the sandbox (column \"docker\")")
	inside   = flag.String("inside", "", "internal: the section to run, already inside a sandbox")
	tool     = flag.String("tool", "", "internal: the tool of -inside attach")
)

// The main goroutine keeps the main thread, as cmd/knit's does (runner.Init
// needs it).
func init() { runtime.LockOSThread() }

func main() {
	if len(os.Args) > 1 && os.Args[1] == runner.InitArg {
		runner.Init()
	}
	if len(os.Args) > 1 && os.Args[1] == dnsServerArg {
		serveKnitDNS(os.Args[2:])
		return
	}
	flag.Parse()
	if *samples == 0 {
		*samples = 20
		if *quick {
			*samples = 10
		}
	}
	if *rounds == 0 {
		*rounds = 5
		if *quick {
			*rounds = 3
		}
	}
	if *inside != "" {
		if err := runInside(*inside, *tool); err != nil {
			fmt.Fprintf(os.Stderr, "peers: %s %s: %v\n", *inside, *tool, err)
			os.Exit(1)
		}
		return
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "peers: needs root (it makes namespaces, bridges and firewall rules in sandboxes)")
		os.Exit(2)
	}
	if err := runAll(); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func runInside(section, tool string) error {
	switch section {
	case "attach":
		return attachSection(tool)
	case "datapath":
		return datapathSection()
	case "dns":
		return dnsSection()
	}
	return fmt.Errorf("unknown section %q", section)
}

// runAll prints the configuration lines and runs each section (and in the
// attach section each tool) in a sandbox of its own, one after the other.
func runAll() error {
	fmt.Printf("date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	for _, kv := range machine() {
		fmt.Printf("%s: %s\n", kv[0], kv[1])
	}
	mode := "full"
	if *quick {
		mode = "quick"
	}
	fmt.Printf("load-start: %s\n", loadavg())
	defer func() { fmt.Printf("load-end: %s\n", loadavg()) }()
	fmt.Printf("mode: %s\n", mode)
	fmt.Printf("samples: %d\n", *samples)
	failed := 0
	for _, s := range strings.Split(*sections, ",") {
		switch s {
		case "attach":
			ts := strings.Split(*tools, ",")
			if *knitCNI != "" {
				ts = append(ts, "knit-cni")
			}
			if *knitBin != "" && !slices.Contains(ts, "knit-cli") {
				ts = append(ts, "knit-cli")
			}
			if *docker && !slices.Contains(ts, "docker") {
				ts = append(ts, "docker")
			}
			failed += attachTools(ts)
		case "datapath", "dns":
			settle(s)
			if err := sandboxed(s, "", 10*time.Minute, os.Stdout); err != nil {
				failed++
				fmt.Printf("error-%s: %s\n", s, oneLine(err.Error()))
			}
		default:
			return fmt.Errorf("unknown section %q", s)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d sandboxed run(s) failed (see error-* lines)", failed)
	}
	return nil
}

// sandboxed runs this program again with -inside section under unshare:
// a new network, mount and PID namespace whose first process is the
// program, so that every process it starts dies with it. Its benchmark
// lines are copied to stdout as they come; it is killed after limit.
func sandboxed(section, tool string, limit time.Duration, w io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	args := []string{"--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private", "--",
		self, "-inside", section, "-tool", tool, "-quick=" + fmt.Sprint(*quick), "-samples", fmt.Sprint(*samples),
		"-budget", budget.String(), "-knit-cni", *knitCNI, "-knit-bin", *knitBin, "-dnsperf-threads", fmt.Sprint(*dnsperfT), "-dns-pin=" + fmt.Sprint(*dnsPin)}
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "peers: %s %s: start (limit %s)\n", section, tool, limit)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	copyLines(w, out)
	err = cmd.Wait()
	fmt.Fprintf(os.Stderr, "peers: %s %s: done in %s\n", section, tool, time.Since(t0).Round(time.Second))
	if ctx.Err() != nil {
		return fmt.Errorf("killed after %s", limit)
	}
	return err
}

func copyLines(w io.Writer, r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fmt.Fprintln(w, sc.Text())
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// machine describes this machine in key: value pairs.
func machine() [][2]string {
	var kv [][2]string
	add := func(k, v string) {
		if v = oneLine(v); v != "" {
			kv = append(kv, [2]string{k, v})
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n := 0
		model := ""
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "processor") {
				n++
			}
			if strings.HasPrefix(l, "model name") && model == "" {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
			}
		}
		add("cpu", fmt.Sprintf("%s, %d vCPU", model, n))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		add("memory", fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20)))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		add("kernel", string(b))
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		add("os", "Debian "+string(b))
	}
	add("version-cni-plugins", pkgVersion("containernetworking-plugins"))
	add("version-netavark", pkgVersion("netavark"))
	add("version-aardvark-dns", pkgVersion("aardvark-dns"))
	add("version-iptables", pkgVersion("iptables"))
	add("version-docker", pkgVersion("docker.io"))
	if p, err := exec.LookPath("cnitool"); err == nil {
		if bi, err := buildinfo.ReadFile(p); err == nil {
			add("version-cnitool", bi.Main.Version)
		}
	}
	return kv
}

func pkgVersion(name string) string {
	b, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", name).Output()
	if err != nil {
		return ""
	}
	return string(b)
}

// loadavg is the machine's load average over 1, 5 and 15 minutes: the
// machine is shared, and the figures are only as quiet as it was.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " / ")
}

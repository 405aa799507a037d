// Package e2e runs the knit binary in throwaway sandboxes and asserts on real
// traffic and real kernel state. Every test needs root; each makes its own
// sandbox (network, mount and PID namespaces) that dies with it.
package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/testutil"
)

// sandbox returns a fresh sandbox with knit built.
func sandbox(t *testing.T) *testutil.Sandbox {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.KnitBinary(t)
	return testutil.NewSandbox(t)
}

// ipOf reads a container's address from inspect.
func ipOf(t *testing.T, s *testutil.Sandbox, name string) string {
	t.Helper()
	return strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name))
}

func TestTwoContainersPingEachOtherAndTheGateway(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "ca", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "cb", "--rootfs", bb, "sleep", "300")
	ipA, ipB := ipOf(t, s, "ca"), ipOf(t, s, "cb")
	if ipA != "172.17.0.2" || ipB != "172.17.0.3" {
		t.Fatalf("addresses = %s, %s; want the lowest free ones, 172.17.0.2 and 172.17.0.3", ipA, ipB)
	}
	s.MustKnit(t, "exec", "ca", "ping", "-c1", "-W2", ipB)
	s.MustKnit(t, "exec", "cb", "ping", "-c1", "-W2", ipA)
	s.MustKnit(t, "exec", "ca", "ping", "-c1", "-W2", "172.17.0.1")
	// The host reaches the container too.
	s.MustRun(t, "ping", "-c1", "-W2", ipA)

	// Kernel state: eth0 with the address, MTU and the MAC derived from it.
	link := s.MustKnit(t, "exec", "ca", "ip", "-o", "addr", "show", "eth0")
	if !strings.Contains(link, "inet 172.17.0.2/16") {
		t.Errorf("eth0 in a: %s", link)
	}
	mac := s.MustKnit(t, "exec", "ca", "cat", "/sys/class/net/eth0/address")
	if strings.TrimSpace(mac) != "02:42:ac:11:00:02" {
		t.Errorf("eth0 MAC = %q, want 02:42:ac:11:00:02", mac)
	}
	route := s.MustKnit(t, "exec", "ca", "ip", "route")
	if !strings.Contains(route, "default via 172.17.0.1 dev eth0") {
		t.Errorf("routes in a:\n%s", route)
	}
	// Host side: the bridge holds the gateway; two vethNNNNNNN ports on it.
	br := s.MustRun(t, "ip", "-o", "addr", "show", "knit0")
	if !strings.Contains(br, "inet 172.17.0.1/16") {
		t.Errorf("knit0: %s", br)
	}
	ports := s.MustRun(t, "ip", "-o", "link", "show", "master", "knit0")
	if n := len(regexp.MustCompile(`veth[0-9a-f]{7}@`).FindAllString(ports, -1)); n != 2 {
		t.Errorf("bridge ports: want 2 veth[7 hex], got:\n%s", ports)
	}
	// An IPv4-only network: no IPv6 chatter flooded across the bridge.
	if v6 := s.MustKnit(t, "exec", "ca", "ip", "-o", "-6", "addr", "show", "eth0"); v6 != "" {
		t.Errorf("eth0 on an IPv4-only network has IPv6 addresses: %s", v6)
	}
	ports6 := "for p in $(ip -o link show master knit0 | awk -F': ' '{print $2}' | cut -d@ -f1); do ip -o -6 addr show dev $p; done"
	if v6 := s.MustRun(t, "sh", "-c", ports6); v6 != "" {
		t.Errorf("bridge ports have IPv6 addresses: %s", v6)
	}
	if fwd := s.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(fwd) != "1" {
		t.Errorf("ip_forward = %q, want 1", fwd)
	}
}

func TestHostReachesHTTPServer(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	// httpd serves the container's /etc, so the body is its /etc/hostname.
	s.MustKnit(t, "run", "-d", "--name", "web", "-h", "hello-from-knit", "--rootfs", bb, "httpd", "-f", "-p", "80", "-h", "/etc")
	ip := ipOf(t, s, "web")
	body := eventually(t, func() (string, error) {
		return httpGet(s, ip, 80, "/hostname")
	})
	if strings.TrimSpace(body) != "hello-from-knit" {
		t.Fatalf("body = %q", body)
	}
}

func TestModes(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	none := s.MustKnit(t, "run", "--rm", "--network", "none", "--rootfs", bb, "ip", "-o", "link")
	if !strings.Contains(none, "lo:") || strings.Contains(none, "eth0") || !strings.Contains(none, "UP") {
		t.Errorf("none mode links:\n%s", none)
	}
	host := s.MustKnit(t, "run", "--rm", "--network", "host", "--rootfs", bb, "ip", "-o", "link")
	if !strings.Contains(host, "wan0") {
		t.Errorf("host mode should see the host's wan0:\n%s", host)
	}
	// container:NAME shares the network namespace: same eth0 address, and
	// the two talk over 127.0.0.1.
	s.MustKnit(t, "run", "-d", "--name", "srv", "--rootfs", bb, "nc", "-ll", "-p", "7000", "-e", "echo", "pong")
	ip := ipOf(t, s, "srv")
	joined := s.MustKnit(t, "run", "--rm", "--network", "container:srv", "--rootfs", bb, "ip", "-o", "addr", "show", "eth0")
	if !strings.Contains(joined, ip+"/") {
		t.Errorf("container:srv eth0 = %s, want %s", joined, ip)
	}
	// As with Docker, --dns-search and --dns-option are ignored there (the
	// resolv.conf is srv's), with a warning; --dns is refused.
	r := s.Knit("run", "--rm", "--network", "container:srv", "--dns-search", "example.org", "--dns-option", "ndots:3", "--rootfs", bb, "cat", "/etc/resolv.conf")
	if r.Code != 0 || strings.Contains(r.Stdout, "example.org") || strings.Contains(r.Stdout, "ndots:3") || !strings.Contains(r.Stderr, "WARNING: --dns-search and --dns-option have no effect") {
		t.Errorf("container:srv with --dns-search: exit %d, resolv.conf:\n%s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	got := eventually(t, func() (string, error) {
		r := s.Knit("run", "--rm", "--network", "container:srv", "--rootfs", bb, "nc", "127.0.0.1", "7000")
		if !strings.Contains(r.Stdout, "pong") {
			return "", fmt.Errorf("nc: %q %q", r.Stdout, r.Stderr)
		}
		return r.Stdout, nil
	})
	_ = got
	// Host networking with no --dns* flag gets the host's resolv.conf as
	// it is, as Docker's: its comments and sortlist, and no public
	// fallback for a file that names no server (the resolver then asks
	// 127.0.0.1, the host's, which the container shares). With one, it is
	// built from it.
	for _, host := range []string{"# the host's own\nnameserver 127.0.0.53\nsortlist 198.51.100.0/255.255.255.0\n", "search example.test\n"} {
		s.MustRun(t, "sh", "-c", `printf '%s' "$1" > /etc/resolv.conf`, "sh", host) // the sandbox's
		if got := s.MustKnit(t, "run", "--rm", "--network", "host", "--rootfs", bb, "cat", "/etc/resolv.conf"); got != host {
			t.Errorf("host mode's resolv.conf:\n%q\nwant the host's:\n%q", got, host)
		}
	}
	if got := s.MustKnit(t, "run", "--rm", "--network", "host", "--dns-search", "other.test", "--rootfs", bb, "cat", "/etc/resolv.conf"); !strings.Contains(got, "search other.test") {
		t.Errorf("host mode with --dns-search: %q", got)
	}
}

func TestContainerModeBlocksRemoval(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "owner", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "joiner", "--network", "container:owner", "--rootfs", bb, "sleep", "300")
	r := s.Knit("rm", "-f", "owner")
	if r.Code != 0 {
		t.Fatalf("rm -f owner: %+v", r)
	}
	s.MustKnit(t, "run", "-d", "--name", "owner2", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "joiner2", "--network", "container:owner2", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "stop", "-t", "0", "owner2")
	r = s.Knit("rm", "owner2")
	if r.Code != 1 || !strings.Contains(r.Stderr, "joiner2") {
		t.Fatalf("rm owner2 while joiner2 uses its namespace: code %d, stderr %q", r.Code, r.Stderr)
	}
}

func TestFiles(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	hosts := s.MustKnit(t, "run", "--rm", "--name", "f1", "-h", "web.example.org", "--add-host", "db.local:192.0.2.10",
		"--add-host", "gw:host-gateway", "--rootfs", bb, "cat", "/etc/hosts")
	for _, want := range []string{"127.0.0.1\tlocalhost", "192.0.2.10\tdb.local", "172.17.0.1\tgw", "172.17.0.2\tweb.example.org web f1"} {
		if !strings.Contains(hosts, want) {
			t.Errorf("/etc/hosts lacks %q:\n%s", want, hosts)
		}
	}
	hn := s.MustKnit(t, "run", "--rm", "-h", "web.example.org", "--rootfs", bb, "sh", "-c", "hostname; cat /etc/hostname")
	if hn != "web.example.org\nweb.example.org\n" {
		t.Errorf("hostname output %q", hn)
	}
	// --domainname: the UTS domain name, and hosts names HOST.DOMAIN first, as Docker's.
	dn := s.MustKnit(t, "run", "--rm", "--name", "f2", "-h", "db", "--domainname", "corp.example", "--rootfs", bb,
		"sh", "-c", "cat /proc/sys/kernel/domainname; hostname; grep f2 /etc/hosts")
	if dn != "corp.example\ndb\n172.17.0.2\tdb.corp.example db f2\n" {
		t.Errorf("--domainname corp.example: %q", dn)
	}
	if r := s.Knit("run", "--rm", "--domainname", "bad!name", "--rootfs", bb, "true"); r.Code != 125 || !strings.Contains(r.Stderr, "invalid domainname") {
		t.Errorf("--domainname bad!name: exit %d, %q", r.Code, r.Stderr)
	}
	// The default hostname is the first 12 characters of the ID.
	id := strings.TrimSpace(s.MustKnit(t, "run", "-d", "--rootfs", bb, "sleep", "300"))
	if got := strings.TrimSpace(s.MustKnit(t, "exec", id, "hostname")); got != id[:12] {
		t.Errorf("default hostname = %q, want %q", got, id[:12])
	}
	// resolv.conf: the sandbox's (nameserver 198.51.100.2) by default ...
	rc := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "cat", "/etc/resolv.conf")
	if !strings.Contains(rc, "nameserver 198.51.100.2") {
		t.Errorf("default resolv.conf:\n%s", rc)
	}
	// ... replaced part by part by the flags.
	rc = s.MustKnit(t, "run", "--rm", "--dns", "203.0.113.53", "--dns-search", "corp.example", "--dns-option", "ndots:2",
		"--rootfs", bb, "cat", "/etc/resolv.conf")
	for _, want := range []string{"nameserver 203.0.113.53", "search corp.example", "options ndots:2"} {
		if !strings.Contains(rc, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, rc)
		}
	}
	if strings.Contains(rc, "198.51.100.2") {
		t.Errorf("--dns must replace the host's nameservers:\n%s", rc)
	}
	// The host's own files are untouched.
	if h := s.MustRun(t, "cat", "/etc/hostname"); strings.Contains(h, "web.example.org") {
		t.Errorf("host /etc/hostname changed: %q", h)
	}
}

func TestExitCodes(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	cases := []struct {
		args []string
		code int
	}{
		{[]string{"run", "--rm", "--rootfs", bb, "true"}, 0},
		{[]string{"run", "--rm", "--rootfs", bb, "sh", "-c", "exit 3"}, 3},
		{[]string{"run", "--rm", "--rootfs", bb, "no-such-command"}, 127},
		{[]string{"run", "--rm", "--rootfs", bb, "/etc/hosts"}, 126},
		{[]string{"run", "--rm", "--network", "no-such-net", "--rootfs", bb, "true"}, 125},
		// run -d too, as docker run -d: the command's failure, not an ID.
		{[]string{"run", "-d", "--name", "nocmd", "--rootfs", bb, "no-such-command"}, 127},
		{[]string{"run", "-d", "--rootfs", bb, "/etc/hosts"}, 126},
		{[]string{"run", "-d", "--rm", "--rootfs", bb, "no-such-command"}, 127},
		// -dit attaches no stdin: no terminal needed (stdin is not one here).
		{[]string{"run", "-dit", "--rm", "--rootfs", bb, "true"}, 0},
	}
	for _, c := range cases {
		if r := s.Knit(c.args...); r.Code != c.code {
			t.Errorf("knit %s: exit %d, want %d (stderr %q)", strings.Join(c.args, " "), r.Code, c.code, r.Stderr)
		} else if c.code == 127 && !strings.Contains(r.Stderr, "no-such-command") {
			t.Errorf("knit %s: stderr %q does not name the command", strings.Join(c.args, " "), r.Stderr)
		}
	}
	// The container whose command was not found is kept, exited with 127.
	eventually(t, func() (string, error) {
		st := strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "nocmd"))
		if st != "exited 127" {
			return "", fmt.Errorf("nocmd: %s", st)
		}
		return st, nil
	})
	// A container killed by a signal reports 128+N; the foreground run
	// exits with it. (PID 1 cannot SIGKILL itself, so kill it from outside.)
	s.MustKnit(t, "run", "-d", "--name", "victim", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "kill", "victim")
	eventually(t, func() (string, error) {
		st := strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "victim"))
		if st != "exited 137" {
			return "", fmt.Errorf("victim: %s", st)
		}
		return st, nil
	})
	fg := s.Start(t, testutil.KnitBinary(t), "run", "--name", "fg", "--rootfs", bb, "sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done")
	eventually(t, func() (string, error) {
		r := s.Knit("inspect", "-f", "{{.State.Status}}", "fg") // may not exist yet
		if st := strings.TrimSpace(r.Stdout); st != "running" {
			return "", fmt.Errorf("fg: %q %s", st, r.Stderr)
		}
		return "", nil
	})
	// SIGTERM to the foreground knit run is forwarded to the container.
	pid := strings.TrimSpace(s.MustRun(t, "pgrep", "-f", "^"+testutil.KnitBinary(t)+" run --name fg"))
	s.MustRun(t, "kill", "-TERM", pid)
	err := fg.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Errorf("foreground run after SIGTERM: %v, want exit status 7", err)
	}
}

// A detached shell waits for input with -i (a silent stdin kept open) or
// -t (a terminal nobody types into), as with docker run -di/-dt/-dit, and
// ends at once without either: its stdin is /dev/null.
func TestDetachedShellWaitsForInput(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	for _, f := range []string{"-di", "-dt", "-dit"} {
		s.MustKnit(t, "run", f, "--name", "sh"+f, "--rootfs", bb, "sh")
	}
	s.MustKnit(t, "run", "-d", "--name", "sh-d", "--rootfs", bb, "sh")
	if code := strings.TrimSpace(s.MustKnit(t, "wait", "sh-d")); code != "0" {
		t.Errorf("sh without stdin: exit %s, want 0", code)
	}
	for _, f := range []string{"-di", "-dt", "-dit"} {
		if st := inspectField(t, s, "sh"+f, "{{.State.Status}}"); st != "running" {
			t.Errorf("sh started with %s: %s, want it running, waiting for input", f, st)
		}
	}
}

func TestRemoveLeavesNothingAndAddressIsReused(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "c1", "--rootfs", bb, "sleep", "300")
	if ip := ipOf(t, s, "c1"); ip != "172.17.0.2" {
		t.Fatalf("ip = %s", ip)
	}
	s.MustKnit(t, "rm", "-f", "c1")
	waitBridgeEmpty(t, s)
	// No namespace mount of knit's is left. (The sandbox's mount namespace
	// also holds copies of whatever other tests had mounted when it was made.)
	if m := s.MustRun(t, "sh", "-c", "grep nsfs /proc/self/mountinfo | grep -F "+s.ExecRoot()+" || true"); m != "" {
		t.Errorf("knit namespace mounts after rm:\n%s", m)
	}
	if l := s.MustRun(t, "ip", "netns", "list"); strings.Contains(l, "knit-c1") {
		t.Errorf("ip netns list still shows knit-x:\n%s", l)
	}
	s.MustKnit(t, "run", "-d", "--name", "c2", "--rootfs", bb, "sleep", "300")
	if ip := ipOf(t, s, "c2"); ip != "172.17.0.2" {
		t.Errorf("released address not reused: c2 got %s", ip)
	}
}

func TestParallelRunsGetDistinctAddresses(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := s.Knit("run", "-d", "--name", fmt.Sprintf("p%d", i), "--rootfs", bb, "sleep", "300"); r.Code != 0 {
				errs <- fmt.Errorf("p%d: %s", i, r.Stderr)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	out := s.MustKnit(t, "ps", "--format", "{{.Names}}")
	seen := map[string]string{}
	for _, name := range strings.Fields(out) {
		ip := ipOf(t, s, name)
		if other, dup := seen[ip]; dup {
			t.Errorf("%s and %s both got %s", name, other, ip)
		}
		seen[ip] = name
	}
	if len(seen) != n {
		t.Errorf("%d distinct addresses, want %d", len(seen), n)
	}
}

func TestKilledSupervisorIsRepaired(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "k1", "--rootfs", bb, "sleep", "300")
	sup := strings.TrimSpace(s.MustRun(t, "sh", "-c", "pgrep -f '_supervise' | head -1"))
	if sup == "" {
		t.Fatal("no supervisor process found")
	}
	follow := s.Start(t, testutil.KnitBinary(t), "logs", "-f", "k1")
	followed := make(chan error, 1)
	go func() { followed <- follow.Wait() }()
	s.MustRun(t, "kill", "-9", sup)
	// logs -f ends with the container, before any command reconciles.
	select {
	case <-followed:
	case <-time.After(5 * time.Second):
		t.Error("logs -f still follows a container killed with its supervisor")
	}
	// The container dies with its supervisor; the next command notices.
	eventually(t, func() (string, error) {
		st := strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{.State.Status}}", "k1"))
		if st != "exited" {
			return "", fmt.Errorf("status %s", st)
		}
		return st, nil
	})
	waitBridgeEmpty(t, s)
	// Its address is free again.
	s.MustKnit(t, "run", "-d", "--name", "k2", "--rootfs", bb, "sleep", "300")
	if ip := ipOf(t, s, "k2"); ip != "172.17.0.2" {
		t.Errorf("k2 got %s, want the released 172.17.0.2", ip)
	}
	// And a killed container process is noticed by its supervisor.
	pid := strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{.State.Pid}}", "k2"))
	s.MustRun(t, "kill", "-9", pid)
	eventually(t, func() (string, error) {
		st := strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "k2"))
		if st != "exited 137" {
			return "", fmt.Errorf("state %s", st)
		}
		return st, nil
	})
}

// httpGet fetches path from addr:port from the sandbox's host namespace and
// returns the body. (Debian's static busybox wget crashes, so the request is
// written by hand through nc.)
func httpGet(s *testutil.Sandbox, addr string, port int, path string) (string, error) {
	return httpGetVia(s, nil, addr, port, path)
}

// httpGetVia is httpGet run through a command prefix, e.g. {"ip", "netns",
// "exec", "world"} for the world or {knit, "exec", "web"} for a container.
func httpGetVia(s *testutil.Sandbox, via []string, addr string, port int, path string) (string, error) {
	req := fmt.Sprintf("printf 'GET %s HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 %s %d", path, addr, port)
	r := s.Run(append(via, "sh", "-c", req)...)
	if r.Code != 0 {
		return "", fmt.Errorf("GET http://%s:%d%s via %v: exit %d: %s", addr, port, path, via, r.Code, r.Stderr)
	}
	_, body, ok := strings.Cut(r.Stdout, "\r\n\r\n")
	if !ok || !strings.HasPrefix(r.Stdout, "HTTP/1.") {
		return "", fmt.Errorf("GET http://%s:%d%s via %v: no HTTP response: %q", addr, port, path, via, r.Stdout)
	}
	return body, nil
}

// waitBridgeEmpty waits until knit0 has no ports: deleting a namespace
// destroys its veth asynchronously in the kernel.
func waitBridgeEmpty(t *testing.T, s *testutil.Sandbox) {
	t.Helper()
	eventually(t, func() (string, error) {
		if l := s.MustRun(t, "ip", "-o", "link", "show", "master", "knit0"); l != "" {
			return "", fmt.Errorf("veths remain:\n%s", l)
		}
		return "", nil
	})
}

// eventually retries fn for up to 10 s; asynchronous kernel work (namespace
// destruction) and process start-up are waited for, never slept on blindly.
func eventually(t *testing.T, fn func() (string, error)) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := fn()
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// When the owner of a shared namespace stops while a joiner still runs, the
// namespace lives on, so the owner's veth is deleted at once: its released
// address must not be on the wire twice.
func TestOwnerStopsWhileJoined(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "own", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "rider", "--network", "container:own", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "stop", "-t", "0", "own")
	if l := s.MustRun(t, "ip", "-o", "link", "show", "master", "knit0"); l != "" {
		t.Errorf("the owner's veth outlived its stop:\n%s", l)
	}
	if out := s.MustKnit(t, "exec", "rider", "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("the joiner still has the owner's eth0:\n%s", out)
	}
	s.MustKnit(t, "run", "-d", "--name", "newcomer", "--rootfs", bb, "sleep", "300")
	if ip := ipOf(t, s, "newcomer"); ip != "172.17.0.2" {
		t.Errorf("newcomer got %s, want the released 172.17.0.2", ip)
	}
}

// A container's command gets only its standard streams: a descriptor that
// whoever ran knit left open (here a directory of the host, which would
// reach behind --rootfs) is not passed on, by run or by exec.
func TestNoDescriptorsLeak(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	fds := func(r testutil.Result) []string {
		t.Helper()
		if r.Code != 0 {
			t.Fatalf("exit %d: %s", r.Code, r.Stderr)
		}
		return strings.Fields(r.Stdout)
	}
	// ls's own directory descriptor (3) is the only one above 2.
	want := []string{"0", "1", "2", "3"}
	if got := fds(s.Run("sh", "-c", `exec 7</; exec "$@"`, "sh", knit, "run", "--rm", "--rootfs", bb, "ls", "/proc/self/fd")); !slices.Equal(got, want) {
		t.Errorf("run: the command's descriptors are %v, want %v", got, want)
	}
	s.MustKnit(t, "run", "-d", "--name", "fdc", "--rootfs", bb, "sleep", "300")
	if got := fds(s.Run("sh", "-c", `exec 7</; exec "$@"`, "sh", knit, "exec", "fdc", "ls", "/proc/self/fd")); !slices.Equal(got, want) {
		t.Errorf("exec: the command's descriptors are %v, want %v", got, want)
	}
}

// rm -f of a container whose run -d is held up in its setup (here by the
// firewall lock, which the test holds) stops that run: the run undoes its
// setup and says the container was removed (exit 125), rm -f succeeds, and
// nothing is left.
func TestRemoveStopsARunBeingSetUp(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	s.MustKnit(t, "network", "create", "held") // its first ensure is not the one held up
	lock := filepath.Join(s.DataRoot(), "firewall.lock")
	script := `knit=$1 bb=$2 lock=$3 err=$(mktemp)
flock "$lock" sleep 1 & holder=$!
sleep 0.2
"$knit" run -d --name slow --network held -p 8088:80 --rootfs "$bb" sleep 300 >/dev/null 2>$err & run=$!
sleep 0.3 # the run has its record and waits for the lock
"$knit" rm -f slow || echo "rm -f failed"
wait $run; echo "run: $? $(head -n 1 $err)"
wait $holder
flock "$lock" sleep 1 & holder=$!
sleep 0.2
"$knit" run --name slowfg --network held -p 8089:80 --rootfs "$bb" true >/dev/null 2>$err & run=$!
sleep 0.3
"$knit" rm -f slowfg || echo "rm -f failed"
wait $run; echo "foreground run: $? $(head -n 1 $err)"
wait $holder
flock "$lock" sleep 1 & holder=$!
sleep 0.2
(trap '' HUP; exec "$knit" run --rm --name hupfg --network held --rootfs "$bb" true) >/dev/null 2>$err & run=$!
sleep 0.3
kill -HUP $run
wait $run; echo "nohup run: $? $(head -n 1 $err)"
wait $holder; rm -f $err`
	out := s.MustRun(t, "sh", "-c", script, "sh", knit, bb, lock)
	if !strings.Contains(out, "slow\n") || strings.Contains(out, "rm -f failed") ||
		!strings.Contains(out, "run: 125 knit: container slow was removed while starting (knit got terminated)") {
		t.Errorf("rm -f of a run held up in its setup:\n%s", out)
	}
	// A foreground run says so too, as run -d does, instead of exiting
	// 143 with nothing said.
	if !strings.Contains(out, "foreground run: 125 knit: container slowfg was removed while starting (knit got terminated)") {
		t.Errorf("rm -f of a foreground run held up in its setup:\n%s", out)
	}
	// A hangup its caller ignores (nohup) leaves it ignored: the run goes on.
	if !strings.Contains(out, "nohup run: 0 \n") {
		t.Errorf("SIGHUP to a foreground run that ignores it, held up in its setup:\n%s", out)
	}
	s.MustKnit(t, "network", "rm", "held")
	assertEmpty(t, s, "after the removal")
}

// rm -f of a container that `run -d` is still starting leaves nothing
// running: whether the supervisor records the start before or after rm
// takes the record, the process goes with the container.
func TestRemoveRacesDetachedStart(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	// 60 rounds, rm -f 0 to 29 ms after run -d starts (run -d takes ~20).
	// Each run -d either succeeds (the rm -f then removes what it
	// started) or, stopped by the rm -f while it sets the container up,
	// undoes its setup and says so (exit 125), never killed half-way
	// (137, nothing said). The script prints each run -d's exit code and
	// its first line of stderr; some must succeed, or the race was never
	// run.
	script := `knit=$1 bb=$2 err=$(mktemp)
for i in $(seq 0 59); do
	"$knit" run -d --name race$i --rootfs "$bb" sleep 1001 >/dev/null 2>$err &
	sleep 0.0$((i % 3))$((i % 10))
	"$knit" rm -f race$i >/dev/null 2>&1 || echo "rm -f race$i failed"
	wait $!
	echo "$? $(head -n 1 $err)"
	"$knit" rm -f race$i >/dev/null 2>&1 || true
done
rm -f $err`
	started := 0
	for _, line := range strings.Split(strings.TrimSpace(s.MustRun(t, "sh", "-c", script, "sh", knit, bb)), "\n") {
		code, msg, _ := strings.Cut(line, " ")
		switch {
		case code == "0":
			started++
		case code == "125" && strings.Contains(msg, "was removed while starting (knit got terminated)"):
		default:
			t.Errorf("run -d raced by rm -f: exit %s, stderr %q; want 0, or 125 saying it was removed", code, msg)
		}
	}
	if started == 0 {
		t.Fatal("no run -d of the 60 succeeded: the race was not run")
	}
	t.Logf("%d of 60 run -d succeeded before or despite their rm -f", started)
	if ps := s.MustKnit(t, "ps", "-a", "-q"); strings.TrimSpace(ps) != "" {
		t.Errorf("containers left: %s", ps)
	}
	if out := s.Run("pgrep", "-f", "sleep 1001"); out.Code == 0 {
		t.Errorf("processes left running with no container: %s", out.Stdout)
	}
}

// exec -i forwards stdin; -e and -w set the command's environment and
// working directory.
func TestExecOptions(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "ex", "-e", "A=run", "--rootfs", bb, "sleep", "300")
	if out := s.MustRun(t, "sh", "-c", `echo hello | "$1" exec -i ex cat`, "sh", testutil.KnitBinary(t)); out != "hello\n" {
		t.Errorf("exec -i: %q, want hello", out)
	}
	if out := s.MustKnit(t, "exec", "-e", "B=exec", "-w", "/etc", "ex", "sh", "-c", `echo "$A $B $(pwd)"`); out != "run exec /etc\n" {
		t.Errorf("exec -e -w: %q", out)
	}
}

// host-gateway is the default bridge's gateway, an address of the host's
// own: a container on a user-defined network, the first container of the
// boot, reaches the host's services there, as Docker's reaches docker0's
// (which dockerd makes when it starts) though no container uses it.
func TestHostGatewayBeforeTheDefaultBridge(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	root := filepath.Join(s.Dir(), "www")
	s.MustRun(t, "sh", "-c", `mkdir -p "$1" && echo host > "$1/hostname"`, "sh", root)
	s.Start(t, "busybox", "httpd", "-f", "-p", "8000", "-h", root)
	s.MustKnit(t, "network", "create", "app")
	s.MustKnit(t, "run", "-d", "--name", "cli", "--network", "app", "--add-host", "host.docker.internal:host-gateway",
		"--rootfs", bb, "sleep", "300")
	hosts := s.MustKnit(t, "exec", "cli", "cat", "/etc/hosts")
	if !strings.Contains(hosts, "172.17.0.1\thost.docker.internal") {
		t.Fatalf("/etc/hosts lacks 172.17.0.1 for host.docker.internal:\n%s", hosts)
	}
	if out := s.MustRun(t, "ip", "-o", "addr", "show", "dev", "knit0"); !strings.Contains(out, "inet 172.17.0.1/16") {
		t.Errorf("knit0 does not hold 172.17.0.1:\n%s", out)
	}
	reaches(t, s, []string{knit, "exec", "cli"}, "172.17.0.1", 8000, "host")
	// As config.json has the default network now: made again when unused.
	s.WriteConfig(t, `{"bip": "10.65.0.1/24"}`)
	hosts = s.MustKnit(t, "run", "--rm", "--network", "app", "--add-host", "gw:host-gateway", "--rootfs", bb, "cat", "/etc/hosts")
	if !strings.Contains(hosts, "10.65.0.1\tgw") {
		t.Errorf("/etc/hosts after bip changed lacks 10.65.0.1 for gw:\n%s", hosts)
	}
	if out := s.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "knit0"); !strings.Contains(out, "inet 10.65.0.1/24") {
		t.Errorf("knit0 after bip changed and a host-gateway run:\n%s", out)
	}
}

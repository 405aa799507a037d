package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/testutil"
)

// udpRootfs is toolRootfs with testdata/udpecho (Debian's busybox nc has
// no UDP mode).
func udpRootfs(t *testing.T) (rootfs, bin string) { return toolRootfs(t, "udpecho") }

// udpServe starts a container running the UDP echo on each of ports, each
// answering "NAME:PORT:" + payload, with extra run flags (e.g. "-p",
// "5353:5353/udp").
func udpServe(t *testing.T, s *testutil.Sandbox, rootfs, name string, ports []int, flags ...string) {
	t.Helper()
	var script []string
	for _, p := range ports {
		script = append(script, fmt.Sprintf("udpecho -listen :%d -prefix %s:%d:", p, name, p))
	}
	args := append([]string{"run", "-d", "--name", name, "-h", name}, flags...)
	s.MustKnit(t, append(args, "--rootfs", rootfs, "sh", "-c", "exec "+strings.Join(script, " & exec "))...)
}

// udpAsk runs `udpecho -send addr:port` through the command prefix via
// (nil for the sandbox host, world, {knit, "exec", NAME} for a container),
// with bin the udpecho binary as via sees it, and returns the reply.
func udpAsk(s *testutil.Sandbox, via []string, bin, addr string, port int, extra ...string) (string, error) {
	args := append(append(append([]string{}, via...), bin, "-send", fmt.Sprintf("%s:%d", addr, port), "-payload", "ping", "-timeout", "1s"), extra...)
	r := s.Run(args...)
	if r.Code != 0 {
		return "", fmt.Errorf("udp %s:%d via %v: exit %d: %s", addr, port, via, r.Code, strings.TrimSpace(r.Stderr))
	}
	return strings.TrimSpace(r.Stdout), nil
}

// udpReaches asserts that a datagram through via to addr:port is answered
// by the listener want ("NAME:PORT", see udpServe).
func udpReaches(t *testing.T, s *testutil.Sandbox, via []string, bin, addr string, port int, want string, extra ...string) {
	t.Helper()
	wantReply := want + ":ping"
	eventually(t, func() (string, error) {
		reply, err := udpAsk(s, via, bin, addr, port, extra...)
		if err == nil && reply != wantReply {
			err = fmt.Errorf("udp %s:%d via %v: reply %q, want %q", addr, port, via, reply, wantReply)
		}
		return reply, err
	})
}

// udpBlocked asserts that a datagram through via to addr:port gets no reply.
func udpBlocked(t *testing.T, s *testutil.Sandbox, via []string, bin, addr string, port int, extra ...string) {
	t.Helper()
	if reply, err := udpAsk(s, via, bin, addr, port, extra...); err == nil {
		t.Errorf("udp %s:%d via %v answered %q, want no answer", addr, port, via, reply)
	}
}

// hostPort parses the "0.0.0.0:PORT" that `knit port NAME PORT/PROTO` prints.
func hostPort(t *testing.T, s *testutil.Sandbox, name, port string) int {
	t.Helper()
	out := strings.TrimSpace(s.MustKnit(t, "port", name, port))
	p, err := strconv.Atoi(strings.TrimPrefix(out, "0.0.0.0:"))
	if err != nil {
		t.Fatalf("knit port %s %s = %q, want 0.0.0.0:PORT", name, port, out)
	}
	return p
}

func TestPublishedUDPPort(t *testing.T) {
	rootfs, bin := udpRootfs(t)
	s := sandbox(t)
	knit := testutil.KnitBinary(t)
	udpServe(t, s, rootfs, "dns", []int{5353}, "-p", "5353:5353/udp")
	s.MustKnit(t, "run", "-d", "--name", "client", "--rootfs", rootfs, "sleep", "300")
	udpReaches(t, s, world, bin, "198.51.100.1", 5353, "dns:5353")                                  // another host
	udpReaches(t, s, nil, bin, "198.51.100.1", 5353, "dns:5353")                                    // the host, its own address
	udpReaches(t, s, nil, bin, "127.0.0.1", 5353, "dns:5353")                                       // the host, localhost
	udpReaches(t, s, []string{knit, "exec", "client"}, "udpecho", "198.51.100.1", 5353, "dns:5353") // hairpin
	udpReaches(t, s, []string{knit, "exec", "dns"}, "udpecho", "198.51.100.1", 5353, "dns:5353")    // hairpin to itself
	if p := strings.TrimSpace(s.MustKnit(t, "port", "dns")); p != "5353/udp -> 0.0.0.0:5353" {
		t.Errorf("knit port dns = %q, want 5353/udp -> 0.0.0.0:5353", p)
	}
	if p := strings.TrimSpace(s.MustKnit(t, "port", "dns", "5353/udp")); p != "0.0.0.0:5353" {
		t.Errorf("knit port dns 5353/udp = %q", p)
	}
	// 5353/tcp is not published.
	if r := s.Knit("port", "dns", "5353/tcp"); r.Code == 0 {
		t.Errorf("knit port dns 5353/tcp = %q, want an error: only udp is published", r.Stdout)
	}
	if ps := s.MustKnit(t, "ps", "--format", "{{.Names}} {{.Ports}}"); !strings.Contains(ps, "dns 0.0.0.0:5353->5353/udp") {
		t.Errorf("ps ports:\n%s", ps)
	}
	// The container's own address is not reachable from outside, even for
	// a host that routes to it.
	s.World("ip", "route", "add", "172.17.0.0/16", "via", "198.51.100.1")
	udpBlocked(t, s, world, bin, ipOf(t, s, "dns"), 5353)
}

func TestPublishedUDPRange(t *testing.T) {
	rootfs, bin := udpRootfs(t)
	s := sandbox(t)
	// A range maps port to port: three listeners, three host ports.
	udpServe(t, s, rootfs, "trio", []int{7000, 7001, 7002}, "-p", "7000-7002:7000-7002/udp")
	for _, p := range []int{7000, 7001, 7002} {
		udpReaches(t, s, world, bin, "198.51.100.1", p, fmt.Sprintf("trio:%d", p))
	}
	want := "7000/udp -> 0.0.0.0:7000\n7001/udp -> 0.0.0.0:7001\n7002/udp -> 0.0.0.0:7002\n"
	if p := s.MustKnit(t, "port", "trio"); p != want {
		t.Errorf("knit port trio = %q, want %q", p, want)
	}
	// One free port from a range: the first, then the next.
	udpServe(t, s, rootfs, "ranged", []int{7000}, "-p", "7100-7110:7000/udp")
	p := hostPort(t, s, "ranged", "7000/udp")
	if p != 7100 {
		t.Errorf("range: host port %d, want the first free port 7100", p)
	}
	udpReaches(t, s, world, bin, "198.51.100.1", p, "ranged:7000")
	udpServe(t, s, rootfs, "ranged2", []int{7000}, "-p", "7100-7110:7000/udp")
	p = hostPort(t, s, "ranged2", "7000/udp")
	if p != 7101 {
		t.Errorf("range: host port %d, want the next free port 7101", p)
	}
	udpReaches(t, s, world, bin, "198.51.100.1", p, "ranged2:7000")
}

func TestUDPMappingGoneAfterStop(t *testing.T) {
	rootfs, bin := udpRootfs(t)
	s := sandbox(t)
	// One container is stopped (and then removed), one removed running.
	for _, c := range []struct {
		name string
		port int
		end  []string
	}{
		{"stopped", 5353, []string{"stop", "-t", "0", "stopped"}},
		{"removed", 5354, []string{"rm", "-f", "removed"}},
	} {
		udpServe(t, s, rootfs, c.name, []int{c.port}, "-p", fmt.Sprintf("%d:%d/udp", c.port, c.port))
		id := strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{.Id}}", c.name))
		ip := ipOf(t, s, c.name)
		udpReaches(t, s, world, bin, "198.51.100.1", c.port, fmt.Sprintf("%s:%d", c.name, c.port))
		rules := s.MustRun(t, "nft", "list", "table", "inet", "knit")
		element := fmt.Sprintf("udp . %d", c.port)
		if !strings.Contains(rules, element) || !strings.Contains(rules, id) || !strings.Contains(rules, ip) {
			t.Fatalf("no %s element of %s (%s) while it runs:\n%s", element, id, ip, rules)
		}
		s.MustKnit(t, c.end...)
		udpBlocked(t, s, world, bin, "198.51.100.1", c.port)
		udpBlocked(t, s, nil, bin, "127.0.0.1", c.port)
		rules = s.MustRun(t, "nft", "list", "table", "inet", "knit")
		if strings.Contains(rules, id[:12]) || strings.Contains(rules, ip) || strings.Contains(rules, strconv.Itoa(c.port)) {
			t.Errorf("elements of %s remain after knit %s:\n%s", c.name, strings.Join(c.end, " "), rules)
		}
	}
	// The host ports are free again.
	s.MustKnit(t, "rm", "stopped")
	udpServe(t, s, rootfs, "again", []int{5353}, "-p", "5353:5353/udp", "-p", "5354:5353/udp")
	udpReaches(t, s, world, bin, "198.51.100.1", 5353, "again:5353")
	udpReaches(t, s, world, bin, "198.51.100.1", 5354, "again:5353")
}

// A UDP client that keeps its source port (a resolver, a syslog sender)
// must reach the new container when a port is published again. Conntrack
// remembers a UDP flow's translation (or the lack of one) for 30 s after its
// last datagram, so a client that keeps sending keeps it forever: knit drops
// the port's UDP entries when it removes or adds a mapping, as docker does.
func TestUDPClientKeepsItsPortAcrossRepublish(t *testing.T) {
	rootfs, bin := udpRootfs(t)
	s := sandbox(t)
	during := []string{"-from", "198.51.100.2:20000"}  // sends while old serves
	between := []string{"-from", "198.51.100.2:20001"} // sends while none does
	udpServe(t, s, rootfs, "old", []int{5353}, "-p", "5353:5353/udp")
	udpReaches(t, s, world, bin, "198.51.100.1", 5353, "old:5353", during...)
	s.MustKnit(t, "rm", "-f", "old")
	udpBlocked(t, s, world, bin, "198.51.100.1", 5353, between...)
	// The released address goes to a container that does not serve 5353,
	// so datagrams still sent there go unanswered.
	s.MustKnit(t, "run", "-d", "--name", "filler", "--rootfs", rootfs, "sleep", "300")
	udpServe(t, s, rootfs, "new", []int{5353}, "-p", "5353:5353/udp")
	udpReaches(t, s, world, bin, "198.51.100.1", 5353, "new:5353")
	var stale []string
	for _, from := range [][]string{during, between} {
		if reply, err := udpAsk(s, world, bin, "198.51.100.1", 5353, from...); reply != "new:5353:ping" {
			stale = append(stale, fmt.Sprintf("a client from %s after the port moved to new: %q, %v", from[1], reply, err))
		}
	}
	if len(stale) > 0 {
		t.Errorf("stale UDP conntrack entries survive rm and re-publishing:\n%s\nconntrack:\n%s",
			strings.Join(stale, "\n"), s.Run("conntrack", "-L", "-p", "udp", "--orig-port-dst", "5353").Stdout)
	}
}

// A host port is taken per protocol: tcp and udp 8080 are two ports.
func TestTCPAndUDPShareAHostPort(t *testing.T) {
	rootfs, bin := udpRootfs(t)
	s := sandbox(t)
	serve(t, s, rootfs, "web", "-p", "8080:80")
	udpServe(t, s, rootfs, "dns", []int{5353}, "-p", "8080:5353/udp")
	reaches(t, s, world, "198.51.100.1", 8080, "web")
	udpReaches(t, s, world, bin, "198.51.100.1", 8080, "dns:5353")
	r := s.Knit("run", "-d", "-p", "8080:53/udp", "--rootfs", rootfs, "sleep", "300")
	if r.Code != 125 || !strings.Contains(r.Stderr, "dns") {
		t.Errorf("duplicate udp host port: exit %d, %q (want 125 naming container dns)", r.Code, r.Stderr)
	}
	// A UDP socket bound on the host holds its port too.
	s.Start(t, bin, "-listen", ":7777")
	eventually(t, func() (string, error) {
		if out := s.MustRun(t, "sh", "-c", "cat /proc/net/udp /proc/net/udp6"); !strings.Contains(strings.ToUpper(out), ":1E61") {
			return "", fmt.Errorf("udp socket not bound yet")
		}
		return "", nil
	})
	r = s.Knit("run", "-d", "-p", "7777:53/udp", "--rootfs", rootfs, "sleep", "300")
	if r.Code != 125 || !strings.Contains(r.Stderr, "7777/udp") || !strings.Contains(r.Stderr, "on the host") {
		t.Errorf("udp port bound by a host socket: exit %d, %q (want 125 naming 7777/udp and the host)", r.Code, r.Stderr)
	}
	// The same port over tcp is free.
	serve(t, s, rootfs, "web2", "-p", "7777:80")
	reaches(t, s, world, "198.51.100.1", 7777, "web2")
}

// SCTP ports are elements of the same maps. The element needs no SCTP in
// the kernel (nftables matches the header, conntrack's sctp tracker is
// separate from the protocol), so it is checked everywhere; traffic would
// need the kernel's SCTP (CONFIG_IP_SCTP, /proc/net/sctp) and is not sent.
func TestPublishedSCTPPort(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "assoc", "-p", "9999:9999/sctp", "--rootfs", bb, "sleep", "300")
	ip := ipOf(t, s, "assoc")
	rules := s.MustRun(t, "nft", "list", "table", "inet", "knit")
	if !strings.Contains(rules, "sctp . 9999") || !strings.Contains(rules, ip+" . 9999") {
		t.Errorf("no sctp . 9999 : %s . 9999 element:\n%s", ip, rules)
	}
	if p := strings.TrimSpace(s.MustKnit(t, "port", "assoc")); p != "9999/sctp -> 0.0.0.0:9999" {
		t.Errorf("knit port assoc = %q, want 9999/sctp -> 0.0.0.0:9999", p)
	}
	if ps := s.MustKnit(t, "ps", "--format", "{{.Names}} {{.Ports}}"); !strings.Contains(ps, "assoc 0.0.0.0:9999->9999/sctp") {
		t.Errorf("ps ports:\n%s", ps)
	}
	s.MustKnit(t, "rm", "-f", "assoc")
	if rules := s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, "9999") {
		t.Errorf("sctp element remains after rm:\n%s", rules)
	}
}

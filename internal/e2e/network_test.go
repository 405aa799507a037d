package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/testutil"
)

// dnsRootfs is toolRootfs with testdata/dnstool, the DNS probe and fake
// upstream.
func dnsRootfs(t *testing.T) (rootfs, bin string) { return toolRootfs(t, "dnstool") }

// gateway returns a network's IPv4 gateway.
func gateway(t *testing.T, s *testutil.Sandbox, network string) string {
	t.Helper()
	for _, gw := range strings.Fields(s.MustKnit(t, "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Gateway}} {{end}}`, network)) {
		if !strings.Contains(gw, ":") {
			return gw
		}
	}
	t.Fatalf("network %s has no IPv4 gateway", network)
	return ""
}

// ask runs dnstool query inside container c against the embedded server
// and returns its output ("NOERROR ms=1\nA 10.0.0.2").
func ask(t *testing.T, s *testutil.Sandbox, c, server string, args ...string) string {
	t.Helper()
	r := s.Knit(append([]string{"exec", c, "dnstool", "query", "-server", server + ":53"}, args...)...)
	return r.Stdout + r.Stderr
}

// answers waits until container c, asking server for name, gets the
// address want (the embedded server may not have the records yet).
func answers(t *testing.T, s *testutil.Sandbox, c, server, name, want string) {
	t.Helper()
	eventually(t, func() (string, error) {
		out := ask(t, s, c, server, name)
		if !strings.Contains(out, "A "+want) {
			return out, fmt.Errorf("%s asks %s for %s: %q, want A %s", c, server, name, out, want)
		}
		return out, nil
	})
}

// unresolved says whether ask's output is an answer without an address: a
// name the embedded server does not know goes upstream, where the
// sandbox's host server is missing (SERVFAIL) unless a test started one
// (NXDOMAIN).
func unresolved(out string) bool {
	return (strings.HasPrefix(out, "NXDOMAIN ") || strings.HasPrefix(out, "SERVFAIL ")) && !strings.Contains(out, "\nA ")
}

// netnsOf is a running container's network namespace file (its
// SandboxKey), for nsenter --net.
func netnsOf(t *testing.T, s *testutil.Sandbox, name string) string {
	t.Helper()
	return inspectField(t, s, name, "{{.NetworkSettings.SandboxKey}}")
}

func ipOn(t *testing.T, s *testutil.Sandbox, name, network string) string {
	t.Helper()
	return strings.TrimSpace(s.MustKnit(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, name))
}

// The reference notes' example, exactly: a network with a given subnet and
// a container with a given address on it, seen from inside.
func TestReferenceNetworkExample(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "--subnet=192.168.100.0/24", "mynetwork")
	out := s.MustKnit(t, "run", "--rm", "--net", "mynetwork", "--ip", "192.168.100.10", "--rootfs", bb, "ip", "-4", "addr", "show", "eth0")
	if !strings.Contains(out, "inet 192.168.100.10/24") {
		t.Errorf("inside the container:\n%s\nwant inet 192.168.100.10/24", out)
	}
	route := s.MustKnit(t, "run", "--rm", "--net", "mynetwork", "--rootfs", bb, "ip", "route")
	if !strings.Contains(route, "default via 192.168.100.1") {
		t.Errorf("routes:\n%s\nwant default via 192.168.100.1", route)
	}
}

// --ip-range limits dynamic allocation; --ip may take any free address.
func TestIPRange(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.50.0.0/24", "--ip-range", "10.50.0.128/25", "ranged")
	for _, name := range []string{"r1", "r2"} {
		s.MustKnit(t, "run", "-d", "--name", name, "--network", "ranged", "--rootfs", bb, "sleep", "300")
		ip := ipOn(t, s, name, "ranged")
		last, _ := strconv.Atoi(ip[strings.LastIndex(ip, ".")+1:])
		if !strings.HasPrefix(ip, "10.50.0.") || last < 128 {
			t.Errorf("%s got %s, want an address in 10.50.0.128/25", name, ip)
		}
	}
	s.MustKnit(t, "run", "-d", "--name", "fixed", "--network", "ranged", "--ip", "10.50.0.5", "--rootfs", bb, "sleep", "300")
	if ip := ipOn(t, s, "fixed", "ranged"); ip != "10.50.0.5" {
		t.Errorf("--ip 10.50.0.5 got %s", ip)
	}
}

// Refused network commands leave the store and the kernel as they were.
func TestNetworkRefusalsLeaveStateUnchanged(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.60.0.0/24", "used")
	s.MustKnit(t, "run", "-d", "--name", "holder", "--network", "used", "--ip", "10.60.0.9", "--rootfs", bb, "sleep", "300")
	before := snapshot(t, s)
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"network", "create", "--subnet", "10.60.0.128/25", "overlap"}, "overlaps"},
		{[]string{"network", "create", "--subnet", "10.61.0.0/33", "bad"}, "--subnet"},
		{[]string{"network", "create", "--subnet", "10.61.0.1/24", "hostbits"}, "host bits"},
		{[]string{"network", "create", "--gateway", "10.62.0.1", "nosubnet"}, "--gateway"},
		{[]string{"network", "create", "--subnet", "10.62.0.0/24", "--gateway", "10.62.0.255", "bcast"}, "broadcast address"},
		{[]string{"network", "create", "-o", "com.docker.network.bridge.name=wan0", "onveth"}, "not a bridge"},
		{[]string{"network", "create", "used"}, "already exists"},
		{[]string{"network", "create", "-o", "nosuch=1", "opt"}, "unknown network option"},
		{[]string{"network", "create", "-d", "overlay", "drv"}, "not supported"},
		{[]string{"network", "create", "bad/name"}, "invalid network name"},
		{[]string{"run", "--network", "used", "--ip", "10.60.0.9", "--rootfs", bb, "true"}, "already in use"},
		{[]string{"run", "--network", "used", "--ip", "10.99.0.9", "--rootfs", bb, "true"}, "10.99.0.9"},
		{[]string{"network", "rm", "used"}, "active endpoints"},
		{[]string{"network", "rm", "bridge"}, "pre-defined"},
		{[]string{"network", "rm", "nosuch"}, "not found"},
		{[]string{"network", "connect", "used", "holder"}, "already exists in network"},
		{[]string{"network", "disconnect", "bridge", "holder"}, "not connected"},
	}
	for _, tc := range cases {
		r := s.Knit(tc.args...)
		if want := errorCode(tc.args, r.Stderr); r.Code != want || !strings.Contains(r.Stderr, tc.msg) {
			t.Errorf("knit %s: exit %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), r.Code, r.Stderr, want, tc.msg)
		}
	}
	if after := snapshot(t, s); after != before {
		t.Errorf("state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// Containers resolve each other's names, aliases, hostnames and
// addresses through the embedded server; other names, single-label ones
// included, go to the host's server, as Docker's.
func TestEmbeddedDNS(t *testing.T) {
	rootfs, bin := dnsRootfs(t)
	s := sandbox(t)
	// The host's resolver (the sandbox's resolv.conf names 198.51.100.2)
	// knows a LAN host by its short name.
	s.Start(t, "ip", "netns", "exec", "world", bin, "serve", "-listen", "198.51.100.2:53", "nas=203.0.113.9")
	s.MustKnit(t, "network", "create", "app")
	s.MustKnit(t, "run", "-d", "--name", "db", "-h", "dbhost", "--network", "app", "--network-alias", "database", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "web", "--network", "app", "--rootfs", rootfs, "sleep", "300")
	gw := gateway(t, s, "app")
	db := ipOn(t, s, "db", "app")
	// As Docker's: the embedded server at 127.0.0.11, which the rules in
	// the container's namespace send to the gateway's, over UDP and TCP.
	if resolv := s.MustKnit(t, "exec", "web", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "nameserver 127.0.0.11\n") || !strings.Contains(resolv, "ndots:0") {
		t.Errorf("web's resolv.conf does not name the embedded server 127.0.0.11 with ndots:0:\n%s", resolv)
	}
	for _, args := range [][]string{{"db"}, {"-tcp", "db"}} {
		if out := ask(t, s, "web", "127.0.0.11", args...); !strings.Contains(out, "NOERROR") || !strings.Contains(out, "A "+db) {
			t.Errorf("query %q at 127.0.0.11: %q, want A %s", args, out, db)
		}
	}
	dbID := inspectField(t, s, "db", "{{.Id}}")[:12]
	for _, name := range []string{"db", "database", "dbhost", "db.app", "DB", dbID, "dbhost.app", dbID + ".app"} {
		if out := ask(t, s, "web", gw, name); !strings.Contains(out, "NOERROR") || !strings.Contains(out, "A "+db) {
			t.Errorf("query %s: %q, want A %s", name, out, db)
		}
	}
	if out := ask(t, s, "web", gw, "-tcp", "db"); !strings.Contains(out, "A "+db) {
		t.Errorf("query db over TCP: %q", out)
	}
	if out := ask(t, s, "web", gw, "-type", "PTR", db); !strings.Contains(out, "PTR db.app.") {
		t.Errorf("PTR %s: %q, want db.app.", db, out)
	}
	eventually(t, func() (string, error) { // the world's server may still be starting
		if out := ask(t, s, "web", gw, "nas"); !strings.Contains(out, "A 203.0.113.9") {
			return out, fmt.Errorf("a single-label name the host's server knows: %q", out)
		}
		return "", nil
	})
	out := ask(t, s, "web", gw, "nosuch")
	m := regexp.MustCompile(`NXDOMAIN ms=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("query nosuch: %q, want the host's server's NXDOMAIN", out)
	}
	if ms, _ := strconv.Atoi(m[1]); ms >= 100 {
		t.Errorf("NXDOMAIN took %d ms, want under 100", ms)
	}
	// A container that sets ndots itself has a bare unknown name answered
	// empty, for its resolver to try the search domains (Docker's rule).
	s.MustKnit(t, "run", "-d", "--name", "dots", "--network", "app", "--dns-option", "ndots:2", "--rootfs", rootfs, "sleep", "300")
	if out := ask(t, s, "dots", "127.0.0.11", "nas"); !strings.HasPrefix(out, "NOERROR") || strings.Contains(out, "A ") {
		t.Errorf("nas from a container with ndots:2: %q, want NOERROR without an answer", out)
	}
	// busybox's resolver, through resolv.conf, as a user would.
	if out := s.MustKnit(t, "exec", "web", "nslookup", "database"); !strings.Contains(out, db) {
		t.Errorf("nslookup database:\n%s", out)
	}
	// A new container is found at once, a removed one is gone at once.
	s.MustKnit(t, "run", "-d", "--name", "late", "--network", "app", "--rootfs", rootfs, "sleep", "300")
	if out := ask(t, s, "web", gw, "late"); !strings.Contains(out, "A "+ipOn(t, s, "late", "app")) {
		t.Errorf("query late: %q\nserver log:\n%s", out, s.MustRun(t, "cat", s.ExecRoot()+"/dns/server.log"))
	}
	s.MustKnit(t, "rm", "-f", "late")
	if out := ask(t, s, "web", gw, "late"); !strings.Contains(out, "NXDOMAIN") {
		t.Errorf("query late after rm: %q, want NXDOMAIN", out)
	}
	// The default network keeps Docker's behaviour: no embedded DNS.
	if resolv := s.MustKnit(t, "run", "--rm", "--rootfs", rootfs, "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "nameserver 198.51.100.2") ||
		strings.Contains(resolv, gateway(t, s, "bridge")) {
		t.Errorf("a default-network container's resolv.conf (want the host's server, not the embedded one):\n%s", resolv)
	}
}

// Networks are isolated, for names and for traffic, until a container is
// connected to both; a container can be on two networks at once.
func TestIsolationAndConnect(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "neta")
	s.MustKnit(t, "network", "create", "--subnet", "10.95.0.0/24", "netb")
	s.MustKnit(t, "run", "-d", "--name", "a1", "--network", "neta", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "b1", "--network", "netb", "--rootfs", rootfs, "sleep", "300")
	gwa, b1 := gateway(t, s, "neta"), ipOn(t, s, "b1", "netb")
	if out := ask(t, s, "a1", gwa, "b1"); !unresolved(out) {
		t.Errorf("a1 resolves b1 across networks: %q", out)
	}
	if r := s.Knit("exec", "a1", "ping", "-c", "1", "-W", "1", b1); r.Code == 0 {
		t.Errorf("a1 reaches b1 (%s) across networks", b1)
	}
	if r := s.Knit("exec", "b1", "ping", "-c", "1", "-W", "1", ipOn(t, s, "a1", "neta")); r.Code == 0 {
		t.Errorf("b1 reaches a1 across networks")
	}

	s.MustKnit(t, "network", "connect", "--alias", "bee", "--ip", "10.95.0.77", "netb", "a1")
	if ip := ipOn(t, s, "a1", "netb"); ip != "10.95.0.77" {
		t.Errorf("connect --ip 10.95.0.77 gave %s", ip)
	}
	links := s.MustKnit(t, "exec", "a1", "ip", "-4", "-o", "addr")
	if !strings.Contains(links, "eth1") {
		t.Errorf("a1 has no eth1 after connect:\n%s", links)
	}
	if out := ask(t, s, "a1", gwa, "b1"); !strings.Contains(out, "A "+b1) {
		t.Errorf("after connect, a1 resolves b1: %q, want A %s", out, b1)
	}
	s.MustKnit(t, "exec", "a1", "ping", "-c", "1", "-W", "2", "b1")
	// b1 finds a1 on netb by its alias there.
	if out := ask(t, s, "b1", gateway(t, s, "netb"), "bee"); !strings.Contains(out, "A "+ipOn(t, s, "a1", "netb")) {
		t.Errorf("b1 resolves a1's alias bee: %q", out)
	}

	s.MustKnit(t, "network", "disconnect", "netb", "a1")
	if r := s.Knit("exec", "a1", "ping", "-c", "1", "-W", "1", b1); r.Code == 0 {
		t.Errorf("a1 still reaches b1 after disconnect")
	}
	if out := s.MustKnit(t, "exec", "a1", "ip", "-o", "link"); strings.Contains(out, "eth1") {
		t.Errorf("eth1 remains after disconnect:\n%s", out)
	}

	// --network twice: eth0 and eth1, the default route through the first.
	s.MustKnit(t, "run", "-d", "--name", "both", "--network", "neta", "--network", "netb", "--rootfs", rootfs, "sleep", "300")
	addrs := s.MustKnit(t, "exec", "both", "ip", "-4", "-o", "addr")
	if !strings.Contains(addrs, "eth0") || !strings.Contains(addrs, "eth1") {
		t.Errorf("both:\n%s", addrs)
	}
	if route := s.MustKnit(t, "exec", "both", "ip", "route"); !strings.Contains(route, "default via "+gwa+" dev eth0") {
		t.Errorf("both's routes:\n%s\nwant default via %s dev eth0", route, gwa)
	}
	s.MustKnit(t, "exec", "both", "ping", "-c", "1", "-W", "2", "b1")
	s.MustKnit(t, "exec", "both", "ping", "-c", "1", "-W", "2", "a1")
	// Disconnected from its first network, it routes through the next.
	s.MustKnit(t, "network", "disconnect", "neta", "both")
	if route := s.MustKnit(t, "exec", "both", "ip", "route"); !strings.Contains(route, "default via "+gateway(t, s, "netb")+" dev eth1") {
		t.Errorf("both's routes after disconnecting neta:\n%s\nwant the default route through netb", route)
	}
	if gw := s.MustKnit(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "netb").Gateway}}`, "both"); strings.TrimSpace(gw) != gateway(t, s, "netb") {
		t.Errorf("inspect gateway on netb after disconnect: %q", gw)
	}
	// Its /etc files follow: resolv.conf still names 127.0.0.11, now sent
	// to netb's server, which answers it, and hosts no longer has its
	// address on neta.
	if resolv := s.MustKnit(t, "exec", "both", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "nameserver 127.0.0.11\n") {
		t.Errorf("both's resolv.conf after disconnecting neta:\n%s\nwant 127.0.0.11", resolv)
	}
	sandboxKey := netnsOf(t, s, "both")
	if rules := s.MustRun(t, "nsenter", "--net="+sandboxKey, "nft", "list", "table", "ip", "knit-dns"); !strings.Contains(rules, "dnat to "+gateway(t, s, "netb")+":53") {
		t.Errorf("both's 127.0.0.11 redirect after disconnecting neta:\n%s\nwant it sent to netb's server", rules)
	}
	s.MustKnit(t, "exec", "both", "ping", "-c", "1", "-W", "2", "b1")
	hosts := s.MustKnit(t, "exec", "both", "cat", "/etc/hosts")
	if strings.Contains(hosts, gwa[:strings.LastIndexByte(gwa, '.')+1]) || !strings.Contains(hosts, ipOn(t, s, "both", "netb")+"\t") {
		t.Errorf("both's /etc/hosts after disconnecting neta:\n%s", hosts)
	}
	// And a1, connected to netb, has its netb address in /etc/hosts.
	s.MustKnit(t, "network", "connect", "netb", "a1")
	if hosts := s.MustKnit(t, "exec", "a1", "cat", "/etc/hosts"); !strings.Contains(hosts, ipOn(t, s, "a1", "netb")+"\t") {
		t.Errorf("a1's /etc/hosts after connecting netb:\n%s", hosts)
	}
}

// As Docker, a container on a user-defined network can be connected to the
// default bridge network later, and disconnected from it.
func TestConnectDefaultBridge(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "neta")
	s.MustKnit(t, "run", "-d", "--name", "a1", "--network", "neta", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "d1", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "network", "connect", "bridge", "a1")
	onBridge := ipOn(t, s, "a1", "bridge")
	if !strings.HasPrefix(onBridge, "172.17.") {
		t.Fatalf("a1's address on bridge: %q", onBridge)
	}
	if route := s.MustKnit(t, "exec", "a1", "ip", "route"); !strings.Contains(route, "default via "+gateway(t, s, "neta")+" dev eth0") {
		t.Errorf("a1's routes after connecting bridge:\n%s\nwant the default route still through neta", route)
	}
	s.MustKnit(t, "exec", "d1", "ping", "-c", "1", "-W", "2", onBridge)
	if r := s.Knit("network", "connect", "bridge", "d1"); r.Code != 1 || !strings.Contains(r.Stderr, "already exists in network") {
		t.Errorf("connect bridge d1 (on it already): exit %d, %q", r.Code, r.Stderr)
	}
	// A link from the default network reaches a1 at its address there,
	// though a1's first network is another.
	s.MustKnit(t, "run", "-d", "--name", "l1", "--link", "a1:db", "--rootfs", rootfs, "sleep", "300")
	if hosts := s.MustKnit(t, "exec", "l1", "cat", "/etc/hosts"); !strings.Contains(hosts, onBridge+"\tdb") {
		t.Errorf("l1's /etc/hosts:\n%s\nwant db at a1's bridge address %s", hosts, onBridge)
	}
	// As Docker: no network-scoped aliases on the default network, and
	// it is not combined with other networks at run.
	s.MustKnit(t, "run", "-d", "--name", "a2", "--network", "neta", "--rootfs", rootfs, "sleep", "300")
	if r := s.Knit("network", "connect", "--alias", "x", "bridge", "a2"); r.Code != 1 || !strings.Contains(r.Stderr, "user-defined networks") {
		t.Errorf("connect --alias x bridge a2: exit %d, %q", r.Code, r.Stderr)
	}
	if r := s.Knit("run", "--rm", "--network", "neta", "--network", "bridge", "--rootfs", rootfs, "true"); r.Code != 125 || !strings.Contains(r.Stderr, "conflicting options") {
		t.Errorf("run --network neta --network bridge: exit %d, %q", r.Code, r.Stderr)
	}
	s.MustKnit(t, "rm", "-f", "l1")
	s.MustKnit(t, "network", "disconnect", "bridge", "a1")
	if r := s.Knit("exec", "d1", "ping", "-c", "1", "-W", "1", onBridge); r.Code == 0 {
		t.Errorf("d1 still reaches a1's old bridge address %s after disconnect", onBridge)
	}
	if r := s.Knit("network", "connect", "host", "a1"); r.Code != 1 {
		t.Errorf("connect host a1: exit %d, want a refusal", r.Code)
	}
}

// Docker's long --network form gives each network its own address and
// aliases at run.
func TestRunNetworkLongForm(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.96.0.0/24", "neta")
	s.MustKnit(t, "network", "create", "--subnet", "10.97.0.0/24", "netb")
	s.MustKnit(t, "run", "-d", "--name", "multi",
		"--network", "name=neta,ip=10.96.0.40,alias=first",
		"--network", "name=netb,ip=10.97.0.50,alias=second",
		"--rootfs", rootfs, "sleep", "300")
	if a, b := ipOn(t, s, "multi", "neta"), ipOn(t, s, "multi", "netb"); a != "10.96.0.40" || b != "10.97.0.50" {
		t.Errorf("addresses: neta %s, netb %s; want 10.96.0.40 and 10.97.0.50", a, b)
	}
	s.MustKnit(t, "run", "-d", "--name", "peer", "--network", "netb", "--rootfs", rootfs, "sleep", "300")
	if out := ask(t, s, "peer", gateway(t, s, "netb"), "second"); !strings.Contains(out, "A 10.97.0.50") {
		t.Errorf("peer resolves multi's alias on netb: %q", out)
	}
	if out := ask(t, s, "peer", gateway(t, s, "netb"), "first"); !unresolved(out) {
		t.Errorf("peer resolves multi's neta alias on netb: %q", out)
	}
	// Docker's older name of --network-alias.
	s.MustKnit(t, "run", "-d", "--name", "old", "--network", "netb", "--ip", "10.97.0.60", "--net-alias", "third", "--rootfs", rootfs, "sleep", "300")
	if out := ask(t, s, "peer", gateway(t, s, "netb"), "third"); !strings.Contains(out, "A 10.97.0.60") {
		t.Errorf("peer resolves a --net-alias: %q", out)
	}
	if r := s.Knit("run", "--rm", "--network", "name=netb,ip=10.96.0.9", "--rootfs", rootfs, "true"); r.Code != 125 {
		t.Errorf("an ip outside the network's subnet: exit %d, %q", r.Code, r.Stderr)
	}
}

// A dual-stack network gives every container an IPv6 address and route,
// and names resolve to both families.
func TestDualStack(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "--ipv6", "--subnet", "fd00:db8:1::/64", "dual")
	s.MustKnit(t, "run", "-d", "--name", "s1", "--network", "dual", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "s2", "--network", "dual", "--ip6", "fd00:db8:1::99", "--rootfs", rootfs, "sleep", "300")
	if out := s.MustKnit(t, "exec", "s2", "ip", "-6", "addr", "show", "eth0"); !strings.Contains(out, "fd00:db8:1::99/64") {
		t.Errorf("s2's IPv6 address:\n%s", out)
	}
	if out := s.MustKnit(t, "exec", "s1", "ip", "-6", "route"); !strings.Contains(out, "default via fd00:db8:1::1") {
		t.Errorf("s1's IPv6 routes:\n%s", out)
	}
	if out := ask(t, s, "s1", gateway(t, s, "dual"), "-type", "AAAA", "s2"); !strings.Contains(out, "AAAA fd00:db8:1::99") {
		t.Errorf("AAAA s2: %q", out)
	}
	s.MustKnit(t, "exec", "s1", "ping6", "-c", "1", "-W", "2", "s2")
}

// An address given again under another MAC (an IPv6 address on a
// dual-stack network, whose MAC follows the IPv4 address; any address
// with --mac-address), by a run or a `network connect`: the host's
// neighbour entry, which pointed at the last holder's MAC and would for
// tens of seconds, is gone or points at the new one once the new holder
// has joined, and the host reaches it; a container on the bridge, told by
// the new holder's supervisor (a run) or by the process a connect leaves
// behind, does within seconds too.
func TestReusedAddressReached(t *testing.T) {
	bb := testutil.Busybox(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "--ipv6", "--subnet", "10.97.0.0/24", "--subnet", "fd00:db8:97::/64", "dual97")
	// A bridge that loses its last port loses its carrier, and the host
	// its neighbour entries there.
	s.MustKnit(t, "run", "-d", "--name", "stay", "--network", "dual97", "--rootfs", bb, "sleep", "300")
	for _, c := range []struct {
		addr, ping   string
		first, again []string // run flags of the address's two holders
		connect      bool     // the second is connected with its flags, not run
		mac          string   // the second's
	}{
		{"fd00:db8:97::10", "ping6", []string{"--ip", "10.97.0.10", "--ip6", "fd00:db8:97::10"},
			[]string{"--ip", "10.97.0.11", "--ip6", "fd00:db8:97::10"}, false, "02:42:0a:61:00:0b"},
		{"10.97.0.20", "ping", []string{"--ip", "10.97.0.20", "--mac-address", "02:00:00:00:00:01"},
			[]string{"--ip", "10.97.0.20", "--mac-address", "02:00:00:00:00:02"}, false, "02:00:00:00:00:02"},
		{"fd00:db8:97::30", "ping6", []string{"--ip", "10.97.0.30", "--ip6", "fd00:db8:97::30"},
			[]string{"--ip", "10.97.0.31", "--ip6", "fd00:db8:97::30"}, true, "02:42:0a:61:00:1f"},
	} {
		t.Run(c.addr, func(t *testing.T) {
			t.Cleanup(func() { s.Knit("rm", "-f", "first", "again") }) // for the next case, after a failure
			run := func(name string, flags []string) {
				s.MustKnit(t, append(append([]string{"run", "-d", "--name", name, "--network", "dual97"}, flags...), "--rootfs", bb, "sleep", "300")...)
			}
			run("first", c.first)
			s.MustRun(t, c.ping, "-c", "1", "-W", "2", c.addr)
			s.MustKnit(t, "exec", "stay", c.ping, "-c", "1", "-W", "2", c.addr)
			s.MustKnit(t, "rm", "-f", "first")
			if c.connect {
				s.MustKnit(t, "run", "-d", "--name", "again", "--rootfs", bb, "sleep", "300")
				s.MustKnit(t, append(append([]string{"network", "connect"}, c.again...), "dual97", "again")...)
			} else {
				run("again", c.again)
			}
			if neigh := s.MustRun(t, "ip", "neigh", "show", c.addr); neigh != "" && !strings.Contains(neigh, "lladdr "+c.mac) {
				t.Errorf("the host's neighbour entry for %s once its new holder joined: %q, want none or lladdr %s", c.addr, neigh, c.mac)
			}
			s.MustRun(t, c.ping, "-c", "1", "-W", "2", c.addr)
			reached := false
			for deadline := time.Now().Add(4 * time.Second); !reached && time.Now().Before(deadline); {
				reached = s.Knit("exec", "stay", c.ping, "-c", "1", "-W", "1", c.addr).Code == 0
			}
			if !reached {
				t.Errorf("a container on the bridge did not reach %s at its new holder within 4 s: its entry %q", c.addr,
					s.Knit("exec", "stay", "ip", "neigh", "show", c.addr).Stdout)
			}
		})
	}
}

// An internal network has no way out: no route, no masquerade.
func TestInternalNetwork(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "--internal", "--subnet", "10.70.0.0/24", "closed")
	s.MustKnit(t, "run", "-d", "--name", "in1", "--network", "closed", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "in2", "--network", "closed", "--rootfs", bb, "sleep", "300")
	if r := s.Knit("exec", "in1", "ping", "-c", "1", "-W", "1", "198.51.100.2"); r.Code == 0 {
		t.Errorf("a container on an internal network reached the world")
	}
	if route := s.MustKnit(t, "exec", "in1", "ip", "route"); strings.Contains(route, "default") {
		t.Errorf("internal network gave a default route:\n%s", route)
	}
	// Nor with a route of its own through the bridge's address (containers
	// may change their routes): the firewall keeps it in, and the world,
	// routing the subnet to the host, out.
	s.MustKnit(t, "exec", "in1", "ip", "route", "add", "default", "via", gateway(t, s, "closed"))
	s.MustKnit(t, "exec", "in1", "ping", "-c", "1", "-W", "1", gateway(t, s, "closed")) // the route's first hop answers
	if r := s.Knit("exec", "in1", "ping", "-c", "1", "-W", "1", "198.51.100.2"); r.Code == 0 {
		t.Errorf("a container on an internal network reached the world through a route of its own")
	}
	s.World("ip", "route", "add", "10.70.0.0/24", "via", "198.51.100.1")
	if r := s.World("ping", "-c", "1", "-W", "1", ipOn(t, s, "in1", "closed")); r.Code == 0 {
		t.Errorf("the world reached a container on an internal network")
	}
	s.MustKnit(t, "exec", "in1", "ping", "-c", "1", "-W", "2", ipOn(t, s, "in2", "closed"))
	if rules := s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, "10.70.0.0/24 oifname != ") {
		t.Errorf("internal network is masqueraded:\n%s", rules)
	}
	// A port published there would reach no one: refused, nothing kept.
	r := s.Knit("run", "--name", "pub", "--network", "closed", "-p", "8088:80", "--rootfs", bb, "true")
	if r.Code != 125 || !strings.Contains(r.Stderr, "network closed: it is internal") {
		t.Errorf("run -p on an internal network: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if r := s.Knit("inspect", "pub"); r.Code == 0 {
		t.Error("the refused run left a record")
	}
}

// Names the embedded server does not know go to the upstream servers the
// container would otherwise use: the host's, or --dns; search domains
// apply as usual.
func TestDNSForwarding(t *testing.T) {
	rootfs, bin := dnsRootfs(t)
	s := sandbox(t)
	// The world answers on 198.51.100.2 (the sandbox's resolv.conf) and on
	// 203.0.113.1 (used through --dns), each with names of its own.
	s.Start(t, "ip", "netns", "exec", "world", bin, "serve", "-listen", "198.51.100.2:53", "example.test=203.0.113.7")
	s.Start(t, "ip", "netns", "exec", "world", bin, "serve", "-listen", "203.0.113.1:53", "other.test=203.0.113.8")
	s.MustKnit(t, "network", "create", "fwd")
	s.MustKnit(t, "run", "-d", "--name", "f1", "--network", "fwd", "--dns-search", "test", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "f2", "--network", "fwd", "--dns", "203.0.113.1", "--rootfs", rootfs, "sleep", "300")
	gw := gateway(t, s, "fwd")
	answers(t, s, "f1", gw, "example.test", "203.0.113.7")
	if out := ask(t, s, "f2", gw, "other.test"); !strings.Contains(out, "A 203.0.113.8") {
		t.Errorf("forwarded through --dns: %q", out)
	}
	// resolv.conf says where the embedded server sends them, as Docker's
	// (from f2's own namespace: no "host(...)").
	if resolv := s.MustKnit(t, "exec", "f2", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "# ExtServers: [203.0.113.1]\n") {
		t.Errorf("f2's resolv.conf does not name its upstream:\n%s", resolv)
	}
	if out := ask(t, s, "f1", gw, "other.test"); !strings.Contains(out, "NXDOMAIN") {
		t.Errorf("other.test without --dns (the host's resolver does not know it): %q", out)
	}
	if out := ask(t, s, "f1", gw, "nosuch.test"); !strings.Contains(out, "NXDOMAIN") {
		t.Errorf("upstream's NXDOMAIN: %q", out)
	}
	// A container on an internal network only has no way out, DNS
	// included: its neighbours' names answer, outside names do not go
	// upstream (as with Docker).
	s.MustKnit(t, "network", "create", "--internal", "shut")
	s.MustKnit(t, "run", "-d", "--name", "f3", "--network", "shut", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "f4", "--network", "shut", "--rootfs", rootfs, "sleep", "300")
	shut := gateway(t, s, "shut")
	answers(t, s, "f3", shut, "f4", ipOn(t, s, "f4", "shut"))
	if out := ask(t, s, "f3", shut, "example.test"); !strings.Contains(out, "SERVFAIL") {
		t.Errorf("an outside name from an internal network: %q, want SERVFAIL", out)
	}
	// A container on both gets outside names through 127.0.0.11 (which
	// leads to the open network's gateway, whichever network came
	// first), and an internal one that gives its address gets none: not
	// from the internal network's gateway, which forwards for no one, nor
	// from the open one's, which it reaches only through its own bridge,
	// where the firewall drops a source of another network's.
	s.MustKnit(t, "run", "-d", "--name", "f5", "--network", "shut", "--network", "fwd", "--rootfs", rootfs, "sleep", "300")
	if out := ask(t, s, "f5", "127.0.0.11", "example.test"); !strings.Contains(out, "A 203.0.113.7") {
		t.Errorf("an outside name from a container on an internal and an open network: %q", out)
	}
	// The queries the embedded server sends upstream, counted on their
	// way out of the host, from its namespace or a container's (the
	// answers would go to f5, not to f3).
	// And the queries that reach the host from the containers, before any
	// filter: the forged ones must arrive for the test to mean anything.
	for _, cmd := range []string{"add table ip probe", "add chain ip probe out { type filter hook postrouting priority 0; }",
		"add rule ip probe out ip daddr 198.51.100.2 udp dport 53 counter",
		"add chain ip probe in { type filter hook prerouting priority -300; }",
		"add rule ip probe in iifname != lo udp dport 53 counter"} {
		s.MustRun(t, "nft", cmd)
	}
	upstream := func() string { return nftCounter(t, s.MustRun(t, "nft", "list", "chain", "ip", "probe", "out")) }
	arrived := func() string { return nftCounter(t, s.MustRun(t, "nft", "list", "chain", "ip", "probe", "in")) }
	ask(t, s, "f5", "127.0.0.11", "control.test") // the counter counts
	if upstream() == "0" {
		t.Fatal("no upstream query counted for f5's own")
	}
	s.MustKnit(t, "exec", "f3", "ip", "route", "add", gw+"/32", "dev", "eth0") // the host answers ARP for it
	for network, server := range map[string]string{"shut": shut, "fwd": gw} {
		forged := ipOn(t, s, "f5", network)
		s.MustKnit(t, "exec", "f3", "ip", "addr", "add", forged+"/32", "dev", "eth0")
		// The source guard drops the forged query at f3's port (and
		// its ARP from that address); the server's own rules must hold
		// without it too (a container whose claim is missing: one an
		// older knit started detached).
		for _, guarded := range []bool{true, false} {
			if !guarded {
				s.MustRun(t, "nft", "delete", "element", "bridge", "knit", "guarded4", "{ "+forged+" }")
			}
			before, in := upstream(), arrived()
			ask(t, s, "f3", server, "-from", forged, "-timeout", "1s", "exfil-"+network+".test")
			if reached := arrived() != in; reached != !guarded {
				t.Fatalf("the forged query from f3 through %s reached the host: %v, want %v (guarded: %v)", server, reached, !guarded, guarded)
			}
			if after := upstream(); after != before {
				t.Errorf("an internal container giving f5's address on %s had a name sent upstream through %s (%s, was %s queries)", network, server, after, before)
			}
		}
		s.MustKnit(t, "exec", "f3", "ip", "addr", "del", forged+"/32", "dev", "eth0")
	}
	// The search domain applies: busybox's resolver tries example.test.
	if out := s.MustKnit(t, "exec", "f1", "nslookup", "example"); !strings.Contains(out, "203.0.113.7") {
		t.Errorf("nslookup example with search test:\n%s", out)
	}
	if resolv := s.MustKnit(t, "exec", "f1", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "search test") {
		t.Errorf("resolv.conf lost the search domain:\n%s", resolv)
	}
}

// The embedded server asks upstream from the asking container's own
// namespace, as Docker's: --dns 127.0.0.1 is the container's own loopback,
// and a container on an internal network reaches a DNS server on that
// network. Only a loopback server of the host's (a stub resolver, for a
// container without --dns) is asked from the host, and never for a
// container on internal networks only.
func TestDNSAskedFromContainers(t *testing.T) {
	rootfs, bin := dnsRootfs(t)
	s := sandbox(t)
	// The host's resolver is a stub on its loopback, as systemd-resolved's.
	s.WriteFile(t, ".sandbox/resolv.conf", "nameserver 127.0.0.53\n")
	if got := s.MustRun(t, "cat", "/etc/resolv.conf"); got != "nameserver 127.0.0.53\n" {
		t.Fatalf("the sandbox's resolv.conf is %q", got)
	}
	s.Start(t, bin, "serve", "-listen", "127.0.0.53:53", "stub.test=203.0.113.11")
	s.MustKnit(t, "network", "create", "open")
	s.MustKnit(t, "run", "-d", "--name", "own", "--network", "open", "--dns", "127.0.0.1", "--rootfs", rootfs,
		"dnstool", "serve", "-listen", "127.0.0.1:53", "inside.test=203.0.113.9")
	s.MustKnit(t, "run", "-d", "--name", "plain", "--network", "open", "--rootfs", rootfs, "sleep", "300")
	answers(t, s, "own", "127.0.0.11", "inside.test", "203.0.113.9")
	if out := ask(t, s, "plain", "127.0.0.11", "stub.test"); !strings.Contains(out, "A 203.0.113.11") {
		t.Errorf("the host's stub, without --dns: %q", out)
	}
	if out := ask(t, s, "plain", "127.0.0.11", "inside.test"); !unresolved(out) {
		t.Errorf("another container's loopback server answered plain: %q", out)
	}
	for name, want := range map[string]string{"own": "# ExtServers: [127.0.0.1]\n", "plain": "# ExtServers: [host(127.0.0.53)]\n"} {
		if resolv := s.MustKnit(t, "exec", name, "cat", "/etc/resolv.conf"); !strings.Contains(resolv, want) {
			t.Errorf("%s's resolv.conf, want %q:\n%s", name, want, resolv)
		}
	}
	// An internal network with a DNS server of its own.
	s.MustKnit(t, "network", "create", "--internal", "--subnet", "10.77.0.0/24", "lab")
	s.MustKnit(t, "run", "-d", "--name", "labdns", "--network", "lab", "--ip", "10.77.0.53", "--rootfs", rootfs,
		"dnstool", "serve", "-listen", "10.77.0.53:53", "lab.test=203.0.113.10")
	s.MustKnit(t, "run", "-d", "--name", "labclient", "--network", "lab", "--dns", "10.77.0.53", "--rootfs", rootfs, "sleep", "300")
	answers(t, s, "labclient", "127.0.0.11", "lab.test", "203.0.113.10")
	if out := ask(t, s, "labdns", "127.0.0.11", "stub.test"); !strings.Contains(out, "SERVFAIL") {
		t.Errorf("the host's stub answered a container on an internal network only: %q, want SERVFAIL", out)
	}
}

// A knit upgraded in place (its binary replaced while its DNS server runs)
// has the next command from that path that syncs the records replace the
// server, which would otherwise answer as the old version did for as long
// as its networks live; a server whose binary is still in place stays, and
// another binary leaves it alone.
func TestDNSServerReplacedWithItsBinary(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	bin := filepath.Join(t.TempDir(), "knit")
	install := func() { // as an upgrade does: a new file renamed over the old
		data, err := os.ReadFile(testutil.KnitBinary(t))
		if err == nil {
			err = os.WriteFile(bin+".new", data, 0o755)
		}
		if err == nil {
			err = os.Rename(bin+".new", bin)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	install()
	knit := func(args ...string) { s.MustRun(t, append([]string{bin}, args...)...) }
	serverPID := func() string { return strings.TrimSpace(s.MustRun(t, "cat", s.ExecRoot()+"/dns/server.pid")) }
	knit("network", "create", "up")
	knit("run", "-d", "--name", "c1", "--network", "up", "--rootfs", rootfs, "sleep", "300")
	first := serverPID()
	knit("run", "-d", "--name", "c2", "--network", "up", "--rootfs", rootfs, "sleep", "300")
	if now := serverPID(); now != first {
		t.Fatalf("the server was replaced (%s, was %s) though its binary was not", now, first)
	}
	install()
	if exe := s.MustRun(t, "readlink", "/proc/"+first+"/exe"); !strings.HasSuffix(strings.TrimSpace(exe), " (deleted)") {
		t.Fatalf("the server's binary after the upgrade: %q", exe)
	}
	// Another install of knit (a CNI plugin's copy) leaves it alone.
	s.MustKnit(t, "run", "-d", "--name", "other", "--network", "up", "--rootfs", rootfs, "sleep", "300")
	if now := serverPID(); now != first {
		t.Fatalf("another binary replaced the server (%s, was %s)", now, first)
	}
	knit("run", "-d", "--name", "c3", "--network", "up", "--rootfs", rootfs, "sleep", "300")
	if now := serverPID(); now == first {
		t.Fatal("the server of the replaced binary still runs")
	}
	// Gone, or a zombie the sandbox's init has not reaped yet.
	if r := s.Run("sh", "-c", `test ! -e /proc/$1 || grep -q "^State:.*zombie" /proc/$1/status`, "sh", first); r.Code != 0 {
		t.Errorf("the old server %s is still alive", first)
	}
	gw := gateway(t, s, "up")
	answers(t, s, "c3", gw, "c1", ipOn(t, s, "c1", "up"))
}

// On a user-defined network the embedded server answers a --link alias
// for the linking container, as Docker's: resolvers that skip /etc/hosts
// (nginx's, dig's, c-ares) find it too. Other containers do not.
func TestDNSLinkAlias(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "linked")
	for _, args := range [][]string{{"--name", "db"}, {"--name", "app", "--link", "db:database"}, {"--name", "stranger"}} {
		s.MustKnit(t, append(append([]string{"run", "-d", "--network", "linked"}, args...), "--rootfs", rootfs, "sleep", "300")...)
	}
	gw, db := gateway(t, s, "linked"), ipOn(t, s, "db", "linked")
	answers(t, s, "app", gw, "database", db)
	if out := ask(t, s, "stranger", gw, "database"); !unresolved(out) {
		t.Errorf("a container without the link resolved its alias: %q", out)
	}
	// And only there, as Docker's: a hosts line, read before DNS, would
	// keep the address db had when app started.
	if hosts := s.MustKnit(t, "exec", "app", "cat", "/etc/hosts"); strings.Contains(hosts, "database") {
		t.Errorf("app's /etc/hosts names the link on a user-defined network:\n%s", hosts)
	}
}

// Driver options take effect, and removing a network removes its bridge,
// its rules and its DNS server when it was the last to need one.
func TestNetworkOptionsAndRemoval(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "-o", "bridge=br-custom", "-o", "com.docker.network.driver.mtu=1400", "custom")
	s.MustKnit(t, "run", "-d", "--name", "m1", "--network", "custom", "--rootfs", rootfs, "sleep", "300")
	if out := s.MustRun(t, "ip", "-o", "link", "show", "br-custom"); !strings.Contains(out, "mtu 1400") {
		t.Errorf("bridge br-custom:\n%s", out)
	}
	if out := s.MustKnit(t, "exec", "m1", "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "mtu 1400") {
		t.Errorf("eth0 of m1:\n%s", out)
	}
	pid := strings.TrimSpace(s.MustRun(t, "cat", s.ExecRoot()+"/dns/server.pid"))
	s.MustKnit(t, "rm", "-f", "m1")
	s.MustKnit(t, "network", "rm", "custom")
	if r := s.Run("ip", "link", "show", "br-custom"); r.Code == 0 {
		t.Errorf("bridge br-custom remains after network rm")
	}
	if rules := s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, "knit:net=custom") {
		t.Errorf("rules of network custom remain:\n%s", rules)
	}
	eventually(t, func() (string, error) {
		if r := s.Run("kill", "-0", pid); r.Code == 0 {
			return "", fmt.Errorf("the DNS server (pid %s) still runs with no network needing it", pid)
		}
		return "", nil
	})
}

// A network on the administrator's bridge (-o bridge= naming one that
// exists) uses it and gives it the gateway address it lacks; network rm
// takes away only that address and leaves the bridge and its own address.
func TestNetworkExternalBridge(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	adminBridge(t, s, "br-admin", "198.51.100.1/24")
	addrs := func() string { return s.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "br-admin") }

	s.MustKnit(t, "network", "create", "-o", "bridge=br-admin", "--subnet", "203.0.113.0/24", "adm")
	s.MustKnit(t, "run", "-d", "--name", "x1", "--network", "adm", "--rootfs", bb, "sleep", "300")
	if out := s.MustKnit(t, "exec", "x1", "ping", "-c1", "-W2", "203.0.113.1"); !strings.Contains(out, "1 packets received") {
		t.Errorf("x1 cannot reach its gateway on br-admin:\n%s", out)
	}
	if a := addrs(); !strings.Contains(a, "203.0.113.1/24") || !strings.Contains(a, "198.51.100.1/24") {
		t.Errorf("br-admin in use:\n%s", a)
	}
	s.MustKnit(t, "rm", "-f", "x1")
	s.MustKnit(t, "network", "rm", "adm")
	if a := addrs(); strings.Contains(a, "203.0.113.1") || !strings.Contains(a, "198.51.100.1/24") {
		t.Errorf("br-admin after network rm: want the administrator's address only:\n%s", a)
	}

	// A network whose gateway is the bridge's own address leaves it there.
	s.MustKnit(t, "network", "create", "-o", "bridge=br-admin", "--subnet", "198.51.100.0/24", "--gateway", "198.51.100.1", "own")
	s.MustKnit(t, "network", "rm", "own")
	if a := addrs(); !strings.Contains(a, "198.51.100.1/24") {
		t.Errorf("network rm took the administrator's own address:\n%s", a)
	}
	if r := s.Run("ip", "link", "show", "br-admin"); r.Code != 0 {
		t.Errorf("network rm deleted the administrator's bridge")
	}

	// An address the administrator adds later in the subnet of knit's
	// gateway is its secondary: the kernel would delete it with the
	// gateway (this sandbox's namespace has promote_secondaries off).
	s.MustRun(t, "ip", "link", "add", "br-bare", "type", "bridge")
	s.MustRun(t, "ip", "link", "set", "br-bare", "up")
	s.MustKnit(t, "network", "create", "-o", "bridge=br-bare", "--subnet", "203.0.113.0/24", "bare")
	s.MustRun(t, "ip", "addr", "add", "203.0.113.200/24", "dev", "br-bare")
	s.MustKnit(t, "network", "rm", "bare")
	if a := s.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "br-bare"); strings.Contains(a, "203.0.113.1/") || !strings.Contains(a, "203.0.113.200/24") {
		t.Errorf("br-bare after network rm: want the administrator's 203.0.113.200/24 only:\n%s", a)
	}
	if v := strings.TrimSpace(s.MustRun(t, "cat", "/proc/sys/net/ipv4/conf/br-bare/promote_secondaries")); v != "0" {
		t.Errorf("br-bare's promote_secondaries after network rm = %s, want it back at 0", v)
	}

	// The administrator's bridge deleted: a run on its network fails and
	// leaves nothing behind.
	s.MustRun(t, "ip", "link", "add", "br-gone", "type", "bridge")
	s.MustKnit(t, "network", "create", "-o", "bridge=br-gone", "--subnet", "203.0.113.0/24", "gone")
	s.MustRun(t, "ip", "link", "del", "br-gone")
	r := s.Knit("run", "--name", "g1", "--network", "gone", "--rootfs", bb, "true")
	if r.Code != 125 || !strings.Contains(r.Stderr, "external bridge br-gone does not exist: create it first") {
		t.Errorf("run on a network whose bridge is gone: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if v := s.MustRun(t, "ip", "-o", "link", "show", "type", "veth"); strings.Contains(v, ": veth") {
		t.Errorf("veths left by the failed run:\n%s", v)
	}
	if ns := s.MustRun(t, "ls", s.ExecRoot()+"/netns"); ns != "" {
		t.Errorf("namespace mounts left by the failed run: %s", ns)
	}
	if ps := s.MustKnit(t, "ps", "-a", "-q"); ps != "" {
		t.Errorf("records left by the failed run: %s", ps)
	}
}

// Dual-stack networks are isolated from each other over IPv6 too.
func TestIPv6Isolation(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "--ipv6", "--subnet", "fd00:db8:a::/64", "six-a")
	s.MustKnit(t, "network", "create", "--ipv6", "--subnet", "fd00:db8:b::/64", "six-b")
	s.MustKnit(t, "run", "-d", "--name", "va", "--network", "six-a", "--ip6", "fd00:db8:a::10", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "vb", "--network", "six-b", "--ip6", "fd00:db8:b::10", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "va2", "--network", "six-a", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "exec", "va2", "ping6", "-c", "1", "-W", "2", "fd00:db8:a::10")
	s.MustRun(t, "ping", "-6", "-c", "1", "-W", "2", "fd00:db8:b::10") // vb is up, at that address
	if r := s.Knit("exec", "va", "ping6", "-c", "1", "-W", "1", "fd00:db8:b::10"); r.Code == 0 {
		t.Errorf("va reached vb over IPv6 across networks")
	}
	if r := s.Knit("exec", "vb", "ping6", "-c", "1", "-W", "1", "fd00:db8:a::10"); r.Code == 0 {
		t.Errorf("vb reached va over IPv6 across networks")
	}
}

// The network create and connect options not covered elsewhere, end to
// end: --driver bridge, --attachable, a chosen --gateway, -o enable-dns=false
// (no embedded server: the container keeps the host's nameservers),
// connect --ip6, and disconnect -f of a container whose link is gone.
func TestNetworkMoreOptions(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "--driver", "bridge", "--attachable", "--subnet", "10.71.0.0/24", "--gateway", "10.71.0.254",
		"-o", "enable-dns=false", "plain")
	if out := s.MustKnit(t, "network", "inspect", "-f", "{{.Driver}} {{.Attachable}} {{(index .IPAM.Config 0).Gateway}}", "plain"); strings.TrimSpace(out) != "bridge true 10.71.0.254" {
		t.Errorf("inspect: %q", out)
	}
	s.MustKnit(t, "run", "-d", "--name", "p1", "--network", "plain", "--rootfs", rootfs, "sleep", "300")
	if route := s.MustKnit(t, "exec", "p1", "ip", "route"); !strings.Contains(route, "default via 10.71.0.254") {
		t.Errorf("p1's routes:\n%s\nwant default via the chosen gateway", route)
	}
	if resolv := s.MustKnit(t, "exec", "p1", "cat", "/etc/resolv.conf"); strings.Contains(resolv, "10.71.0.254") || !strings.Contains(resolv, "nameserver 198.51.100.2") {
		t.Errorf("p1's resolv.conf with enable-dns=false:\n%s\nwant the host's nameservers", resolv)
	}
	s.MustKnit(t, "network", "create", "--ipv6", "--subnet", "fd00:db8:71::/64", "dual71")
	s.MustKnit(t, "network", "connect", "--ip6", "fd00:db8:71::71", "dual71", "p1")
	if out := s.MustKnit(t, "exec", "p1", "ip", "-6", "addr", "show", "eth1"); !strings.Contains(out, "fd00:db8:71::71/64") {
		t.Errorf("connect --ip6: eth1\n%s", out)
	}
	// Take the link away behind knit's back: a plain disconnect fails on it,
	// -f goes on and releases the endpoint.
	s.MustKnit(t, "exec", "p1", "ip", "link", "del", "eth1")
	s.MustKnit(t, "network", "disconnect", "-f", "dual71", "p1")
	if nets := s.MustKnit(t, "inspect", "-f", "{{len .NetworkSettings.Networks}}", "p1"); strings.TrimSpace(nets) != "1" {
		t.Errorf("p1 after disconnect -f is on %s networks, want 1", nets)
	}
	s.MustKnit(t, "network", "rm", "dual71")
}

// rename changes a container's name in ps, inspect and the embedded DNS
// at once, and refuses a name in use, as docker rename.
func TestRename(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.98.0.0/24", "ren")
	s.MustKnit(t, "run", "-d", "--name", "before", "--network", "ren", "--ip", "10.98.0.40", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "asker", "--network", "ren", "--rootfs", rootfs, "sleep", "300")
	gw := gateway(t, s, "ren")
	if out := ask(t, s, "asker", gw, "before"); !strings.Contains(out, "A 10.98.0.40") {
		t.Fatalf("before the rename: %q", out)
	}
	s.MustKnit(t, "rename", "before", "after")
	if out := ask(t, s, "asker", gw, "after"); !strings.Contains(out, "A 10.98.0.40") {
		t.Errorf("the new name: %q", out)
	}
	if out := ask(t, s, "asker", gw, "before"); !unresolved(out) {
		t.Errorf("the old name: %q", out)
	}
	if got := strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{.Name}} {{.Config.Hostname}}", "after")); !strings.HasPrefix(got, "/after ") {
		t.Errorf("inspect after the rename: %q", got)
	}
	for _, bad := range [][]string{{"rename", "after", "asker"}, {"rename", "nosuch", "x"}, {"rename", "after", "bad/name"}, {"rename", "after", "after"}} {
		if r := s.Knit(bad...); r.Code != 1 {
			t.Errorf("%q: exit %d, %q", bad, r.Code, r.Stderr)
		}
	}
	if r := s.Knit("run", "-d", "--name", "before", "--network", "ren", "--rootfs", rootfs, "sleep", "300"); r.Code != 0 {
		t.Errorf("the old name is free again: exit %d, %q", r.Code, r.Stderr)
	}
	s.MustKnit(t, "rm", "-f", "after", "asker", "before")
	s.MustKnit(t, "network", "rm", "ren")
	assertEmpty(t, s, "after the renames")
}

// A default-network container connected to a user-defined network asks
// the embedded server at 127.0.0.11 from then on, as Docker's; once
// disconnected, it asks the host's servers again, and nothing of the
// redirect is left in its namespace (no rules, route_localnet off).
func TestDNSRedirectFollowsConnect(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "app")
	s.MustKnit(t, "run", "-d", "--name", "db", "--network", "app", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "cli", "--rootfs", rootfs, "sleep", "300")
	key := netnsOf(t, s, "cli")
	inCli := func(args ...string) string {
		return s.MustRun(t, append([]string{"nsenter", "--net=" + key}, args...)...)
	}
	if tables := inCli("nft", "list", "tables"); strings.Contains(tables, "knit-dns") {
		t.Errorf("a default-network container has a 127.0.0.11 redirect:\n%s", tables)
	}
	s.MustKnit(t, "network", "connect", "app", "cli")
	if resolv := s.MustKnit(t, "exec", "cli", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "nameserver 127.0.0.11\n") {
		t.Errorf("cli's resolv.conf after connecting app:\n%s", resolv)
	}
	db := ipOn(t, s, "db", "app")
	if out := ask(t, s, "cli", "127.0.0.11", "db"); !strings.Contains(out, "A "+db) {
		t.Errorf("query db at 127.0.0.11 after connecting app: %q, want A %s", out, db)
	}
	s.MustKnit(t, "network", "disconnect", "app", "cli")
	if resolv := s.MustKnit(t, "exec", "cli", "cat", "/etc/resolv.conf"); strings.Contains(resolv, "127.0.0.11") || !strings.Contains(resolv, "nameserver 198.51.100.2") {
		t.Errorf("cli's resolv.conf after disconnecting app:\n%s\nwant the host's server", resolv)
	}
	if tables := inCli("nft", "list", "tables"); strings.Contains(tables, "knit-dns") {
		t.Errorf("the redirect outlived the disconnect:\n%s", tables)
	}
	if v := strings.TrimSpace(inCli("cat", "/proc/sys/net/ipv4/conf/all/route_localnet")); v != "0" {
		t.Errorf("route_localnet after the disconnect = %q, want 0", v)
	}
}

// route_localnet, which the 127.0.0.11 redirect needs on, does not open a
// container's loopback services to its neighbours: a connection a
// neighbour routes to the container's 127.0.0.5 is dropped, while the
// container's own queries at 127.0.0.11 are answered.
func TestDNSRedirectKeepsLoopbackClosed(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "app")
	s.MustKnit(t, "run", "-d", "--name", "victim", "--network", "app", "--rootfs", rootfs,
		"httpd", "-f", "-p", "127.0.0.5:9999", "-h", "/etc")
	s.MustKnit(t, "run", "-d", "--name", "nb", "--network", "app", "--rootfs", rootfs, "sleep", "300")
	victim := ipOn(t, s, "victim", "app")
	get := "printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 127.0.0.5 9999"
	// The service answers inside the victim.
	if out := s.MustKnit(t, "exec", "victim", "sh", "-c", get); !strings.Contains(out, "HTTP/1.") {
		t.Fatalf("the victim's own GET of 127.0.0.5:9999: %q", out)
	}
	// The neighbour, root in its namespace, routes 127.0.0.5 through the
	// victim: its own loopback route out of the way, route_localnet on.
	key := netnsOf(t, s, "nb")
	s.MustRun(t, "nsenter", "--net="+key, "sh", "-c", `echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet &&
		ip route del local 127.0.0.0/8 dev lo table local &&
		ip route add 127.0.0.5/32 via `+victim+` dev eth0`)
	// Dropped, so the connection times out (a refusal or a routing error
	// would say the test sent nothing there).
	if r := s.Run("nsenter", "--net="+key, "sh", "-c", get); strings.Contains(r.Stdout, "HTTP/1.") || !strings.Contains(r.Stderr, "timed out") {
		t.Errorf("a neighbour's GET of the victim's 127.0.0.5:9999: exit %d, %q, %q; want a time-out", r.Code, r.Stdout, r.Stderr)
	}
	if out := ask(t, s, "victim", "127.0.0.11", "nb"); !strings.Contains(out, "A "+ipOn(t, s, "nb", "app")) {
		t.Errorf("the victim's query at 127.0.0.11: %q", out)
	}
}

// A container may publish port 53 (a Pi-hole's -p 53:53/udp) beside the
// embedded DNS server, as with Docker: the run is not refused for the
// server's own sockets on the gateways, and the containers of a DNS
// network still reach that server at 127.0.0.11, not the published one.
func TestPublishedPort53BesideEmbeddedDNS(t *testing.T) {
	rootfs, bin := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "app")
	s.MustKnit(t, "run", "-d", "--name", "asker", "--network", "app", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "target", "--network", "app", "--rootfs", rootfs, "sleep", "300")
	b := ipOn(t, s, "target", "app")
	// The gateway's own port 53 is the embedded server's.
	if r := s.Knit("run", "--rm", "-p", gateway(t, s, "app")+":53:53/udp", "--rootfs", rootfs, "true"); r.Code != 125 || !strings.Contains(r.Stderr, "in use") {
		t.Errorf("-p GATEWAY:53:53/udp: exit %d, %q; want refused, the embedded server holds it", r.Code, r.Stderr)
	}
	s.MustKnit(t, "run", "-d", "--name", "pihole", "-p", "53:53/udp", "-p", "53:53/tcp", "--rootfs", rootfs,
		"dnstool", "serve", "-listen", ":53", "target=192.0.2.66", "outside.test=192.0.2.67")
	eventually(t, func() (string, error) { // the published server, from another host
		r := s.World(bin, "query", "-server", "198.51.100.1:53", "outside.test")
		if !strings.Contains(r.Stdout, "A 192.0.2.67") {
			return "", fmt.Errorf("the published DNS server from the world: %q %q", r.Stdout, r.Stderr)
		}
		return "", nil
	})
	for _, args := range [][]string{{"target"}, {"-tcp", "target"}} {
		if out := ask(t, s, "asker", "127.0.0.11", args...); !strings.Contains(out, "A "+b) {
			t.Errorf("asker asks %q at 127.0.0.11 with port 53 published: %q, want the embedded server's A %s", args, out, b)
		}
	}
	// Started after the publication, a container is answered by the
	// embedded server too.
	s.MustKnit(t, "run", "-d", "--name", "late", "--network", "app", "--rootfs", rootfs, "sleep", "300")
	if out := ask(t, s, "late", "127.0.0.11", "target"); !strings.Contains(out, "A "+b) {
		t.Errorf("late asks target at 127.0.0.11: %q, want A %s", out, b)
	}
}

// The DNS server killed (out of memory, by hand) is started again by the
// next command, whatever it is, not only by the next one that changes a
// record.
func TestDNSServerRestartedByAnyCommand(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "mend")
	s.MustKnit(t, "run", "-d", "--name", "m1", "--network", "mend", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "m2", "--network", "mend", "--rootfs", rootfs, "sleep", "300")
	m2 := ipOn(t, s, "m2", "mend")
	pid := strings.TrimSpace(s.MustRun(t, "cat", s.ExecRoot()+"/dns/server.pid"))
	s.MustRun(t, "kill", "-9", pid)
	eventually(t, func() (string, error) { // gone once its lock is free
		if r := s.Run("flock", "-n", "-s", s.ExecRoot()+"/dns/server.lock", "true"); r.Code != 0 {
			return "", errors.New("the killed server still holds its lock")
		}
		return "", nil
	})
	s.MustKnit(t, "ps")
	if out := ask(t, s, "m1", "127.0.0.11", "m2"); !strings.Contains(out, "A "+m2) {
		t.Errorf("m1 asks m2 after the server was killed and knit ps ran: %q", out)
	}
	if now := strings.TrimSpace(s.MustRun(t, "cat", s.ExecRoot()+"/dns/server.pid")); now == pid {
		t.Errorf("server.pid still names the killed server %s", pid)
	}
}

// A DNS server of the host's holding port 53 on every address keeps the
// embedded server off a network's gateway: the run says so instead of
// leaving its names silently unanswered.
func TestDNSListenFailureIsSaid(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.Start(t, "busybox", "nc", "-ll", "-p", "53", "-e", "true") // TCP *:53
	eventually(t, func() (string, error) {
		if out := s.MustRun(t, "ss", "-Htln", "sport = :53"); !strings.Contains(out, "LISTEN") {
			return "", errors.New("nothing listens on tcp *:53 yet")
		}
		return "", nil
	})
	s.MustKnit(t, "network", "create", "--subnet", "10.96.0.0/24", "busy53")
	r := s.Knit("run", "-d", "--name", "lonely", "--network", "busy53", "--rootfs", rootfs, "sleep", "300")
	if r.Code != 0 || !strings.Contains(r.Stderr, "cannot listen on 10.96.0.1:53") {
		t.Errorf("run on a network whose gateway's port 53 is taken: exit %d, stderr %q; want it started and a warning", r.Code, r.Stderr)
	}
	// Every command that changes the server's records says it, not only run.
	s.MustKnit(t, "run", "-d", "--name", "elsewhere", "--rootfs", rootfs, "sleep", "300")
	if r := s.Knit("network", "connect", "busy53", "elsewhere"); r.Code != 0 || !strings.Contains(r.Stderr, "cannot listen on 10.96.0.1:53") {
		t.Errorf("network connect to that network: exit %d, stderr %q; want it connected and a warning", r.Code, r.Stderr)
	}
}

// An ndots option of the host's resolv.conf, which a container's copies
// when it has no --dns-option, counts as the container's own: an unknown
// bare name is answered empty, as Docker's, not forwarded.
func TestHostNdotsOption(t *testing.T) {
	rootfs, bin := dnsRootfs(t)
	s := sandbox(t)
	s.Start(t, "ip", "netns", "exec", "world", bin, "serve", "-listen", "198.51.100.2:53", "nas=203.0.113.9", "nas.lan=203.0.113.10")
	// The sandbox's own resolv.conf (a private file over the host's).
	if got := s.MustRun(t, "cat", "/etc/resolv.conf"); got != "nameserver 198.51.100.2\n" {
		t.Fatalf("the sandbox's resolv.conf is %q: not the sandbox's own, left alone", got)
	}
	s.MustRun(t, "sh", "-c", "echo 'options ndots:2' >> /etc/resolv.conf")
	s.MustKnit(t, "network", "create", "hostdots")
	s.MustKnit(t, "run", "-d", "--name", "hd", "--network", "hostdots", "--rootfs", rootfs, "sleep", "300")
	if resolv := s.MustKnit(t, "exec", "hd", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "ndots:2") {
		t.Fatalf("the container's resolv.conf lacks the host's ndots:2:\n%s", resolv)
	}
	eventually(t, func() (string, error) { // the world's server is up: a dotted name is forwarded
		if out := ask(t, s, "hd", "127.0.0.11", "nas.lan"); !strings.Contains(out, "A 203.0.113.10") {
			return "", fmt.Errorf("the world's server: %q", out)
		}
		return "", nil
	})
	if out := ask(t, s, "hd", "127.0.0.11", "nas"); !strings.HasPrefix(out, "NOERROR") || strings.Contains(out, "A ") {
		t.Errorf("nas with the host's ndots:2: %q, want NOERROR without an answer", out)
	}
	// What counts is the container's file, made with the host's options
	// then: the host's changing later, and the record rewritten, changes
	// nothing.
	s.MustRun(t, "sh", "-c", "echo 'nameserver 198.51.100.2' > /etc/resolv.conf")
	s.MustKnit(t, "rename", "hd", "hd2")
	if out := ask(t, s, "hd2", "127.0.0.11", "nas"); !strings.HasPrefix(out, "NOERROR") || strings.Contains(out, "A ") {
		t.Errorf("nas after the host's ndots went and the record was rewritten: %q, want NOERROR without an answer", out)
	}
	// A connect rewrites the file with the options it was made with.
	s.MustKnit(t, "network", "create", "hostdots2")
	s.MustKnit(t, "network", "connect", "hostdots2", "hd2")
	if resolv := s.MustKnit(t, "exec", "hd2", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "options ndots:2") {
		t.Errorf("resolv.conf after a connect lost the ndots:2 it was made with:\n%s", resolv)
	}
	if out := ask(t, s, "hd2", "127.0.0.11", "nas"); !strings.HasPrefix(out, "NOERROR") || strings.Contains(out, "A ") {
		t.Errorf("nas after the connect: %q, want NOERROR without an answer", out)
	}
}

// The reference notes' by-hand steps that knit's commands stand in for:
// `ip netns exec` on the namespace knit names after the container (the
// README's walkthrough), seed 001's container:<short ID> on a user-defined
// network with a fixed address (same interface, MAC and hostname), host
// mode reached from outside, and an outside name looked up from the default
// bridge through the host's resolver (seed 000's www lookup).
func TestReferenceNotesByHand(t *testing.T) {
	rootfs, bin := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "run", "-d", "--name", "web1", "--rootfs", rootfs, "sleep", "300")
	if l := s.MustRun(t, "ip", "netns", "list"); !strings.Contains(l, "knit-web1") {
		t.Errorf("ip netns list lacks knit-web1:\n%s", l)
	}
	ip := ipOf(t, s, "web1")
	if a := s.MustRun(t, "ip", "netns", "exec", "knit-web1", "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(a, "inet "+ip+"/") {
		t.Errorf("ip netns exec knit-web1 ip addr: %q, want %s", a, ip)
	}

	s.MustKnit(t, "network", "create", "--subnet=192.168.100.0/24", "mynetwork")
	id := strings.TrimSpace(s.MustKnit(t, "run", "-d", "--net", "mynetwork", "--ip", "192.168.100.10", "--name", "c1", "--rootfs", rootfs, "sleep", "300"))
	joined := s.MustKnit(t, "run", "--rm", "--net", "container:"+id[:12], "--rootfs", rootfs, "sh", "-c", "hostname; ip -o link show eth0; ip -4 -o addr show eth0")
	mac := inspectField(t, s, "c1", "{{.NetworkSettings.Networks.mynetwork.MacAddress}}")
	if !strings.HasPrefix(joined, id[:12]+"\n") || !strings.Contains(joined, mac) || !strings.Contains(joined, "inet 192.168.100.10/24") {
		t.Errorf("container:%s: %q, want c1's hostname %s, MAC %s and 192.168.100.10", id[:12], joined, id[:12], mac)
	}

	s.MustKnit(t, "run", "-d", "--name", "hostweb", "--network", "host", "--rootfs", rootfs, "httpd", "-f", "-p", "8099", "-h", "/etc")
	eventually(t, func() (string, error) {
		body, err := httpGetVia(s, world, "198.51.100.1", 8099, "/hostname")
		if err != nil {
			return "", err
		}
		return body, nil
	})

	s.Start(t, "ip", "netns", "exec", "world", bin, "serve", "-listen", "198.51.100.2:53", "www.example.test=203.0.113.80")
	eventually(t, func() (string, error) {
		r := s.Knit("run", "--rm", "--rootfs", rootfs, "nslookup", "www.example.test")
		if !strings.Contains(r.Stdout, "203.0.113.80") {
			return "", fmt.Errorf("nslookup from the default bridge: %q %q", r.Stdout, r.Stderr)
		}
		return "", nil
	})
	s.MustKnit(t, "rm", "-f", "web1", "c1", "hostweb")
}

// As Docker's: what the container's user wrote in /etc/hosts survives a
// network connect and disconnect, which change only knit's own lines, and
// a resolv.conf the user edited is left as it is.
func TestConnectKeepsEditedEtcFiles(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.97.0.0/24", "edit1")
	s.MustKnit(t, "network", "create", "--subnet", "10.98.0.0/24", "edit2")
	s.MustKnit(t, "run", "-d", "--name", "edited", "--network", "edit1", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "exec", "edited", "sh", "-c", "echo '10.9.9.9 extra' >> /etc/hosts; echo 'options rotate' >> /etc/resolv.conf")
	s.MustKnit(t, "network", "connect", "edit2", "edited")
	hosts := s.MustKnit(t, "exec", "edited", "cat", "/etc/hosts")
	if !strings.Contains(hosts, "10.9.9.9 extra") || !strings.Contains(hosts, "10.98.0.2\t") {
		t.Errorf("/etc/hosts after the connect (want the user's line and the new address):\n%s", hosts)
	}
	if resolv := s.MustKnit(t, "exec", "edited", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "options rotate") {
		t.Errorf("resolv.conf after the connect lost the user's line:\n%s", resolv)
	}
	s.MustKnit(t, "network", "disconnect", "edit1", "edited")
	hosts = s.MustKnit(t, "exec", "edited", "cat", "/etc/hosts")
	if !strings.Contains(hosts, "10.9.9.9 extra") || strings.Contains(hosts, "10.97.0.") || !strings.Contains(hosts, "10.98.0.2\t") {
		t.Errorf("/etc/hosts after the disconnect (want the user's line, no 10.97.0. address):\n%s", hosts)
	}
	// Leaving its last DNS network, an edited resolv.conf stops naming
	// 127.0.0.11 (answered no more), the user's line kept.
	s.MustKnit(t, "run", "-d", "--name", "leaver", "--network", "edit1", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "exec", "leaver", "sh", "-c", "echo 'options rotate' >> /etc/resolv.conf")
	s.MustKnit(t, "network", "connect", "bridge", "leaver")
	s.MustKnit(t, "network", "disconnect", "edit1", "leaver")
	if resolv := s.MustKnit(t, "exec", "leaver", "cat", "/etc/resolv.conf"); strings.Contains(resolv, "127.0.0.11") ||
		!strings.Contains(resolv, "nameserver 198.51.100.2") || !strings.Contains(resolv, "options rotate") {
		t.Errorf("an edited resolv.conf after leaving the last DNS network (want the host's server, the user's line, no 127.0.0.11):\n%s", resolv)
	}
	// Unedited files are still rewritten whole.
	s.MustKnit(t, "run", "-d", "--name", "plain", "--network", "edit1", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "network", "connect", "edit2", "plain")
	s.MustKnit(t, "network", "disconnect", "edit1", "plain")
	if hosts := s.MustKnit(t, "exec", "plain", "cat", "/etc/hosts"); strings.Contains(hosts, "10.97.0.") || !strings.Contains(hosts, "10.98.0.") {
		t.Errorf("/etc/hosts of an unedited container after moving networks:\n%s", hosts)
	}
}

// A host firewall that drops by default what reaches the host (ufw's
// "deny incoming") also drops the containers' queries to the embedded
// server on their gateway, whatever knit's own table accepts: the run
// that starts the server says so.
func TestHostInputDropIsSaid(t *testing.T) {
	rootfs, _ := dnsRootfs(t)
	s := sandbox(t)
	s.MustRun(t, "nft", "add table inet hostfw")
	s.MustRun(t, "nft", "add chain inet hostfw input { type filter hook input priority 0 ; policy drop ; }")
	s.MustKnit(t, "network", "create", "walled")
	r := s.Knit("run", "-d", "--name", "walled1", "--network", "walled", "--rootfs", rootfs, "sleep", "300")
	if r.Code != 0 || !strings.Contains(r.Stderr, "the host's firewall drops what reaches the host unless allowed (inet hostfw/input)") {
		t.Errorf("run with the host's input policy drop: exit %d, stderr %q; want it started and a warning", r.Code, r.Stderr)
	}
}

// A subnet picked from the pools never covers the host's nameserver, as
// dockerd's InferReservedNetworks: 172.17.0.0/16 over a resolver at
// 172.17.0.10, reached through the default route, would cut the host's
// DNS off.
func TestPoolsAvoidTheHostsNameserver(t *testing.T) {
	bb := testutil.Busybox(t)
	s := sandbox(t)
	if got := s.MustRun(t, "cat", "/etc/resolv.conf"); got != "nameserver 198.51.100.2\n" {
		t.Fatalf("the sandbox's resolv.conf is %q: not the sandbox's own, left alone", got)
	}
	s.MustRun(t, "sh", "-c", "echo 'nameserver 172.17.0.10' > /etc/resolv.conf")
	s.MustKnit(t, "run", "--rm", "--rootfs", bb, "true")
	if sub := s.MustKnit(t, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "bridge"); strings.TrimSpace(sub) != "172.18.0.0/16" {
		t.Errorf("the default network's subnet with the host's nameserver at 172.17.0.10: %q, want 172.18.0.0/16", sub)
	}
	// A user-defined network's too.
	s.MustKnit(t, "network", "create", "mine")
	if sub := s.MustKnit(t, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "mine"); strings.TrimSpace(sub) != "172.19.0.0/16" {
		t.Errorf("a user-defined network's subnet with the host's nameserver at 172.17.0.10: %q, want 172.19.0.0/16", sub)
	}
}

// A container cannot ask the embedded DNS server as its neighbour, which
// the server knows by its address: by ARP it cannot take the neighbour's
// address (and with it the answers), and what it sends from that address
// never reaches the host. The neighbour itself is unaffected, and sends
// from either of its addresses through either of its networks.
func TestForgedSourceDropped(t *testing.T) {
	rootfs, bin := dnsRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.81.0.0/24", "front")
	s.MustKnit(t, "network", "create", "--subnet", "10.82.0.0/24", "back")
	for _, c := range []struct{ name, network string }{{"hidden", "back"}, {"victim", "front"}, {"attacker", "front"}} {
		s.MustKnit(t, "run", "-d", "--name", c.name, "--network", c.network, "--rootfs", rootfs, "sleep", "300")
	}
	s.MustKnit(t, "network", "connect", "back", "victim")
	hidden, victim := ipOn(t, s, "hidden", "back"), ipOn(t, s, "victim", "front")
	answers(t, s, "victim", "10.81.0.1", "hidden", hidden)
	if out := ask(t, s, "attacker", "10.81.0.1", "hidden"); !unresolved(out) {
		t.Fatalf("the attacker, not on back, resolved hidden: %q", out)
	}
	ns := netnsOf(t, s, "attacker")
	s.MustRun(t, "nsenter", "--net="+ns, "ip", "addr", "add", victim+"/32", "dev", "eth0")

	// Without the gateway's MAC, the query from the victim's address
	// first asks for it by ARP from that address, which would also point
	// the host's entry for it, and the answers, at the attacker.
	s.MustRun(t, "nsenter", "--net="+ns, "ip", "neigh", "flush", "dev", "eth0")
	if out := ask(t, s, "attacker", "10.81.0.1", "-from", victim, "-timeout", "2s", "hidden"); strings.Contains(out, "A "+hidden) {
		t.Errorf("the attacker, as the victim, resolved hidden: %q", out)
	}
	// With it, the query itself never reaches the host.
	br := strings.Fields(s.MustRun(t, "ip", "-o", "-4", "addr", "show", "to", "10.81.0.1/32"))[1]
	gwMAC := strings.TrimSpace(s.MustRun(t, "cat", "/sys/class/net/"+br+"/address"))
	s.MustRun(t, "nsenter", "--net="+ns, "ip", "neigh", "replace", "10.81.0.1", "lladdr", gwMAC, "dev", "eth0", "nud", "permanent")
	ask(t, s, "attacker", "10.81.0.1", "-from", victim+":53535", "-timeout", "1s", "hidden")
	if got := s.Run("conntrack", "-L", "-p", "udp", "--orig-src", victim, "--sport", "53535").Stdout; strings.Contains(got, "dport=53") {
		t.Errorf("the query from the victim's address reached the host:\n%s", got)
	}
	answers(t, s, "victim", "10.81.0.1", "hidden", hidden)
	// A container may send from its other network's address out of this
	// one's port: here to the world, by its default route, which is
	// front's (a reply to a connection made to its address on back
	// leaves so).
	s.Start(t, "ip", "netns", "exec", "world", bin, "serve", "-listen", "198.51.100.2:53", "world.test=203.0.113.12")
	eventually(t, func() (string, error) {
		out := ask(t, s, "victim", "198.51.100.2", "-from", ipOn(t, s, "victim", "back"), "-timeout", "1s", "world.test")
		if !strings.Contains(out, "A 203.0.113.12") {
			return out, fmt.Errorf("the victim asking the world from its address on back, through front: %q", out)
		}
		return out, nil
	})
	st := assertConsistent(t, s, "forged")
	for _, c := range []string{"victim", "attacker"} {
		id := inspectField(t, s, c, "{{.Id}}")
		i := slices.IndexFunc(st.veths, func(l hostLink) bool { return l.Alias == "knit:"+id && l.Master == br })
		if i < 0 || !strings.Contains(st.nft, `"`+st.veths[i].Name+`" . `+ipOn(t, s, c, "front")+` comment "knit:owner=`+id) {
			t.Errorf("no claim of %s's port on its address:\n%s", c, st.nft)
		}
	}
	// Leaving a network, and the container's end, release its claims
	// (the check wants exactly the holders' own).
	s.MustKnit(t, "network", "disconnect", "back", "victim")
	assertConsistent(t, s, "disconnected")
	s.MustKnit(t, "rm", "-f", "victim", "attacker")
	if st := assertConsistent(t, s, "removed"); strings.Contains(st.nft, victim+" comment") {
		t.Errorf("the victim's claim outlived it:\n%s", st.nft)
	}
}

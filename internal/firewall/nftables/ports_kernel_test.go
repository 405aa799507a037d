package nftables_test

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/nftables"
)

func mapping(hostIP string, hostPort uint16, proto string) firewall.PortMapping {
	m := firewall.PortMapping{Network: "n1", HostPort: hostPort, Proto: proto,
		ContainerIP: netip.MustParseAddr("10.99.0.2"), ContainerPort: 80}
	if hostIP != "" {
		m.HostIP = netip.MustParseAddr(hostIP)
	}
	return m
}

// TestPublishTraffic covers behaviours 1 to 4: published ports from the
// world, from the host, hairpin from containers, and a loopback-only port.
func TestPublishTraffic(t *testing.T) {
	l := newLAN(t)
	c1, c2 := l.container("br0", "ctr1", "10.99.0.2"), l.container("br0", "ctr2", "10.99.0.3")
	l.hairpin("ctr1")
	serve(t, c1, 80)
	fw := firewallIn(t, l.host)
	n := network("n1", "br0", "10.99.0.0/24")
	n.ICC = true
	check(t, fw.EnsureNetwork(n))
	ports := []firewall.PortMapping{mapping("", 8080, "tcp"), mapping("", 8080, "udp"), mapping("127.0.0.1", 8081, "tcp")}
	check(t, fw.AddPorts("c1", ports))
	before := nft(t, l.host, "-a", "list", "table", "inet", "knit")
	check(t, fw.AddPorts("c1", ports))
	if after := nft(t, l.host, "-a", "list", "table", "inet", "knit"); after != before {
		t.Errorf("second AddPorts rewrote the table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := rules(t, fw); got != nftTables(t, l.host) {
		t.Errorf("Rules() and nft disagree:\n%s", got)
	}

	// 1. From the world, without source NAT.
	for _, proto := range []string{"tcp", "udp"} {
		expect(t, "1 world", l.world, proto, "198.51.100.1:8080", "198.51.100.2")
	}
	// 2. From the host, to its own address and to loopback.
	expect(t, "2 host", l.host, "tcp", "198.51.100.1:8080", "198.51.100.1")
	expect(t, "2 host loopback", l.host, "tcp", "127.0.0.1:8080", "10.99.0.1")
	expect(t, "2 host loopback udp", l.host, "udp", "127.0.0.1:8080", "10.99.0.1")
	// 3. Hairpin: the publishing container and its neighbour.
	for name, ns := range map[string]string{"3 hairpin self": c1, "3 hairpin neighbour": c2} {
		expect(t, name, ns, "tcp", "198.51.100.1:8080", "10.99.0.1")
		expect(t, name, ns, "udp", "198.51.100.1:8080", "10.99.0.1")
	}
	// 4. A port on 127.0.0.1 is the host's only.
	expect(t, "4 host", l.host, "tcp", "127.0.0.1:8081", "10.99.0.1")
	expect(t, "4 world", l.world, "tcp", "198.51.100.1:8081", "")
	expect(t, "4 world direct", l.world, "tcp", "10.99.0.2:80", "")

	if owners, err := fw.Owners(); err != nil || strings.Join(owners, ",") != "c1" {
		t.Errorf("Owners() = %v, %v; want [c1]", owners, err)
	}
	// Another owner's RemovePorts touches nothing.
	check(t, fw.RemovePorts("c2", ports))
	expect(t, "other owner removed", l.world, "tcp", "198.51.100.1:8080", "198.51.100.2")
	for range 2 {
		check(t, fw.RemovePorts("c1", ports))
	}
	expect(t, "removed", l.world, "tcp", "198.51.100.1:8080", "")
	got := nft(t, l.host, "list", "table", "inet", "knit")
	if strings.Contains(got, "elements") && strings.Count(got, "elements") != 1 || strings.Contains(got, "knit:owner") {
		t.Errorf("elements left after RemovePorts:\n%s", got)
	}
	if owners, err := fw.Owners(); err != nil || len(owners) != 0 {
		t.Errorf("Owners() = %v, %v; want none", owners, err)
	}
}

// A port published on an address the host does not have catches nothing
// routed through the host to that address (Docker NATs LOCAL destinations
// only); once the host has the address, it works. And a packet an
// administrator's notrack rule leaves untracked does not slip past the
// rule that keeps the world away from unpublished ports.
func TestPublishTrafficHostAddressAndUntracked(t *testing.T) {
	l := newLAN(t)
	c1 := l.container("br0", "ctr1", "10.99.0.2")
	serve(t, c1, 80)
	fw := firewallIn(t, l.host)
	n := network("n1", "br0", "10.99.0.0/24")
	n.Masquerade = false // the container's replies keep its address, which the world dialled
	check(t, fw.EnsureNetwork(n))
	check(t, fw.AddPorts("c1", []firewall.PortMapping{mapping("198.51.100.77", 8082, "tcp")}))
	in := func(ns string, args ...string) {
		t.Helper()
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	// The world sends 198.51.100.77 to the host, which does not have it.
	in(l.world, "ip", "route", "add", "198.51.100.77/32", "via", "198.51.100.1")
	expect(t, "not the host's address", l.world, "tcp", "198.51.100.77:8082", "")
	in(l.host, "ip", "addr", "add", "198.51.100.77/24", "dev", "wan0")
	expect(t, "the host's address", l.world, "tcp", "198.51.100.77:8082", "198.51.100.2")

	// UDP to the container's own unpublished port, untracked by the
	// administrator's rule: dropped all the same.
	in(l.host, "nft", "add table ip raw; add chain ip raw pre { type filter hook prerouting priority raw; }; add rule ip raw pre ip daddr 10.99.0.2 udp dport 80 notrack")
	expect(t, "untracked, unpublished", l.world, "udp", "10.99.0.2:80", "")
}

// TestIsolationTraffic covers behaviours 5 to 7: exposure, isolation of
// networks, and ICC.
func TestIsolationTraffic(t *testing.T) {
	l := newLAN(t)
	c1, c2 := l.container("br0", "ctr1", "10.99.0.2"), l.container("br0", "ctr2", "10.99.0.3")
	c3 := l.container("br1", "ctr3", "10.98.0.2")
	serve(t, c1, 80)
	serve(t, c3, 80)
	serve(t, l.world, 9000)
	fw := firewallIn(t, l.host)
	n1, n2 := network("n1", "br0", "10.99.0.0/24"), network("n2", "br1", "10.98.0.0/24")
	n2.ICC = true
	check(t, fw.EnsureNetwork(n1))
	check(t, fw.EnsureNetwork(n2))

	// 5. Exposure: not from the world; with the network routed, a
	// published port is reachable on the container's own address, and
	// only that one.
	expect(t, "5 world direct", l.world, "tcp", "10.99.0.2:80", "")
	n1.Routed4 = true
	check(t, fw.EnsureNetwork(n1))
	expect(t, "5 routed, unpublished", l.world, "tcp", "10.99.0.2:80", "")
	open := firewall.PortMapping{Network: "n1", HostPort: 8080, Proto: "tcp",
		ContainerIP: netip.MustParseAddr("10.99.0.2"), ContainerPort: 80, Open: true}
	check(t, fw.AddPorts("c1", []firewall.PortMapping{open}))
	expect(t, "5 routed, published", l.world, "tcp", "10.99.0.2:80", "198.51.100.2")
	expect(t, "5 routed, published, other protocol", l.world, "udp", "10.99.0.2:80", "")
	check(t, fw.RemovePorts("c1", []firewall.PortMapping{open}))
	expect(t, "5 routed, unpublished again", l.world, "tcp", "10.99.0.2:80", "")
	n1.Routed4 = false
	check(t, fw.EnsureNetwork(n1))
	check(t, fw.AddPorts("c1", []firewall.PortMapping{open}))
	expect(t, "5 nat, an open element does not open", l.world, "tcp", "10.99.0.2:80", "")
	check(t, fw.RemovePorts("c1", nil))

	// 6. Isolation: neither network reaches the other; both the world.
	expect(t, "6 br1 to br0", c3, "tcp", "10.99.0.2:80", "")
	expect(t, "6 br0 to br1", c1, "tcp", "10.98.0.2:80", "")
	expect(t, "6 br0 to world", c1, "tcp", "198.51.100.2:9000", "198.51.100.1")
	expect(t, "6 br1 to world", c3, "tcp", "198.51.100.2:9000", "198.51.100.1")

	// 7. ICC off drops traffic inside br0; on lets it through.
	expect(t, "7 icc off", c2, "tcp", "10.99.0.2:80", "")
	n1.ICC = true
	check(t, fw.EnsureNetwork(n1))
	expect(t, "7 icc on", c2, "tcp", "10.99.0.2:80", "10.99.0.3")
}

// TestUserChain covers behaviour 8: an administrator's rule in knit-user
// survives knit's changes and wins.
func TestUserChain(t *testing.T) {
	l := newLAN(t)
	c1 := l.container("br0", "ctr1", "10.99.0.2")
	serve(t, c1, 80)
	fw := firewallIn(t, l.host)
	n := network("n1", "br0", "10.99.0.0/24")
	check(t, fw.EnsureNetwork(n))
	check(t, fw.AddPorts("c1", []firewall.PortMapping{mapping("", 8080, "tcp")}))
	expect(t, "published", l.world, "tcp", "198.51.100.1:8080", "198.51.100.2")

	nft(t, l.host, "add rule inet knit knit-user ip saddr 198.51.100.2 tcp dport 80 drop")
	n.Masquerade = false // a change, so that EnsureNetwork rewrites
	check(t, fw.EnsureNetwork(n))
	check(t, fw.AddPorts("c1", []firewall.PortMapping{mapping("", 8081, "tcp")}))
	check(t, fw.RemoveNetwork("n1"))
	check(t, fw.EnsureNetwork(n))
	if got := nft(t, l.host, "list", "chain", "inet", "knit", "knit-user"); !strings.Contains(got, "ip saddr 198.51.100.2 tcp dport 80 drop") {
		t.Fatalf("administrator's rule is gone:\n%s", got)
	}
	expect(t, "user drop", l.world, "tcp", "198.51.100.1:8080", "")
	expect(t, "user drop 8081", l.world, "tcp", "198.51.100.1:8081", "")
	nft(t, l.host, "flush chain inet knit knit-user")
	expect(t, "user rule flushed", l.world, "tcp", "198.51.100.1:8081", "198.51.100.2")
	// A missing user chain is recreated (empty), and jumped to again.
	nft(t, l.host, "delete rule inet knit forward handle "+jumpHandle(t, l.host))
	nft(t, l.host, "delete chain inet knit knit-user")
	check(t, fw.EnsureNetwork(n))
	if got := rules(t, fw); !strings.Contains(got, "jump knit-user") || !strings.Contains(got, "chain knit-user {") {
		t.Fatalf("user chain not restored:\n%s", got)
	}
}

// jumpHandle returns the handle of the jump to knit-user in forward.
func jumpHandle(t *testing.T, ns string) string {
	t.Helper()
	for _, line := range strings.Split(nft(t, ns, "-a", "list", "chain", "inet", "knit", "forward"), "\n") {
		if strings.Contains(line, "jump knit-user") {
			return line[strings.LastIndex(line, " ")+1:]
		}
	}
	t.Fatal("no jump to knit-user")
	return ""
}

// TestRulesMatchNft builds in the kernel the state TestRenderTable renders
// by hand, and checks that nft, Rules() and that rendering agree.
func TestRulesMatchNft(t *testing.T) {
	fw, ns := newFirewall(t)
	n := network("n1", "br0", "10.99.0.0/24")
	n.ICC, n.DNS = true, true
	check(t, fw.EnsureNetwork(n))
	nft(t, ns, `add element inet knit bridges { "br10" comment "knit:net=n2" }`)
	v6 := mapping("::1", 9, "sctp")
	v6.ContainerIP, v6.ContainerPort = netip.MustParseAddr("fd00::2"), 9
	udp := mapping("", 8081, "udp")
	udp.ContainerPort = 53
	check(t, fw.AddPorts("c1", []firewall.PortMapping{udp, mapping("", 8080, "tcp"), v6}))
	for owner, links := range nftables.TestLinks() {
		check(t, fw.AddLinks(owner, links))
	}
	if got := nftTables(t, ns); got != nftables.WantTable {
		t.Errorf("nft list table inet knit, bridge knit:\n%s\nwant:\n%s", got, nftables.WantTable)
	}
	if got := rules(t, fw); got != nftables.WantTable {
		t.Errorf("Rules():\n%s\nwant:\n%s", got, nftables.WantTable)
	}
}

// TestAddPortsOwners publishes before any network exists (the table is
// made on the way), replaces another owner's stale mapping and removes by
// owner.
func TestAddPortsOwners(t *testing.T) {
	fw, ns := newFirewall(t)
	stale := mapping("", 8080, "tcp")
	check(t, fw.AddPorts("old", []firewall.PortMapping{stale, mapping("", 9090, "udp")}))
	fresh := stale
	fresh.ContainerIP = netip.MustParseAddr("10.99.0.7")
	check(t, fw.AddPorts("new", []firewall.PortMapping{fresh}))
	got := nft(t, ns, "list", "map", "inet", "knit", "pub4any")
	if r := rules(t, fw); !strings.Contains(r, got[strings.Index(got, "\tmap"):strings.LastIndex(got, "}")]) {
		t.Errorf("Rules() and nft disagree:\n%s\nnft:\n%s", r, got)
	}
	if !strings.Contains(got, `tcp . 8080 comment "knit:owner=new" : 10.99.0.7 . 80`) || strings.Contains(got, `tcp . 8080 comment "knit:owner=old"`) {
		t.Errorf("stale mapping not replaced:\n%s", got)
	}
	if owners, err := fw.Owners(); err != nil || strings.Join(owners, ",") != "new,old" {
		t.Errorf("Owners() = %v, %v", owners, err)
	}
	check(t, fw.RemovePorts("old", []firewall.PortMapping{stale, mapping("", 9090, "udp")}))
	if owners, err := fw.Owners(); err != nil || strings.Join(owners, ",") != "new" {
		t.Errorf("Owners() = %v, %v", owners, err)
	}
	check(t, fw.RemovePorts("new", []firewall.PortMapping{fresh}))
	if got := nft(t, ns, "list", "map", "inet", "knit", "pub4any"); strings.Contains(got, "elements") {
		t.Errorf("elements left:\n%s", got)
	}
	dup := fresh
	dup.ContainerPort = 81
	if err := fw.AddPorts("x", []firewall.PortMapping{fresh, dup}); errdefs.KindOf(err) != errdefs.KindInvalid {
		t.Errorf("AddPorts(one host port twice) = %v, want invalid", err)
	}
}

// A prune knows only the owner: RemovePorts with nil mappings removes all of
// that owner's elements and no one else's.
func TestRemovePortsOfOwner(t *testing.T) {
	fw, _ := newFirewall(t) // skips unless root
	m := func(port uint16, ip string) firewall.PortMapping {
		return firewall.PortMapping{Network: "n1", HostPort: port, Proto: "tcp", ContainerIP: netip.MustParseAddr(ip), ContainerPort: 80}
	}
	if err := fw.AddPorts("a", []firewall.PortMapping{m(8080, "10.1.0.2"), m(8081, "10.1.0.2")}); err != nil {
		t.Fatal(err)
	}
	if err := fw.AddPorts("b", []firewall.PortMapping{m(9090, "10.1.0.3")}); err != nil {
		t.Fatal(err)
	}
	if err := fw.RemovePorts("a", nil); err != nil {
		t.Fatal(err)
	}
	if owners, err := fw.Owners(); err != nil || len(owners) != 1 || owners[0] != "b" {
		t.Errorf("owners after removing a's: %v, %v", owners, err)
	}
}

// One container may publish a wide range: a batch of a thousand elements
// must not overflow the netlink socket.
func TestAddPortsLargeBatch(t *testing.T) {
	fw, _ := newFirewall(t) // skips unless root
	var ports []firewall.PortMapping
	for i := range 1000 {
		ports = append(ports, firewall.PortMapping{Network: "n1", HostPort: uint16(20000 + i), Proto: "tcp",
			ContainerIP: netip.MustParseAddr("10.1.0.2"), ContainerPort: uint16(20000 + i)})
	}
	if err := fw.AddPorts("big", ports); err != nil {
		t.Fatalf("AddPorts of 1000 mappings: %v", err)
	}
	if err := fw.RemovePorts("big", ports); err != nil {
		t.Fatalf("RemovePorts of 1000 mappings: %v", err)
	}
}

// A routed network's rules and its open elements read back from the kernel
// as knit renders them, and say what they should.
func TestRoutedRulesMatchNft(t *testing.T) {
	fw, ns := newFirewall(t)
	n := network("n1", "br0", "10.99.0.0/24")
	n.Subnets = append(n.Subnets, netip.MustParsePrefix("fd00:99::/64"))
	n.Routed6 = true
	check(t, fw.EnsureNetwork(n))
	open := mapping("", 8080, "tcp")
	open.ContainerIP, open.Open = netip.MustParseAddr("fd00:99::2"), true
	check(t, fw.AddPorts("c1", []firewall.PortMapping{open, mapping("", 8081, "udp")}))
	got := nftTables(t, ns)
	if r := rules(t, fw); r != got {
		t.Errorf("Rules():\n%s\nnft:\n%s", r, got)
	}
	for _, want := range []string{
		`iifname != "br0" oifname "br0" meta nfproto ipv4 ct state new ct status ! dnat drop`,
		`iifname != "br0" oifname "br0" ip6 daddr . meta l4proto . th dport != @open6 meta l4proto != ipv6-icmp ct state new ct status ! dnat drop`,
		`elements = { fd00:99::2 . tcp . 80 comment "knit:owner=c1" }`,
		`ip saddr 10.99.0.0/24 oifname != "br0" masquerade`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no %s in:\n%s", want, got)
		}
	}
	if strings.Contains(got, `ip6 saddr fd00:99::/64 oifname != "br0" masquerade`) {
		t.Errorf("the routed family is masqueraded:\n%s", got)
	}
	check(t, fw.RemovePorts("c1", nil))
	if got := nft(t, ns, "list", "table", "inet", "knit"); strings.Contains(got, "knit:owner=c1") {
		t.Errorf("elements left after RemovePorts:\n%s", got)
	}
}

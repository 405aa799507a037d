package nftables_test

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/netns"
)

// ipIn runs ip with args in namespace ns.
func ipIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return runIn(t, ns, "ip", args...)
}

// TestSourceGuardTraffic checks that a container's port sends only from
// the addresses it claims when another port claims them: a neighbour
// giving a's address to the host (the embedded DNS server's listener) or
// to another container is dropped, and so is its ARP claim to a's address;
// its own address and one nobody claims pass.
func TestSourceGuardTraffic(t *testing.T) {
	l := newLAN(t)
	a, b := l.container("br0", "ctr1", "10.99.0.2"), l.container("br0", "ctr2", "10.99.0.3")
	c := l.container("br0", "ctr3", "10.99.0.4")
	for _, port := range []string{"ctr1", "ctr2", "ctr3"} {
		check(t, l.hostLink.LinkSetGroup(port, firewall.PortGroup))
	}
	fw := firewallIn(t, l.host)
	n := network("n1", "br0", "10.99.0.0/24")
	n.ICC = true
	check(t, fw.EnsureNetwork(n))
	src := func(port, addr string) firewall.Source {
		return firewall.Source{Port: port, Addr: netip.MustParseAddr(addr)}
	}
	check(t, fw.AddSources("A", []firewall.Source{src("ctr1", "10.99.0.2")}))
	check(t, fw.AddSources("B", []firewall.Source{src("ctr2", "10.99.0.3")}))
	before := nft(t, l.host, "-a", "list", "table", "bridge", "knit")
	check(t, fw.AddSources("B", []firewall.Source{src("ctr2", "10.99.0.3")}))
	if after := nft(t, l.host, "-a", "list", "table", "bridge", "knit"); after != before {
		t.Errorf("a second AddSources rewrote the table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if !strings.Contains(nft(t, l.host, "list", "set", "bridge", "knit", "guarded4"), `10.99.0.2 comment "knit:owner=A"`) ||
		!strings.Contains(before, `"ctr1" . 10.99.0.2 comment "knit:owner=A"`) {
		t.Errorf("no claim or pair of A's:\n%s", before)
	}
	if got, want := rules(t, fw), nftTables(t, l.host); got != want {
		t.Errorf("Rules() and nft disagree:\n%s\nnft:\n%s", got, want)
	}

	// b also has a's address, and one nobody claims; its neighbours are
	// known, so that what is sent is an IP packet, not an ARP request.
	ipIn(t, b, "addr", "add", "10.99.0.2/32", "dev", "eth0")
	ipIn(t, b, "addr", "add", "10.99.0.50/32", "dev", "eth0")
	brMAC := macIn(t, l.host, "br0")
	ipIn(t, b, "neigh", "replace", "10.99.0.1", "lladdr", brMAC.String(), "dev", "eth0", "nud", "permanent")
	ipIn(t, b, "neigh", "replace", "10.99.0.4", "lladdr", macOf(t, c), "dev", "eth0", "nud", "permanent")
	var hostLn, cLn *net.UDPConn
	check(t, netns.Do(l.host, func() (err error) {
		hostLn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 99, 0, 1), Port: 5353})
		return err
	}))
	defer hostLn.Close()
	check(t, netns.Do(c, func() (err error) {
		cLn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 5353})
		return err
	}))
	defer cLn.Close()
	toHost, toC := netip.MustParseAddrPort("10.99.0.1:5353"), netip.MustParseAddrPort("10.99.0.4:5353")
	reaches := func(what, from, src string, to netip.AddrPort, ln *net.UDPConn, want bool) {
		t.Helper()
		if got := udpReaches(t, from, netip.MustParseAddr(src), to, ln); got != want {
			t.Errorf("%s: %s from %s reached %s: %v, want %v", what, from, src, to, got, want)
		}
	}
	reaches("own address to the host", b, "10.99.0.3", toHost, hostLn, true)
	reaches("a's address to the host", b, "10.99.0.2", toHost, hostLn, false)
	reaches("a's address to a neighbour", b, "10.99.0.2", toC, cLn, false)
	reaches("an unclaimed address", b, "10.99.0.50", toHost, hostLn, true)
	reaches("a itself", a, "10.99.0.2", toHost, hostLn, true)

	// The host knows a's MAC; b's ARP reply claiming a's address is
	// dropped before the host's cache takes it (after its locktime).
	time.Sleep(1100 * time.Millisecond)
	sendFrame(t, b, arpReply(macIn(t, b, "eth0"), "10.99.0.2", "10.99.0.1", brMAC), 0)
	time.Sleep(100 * time.Millisecond)
	if got := ipIn(t, l.host, "neigh", "show", "10.99.0.2", "dev", "br0"); !strings.Contains(got, macOf(t, a)) {
		t.Errorf("the host's neighbour entry of 10.99.0.2 is %q, want a's MAC %s", got, macOf(t, a))
	}

	// The same with an 802.1Q priority tag, which the host takes for
	// untagged.
	time.Sleep(1100 * time.Millisecond)
	sendFrame(t, b, arpReply(macIn(t, b, "eth0"), "10.99.0.2", "10.99.0.1", brMAC), 1)
	time.Sleep(100 * time.Millisecond)
	if got := ipIn(t, l.host, "neigh", "show", "10.99.0.2", "dev", "br0"); !strings.Contains(got, macOf(t, a)) {
		t.Errorf("after a tagged ARP reply, the host's neighbour entry of 10.99.0.2 is %q, want a's MAC %s", got, macOf(t, a))
	}
	// A frame with two tags does not get through to a neighbour.
	if sees(t, b, c, append(make([]byte, 12), append([]byte{0x08, 0}, "knit-double-tag!"...)...), 2) {
		t.Errorf("a frame with two VLAN tags from b reached c")
	}

	// A container's port may send from its other addresses (its other
	// network's: a reply leaving by its default route).
	ipIn(t, b, "addr", "add", "10.99.0.60/32", "dev", "eth0")
	check(t, fw.AddSources("B", []firewall.Source{src("ctr2", "10.99.0.60")}))
	reaches("b's other address", b, "10.99.0.60", toHost, hostLn, true)

	// b takes the address over (the caller gave it to b): a's late
	// release leaves b's claim alone.
	check(t, fw.AddSources("B", []firewall.Source{src("ctr2", "10.99.0.2")}))
	check(t, fw.RemoveSources("A", []firewall.Source{src("ctr1", "10.99.0.2")}, []netip.Addr{netip.MustParseAddr("10.99.0.2")}))
	reaches("a's old address, now b's", b, "10.99.0.2", toHost, hostLn, true)
	ipIn(t, a, "neigh", "replace", "10.99.0.1", "lladdr", brMAC.String(), "dev", "eth0", "nud", "permanent")
	reaches("a's old address from a", a, "10.99.0.2", toHost, hostLn, false)
	if owners, err := fw.SourceOwners(); err != nil || strings.Join(owners, ",") != "B" {
		t.Errorf("SourceOwners() = %v, %v; want [B]", owners, err)
	}
	for range 2 {
		check(t, fw.RemoveSources("B", nil, nil))
	}
	if got := nft(t, l.host, "list", "table", "bridge", "knit"); strings.Contains(got, "knit:owner") {
		t.Errorf("elements left after RemoveSources:\n%s", got)
	}
	reaches("nothing claimed", a, "10.99.0.2", toHost, hostLn, true)
	reaches("nothing claimed", b, "10.99.0.2", toHost, hostLn, true)
}

// TestSourceGuardIPv6 checks the guard's IPv6 half: a neighbour's address
// as the source, and as the target of a neighbour advertisement (which
// would point the host's cache, and the replies, at the forger).
func TestSourceGuardIPv6(t *testing.T) {
	l := newLAN(t)
	a, b := l.container("br0", "ctr1", "10.99.0.2"), l.container("br0", "ctr2", "10.99.0.3")
	for _, port := range []string{"ctr1", "ctr2"} {
		check(t, l.hostLink.LinkSetGroup(port, firewall.PortGroup))
	}
	ipIn(t, l.host, "addr", "add", "fd00:99::1/64", "dev", "br0", "nodad")
	ipIn(t, a, "addr", "add", "fd00:99::2/64", "dev", "eth0", "nodad")
	ipIn(t, b, "addr", "add", "fd00:99::3/64", "dev", "eth0", "nodad")
	ipIn(t, b, "addr", "add", "fd00:99::2/128", "dev", "eth0", "nodad")
	fw := firewallIn(t, l.host)
	n := network("n1", "br0", "10.99.0.0/24")
	n.Subnets = append(n.Subnets, netip.MustParsePrefix("fd00:99::/64"))
	check(t, fw.EnsureNetwork(n))
	check(t, fw.AddSources("A", []firewall.Source{{Port: "ctr1", Addr: netip.MustParseAddr("fd00:99::2")}}))
	check(t, fw.AddSources("B", []firewall.Source{{Port: "ctr2", Addr: netip.MustParseAddr("fd00:99::3")}}))
	brMAC := macIn(t, l.host, "br0")
	ipIn(t, b, "-6", "neigh", "replace", "fd00:99::1", "lladdr", brMAC.String(), "dev", "eth0", "nud", "permanent")
	var hostLn *net.UDPConn
	check(t, netns.Do(l.host, func() (err error) {
		hostLn, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("fd00:99::1"), Port: 5353})
		return err
	}))
	defer hostLn.Close()
	to := netip.MustParseAddrPort("[fd00:99::1]:5353")
	for _, c := range []struct {
		what, from, src string
		want            bool
	}{{"own address", b, "fd00:99::3", true}, {"a's address", b, "fd00:99::2", false}, {"a itself", a, "fd00:99::2", true}} {
		if got := udpReaches(t, c.from, netip.MustParseAddr(c.src), to, hostLn); got != c.want {
			t.Errorf("%s: reached the host: %v, want %v", c.what, got, c.want)
		}
	}
	// The host knows a's MAC now; b advertises a's address as its own.
	ipIn(t, l.host, "-6", "neigh", "show", "fd00:99::2", "dev", "br0")
	sendFrame(t, b, neighborAdvert(macIn(t, b, "eth0"), brMAC, "fd00:99::3", "fd00:99::1", "fd00:99::2"), 0)
	time.Sleep(100 * time.Millisecond)
	if got := ipIn(t, l.host, "-6", "neigh", "show", "fd00:99::2", "dev", "br0"); !strings.Contains(got, macOf(t, a)) {
		t.Errorf("the host's neighbour entry of fd00:99::2 is %q, want a's MAC %s", got, macOf(t, a))
	}
}

// macOf returns the MAC of eth0 in namespace ns.
func macOf(t *testing.T, ns string) string {
	t.Helper()
	return macIn(t, ns, "eth0").String()
}

// macIn returns the MAC of interface name in namespace ns.
func macIn(t *testing.T, ns, name string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	check(t, netns.Do(ns, func() error {
		i, err := net.InterfaceByName(name)
		if err == nil {
			mac = i.HardwareAddr
		}
		return err
	}))
	return mac
}

// arpReply is an Ethernet frame from mine that says sender is at mine,
// to target at targetMAC.
func arpReply(mine net.HardwareAddr, sender, target string, targetMAC net.HardwareAddr) []byte {
	frame := append(append(append([]byte{}, targetMAC...), mine...), 0x08, 0x06)
	frame = append(frame, 0, 1, 0x08, 0, 6, 4, 0, 2) // Ethernet, IPv4, reply
	frame = append(append(frame, mine...), netip.MustParseAddr(sender).AsSlice()...)
	return append(append(frame, targetMAC...), netip.MustParseAddr(target).AsSlice()...)
}

// neighborAdvert is an Ethernet frame from mine, an unsolicited neighbour
// advertisement (override set) from src to dst that says target is at
// mine.
func neighborAdvert(mine, dstMAC net.HardwareAddr, src, dst, target string) []byte {
	s, d := netip.MustParseAddr(src).AsSlice(), netip.MustParseAddr(dst).AsSlice()
	icmp := []byte{136, 0, 0, 0, 0x20, 0, 0, 0} // type, code, checksum, flags: override
	icmp = append(icmp, netip.MustParseAddr(target).AsSlice()...)
	icmp = append(append(icmp, 2, 1), mine...) // option: target link-layer address
	// The checksum covers a pseudo-header: source, destination, length,
	// next header.
	sum := uint32(0)
	pseudo := append(append(append(append([]byte{}, s...), d...), 0, 0, 0, byte(len(icmp))), 0, 0, 0, 58)
	for _, b := range [][]byte{pseudo, icmp} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	icmp[2], icmp[3] = byte(^sum>>8), byte(^sum)
	ip6 := []byte{0x60, 0, 0, 0, 0, byte(len(icmp)), 58, 255}
	ip6 = append(append(ip6, s...), d...)
	frame := append(append(append([]byte{}, dstMAC...), mine...), 0x86, 0xdd)
	return append(append(frame, ip6...), icmp...)
}

// sendFrame sends frame from eth0 of namespace ns, with tags 802.1Q tags
// of VLAN 0 (priority tags) put in after the MAC addresses.
func sendFrame(t *testing.T, ns string, frame []byte, tags int) {
	t.Helper()
	for range tags {
		frame = append(append(append([]byte{}, frame[:12]...), 0x81, 0, 0, 0), frame[12:]...)
	}
	check(t, netns.Do(ns, func() error {
		eth, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: eth.Index})
	}))
}

// sees sends frame (its MAC addresses filled in: from's eth0 to to's)
// from namespace from with tags VLAN tags, and reports whether to's eth0
// saw it within half a second.
func sees(t *testing.T, from, to string, frame []byte, tags int) bool {
	t.Helper()
	var fd int
	check(t, netns.Do(to, func() (err error) {
		all := uint16(unix.ETH_P_ALL)
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(all>>8|all<<8)); err != nil {
			return err
		}
		eth, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: eth.Index, Protocol: all>>8 | all<<8})
	}))
	defer unix.Close(fd)
	check(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}))
	frame = slices.Clone(frame)
	copy(frame, macIn(t, to, "eth0"))
	copy(frame[6:], macIn(t, from, "eth0"))
	marker := frame[len(frame)-16:]
	sendFrame(t, from, frame, tags)
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == nil && bytes.Contains(buf[:n], marker) {
			return true
		}
	}
	return false
}

// TestRAGuardTagged checks that a router advertisement behind an 802.1Q
// priority tag (which the neighbour takes for untagged) is dropped too.
func TestRAGuardTagged(t *testing.T) {
	l := newLAN(t)
	b, c := l.container("br0", "ctr2", "10.99.0.3"), l.container("br0", "ctr3", "10.99.0.4")
	for _, port := range []string{"ctr2", "ctr3"} {
		check(t, l.hostLink.LinkSetGroup(port, firewall.PortGroup))
	}
	ra := make([]byte, 12, 80)
	ra = append(ra, 0x86, 0xdd, 0x60, 0, 0, 0, 0, 16, 58, 255)
	ra = append(ra, netip.MustParseAddr("fe80::1").AsSlice()...)
	ra = append(ra, netip.MustParseAddr("ff02::1").AsSlice()...)
	ra = append(ra, 134, 0, 0, 0, 64, 0, 0, 0)
	ra = append(ra, []byte("knit-tagged-ra!!")...) // 16 bytes: the marker
	if !sees(t, b, c, ra, 1) {
		t.Fatal("without knit's rules a tagged advertisement does not reach a neighbour: the test proves nothing")
	}
	check(t, firewallIn(t, l.host).EnsureNetwork(network("n1", "br0", "10.99.0.0/24")))
	for tags := range 3 {
		if sees(t, b, c, ra, tags) {
			t.Errorf("a router advertisement with %d VLAN tags reached a neighbour", tags)
		}
	}
}

// A container's attach publishes its ports and claims its addresses in one
// batch, and its detach undoes both in one; in place, neither writes.
func TestPortsAndSourcesInOneBatch(t *testing.T) {
	fw, ns := newFirewall(t)
	check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")))
	gen := func() uint32 {
		t.Helper()
		g, err := fw.Generation()
		check(t, err)
		return g
	}
	addr := netip.MustParseAddr("10.99.0.2")
	ports := []firewall.PortMapping{{Network: "n1", HostPort: 8080, Proto: "tcp", ContainerIP: addr, ContainerPort: 80}}
	srcs := []firewall.Source{{Port: "veth0a1b2c3", Addr: addr}}
	for i, want := range []uint32{1, 0} {
		before := gen()
		check(t, fw.AddPortsAndSources("A", ports, srcs))
		if got := gen() - before; got != want {
			t.Errorf("AddPortsAndSources #%d took %d batches, want %d", i+1, got, want)
		}
	}
	for set, e := range map[string]string{"pub4any": `tcp . 8080 comment "knit:owner=A"`, "guarded4": `10.99.0.2 comment "knit:owner=A"`,
		"senders4": `"veth0a1b2c3" . 10.99.0.2 comment "knit:owner=A"`} {
		kind, family := "set", "bridge"
		if set == "pub4any" {
			kind, family = "map", "inet"
		}
		if got := nft(t, ns, "list", kind, family, "knit", set); !strings.Contains(got, e) {
			t.Errorf("no element %s in %s:\n%s", e, set, got)
		}
	}
	for i, want := range []uint32{1, 0} {
		before := gen()
		check(t, fw.RemovePortsAndSources("A", ports, srcs, []netip.Addr{addr}))
		if got := gen() - before; got != want {
			t.Errorf("RemovePortsAndSources #%d took %d batches, want %d", i+1, got, want)
		}
	}
	if got := nftTables(t, ns); strings.Contains(got, "knit:owner") {
		t.Errorf("elements left:\n%s", got)
	}
}

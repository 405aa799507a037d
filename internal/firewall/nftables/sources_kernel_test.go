package nftables_test

import (
	"net"
	"net/netip"
	"os/exec"
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
	out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "ip"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
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
	for _, e := range []string{`10.99.0.2 comment "knit:owner=A"`, `"ctr1" . 10.99.0.2 comment "knit:owner=A"`} {
		if !strings.Contains(before, e) {
			t.Errorf("no element %s:\n%s", e, before)
		}
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
	sendARPReply(t, b, "10.99.0.2", "10.99.0.1", brMAC)
	time.Sleep(100 * time.Millisecond)
	if got := ipIn(t, l.host, "neigh", "show", "10.99.0.2", "dev", "br0"); !strings.Contains(got, macOf(t, a)) {
		t.Errorf("the host's neighbour entry of 10.99.0.2 is %q, want a's MAC %s", got, macOf(t, a))
	}

	// b takes the address over (the caller gave it to b): a's late
	// release leaves b's claim alone.
	check(t, fw.AddSources("B", []firewall.Source{src("ctr2", "10.99.0.2")}))
	check(t, fw.RemoveSources("A", []firewall.Source{src("ctr1", "10.99.0.2")}))
	reaches("a's old address, now b's", b, "10.99.0.2", toHost, hostLn, true)
	ipIn(t, a, "neigh", "replace", "10.99.0.1", "lladdr", brMAC.String(), "dev", "eth0", "nud", "permanent")
	reaches("a's old address from a", a, "10.99.0.2", toHost, hostLn, false)
	if owners, err := fw.SourceOwners(); err != nil || strings.Join(owners, ",") != "B" {
		t.Errorf("SourceOwners() = %v, %v; want [B]", owners, err)
	}
	for range 2 {
		check(t, fw.RemoveSources("B", nil))
	}
	if got := nft(t, l.host, "list", "table", "bridge", "knit"); strings.Contains(got, "knit:owner") {
		t.Errorf("elements left after RemoveSources:\n%s", got)
	}
	reaches("nothing claimed", a, "10.99.0.2", toHost, hostLn, true)
	reaches("nothing claimed", b, "10.99.0.2", toHost, hostLn, true)
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

// sendARPReply sends, from eth0 of namespace ns, an ARP reply that says
// sender is at ns's MAC, to target at targetMAC.
func sendARPReply(t *testing.T, ns, sender, target string, targetMAC net.HardwareAddr) {
	t.Helper()
	mine := macIn(t, ns, "eth0")
	check(t, netns.Do(ns, func() error {
		eth, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		proto := uint16(unix.ETH_P_ARP)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(proto>>8|proto<<8))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		frame := append(append(append([]byte{}, targetMAC...), mine...), 0x08, 0x06)
		frame = append(frame, 0, 1, 0x08, 0, 6, 4, 0, 2) // Ethernet, IPv4, reply
		frame = append(append(frame, mine...), netip.MustParseAddr(sender).AsSlice()...)
		frame = append(append(frame, targetMAC...), netip.MustParseAddr(target).AsSlice()...)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: eth.Index, Protocol: proto>>8 | proto<<8})
	}))
}

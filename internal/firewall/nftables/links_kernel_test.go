package nftables_test

import (
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/netns"
)

// TestLinkTraffic checks docker's --link with ICC off: the linking
// container reaches exactly the linked port, and nothing else opens.
func TestLinkTraffic(t *testing.T) {
	l := newLAN(t)
	a, b := l.container("br0", "ctr1", "10.99.0.2"), l.container("br0", "ctr2", "10.99.0.3")
	serve(t, b, 80)
	serve(t, b, 81)
	serve(t, a, 80)
	fw := firewallIn(t, l.host)
	n := network("n1", "br0", "10.99.0.0/24") // ICC off
	check(t, fw.EnsureNetwork(n))
	expect(t, "icc off", a, "tcp", "10.99.0.3:80", "")

	link := firewall.Link{Network: "n1", From: netip.MustParseAddr("10.99.0.2"), To: netip.MustParseAddr("10.99.0.3"), Proto: "tcp", Port: 80}
	check(t, fw.AddLinks("A", []firewall.Link{link}))
	before := nft(t, l.host, "-a", "list", "table", "inet", "knit")
	check(t, fw.AddLinks("A", []firewall.Link{link}))
	check(t, fw.EnsureNetwork(n))
	if after := nft(t, l.host, "-a", "list", "table", "inet", "knit"); after != before {
		t.Errorf("second AddLinks or EnsureNetwork rewrote the table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if !strings.Contains(before, `10.99.0.2 . 10.99.0.3 . tcp . 80 comment "knit:owner=A"`) {
		t.Errorf("no link element:\n%s", before)
	}
	if got := rules(t, fw); got != nftTables(t, l.host) {
		t.Errorf("Rules() and nft disagree:\n%s", got)
	}
	expect(t, "linked", a, "tcp", "10.99.0.3:80", "10.99.0.2")
	expect(t, "linked again", a, "tcp", "10.99.0.3:80", "10.99.0.2")
	expect(t, "other port", a, "tcp", "10.99.0.3:81", "")
	expect(t, "other protocol", a, "udp", "10.99.0.3:80", "")
	expect(t, "reverse", b, "tcp", "10.99.0.2:80", "")

	if owners, err := fw.LinkOwners(); err != nil || strings.Join(owners, ",") != "A" {
		t.Errorf("LinkOwners() = %v, %v; want [A]", owners, err)
	}
	if owners, err := fw.Owners(); err != nil || len(owners) != 0 {
		t.Errorf("Owners() = %v, %v; want no port owners", owners, err)
	}
	check(t, fw.RemoveLinks("B", nil)) // another owner's: touches nothing
	check(t, fw.RemoveLinks("B", []firewall.Link{link}))
	expect(t, "other owner removed", a, "tcp", "10.99.0.3:80", "10.99.0.2")
	for range 2 {
		check(t, fw.RemoveLinks("A", nil))
	}
	expect(t, "removed", a, "tcp", "10.99.0.3:80", "")
	if got := nft(t, l.host, "list", "table", "inet", "knit"); strings.Contains(got, "knit:owner") {
		t.Errorf("elements left after RemoveLinks:\n%s", got)
	}
	if owners, err := fw.LinkOwners(); err != nil || len(owners) != 0 {
		t.Errorf("LinkOwners() = %v, %v; want none", owners, err)
	}
}

// SetLinks makes an owner's links exactly those given, in one batch (the
// generation moves by one): the ones it drops go, a kept one stays, a new
// one comes, another owner's of the same key is taken over, and others'
// stay; repeated, it writes nothing.
func TestSetLinks(t *testing.T) {
	fw, ns := newFirewall(t)
	check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")))
	l := func(from, to string, port uint16) firewall.Link {
		return firewall.Link{Network: "n1", From: netip.MustParseAddr(from), To: netip.MustParseAddr(to), Proto: "tcp", Port: port}
	}
	dropped, kept, added, taken := l("10.99.0.2", "10.99.0.3", 80), l("10.99.0.2", "10.99.0.4", 80), l("fd00::2", "fd00::3", 443), l("10.99.0.2", "10.99.0.5", 80)
	other := l("10.99.0.6", "10.99.0.3", 80)
	check(t, fw.AddLinks("A", []firewall.Link{dropped, kept}))
	check(t, fw.AddLinks("B", []firewall.Link{taken, other}))
	gen := func() uint32 {
		t.Helper()
		g, err := fw.Generation()
		check(t, err)
		return g
	}
	before := gen()
	check(t, fw.SetLinks("A", []firewall.Link{kept, added, taken}))
	if after := gen(); after != before+1 {
		t.Errorf("SetLinks took %d batches, want 1", after-before)
	}
	for link, want := range map[firewall.Link]string{dropped: "", kept: "knit:owner=A", added: "knit:owner=A", taken: "knit:owner=A", other: "knit:owner=B"} {
		_, e, found, err := fw.LookupLink(link)
		check(t, err)
		if found != (want != "") || e.Comment != want {
			t.Errorf("%v: found %v, %q; want %q", link, found, e.Comment, want)
		}
	}
	before = gen()
	check(t, fw.SetLinks("A", []firewall.Link{kept, added, taken}))
	check(t, fw.SetLinks("C", nil))
	if after := gen(); after != before {
		t.Errorf("SetLinks with everything in place wrote %d batches", after-before)
	}
	check(t, fw.SetLinks("A", nil))
	if owners, err := fw.LinkOwners(); err != nil || strings.Join(owners, ",") != "B" {
		t.Errorf("LinkOwners() after SetLinks(A, nil) = %v, %v; want [B]", owners, err)
	}
	if got := nft(t, ns, "list", "set", "inet", "knit", "links4"); !strings.Contains(got, "10.99.0.6 . 10.99.0.3 . tcp . 80") {
		t.Errorf("B's link is gone:\n%s", got)
	}
}

// TestLinksUpgrade checks that a table made before links existed (no link
// sets, no link rules) gets them from EnsureNetwork, whose fast path must
// not take it for up to date.
func TestLinksUpgrade(t *testing.T) {
	fw, ns := newFirewall(t)
	n := network("n1", "br0", "10.99.0.0/24")
	check(t, fw.EnsureNetwork(n))
	want := rules(t, fw)
	for _, h := range regexp.MustCompile(`@links[46] [^\n]*accept comment "knit:base" # handle (\d+)`).FindAllStringSubmatch(nft(t, ns, "-a", "list", "chain", "inet", "knit", "forward"), -1) {
		nft(t, ns, "delete rule inet knit forward handle "+h[1])
	}
	nft(t, ns, "delete set inet knit links4")
	nft(t, ns, "delete set inet knit links6")
	if got := rules(t, fw); strings.Contains(got, "links") {
		t.Fatalf("links still there:\n%s", got)
	}
	check(t, fw.EnsureNetwork(n))
	if got := rules(t, fw); got != want {
		t.Fatalf("after EnsureNetwork:\n%s\nwant:\n%s", got, want)
	}
	// AddLinks on its own also brings an old table up to date.
	nft(t, ns, "flush chain inet knit forward")
	link := firewall.Link{Network: "n1", From: netip.MustParseAddr("fd00::2"), To: netip.MustParseAddr("fd00::3"), Proto: "udp", Port: 53}
	check(t, fw.AddLinks("c1", []firewall.Link{link}))
	got := rules(t, fw)
	for _, s := range []string{`ip6 saddr . ip6 daddr . meta l4proto . th dport @links6 fib saddr . iif oif != 0 accept comment "knit:base"`,
		`fd00::2 . fd00::3 . udp . 53 comment "knit:owner=c1"`} {
		if !strings.Contains(got, s) {
			t.Errorf("no %s after AddLinks:\n%s", s, got)
		}
	}
}

// A link lets through the linking container's packets, not packets that
// merely carry its address: a container of another network, or the
// world, that sends from it does not reach the linked port.
func TestLinkSpoofedSource(t *testing.T) {
	l := newLAN(t)
	a, b := l.container("br0", "ctr1", "10.99.0.2"), l.container("br0", "ctr2", "10.99.0.3")
	x := l.container("br1", "ctr3", "10.98.0.2")
	fw := firewallIn(t, l.host)
	check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24"))) // ICC off
	check(t, fw.EnsureNetwork(network("n2", "br1", "10.98.0.0/24")))
	check(t, fw.AddLinks("A", []firewall.Link{{Network: "n1", From: netip.MustParseAddr("10.99.0.2"), To: netip.MustParseAddr("10.99.0.3"), Proto: "udp", Port: 80}}))
	// Loose reverse-path filtering (systemd's default) lets a forged
	// source past routing; the forgers hold A's address themselves.
	run := func(ns string, args ...string) {
		t.Helper()
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run(l.host, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.br1.rp_filter=2", "net.ipv4.conf.wan0.rp_filter=2")
	for _, ns := range []string{x, l.world} {
		run(ns, "ip", "addr", "add", "10.99.0.2/32", "dev", "eth0")
	}
	var ln *net.UDPConn
	check(t, netns.Do(b, func() (err error) {
		ln, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 80})
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	src, dst := netip.MustParseAddr("10.99.0.2"), netip.MustParseAddrPort("10.99.0.3:80")
	reached := udpReaches(t, a, src, dst, ln)
	for i := 0; i < 2 && !reached; i++ { // neighbour resolution may lose the first
		reached = udpReaches(t, a, src, dst, ln)
	}
	if !reached {
		t.Fatal("the linking container does not reach the linked port")
	}
	for name, ns := range map[string]string{"a container of another network": x, "the world": l.world} {
		if udpReaches(t, ns, src, dst, ln) {
			t.Errorf("%s reached the linked port with the linking container's address", name)
		}
	}
}

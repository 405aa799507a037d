package nftables_test

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/firewall"
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
	if got := rules(t, fw); got != nft(t, l.host, "list", "table", "inet", "knit") {
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

// TestLinksUpgrade checks that a table made before links existed (no link
// sets, no link rules) gets them from EnsureNetwork, whose fast path must
// not take it for up to date.
func TestLinksUpgrade(t *testing.T) {
	fw, ns := newFirewall(t)
	n := network("n1", "br0", "10.99.0.0/24")
	check(t, fw.EnsureNetwork(n))
	want := rules(t, fw)
	for _, h := range regexp.MustCompile(`@links[46] accept comment "knit:base" # handle (\d+)`).FindAllStringSubmatch(nft(t, ns, "-a", "list", "chain", "inet", "knit", "forward"), -1) {
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
	for _, s := range []string{`ip6 saddr . ip6 daddr . meta l4proto . th dport @links6 accept comment "knit:base"`,
		`fd00::2 . fd00::3 . udp . 53 comment "knit:owner=c1"`} {
		if !strings.Contains(got, s) {
			t.Errorf("no %s after AddLinks:\n%s", s, got)
		}
	}
}

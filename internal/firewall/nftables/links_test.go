package nftables

import (
	"net/netip"
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
)

func TestLinkElems(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		link firewall.Link
		want string // "SET: ELEMENT"
	}{
		{firewall.Link{Network: "n1", From: a("10.99.0.2"), To: a("10.99.0.3"), Proto: "tcp", Port: 80},
			`links4: 10.99.0.2 . 10.99.0.3 . tcp . 80 comment "knit:owner=c1"`},
		{firewall.Link{Network: "n1", From: a("fd00::2"), To: a("fd00::3"), Proto: "sctp", Port: 65535},
			`links6: fd00::2 . fd00::3 . sctp . 65535 comment "knit:owner=c1"`},
	}
	for _, tt := range tests {
		elems, err := linkElems("c1", []firewall.Link{tt.link, tt.link})
		if err != nil {
			t.Fatal(err)
		}
		if len(elems) != 1 {
			t.Fatalf("%s: %d elements, want 1", tt.link, len(elems))
		}
		e := elems[0]
		set := linkSets[0].set()
		if e.set == setLinks6 {
			set = linkSets[1].set()
		}
		if got := e.set + ": " + renderElem(set, e.SetElement); got != tt.want {
			t.Errorf("element = %s, want %s", got, tt.want)
		}
	}
}

func TestLinkRules(t *testing.T) {
	for i, want := range []string{
		`ip saddr . ip daddr . meta l4proto . th dport @links4 fib saddr . iif oif != 0 accept comment "knit:base"`,
		`ip6 saddr . ip6 daddr . meta l4proto . th dport @links6 fib saddr . iif oif != 0 accept comment "knit:base"`,
	} {
		if got := renderRule(linkRule(linkSets[i])); got != want {
			t.Errorf("link rule = %s, want %s", got, want)
		}
	}
	for i, want := range []string{
		`ct state untracked ip daddr . ip saddr . meta l4proto . th sport @links4 fib saddr . iif oif != 0 accept comment "knit:base"`,
		`ct state untracked ip6 daddr . ip6 saddr . meta l4proto . th sport @links6 fib saddr . iif oif != 0 accept comment "knit:base"`,
	} {
		if got := renderRule(linkReplyRule(linkSets[i])); got != want {
			t.Errorf("link reply rule = %s, want %s", got, want)
		}
	}
	// The link rules come right after the established rule and the
	// invalid drops, before any network's ICC drop.
	fwd := baseRules()[chainForward]
	if len(fwd) != 8 || renderRule(fwd[1]) != renderRule(baseRule()) || renderRule(fwd[4]) != renderRule(linkRule(linkSets[0])) ||
		renderRule(fwd[6]) != renderRule(linkReplyRule(linkSets[0])) {
		t.Errorf("forward base rules out of order")
	}
}

func TestInvalidLinks(t *testing.T) {
	f := &Firewall{} // validation happens before any kernel call
	ok := firewall.Link{Network: "n1", From: netip.MustParseAddr("10.0.0.2"), To: netip.MustParseAddr("10.0.0.3"), Proto: "tcp", Port: 80}
	bad := ok
	bad.To = netip.MustParseAddr("fd00::3")
	for _, tt := range []struct {
		owner string
		links []firewall.Link
	}{{"a b", []firewall.Link{ok}}, {"c1", []firewall.Link{bad}}} {
		if err := f.AddLinks(tt.owner, tt.links); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("AddLinks(%q, %v) = %v, want invalid", tt.owner, tt.links, err)
		}
		if err := f.RemoveLinks(tt.owner, tt.links); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("RemoveLinks(%q, %v) = %v, want invalid", tt.owner, tt.links, err)
		}
	}
}

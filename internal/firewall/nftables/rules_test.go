package nftables

import (
	"net/netip"
	"strings"
	"testing"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
)

func TestNetworkRules(t *testing.T) {
	subnets := func(s ...string) []netip.Prefix {
		var ps []netip.Prefix
		for _, p := range s {
			ps = append(ps, netip.MustParsePrefix(p))
		}
		return ps
	}
	tests := []struct {
		name string
		n    firewall.Network
		want string // "CHAIN: RULE" lines
	}{{
		name: "masquerade",
		n:    firewall.Network{Name: "n1", Bridge: "br0", Subnets: subnets("10.99.0.0/24"), Masquerade: true},
		want: `forward: iifname "br0" accept comment "knit:net=n1"
postrouting: ip saddr 10.99.0.0/24 oifname != "br0" masquerade comment "knit:net=n1"`,
	}, {
		name: "unaligned and unmasked prefix, both families",
		n: firewall.Network{Name: "n2", Bridge: "knit-n2", Masquerade: true,
			Subnets: subnets("172.20.17.5/20", "fd00:1:2::/61")},
		want: `forward: iifname "knit-n2" accept comment "knit:net=n2"
postrouting: ip saddr 172.20.16.0/20 oifname != "knit-n2" masquerade comment "knit:net=n2"
postrouting: ip6 saddr fd00:1:2::/61 oifname != "knit-n2" masquerade comment "knit:net=n2"`,
	}, {
		name: "host route",
		n:    firewall.Network{Name: "h", Bridge: "br1", Subnets: subnets("10.1.2.3/32"), Masquerade: true},
		want: `forward: iifname "br1" accept comment "knit:net=h"
postrouting: ip saddr 10.1.2.3 oifname != "br1" masquerade comment "knit:net=h"`,
	}, {
		name: "no masquerade",
		n:    firewall.Network{Name: "n3", Bridge: "br0", Subnets: subnets("10.99.0.0/24")},
		want: `forward: iifname "br0" accept comment "knit:net=n3"`,
	}, {
		name: "internal never masquerades",
		n:    firewall.Network{Name: "in", Bridge: "br0", Subnets: subnets("10.99.0.0/24"), Masquerade: true, Internal: true},
		want: `forward: iifname "br0" oifname != "br0" drop comment "knit:net=in"
forward: oifname "br0" iifname != "br0" drop comment "knit:net=in"`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lines []string
			for _, r := range networkRules(tt.n) {
				lines = append(lines, r.Chain.Name+": "+renderRule(r))
			}
			if got := strings.Join(lines, "\n"); got != tt.want {
				t.Errorf("rules:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestRenderBaseAndForeign(t *testing.T) {
	if got, want := renderRule(baseRule()), `ct state established,related accept comment "knit:base"`; got != want {
		t.Errorf("base rule = %s, want %s", got, want)
	}
	foreign := &nft.Rule{Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}}
	if got, want := renderRule(foreign), "[*expr.Counter] drop"; got != want {
		t.Errorf("foreign rule = %s, want %s", got, want)
	}
}

func TestRenderTable(t *testing.T) {
	n := firewall.Network{Name: "n1", Bridge: "br0", Subnets: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Masquerade: true}
	s := ruleset{chains: chains, rules: map[string][]*nft.Rule{}}
	for _, r := range append([]*nft.Rule{baseRule()}, networkRules(n)...) {
		s.rules[r.Chain.Name] = append(s.rules[r.Chain.Name], r)
	}
	want := `table inet knit {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.99.0.0/24 oifname != "br0" masquerade comment "knit:net=n1"
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept comment "knit:base"
		iifname "br0" accept comment "knit:net=n1"
	}
}
`
	if got := s.render(); got != want {
		t.Errorf("render:\n%s\nwant:\n%s", got, want)
	}
	if got := (ruleset{}).render(); got != "" {
		t.Errorf("empty ruleset renders %q", got)
	}
}

func TestInvalid(t *testing.T) {
	f := &Firewall{} // validation happens before any kernel call
	for _, n := range []firewall.Network{
		{Name: "", Bridge: "br0"},
		{Name: `a"b`, Bridge: "br0"},
		{Name: "n", Bridge: "a-bridge-name-too-long"},
		{Name: "n", Bridge: "br0", Subnets: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}},
	} {
		if err := f.EnsureNetwork(n); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("EnsureNetwork(%+v) = %v, want invalid", n, err)
		}
	}
	if err := f.RemoveNetwork("a b"); errdefs.KindOf(err) != errdefs.KindInvalid {
		t.Errorf("RemoveNetwork(a b) = %v, want invalid", err)
	}
}

package nftables

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

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
		n:    firewall.Network{Name: "n1", Bridge: "br0", Subnets: subnets("10.99.0.0/24"), Masquerade: true, ICC: true},
		want: `forward: iifname "br0" oifname != "br0" oifname @bridges ct status ! dnat drop comment "knit:net=n1"
forward: iifname "br0" oifname != "br0" oifname @bridges ct state untracked drop comment "knit:net=n1"
input: iifname @bridges iifname != "br0" ip saddr 10.99.0.0/24 ct direction original drop comment "knit:net=n1"
input: iifname @bridges iifname != "br0" ip saddr 10.99.0.0/24 ct state invalid,untracked drop comment "knit:net=n1"
forward: iifname != "br0" oifname "br0" ct state untracked drop comment "knit:net=n1"
forward: iifname != "br0" oifname "br0" ct state new ct status ! dnat drop comment "knit:net=n1"
forward: iifname "br0" accept comment "knit:net=n1"
postrouting: ip saddr 10.99.0.0/24 oifname != "br0" masquerade comment "knit:net=n1"
postrouting: ip saddr 10.99.0.0/24 oifname "br0" ct status dnat masquerade comment "knit:net=n1"
postrouting: ip saddr 127.0.0.0/8 oifname "br0" masquerade comment "knit:net=n1"`,
	}, {
		name: "unaligned and unmasked prefix, both families",
		n: firewall.Network{Name: "n2", Bridge: "knit-n2", Masquerade: true, ICC: true,
			Subnets: subnets("172.20.17.5/20", "fd00:1:2::/61")},
		want: `forward: iifname "knit-n2" oifname != "knit-n2" oifname @bridges ct status ! dnat drop comment "knit:net=n2"
forward: iifname "knit-n2" oifname != "knit-n2" oifname @bridges ct state untracked drop comment "knit:net=n2"
input: iifname @bridges iifname != "knit-n2" ip saddr 172.20.16.0/20 ct direction original drop comment "knit:net=n2"
input: iifname @bridges iifname != "knit-n2" ip saddr 172.20.16.0/20 ct state invalid,untracked drop comment "knit:net=n2"
input: iifname @bridges iifname != "knit-n2" ip6 saddr fd00:1:2::/61 ct direction original drop comment "knit:net=n2"
input: iifname @bridges iifname != "knit-n2" ip6 saddr fd00:1:2::/61 ct state invalid,untracked drop comment "knit:net=n2"
forward: iifname != "knit-n2" oifname "knit-n2" ct state untracked drop comment "knit:net=n2"
forward: iifname != "knit-n2" oifname "knit-n2" ct state new ct status ! dnat drop comment "knit:net=n2"
forward: iifname "knit-n2" accept comment "knit:net=n2"
postrouting: ip saddr 172.20.16.0/20 oifname != "knit-n2" masquerade comment "knit:net=n2"
postrouting: ip6 saddr fd00:1:2::/61 oifname != "knit-n2" masquerade comment "knit:net=n2"
postrouting: ip saddr 172.20.16.0/20 oifname "knit-n2" ct status dnat masquerade comment "knit:net=n2"
postrouting: ip6 saddr fd00:1:2::/61 oifname "knit-n2" ct status dnat masquerade comment "knit:net=n2"
postrouting: ip saddr 127.0.0.0/8 oifname "knit-n2" masquerade comment "knit:net=n2"`,
	}, {
		name: "host route",
		n:    firewall.Network{Name: "h", Bridge: "br1", Subnets: subnets("10.1.2.3/32"), Masquerade: true, ICC: true, Routed4: true},
		want: `forward: iifname "br1" oifname != "br1" oifname @bridges ct status ! dnat drop comment "knit:net=h"
forward: iifname "br1" oifname != "br1" oifname @bridges ct state untracked drop comment "knit:net=h"
input: iifname @bridges iifname != "br1" ip saddr 10.1.2.3 ct direction original drop comment "knit:net=h"
input: iifname @bridges iifname != "br1" ip saddr 10.1.2.3 ct state invalid,untracked drop comment "knit:net=h"
forward: iifname != "br1" oifname "br1" ct state untracked drop comment "knit:net=h"
forward: iifname != "br1" oifname "br1" ip daddr . meta l4proto . th dport != @open4 meta l4proto != icmp ct state new ct status ! dnat drop comment "knit:net=h"
forward: iifname != "br1" oifname "br1" meta nfproto ipv6 ct state new ct status ! dnat drop comment "knit:net=h"
forward: iifname "br1" accept comment "knit:net=h"
postrouting: ip saddr 10.1.2.3 oifname "br1" ct status dnat masquerade comment "knit:net=h"
postrouting: ip saddr 127.0.0.0/8 oifname "br1" masquerade comment "knit:net=h"`,
	}, {
		name: "no masquerade, no icc",
		n:    firewall.Network{Name: "n3", Bridge: "br0", Subnets: subnets("10.99.0.0/24")},
		want: `forward: iifname "br0" oifname != "br0" oifname @bridges ct status ! dnat drop comment "knit:net=n3"
forward: iifname "br0" oifname != "br0" oifname @bridges ct state untracked drop comment "knit:net=n3"
forward: iifname "br0" oifname "br0" ct status ! dnat drop comment "knit:net=n3"
forward: iifname "br0" oifname "br0" ct state untracked meta l4proto != ipv6-icmp drop comment "knit:net=n3"
input: iifname @bridges iifname != "br0" ip saddr 10.99.0.0/24 ct direction original drop comment "knit:net=n3"
input: iifname @bridges iifname != "br0" ip saddr 10.99.0.0/24 ct state invalid,untracked drop comment "knit:net=n3"
forward: iifname != "br0" oifname "br0" ct state untracked drop comment "knit:net=n3"
forward: iifname != "br0" oifname "br0" ct state new ct status ! dnat drop comment "knit:net=n3"
forward: iifname "br0" accept comment "knit:net=n3"
postrouting: ip saddr 10.99.0.0/24 oifname "br0" ct status dnat masquerade comment "knit:net=n3"
postrouting: ip saddr 127.0.0.0/8 oifname "br0" masquerade comment "knit:net=n3"`,
	}, {
		name: "internal never masquerades",
		n:    firewall.Network{Name: "in", Bridge: "br0", Subnets: subnets("10.99.0.0/24"), Masquerade: true, Internal: true, ICC: true},
		want: `forward: iifname "br0" oifname != "br0" drop comment "knit:net=in"
forward: oifname "br0" iifname != "br0" drop comment "knit:net=in"
input: iifname @bridges iifname != "br0" ip saddr 10.99.0.0/24 ct direction original drop comment "knit:net=in"
input: iifname @bridges iifname != "br0" ip saddr 10.99.0.0/24 ct state invalid,untracked drop comment "knit:net=in"`,
	}, {
		name: "internal without icc",
		n:    firewall.Network{Name: "in", Bridge: "br0", Internal: true},
		want: `forward: iifname "br0" oifname != "br0" drop comment "knit:net=in"
forward: oifname "br0" iifname != "br0" drop comment "knit:net=in"
forward: iifname "br0" oifname "br0" ct status ! dnat drop comment "knit:net=in"
forward: iifname "br0" oifname "br0" ct state untracked meta l4proto != ipv6-icmp drop comment "knit:net=in"`,
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
	n := firewall.Network{Name: "n1", Bridge: "br0", Subnets: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Masquerade: true, ICC: true, DNS: true}
	s := ruleset{chains: append(slices.Clone(chains), userChain), rules: map[string][]*nft.Rule{}, elems: map[string][]nft.SetElement{}}
	for name, rules := range baseRules() {
		s.rules[name] = rules
	}
	for _, r := range networkRules(n) {
		s.rules[r.Chain.Name] = append(s.rules[r.Chain.Name], r)
	}
	s.sets = wantSets()
	s.elems[setBridges] = []nft.SetElement{{Key: ifnameKey("br10"), Comment: "knit:net=n2"}, {Key: ifnameKey("br0"), Comment: "knit:net=n1"}}
	elems, err := portElems("c1", []firewall.PortMapping{
		{Network: "n1", HostPort: 8081, Proto: "udp", ContainerIP: netip.MustParseAddr("10.99.0.2"), ContainerPort: 53},
		{Network: "n1", HostPort: 8080, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.99.0.2"), ContainerPort: 80},
		{Network: "n1", HostIP: netip.MustParseAddr("::1"), HostPort: 9, Proto: "sctp", ContainerIP: netip.MustParseAddr("fd00::2"), ContainerPort: 9},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range elems {
		s.elems[e.set] = append(s.elems[e.set], e.SetElement)
	}
	for owner, links := range testLinks() {
		elems, err := linkElems(owner, links)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range elems {
			s.elems[e.set] = append(s.elems[e.set], e.SetElement)
		}
	}
	if got := s.render(); got != wantTable {
		t.Errorf("render:\n%s\nwant:\n%s", got, wantTable)
	}
	if got := (ruleset{}).render(); got != "" {
		t.Errorf("empty ruleset renders %q", got)
	}
}

// testLinks are the links of wantTable, by owner.
func testLinks() map[string][]firewall.Link {
	a := netip.MustParseAddr
	return map[string][]firewall.Link{
		"c1": {
			{Network: "n1", From: a("10.99.0.2"), To: a("10.99.0.3"), Proto: "udp", Port: 53},
			{Network: "n1", From: a("10.99.0.2"), To: a("10.99.0.3"), Proto: "tcp", Port: 80},
			{Network: "n1", From: a("10.99.0.2"), To: a("10.99.0.3"), Proto: "tcp", Port: 80}, // once only
		},
		"c2": {{Network: "n1", From: a("fd00::3"), To: a("fd00::2"), Proto: "sctp", Port: 9}},
	}
}

// wantTable is what `nft list table inet knit` and `nft list table bridge
// knit` printed for the same state.
const wantTable = `table inet knit {
	set bridges {
		type ifname
		elements = { "br0" comment "knit:net=n1",
			     "br10" comment "knit:net=n2" }
	}

	map pub4ip {
		type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
	}

	map pub6ip {
		type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service
		elements = { ::1 . sctp . 9 comment "knit:owner=c1" : fd00::2 . 9 }
	}

	map pub4any {
		type inet_proto . inet_service : ipv4_addr . inet_service
		elements = { tcp . 8080 comment "knit:owner=c1" : 10.99.0.2 . 80,
			     udp . 8081 comment "knit:owner=c1" : 10.99.0.2 . 53 }
	}

	map pub6any {
		type inet_proto . inet_service : ipv6_addr . inet_service
	}

	set open4 {
		type ipv4_addr . inet_proto . inet_service
	}

	set open6 {
		type ipv6_addr . inet_proto . inet_service
	}

	set links4 {
		type ipv4_addr . ipv4_addr . inet_proto . inet_service
		elements = { 10.99.0.2 . 10.99.0.3 . udp . 53 comment "knit:owner=c1",
			     10.99.0.2 . 10.99.0.3 . tcp . 80 comment "knit:owner=c1" }
	}

	set links6 {
		type ipv6_addr . ipv6_addr . inet_proto . inet_service
		elements = { fd00::3 . fd00::2 . sctp . 9 comment "knit:owner=c2" }
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.99.0.0/24 oifname != "br0" masquerade comment "knit:net=n1"
		ip saddr 10.99.0.0/24 oifname "br0" ct status dnat masquerade comment "knit:net=n1"
		ip saddr 127.0.0.0/8 oifname "br0" masquerade comment "knit:net=n1"
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		jump knit-user comment "knit:base"
		ct state established,related accept comment "knit:base"
		iifname @bridges ct state invalid drop comment "knit:base"
		oifname @bridges ct state invalid drop comment "knit:base"
		ip saddr . ip daddr . meta l4proto . th dport @links4 fib saddr . iif oif != 0 accept comment "knit:base"
		ip6 saddr . ip6 daddr . meta l4proto . th dport @links6 fib saddr . iif oif != 0 accept comment "knit:base"
		ct state untracked ip daddr . ip saddr . meta l4proto . th sport @links4 fib saddr . iif oif != 0 accept comment "knit:base"
		ct state untracked ip6 daddr . ip6 saddr . meta l4proto . th sport @links6 fib saddr . iif oif != 0 accept comment "knit:base"
		iifname "br0" oifname != "br0" oifname @bridges ct status ! dnat drop comment "knit:net=n1"
		iifname "br0" oifname != "br0" oifname @bridges ct state untracked drop comment "knit:net=n1"
		iifname != "br0" oifname "br0" ct state untracked drop comment "knit:net=n1"
		iifname != "br0" oifname "br0" ct state new ct status ! dnat drop comment "knit:net=n1"
		iifname "br0" accept comment "knit:net=n1"
	}

	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 127.0.0.0/8 return comment "knit:base"
		ip6 daddr ::1 return comment "knit:base"
		jump dns-gateway comment "knit:base"
		fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pub4ip comment "knit:base"
		fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6ip comment "knit:base"
		meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @pub4any comment "knit:base"
		meta nfproto ipv6 fib daddr type local dnat ip6 to meta l4proto . th dport map @pub6any comment "knit:base"
	}

	chain output {
		type nat hook output priority -100; policy accept;
		ip6 daddr ::1 return comment "knit:base"
		fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pub4ip comment "knit:base"
		fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6ip comment "knit:base"
		meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @pub4any comment "knit:base"
		meta nfproto ipv6 fib daddr type local dnat ip6 to meta l4proto . th dport map @pub6any comment "knit:base"
	}

	chain input {
		type filter hook input priority filter; policy accept;
		iifname @bridges ip saddr 127.0.0.0/8 drop comment "knit:base"
		iifname @bridges ip daddr 127.0.0.0/8 ct state ! established,related drop comment "knit:base"
		iifname @bridges iifname != "br0" ip saddr 10.99.0.0/24 ct direction original drop comment "knit:net=n1"
		iifname @bridges iifname != "br0" ip saddr 10.99.0.0/24 ct state invalid,untracked drop comment "knit:net=n1"
	}

	chain dns-gateway {
		iifname "br0" fib daddr . iif type local udp dport 53 accept comment "knit:net=n1"
		iifname "br0" fib daddr . iif type local tcp dport 53 accept comment "knit:net=n1"
	}

	chain knit-user {
	}
}
` + wantBridgeTable

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
	ok := firewall.PortMapping{Network: "n1", HostPort: 8080, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.0.0.2"), ContainerPort: 80}
	bad := ok
	bad.HostIP = netip.MustParseAddr("::1")
	for _, tt := range []struct {
		owner string
		ports []firewall.PortMapping
	}{{"a b", []firewall.PortMapping{ok}}, {"c1", []firewall.PortMapping{bad}}} {
		if err := f.AddPorts(tt.owner, tt.ports); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("AddPorts(%q, %v) = %v, want invalid", tt.owner, tt.ports, err)
		}
		if err := f.RemovePorts(tt.owner, tt.ports); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("RemovePorts(%q, %v) = %v, want invalid", tt.owner, tt.ports, err)
		}
	}
}

func TestForeignForwardRules(t *testing.T) {
	for v6, want := range map[bool]string{
		false: `meta nfproto ipv4 jump foreign-forward comment "knit:foreign-forward-drop4"`,
		true:  `meta nfproto ipv6 jump foreign-forward comment "knit:foreign-forward-drop6"`,
	} {
		if got := renderRule(foreignJumpRule(v6)); got != want {
			t.Errorf("foreignJumpRule(%v):\n%s\nwant:\n%s", v6, got, want)
		}
	}
	var got []string
	for _, r := range foreignRules() {
		got = append(got, renderRule(r))
	}
	want := `meta iifkind "bridge" return comment "knit:foreign-forward"
meta oifkind "bridge" return comment "knit:foreign-forward"
drop comment "knit:foreign-forward"`
	if strings.Join(got, "\n") != want {
		t.Errorf("foreignRules:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
}

// The RA guard's rules render as nft prints them, and a tampered one does
// not render as the wanted (the repair compares renderings): the protocol
// is left out only when it is IPv6's, and an older knit's ether type
// check is printed.
func TestRenderRAGuard(t *testing.T) {
	rules := raGuardRules()
	for i, want := range []string{
		`iifgroup 1802398068 icmpv6 type nd-router-advert drop comment "knit:base"`,
		`iifgroup 1802398068 icmpv6 type nd-redirect drop comment "knit:base"`,
	} {
		if got := renderRule(rules[i]); got != want {
			t.Errorf("rule %d: %s, want %s", i, got, want)
		}
	}
	tampered := *rules[0]
	tampered.Exprs = slices.Clone(rules[0].Exprs)
	tampered.Exprs[3] = &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(unix.ETH_P_IP)}
	if got := renderRule(&tampered); got == renderRule(rules[0]) {
		t.Errorf("a guard that matches IPv4 frames renders as the wanted one: %s", got)
	}
	old := *rules[0]
	old.Exprs = slices.Clone(rules[0].Exprs)
	old.Exprs[2] = &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2}
	if got := renderRule(&old); got == renderRule(rules[0]) {
		t.Errorf("an older knit's guard, which reads the ether type, renders as the wanted one: %s", got)
	}
	if got := chainHeader(raGuardChain); got != "type filter hook prerouting priority filter; policy accept;" {
		t.Errorf("ra-guard's header: %s", got)
	}
	if got := priorityName(nft.TableFamilyBridge, *nft.ChainHookPrerouting, -100); got != "-100" {
		t.Errorf("bridge priority -100 on prerouting is %q, want -100 (dstnat is -300 there)", got)
	}
}

// wantBridgeTable is knit's bridge table, as nft lists it, whatever its
// networks.
const wantBridgeTable = `table bridge knit {
	set guarded4 {
		type ipv4_addr
	}

	set guarded6 {
		type ipv6_addr
	}

	set senders4 {
		type ifname . ipv4_addr
	}

	set senders6 {
		type ifname . ipv6_addr
	}

	chain ra-guard {
		type filter hook prerouting priority filter; policy accept;
		iifgroup 1802398068 icmpv6 type nd-router-advert drop comment "knit:base"
		iifgroup 1802398068 icmpv6 type nd-redirect drop comment "knit:base"
	}

	chain source-guard {
		type filter hook prerouting priority filter; policy accept;
		iifgroup 1802398068 ip saddr @guarded4 iifname . ip saddr != @senders4 drop comment "knit:base"
		iifgroup 1802398068 ip6 saddr @guarded6 iifname . ip6 saddr != @senders6 drop comment "knit:base"
		iifgroup 1802398068 arp saddr ip @guarded4 iifname . arp saddr ip != @senders4 drop comment "knit:base"
		iifgroup 1802398068 icmpv6 type nd-neighbor-advert @th,64,128 @guarded6 iifname . @th,64,128 != @senders6 drop comment "knit:base"
		iifgroup 1802398068 meta protocol 8021q drop comment "knit:base"
		iifgroup 1802398068 meta protocol 8021ad drop comment "knit:base"
		iifgroup 1802398068 ip saddr 127.0.0.0/8 drop comment "knit:base"
		iifgroup 1802398068 ip6 saddr ::1 drop comment "knit:base"
		iifgroup 1802398068 arp saddr ip 127.0.0.0/8 drop comment "knit:base"
	}
}
`

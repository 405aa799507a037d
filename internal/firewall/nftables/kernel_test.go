package nftables_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/nftables"
	"github.com/knit-dev/knit/internal/testutil"
)

// newFirewall returns a Firewall acting in a fresh throwaway namespace, and
// that namespace's file.
func newFirewall(t *testing.T) (*nftables.Firewall, string) {
	t.Helper()
	ns := testutil.NewNetns(t)
	return firewallIn(t, ns), ns
}

func firewallIn(t *testing.T, ns string) *nftables.Firewall {
	t.Helper()
	fd, err := os.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() })
	fw := nftables.New(nftables.WithNetnsFd(int(fd.Fd())))
	if err := fw.Check(); err != nil {
		t.Fatal(err)
	}
	return fw
}

// nft runs the nft command in the namespace at ns and returns its output.
func nft(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return runIn(t, ns, "nft", args...)
}

// runIn runs cmd with args in the namespace at ns and returns its output.
func runIn(t *testing.T, ns, cmd string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + ns, cmd}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", cmd, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nftTables lists knit's inet table and then its bridge table, as
// Rules() renders them.
func nftTables(t *testing.T, ns string) string {
	t.Helper()
	return nft(t, ns, "list", "table", "inet", "knit") + nft(t, ns, "list", "table", "bridge", "knit")
}

func rules(t *testing.T, fw *nftables.Firewall) string {
	t.Helper()
	s, err := fw.Rules()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func network(name, bridge, subnet string) firewall.Network {
	return firewall.Network{Name: name, Bridge: bridge, Masquerade: true,
		Subnets: []netip.Prefix{netip.MustParsePrefix(subnet)}}
}

func TestEnsureNetworkKernel(t *testing.T) {
	fw, ns := newFirewall(t)
	if got := rules(t, fw); got != "" {
		t.Fatalf("fresh namespace has rules:\n%s", got)
	}
	n1, n2 := network("n1", "br0", "10.99.0.0/24"), network("n2", "br1", "10.98.0.0/16")
	n2.Subnets = append(n2.Subnets, netip.MustParsePrefix("fd00:98::/64"))
	for range 2 { // the second round must change nothing
		for _, n := range []firewall.Network{n1, n2} {
			if err := fw.EnsureNetwork(n); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := `table inet knit {
	set bridges {
		type ifname
		elements = { "br0" comment "knit:net=n1",
			     "br1" comment "knit:net=n2" }
	}

	map pub4ip {
		type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
	}

	map pub6ip {
		type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service
	}

	map pub4any {
		type inet_proto . inet_service : ipv4_addr . inet_service
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
	}

	set links6 {
		type ipv6_addr . ipv6_addr . inet_proto . inet_service
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.99.0.0/24 oifname != "br0" masquerade comment "knit:net=n1"
		ip saddr 10.99.0.0/24 oifname "br0" ct status dnat masquerade comment "knit:net=n1"
		ip saddr 127.0.0.0/8 oifname "br0" masquerade comment "knit:net=n1"
		ip saddr 10.98.0.0/16 oifname != "br1" masquerade comment "knit:net=n2"
		ip6 saddr fd00:98::/64 oifname != "br1" masquerade comment "knit:net=n2"
		ip saddr 10.98.0.0/16 oifname "br1" ct status dnat masquerade comment "knit:net=n2"
		ip6 saddr fd00:98::/64 oifname "br1" ct status dnat masquerade comment "knit:net=n2"
		ip saddr 127.0.0.0/8 oifname "br1" masquerade comment "knit:net=n2"
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
		iifname "br0" oifname "br0" ct status ! dnat drop comment "knit:net=n1"
		iifname "br0" oifname "br0" ct state untracked meta l4proto != ipv6-icmp drop comment "knit:net=n1"
		iifname != "br0" oifname "br0" ct state untracked drop comment "knit:net=n1"
		iifname != "br0" oifname "br0" ct state new ct status ! dnat drop comment "knit:net=n1"
		iifname "br0" accept comment "knit:net=n1"
		iifname "br1" oifname != "br1" oifname @bridges ct status ! dnat drop comment "knit:net=n2"
		iifname "br1" oifname != "br1" oifname @bridges ct state untracked drop comment "knit:net=n2"
		iifname "br1" oifname "br1" ct status ! dnat drop comment "knit:net=n2"
		iifname "br1" oifname "br1" ct state untracked meta l4proto != ipv6-icmp drop comment "knit:net=n2"
		iifname != "br1" oifname "br1" ct state untracked drop comment "knit:net=n2"
		iifname != "br1" oifname "br1" ct state new ct status ! dnat drop comment "knit:net=n2"
		iifname "br1" accept comment "knit:net=n2"
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
		iifname @bridges iifname != "br1" ip saddr 10.98.0.0/16 ct direction original drop comment "knit:net=n2"
		iifname @bridges iifname != "br1" ip saddr 10.98.0.0/16 ct state invalid,untracked drop comment "knit:net=n2"
		iifname @bridges iifname != "br1" ip6 saddr fd00:98::/64 ct direction original drop comment "knit:net=n2"
		iifname @bridges iifname != "br1" ip6 saddr fd00:98::/64 ct state invalid,untracked drop comment "knit:net=n2"
	}

	chain dns-gateway {
	}

	chain knit-user {
	}
}
` + nftables.WantBridgeTable
	if got := rules(t, fw); got != want {
		t.Fatalf("Rules():\n%s\nwant:\n%s", got, want)
	}
	// The kernel's own reading, through nft, agrees with the library's.
	if got := nftTables(t, ns); got != want {
		t.Fatalf("nft list table inet knit, bridge knit:\n%s\nwant:\n%s", got, want)
	}
	if names, err := fw.Networks(); err != nil || strings.Join(names, ",") != "n1,n2" {
		t.Fatalf("Networks() = %v, %v", names, err)
	}

	for range 2 {
		if err := fw.RemoveNetwork("n1"); err != nil {
			t.Fatal(err)
		}
	}
	got := nft(t, ns, "list", "table", "inet", "knit")
	// n2 has 16 rules and its bridge element.
	if strings.Contains(got, "knit:net=n1") || strings.Count(got, "knit:net=n2") != 17 ||
		!strings.Contains(got, "knit:base") {
		t.Fatalf("after RemoveNetwork(n1):\n%s", got)
	}
	if err := fw.RemoveNetwork("never-added"); err != nil {
		t.Fatal(err)
	}
	if err := fw.RemoveAll(); err != nil {
		t.Fatal(err)
	}
	if got := nft(t, ns, "list", "tables"); got != "" {
		t.Fatalf("after RemoveAll: %s", got)
	}
	if err := fw.RemoveAll(); err != nil {
		t.Fatalf("second RemoveAll: %v", err)
	}
	if err := fw.RemoveNetwork("n2"); err != nil {
		t.Fatalf("RemoveNetwork without a table: %v", err)
	}
}

// TestEnsureNetworkRepairs damages knit's table the ways an operator or a
// crashed process could, and checks that EnsureNetwork restores it exactly.
func TestEnsureNetworkRepairs(t *testing.T) {
	fw, ns := newFirewall(t)
	n1, n2 := network("n1", "br0", "10.99.0.0/24"), network("n2", "br1", "10.98.0.0/24")
	for _, n := range []firewall.Network{n1, n2} {
		if err := fw.EnsureNetwork(n); err != nil {
			t.Fatal(err)
		}
	}
	want := rules(t, fw)
	base := regexp.MustCompile(`knit:base" # handle (\d+)`).FindStringSubmatch(nft(t, ns, "-a", "list", "chain", "inet", "knit", "forward"))
	if base == nil {
		t.Fatal("no base rule handle")
	}
	for _, d := range []string{ // nft joins its arguments into one command
		"flush chain inet knit postrouting",                                      // rules gone
		`add rule inet knit forward iifname "br0" accept comment "knit:net=n1"`,  // a duplicate
		`insert rule inet knit forward iifname "br9" drop comment "knit:net=n1"`, // a changed rule
		"delete rule inet knit forward handle " + base[1],                        // a shared rule gone
		"add chain inet knit forward { policy drop; }",                           // a policy flipped
	} {
		nft(t, ns, d)
	}
	if err := fw.EnsureNetwork(n1); err != nil {
		t.Fatal(err)
	}
	if err := fw.EnsureNetwork(n2); err != nil {
		t.Fatal(err)
	}
	if got := rules(t, fw); got != want {
		t.Fatalf("after repair:\n%s\nwant:\n%s", got, want)
	}
}

// TestShareTable checks that two Firewalls (as two knit processes would)
// working on different networks of one namespace at once leave each
// network's rules intact.
func TestShareTable(t *testing.T) {
	ns := testutil.NewNetns(t)
	fws := []*nftables.Firewall{firewallIn(t, ns), firewallIn(t, ns)}
	var wg sync.WaitGroup
	for i, fw := range fws {
		wg.Go(func() {
			for j := range 10 {
				n := network(fmt.Sprintf("n%d", i), fmt.Sprintf("br%d", i), fmt.Sprintf("10.9%d.0.0/24", i))
				if err := fw.EnsureNetwork(n); err != nil {
					t.Error(err)
				}
				if j%3 == 2 {
					if err := fw.RemoveNetwork(n.Name); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	got := nft(t, ns, "list", "table", "inet", "knit")
	for _, tag := range []string{"knit:net=n0", "knit:net=n1"} {
		// 7 forward, 3 postrouting and 2 input rules, and the bridge element
		if c := strings.Count(got, tag); c != 13 {
			t.Errorf("%d rules and elements tagged %s, want 13:\n%s", c, tag, got)
		}
	}
	// 8 in forward, 7 in prerouting, 5 in output, 2 in input
	if c := strings.Count(got, "knit:base"); c != 22 {
		t.Errorf("%d base rules, want 22:\n%s", c, got)
	}
}

// A network whose rules are all in place is not rewritten: the rule handles
// (which every batch renews) stay the same, so the per-command check costs a
// read, not a commit.
func TestEnsureNetworkInPlaceWritesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	fw, ns := newFirewall(t)
	n1, n2 := network("n1", "br1", "10.1.0.0/16"), network("n2", "br2", "10.2.0.0/16")
	for _, n := range []firewall.Network{n1, n2} {
		if err := fw.EnsureNetwork(n); err != nil {
			t.Fatal(err)
		}
	}
	before := nft(t, ns, "-a", "list", "table", "inet", "knit")
	if err := fw.EnsureNetwork(n1); err != nil {
		t.Fatal(err)
	}
	if after := nft(t, ns, "-a", "list", "table", "inet", "knit"); after != before {
		t.Errorf("ensuring an intact network rewrote rules:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// A changed network is rewritten.
	n1.Masquerade = false
	if err := fw.EnsureNetwork(n1); err != nil {
		t.Fatal(err)
	}
	if after := nft(t, ns, "list", "table", "inet", "knit"); strings.Contains(after, `ip saddr 10.1.0.0/16 oifname != "br1" masquerade`) {
		t.Errorf("masquerade of n1 survived its removal:\n%s", after)
	}
}

// DropForeignForwarding adds the chain and the family's jump once, the
// kernel's reading (nft) agreeing with knit's; AllowForeignForwarding
// takes the jump back.
func TestForeignForwardingKernel(t *testing.T) {
	fw, ns := newFirewall(t)
	if err := fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, v6 := range []bool{false, true} {
			if err := fw.DropForeignForwarding(v6); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, got := range []string{rules(t, fw), nft(t, ns, "list", "table", "inet", "knit")} {
		for line, count := range map[string]int{
			`meta nfproto ipv4 jump foreign-forward comment "knit:foreign-forward-drop4"`: 1,
			`meta nfproto ipv6 jump foreign-forward comment "knit:foreign-forward-drop6"`: 1,
			`meta iifkind "bridge" return comment "knit:foreign-forward"`:                 1,
			`meta oifkind "bridge" return comment "knit:foreign-forward"`:                 1,
			`drop comment "knit:foreign-forward"`:                                         1,
		} {
			if c := strings.Count(got, line); c != count {
				t.Errorf("%q %d times, want %d:\n%s", line, c, count, got)
			}
		}
	}
	if err := fw.AllowForeignForwarding(false); err != nil {
		t.Fatal(err)
	}
	if got := rules(t, fw); strings.Contains(got, "foreign-forward-drop4") || !strings.Contains(got, "foreign-forward-drop6") {
		t.Errorf("after AllowForeignForwarding(IPv4):\n%s", got)
	}
	// The base's up-to-date check is not upset by the chain: a network
	// ensured again writes nothing.
	if err := fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")); err != nil {
		t.Fatal(err)
	}
}

// The bridge table alone gone (deleted by hand, or an upgrade from a knit
// without it) is a loss like the inet table's: the next ensure reports it,
// for the restore that puts containers' ports in the guard's group, and
// makes the RA guard again.
func TestBridgeTableLossReported(t *testing.T) {
	fw, ns := newFirewall(t)
	n := network("n1", "br0", "10.99.0.0/24")
	if _, err := fw.EnsureNetworkReport(n); err != nil { // made: a loss, restored
		t.Fatal(err)
	}
	check(t, fw.MarkRestored())
	if lost, err := fw.EnsureNetworkReport(n); err != nil || lost {
		t.Fatalf("ensure with all in place: lost %v, %v", lost, err)
	}
	nft(t, ns, "delete", "table", "bridge", "knit")
	if lost, err := fw.EnsureNetworkReport(n); err != nil || !lost {
		t.Errorf("ensure after the bridge table went: lost %v, %v; want the loss reported", lost, err)
	}
	if out := nft(t, ns, "list", "chain", "bridge", "knit", "ra-guard"); !strings.Contains(out, "nd-router-advert") {
		t.Errorf("the RA guard was not made again:\n%s", out)
	}
}

package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/config"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/firewalltest"
	"github.com/knit-dev/knit/internal/store"
)

// TestUndoCreateNetworkSparesItsSuccessor: a `network create` whose
// network was removed and made again by others before its set-up failed
// must not delete the new network's record or bridge, nor a late removal
// of the old one (either left a bridge that belonged to no network, seen
// by TestConcurrency); a network being removed is left to its remover.
func TestUndoCreateNetworkSparesItsSuccessor(t *testing.T) {
	st := newStore(t)
	d := &leaveRecorder{}
	e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: t.TempDir()},
		drivers: map[string]driver.Driver{"bridge": d}}
	put := func(id string, removing bool) {
		t.Helper()
		n := &Network{Network: driver.Network{Name: "shared0", ID: id, Driver: "bridge", Bridge: "br-" + id}, Removing: removing}
		if err := st.Update(func(tx store.Tx) error { return putJSON(tx, bucketNetworks, n.Name, n) }); err != nil {
			t.Fatal(err)
		}
	}
	recorded := func() string {
		t.Helper()
		var id string
		err := st.View(func(tx store.Tx) error {
			n, err := getNetwork(tx, "shared0")
			if errors.Is(err, store.ErrNotFound) {
				return nil
			} else if err != nil {
				return err
			}
			id = n.ID
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	mine := &Network{Network: driver.Network{Name: "shared0", ID: "x", Driver: "bridge", Bridge: "br-x"}}

	put("y", false) // removed and made again by others
	e.undoCreateNetwork(mine)
	if got := recorded(); got != "y" || len(d.deleted) != 0 {
		t.Errorf("after undoing x: shared0 is %q, networks deleted %v; want y kept, nothing deleted", got, d.deleted)
	}
	// The removal of x, finished late, spares y too.
	if err := e.finishRemoveNetwork(mine); err != nil {
		t.Fatal(err)
	}
	if got := recorded(); got != "y" || len(d.deleted) != 0 {
		t.Errorf("after removing x: shared0 is %q, networks deleted %v; want y kept, nothing deleted", got, d.deleted)
	}

	put("x", true) // being removed by a `network rm`: its business
	e.undoCreateNetwork(mine)
	if got := recorded(); got != "x" || len(d.deleted) != 0 {
		t.Errorf("after undoing x being removed: shared0 is %q, networks deleted %v; want x kept for its remover", got, d.deleted)
	}

	put("x", false) // still ours
	e.undoCreateNetwork(mine)
	if got := recorded(); got != "" || !slices.Equal(d.deleted, []string{"x"}) {
		t.Errorf("after undoing x: shared0 is %q, networks deleted %v; want it gone, x deleted", got, d.deleted)
	}
}

// Docker's -o com.docker.network.enable_ipv6=true is --ipv6; false with
// --ipv6 is a conflict.
func TestEnableIPv6Option(t *testing.T) {
	e := &Engine{cfg: &config.Config{}}
	for _, tc := range []struct {
		ipv6 bool
		v    string
		want bool
		bad  bool
	}{{false, "true", true, false}, {false, "false", false, false}, {true, "true", true, false}, {true, "false", false, true}, {false, "maybe", false, true}} {
		n, err := e.newNetwork(&NetworkCreateOptions{Name: "n", IPv6: tc.ipv6, Options: map[string]string{"com.docker.network.enable_ipv6": tc.v}})
		if tc.bad {
			if errdefs.KindOf(err) != errdefs.KindInvalid {
				t.Errorf("--ipv6=%v enable_ipv6=%s: %v, want invalid", tc.ipv6, tc.v, err)
			}
			continue
		}
		if err != nil || n.IPv6 != tc.want {
			t.Errorf("--ipv6=%v enable_ipv6=%s: IPv6 %v, %v; want %v", tc.ipv6, tc.v, n != nil && n.IPv6, err, tc.want)
		}
	}
	// Refused whatever the options' order: the two names disagreeing, or
	// false with an IPv6 subnet.
	for range 10 {
		if _, err := e.newNetwork(&NetworkCreateOptions{Name: "n", Options: map[string]string{"ipv6": "true", "com.docker.network.enable_ipv6": "false"}}); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Fatalf("ipv6=true with enable_ipv6=false: %v, want invalid", err)
		}
	}
	o := &NetworkCreateOptions{Name: "n", Subnets: []netip.Prefix{netip.MustParsePrefix("fd00::/64")}, Options: map[string]string{"com.docker.network.enable_ipv6": "false"}}
	if _, err := e.newNetwork(o); errdefs.KindOf(err) != errdefs.KindInvalid {
		t.Errorf("enable_ipv6=false with an IPv6 subnet: %v, want invalid", err)
	}
}

// --ipv4=false (or enable_ipv4 false) makes an IPv6-only network; it needs
// IPv6, refuses an IPv4 subnet or host-ip, and the flag and option must
// agree.
func TestIPv6OnlyNetworkOptions(t *testing.T) {
	e := &Engine{cfg: &config.Config{}}
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		name   string
		o      NetworkCreateOptions
		noIPv4 bool
		bad    string // a fragment of the error; "" for none
	}{
		{"--ipv4=false --ipv6", NetworkCreateOptions{NoIPv4: true, IPv6: true}, true, ""},
		{"enable_ipv4=false and a v6 subnet", NetworkCreateOptions{Subnets: []netip.Prefix{pfx("fd00:6::/64")}, Options: map[string]string{"com.docker.network.enable_ipv4": "false"}}, true, ""},
		{"ipv4=true", NetworkCreateOptions{Options: map[string]string{"ipv4": "true"}}, false, ""},
		{"no IPv6", NetworkCreateOptions{NoIPv4: true}, false, "IPv4 or IPv6 must be enabled"},
		{"an IPv4 subnet", NetworkCreateOptions{NoIPv4: true, Subnets: []netip.Prefix{pfx("10.9.0.0/24"), pfx("fd00:6::/64")}}, false, "an IPv4 subnet with IPv4 disabled"},
		{"an IPv4 host-ip", NetworkCreateOptions{NoIPv4: true, IPv6: true, Options: map[string]string{"host-ip": "127.0.0.1"}}, false, "invalid host-ip"},
		{"an IPv4-mapped host-ip", NetworkCreateOptions{NoIPv4: true, IPv6: true, Options: map[string]string{"host-ip": "::ffff:127.0.0.1"}}, false, "invalid host-ip"},
		{"flag and option disagree", NetworkCreateOptions{NoIPv4: true, IPv6: true, Options: map[string]string{"ipv4": "true"}}, false, "conflicting options"},
		{"bad value", NetworkCreateOptions{IPv6: true, Options: map[string]string{"ipv4": "no way"}}, false, "invalid value"},
	} {
		tc.o.Name = "n"
		_, err := e.newNetwork(&tc.o)
		if tc.bad != "" {
			if errdefs.KindOf(err) != errdefs.KindInvalid || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("%s: %v, want invalid with %q", tc.name, err, tc.bad)
			}
			continue
		}
		if err != nil || tc.o.NoIPv4 != tc.noIPv4 {
			t.Errorf("%s: NoIPv4 %v, %v; want %v", tc.name, tc.o.NoIPv4, err, tc.noIPv4)
		}
	}
}

// gateway-mode sets both families; Docker's per-family options set one,
// and win over gateway-mode whatever the order.
func TestGatewayModes(t *testing.T) {
	e := &Engine{cfg: &config.Config{}}
	for _, tc := range []struct {
		opts         map[string]string
		want4, want6 bool
	}{
		{map[string]string{}, false, false},
		{map[string]string{"gateway-mode": "routed"}, true, true},
		{map[string]string{"com.docker.network.bridge.gateway_mode_ipv6": "routed"}, false, true},
		{map[string]string{"com.docker.network.bridge.gateway_mode_ipv4": "routed"}, true, false},
		{map[string]string{"gateway-mode": "routed", "gateway-mode-ipv4": "nat"}, false, true},
		{map[string]string{"gateway-mode": "nat", "com.docker.network.bridge.gateway_mode_ipv6": "routed"}, false, true},
	} {
		for range 5 { // map order varies
			n, err := e.newNetwork(&NetworkCreateOptions{Name: "n", Options: tc.opts})
			if err != nil {
				t.Fatalf("%v: %v", tc.opts, err)
			}
			if n.Routed != tc.want4 || n.Routed6 != tc.want6 {
				t.Errorf("%v: routed %v/%v, want %v/%v", tc.opts, n.Routed, n.Routed6, tc.want4, tc.want6)
			}
		}
	}
	for _, v := range []string{"nat-unprotected", "isolated", "bogus"} {
		if _, err := e.newNetwork(&NetworkCreateOptions{Name: "n", Options: map[string]string{"gateway-mode-ipv4": v}}); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("gateway mode %q: %v, want invalid", v, err)
		}
	}
}

func TestBridgeAddrSubnet(t *testing.T) {
	pp := netip.MustParsePrefix
	tests := []struct {
		addrs []string
		fixed string
		want  string // "subnet gateway range", "" for none
	}{
		{[]string{"192.168.5.1/24"}, "", "192.168.5.0/24 192.168.5.1 invalid Prefix"},
		{[]string{"fe80::1/64", "169.254.0.1/16", "10.0.0.9/8"}, "", "10.0.0.0/8 10.0.0.9 invalid Prefix"},
		{[]string{"192.168.5.0/24"}, "", "192.168.5.0/24 192.168.5.1 invalid Prefix"}, // the network's own address
		{[]string{"10.1.0.1/24", "10.2.0.1/16"}, "10.2.3.0/24", "10.2.0.0/16 10.2.0.1 10.2.3.0/24"},
		{[]string{"10.1.0.1/24"}, "10.2.3.0/24", ""},
		{[]string{"10.1.0.1/24"}, "10.1.0.0/16", ""}, // a range wider than the subnet
		{[]string{"10.1.0.1/32", "fd00::1/64"}, "", ""},
		{nil, "", ""},
	}
	for _, tt := range tests {
		var addrs []netip.Prefix
		for _, a := range tt.addrs {
			addrs = append(addrs, pp(a))
		}
		var fixed netip.Prefix
		if tt.fixed != "" {
			fixed = pp(tt.fixed)
		}
		s, ok := bridgeAddrSubnet(addrs, fixed)
		got := ""
		if ok {
			got = fmt.Sprintf("%v %v %v", s.Prefix, s.Gateway, s.IPRange)
		}
		if got != tt.want {
			t.Errorf("bridgeAddrSubnet(%v, %q) = %q, want %q", tt.addrs, tt.fixed, got, tt.want)
		}
	}
}

// With fixed-cidr and no bip, the default network's subnet may be the
// range itself or an existing bridge's that holds it: either is as asked,
// and the check reads no bridge (it runs in the reservation's transaction).
func TestDefaultNetworkChangedFixedCIDR(t *testing.T) {
	e := &Engine{cfg: &config.Config{FixedCIDR: "192.168.5.128/25"}}
	rec := func(subnet, gw, rng string) *Network {
		n := &Network{ICC: true, Masquerade: true, Network: driver.Network{Bridge: "knit0", MTU: 1500}}
		n.Subnets = []driver.Subnet{{Prefix: netip.MustParsePrefix(subnet), Gateway: netip.MustParseAddr(gw), IPRange: netip.MustParsePrefix(rng)}}
		return n
	}
	for _, tc := range []struct {
		n       *Network
		changed bool
	}{
		{rec("192.168.5.128/25", "192.168.5.129", "192.168.5.128/25"), false}, // the range itself
		{rec("192.168.5.0/24", "192.168.5.1", "192.168.5.128/25"), false},     // a bridge's subnet that holds it
		{rec("192.168.5.0/24", "192.168.5.1", "192.168.5.0/25"), true},        // another range
		{rec("10.0.0.0/8", "10.0.0.1", "192.168.5.128/25"), true},             // a subnet that does not hold it
	} {
		if got := e.defaultNetworkChanged(tc.n); (got != "") != tc.changed {
			t.Errorf("subnet %v range %v: changed %q, want changed %v", tc.n.Subnets[0].Prefix, tc.n.Subnets[0].IPRange, got, tc.changed)
		}
	}
}

// Without bip or fixed-cidr, a default network picked from the pools is
// made again from the pools configured now (dockerd picks again at start),
// and a range left from an old fixed-cidr goes.
func TestDefaultNetworkChangedPools(t *testing.T) {
	pools := []config.AddressPool{{Base: "10.123.0.0/16", Size: 24}}
	rec := func(subnet, rng string) *Network {
		n := &Network{ICC: true, Masquerade: true, Network: driver.Network{Bridge: "knit0", MTU: 1500}}
		if subnet == "192.168.5.0/24" {
			n.Bridge = "br0"
		}
		p := netip.MustParsePrefix(subnet)
		n.Subnets = []driver.Subnet{{Prefix: p, Gateway: p.Addr().Next()}}
		if rng != "" {
			n.Subnets[0].IPRange = netip.MustParsePrefix(rng)
		}
		return n
	}
	for _, tc := range []struct {
		cfg     *config.Config
		n       *Network
		changed bool
	}{
		{&config.Config{}, rec("172.17.0.0/16", ""), false},                           // Docker's default pools
		{&config.Config{DefaultAddressPools: pools}, rec("172.17.0.0/16", ""), true},  // pools changed
		{&config.Config{DefaultAddressPools: pools}, rec("10.123.7.0/24", ""), false}, // from them
		{&config.Config{}, rec("172.17.0.0/16", "172.17.5.0/24"), true},               // fixed-cidr gone
		{&config.Config{Bridge: "br0"}, rec("192.168.5.0/24", ""), false},             // the bridge's own address
	} {
		e := &Engine{cfg: tc.cfg}
		if got := e.defaultNetworkChanged(tc.n); (got != "") != tc.changed {
			t.Errorf("config %+v, subnet %v range %v: changed %q, want changed %v", tc.cfg, tc.n.Subnets[0].Prefix, tc.n.Subnets[0].IPRange, got, tc.changed)
		}
	}
}

// A default network left being removed (a remake of it a crash cut short)
// is not handed out by any lookup: its removal is finished and it is made
// again from the configuration.
func TestDefaultNetworkBeingRemovedIsMadeAgain(t *testing.T) {
	st := newStore(t)
	d := &leaveRecorder{}
	e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"},
		drivers: map[string]driver.Driver{"bridge": d}}
	stale := dnsNetwork(ModeBridge, "10.61.0.0/24")
	stale.DNS, stale.Removing = false, true
	if err := st.Update(func(tx store.Tx) error { return putJSON(tx, bucketNetworks, ModeBridge, stale) }); err != nil {
		t.Fatal(err)
	}
	n, err := e.network(ModeBridge)
	if err != nil {
		t.Fatalf("network(bridge): %v", err)
	}
	if n.Removing || n.ID == stale.ID {
		t.Errorf("network(bridge) = %+v, want a new record", n)
	}
	if !slices.Equal(d.deleted, []string{stale.ID}) {
		t.Errorf("networks deleted: %v, want the stale one's removal finished", d.deleted)
	}
}

// After a flush, the restore puts back the drop of foreign forwarding
// knit added as it turned forwarding on (its marker in the exec-root),
// unless config.json says ip-forward-no-drop, or ip-forward false, since.
func TestRestoreForeignDrops(t *testing.T) {
	no, yes := false, true
	for _, tc := range []struct {
		cfg  config.Config
		want bool
	}{
		{config.Config{}, true},
		{config.Config{IPForwardNoDrop: true}, false},
		{config.Config{IPForward: &no}, false},
		{config.Config{IPForward: &yes}, true},
	} {
		fw := firewalltest.New()
		cfg := tc.cfg
		e := &Engine{st: newStore(t), fw: fw, cfg: &cfg, paths: Paths{DataRoot: t.TempDir(), ExecRoot: t.TempDir()}}
		if err := os.WriteFile(e.foreignDropMarker(false), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := fw.DropForeignForwarding(false); err != nil {
			t.Fatal(err)
		}
		fw.Flush()
		if err := e.restoreForeignDrops(); err != nil {
			t.Fatal(err)
		}
		if got := fw.ForeignDrop(false); got != tc.want {
			t.Errorf("config %+v: IPv4 drop after a flush and the restore = %v, want %v", tc.cfg, got, tc.want)
		}
		if fw.ForeignDrop(true) {
			t.Errorf("config %+v: an IPv6 drop without its marker", tc.cfg)
		}
	}
}

// A foreign-forward drop that cannot be put back fails open (the host
// routes between its other interfaces): the restore keeps the loss noted,
// and the next one puts it back.
func TestRestoreKeepsTheLossWhenTheForeignDropFails(t *testing.T) {
	fw := firewalltest.New()
	e := &Engine{st: newStore(t), fw: fw, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: t.TempDir()}}
	if err := os.WriteFile(e.foreignDropMarker(false), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fw.Flush()
	if err := fw.NoteLost(); err != nil {
		t.Fatal(err)
	}
	fw.FailOn("DropForeignForwarding", errors.New("netlink: busy"))
	if err := e.restoreFirewall(""); err == nil {
		t.Error("restore with a failing drop: no error")
	}
	if lost, _ := fw.EnsureNetworkReport(firewall.Network{Name: "n", Bridge: "br-n"}); !lost {
		t.Error("a restore that could not put the drop back cleared the loss")
	}
	if err := e.restoreFirewall(""); err != nil {
		t.Fatal(err)
	}
	if !fw.ForeignDrop(false) {
		t.Error("the next restore did not put the drop back")
	}
	if lost, _ := fw.EnsureNetworkReport(firewall.Network{Name: "n", Bridge: "br-n"}); lost {
		t.Error("the restore that put the drop back left the loss")
	}
}

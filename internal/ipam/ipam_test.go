package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func usedSet(addrs ...string) func(netip.Addr) bool {
	m := map[netip.Addr]bool{}
	for _, a := range addrs {
		m[addr(a)] = true
	}
	return func(a netip.Addr) bool { return m[a] }
}

func TestFirstHost(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"172.17.0.0/16", "172.17.0.1"},
		{"10.1.2.3/24", "10.1.2.1"}, // not masked
		{"10.0.0.0/31", "10.0.0.1"},
		{"10.0.0.0/32", ""},
		{"fd00::/64", "fd00::1"},
		{"fd00::/127", "fd00::1"},
		{"fd00::/128", ""},
		{"255.255.255.255/32", ""},
	} {
		if got := FirstHost(pfx(tc.in)); got != addr(tc.want) {
			t.Errorf("FirstHost(%s) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := FirstHost(netip.Prefix{}); got.IsValid() {
		t.Errorf("FirstHost(zero) = %v", got)
	}
}

func TestOverlaps(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"10.0.0.0/8", "10.1.0.0/16", true},
		{"10.1.0.0/16", "10.0.0.0/8", true},
		{"10.0.0.0/16", "10.1.0.0/16", false},
		{"10.0.0.0/31", "10.0.0.1/32", true},
		{"0.0.0.0/0", "192.168.1.0/24", true},
		{"fd00::/8", "fd12::/16", true},
		{"fd00::/8", "10.0.0.0/8", false},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8", false}, // families differ in netip
	} {
		if got := Overlaps(pfx(tc.a), pfx(tc.b)); got != tc.want {
			t.Errorf("Overlaps(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestAllocate(t *testing.T) {
	for _, tc := range []struct {
		name        string
		subnet, rng string
		gw          string
		used        []string
		want        string
		err         error
	}{
		{name: "first after gateway", subnet: "172.17.0.0/16", gw: "172.17.0.1", want: "172.17.0.2"},
		{name: "no gateway", subnet: "172.17.0.0/16", want: "172.17.0.1"},
		{name: "skips used", subnet: "172.17.0.0/16", gw: "172.17.0.1", used: []string{"172.17.0.2", "172.17.0.3"}, want: "172.17.0.4"},
		{name: "fills hole", subnet: "172.17.0.0/16", gw: "172.17.0.1", used: []string{"172.17.0.2", "172.17.0.4"}, want: "172.17.0.3"},
		{name: "unmasked subnet", subnet: "10.0.0.7/24", gw: "10.0.0.1", want: "10.0.0.2"},
		{name: "range", subnet: "10.0.0.0/24", rng: "10.0.0.128/25", gw: "10.0.0.1", want: "10.0.0.128"},
		{name: "range starting at network", subnet: "10.0.0.0/24", rng: "10.0.0.0/25", gw: "10.0.0.1", want: "10.0.0.2"},
		{name: "range skips broadcast", subnet: "10.0.0.0/24", rng: "10.0.0.254/31", used: []string{"10.0.0.254"}, err: ErrExhausted},
		{name: "range outside", subnet: "10.0.0.0/24", rng: "10.0.1.0/25", err: ErrOutside},
		{name: "range larger than subnet", subnet: "10.0.0.0/24", rng: "10.0.0.0/16", err: ErrOutside},
		{name: "range other family", subnet: "10.0.0.0/24", rng: "fd00::/64", err: ErrOutside},
		{name: "/30 full", subnet: "10.0.0.0/30", gw: "10.0.0.1", used: []string{"10.0.0.2"}, err: ErrExhausted},
		{name: "/30 one left", subnet: "10.0.0.0/30", gw: "10.0.0.1", want: "10.0.0.2"},
		{name: "/31 both usable", subnet: "10.0.0.0/31", want: "10.0.0.0"},
		{name: "/31 with gateway", subnet: "10.0.0.0/31", gw: "10.0.0.0", want: "10.0.0.1"},
		{name: "/32", subnet: "10.0.0.9/32", want: "10.0.0.9"},
		{name: "/32 used", subnet: "10.0.0.9/32", used: []string{"10.0.0.9"}, err: ErrExhausted},
		{name: "top of space", subnet: "255.255.255.252/30", gw: "255.255.255.253", want: "255.255.255.254"},
		{name: "ipv6", subnet: "fd00::/64", gw: "fd00::1", want: "fd00::2"},
		{name: "ipv6 no broadcast", subnet: "fd00::/126", gw: "fd00::1", used: []string{"fd00::2"}, want: "fd00::3"},
		{name: "ipv6 /127", subnet: "fd00::/127", want: "fd00::1"},
		{name: "ipv6 /128", subnet: "fd00::5/128", err: ErrExhausted},
		{name: "ipv6 top", subnet: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126", used: []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"}, want: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{name: "invalid subnet", err: ErrInvalidArg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var subnet, rng netip.Prefix
			if tc.subnet != "" {
				subnet = pfx(tc.subnet)
			}
			if tc.rng != "" {
				rng = pfx(tc.rng)
			}
			got, err := Allocate(subnet, rng, addr(tc.gw), usedSet(tc.used...))
			if !errors.Is(err, tc.err) {
				t.Fatalf("Allocate err = %v, want %v", err, tc.err)
			}
			if got != addr(tc.want) {
				t.Errorf("Allocate = %v, want %v", got, tc.want)
			}
		})
	}
}

// AllocateFrom with a hint below which everything is taken finds what
// Allocate finds, asking inUse only from the hint on; a hint outside the
// range is ignored.
func TestAllocateFrom(t *testing.T) {
	subnet, gw := pfx("10.1.0.0/22"), addr("10.1.0.1")
	used := map[netip.Addr]bool{}
	for a := addr("10.1.0.2"); a.Compare(addr("10.1.1.200")) <= 0; a = a.Next() {
		used[a] = true
	}
	delete(used, addr("10.1.1.100")) // a hole: the lowest free address
	calls := 0
	inUse := func(a netip.Addr) bool { calls++; return used[a] }
	for _, tc := range []struct {
		from      string
		want      string
		maxCalls  int
		rng, note string
	}{
		{from: "10.1.1.50", want: "10.1.1.100", maxCalls: 51, note: "hint below the hole"},
		{from: "10.1.1.100", want: "10.1.1.100", maxCalls: 1, note: "hint at the hole"},
		{from: "", want: "10.1.1.100", maxCalls: 400, note: "no hint"},
		{from: "10.9.0.0", want: "10.1.1.100", maxCalls: 400, note: "hint outside the subnet"},
		{from: "10.1.0.5", rng: "10.1.2.0/24", want: "10.1.2.0", maxCalls: 1, note: "hint below the range"},
		{from: "fd00::1", want: "10.1.1.100", maxCalls: 400, note: "hint of another family"},
	} {
		calls = 0
		var rng netip.Prefix
		if tc.rng != "" {
			rng = pfx(tc.rng)
		}
		got, err := AllocateFrom(subnet, rng, gw, addr(tc.from), inUse)
		if err != nil || got != addr(tc.want) {
			t.Errorf("%s: AllocateFrom = %v, %v; want %s", tc.note, got, err, tc.want)
		}
		if calls > tc.maxCalls {
			t.Errorf("%s: %d lookups, want at most %d", tc.note, calls, tc.maxCalls)
		}
	}
}

func TestAllocateNilInUse(t *testing.T) {
	got, err := Allocate(pfx("10.0.0.0/24"), netip.Prefix{}, addr("10.0.0.1"), nil)
	if err != nil || got != addr("10.0.0.2") {
		t.Fatalf("Allocate = %v, %v", got, err)
	}
}

func TestCheck(t *testing.T) {
	const subnet, gw = "192.168.100.0/24", "192.168.100.1"
	for _, tc := range []struct {
		subnet, gw, want string
		used             []string
		err              error
		msg              string
	}{
		{want: "192.168.100.5"},
		{want: "10.0.0.5", err: ErrOutside, msg: "address 10.0.0.5 is outside subnet 192.168.100.0/24"},
		{want: "fd00::5", err: ErrOutside},
		{want: "::ffff:192.168.100.5", err: ErrOutside},
		{want: "", err: ErrOutside},
		{want: "192.168.100.0", err: ErrReserved, msg: "network address"},
		{want: "192.168.100.255", err: ErrReserved, msg: "broadcast address"},
		{want: "192.168.100.1", err: ErrReserved, msg: "address 192.168.100.1 is reserved: it is the gateway of subnet 192.168.100.0/24"},
		{want: "192.168.100.7", used: []string{"192.168.100.7"}, err: ErrInUse, msg: "already in use"},
		{subnet: "10.0.0.0/31", gw: "-", want: "10.0.0.0"},
		{subnet: "10.0.0.0/31", gw: "-", want: "10.0.0.1"},
		{subnet: "10.0.0.4/32", gw: "-", want: "10.0.0.4"},
		{subnet: "fd00::/64", gw: "fd00::1", want: "fd00::", err: ErrReserved},
		{subnet: "fd00::/64", gw: "fd00::1", want: "fd00::ffff:ffff:ffff:ffff"},
		{subnet: "fe80::/64", gw: "-", want: "fe80::2%eth0", err: ErrOutside},
	} {
		s, g := subnet, gw
		if tc.subnet != "" {
			s = tc.subnet
		}
		if tc.gw == "-" {
			g = ""
		} else if tc.gw != "" {
			g = tc.gw
		}
		err := Check(pfx(s), addr(g), addr(tc.want), usedSet(tc.used...))
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("Check(%s, %s) = %v, want %v", s, tc.want, err, tc.err)
			continue
		}
		if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Check(%s, %s) message %q does not contain %q", s, tc.want, err, tc.msg)
		}
	}
}

func TestMAC(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"172.17.0.2", "02:42:ac:11:00:02"},
		{"10.255.0.1", "02:42:0a:ff:00:01"},
		{"::ffff:172.17.0.2", "02:42:ac:11:00:02"},
	} {
		if got := MAC(addr(tc.in)).String(); got != tc.want {
			t.Errorf("MAC(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// IPv6: the same address, the same MAC; another, another; locally
	// administered unicast, never 02:42.
	seen := map[string]bool{}
	for i := range 1000 {
		a := netip.AddrFrom16([16]byte{0xfd, 15: byte(i), 14: byte(i >> 8)})
		m := MAC(a)
		if m.String() != MAC(a).String() {
			t.Fatalf("MAC(%s) changes: %s, %s", a, m, MAC(a))
		}
		if len(m) != 6 || m[0]&0x01 != 0 || m[0]&0x02 == 0 || m[0] == 0x02 && m[1] == 0x42 {
			t.Fatalf("MAC(%s) = %s: not a locally administered unicast address outside 02:42", a, m)
		}
		seen[m.String()] = true
	}
	if len(seen) != 1000 {
		t.Errorf("1000 IPv6 addresses got %d MACs", len(seen))
	}
}

func TestRandomMAC(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		m := RandomMAC()
		if len(m) != 6 || m[0]&0x01 != 0 || m[0]&0x02 == 0 {
			t.Fatalf("RandomMAC() = %s: not a locally administered unicast address", m)
		}
		if m[0] == 0x02 && m[1] == 0x42 {
			t.Fatalf("RandomMAC() = %s collides with the 02:42 prefix", m)
		}
		seen[m.String()] = true
	}
	if len(seen) < 990 {
		t.Errorf("RandomMAC produced only %d distinct addresses in 1000 calls", len(seen))
	}
}

func BenchmarkAllocate1000Used(b *testing.B) {
	subnet := pfx("172.17.0.0/16")
	used := map[netip.Addr]bool{}
	a := addr("172.17.0.2")
	for range 1000 {
		used[a] = true
		a = a.Next()
	}
	inUse := func(a netip.Addr) bool { return used[a] }
	for b.Loop() {
		if _, err := Allocate(subnet, netip.Prefix{}, addr("172.17.0.1"), inUse); err != nil {
			b.Fatal(err)
		}
	}
}

func ExampleCheck() {
	err := Check(netip.MustParsePrefix("192.168.100.0/24"), netip.MustParseAddr("192.168.100.1"),
		netip.MustParseAddr("10.0.0.5"), nil)
	fmt.Println(err, errors.Is(err, ErrOutside))
	// Output: address 10.0.0.5 is outside subnet 192.168.100.0/24: choose an address inside the subnet true
}

package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzPickSubnet checks, for pool and taken CIDRs as a user or the routing
// table may give them, that PickSubnet never panics and that a subnet it
// returns lies in a pool, has the pool's size and overlaps nothing taken.
func FuzzPickSubnet(f *testing.F) {
	f.Add("172.17.0.0/16", 16, "172.17.0.0/16,10.0.0.0/8")
	f.Add("192.168.0.0/16", 20, "192.168.0.0/20,192.168.16.5/32")
	f.Add("fd00::/48", 64, "fd00::/64,::/0")
	f.Add("0.0.0.0/0", 1, "")
	f.Add("255.255.255.255/32", 32, "255.255.255.255/32")
	f.Fuzz(func(t *testing.T, base string, size int, takenList string) {
		b, err := netip.ParsePrefix(base)
		if err != nil {
			return
		}
		var taken []netip.Prefix
		for _, s := range strings.Split(takenList, ",") {
			if p, err := netip.ParsePrefix(s); err == nil {
				taken = append(taken, p)
			}
		}
		got, err := PickSubnet([]PoolSpec{{b, size}}, taken)
		if err != nil {
			return
		}
		if got.Bits() != size || !b.Masked().Contains(got.Addr()) || got != got.Masked() {
			t.Fatalf("PickSubnet(%s/%d) = %v: not a subnet of the pool", b, size, got)
		}
		for _, p := range taken {
			if got.Overlaps(p) {
				t.Fatalf("PickSubnet = %v overlaps taken %v", got, p)
			}
		}
		if gw := FirstHost(got); gw.IsValid() {
			if err := Check(got, gw, gw, nil); err == nil {
				t.Fatalf("Check accepted the gateway %v of %v", gw, got)
			}
		}
	})
}

// FuzzCheck checks that a requested address Check accepts is one Allocate
// could return, and that Allocate's result always passes Check.
func FuzzCheck(f *testing.F) {
	f.Add("192.168.100.0/24", "192.168.100.1", "192.168.100.5")
	f.Add("10.0.0.0/31", "", "10.0.0.1")
	f.Add("fd00::/64", "fd00::1", "fd00::")
	f.Add("10.0.0.0/8", "10.0.0.1", "fe80::1%eth0")
	f.Fuzz(func(t *testing.T, subnet, gw, want string) {
		s, err := netip.ParsePrefix(subnet)
		if err != nil {
			return
		}
		g, _ := netip.ParseAddr(gw)
		w, _ := netip.ParseAddr(want)
		if Check(s, g, w, nil) == nil {
			got, err := Allocate(s, netip.PrefixFrom(w, w.BitLen()), g, nil)
			if err != nil || got != w {
				t.Fatalf("Check accepted %v in %v but Allocate of its /%d = %v, %v", w, s, w.BitLen(), got, err)
			}
		}
		if s.Bits() < s.Addr().BitLen()-16 {
			return // keep Allocate's walk short
		}
		if a, err := Allocate(s, netip.Prefix{}, g, func(a netip.Addr) bool { return a == w }); err == nil {
			if err := Check(s, g, a, nil); err != nil {
				t.Fatalf("Allocate returned %v which Check rejects: %v", a, err)
			}
		}
	})
}

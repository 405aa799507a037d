package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func TestDefaultPools(t *testing.T) {
	want := []string{"172.17.0.0/16", "172.18.0.0/16", "172.19.0.0/16", "172.20.0.0/16",
		"172.21.0.0/16", "172.22.0.0/16", "172.23.0.0/16", "172.24.0.0/16"}
	var taken []netip.Prefix
	for _, w := range want {
		got, err := PickSubnet(DefaultPools(), taken)
		if err != nil || got != pfx(w) {
			t.Fatalf("PickSubnet after %v = %v, %v; want %s", taken, got, err, w)
		}
		taken = append(taken, got)
	}
	for _, p := range append(DefaultPools(), DefaultULAPools()...) {
		if !p.valid() || p.Base != p.Base.Masked() {
			t.Errorf("default pool %v is not valid", p)
		}
	}
	if u := DefaultULAPools()[0]; !u.Base.Addr().Is6() || u.Size != 64 || !pfx("fc00::/7").Contains(u.Base.Addr()) {
		t.Errorf("ULA pool %v is not a unique local /64 pool", u)
	}
}

func TestPickSubnet(t *testing.T) {
	def := DefaultPools()
	for _, tc := range []struct {
		name  string
		pools []PoolSpec
		taken []string
		want  string
		err   error
	}{
		{name: "empty", pools: def, want: "172.17.0.0/16"},
		{name: "host route inside first", pools: def, taken: []string{"172.17.5.0/24"}, want: "172.18.0.0/16"},
		{name: "covering route", pools: def, taken: []string{"172.16.0.0/12"}, want: "192.168.0.0/20"},
		{name: "default route overlaps everything", pools: def, taken: []string{"0.0.0.0/0"}, err: ErrNoSubnet},
		{name: "host address", pools: def, taken: []string{"172.17.0.1/32", "172.18.255.255/32"}, want: "172.19.0.0/16"},
		{name: "unmasked taken", pools: def, taken: []string{"172.17.3.4/16"}, want: "172.18.0.0/16"},
		{name: "ipv6 taken ignored", pools: def, taken: []string{"::/0"}, want: "172.17.0.0/16"},
		{name: "192.168 split", pools: def, taken: []string{"172.16.0.0/12", "192.168.0.0/20", "192.168.17.0/24"}, want: "192.168.32.0/20"},
		{name: "all taken", pools: def, taken: []string{"172.16.0.0/12", "192.168.0.0/16"}, err: ErrNoSubnet},
		{name: "no pools", err: ErrNoSubnet},
		{name: "size < base bits", pools: []PoolSpec{{pfx("10.0.0.0/8"), 7}}, err: ErrInvalidArg},
		{name: "size too big", pools: []PoolSpec{{pfx("10.0.0.0/8"), 33}}, err: ErrInvalidArg},
		{name: "zero pool", pools: []PoolSpec{{}}, err: ErrInvalidArg},
		{name: "/32 pieces", pools: []PoolSpec{{pfx("10.0.0.0/30"), 32}}, taken: []string{"10.0.0.0/31"}, want: "10.0.0.2/32"},
		{name: "top of space", pools: []PoolSpec{{pfx("255.255.255.0/24"), 25}}, taken: []string{"255.255.255.0/25"}, want: "255.255.255.128/25"},
		{name: "top exhausted", pools: []PoolSpec{{pfx("255.255.255.0/24"), 25}}, taken: []string{"255.255.255.0/25", "255.255.255.255/32"}, err: ErrNoSubnet},
		{name: "ula", pools: DefaultULAPools(), taken: []string{"fd4b:6e69:7400::/64", "10.0.0.0/8"}, want: "fd4b:6e69:7400:1::/64"},
		{name: "ipv6 top", pools: []PoolSpec{{pfx("ffff::/16"), 17}}, taken: []string{"ffff::/17"}, want: "ffff:8000::/17"},
		{name: "mixed families", pools: []PoolSpec{{pfx("10.0.0.0/16"), 24}, {pfx("fd00::/48"), 64}}, taken: []string{"10.0.0.0/16"}, want: "fd00::/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var taken []netip.Prefix
			for _, s := range tc.taken {
				taken = append(taken, pfx(s))
			}
			got, err := PickSubnet(tc.pools, taken)
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("PickSubnet err = %v, want %v", err, tc.err)
			}
			if tc.want != "" && got != pfx(tc.want) {
				t.Errorf("PickSubnet = %v, want %s", got, tc.want)
			}
		})
	}
}

// manyTaken takes every other /24 of 10.0.0.0/8 below n*2 and a few /16s,
// as a host with thousands of routes might.
func manyTaken(n int) []netip.Prefix {
	var out []netip.Prefix
	for i := range n {
		j := 2 * i
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(j >> 8), byte(j), 0}), 24))
	}
	return out
}

func TestPickSubnetManyTaken(t *testing.T) {
	// Every /24 of 10.0.0.0/12 taken but the last one.
	var taken []netip.Prefix
	for i := range 4095 {
		taken = append(taken, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
	}
	got, err := PickSubnet([]PoolSpec{{pfx("10.0.0.0/8"), 24}}, taken)
	if err != nil || got != pfx("10.15.255.0/24") {
		t.Fatalf("PickSubnet = %v, %v", got, err)
	}
	got, err = PickSubnet(DefaultULAPools(), []netip.Prefix{pfx("fd4b:6e69:7400::/49")})
	if err != nil || got != pfx("fd4b:6e69:7400:8000::/64") {
		t.Fatalf("PickSubnet = %v, %v", got, err)
	}
}

func BenchmarkPickSubnet(b *testing.B) {
	taken := manyTaken(5000)
	pools := []PoolSpec{{pfx("10.0.0.0/8"), 24}}
	for b.Loop() {
		if _, err := PickSubnet(pools, taken); err != nil {
			b.Fatal(err)
		}
	}
}

func ExamplePickSubnet() {
	taken := []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16"), netip.MustParsePrefix("172.18.42.0/24")}
	p, _ := PickSubnet(DefaultPools(), taken)
	fmt.Println(p, FirstHost(p))
	// Output: 172.19.0.0/16 172.19.0.1
}

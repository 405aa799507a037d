package engine

import (
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/config"
	"github.com/knit-dev/knit/internal/errdefs"
)

// FuzzNetworkCreate feeds `network create` values (subnets, gateways,
// ranges as the CLI parses them, and -o options) to the validation and the
// subnet choice. Whatever the input, no panic; an accepted network has
// canonical subnets, one per family, each gateway inside its subnet and
// not its network address, each range inside its subnet.
func FuzzNetworkCreate(f *testing.F) {
	f.Add("192.168.100.0/24", "192.168.100.1", "192.168.100.128/25", "mtu=1400", true)
	f.Add("10.0.0.0/8,fd00::/64", "10.0.0.254,fd00::1", "", "icc=false,ip-masq=0", false)
	f.Add("10.0.0.1/24", "", "", "", false)
	f.Add("", "10.0.0.1", "", "gateway-mode=routed", true)
	f.Add("10.1.0.0/30", "10.1.0.0", "10.1.0.0/31", "bridge=br0,enable-dns=false", false)
	f.Add("", "", "", "ipv6=true,com.docker.network.enable_ipv6=false", false)
	f.Add("fd00::/64", "", "", "com.docker.network.enable_ipv6=true", false)
	f.Add("::/0", "", "", "host-ip=::1", true)
	f.Fuzz(func(t *testing.T, subnets, gateways, ranges, opts string, ipv6 bool) {
		o := NetworkCreateOptions{Name: "fuzz", IPv6: ipv6, Options: map[string]string{}}
		for _, s := range split(subnets) {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return // the CLI refuses it before the engine sees it
			}
			o.Subnets = append(o.Subnets, p)
		}
		for _, s := range split(gateways) {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return
			}
			o.Gateways = append(o.Gateways, a)
		}
		for _, s := range split(ranges) {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return
			}
			o.IPRanges = append(o.IPRanges, p)
		}
		for _, kv := range split(opts) {
			k, v, _ := strings.Cut(kv, "=")
			o.Options[k] = v
		}
		e := &Engine{cfg: &config.Config{}}
		again := o // the same request, whose options map order may differ
		again.Options = maps.Clone(o.Options)
		n, err := e.newNetwork(&o)
		if _, err2 := e.newNetwork(&again); (err == nil) != (err2 == nil) {
			t.Fatalf("the same request accepted once and refused once: %v, %v", err, err2)
		}
		if err != nil {
			if errdefs.KindOf(err) != errdefs.KindInvalid {
				t.Fatalf("refusal of kind %v, want invalid: %v", errdefs.KindOf(err), err)
			}
			return
		}
		if err := e.pickSubnets(n, &o, nil); err != nil {
			return
		}
		fams := map[bool]int{}
		for _, s := range n.Subnets {
			fams[s.Prefix.Addr().Is4()]++
			if s.Prefix != s.Prefix.Masked() {
				t.Errorf("subnet %s is not canonical", s.Prefix)
			}
			if !s.Prefix.Contains(s.Gateway) || s.Gateway == s.Prefix.Addr() {
				t.Errorf("gateway %s of %s", s.Gateway, s.Prefix)
			}
			if s.IPRange.IsValid() && (!s.Prefix.Contains(s.IPRange.Addr()) || s.IPRange.Bits() < s.Prefix.Bits()) {
				t.Errorf("range %s outside %s", s.IPRange, s.Prefix)
			}
		}
		if fams[true] > 1 || fams[false] > 1 {
			t.Errorf("subnets %v: more than one per family", n.Subnets)
		}
		if n.IPv6 != (fams[false] == 1) {
			t.Errorf("IPv6 %v with subnets %v", n.IPv6, n.Subnets)
		}
	})
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

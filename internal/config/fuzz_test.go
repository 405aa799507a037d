package config

import (
	"testing"

	"github.com/knit-dev/knit/internal/ipam"
)

// FuzzParse checks that any config.json either fails with an invalid error
// or yields a Config whose pools ipam accepts and whose settings are sane.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"bip": "172.26.0.1/16", "fixed-cidr": "172.26.1.0/24", "mtu": 1450}`,
		`{"default-address-pools": [{"base": "10.10.0.0/16", "size": 24}]}`,
		`{"default-address-pools": [{"base": "fd00::/8", "size": 128}], "ip": "::1"}`,
		`{"icc": false, "iptables": null, "bridge": "br0"}`, `{"mtu": "x"}`, `[`, `{"a":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parse accepted a config Validate rejects: %v", err)
		}
		if m := c.MTUOrDefault(); m < 68 || m > 65535 {
			t.Fatalf("MTU %d", m)
		}
		// Every validated pool serves its family's networks: IPv4 ones
		// Pools, IPv6 ones Pools6.
		if n := len(c.pools(false)) + len(c.pools(true)); n != len(c.DefaultAddressPools) {
			t.Fatalf("Pools and Pools6 dropped a validated pool: %v", c.DefaultAddressPools)
		}
		// Every pool is one PickSubnet accepts.
		for _, pools := range [][]ipam.PoolSpec{c.Pools(), c.Pools6()} {
			if _, err := ipam.PickSubnet(pools, nil); err != nil {
				t.Fatalf("PickSubnet(%v): %v", pools, err)
			}
		}
	})
}

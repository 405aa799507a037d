package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/ipam"
)

func write(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadMissing(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "nope", "config.json"))
	if err != nil || c == nil || !reflectZero(c) {
		t.Fatalf("Load(missing) = %+v, %v; want the zero Config", c, err)
	}
}

func reflectZero(c *Config) bool {
	return c.Bip == "" && c.MTU == 0 && c.DefaultAddressPools == nil && c.IPForward == nil
}

func TestLoadUnreadable(t *testing.T) {
	dir := t.TempDir() // a directory cannot be read as a file
	if _, err := Load(dir); err == nil {
		t.Fatal("Load(directory) succeeded")
	}
}

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		check         func(t *testing.T, c *Config)
		err           []string // substrings of the error
	}{
		{name: "empty file", content: "", check: func(t *testing.T, c *Config) {
			if !reflectZero(c) {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "empty object", content: " {}\n"},
		{name: "full", content: `{
			"bip": "172.26.0.1/16", "fixed-cidr": "172.26.1.0/24", "mtu": 1450,
			"default-address-pools": [{"base": "10.10.0.0/16", "size": 24}, {"base": "fd00:1::/48", "size": 64}],
			"ip-forward": false, "icc": false, "ip-masq": false, "iptables": true,
			"ip": "127.0.0.1", "default-gateway": "172.26.0.254"}`,
			check: func(t *testing.T, c *Config) {
				if c.BridgeName() != "knit0" || c.MTUOrDefault() != 1450 || c.ForwardingOn() || c.ICCOn() || c.MasqueradeOn() || !c.FirewallOn() {
					t.Errorf("accessors wrong for %+v", c)
				}
				// Each family takes its own pools.
				want := []ipam.PoolSpec{{Base: mustPrefix("10.10.0.0/16"), Size: 24}}
				if got := c.Pools(); !slices.Equal(got, want) {
					t.Errorf("Pools = %v, want %v", got, want)
				}
				want6 := []ipam.PoolSpec{{Base: mustPrefix("fd00:1::/48"), Size: 64}}
				if got := c.Pools6(); !slices.Equal(got, want6) {
					t.Errorf("Pools6 = %v, want %v", got, want6)
				}
			}},
		// As dockerd refuses them.
		{name: "bridge and bip", content: `{"bridge": "br-lan", "bip": "172.26.0.1/16"}`, err: []string{"bridge: and bip are mutually exclusive"}},
		{name: "bridge none", content: `{"bridge": "none"}`, err: []string{`"none"`, "not supported"}},
		{name: "icc off without the firewall", content: `{"icc": false, "iptables": false}`, err: []string{"icc: false needs the firewall"}},
		{name: "default-gateway outside bip", content: `{"bip": "10.9.0.1/24", "default-gateway": "10.8.0.1"}`, err: []string{"outside bip's subnet"}},
		{name: "default-gateway IPv6", content: `{"default-gateway": "fd00::1"}`, err: []string{"not an IPv4 address"}},
		{name: "unknown key", content: `{"bip": "172.26.0.1/16", "log-driver": "json-file"}`,
			err: []string{`unknown key "log-driver"`, "known keys are bip, fixed-cidr"}},
		{name: "wrong case", content: `{"BIP": "172.26.0.1/16"}`, err: []string{`unknown key "BIP"`}},
		{name: "unknown pool key", content: `{"default-address-pools": [{"base": "10.0.0.0/8", "size": 24, "sise": 1}]}`,
			err: []string{`unknown key "default-address-pools[0].sise"`}},
		{name: "syntax", content: "{\n  \"mtu\": 1500,\n}", err: []string{"invalid JSON at line 3"}},
		{name: "truncated", content: `{"mtu": 15`, err: []string{"unexpected end"}},
		{name: "type", content: "{\n\"mtu\": \"1500\"}", err: []string{`key "mtu" at line 2: expected int`}},
		{name: "not an object", content: `[1]`, err: []string{"must hold one JSON object, not a JSON array"}},
		{name: "trailing data", content: `{} {}`, err: []string{"unexpected data after"}},
		{name: "bad values reported together", content: `{"mtu": 10, "ip": "nope"}`,
			err: []string{"mtu: 10 is out of range", `ip: "nope" is not an IP address`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, tc.content)
			c, err := Load(path)
			if len(tc.err) > 0 {
				if err == nil {
					t.Fatalf("Load = %+v, want an error", c)
				}
				if errdefs.KindOf(err) != errdefs.KindInvalid || !strings.Contains(err.Error(), "config "+path+": ") {
					t.Errorf("error %q (kind %v) is not an invalid error naming the file", err, errdefs.KindOf(err))
				}
				for _, s := range tc.err {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		err  string // "" for valid
	}{
		{name: "zero", c: Config{}},
		{name: "bip", c: Config{Bip: "172.26.0.1/16"}},
		{name: "bip /30", c: Config{Bip: "10.0.0.1/30"}},
		{name: "bip not gateway form", c: Config{Bip: "172.26.0.0/16"}, err: "is a network address: give the gateway address, such as 172.26.0.1/16"},
		{name: "bip broadcast", c: Config{Bip: "172.26.255.255/16"}, err: "broadcast"},
		{name: "bip /31", c: Config{Bip: "10.0.0.1/31"}, err: "leaves no room"},
		{name: "bip /32", c: Config{Bip: "10.0.0.1/32"}, err: "leaves no room"},
		{name: "bip no prefix", c: Config{Bip: "10.0.0.1"}, err: "not an address with a prefix length"},
		{name: "bip ipv6", c: Config{Bip: "fd00::1/64"}, err: "not an IPv4 address"},
		{name: "fixed-cidr inside", c: Config{Bip: "172.26.0.1/16", FixedCIDR: "172.26.128.0/17"}},
		{name: "fixed-cidr equal", c: Config{Bip: "172.26.0.1/16", FixedCIDR: "172.26.0.0/16"}},
		{name: "fixed-cidr without bip", c: Config{FixedCIDR: "172.17.1.0/24"}},
		{name: "fixed-cidr outside", c: Config{Bip: "172.26.0.1/16", FixedCIDR: "172.27.0.0/24"}, err: "fixed-cidr: 172.27.0.0/24 is not inside bip's subnet 172.26.0.0/16"},
		{name: "fixed-cidr larger", c: Config{Bip: "172.26.0.1/16", FixedCIDR: "172.0.0.0/8"}, err: "not inside"},
		{name: "fixed-cidr garbage", c: Config{FixedCIDR: "x"}, err: "not a CIDR prefix"},
		{name: "fixed-cidr IPv6", c: Config{FixedCIDR: "fd00::/64"}, err: "not an IPv4 range"},
		{name: "fixed-cidr /31 without bip", c: Config{FixedCIDR: "10.9.9.0/31"}, err: "no room for a gateway and a container"},
		{name: "fixed-cidr /30 without bip", c: Config{FixedCIDR: "10.9.9.0/30"}},
		{name: "mtu min", c: Config{MTU: 68}},
		{name: "mtu max", c: Config{MTU: 65535}},
		{name: "mtu low", c: Config{MTU: 67}, err: "mtu: 67 is out of range"},
		{name: "mtu high", c: Config{MTU: 65536}, err: "out of range"},
		{name: "mtu negative", c: Config{MTU: -1}, err: "out of range"},
		{name: "bridge", c: Config{Bridge: "br0"}},
		{name: "bridge too long", c: Config{Bridge: "abcdefghijklmnop"}, err: "longer than 15"},
		{name: "bridge slash", c: Config{Bridge: "a/b"}, err: "not a valid interface name"},
		{name: "pool", c: Config{DefaultAddressPools: []AddressPool{{"10.10.0.0/16", 24}}}},
		{name: "pool size = base", c: Config{DefaultAddressPools: []AddressPool{{"10.10.0.0/16", 16}}}},
		{name: "pool size 30", c: Config{DefaultAddressPools: []AddressPool{{"10.10.0.0/16", 30}}}},
		{name: "pool size 31: no room for a container", c: Config{DefaultAddressPools: []AddressPool{{"10.10.0.0/16", 31}}}, err: "and 30"},
		{name: "pool ipv6", c: Config{DefaultAddressPools: []AddressPool{{"fd00::/48", 64}}}},
		{name: "pool size small", c: Config{DefaultAddressPools: []AddressPool{{"10.10.0.0/16", 8}}}, err: "default-address-pools[0]: size 8 must be between the base's prefix length 16 and 30"},
		{name: "pool size big", c: Config{DefaultAddressPools: []AddressPool{{"10.10.0.0/16", 33}}}, err: "between"},
		{name: "pool size big v6", c: Config{DefaultAddressPools: []AddressPool{{"fd00::/48", 127}}}, err: "and 126"},
		{name: "pool zero size", c: Config{DefaultAddressPools: []AddressPool{{Base: "10.0.0.0/8"}}}, err: "size 0"},
		{name: "pool base", c: Config{DefaultAddressPools: []AddressPool{{"10.10.0.0", 24}}}, err: `base "10.10.0.0" is not a CIDR prefix`},
		{name: "ip", c: Config{IP: "0.0.0.0"}},
		{name: "ip v6", c: Config{IP: "::"}},
		{name: "ip zone", c: Config{IP: "fe80::1%eth0"}, err: "not an IP address"},
		{name: "default-gateway", c: Config{DefaultGateway: "10.0.0"}, err: "default-gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.err == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || errdefs.KindOf(err) != errdefs.KindInvalid {
				t.Fatalf("Validate = %v, want an invalid error containing %q", err, tc.err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := &Config{}
	if c.BridgeName() != "knit0" || c.MTUOrDefault() != 1500 || !c.ForwardingOn() || !c.ICCOn() || !c.MasqueradeOn() || !c.FirewallOn() {
		t.Errorf("defaults wrong: %+v", c)
	}
	if !slices.Equal(c.Pools(), ipam.DefaultPools()) || !slices.Equal(c.Pools6(), ipam.DefaultULAPools()) {
		t.Errorf("Pools = %v, Pools6 = %v, want ipam's defaults", c.Pools(), c.Pools6())
	}
	// Only IPv6 pools configured: IPv4 networks keep the defaults.
	c = &Config{DefaultAddressPools: []AddressPool{{"fd00:1::/48", 64}}}
	if !slices.Equal(c.Pools(), ipam.DefaultPools()) {
		t.Errorf("Pools with IPv6 pools only = %v, want ipam.DefaultPools()", c.Pools())
	}
	yes := true
	c = &Config{IPForward: &yes, ICC: &yes, IPMasq: &yes, IPTables: &yes}
	if !c.ForwardingOn() || !c.ICCOn() || !c.MasqueradeOn() || !c.FirewallOn() {
		t.Errorf("explicit true read as false")
	}
	c = &Config{DefaultAddressPools: []AddressPool{{"10.1.2.3/16", 24}}}
	if got := c.Pools(); len(got) != 1 || got[0].Base.String() != "10.1.0.0/16" {
		t.Errorf("Pools = %v, want the masked base", got)
	}
}

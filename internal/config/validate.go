package config

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/knit-dev/knit/internal/errdefs"
)

// Validate checks every setting and reports all the problems at once:
//   - bip is an IPv4 address with a prefix length ("172.26.0.1/16"): not the
//     network or broadcast address, and not a /31 or /32, which leave no room
//     for containers;
//   - fixed-cidr is a prefix inside bip's subnet (when bip is set);
//   - mtu is 0 (default) or 68..65535;
//   - bridge is a valid interface name;
//   - each address pool's base is a prefix and its size lies between the
//     base's length and 32 (IPv4) or 128 (IPv6);
//   - ip and default-gateway are addresses.
func (c *Config) Validate() error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, args...))
	}
	var bip netip.Prefix
	if c.Bip != "" {
		var why string
		bip, why = checkBip(c.Bip)
		if why != "" {
			bad("bip", "%q %s", c.Bip, why)
		}
	}
	if c.FixedCIDR != "" {
		p, err := netip.ParsePrefix(c.FixedCIDR)
		switch {
		case err != nil:
			bad("fixed-cidr", "%q is not a CIDR prefix such as 172.26.1.0/24", c.FixedCIDR)
		case !p.Addr().Is4():
			bad("fixed-cidr", "%s is not an IPv4 range (the default network is IPv4)", p)
		case bip.IsValid() && (p.Bits() < bip.Bits() || !bip.Masked().Contains(p.Addr())):
			bad("fixed-cidr", "%s is not inside bip's subnet %s", p, bip.Masked())
		case !bip.IsValid() && p.Bits() > 30:
			// Without bip it is the subnet: room for a gateway and a
			// container besides its network and broadcast addresses.
			bad("fixed-cidr", "%s leaves no room for a gateway and a container: use /30 or wider, or set bip", p)
		}
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		bad("mtu", "%d is out of range: use 68 to 65535, or leave it out for 1500", c.MTU)
	}
	if why := ifaceNameProblem(c.Bridge); c.Bridge != "" && why != "" {
		bad("bridge", "%q is not a valid interface name: %s", c.Bridge, why)
	}
	if c.Bridge == "none" {
		// dockerd's way to run without a default bridge, which knit
		// always has: refused rather than taken for a bridge's name.
		bad("bridge", `"none" (dockerd's default network turned off) is not supported: leave it out, and give containers --network none or a network of their own`)
	}
	if c.Bridge != "" && c.Bip != "" {
		bad("bridge", "and bip are mutually exclusive, as dockerd's -b and --bip: the bridge named keeps its own address")
	}
	if c.IPTables != nil && !*c.IPTables && c.ICC != nil && !*c.ICC {
		bad("icc", `false needs the firewall, which "iptables": false turns off (as dockerd refuses --iptables=false with --icc=false)`)
	}
	for i, p := range c.DefaultAddressPools {
		key := fmt.Sprintf("default-address-pools[%d]", i)
		base, err := netip.ParsePrefix(p.Base)
		if err != nil {
			bad(key, "base %q is not a CIDR prefix such as 10.10.0.0/16", p.Base)
			continue
		}
		// A network needs room for its gateway and a container besides
		// its network (and IPv4 broadcast) address.
		if most := base.Addr().BitLen() - 2; p.Size < base.Bits() || p.Size > most {
			bad(key, "size %d must be between the base's prefix length %d and %d", p.Size, base.Bits(), most)
		}
	}
	for _, kv := range [][2]string{{"ip", c.IP}, {"default-gateway", c.DefaultGateway}} {
		key, v := kv[0], kv[1]
		if a, err := netip.ParseAddr(v); v != "" && (err != nil || a.Zone() != "") {
			bad(key, "%q is not an IP address", v)
		}
	}
	if gw, err := netip.ParseAddr(c.DefaultGateway); err == nil {
		switch {
		case !gw.Is4():
			bad("default-gateway", "%s is not an IPv4 address (the default network is IPv4)", gw)
		case bip.IsValid() && !bip.Masked().Contains(gw):
			bad("default-gateway", "%s is outside bip's subnet %s", gw, bip.Masked())
		}
	}
	if len(errs) > 0 {
		return errdefs.Invalid("%s", strings.Join(errs, "; "))
	}
	return nil
}

// checkBip parses a bip value, or says what is wrong with it.
func checkBip(s string) (netip.Prefix, string) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return p, "is not an address with a prefix length, such as 172.26.0.1/16"
	case !p.Addr().Is4():
		return p, "is not an IPv4 address"
	case p.Bits() > 30:
		return p, "leaves no room for containers: use a prefix length of 30 or less"
	case p.Addr() == p.Masked().Addr():
		return p, "is a network address: give the gateway address, such as " + p.Addr().Next().String() + "/" + fmt.Sprint(p.Bits())
	case p.Addr().Next() == netip.Addr{} || !p.Contains(p.Addr().Next()):
		return p, "is the broadcast address of its subnet: give the gateway address"
	}
	return p, ""
}

// ifaceNameProblem says why Linux would refuse name as an interface name.
func ifaceNameProblem(name string) string {
	switch {
	case len(name) > 15:
		return "longer than 15 characters"
	case name == "." || name == "..":
		return "reserved name"
	case strings.ContainsAny(name, "/: \t\n\x00"):
		return "contains '/', ':' or whitespace"
	}
	return ""
}

package cni

import (
	"slices"
	"strconv"
	"strings"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
)

// checkNetwork refuses an ADD whose configuration disagrees with the knit
// network it names: the network's settings apply only when ADD creates it,
// so a changed subnet, gateway, range, bridge, IPv4, IPv6, MTU, ICC or masquerade
// would otherwise be ignored silently. It also refuses a name that knit would resolve as the ID
// prefix of another network.
func checkNetwork(e Engine, o engine.NetworkCreateOptions) *Error {
	n, err := e.NetworkByRef(o.Name)
	if errdefs.KindOf(err) == errdefs.KindNotFound {
		return nil // ADD creates it
	}
	if err != nil {
		return engineError("cannot look up the network", err)
	}
	if n.Name != o.Name {
		return invalid("network %q: no network has that name, and knit would take it as the ID prefix of network %s; choose another name", o.Name, n.Name)
	}
	return networkMismatch(n, o)
}

// networkMismatch says how n differs from the network the configuration
// o describes, or returns nil.
func networkMismatch(n *engine.Network, o engine.NetworkCreateOptions) *Error {
	var have []string
	for _, s := range n.Subnets {
		have = append(have, s.Prefix.String())
	}
	for _, p := range o.Subnets {
		if !slices.ContainsFunc(n.Subnets, func(s driver.Subnet) bool { return s.Prefix == p }) {
			return mismatch(n, "subnet "+p.String(), "subnets "+strings.Join(have, ", "))
		}
	}
	for _, g := range o.Gateways {
		if !slices.ContainsFunc(n.Subnets, func(s driver.Subnet) bool { return s.Gateway == g }) {
			return mismatch(n, "gateway "+g.String(), "other gateways")
		}
	}
	if b := o.Options["bridge"]; b != "" && b != n.Bridge {
		return mismatch(n, "bridge "+b, "bridge "+n.Bridge)
	}
	if o.IPv6 && !n.HasIPv6() {
		return mismatch(n, "IPv6 (ipv6 true)", "no IPv6 subnet")
	}
	if v := o.Options["ipv4"]; v != "" && (v == "true") != n.HasIPv4() {
		if n.HasIPv4() {
			return mismatch(n, "no IPv4 (ipv4 false)", "an IPv4 subnet")
		}
		return mismatch(n, "IPv4 (ipv4 true)", "no IPv4 subnet (an IPv6-only network)")
	}
	for _, r := range o.IPRanges {
		if !slices.ContainsFunc(n.Subnets, func(s driver.Subnet) bool { return s.IPRange == r }) {
			return mismatch(n, "ipRange "+r.String(), "other address ranges")
		}
	}
	for _, f := range []struct{ key, have string }{
		{"mtu", strconv.Itoa(n.LinkMTU())}, {"icc", strconv.FormatBool(n.ICC)}, {"ip-masq", strconv.FormatBool(n.Masquerades())},
	} {
		if want := o.Options[f.key]; want != "" && want != f.have {
			return mismatch(n, f.key+" "+want, f.key+" "+f.have)
		}
	}
	return nil
}

func mismatch(n *engine.Network, want, have string) *Error {
	return invalid("network %s exists with %s, but the configuration asks for %s: "+
		"a network's settings apply when it is created; remove it (knit network rm) or match the configuration to it", n.Name, have, want)
}

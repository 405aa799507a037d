package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/knit-dev/knit/internal/engine"
)

// BuildResult is the ADD result of attachment a on network n, in the
// newest spec version: the host end of the veth (no sandbox), the
// container's interface (sandbox CNI_NETNS), each address with its
// subnet's gateway on the container's interface, the default routes when
// the attachment has them, and dns.
func BuildResult(a *engine.CNIAttachment, n *engine.Network, hostMAC net.HardwareAddr, dns types.DNS) *types100.Result {
	r := &types100.Result{CNIVersion: types100.ImplementedSpecVersion, DNS: dns}
	host := &types100.Interface{Name: a.Endpoint.HostIf}
	if hostMAC != nil {
		host.Mac = hostMAC.String()
	}
	ctr := &types100.Interface{Name: a.IfName, Sandbox: a.Netns}
	if a.Endpoint.MAC != nil {
		ctr.Mac = a.Endpoint.MAC.String()
	}
	r.Interfaces = []*types100.Interface{host, ctr}
	for _, p := range a.Endpoint.Addrs {
		ip := &types100.IPConfig{Interface: types100.Int(1), Address: ipNet(p)}
		for _, s := range n.Subnets {
			if s.Prefix.Contains(p.Addr()) && s.Gateway.IsValid() {
				ip.Gateway = net.IP(s.Gateway.AsSlice())
			}
		}
		r.IPs = append(r.IPs, ip)
	}
	if a.Endpoint.DefaultRoute {
		for _, gw := range a.Endpoint.Gateways {
			dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if gw.Is6() {
				dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			r.Routes = append(r.Routes, &types.Route{Dst: ipNet(dst), GW: net.IP(gw.AsSlice())})
		}
	}
	return r
}

// ipNet converts a prefix, keeping its host bits ("10.1.0.2/24").
func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// ResultDNS is the result's dns: the embedded DNS server (the network's
// gateway) when the network has one, else the servers the runtime or the
// configuration name; search domains and options from the dns capability,
// else from the configuration's dns.
func (c *NetConf) ResultDNS(n *engine.Network) types.DNS {
	rt := c.RuntimeConfig.DNS
	d := types.DNS{
		Domain:  c.DNS.Domain,
		Search:  firstNonEmptyList(rt.Searches, rt.Search, c.DNS.Search),
		Options: firstNonEmptyList(rt.Options, c.DNS.Options),
	}
	if gw, ok := dnsServer(n); ok {
		d.Nameservers = []string{gw.String()}
	} else {
		d.Nameservers = firstNonEmptyList(rt.Servers, rt.Nameservers, c.DNS.Nameservers)
	}
	return d
}

// dnsServer is where knit's embedded DNS server answers on n: its IPv4
// gateway, else its IPv6 one.
func dnsServer(n *engine.Network) (netip.Addr, bool) {
	if !n.DNS {
		return netip.Addr{}, false
	}
	var best netip.Addr
	for _, s := range n.Subnets {
		if s.Gateway.IsValid() && (!best.IsValid() || s.Gateway.Is4() && best.Is6()) {
			best = s.Gateway
		}
	}
	return best, best.IsValid()
}

func firstNonEmptyList(lists ...[]string) []string {
	for _, l := range lists {
		if len(l) > 0 {
			return l
		}
	}
	return nil
}

// ParsePrevResult decodes a chained prevResult of config version v and
// converts it to the newest version. A prevResult without cniVersion (as
// before 1.0.0) is taken to be of v.
func ParsePrevResult(raw json.RawMessage, v string) (*types100.Result, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, newError(CodeDecodingFailure, "cannot decode prevResult", err.Error())
	}
	// The library's types take a null entry for a nil pointer, which its
	// version conversions and knit's merge and CHECK would dereference.
	for _, list := range []string{"interfaces", "ips", "routes"} {
		var entries []json.RawMessage
		if json.Unmarshal(fields[list], &entries) != nil {
			continue // not a list: the decoding below says what is wrong
		}
		for i, e := range entries {
			if bytes.Equal(bytes.TrimSpace(e), []byte("null")) {
				return nil, newError(CodeDecodingFailure, "cannot decode prevResult", fmt.Sprintf("%s[%d] is null", list, i))
			}
		}
	}
	if _, ok := fields["cniVersion"]; !ok {
		fields["cniVersion"], _ = json.Marshal(v)
		raw, _ = json.Marshal(fields)
	}
	res, err := version.NewResult(v, raw)
	if err == nil {
		var r *types100.Result
		if r, err = types100.GetResult(res); err == nil {
			return r, nil
		}
	}
	return nil, newError(CodeDecodingFailure, "cannot decode prevResult", err.Error())
}

// Merge returns prev with r appended: knit placed after another plugin
// keeps what that plugin made. r's interface indexes are shifted past
// prev's interfaces; dns lists are joined without repeats.
func Merge(prev, r *types100.Result) *types100.Result {
	out := &types100.Result{CNIVersion: types100.ImplementedSpecVersion}
	out.Interfaces = append(slices.Clone(prev.Interfaces), r.Interfaces...)
	out.IPs = slices.Clone(prev.IPs)
	for _, ip := range r.IPs {
		c := ip.Copy()
		if c.Interface != nil {
			*c.Interface += len(prev.Interfaces)
		}
		out.IPs = append(out.IPs, c)
	}
	out.Routes = append(slices.Clone(prev.Routes), r.Routes...)
	out.DNS = types.DNS{
		Nameservers: union(prev.DNS.Nameservers, r.DNS.Nameservers),
		Domain:      firstNonEmpty(prev.DNS.Domain, r.DNS.Domain),
		Search:      union(prev.DNS.Search, r.DNS.Search),
		Options:     union(prev.DNS.Options, r.DNS.Options),
	}
	return out
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// WriteResult converts r to version v and prints it.
func WriteResult(w io.Writer, r *types100.Result, v string) *Error {
	conv, err := r.GetAsVersion(v)
	if err != nil {
		return newError(CodeKnitFailed, "cannot convert the result", "to version %s: %v", v, err)
	}
	if err := conv.PrintTo(w); err != nil {
		return newError(CodeIOFailure, "cannot write the result", err.Error())
	}
	return nil
}

// checkPrevResult lists how prev (the runtime's cached result, given to
// CHECK) disagrees with knit's record: the container interface and each of
// its addresses must be there. A later plugin may have changed the MAC or
// added routes, so neither is compared.
func checkPrevResult(prev *types100.Result, a *engine.CNIAttachment) []string {
	idx := slices.IndexFunc(prev.Interfaces, func(i *types100.Interface) bool {
		return i.Name == a.IfName && i.Sandbox == a.Netns
	})
	if idx < 0 {
		return []string{fmt.Sprintf("prevResult lists no interface %s in %s", a.IfName, a.Netns)}
	}
	var diffs []string
	for _, p := range a.Endpoint.Addrs {
		want := ipNet(p)
		if !slices.ContainsFunc(prev.IPs, func(ip *types100.IPConfig) bool {
			return ip.Address.String() == want.String() && ip.Interface != nil && *ip.Interface == idx
		}) {
			diffs = append(diffs, fmt.Sprintf("prevResult lacks address %s on %s", p, a.IfName))
		}
	}
	return diffs
}

package cni

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-dev/knit/internal/engine"
)

// Versions are the spec versions knit speaks, oldest first.
var Versions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// BaseConf is the part of the configuration every command needs. DEL and
// GC decode only this (and GC its valid attachments), so that they work
// whatever else the runtime sends.
type BaseConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	// Network names the knit network; "" means Name.
	Network string `json:"network"`
	// DataRoot and ExecRoot are where knit keeps its state; "" means
	// KNIT_DATA_ROOT and KNIT_EXEC_ROOT, else the CLI's defaults.
	DataRoot string `json:"dataRoot"`
	ExecRoot string `json:"execRoot"`
}

// NetworkName is the knit network the configuration names.
func (c *BaseConf) NetworkName() string {
	if c.Network != "" {
		return c.Network
	}
	return c.Name
}

// NetConf is knit's plugin configuration: one entry of a conflist's
// "plugins" as the runtime passes it (name and cniVersion copied from the
// list, runtimeConfig and prevResult filled in).
type NetConf struct {
	BaseConf
	// The network's settings, used when ADD creates it on first use.
	Subnet   string `json:"subnet"`
	Gateway  string `json:"gateway"`
	IPRange  string `json:"ipRange"`
	IPv6     bool   `json:"ipv6"`
	IPv4     *bool  `json:"ipv4"` // false: an IPv6-only network; nil means true
	Subnet6  string `json:"subnet6"`
	Gateway6 string `json:"gateway6"`
	IPRange6 string `json:"ipRange6"`
	Bridge   string `json:"bridge"`
	MTU      int    `json:"mtu"`
	IPMasq   *bool  `json:"ipMasq"`
	ICC      *bool  `json:"icc"`
	// IsDefaultGateway installs default routes through the network; nil
	// means true.
	IsDefaultGateway *bool `json:"isDefaultGateway"`
	// The bridge plugin's keys for what knit's bridge always does (its
	// ports hairpin, for published ports reached from their own
	// container; it holds the gateway) or never does (VLANs, a promiscuous
	// bridge): accepted when they ask for that, refused (code 2) when not.
	HairpinMode *bool           `json:"hairpinMode"`
	IsGateway   *bool           `json:"isGateway"`
	VLAN        int             `json:"vlan"`
	VLANTrunk   json.RawMessage `json:"vlanTrunk"`
	PromiscMode bool            `json:"promiscMode"`

	Capabilities  map[string]bool `json:"capabilities"`
	IPAM          json.RawMessage `json:"ipam"`
	DNS           types.DNS       `json:"dns"`
	RuntimeConfig RuntimeConfig   `json:"runtimeConfig"`
	// Args is the conventions' "args"; knit reads args.cni.ips and
	// ignores the rest, whatever its shape.
	Args       json.RawMessage `json:"args"`
	PrevResult json.RawMessage `json:"prevResult"`
}

// RuntimeConfig holds the capability arguments knit understands.
type RuntimeConfig struct {
	PortMappings []PortMapping `json:"portMappings"`
	IPs          []string      `json:"ips"`
	MAC          string        `json:"mac"`
	DNS          RuntimeDNS    `json:"dns"`
	// Aliases is a list of names, or Podman's map from network name to
	// names.
	Aliases   json.RawMessage   `json:"aliases"`
	Bandwidth *engine.Bandwidth `json:"bandwidth"`
}

// PortMapping is one entry of the portMappings capability.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP"`
}

// RuntimeDNS is the dns capability. The conventions name its lists
// servers and searches; the result's names are accepted too.
type RuntimeDNS struct {
	Servers     []string `json:"servers"`
	Nameservers []string `json:"nameservers"`
	Searches    []string `json:"searches"`
	Search      []string `json:"search"`
	Options     []string `json:"options"`
}

// decode unmarshals the configuration into v (code 6 when it cannot) and
// checks the version and the name every command needs.
func decode(data []byte, v any, base *BaseConf) *Error {
	if err := json.Unmarshal(data, v); err != nil {
		return newError(CodeDecodingFailure, "cannot decode the network configuration", err.Error())
	}
	if err := checkVersion(base.CNIVersion); err != nil {
		return err
	}
	if base.Name == "" {
		return newError(CodeInvalidConfig, "invalid network configuration", `missing "name"`)
	}
	return nil
}

// ParseBase decodes what DEL needs of the configuration.
func ParseBase(data []byte) (*BaseConf, *Error) {
	var c BaseConf
	if err := decode(data, &c, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// ParseConfig decodes and checks the whole plugin configuration.
func ParseConfig(data []byte) (*NetConf, *Error) {
	var c NetConf
	if err := decode(data, &c, &c.BaseConf); err != nil {
		return nil, err
	}
	if ipam := bytes.TrimSpace(c.IPAM); len(ipam) > 0 && !bytes.Equal(ipam, []byte("null")) {
		var section struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(ipam, &section) != nil || section.Type != "" {
			return nil, newError(CodeUnsupportedField, "unsupported field ipam", "ipam=%s: knit allocates addresses from the knit network itself; remove the ipam section", ipam)
		}
	}
	return &c, nil
}

// Unsupported refuses (code 2) the bridge plugin's keys that ask for what
// knit's bridges never do. ADD and STATUS ask; CHECK, DEL and GC do not,
// so that attachments made before knit refused them are still checked
// and removed.
func (c *NetConf) Unsupported() *Error {
	trunk := bytes.TrimSpace(c.VLANTrunk)
	for _, f := range []struct {
		bad      bool
		key, why string
	}{
		{c.HairpinMode != nil && !*c.HairpinMode, "hairpinMode", "false: knit's bridge ports always hairpin (a container reaches its own published ports through it)"},
		{c.IsGateway != nil && !*c.IsGateway, "isGateway", "false: knit's bridge always holds the network's gateway"},
		{c.VLAN != 0, "vlan", strconv.Itoa(c.VLAN) + ": knit's bridges do not filter VLANs"},
		{len(trunk) > 0 && !bytes.Equal(trunk, []byte("null")) && !bytes.Equal(trunk, []byte("[]")), "vlanTrunk", "knit's bridges do not filter VLANs"},
		{c.PromiscMode, "promiscMode", "true: knit does not put its bridges in promiscuous mode"},
	} {
		if f.bad {
			return newError(CodeUnsupportedField, "unsupported field "+f.key, "%s %s", f.key, f.why)
		}
	}
	return nil
}

// checkVersion refuses versions knit does not speak.
func checkVersion(v string) *Error {
	if !slices.Contains(Versions, v) {
		return newError(CodeIncompatibleVersion, "incompatible CNI version",
			"config cniVersion %q; knit supports %v", v, Versions)
	}
	return nil
}

// versionAtLeast reports whether v (one of Versions) is min or later.
func versionAtLeast(v, min string) bool {
	return slices.Index(Versions, v) >= slices.Index(Versions, min)
}

func invalid(details string, args ...any) *Error {
	return newError(CodeInvalidConfig, "invalid network configuration", details, args...)
}

// NetworkOptions is the network ADD creates when it does not exist yet.
func (c *NetConf) NetworkOptions() (engine.NetworkCreateOptions, *Error) {
	o := engine.NetworkCreateOptions{Name: c.NetworkName(), IPv6: c.IPv6, Options: map[string]string{}}
	if c.IPv4 != nil { // given: checked against an existing network too (networkMismatch)
		o.Options["ipv4"] = strconv.FormatBool(*c.IPv4)
	}
	for _, f := range []struct{ key, subnet, gateway, ipRange string }{
		{"", c.Subnet, c.Gateway, c.IPRange},
		{"6", c.Subnet6, c.Gateway6, c.IPRange6},
	} {
		if f.subnet != "" {
			p, err := netip.ParsePrefix(f.subnet)
			if err != nil {
				return o, invalid("subnet%s %q: %v", f.key, f.subnet, err)
			}
			o.Subnets = append(o.Subnets, p)
		}
		if f.gateway != "" {
			a, err := netip.ParseAddr(f.gateway)
			if err != nil {
				return o, invalid("gateway%s %q: %v", f.key, f.gateway, err)
			}
			o.Gateways = append(o.Gateways, a)
		}
		if f.ipRange != "" {
			p, err := netip.ParsePrefix(f.ipRange)
			if err != nil {
				return o, invalid("ipRange%s %q: %v", f.key, f.ipRange, err)
			}
			o.IPRanges = append(o.IPRanges, p)
		}
	}
	if c.Bridge != "" {
		o.Options["bridge"] = c.Bridge
	}
	if c.MTU != 0 {
		o.Options["mtu"] = strconv.Itoa(c.MTU)
	}
	if c.ICC != nil {
		o.Options["icc"] = strconv.FormatBool(*c.ICC)
	}
	if c.IPMasq != nil {
		o.Options["ip-masq"] = strconv.FormatBool(*c.IPMasq)
	}
	return o, nil
}

package cni

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"strings"

	"github.com/knit-dev/knit/internal/engine"
)

// Invocation is the runtime's environment for one command.
type Invocation struct {
	Command     string // CNI_COMMAND
	ContainerID string // CNI_CONTAINERID
	IfName      string // CNI_IFNAME
	Netns       string // CNI_NETNS
	Args        string // CNI_ARGS
}

// Request turns an ADD into the engine's request. Requested addresses come
// from runtimeConfig.ips, else args.cni.ips, else CNI_ARGS IP (the
// conventions' order); the MAC from runtimeConfig.mac, else CNI_ARGS MAC.
func (c *NetConf) Request(inv Invocation, args *Args) (engine.CNIRequest, *Error) {
	req := engine.CNIRequest{
		Config:      c.Name,
		ContainerID: inv.ContainerID, IfName: inv.IfName, Netns: inv.Netns,
		DefaultRoute: c.IsDefaultGateway == nil || *c.IsDefaultGateway,
		Name:         args.PodName,
	}
	var err *Error
	if req.Network, err = c.NetworkOptions(); err != nil {
		return req, err
	}
	ips := c.RuntimeConfig.IPs
	if len(ips) == 0 {
		ips = c.argsIPs()
	}
	if len(ips) == 0 {
		ips = args.IPs
	}
	if req.IPs, err = parseIPs(ips); err != nil {
		return req, err
	}
	if mac := firstNonEmpty(c.RuntimeConfig.MAC, args.MAC); mac != "" {
		hw, perr := net.ParseMAC(mac)
		if perr != nil || len(hw) != 6 {
			return req, invalid("mac %q: want an Ethernet address like 02:42:ac:11:00:02", mac)
		}
		if !engine.UnicastMAC(hw) {
			return req, invalid("mac %s: must be a unicast Ethernet address", mac)
		}
		req.MAC = hw
	}
	if req.Ports, err = parsePorts(c.RuntimeConfig.PortMappings); err != nil {
		return req, err
	}
	if req.Aliases, err = c.aliases(); err != nil {
		return req, err
	}
	if b := c.RuntimeConfig.Bandwidth; b != nil && *b != (engine.Bandwidth{}) {
		req.Bandwidth = b
	}
	return req, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// argsIPs reads args.cni.ips, ignoring args of any other shape.
func (c *NetConf) argsIPs() []string {
	var args struct {
		CNI struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	}
	if json.Unmarshal(c.Args, &args) != nil {
		return nil
	}
	return args.CNI.IPs
}

// parseIPs accepts addresses with or without a prefix length, at most one
// per family (a knit network has one subnet per family).
func parseIPs(ips []string) ([]netip.Addr, *Error) {
	var out []netip.Addr
	for _, s := range ips {
		s = strings.TrimSpace(s)
		a, err := netip.ParseAddr(s)
		if err != nil {
			p, perr := netip.ParsePrefix(s)
			if perr != nil {
				return nil, invalid("ips: %q is not an address or address/prefix", s)
			}
			a = p.Addr()
		}
		a = a.Unmap() // ::ffff:10.0.0.1 is an IPv4 address
		for _, b := range out {
			if b.Is4() == a.Is4() {
				return nil, invalid("ips: %s and %s: at most one address per family", b, a)
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func parsePorts(pms []PortMapping) ([]engine.CNIPort, *Error) {
	var out []engine.CNIPort
	for _, pm := range pms {
		p := engine.CNIPort{Proto: strings.ToLower(pm.Protocol)}
		if p.Proto == "" {
			p.Proto = "tcp"
		}
		if p.Proto != "tcp" && p.Proto != "udp" && p.Proto != "sctp" {
			return nil, invalid("portMappings: protocol %q: want tcp, udp or sctp", pm.Protocol)
		}
		if pm.HostPort < 1 || pm.HostPort > 65535 || pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
			return nil, invalid("portMappings: hostPort %d, containerPort %d: want ports from 1 to 65535", pm.HostPort, pm.ContainerPort)
		}
		p.HostPort, p.ContainerPort = uint16(pm.HostPort), uint16(pm.ContainerPort)
		if pm.HostIP != "" {
			a, err := netip.ParseAddr(pm.HostIP)
			if err != nil {
				return nil, invalid("portMappings: hostIP %q is not an address", pm.HostIP)
			}
			p.HostIP = a.Unmap()
		}
		out = append(out, p)
	}
	return out, nil
}

// aliases reads the aliases capability: a list, or Podman's map keyed by
// network name, where the entry of this configuration's name (or knit
// network's) applies.
func (c *NetConf) aliases() ([]string, *Error) {
	raw := bytes.TrimSpace(c.RuntimeConfig.Aliases)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list, nil
	}
	var byNet map[string][]string
	if err := json.Unmarshal(raw, &byNet); err != nil {
		return nil, newError(CodeDecodingFailure, "cannot decode runtimeConfig.aliases", "want a list of names or a map from network name to names: %v", err)
	}
	if names, ok := byNet[c.Name]; ok {
		return names, nil
	}
	return byNet[c.NetworkName()], nil
}

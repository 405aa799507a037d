// Package driver defines what a network driver does and the data it is given.
//
// A driver owns the host-side objects of a network (a bridge, a parent link, a
// VXLAN device) and the link that puts one endpoint into one sandbox. It does
// not allocate addresses, write firewall rules or touch the store: the engine
// hands it fully decided Network and Endpoint values. Every method is
// all-or-nothing: on error it undoes what it did before returning.
//
// The modes none, host and container:NAME are not drivers: they only choose
// which network namespace a container gets, and the engine does that.
package driver

import (
	"net"
	"net/netip"
	"slices"

	"github.com/knit-dev/knit/internal/ipam"
	"github.com/knit-dev/knit/internal/link"
)

// Subnet is one address family's range of a network and its gateway.
type Subnet struct {
	Prefix  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
	// IPRange restricts dynamic allocation; zero means the whole Prefix.
	IPRange netip.Prefix `json:"ipRange,omitzero"`
	// DefaultRoute, when set, is the containers' default gateway instead
	// of Gateway, which stays the bridge's address (dockerd's
	// --default-gateway).
	DefaultRoute netip.Addr `json:"defaultRoute,omitzero"`
	// Aux are addresses never handed out (--aux-address: a router's, a
	// host's already on the wire), by name.
	Aux map[string]netip.Addr `json:"aux,omitempty"`
}

// Router is the containers' default gateway on s: DefaultRoute if set,
// else Gateway.
func (s Subnet) Router() netip.Addr {
	if s.DefaultRoute.IsValid() {
		return s.DefaultRoute
	}
	return s.Gateway
}

// Reserved says whether a is one of s's aux addresses or its containers'
// default gateway: addresses taken, though by no container.
func (s Subnet) Reserved(a netip.Addr) bool {
	if a == s.DefaultRoute {
		return true
	}
	for _, x := range s.Aux {
		if x == a {
			return true
		}
	}
	return false
}

// Network is what a driver needs to know about a network.
type Network struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Driver  string   `json:"driver"`
	Bridge  string   `json:"bridge"`  // kernel bridge name (bridge driver)
	MTU     int      `json:"mtu"`     // 0 means 1500
	Subnets []Subnet `json:"subnets"` // at most one per family
	// External is true when the bridge was made by the administrator (config
	// "bridge"): knit uses it but never creates or deletes it.
	External bool `json:"external,omitempty"`
	// GatewaysAdded are the gateway addresses an External bridge lacked
	// when the network was created: knit adds them, and DeleteNetwork
	// takes them away again, leaving the administrator's own. Records
	// made before 2026-11-30 have none, and leave their gateways.
	GatewaysAdded []netip.Prefix `json:"gatewaysAdded,omitempty"`
	Internal      bool           `json:"internal,omitempty"`
	// Options holds driver options as given by the user (-o KEY=VALUE).
	Options map[string]string `json:"options,omitempty"`
	// FilterBridged: what the bridge switches between its ports must pass
	// the forward hook (br_netfilter), where ICC=false is enforced. Set by
	// the engine from its record; never stored.
	FilterBridged bool `json:"-"`
	// LinkIndex is the kernel's index of the network's link (the bridge)
	// as CreateNetwork found or made it in this process, 0 when unknown:
	// Join then needs no lookup. Never stored: an index dies with its link.
	LinkIndex int `json:"-"`
}

// HasIPv4 reports whether n has an IPv4 subnet: every network but one
// made with --ipv4=false (Docker's EnableIPv4), and host and none.
func (n *Network) HasIPv4() bool {
	return slices.ContainsFunc(n.Subnets, func(s Subnet) bool { return s.Prefix.Addr().Is4() })
}

// HasIPv6 reports whether n has an IPv6 subnet.
func (n *Network) HasIPv6() bool {
	return slices.ContainsFunc(n.Subnets, func(s Subnet) bool { return s.Prefix.Addr().Is6() })
}

// LinkMTU is the MTU of n's links: MTU, or 1500 when it names none.
func (n *Network) LinkMTU() int {
	if n.MTU == 0 {
		return 1500
	}
	return n.MTU
}

// Endpoint is one container's attachment to one network.
type Endpoint struct {
	ContainerID string           `json:"containerId"`
	IfName      string           `json:"ifName"`           // name inside the sandbox, e.g. eth0
	HostIf      string           `json:"hostIf,omitempty"` // host-side link name, set by Join
	MAC         net.HardwareAddr `json:"mac"`
	Addrs       []netip.Prefix   `json:"addrs"` // container addresses with the subnet's prefix length
	// Gateways are installed as default routes when DefaultRoute is true.
	Gateways     []netip.Addr `json:"gateways,omitempty"`
	DefaultRoute bool         `json:"defaultRoute,omitempty"`
}

// Unforeseen returns the addresses of the endpoint whose MAC is not the
// one ipam.MAC derives from them (ipam.FollowsMAC): on a dual-stack
// network the IPv6 ones (the MAC follows the IPv4 address), and all of
// them with a MAC of the user's or the runtime's. A neighbour that knew
// one under its last holder still has that holder's MAC.
func (ep *Endpoint) Unforeseen() []netip.Addr {
	var out []netip.Addr
	for _, p := range ep.Addrs {
		if !ipam.FollowsMAC(p.Addr(), ep.MAC) {
			out = append(out, p.Addr())
		}
	}
	return out
}

// HasIPv4 reports whether the endpoint has an IPv4 address: not on an
// IPv6-only network.
func (e *Endpoint) HasIPv4() bool {
	return slices.ContainsFunc(e.Addrs, func(a netip.Prefix) bool { return a.Addr().Is4() })
}

// HasIPv6 reports whether the endpoint has an IPv6 address.
func (e *Endpoint) HasIPv6() bool {
	return slices.ContainsFunc(e.Addrs, func(a netip.Prefix) bool { return a.Addr().Is6() })
}

// Sandbox is the network namespace an endpoint is placed in.
type Sandbox struct {
	NetnsPath string // a bind-mounted namespace file, e.g. /run/knit/netns/ID
	// Link, when not nil, is a netlink handle already bound to the
	// namespace; drivers use it instead of opening their own, which saves a
	// namespace switch.
	Link *link.Handle
}

// LeaveOptions tunes Leave.
type LeaveOptions struct {
	// SandboxGone is true when the namespace has been (or is being) deleted:
	// the kernel destroys links inside it by itself, so the driver must not
	// spend a synchronous delete on them.
	SandboxGone bool
}

// Driver creates networks and connects sandboxes to them.
type Driver interface {
	// CreateNetwork makes (or repairs) the host-side objects of n. Idempotent.
	CreateNetwork(n *Network) error
	// DeleteNetwork removes what CreateNetwork made. Idempotent. An
	// External network's link is the administrator's and stays: only what
	// knit added to it (GatewaysAdded) goes.
	DeleteNetwork(n *Network) error
	// Join creates ep's link in sb, configured and up, and records the
	// host-side link name in ep.HostIf.
	Join(n *Network, ep *Endpoint, sb Sandbox) error
	// Leave removes ep's link. Idempotent.
	Leave(n *Network, ep *Endpoint, sb Sandbox, opt LeaveOptions) error
	// Strays lists host-side links of n that keep rejects, so that a prune
	// can remove links whose owner is gone. keep is given the link's name and
	// the container ID the driver tagged it with ("" if untagged).
	Strays(n *Network, keep func(hostIf, containerID string) bool) ([]string, error)
	// RemoveLink deletes one host-side link by name (used by prune).
	RemoveLink(name string) error
	// PortName is the host-side link name Join gives ep unless another
	// link holds it ("" for a driver that makes none): what a teardown
	// keys on when no record kept the name Join chose.
	PortName(ep *Endpoint) string
}

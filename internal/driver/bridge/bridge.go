// Package bridge is the Linux-bridge network driver: a network is a bridge
// in the host namespace holding each subnet's gateway address, and an
// endpoint is a veth pair with one end on that bridge and the other, already
// under its final name, in the sandbox.
//
// Invariants:
//   - Host-side objects are made in the calling thread's namespace (the
//     host's); sandbox objects only through a handle opened in the sandbox.
//   - Host-side veth names are "veth" and 7 random hex digits; their alias is
//     "knit:" and the container ID, so an operator can tell who owns one.
//   - Every method undoes its own partial work on error; nothing here
//     remembers state between calls (idle netlink handles are kept for
//     reuse, which is not state).
//   - An External bridge belongs to the administrator: it is used (and given
//     the gateway addresses) but never created or deleted; the addresses
//     it was given go with the network.
package bridge

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/link"
)

const aliasPrefix = "knit:" // host-side veth alias: aliasPrefix + container ID

// Driver implements driver.Driver with Linux bridges.
type Driver struct {
	handles link.Pool // netlink handles on the host's namespace, reused
}

var _ driver.Driver = (*Driver)(nil)

// New returns the bridge driver.
func New() *Driver { return &Driver{} }

// CreateNetwork ensures the bridge exists and is up with every subnet's
// gateway address; run again, it repairs a missing bridge or address.
func (d *Driver) CreateNetwork(n *driver.Network) (err error) {
	if n.Bridge == "" {
		return errdefs.Invalid("network %s: no bridge name", n.Name)
	}
	h, err := d.handles.Host()
	if err != nil {
		return fmt.Errorf("create network %s: %w", n.Name, err)
	}
	defer d.handles.Put(h)
	br, created, err := ensureBridge(h, n)
	if err != nil {
		return fmt.Errorf("create network %s: %w", n.Name, err)
	}
	idx := br.Index
	if created {
		defer func() {
			if err != nil {
				_ = h.LinkDel(n.Bridge)
			}
		}()
	}
	// A host's all.disable_ipv6=1 leaves a new bridge without IPv6: an
	// IPv6 network's gateway needs it, as Docker's bridge driver sets.
	if n.HasIPv6() {
		if err := link.EnableIPv6(n.Bridge); err != nil {
			return fmt.Errorf("create network %s: %w", n.Name, err)
		}
	}
	for _, s := range n.Subnets {
		if !s.Gateway.IsValid() {
			continue
		}
		if err := h.AddrEnsure(idx, netip.PrefixFrom(s.Gateway, s.Prefix.Bits())); err != nil {
			return fmt.Errorf("create network %s: %w", n.Name, err)
		}
	}
	// Every run ensures its network: a bridge found up is not set up
	// again (a request under rtnl, and a notification to every listener).
	if !br.Up {
		if err := h.LinkSetUp(idx); err != nil {
			return fmt.Errorf("create network %s: %w", n.Name, err)
		}
	}
	// Published ports on 127.0.0.1 and policy between the bridge's ports
	// need these; both are settings of the namespace the bridge is in.
	if err := link.SetRouteLocalnet(n.Bridge); err != nil {
		return fmt.Errorf("create network %s: %w", n.Name, err)
	}
	// Not on an administrator's bridge, which may be the host's uplink
	// and live on router advertisements.
	if !n.External {
		if err := link.NoRouterAdverts(n.Bridge); err != nil {
			return fmt.Errorf("create network %s: %w", n.Name, err)
		}
	}
	// Without ICC, what the bridge switches between two containers must
	// meet the network's drop in the forward hook: br_netfilter, on this
	// bridge only (Docker's too since 27.3). With ICC nothing needs it.
	// On every ensure (only icc=false networks pay the request): a bridge
	// made by a knit killed before this line has it set by the next.
	if n.FilterBridged {
		if !link.BridgeNetfilterLoaded() {
			return fmt.Errorf("create network %s: icc=false needs the br_netfilter module (modprobe br_netfilter)", n.Name)
		}
		if err := link.SetBridgeNetfilter(idx); err != nil {
			return fmt.Errorf("create network %s: %w", n.Name, err)
		}
	}
	n.LinkIndex = idx
	return nil
}

// ensureBridge returns n's bridge, creating it (up) unless it is External.
func ensureBridge(h *link.Handle, n *driver.Network) (br link.Link, created bool, err error) {
	br, err = h.BridgeGet(n.Bridge)
	switch {
	case !link.IsNotFound(err):
		return br, false, err
	case n.External:
		return br, false, errdefs.NotFound("external bridge %s does not exist: create it first", n.Bridge)
	}
	idx, created, err := h.BridgeEnsure(n.Bridge, n.LinkMTU())
	// A bridge this call made is up; one another process made meanwhile
	// may not be yet.
	return link.Link{Index: idx, Name: n.Bridge, Kind: "bridge", Up: created}, created, err
}

// DeleteNetwork deletes the bridge, or of an External one the gateway
// addresses it was given (n.GatewaysAdded). Idempotent.
func (d *Driver) DeleteNetwork(n *driver.Network) error {
	if n.External && len(n.GatewaysAdded) == 0 {
		return nil
	}
	h, err := d.handles.Host()
	if err != nil {
		return fmt.Errorf("delete network %s: %w", n.Name, err)
	}
	defer d.handles.Put(h)
	if n.External {
		return deleteGateways(h, n)
	}
	// Checking the kind keeps a same-named link of another kind alive:
	// not the network's, so there is nothing of it to delete.
	_, err = h.BridgeGet(n.Bridge)
	if err == nil {
		err = h.LinkDel(n.Bridge)
	}
	if err != nil && !link.IsNotFound(err) && errdefs.KindOf(err) != errdefs.KindConflict {
		return fmt.Errorf("delete network %s: %w", n.Name, err)
	}
	return nil
}

// deleteGateways takes from n's External bridge the gateway addresses
// knit gave it; a bridge gone already is success. An IPv4 address the
// administrator added since in the subnet of one of them may be its
// secondary, which the kernel deletes with its primary: the bridge then
// promotes secondaries while knit's addresses go, so that only they go.
//
// Equivalent to: [sysctl -w net.ipv4.conf.BR.promote_secondaries=1 &&]
// ip addr del GW dev BR ... [&& sysctl -w ...promote_secondaries=0]
func deleteGateways(h *link.Handle, n *driver.Network) (err error) {
	br, err := h.BridgeGet(n.Bridge)
	if link.IsNotFound(err) || errdefs.KindOf(err) == errdefs.KindConflict {
		return nil // gone, or no longer a bridge: not the network's
	}
	if err != nil {
		return fmt.Errorf("delete network %s: %w", n.Name, err)
	}
	have, err := h.AddrList(br.Index)
	if err != nil {
		return fmt.Errorf("delete network %s: %w", n.Name, err)
	}
	if sharesSubnet(n.GatewaysAdded, have) {
		restore, err := link.PromoteSecondaries(br.Name)
		if err != nil {
			return fmt.Errorf("delete network %s: %w", n.Name, err)
		}
		if restore != nil {
			defer func() { err = errors.Join(err, restore()) }()
		}
	}
	for _, p := range n.GatewaysAdded {
		if err := h.AddrDel(br.Index, p); err != nil {
			return fmt.Errorf("delete network %s: %w", n.Name, err)
		}
	}
	return nil
}

// sharesSubnet reports whether an IPv4 address in have, not in gws, has
// the prefix of one in gws: the kernel's test for a secondary address.
func sharesSubnet(gws, have []netip.Prefix) bool {
	for _, g := range gws {
		for _, a := range have {
			if g.Addr().Is4() && a.Addr().Is4() && a.Bits() == g.Bits() && a.Masked() == g.Masked() && !slices.Contains(gws, a) {
				return true
			}
		}
	}
	return false
}

// Strays lists knit's veths on n's bridge that keep rejects, giving keep the
// container ID from the veth's "knit:" alias.
func (d *Driver) Strays(n *driver.Network, keep func(hostIf, containerID string) bool) ([]string, error) {
	h, err := d.handles.Host()
	if err != nil {
		return nil, fmt.Errorf("strays of %s: %w", n.Name, err)
	}
	defer d.handles.Put(h)
	br, err := h.BridgeGet(n.Bridge)
	if link.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("strays of %s: %w", n.Name, err)
	}
	ports, err := h.BridgePorts(br.Index)
	if err != nil {
		return nil, fmt.Errorf("strays of %s: %w", n.Name, err)
	}
	var strays []string
	for _, p := range ports {
		// knit names a veth's container before the veth joins the bridge;
		// any other port is someone else's (a veth attached by hand).
		id, ours := strings.CutPrefix(p.Alias, aliasPrefix)
		if ours && p.Kind == "veth" && !keep(p.Name, id) {
			strays = append(strays, p.Name)
		}
	}
	return strays, nil
}

// RemoveLink deletes a host-side link by name; a missing one is success.
func (d *Driver) RemoveLink(name string) error {
	h, err := d.handles.Host()
	if err != nil {
		return fmt.Errorf("remove link %s: %w", name, err)
	}
	defer d.handles.Put(h)
	if err := h.LinkDel(name); err != nil && !link.IsNotFound(err) {
		return fmt.Errorf("remove link %s: %w", name, err)
	}
	return nil
}

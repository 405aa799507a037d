package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
)

// nameAttempts bounds retries when a random veth name is taken: with 2^28
// names a second collision means something else is wrong.
const nameAttempts = 4

// Join creates ep's veth: the host end on n's bridge, the peer named
// ep.IfName in sb with ep's MAC, addresses and default routes, both up. The
// host end joins the bridge last (link.Veth.AttachLater): the bridge then
// activates the port in the background instead of under the peer's route
// add.
// It costs one host handle, one sandbox handle and no lookups of what the
// endpoint already says; on error the veth is deleted.
func (d *Driver) Join(n *driver.Network, ep *driver.Endpoint, sb driver.Sandbox) (err error) {
	h, err := d.handles.Host()
	if err != nil {
		return fmt.Errorf("join %s to %s: %w", ep.ContainerID, n.Name, err)
	}
	defer d.handles.Put(h)
	brIndex := n.LinkIndex // CreateNetwork's, in this run
	if brIndex == 0 {
		br, err := h.BridgeGet(n.Bridge)
		if err != nil {
			return fmt.Errorf("join %s to %s: %w", ep.ContainerID, n.Name, err)
		}
		brIndex = br.Index
	}
	v := link.Veth{
		Alias:       aliasPrefix + ep.ContainerID,
		MasterIndex: brIndex,
		Hairpin:     true,
		MTU:         n.LinkMTU(),
		Group:       firewall.PortGroup, // the firewall's mark of a container's port
		PeerName:    ep.IfName,
		PeerMAC:     ep.MAC,
		PeerNetns:   sb.NetnsPath,
		AttachLater: true, // once the peer has its address and routes
	}
	name, index, err := addVeth(h, ep, v)
	if err != nil {
		return fmt.Errorf("join %s to %s: %w", ep.ContainerID, n.Name, err)
	}
	defer func() {
		if err != nil {
			// Deleting the host end takes the peer with it.
			_ = h.LinkDel(name)
		}
	}()
	if err := configureSandbox(ep, sb); err != nil {
		return fmt.Errorf("join %s to %s: %w", ep.ContainerID, n.Name, err)
	}
	v.Name = name
	err = h.VethAttach(index, v)
	if err != nil && n.LinkIndex != 0 {
		// The index came from the ensure: if the bridge was made again
		// since, try once more with the new one.
		if br, gerr := h.BridgeGet(n.Bridge); gerr == nil && br.Index != v.MasterIndex {
			v.MasterIndex = br.Index
			err = h.VethAttach(index, v)
		}
	}
	if errors.Is(err, unix.EXFULL) {
		return errdefs.Conflict("network %s is full: bridge %s already has the most ports a Linux bridge can hold (1023); use another network", n.Name, n.Bridge)
	} else if err != nil {
		return fmt.Errorf("join %s to %s: %w", ep.ContainerID, n.Name, err)
	}
	ep.HostIf = name
	// The host, if it knew an address of ep's under its last holder's MAC
	// (an address given again), keeps sending there until its entry times
	// out, tens of seconds, unless the MAC follows the address (ipam.MAC):
	// it forgets the others, and asks afresh. (The containers on the
	// bridge are told once the port forwards, by the container's
	// supervisor or, after a connect or a CNI ADD, by the process it
	// leaves behind: the engine's announce and announceLater.)
	for _, a := range ep.Unforeseen() {
		if err := h.NeighForget(v.MasterIndex, a); err != nil {
			return fmt.Errorf("join %s to %s: %w", ep.ContainerID, n.Name, err)
		}
	}
	return nil
}

// hostIfName is the host-side name of ep's veth on the given attempt:
// "veth" + 7 hex characters of a hash of the container ID and interface
// name. Derived, not random, so Leave finds the link from the endpoint
// alone even when the name Join chose never reached the store.
func hostIfName(ep *driver.Endpoint, attempt int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d", ep.ContainerID, ep.IfName, attempt))
	return "veth" + hex.EncodeToString(sum[:4])[:7]
}

// PortName is ep's host-side name when no other link holds it.
func (d *Driver) PortName(ep *driver.Endpoint) string { return hostIfName(ep, 0) }

// addVeth creates v under ep's host-side name, trying the next derived
// name when another container's link holds it, and returns the name.
func addVeth(h *link.Handle, ep *driver.Endpoint, v link.Veth) (name string, index int, err error) {
	for attempt := range nameAttempts {
		v.Name = hostIfName(ep, attempt)
		index, err := h.VethAdd(v)
		if !errors.Is(err, unix.EEXIST) {
			return v.Name, index, err
		}
		// EEXIST names no side: retry only if the host name was the one taken.
		if _, err := h.LinkGet(v.Name); err != nil {
			return "", 0, errdefs.Conflict("link %s already exists in the sandbox", v.PeerName)
		}
	}
	return "", 0, errdefs.Conflict("no free veth name after %d attempts", nameAttempts)
}

// findHostIf returns the name of ep's host-side link, or "" if it is gone.
func findHostIf(h *link.Handle, ep *driver.Endpoint) string {
	for attempt := range nameAttempts {
		name := hostIfName(ep, attempt)
		// An empty alias is a veth whose creator died before tagging it
		// (the alias is a separate change); its derived name is ours.
		if l, err := h.LinkGet(name); err == nil && (l.Alias == aliasPrefix+ep.ContainerID || l.Alias == "") {
			return name
		}
	}
	return ""
}

// configureSandbox addresses the peer, sets it up and adds the default
// routes, in that order: a route's gateway must be on an up, addressed link.
func configureSandbox(ep *driver.Endpoint, sb driver.Sandbox) error {
	c := sb.Link
	if c == nil {
		var err error
		if c, err = link.At(sb.NetnsPath); err != nil {
			return err
		}
		defer c.Close()
	}
	peer, err := c.LinkGet(ep.IfName)
	if err != nil {
		return err
	}
	if !ep.HasIPv6() {
		// An IPv4-only endpoint: no IPv6 chatter flooded across the bridge.
		if err := c.LinkSetNoIPv6Addrs(peer.Index); err != nil {
			return err
		}
	}
	for _, a := range ep.Addrs {
		err := c.AddrAdd(peer.Index, a)
		if errors.Is(err, unix.EACCES) && a.Addr().Is6() && sb.NetnsPath != "" {
			// A namespace made by knit before 2026-11-29 for IPv4-only
			// networks starts new links with IPv6 off; a later connect
			// to a dual-stack network turns it on for this link.
			if err = netns.Do(sb.NetnsPath, func() error { return link.EnableIPv6(ep.IfName) }); err == nil {
				err = c.AddrAdd(peer.Index, a)
			}
		}
		if err != nil {
			return err
		}
	}
	if err := c.LinkSetUp(peer.Index); err != nil {
		return err
	}
	if !ep.DefaultRoute {
		return nil
	}
	// A namespace given a default route of the family at the same metric
	// since the caller looked (a CNI runtime attaching a pod's second
	// network at the same moment; CNI ADD drops the families it found
	// routed before) keeps it, as the reference plugins do ("the first one
	// wins"): that gateway leaves the endpoint, whose record and CNI result
	// then name only the routes added.
	var kept []netip.Addr
	for _, gw := range ep.Gateways {
		err := c.RouteAddDefault(peer.Index, gw)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return err
		}
		kept = append(kept, gw)
	}
	ep.Gateways, ep.DefaultRoute = kept, len(kept) > 0
	return nil
}

// Leave deletes ep's host end, which takes the peer with it. When the
// sandbox is gone the kernel is already destroying the pair; deleting it
// here too would only add a synchronous ~36 ms wait.
func (d *Driver) Leave(n *driver.Network, ep *driver.Endpoint, sb driver.Sandbox, opt driver.LeaveOptions) error {
	if opt.SandboxGone {
		return nil
	}
	h, err := d.handles.Host()
	if err != nil {
		return fmt.Errorf("leave %s from %s: %w", ep.ContainerID, n.Name, err)
	}
	defer d.handles.Put(h)
	name := ep.HostIf
	if name == "" {
		if name = findHostIf(h, ep); name == "" {
			return nil
		}
	}
	if err := h.LinkDel(name); err != nil && !link.IsNotFound(err) {
		return fmt.Errorf("leave %s from %s: %w", ep.ContainerID, n.Name, err)
	}
	return nil
}

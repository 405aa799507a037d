package link

import (
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"

	"github.com/knit-dev/knit/internal/faults"
)

// Veth describes a veth pair whose host end is created here and whose peer
// is created directly in another namespace under its final name.
type Veth struct {
	Name        string // host end
	Alias       string // host end's alias, e.g. the owner's ID
	MasterIndex int    // bridge to enslave the host end to; 0 for none
	// Hairpin lets the bridge send a frame back out of the port it came
	// in on: a container reaching its own published port through the host
	// address gets its packets back on its own veth.
	Hairpin   bool
	MTU       int    // both ends; 0 for the kernel default
	Group     uint32 // host end's interface group; 0 for the default
	PeerName  string // e.g. eth0
	PeerMAC   net.HardwareAddr
	PeerNetns string // namespace file the peer is created in
	// AttachLater leaves the host end down and off its bridge, for
	// VethAttach to do once the peer is configured: bringing up a port
	// whose peer is up makes the bridge activate it, work that grows with
	// its number of ports (0.4 ms at 1000), done in the background but
	// under the kernel's rtnl lock, which the peer's route add then waits
	// for.
	AttachLater bool
}

// VethAdd creates the pair, host end up and enslaved, and returns the host
// end's index. The peer is left down. The host end gets no IPv6 address: a
// bridge port needs none, and its link-local address, duplicate address
// detection and multicast reports would be flooded to every other port of
// the bridge. On error nothing is left behind; an EEXIST (KindConflict) may
// be for either name.
//
// Equivalent to: ip link add NAME mtu MTU group GROUP type veth peer name PEER
// address MAC mtu MTU netns NS && ip link set NAME addrgenmode none
// alias ALIAS master BR up && ip link set NAME type bridge_slave hairpin on
func (h *Handle) VethAdd(v Veth) (index int, err error) {
	ns, err := os.Open(v.PeerNetns)
	if err != nil {
		return 0, fmt.Errorf("add veth %s: %w", v.Name, err)
	}
	defer ns.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.Alias, attrs.MTU, attrs.Group = v.Name, v.Alias, v.MTU, v.Group
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         v.PeerName,
		PeerHardwareAddr: v.PeerMAC,
		PeerMTU:          uint32(v.MTU),
		PeerNamespace:    netlink.NsFd(ns.Fd()),
		PeerTxQLen:       -1,
	}
	// LinkAdd also fills in veth.Index. The kernel ignores an alias at
	// creation, and netlink sets the master in a second request anyway; both
	// are done here so that their failure can be undone.
	faults.Step("link.veth-add")
	if err := h.nl.LinkAdd(veth); err != nil {
		return 0, wrap(err, "add veth %s", v.Name)
	}
	defer func() {
		if err != nil {
			_ = h.LinkDel(v.Name)
		}
	}()
	if veth.Index == 0 {
		return 0, fmt.Errorf("add veth %s: created but not found", v.Name)
	}
	// Before the link is up, so that no link-local address is ever made.
	if err := h.LinkSetNoIPv6Addrs(veth.Index); err != nil {
		return 0, fmt.Errorf("add veth %s: %w", v.Name, err)
	}
	// The alias names the owner before the link joins the bridge: a
	// concurrent prune takes a bridge port without one for a stray.
	if v.Alias != "" {
		faults.Step("link.veth-alias")
		if err := h.nl.LinkSetAlias(veth, v.Alias); err != nil {
			return 0, wrap(err, "set veth %s alias", v.Name)
		}
	}
	if !v.AttachLater {
		if err := h.VethAttach(veth.Index, v); err != nil {
			return 0, err
		}
	}
	return veth.Index, nil
}

// VethAttach enslaves the host end of a pair made with AttachLater to
// v.MasterIndex (if any), with hairpin as v asks, and sets it up. On error
// the caller deletes the pair.
//
// Equivalent to: ip link set NAME master BR up && ip link set NAME type
// bridge_slave hairpin on
func (h *Handle) VethAttach(index int, v Veth) error {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: index, Name: v.Name}}
	if v.MasterIndex != 0 {
		faults.Step("link.veth-master")
		if err := h.nl.LinkSetMasterByIndex(veth, v.MasterIndex); err != nil {
			return wrap(err, "set veth %s master %d", v.Name, v.MasterIndex)
		}
	}
	if v.Hairpin && v.MasterIndex != 0 {
		faults.Step("link.veth-hairpin")
		if err := h.nl.LinkSetHairpin(veth, true); err != nil {
			return wrap(err, "set veth %s hairpin on", v.Name)
		}
	}
	faults.Step("link.veth-up")
	if err := h.nl.LinkSetUp(veth); err != nil {
		return wrap(err, "set veth %s up", v.Name)
	}
	return nil
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE: no automatic IPv6 addresses.
const addrGenModeNone = 1

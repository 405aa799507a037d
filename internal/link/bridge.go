package link

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/faults"
)

// BridgeEnsure returns the index of the bridge called name, creating it up
// with the given MTU if it is missing. created says whether this call made
// it; losing a creation race to another process counts as found. It tries
// the creation first: callers that expect the bridge to exist look it up
// themselves (bridge.ensureBridge), so a second lookup here would be one
// request too many on the path that makes it.
//
// Equivalent to: ip link add NAME mtu MTU address MAC up type bridge
// mcast_snooping 0
func (h *Handle) BridgeEnsure(name string, mtu int) (index int, created bool, err error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU, attrs.Flags = name, mtu, net.FlagUp
	// A bridge whose address was set keeps it; one left to the kernel takes
	// the lowest address of its ports, so that joining a container could
	// change the gateway's MAC under every other container's ARP cache
	// (seconds of lost packets until they re-resolve).
	attrs.HardwareAddr = bridgeMAC(name)
	// Multicast snooping off: a bridge without a querier (knit's, like
	// Docker's) floods multicast to every port either way, but with
	// snooping on every new port re-arms the query timers of every port,
	// work under the kernel's rtnl lock that grows with the bridge (0.5 ms
	// of a container's attach at the 1000th port).
	snooping := false
	br := &netlink.Bridge{LinkAttrs: attrs, MulticastSnooping: &snooping}
	faults.Step("link.bridge-add")
	err = h.nl.LinkAdd(br)
	if errors.Is(err, unix.EEXIST) {
		l, err := h.BridgeGet(name)
		return l.Index, false, err
	}
	if err != nil {
		return 0, false, wrap(err, "add bridge %s", name)
	}
	if br.Index == 0 { // netlink's lookup after creation failed
		l, err := h.BridgeGet(name)
		return l.Index, true, err
	}
	return br.Index, true, nil
}

// bridgeMAC derives a stable, locally administered unicast address from a
// bridge's name.
func bridgeMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("knit-bridge:" + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^1 | 2
	return mac
}

// BridgeGet returns the bridge called name: KindNotFound if there is no
// such link, KindConflict if it is not a bridge.
//
// Equivalent to: ip link show NAME type bridge
func (h *Handle) BridgeGet(name string) (Link, error) {
	l, err := h.LinkGet(name)
	if err != nil {
		return Link{}, err
	}
	if l.Kind != "bridge" {
		return Link{}, errdefs.Conflict("link %s is a %s, not a bridge", name, l.Kind)
	}
	return l, nil
}

// BridgePorts lists the links enslaved to the bridge with the given index.
//
// Equivalent to: ip link show master BR
func (h *Handle) BridgePorts(bridgeIndex int) ([]Link, error) {
	all, err := dump(h.nl.LinkList)
	if err != nil {
		return nil, wrap(err, "list ports of bridge %d", bridgeIndex)
	}
	var ports []Link
	for _, l := range all {
		if l.Attrs().MasterIndex == bridgeIndex {
			ports = append(ports, fromNetlink(l))
		}
	}
	return ports, nil
}

// SetBridgeNetfilter makes traffic between two ports of the bridge at
// index, in the calling thread's namespace, pass the inet forward hook
// (br_netfilter), where a network's inter-container policy is enforced:
// that bridge's only, where the sysctl net.bridge.bridge-nf-call-iptables
// would do it for every bridge of the host (virtual machines' on an
// administrator's bridge then meet every firewall's forward policy).
//
// Equivalent to: ip link set BR type bridge nf_call_iptables 1 nf_call_ip6tables 1
func SetBridgeNetfilter(index int) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_BR_NF_CALL_IPTABLES, nl.Uint8Attr(1))
	data.AddRtAttr(nl.IFLA_BR_NF_CALL_IP6TABLES, nl.Uint8Attr(1))
	req.AddData(info)
	faults.Step("link.sysctl")
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("bridge %d: nf_call_iptables on: %w", index, err)
	}
	return nil
}

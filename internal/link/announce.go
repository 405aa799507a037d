package link

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Announce tells the neighbours on the link called ifname, in this
// thread's network namespace, that addrs are at the link's MAC: a
// gratuitous ARP request for an IPv4 address, an unsolicited neighbour
// advertisement (override set) to all nodes for an IPv6 one. Their
// entries for an address given again then point at its new MAC at once,
// instead of at the last holder's until they time out (tens of seconds).
// Entries are updated, none made: Linux takes both without arp_accept or
// accept_untracked_na. The MAC is read now, not taken from a record: a
// plugin after knit's in a CNI chain may have changed it; an address the
// link no longer holds is left out.
//
// Equivalent to: arping -U -c1 -I IF ADDR; ndsend ADDR IF
func Announce(ifname string, addrs []netip.Addr) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("announce on %s: %w", ifname, err)
	}
	mac := ifi.HardwareAddr
	if len(mac) != 6 {
		return fmt.Errorf("announce on %s: MAC %s is not Ethernet's", ifname, mac)
	}
	// Only what the link holds now: a late announcement must not claim
	// an address the link gave up (a DEL, a disconnect) for its next
	// holder.
	held, err := ifi.Addrs()
	if err != nil {
		return fmt.Errorf("announce on %s: %w", ifname, err)
	}
	for _, a := range addrs {
		if !slices.ContainsFunc(held, func(h net.Addr) bool {
			n, ok := h.(*net.IPNet)
			if !ok {
				return false
			}
			ip, _ := netip.AddrFromSlice(n.IP)
			return ip.Unmap() == a
		}) {
			continue
		}
		var proto uint16
		var dst net.HardwareAddr
		var frame []byte
		if a.Is4() {
			proto, dst, frame = unix.ETH_P_ARP, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, gratuitousARP(mac, a)
		} else {
			proto, dst, frame = unix.ETH_P_IPV6, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, unsolicitedNA(mac, a)
		}
		if err := sendFrame(ifi.Index, proto, dst, frame); err != nil {
			return fmt.Errorf("announce %s on %s: %w", a, ifname, err)
		}
	}
	return nil
}

// sendFrame sends payload to dst on link index, the kernel adding the
// Ethernet header. The socket receives nothing (protocol 0).
func sendFrame(index int, proto uint16, dst net.HardwareAddr, payload []byte) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// sll_protocol is in network order, which the library copies as is.
	be := binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, proto))
	to := &unix.SockaddrLinklayer{Protocol: be, Ifindex: index, Halen: 6}
	copy(to.Addr[:], dst)
	return unix.Sendto(fd, payload, 0, to)
}

// gratuitousARP is an ARP request from a at mac for a itself.
func gratuitousARP(mac net.HardwareAddr, a netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:], mac)
	ip := a.As4()
	copy(b[14:], ip[:])
	copy(b[24:], ip[:]) // the target hardware address stays zero
	return b
}

// unsolicitedNA is an IPv6 packet from a to all nodes (ff02::1): a
// neighbour advertisement of a at mac, override set, hop limit 255 (a
// receiver drops any other).
func unsolicitedNA(mac net.HardwareAddr, a netip.Addr) []byte {
	const icmpLen = 32 // type, code, checksum, flags, target, target link-layer option
	b := make([]byte, 40+icmpLen)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], icmpLen)
	b[6], b[7] = unix.IPPROTO_ICMPV6, 255
	src, dst := a.As16(), netip.IPv6LinkLocalAllNodes().As16()
	copy(b[8:], src[:])
	copy(b[24:], dst[:])
	m := b[40:]
	m[0] = 136  // neighbour advertisement
	m[4] = 0x20 // override
	copy(m[8:], src[:])
	m[24], m[25] = 2, 1 // target link-layer address, 8 bytes
	copy(m[26:], mac)
	binary.BigEndian.PutUint16(m[2:], icmpv6Checksum(src, dst, m))
	return b
}

// icmpv6Checksum is the checksum of ICMPv6 message m (its checksum field
// zero) from src to dst, over the IPv6 pseudo-header.
func icmpv6Checksum(src, dst [16]byte, m []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	var pseudo [8]byte
	binary.BigEndian.PutUint32(pseudo[0:], uint32(len(m)))
	pseudo[7] = unix.IPPROTO_ICMPV6
	add(pseudo[:])
	add(m)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// WaitForwarding waits, up to timeout, until the bridge port called name
// (in the calling thread's namespace) forwards, and says whether it does:
// a new port forwards once the kernel's link watch has seen its carrier,
// up to a second after it came up, and drops what it is given until then.
// A port that goes meanwhile, or leaves its bridge, does not; one whose
// name passes to another link is not followed (it is asked by index).
func WaitForwarding(name string, timeout time.Duration) bool {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return false
	}
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		state, err := portState(l.Attrs().Index)
		switch {
		case err != nil:
			return false
		case state == brStateForwarding:
			return true
		case time.Now().After(deadline):
			return false
		}
	}
}

// brStateForwarding is BR_STATE_FORWARDING (linux/if_bridge.h).
const brStateForwarding = 3

// portState is the spanning-tree state of the bridge port at index
// (BR_STATE_*), read from the link's slave data: one request, where a
// dump of the bridge family would list every link.
//
// Equivalent to: ip -d link show dev PORT (its "state")
func portState(index int) (uint8, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
		if err != nil {
			return 0, err
		}
		if state, ok := brportState(attrs); ok {
			return state, nil
		}
	}
	return 0, fmt.Errorf("link %d is not a bridge port", index)
}

// brportState finds IFLA_BRPORT_STATE in a link's attributes:
// IFLA_LINKINFO, then IFLA_INFO_SLAVE_DATA of slave kind "bridge".
func brportState(attrs []syscall.NetlinkRouteAttr) (uint8, bool) {
	for _, a := range attrs {
		if a.Attr.Type&nl.NLA_TYPE_MASK != unix.IFLA_LINKINFO {
			continue
		}
		info, err := nl.ParseRouteAttr(a.Value)
		if err != nil {
			return 0, false
		}
		bridge := false
		var data []byte
		for _, i := range info {
			switch i.Attr.Type & nl.NLA_TYPE_MASK {
			case nl.IFLA_INFO_SLAVE_KIND:
				bridge = strings.TrimRight(string(i.Value), "\x00") == "bridge"
			case nl.IFLA_INFO_SLAVE_DATA:
				data = i.Value
			}
		}
		if !bridge || data == nil {
			return 0, false
		}
		port, err := nl.ParseRouteAttr(data)
		if err != nil {
			return 0, false
		}
		for _, p := range port {
			if p.Attr.Type&nl.NLA_TYPE_MASK == nl.IFLA_BRPORT_STATE && len(p.Value) == 1 {
				return p.Value[0], true
			}
		}
	}
	return 0, false
}

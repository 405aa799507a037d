package link

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Announce tells the neighbours on the link called ifname, in this
// thread's network namespace, that addrs are at mac: a gratuitous ARP
// request for an IPv4 address, an unsolicited neighbour advertisement
// (override set) to all nodes for an IPv6 one. Their entries for an
// address given again then point at its new MAC at once, instead of at
// the last holder's until they time out (tens of seconds). Entries are
// updated, none made: Linux takes both without arp_accept or
// accept_untracked_na.
//
// Equivalent to: arping -U -c1 -I IF ADDR; ndsend ADDR IF
func Announce(ifname string, mac net.HardwareAddr, addrs []netip.Addr) error {
	if len(mac) != 6 {
		return fmt.Errorf("announce on %s: MAC %s is not Ethernet's", ifname, mac)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("announce on %s: %w", ifname, err)
	}
	for _, a := range addrs {
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
// (in this process's namespace, whose /sys is read) forwards, and says
// whether it does: a new port forwards once the kernel's link watch has
// seen its carrier, up to a second after it came up, and drops what it
// is given until then. A port that goes meanwhile, or whose name passes
// to another link (its ifindex changes), does not.
func WaitForwarding(name string, timeout time.Duration) bool {
	const forwarding = "3" // BR_STATE_FORWARDING
	dir := "/sys/class/net/" + name
	index, err := os.ReadFile(dir + "/ifindex")
	if err != nil {
		return false
	}
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		state, err := os.ReadFile(dir + "/brport/state")
		now, ierr := os.ReadFile(dir + "/ifindex")
		switch {
		case ierr != nil || string(now) != string(index):
			return false
		case err == nil && strings.TrimSpace(string(state)) == forwarding:
			return true
		case err != nil && !os.IsNotExist(err), time.Now().After(deadline):
			return false
		}
	}
}

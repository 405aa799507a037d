package link

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

// The announcements' bytes: a gratuitous ARP request names the address as
// sender and target; a neighbour advertisement to all nodes, hop limit
// 255, override set, with the target's MAC and a checksum that sums the
// message and its pseudo-header to zero.
func TestAnnouncementFrames(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x42, 0x0a, 0x61, 0x00, 0x0b}
	arp := gratuitousARP(mac, netip.MustParseAddr("10.97.0.11"))
	want := []byte{0, 1, 8, 0, 6, 4, 0, 1, 0x02, 0x42, 0x0a, 0x61, 0x00, 0x0b, 10, 97, 0, 11, 0, 0, 0, 0, 0, 0, 10, 97, 0, 11}
	if !bytes.Equal(arp, want) {
		t.Errorf("gratuitous ARP\n% x\nwant\n% x", arp, want)
	}
	a := netip.MustParseAddr("fd00:db8:97::10")
	na := unsolicitedNA(mac, a)
	if len(na) != 72 || na[0] != 0x60 || na[5] != 32 || na[6] != 58 || na[7] != 255 {
		t.Fatalf("IPv6 header of the advertisement: % x", na[:8])
	}
	src, dst := a.As16(), netip.MustParseAddr("ff02::1").As16()
	if !bytes.Equal(na[8:24], src[:]) || !bytes.Equal(na[24:40], dst[:]) {
		t.Errorf("addresses: % x, want from %s to ff02::1", na[8:40], a)
	}
	m := na[40:]
	if m[0] != 136 || m[1] != 0 || m[4] != 0x20 || !bytes.Equal(m[8:24], src[:]) || m[24] != 2 || m[25] != 1 || !bytes.Equal(m[26:32], mac) {
		t.Errorf("advertisement: % x", m)
	}
	if sum := icmpv6Checksum(src, dst, m); sum != 0 {
		t.Errorf("the checksum does not verify: %#04x left", sum)
	}
	m[30] ^= 1
	if sum := icmpv6Checksum(src, dst, m); sum == 0 {
		t.Errorf("a changed message verifies")
	}
}

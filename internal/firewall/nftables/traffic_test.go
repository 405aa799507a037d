package nftables_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/testutil"
	"golang.org/x/sys/unix"
)

// topology is three throwaway namespaces:
//
//	container eth0 10.99.0.2/24 ── br0 10.99.0.1/24  host  wan0 198.51.100.1/24 ── eth0 198.51.100.2/24 world
//
// The world routes back to the container's subnet via the host, so that
// only the firewall decides which source address the world sees.
type topology struct{ host, container, world string }

func newTopology(t *testing.T) topology {
	t.Helper()
	top := topology{testutil.NewNetns(t), testutil.NewNetns(t), testutil.NewNetns(t)}
	h, c, w := openLink(t, top.host), openLink(t, top.container), openLink(t, top.world)
	for _, l := range []*link.Handle{h, c, w} {
		check(t, l.SetUp("lo"))
	}
	br, _, err := h.BridgeEnsure("br0", 1500)
	check(t, err)
	check(t, h.AddrEnsure(br, netip.MustParsePrefix("10.99.0.1/24")))
	_, err = h.VethAdd(link.Veth{Name: "ctr0", MasterIndex: br, PeerName: "eth0", PeerNetns: top.container})
	check(t, err)
	wan, err := h.VethAdd(link.Veth{Name: "wan0", PeerName: "eth0", PeerNetns: top.world})
	check(t, err)
	check(t, h.AddrEnsure(wan, netip.MustParsePrefix("198.51.100.1/24")))
	for _, end := range []struct {
		l       *link.Handle
		addr    string
		gateway string
	}{{c, "10.99.0.2/24", "10.99.0.1"}, {w, "198.51.100.2/24", "198.51.100.1"}} {
		eth, err := end.l.LinkGet("eth0")
		check(t, err)
		check(t, end.l.AddrEnsure(eth.Index, netip.MustParsePrefix(end.addr)))
		check(t, end.l.LinkSetUp(eth.Index))
		check(t, end.l.RouteAddDefault(eth.Index, netip.MustParseAddr(end.gateway)))
	}
	check(t, netns.Do(top.host, func() error { return link.SetForwarding(false) }))
	return top
}

func openLink(t *testing.T, ns string) *link.Handle {
	t.Helper()
	h, err := link.At(ns)
	check(t, err)
	t.Cleanup(h.Close)
	return h
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// listen opens a TCP listener inside the world namespace; it is served from
// the test's goroutine.
func (top topology) listen(t *testing.T) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	check(t, netns.Do(top.world, func() (err error) {
		ln, err = net.Listen("tcp", "198.51.100.2:9000")
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// sourceSeen connects from the container to the world and returns the
// source address the world's listener saw.
func (top topology) sourceSeen(ln *net.TCPListener) (netip.Addr, error) {
	var conn net.Conn
	err := netns.Do(top.container, func() (err error) {
		conn, err = net.DialTimeout("tcp", "198.51.100.2:9000", time.Second)
		return err
	})
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	if err := ln.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return netip.Addr{}, err
	}
	peer, err := ln.AcceptTCP()
	if err != nil {
		return netip.Addr{}, err
	}
	defer peer.Close()
	return peer.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(), nil
}

func TestMasqueradeTraffic(t *testing.T) {
	top := newTopology(t)
	fw := firewallIn(t, top.host)
	ln := top.listen(t)
	n := firewall.Network{Name: "n1", Bridge: "br0", Masquerade: true,
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}}
	expectSource := func(step, want string) {
		t.Helper()
		got, err := top.sourceSeen(ln)
		if err != nil || got != netip.MustParseAddr(want) {
			t.Fatalf("%s: world saw %v, %v; want %s\n%s", step, got, err, want, rules(t, fw))
		}
	}

	check(t, fw.EnsureNetwork(n))
	out, err := exec.Command("nsenter", "--net="+top.container, "ping", "-c1", "-W2", "198.51.100.2").CombinedOutput()
	if err != nil {
		t.Fatalf("ping from the container: %v\n%s", err, out)
	}
	expectSource("masquerade", "198.51.100.1")

	check(t, fw.RemoveNetwork("n1"))
	expectSource("removed", "10.99.0.2")

	n.Masquerade = false
	check(t, fw.EnsureNetwork(n))
	expectSource("no masquerade", "10.99.0.2")

	n.Internal = true
	check(t, fw.EnsureNetwork(n))
	var opErr *net.OpError
	if got, err := top.sourceSeen(ln); !errors.As(err, &opErr) || !opErr.Timeout() {
		t.Fatalf("internal: world saw %v, %v; want a timeout", got, err)
	}

	n.Internal, n.Masquerade = false, true
	check(t, fw.EnsureNetwork(n))
	expectSource("masquerade again", "198.51.100.1")
}

// udpReaches sends one datagram from namespace from (from its address src,
// if valid) to dst and reports whether the listener ln (in another
// namespace) got it within a second.
func udpReaches(t *testing.T, from string, src netip.Addr, dst netip.AddrPort, ln *net.UDPConn) bool {
	t.Helper()
	var laddr *net.UDPAddr
	if src.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	check(t, netns.Do(from, func() error {
		c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("ping"))
		return err
	}))
	check(t, ln.SetReadDeadline(time.Now().Add(time.Second)))
	buf := make([]byte, 16)
	n, err := ln.Read(buf)
	return err == nil && string(buf[:n]) == "ping"
}

// A container cannot reach the host's loopback services by addressing a
// packet to 127.0.0.x through its eth0, although the bridge has
// route_localnet on (which published ports on 127.0.0.1 need).
func TestLocalnetGuard(t *testing.T) {
	top := newTopology(t)
	check(t, netns.Do(top.host, func() error { return link.SetRouteLocalnet("br0") }))
	var ln *net.UDPConn
	check(t, netns.Do(top.host, func() (err error) {
		ln, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 53), Port: 9999})
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	// The container routes 127.0.0.53 out of eth0 to the host, as a
	// container with NET_ADMIN can.
	for _, args := range [][]string{
		{"sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"},
		{"ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"},
		{"ip", "route", "add", "127.0.0.53/32", "via", "10.99.0.1", "dev", "eth0"},
	} {
		if out, err := exec.Command("nsenter", append([]string{"--net=" + top.container}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	dst := netip.MustParseAddrPort("127.0.0.53:9999")
	if !udpReaches(t, top.container, netip.Addr{}, dst, ln) {
		t.Fatal("without knit's rules the datagram does not arrive: the test cannot tell anything")
	}
	fw := firewallIn(t, top.host)
	check(t, fw.EnsureNetwork(firewall.Network{Name: "n1", Bridge: "br0", Subnets: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Masquerade: true, ICC: true}))
	if udpReaches(t, top.container, netip.Addr{}, dst, ln) {
		t.Error("a container reached a host service on 127.0.0.53 through its eth0")
	}
}

// A packet conntrack cannot place in a connection (a bare FIN) does not
// slip past the rules that keep the world away from unpublished ports.
func TestInvalidDropped(t *testing.T) {
	top := newTopology(t)
	fw := firewallIn(t, top.host)
	check(t, fw.EnsureNetwork(firewall.Network{Name: "n1", Bridge: "br0", Subnets: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}, Masquerade: true, ICC: true}))
	// The container listens to every TCP packet it is sent.
	var rfd int
	check(t, netns.Do(top.container, func() (err error) {
		rfd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
		return err
	}))
	t.Cleanup(func() { unix.Close(rfd) })
	check(t, unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}))
	var sfd int
	check(t, netns.Do(top.world, func() (err error) {
		sfd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
		return err
	}))
	t.Cleanup(func() { unix.Close(sfd) })
	src, dst := netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("10.99.0.2")
	for _, tc := range []struct {
		flags byte
		name  string
	}{{0x01, "FIN"}, {0x04, "RST"}, {0x12, "SYN-ACK"}} {
		check(t, unix.Sendto(sfd, tcpSegment(src, dst, 40000, 80, tc.flags), 0, &unix.SockaddrInet4{Addr: dst.As4()}))
		buf := make([]byte, 128)
		for {
			n, _, err := unix.Recvfrom(rfd, buf, 0)
			if err != nil {
				break // nothing more within a second
			}
			// A 20-byte IP header, then the TCP header: ports, flags.
			if n >= 40 && buf[20] == 40000>>8 && buf[21] == 40000&0xff && buf[33] == tc.flags {
				t.Errorf("a bare %s from the world reached an unpublished container port", tc.name)
				break
			}
		}
	}
}

// tcpSegment is a bare 20-byte TCP header with the given flags and a
// valid checksum.
func tcpSegment(src, dst netip.Addr, sport, dport uint16, flags byte) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 12345)
	b[12] = 5 << 4 // data offset: 5 words
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 64240)
	s, d := src.As4(), dst.As4()
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, unix.IPPROTO_TCP, 0, 20)
	var sum uint32
	for _, p := range [][]byte{pseudo, b} {
		for i := 0; i < len(p); i += 2 {
			sum += uint32(p[i])<<8 | uint32(p[i+1])
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[16:], ^uint16(sum))
	return b
}

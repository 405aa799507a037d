package nftables_test

import (
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
	check(t, netns.Do(top.host, link.SetIPForward))
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

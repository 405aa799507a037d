package nftables_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/testutil"
)

// lan is a host with two bridges and a world, all throwaway namespaces:
//
//	containers 10.99.0.x ── br0 10.99.0.1/24 ┐
//	containers 10.98.0.x ── br1 10.98.0.1/24 ┴ host  wan0 198.51.100.1/24 ── eth0 198.51.100.2/24 world
//
// The world's default route points at the host, so it can also try the
// containers' addresses directly.
type lan struct {
	t           *testing.T
	host, world string
	hostLink    *link.Handle
}

func newLAN(t *testing.T) *lan {
	t.Helper()
	l := &lan{t: t, host: testutil.NewNetns(t), world: testutil.NewNetns(t)}
	h, w := openLink(t, l.host), openLink(t, l.world)
	l.hostLink = h
	check(t, h.SetUp("lo"))
	check(t, w.SetUp("lo"))
	for _, br := range []struct{ name, addr string }{{"br0", "10.99.0.1/24"}, {"br1", "10.98.0.1/24"}} {
		idx, _, err := h.BridgeEnsure(br.name, 1500)
		check(t, err)
		check(t, h.AddrEnsure(idx, netip.MustParsePrefix(br.addr)))
	}
	wan, err := h.VethAdd(link.Veth{Name: "wan0", PeerName: "eth0", PeerNetns: l.world})
	check(t, err)
	check(t, h.AddrEnsure(wan, netip.MustParsePrefix("198.51.100.1/24")))
	l.upPeer(w, "198.51.100.2/24", "198.51.100.1")
	check(t, netns.Do(l.host, func() error {
		if err := link.SetForwarding(false); err != nil {
			return err
		}
		// br_netfilter's switch is per namespace; make sure it is on here,
		// so that traffic inside one bridge meets the forward hook.
		for _, p := range []string{"/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"} {
			if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
				return fmt.Errorf("needs br_netfilter: %w", err)
			}
		}
		// What the bridge driver does for ports published on 127.0.0.1.
		return os.WriteFile("/proc/sys/net/ipv4/conf/br0/route_localnet", []byte("1\n"), 0o644)
	}))
	return l
}

// upPeer configures the eth0 of a namespace and routes everything via gw.
func (l *lan) upPeer(h *link.Handle, addr, gw string) {
	eth, err := h.LinkGet("eth0")
	check(l.t, err)
	check(l.t, h.AddrEnsure(eth.Index, netip.MustParsePrefix(addr)))
	check(l.t, h.LinkSetUp(eth.Index))
	check(l.t, h.RouteAddDefault(eth.Index, netip.MustParseAddr(gw)))
}

// container adds a namespace on bridge br (host end veth) with address
// addr/24, whose gateway is the bridge, and returns it.
func (l *lan) container(br, veth, addr string) string {
	ns := testutil.NewNetns(l.t)
	c := openLink(l.t, ns)
	check(l.t, c.SetUp("lo"))
	brl, err := l.hostLink.LinkGet(br)
	check(l.t, err)
	_, err = l.hostLink.VethAdd(link.Veth{Name: veth, MasterIndex: brl.Index, PeerName: "eth0", PeerNetns: ns})
	check(l.t, err)
	gw := netip.MustParsePrefix(addr + "/24").Masked().Addr().Next()
	l.upPeer(c, addr+"/24", gw.String())
	return ns
}

// hairpin lets br0 send frames back out of the port they came in on, as
// the bridge driver does for containers that publish ports.
func (l *lan) hairpin(veth string) {
	out, err := exec.Command("nsenter", "--net="+l.host, "ip", "link", "set", veth, "type", "bridge_slave", "hairpin", "on").CombinedOutput()
	if err != nil {
		l.t.Fatalf("hairpin on %s: %v\n%s", veth, err, out)
	}
}

// serve runs TCP and UDP servers on port inside ns (bound inside, served
// from ordinary goroutines). Each answers a connection or a datagram with
// the source address it saw, so a test can tell NAT from no NAT.
func serve(t *testing.T, ns string, port int) {
	t.Helper()
	var tl net.Listener
	var ul net.PacketConn
	check(t, netns.Do(ns, func() (err error) {
		if tl, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		ul, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	}))
	t.Cleanup(func() { tl.Close(); ul.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = ul.WriteTo([]byte(from.(*net.UDPAddr).IP.String()+"\n"), from)
		}
	}()
}

// dial reaches addr over network ("tcp" or "udp") from inside ns and
// returns the source address the server saw.
func dial(ns, network, addr string) (string, error) {
	var c net.Conn
	if err := netns.Do(ns, func() (err error) {
		c, err = net.DialTimeout(network, addr, time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return "", err
	}
	if network == "udp" {
		if _, err := c.Write([]byte("hi\n")); err != nil {
			return "", err
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// expect dials and checks that the server saw source (or, for source "",
// that nothing answered).
func expect(t *testing.T, what, ns, network, addr, source string) {
	t.Helper()
	got, err := dial(ns, network, addr)
	// A first packet on freshly made links can be lost (neighbour
	// resolution): an answer that should come gets two more chances.
	for i := 0; i < 2 && source != "" && err != nil; i++ {
		got, err = dial(ns, network, addr)
	}
	switch {
	case source == "" && err == nil:
		t.Errorf("%s: %s %s answered (saw %s), want no answer", what, network, addr, got)
	case source != "" && (err != nil || got != source):
		t.Errorf("%s: %s %s: saw %q, %v; want %s", what, network, addr, got, err, source)
	}
}

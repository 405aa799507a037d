package link_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/knit-dev/knit/internal/firewall/nftables"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/testutil"
)

// A flow to 127.0.0.11:53 that the redirect sent to one server goes once
// the redirect goes to another, and stays while it still goes there.
func TestConntrackDeleteRetargeted(t *testing.T) {
	ns := testutil.NewNetns(t)
	h, err := link.ConntrackAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	fw := nftables.New()
	server, other := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.8.0.1")
	if err := fw.RedirectDNS(ns, server); err != nil {
		t.Fatal(err)
	}
	// A link the query leaves by, toward the server.
	err = netns.Do(ns, func() error {
		for _, cmd := range [][]string{
			{"ip", "link", "set", "lo", "up"},
			{"ip", "link", "add", "q0", "type", "veth", "peer", "name", "q1"},
			{"ip", "addr", "add", "10.9.0.2/24", "dev", "q0"},
			{"ip", "link", "set", "q0", "up"},
			{"ip", "link", "set", "q1", "up"},
			{"sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"},
		} {
			if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %v\n%s", cmd, err, out)
			}
		}
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 11), Port: 53})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("query"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	flows := func() int {
		t.Helper()
		f, err := os.Open(ns)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		nl, err := netlink.NewHandleAt(vnetns.NsHandle(int(f.Fd())))
		if err != nil {
			t.Fatal(err)
		}
		defer nl.Close()
		list, err := nl.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, fl := range list {
			if fl.Forward.DstIP.Equal(net.IPv4(127, 0, 0, 11)) && fl.Forward.DstPort == 53 {
				n++
			}
		}
		return n
	}
	if n := flows(); n != 1 {
		t.Fatalf("flows to 127.0.0.11:53 after the query: %d, want 1", n)
	}
	if err := h.ConntrackDeleteRetargeted(netip.MustParseAddr("127.0.0.11"), 53, server); err != nil {
		t.Fatal(err)
	}
	if n := flows(); n != 1 {
		t.Errorf("flows to the current server after the delete: %d, want 1 kept", n)
	}
	if err := h.ConntrackDeleteRetargeted(netip.MustParseAddr("127.0.0.11"), 53, other); err != nil {
		t.Fatal(err)
	}
	if n := flows(); n != 0 {
		t.Errorf("flows to the previous server after the retarget's delete: %d, want 0", n)
	}
}

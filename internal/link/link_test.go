package link_test

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/testutil"
)

// open returns a handle on the namespace at path, closed when the test ends.
func open(t *testing.T, path string) *link.Handle {
	t.Helper()
	h, err := link.At(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestBridgeEnsure(t *testing.T) {
	ns := testutil.NewNetns(t)
	h := open(t, ns)
	idx, created, err := h.BridgeEnsure("br-test", 1400)
	if err != nil || !created || idx == 0 {
		t.Fatalf("BridgeEnsure = %d, %v, %v", idx, created, err)
	}
	again, created, err := h.BridgeEnsure("br-test", 1400)
	if err != nil || created || again != idx {
		t.Fatalf("second BridgeEnsure = %d, %v, %v; want %d, false, nil", again, created, err, idx)
	}
	br := must[link.Link](t)(h.LinkGet("br-test"))
	if br.Kind != "bridge" || br.MTU != 1400 || !br.Up || br.Index != idx {
		t.Fatalf("bridge = %+v", br)
	}
	if err := netns.Do(ns, func() error {
		l, err := netlink.LinkByName("br-test")
		if err != nil {
			return err
		}
		if s := l.(*netlink.Bridge).MulticastSnooping; s == nil || *s {
			t.Errorf("multicast snooping = %v, want off", s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.BridgeGet("lo"); errdefs.KindOf(err) != errdefs.KindConflict {
		t.Fatalf("BridgeGet(lo) = %v, want conflict", err)
	}
	if err := h.SetUp("lo"); err != nil {
		t.Fatal(err)
	}
	if lo := must[link.Link](t)(h.LinkGet("lo")); !lo.Up {
		t.Errorf("lo after SetUp = %+v", lo)
	}
	if err := h.SetUp("nope"); !link.IsNotFound(err) {
		t.Fatalf("SetUp(nope) = %v, want not found", err)
	}
	if _, err := h.LinkGet("nope"); !link.IsNotFound(err) {
		t.Fatalf("LinkGet(nope) = %v, want not found", err)
	}
	if err := h.LinkDel("br-test"); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkDel("br-test"); !link.IsNotFound(err) {
		t.Fatalf("second LinkDel = %v, want not found", err)
	}
}

func TestBridgeEnsureConcurrent(t *testing.T) {
	ns := testutil.NewNetns(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	creators, indexes := 0, map[int]bool{}
	for range 8 {
		h := open(t, ns)
		wg.Go(func() {
			idx, created, err := h.BridgeEnsure("br-race", 1500)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			indexes[idx] = true
			if created {
				creators++
			}
		})
	}
	wg.Wait()
	if creators != 1 || len(indexes) != 1 {
		t.Fatalf("%d creators, indexes %v; want 1 creator, 1 index", creators, indexes)
	}
}

func TestAddr(t *testing.T) {
	h := open(t, testutil.NewNetns(t))
	idx, _, err := h.BridgeEnsure("br-addr", 1500)
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParsePrefix("10.9.0.1/24"), netip.MustParsePrefix("fd00:9::1/64")
	for range 2 {
		for _, p := range []netip.Prefix{v4, v6} {
			if err := h.AddrEnsure(idx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := h.AddrAdd(idx, v4); errdefs.KindOf(err) != errdefs.KindConflict {
		t.Fatalf("AddrAdd(existing) = %v, want conflict", err)
	}
	if err := h.AddrAdd(idx, netip.Prefix{}); errdefs.KindOf(err) != errdefs.KindInvalid {
		t.Fatalf("AddrAdd(zero) = %v, want invalid", err)
	}
	got := must[[]netip.Prefix](t)(h.AddrList(idx))
	for _, p := range []netip.Prefix{v4, v6} {
		if !slices.Contains(got, p) {
			t.Errorf("AddrList = %v, missing %v", got, p)
		}
	}
}

func TestVethAdd(t *testing.T) {
	hostNS, ctrNS := testutil.NewNetns(t), testutil.NewNetns(t)
	h, c := open(t, hostNS), open(t, ctrNS)
	br, _, err := h.BridgeEnsure("br-veth", 1400)
	if err != nil {
		t.Fatal(err)
	}
	mac := net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}
	v := link.Veth{Name: "vethtest1", Alias: "knit:abc", MasterIndex: br, MTU: 1400,
		PeerName: "eth0", PeerMAC: mac, PeerNetns: ctrNS}
	idx, err := h.VethAdd(v)
	if err != nil {
		t.Fatal(err)
	}
	host := must[link.Link](t)(h.LinkGet("vethtest1"))
	if host.Index != idx || host.MasterIndex != br || !host.Up || host.MTU != 1400 || host.Alias != "knit:abc" || host.Kind != "veth" {
		t.Errorf("host end = %+v", host)
	}
	ports := must[[]link.Link](t)(h.BridgePorts(br))
	if len(ports) != 1 || ports[0].Name != "vethtest1" {
		t.Errorf("BridgePorts = %+v", ports)
	}
	peer := must[link.Link](t)(c.LinkGet("eth0"))
	if !bytes.Equal(peer.MAC, mac) || peer.MTU != 1400 || peer.Kind != "veth" || peer.Up {
		t.Errorf("peer = %+v", peer)
	}
	if _, err := h.LinkGet("eth0"); !link.IsNotFound(err) {
		t.Errorf("peer also visible in the host namespace: %v", err)
	}

	// eth0 is taken in the container: a conflict, and no half-made pair.
	v.Name = "vethtest2"
	if _, err := h.VethAdd(v); errdefs.KindOf(err) != errdefs.KindConflict {
		t.Errorf("VethAdd(peer name taken) = %v, want conflict", err)
	}
	// A bad master fails after creation and must be undone.
	v.PeerName, v.MasterIndex = "eth1", 99999
	if _, err := h.VethAdd(v); err == nil {
		t.Error("VethAdd(bad master) succeeded")
	}
	for _, name := range []string{"vethtest2"} {
		if _, err := h.LinkGet(name); !link.IsNotFound(err) {
			t.Errorf("%s left behind: %v", name, err)
		}
	}
	if _, err := c.LinkGet("eth1"); !link.IsNotFound(err) {
		t.Errorf("eth1 left behind: %v", err)
	}
}

func TestRoutes(t *testing.T) {
	ns := testutil.NewNetns(t)
	h := open(t, ns)
	idx, _, err := h.BridgeEnsure("br-route", 1500)
	if err != nil {
		t.Fatal(err)
	}
	gw4, gw6 := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("fd00:9::1")
	for _, p := range []string{"10.9.0.2/24", "fd00:9::2/64"} {
		if err := h.AddrAdd(idx, netip.MustParsePrefix(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.LinkSetUp(idx); err != nil {
		t.Fatal(err)
	}
	for _, gw := range []netip.Addr{gw4, gw6} {
		if err := h.RouteAddDefault(idx, gw); err != nil {
			t.Fatal(err)
		}
	}
	routes := must[[]link.Route](t)(h.RouteList())
	for _, want := range []link.Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: gw4, LinkIndex: idx},
		{Dst: netip.MustParsePrefix("::/0"), Gateway: gw6, LinkIndex: idx},
	} {
		if !slices.Contains(routes, want) {
			t.Errorf("RouteList = %+v, missing %+v", routes, want)
		}
	}

	var dsts []netip.Prefix
	if err := netns.Do(ns, func() (err error) { dsts, err = link.HostRoutes(); return err }); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10.9.0.0/24", "fd00:9::/64"} {
		if !slices.Contains(dsts, netip.MustParsePrefix(want)) {
			t.Errorf("HostRoutes = %v, missing %s", dsts, want)
		}
	}
	for _, d := range dsts {
		if d.Bits() == 0 {
			t.Errorf("HostRoutes includes default route %v", d)
		}
	}
}

func TestSetForwarding(t *testing.T) {
	ns := testutil.NewNetns(t)
	const path = "/proc/sys/net/ipv4/ip_forward"
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var inside []byte
	err = netns.Do(ns, func() error {
		for range 2 {
			if err := link.SetForwarding(false); err != nil {
				return err
			}
		}
		inside, err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(inside) != "1\n" {
		t.Errorf("ip_forward in the namespace = %q, want 1", inside)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Fatalf("host ip_forward changed from %q to %q", before, after)
	}
}

// A bridge keeps the address it was made with when a port with a lower
// address joins: the gateway's MAC must not change under the containers'
// ARP caches.
func TestBridgeMACIsStable(t *testing.T) {
	ns := testutil.NewNetns(t)
	h := open(t, ns)
	idx := must[int](t)(func() (int, error) { i, _, err := h.BridgeEnsure("br-mac", 1500); return i, err }())
	before := must[link.Link](t)(h.LinkGet("br-mac")).MAC
	// A port whose address sorts below any the bridge could have.
	for _, args := range [][]string{
		{"ip", "link", "add", "low0", "address", "00:00:00:00:00:01", "type", "veth", "peer", "name", "low1"},
		{"ip", "link", "set", "low0", "master", "br-mac", "up"},
	} {
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	after := must[link.Link](t)(h.LinkGet("br-mac")).MAC
	if before.String() != after.String() || idx == 0 {
		t.Errorf("bridge MAC changed from %s to %s when a port joined", before, after)
	}
}

// AttachLater leaves the host end down and off the bridge; VethAttach
// enslaves it (hairpin on) and brings it up, after which the pair has its
// carrier once the peer is up too.
func TestVethAttachLater(t *testing.T) {
	hostNS, ctrNS := testutil.NewNetns(t), testutil.NewNetns(t)
	h, c := open(t, hostNS), open(t, ctrNS)
	br, _, err := h.BridgeEnsure("br-later", 1500)
	if err != nil {
		t.Fatal(err)
	}
	v := link.Veth{Name: "vethlater", Alias: "knit:abc", MasterIndex: br, Hairpin: true,
		PeerName: "eth0", PeerNetns: ctrNS, AttachLater: true}
	idx, err := h.VethAdd(v)
	if err != nil {
		t.Fatal(err)
	}
	host := must[link.Link](t)(h.LinkGet("vethlater"))
	if host.Up || host.MasterIndex != 0 || host.Alias != "knit:abc" {
		t.Errorf("host end before VethAttach = %+v, want down, on no bridge, with its alias", host)
	}
	peer := must[link.Link](t)(c.LinkGet("eth0"))
	if err := c.LinkSetUp(peer.Index); err != nil {
		t.Fatal(err)
	}
	if err := h.VethAttach(idx, v); err != nil {
		t.Fatal(err)
	}
	host = must[link.Link](t)(h.LinkGet("vethlater"))
	if !host.Up || host.MasterIndex != br {
		t.Errorf("host end after VethAttach = %+v, want up on bridge %d", host, br)
	}
	ports := must[[]link.Link](t)(h.BridgePorts(br))
	if len(ports) != 1 || ports[0].Name != "vethlater" {
		t.Errorf("BridgePorts = %+v", ports)
	}
}

// WaitForwarding, asked by netlink in the caller's namespace: a port that
// is up on a bridge that is up forwards once the kernel enables it (about
// a second at most); a port that is down, a link that is not a port, and
// a name nothing has do not.
func TestWaitForwarding(t *testing.T) {
	ns := testutil.NewNetns(t)
	h := open(t, ns)
	if _, _, err := h.BridgeEnsure("br-wait", 1500); err != nil {
		t.Fatal(err)
	}
	err := netns.Do(ns, func() error {
		br, err := netlink.LinkByName("br-wait")
		if err != nil {
			return err
		}
		for _, v := range []*netlink.Veth{
			{LinkAttrs: netlink.LinkAttrs{Name: "up0", MasterIndex: br.Attrs().Index}, PeerName: "up1"},
			{LinkAttrs: netlink.LinkAttrs{Name: "down0", MasterIndex: br.Attrs().Index}, PeerName: "down1"},
		} {
			if err := netlink.LinkAdd(v); err != nil {
				return err
			}
		}
		for _, name := range []string{"up0", "up1", "down1"} {
			l, err := netlink.LinkByName(name)
			if err == nil {
				err = netlink.LinkSetUp(l)
			}
			if err != nil {
				return err
			}
		}
		start := time.Now()
		if !link.WaitForwarding("up0", 5*time.Second) {
			t.Errorf("a port that is up did not forward within 5 s")
		}
		t.Logf("up0 forwarded after %v", time.Since(start))
		for _, name := range []string{"down0", "up1", "br-wait", "nosuch"} {
			if link.WaitForwarding(name, 300*time.Millisecond) {
				t.Errorf("%s forwards, as WaitForwarding says", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Announce, through a veth pair: the other end's entries for the link's
// addresses, which pointed elsewhere, point at the link's MAC (a
// gratuitous ARP, a neighbour advertisement with override); one for an
// address asked for but not on the link is left as it was.
func TestAnnounceUpdatesNeighbours(t *testing.T) {
	ns := testutil.NewNetns(t)
	const other = "02:00:00:00:00:99"
	err := netns.Do(ns, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ann0"}, PeerName: "ann1"}); err != nil {
			return err
		}
		ann0, err := netlink.LinkByName("ann0")
		if err != nil {
			return err
		}
		ann1, err := netlink.LinkByName("ann1")
		if err != nil {
			return err
		}
		for _, c := range []struct {
			l    netlink.Link
			addr string
		}{{ann0, "10.98.0.2/24"}, {ann0, "fd00:98::2/64"}, {ann1, "10.98.0.1/24"}, {ann1, "fd00:98::1/64"}} {
			a, err := netlink.ParseAddr(c.addr)
			if err != nil {
				return err
			}
			a.Flags = unix.IFA_F_NODAD
			if err := netlink.AddrAdd(c.l, a); err != nil {
				return err
			}
		}
		for _, l := range []netlink.Link{ann0, ann1} {
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		mac, _ := net.ParseMAC(other)
		stale := []string{"10.98.0.2", "10.98.0.3", "fd00:98::2"}
		for _, a := range stale {
			family := netlink.FAMILY_V4
			if strings.Contains(a, ":") {
				family = netlink.FAMILY_V6
			}
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: ann1.Attrs().Index, Family: family, State: netlink.NUD_STALE,
				IP: net.ParseIP(a), HardwareAddr: mac}); err != nil {
				return err
			}
		}
		// Until the link watch has seen the carrier, a new link's queue
		// drops what it is given.
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			l, err := netlink.LinkByName("ann0")
			if err != nil {
				return err
			}
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("ann0 is %v after 3 s", l.Attrs().OperState)
			}
		}
		// ARP changes an entry's MAC only once the entry is older than
		// its locktime (1 s), as a neighbour's would be.
		time.Sleep(1100 * time.Millisecond)
		var addrs []netip.Addr
		for _, a := range stale {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
		if err := link.Announce("ann0", addrs); err != nil {
			return err
		}
		want := map[string]string{"10.98.0.2": ann0.Attrs().HardwareAddr.String(), "10.98.0.3": other, "fd00:98::2": ann0.Attrs().HardwareAddr.String()}
		var got map[string]string
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			got = map[string]string{}
			for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
				neighs, err := netlink.NeighList(ann1.Attrs().Index, family)
				if err != nil {
					return err
				}
				for _, n := range neighs {
					if _, ok := want[n.IP.String()]; ok {
						got[n.IP.String()] = n.HardwareAddr.String()
					}
				}
			}
			if maps.Equal(got, want) {
				return nil
			}
		}
		t.Errorf("the other end's entries: %v, want %v", got, want)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

package bridge_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/driver/bridge"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/testutil"
)

// env is a throwaway "host" namespace in which the driver runs.
type env struct {
	t    *testing.T
	host string
	d    *bridge.Driver
}

func newEnv(t *testing.T) *env {
	return &env{t: t, host: testutil.NewNetns(t), d: bridge.New()}
}

// in runs fn in the fake host namespace, where link.Host() binds.
func (e *env) in(fn func() error) error { return netns.Do(e.host, fn) }

func (e *env) must(fn func() error) {
	e.t.Helper()
	if err := e.in(fn); err != nil {
		e.t.Fatal(err)
	}
}

func open(t *testing.T, ns string) *link.Handle {
	t.Helper()
	h, err := link.At(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func testNetwork() *driver.Network {
	return &driver.Network{
		Name: "test", Driver: "bridge", Bridge: "knit-test",
		Subnets: []driver.Subnet{
			{Prefix: netip.MustParsePrefix("10.77.0.0/24"), Gateway: netip.MustParseAddr("10.77.0.1")},
			{Prefix: netip.MustParsePrefix("fd77::/64"), Gateway: netip.MustParseAddr("fd77::1")},
		},
	}
}

func endpoint(id string, host byte) *driver.Endpoint {
	return &driver.Endpoint{
		ContainerID: id,
		IfName:      "eth0",
		MAC:         net.HardwareAddr{0x02, 0x42, 10, 77, 0, host},
		Addrs: []netip.Prefix{
			netip.MustParsePrefix(fmt.Sprintf("10.77.0.%d/24", host)),
			netip.MustParsePrefix(fmt.Sprintf("fd77::%d/64", host)),
		},
		Gateways:     []netip.Addr{netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("fd77::1")},
		DefaultRoute: true,
	}
}

func TestCreateNetworkIdempotentAndRepairs(t *testing.T) {
	e := newEnv(t)
	n := testNetwork()
	h := open(t, e.host)
	check := func() {
		t.Helper()
		br, err := h.BridgeGet(n.Bridge)
		if err != nil {
			t.Fatal(err)
		}
		if !br.Up || br.MTU != 1500 {
			t.Errorf("bridge = %+v, want up with MTU 1500", br)
		}
		addrs, err := h.AddrList(br.Index)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"10.77.0.1/24", "fd77::1/64"} {
			if !slices.Contains(addrs, netip.MustParsePrefix(want)) {
				t.Errorf("bridge addresses %v, missing %s", addrs, want)
			}
		}
	}
	e.must(func() error { return e.d.CreateNetwork(n) })
	e.must(func() error { return e.d.CreateNetwork(n) })
	check()
	// Someone deleted the bridge: CreateNetwork puts it back.
	if err := h.LinkDel(n.Bridge); err != nil {
		t.Fatal(err)
	}
	e.must(func() error { return e.d.CreateNetwork(n) })
	check()
	// Someone set it down: CreateNetwork sets it up again.
	if out, err := exec.Command("nsenter", "--net="+e.host, "ip", "link", "set", n.Bridge, "down").CombinedOutput(); err != nil {
		t.Fatalf("ip link set down: %v: %s", err, out)
	}
	e.must(func() error { return e.d.CreateNetwork(n) })
	check()
	for range 2 {
		e.must(func() error { return e.d.DeleteNetwork(n) })
	}
	if _, err := h.LinkGet(n.Bridge); !link.IsNotFound(err) {
		t.Fatalf("bridge after DeleteNetwork: %v", err)
	}
}

func TestCreateNetworkRollsBack(t *testing.T) {
	e := newEnv(t)
	n := testNetwork()
	n.Subnets[1].Prefix = netip.Prefix{} // fails after the bridge is made
	if err := e.in(func() error { return e.d.CreateNetwork(n) }); err == nil {
		t.Fatal("CreateNetwork with a bad gateway succeeded")
	}
	if _, err := open(t, e.host).LinkGet(n.Bridge); !link.IsNotFound(err) {
		t.Fatalf("bridge left behind: %v", err)
	}
}

func TestExternalBridge(t *testing.T) {
	e := newEnv(t)
	n := testNetwork()
	n.External = true
	err := e.in(func() error { return e.d.CreateNetwork(n) })
	if errdefs.KindOf(err) != errdefs.KindNotFound {
		t.Fatalf("CreateNetwork(missing external) = %v, want not found", err)
	}
	h := open(t, e.host)
	if _, err := h.LinkGet(n.Bridge); !link.IsNotFound(err) {
		t.Fatalf("external bridge was created: %v", err)
	}
	if _, _, err := h.BridgeEnsure(n.Bridge, 1500); err != nil {
		t.Fatal(err)
	}
	e.must(func() error { return e.d.CreateNetwork(n) })
	e.must(func() error { return e.d.DeleteNetwork(n) })
	if _, err := h.BridgeGet(n.Bridge); err != nil {
		t.Fatalf("DeleteNetwork removed an external bridge: %v", err)
	}
}

// ping asks until an answer comes, for up to 5 s: a port whose peer has
// just come up may not forward yet (the kernel reports carrier changes
// with a delay, up to a second on a busy machine), and the test is of
// reachability, not of the first packet.
func ping(t *testing.T, ns string, addr netip.Addr) error {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+ns, "ping", "-c1", "-w5", addr.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", addr, ns, err, out)
	}
	return nil
}

// checkSandbox asserts that ep is configured, up and routed inside ns.
func checkSandbox(t *testing.T, ns string, ep *driver.Endpoint) {
	t.Helper()
	c := open(t, ns)
	eth, err := c.LinkGet(ep.IfName)
	if err != nil {
		t.Fatal(err)
	}
	if !eth.Up || eth.MTU != 1500 || !bytes.Equal(eth.MAC, ep.MAC) {
		t.Errorf("%s = %+v", ep.IfName, eth)
	}
	addrs, err := c.AddrList(eth.Index)
	if err != nil {
		t.Fatal(err)
	}
	routes, err := c.RouteList()
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range ep.Addrs {
		if !slices.Contains(addrs, a) {
			t.Errorf("addresses %v, missing %v", addrs, a)
		}
		def := link.Route{Dst: netip.PrefixFrom(ep.Gateways[i].Unmap(), 0).Masked(), Gateway: ep.Gateways[i], LinkIndex: eth.Index}
		if !slices.Contains(routes, def) {
			t.Errorf("routes %+v, missing %+v", routes, def)
		}
	}
}

var vethName = regexp.MustCompile(`^veth[0-9a-f]{7}$`)

func TestJoinLeave(t *testing.T) {
	e := newEnv(t)
	n := testNetwork()
	e.must(func() error { return e.d.CreateNetwork(n) })
	ns1, ns2 := testutil.NewNetns(t), testutil.NewNetns(t)
	ep1, ep2 := endpoint("c1", 2), endpoint("c2", 3)
	e.must(func() error { return e.d.Join(n, ep1, driver.Sandbox{NetnsPath: ns1}) })
	e.must(func() error { return e.d.Join(n, ep2, driver.Sandbox{NetnsPath: ns2}) })
	checkSandbox(t, ns1, ep1)
	checkSandbox(t, ns2, ep2)

	h := open(t, e.host)
	br, err := h.BridgeGet(n.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	hostEnd, err := h.LinkGet(ep1.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	if !vethName.MatchString(hostEnd.Name) || hostEnd.MasterIndex != br.Index || !hostEnd.Up ||
		hostEnd.Alias != "knit:c1" || hostEnd.MTU != 1500 {
		t.Errorf("host end = %+v", hostEnd)
	}

	for _, a := range []netip.Addr{ep2.Addrs[0].Addr(), ep2.Addrs[1].Addr(), ep1.Gateways[0], ep1.Gateways[1]} {
		if err := ping(t, ns1, a); err != nil {
			t.Error(err)
		}
	}

	for range 2 {
		e.must(func() error { return e.d.Leave(n, ep1, driver.Sandbox{NetnsPath: ns1}, driver.LeaveOptions{}) })
	}
	if _, err := h.LinkGet(ep1.HostIf); !link.IsNotFound(err) {
		t.Errorf("host end after Leave: %v", err)
	}
	if _, err := open(t, ns1).LinkGet("eth0"); !link.IsNotFound(err) {
		t.Errorf("eth0 after Leave: %v", err)
	}
	// With the sandbox gone, Leave must not touch the kernel.
	e.must(func() error {
		return e.d.Leave(n, ep2, driver.Sandbox{NetnsPath: ns2}, driver.LeaveOptions{SandboxGone: true})
	})
	if _, err := h.LinkGet(ep2.HostIf); err != nil {
		t.Errorf("Leave(SandboxGone) deleted the veth: %v", err)
	}
}

func TestJoinRollsBack(t *testing.T) {
	e := newEnv(t)
	n := testNetwork()
	e.must(func() error { return e.d.CreateNetwork(n) })
	ns := testutil.NewNetns(t)
	h, c := open(t, e.host), open(t, ns)
	br, err := h.BridgeGet(n.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	dupAddr := endpoint("dup", 2)
	dupAddr.Addrs = append(dupAddr.Addrs, dupAddr.Addrs[0])
	badGw := endpoint("gw", 2)
	badGw.Gateways[0] = netip.MustParseAddr("192.0.2.1") // not on the link
	for _, ep := range []*driver.Endpoint{dupAddr, badGw} {
		if err := e.in(func() error { return e.d.Join(n, ep, driver.Sandbox{NetnsPath: ns}) }); err == nil {
			t.Fatalf("Join(%s) succeeded", ep.ContainerID)
		}
		if ep.HostIf != "" {
			t.Errorf("failed Join set HostIf %q", ep.HostIf)
		}
		if ports, err := h.BridgePorts(br.Index); err != nil || len(ports) != 0 {
			t.Errorf("after failed Join(%s): ports %+v, %v", ep.ContainerID, ports, err)
		}
		if _, err := c.LinkGet("eth0"); !link.IsNotFound(err) {
			t.Errorf("after failed Join(%s): eth0 left: %v", ep.ContainerID, err)
		}
	}

	// eth0 already taken in the sandbox: a conflict, not a name retry loop.
	e.must(func() error { return e.d.Join(n, endpoint("first", 2), driver.Sandbox{NetnsPath: ns}) })
	err = e.in(func() error { return e.d.Join(n, endpoint("second", 3), driver.Sandbox{NetnsPath: ns}) })
	if errdefs.KindOf(err) != errdefs.KindConflict {
		t.Errorf("Join(eth0 taken) = %v, want conflict", err)
	}
	if ports, _ := h.BridgePorts(br.Index); len(ports) != 1 {
		t.Errorf("ports after conflict: %+v", ports)
	}
}

func TestStraysAndRemoveLink(t *testing.T) {
	e := newEnv(t)
	n := testNetwork()
	e.must(func() error { return e.d.CreateNetwork(n) })
	ns := testutil.NewNetns(t)
	ep := endpoint("gone", 2)
	e.must(func() error { return e.d.Join(n, ep, driver.Sandbox{NetnsPath: ns}) })

	var strays []string
	strays1 := func(keep func(string, string) bool) []string {
		t.Helper()
		e.must(func() (err error) { strays, err = e.d.Strays(n, keep); return err })
		return strays
	}
	if got := strays1(func(_, id string) bool { return id == "gone" }); len(got) != 0 {
		t.Errorf("Strays(owner known) = %v", got)
	}
	got := strays1(func(string, string) bool { return false })
	if !slices.Equal(got, []string{ep.HostIf}) {
		t.Fatalf("Strays(owner unknown) = %v, want [%s]", got, ep.HostIf)
	}
	for range 2 {
		e.must(func() error { return e.d.RemoveLink(ep.HostIf) })
	}
	if got := strays1(func(string, string) bool { return false }); len(got) != 0 {
		t.Errorf("Strays after RemoveLink = %v", got)
	}
	e.must(func() error { return e.d.DeleteNetwork(n) })
	if got := strays1(func(string, string) bool { return false }); got != nil {
		t.Errorf("Strays without a bridge = %v", got)
	}
}

// TestJoinCost reports what one Join and one Leave cost; the budget is
// loose because -race and loaded machines slow netlink down.
func TestJoinCost(t *testing.T) {
	e := newEnv(t)
	n := testNetwork()
	e.must(func() error { return e.d.CreateNetwork(n) })
	const rounds = 20
	var join, leave time.Duration
	for i := range rounds {
		ns := testutil.NewNetns(t)
		ep := endpoint(fmt.Sprint(i), byte(i+2))
		e.must(func() error {
			start := time.Now()
			if err := e.d.Join(n, ep, driver.Sandbox{NetnsPath: ns}); err != nil {
				return err
			}
			join += time.Since(start)
			start = time.Now()
			err := e.d.Leave(n, ep, driver.Sandbox{NetnsPath: ns}, driver.LeaveOptions{})
			leave += time.Since(start)
			return err
		})
	}
	t.Logf("Join %v, Leave %v (mean of %d)", join/rounds, leave/rounds, rounds)
	if join/rounds > 50*time.Millisecond {
		t.Errorf("Join takes %v", join/rounds)
	}
}

// Join uses the bridge's index that CreateNetwork found; if the bridge was
// made again in between (an administrator, a racing command), the index is
// stale and Join looks the bridge up by name once more.
func TestJoinAfterBridgeMadeAgain(t *testing.T) {
	e := newEnv(t)
	n := testNetwork()
	e.must(func() error { return e.d.CreateNetwork(n) })
	stale := n.LinkIndex
	e.must(func() error { return e.d.DeleteNetwork(n) })
	again := *n
	e.must(func() error { return e.d.CreateNetwork(&again) })
	if stale == 0 || again.LinkIndex == stale {
		t.Fatalf("indexes %d then %d: want two different ones", stale, again.LinkIndex)
	}
	ns := testutil.NewNetns(t)
	ep := endpoint("c1", 2)
	e.must(func() error { return e.d.Join(n, ep, driver.Sandbox{NetnsPath: ns}) })
	hostEnd, err := open(t, e.host).LinkGet(ep.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	if hostEnd.MasterIndex != again.LinkIndex || !hostEnd.Up {
		t.Errorf("host end = %+v, want up on bridge %d", hostEnd, again.LinkIndex)
	}
}

// A second interface into a namespace that has its default routes keeps
// them: the Join succeeds and its endpoint names no route it did not add.
func TestJoinKeepsAnExistingDefaultRoute(t *testing.T) {
	e := newEnv(t)
	n := testNetwork()
	e.must(func() error { return e.d.CreateNetwork(n) })
	ns := testutil.NewNetns(t)
	first, second := endpoint("c1", 2), endpoint("c1", 3)
	second.IfName = "net1"
	e.must(func() error { return e.d.Join(n, first, driver.Sandbox{NetnsPath: ns}) })
	e.must(func() error { return e.d.Join(n, second, driver.Sandbox{NetnsPath: ns}) })
	if second.DefaultRoute || len(second.Gateways) != 0 {
		t.Errorf("second endpoint: DefaultRoute %v, Gateways %v; want no routes of its own", second.DefaultRoute, second.Gateways)
	}
	if !first.DefaultRoute || len(first.Gateways) != 2 {
		t.Errorf("first endpoint: DefaultRoute %v, Gateways %v; want both routes", first.DefaultRoute, first.Gateways)
	}
	checkSandbox(t, ns, first)
}

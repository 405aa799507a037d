package link_test

import (
	"context"
	"encoding/json"
	"math"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/testutil"
)

// shapeNet is a container's veth, its host end on a bridge: host
// 10.99.0.1 on br-bw, container 10.99.0.2 on eth0.
type shapeNet struct {
	hostNS, ctrNS string
	h             *link.Handle
	dev           string // host end
	index         int
}

const (
	bwHostAddr = "10.99.0.1"
	bwCtrAddr  = "10.99.0.2"
)

func newShapeNet(t *testing.T) shapeNet {
	t.Helper()
	hostNS, ctrNS := testutil.NewNetns(t), testutil.NewNetns(t)
	h, c := open(t, hostNS), open(t, ctrNS)
	br, _, err := h.BridgeEnsure("br-bw", 1500)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(br, netip.MustParsePrefix(bwHostAddr+"/24")); err != nil {
		t.Fatal(err)
	}
	idx, err := h.VethAdd(link.Veth{Name: "vethbw", MasterIndex: br, PeerName: "eth0", PeerNetns: ctrNS})
	if err != nil {
		t.Fatal(err)
	}
	peer := must[link.Link](t)(c.LinkGet("eth0"))
	if err := c.AddrAdd(peer.Index, netip.MustParsePrefix(bwCtrAddr+"/24")); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{c.LinkSetUp(peer.Index), c.SetUp("lo"), h.SetUp("lo")} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return shapeNet{hostNS: hostNS, ctrNS: ctrNS, h: h, dev: "vethbw", index: idx}
}

// tc runs tc in the namespace ns and returns its output.
func tc(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "tc"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tc %v: %v: %s", args, err, out)
	}
	return string(out)
}

var tcRate = regexp.MustCompile(`rate (\d+(?:\.\d+)?)([KMG]?)bit`)

// tcRates returns the rates, in bits/s, in tc's output.
func tcRates(t *testing.T, out string) []uint64 {
	t.Helper()
	var rates []uint64
	for _, m := range tcRate.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		v *= map[string]float64{"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m[2]]
		rates = append(rates, uint64(v))
	}
	return rates
}

// near reports whether got is within 1% of want.
func near(got, want uint64) bool {
	return math.Abs(float64(got)-float64(want)) <= float64(want)/100
}

func shapeNear(got, want link.Shape) bool {
	return near(got.IngressRate, want.IngressRate) && near(got.IngressBurst, want.IngressBurst) &&
		near(got.EgressRate, want.EgressRate) && near(got.EgressBurst, want.EgressBurst)
}

// egressIfb returns the name of the ifb device dev's egress is redirected
// to, or "" if it is policed in place.
func egressIfb(t *testing.T, ns, dev string) string {
	t.Helper()
	out := tc(t, ns, "filter", "show", "dev", dev, "parent", "ffff:")
	if m := regexp.MustCompile(`mirred \(Egress Redirect to device (\S+)\)`).FindStringSubmatch(out); m != nil {
		return m[1]
	}
	if !strings.Contains(out, "police") {
		t.Fatalf("filter on %s neither polices nor redirects:\n%s", dev, out)
	}
	return ""
}

// TestShapeLink installs, reads back, replaces and removes limits, checking
// against what tc shows.
func TestShapeLink(t *testing.T) {
	n := newShapeNet(t)
	want := link.Shape{IngressRate: 10_000_000, IngressBurst: 256_000, EgressRate: 20_000_000, EgressBurst: 1_000_000}
	if got := must[link.Shape](t)(n.h.ShapeGet(n.dev)); got != (link.Shape{}) {
		t.Fatalf("ShapeGet before ShapeLink = %+v, want zero", got)
	}
	if err := n.h.ShapeLink(n.dev, want); err != nil {
		t.Fatal(err)
	}
	if got := must[link.Shape](t)(n.h.ShapeGet(n.dev)); !shapeNear(got, want) {
		t.Errorf("ShapeGet = %+v, want about %+v", got, want)
	}

	qdiscs := tc(t, n.hostNS, "qdisc", "show", "dev", n.dev)
	if !strings.Contains(qdiscs, "qdisc tbf 1: root") || !strings.Contains(qdiscs, "lat 25ms") ||
		!strings.Contains(qdiscs, "qdisc ingress ffff:") {
		t.Errorf("tc qdisc show dev %s:\n%s", n.dev, qdiscs)
	}
	if r := tcRates(t, qdiscs); len(r) != 1 || !near(r[0], want.IngressRate) {
		t.Errorf("tc shows ingress rates %v, want [%d]", r, want.IngressRate)
	}
	filters := tc(t, n.hostNS, "filter", "show", "dev", n.dev, "parent", "ffff:")
	if !strings.Contains(filters, "u32") || !strings.Contains(filters, "match 00000000/00000000 at 0") {
		t.Errorf("tc filter show dev %s parent ffff: is no u32 match-all:\n%s", n.dev, filters)
	}
	ifb := egressIfb(t, n.hostNS, n.dev)
	egress := filters // the police action, or the TBF on the ifb
	if ifb != "" {
		t.Logf("no police action in this kernel: egress shaped on %s", ifb)
		egress = tc(t, n.hostNS, "qdisc", "show", "dev", ifb)
		if !strings.Contains(egress, "qdisc tbf 1: root") {
			t.Errorf("tc qdisc show dev %s:\n%s", ifb, egress)
		}
		l := must[link.Link](t)(n.h.LinkGet(ifb))
		if l.Kind != "ifb" || !l.Up || l.Alias != "knit-shape:"+n.dev {
			t.Errorf("ifb = %+v", l)
		}
	}
	if r := tcRates(t, egress); len(r) != 1 || !near(r[0], want.EgressRate) {
		t.Errorf("tc shows egress rates %v, want [%d]", r, want.EgressRate)
	}

	// Again, with other limits: replaced in place.
	want = link.Shape{IngressRate: 5_000_000, EgressRate: 1_000_000_000}
	if err := n.h.ShapeLink(n.dev, want); err != nil {
		t.Fatal(err)
	}
	got := must[link.Shape](t)(n.h.ShapeGet(n.dev))
	if !near(got.IngressRate, want.IngressRate) || !near(got.EgressRate, want.EgressRate) {
		t.Errorf("ShapeGet after replacing = %+v, want rates of %+v", got, want)
	}
	// Default bursts: at least 64 KiB, 10ms at a high rate.
	if !near(got.IngressBurst, 64<<10*8) || !near(got.EgressBurst, 1_000_000_000/100) {
		t.Errorf("default bursts = %d, %d bits; want %d, %d", got.IngressBurst, got.EgressBurst, 64<<10*8, 1_000_000_000/100)
	}
	if r := tcRates(t, tc(t, n.hostNS, "qdisc", "show", "dev", n.dev)); len(r) != 1 || !near(r[0], want.IngressRate) {
		t.Errorf("tc shows ingress rates %v after replacing, want [%d]", r, want.IngressRate)
	}
	if out := tc(t, n.hostNS, "filter", "show", "dev", n.dev, "parent", "ffff:"); strings.Count(out, "fh 800::") != 1 {
		t.Errorf("not exactly one filter after replacing:\n%s", out)
	}

	// Zero rates remove each direction's limit.
	if err := n.h.ShapeLink(n.dev, link.Shape{EgressRate: 3_000_000}); err != nil {
		t.Fatal(err)
	}
	if got := must[link.Shape](t)(n.h.ShapeGet(n.dev)); got.IngressRate != 0 || !near(got.EgressRate, 3_000_000) {
		t.Errorf("ShapeGet after dropping the ingress limit = %+v", got)
	}
	if out := tc(t, n.hostNS, "qdisc", "show", "dev", n.dev); strings.Contains(out, "tbf") {
		t.Errorf("tbf left after dropping the ingress limit:\n%s", out)
	}
	if err := n.h.ShapeLink(n.dev, link.Shape{IngressRate: 3_000_000}); err != nil {
		t.Fatal(err)
	}
	if got := must[link.Shape](t)(n.h.ShapeGet(n.dev)); got.EgressRate != 0 || !near(got.IngressRate, 3_000_000) {
		t.Errorf("ShapeGet after dropping the egress limit = %+v", got)
	}
	if out := tc(t, n.hostNS, "qdisc", "show", "dev", n.dev); strings.Contains(out, "ingress") {
		t.Errorf("ingress qdisc left after dropping the egress limit:\n%s", out)
	}
	if ifb != "" {
		if _, err := n.h.LinkGet(ifb); !link.IsNotFound(err) {
			t.Errorf("%s left after dropping the egress limit: %v", ifb, err)
		}
	}

	// ShapeDel removes everything, as does an all-zero Shape.
	for _, del := range []func() error{
		func() error { return n.h.ShapeDel(n.dev) },
		func() error { return n.h.ShapeLink(n.dev, link.Shape{}) },
	} {
		if err := n.h.ShapeLink(n.dev, link.Shape{IngressRate: 1_000_000, EgressRate: 1_000_000}); err != nil {
			t.Fatal(err)
		}
		if err := del(); err != nil {
			t.Fatal(err)
		}
		if got := must[link.Shape](t)(n.h.ShapeGet(n.dev)); got != (link.Shape{}) {
			t.Errorf("ShapeGet after removal = %+v", got)
		}
		if out := tc(t, n.hostNS, "qdisc", "show", "dev", n.dev); strings.Contains(out, "tbf") || strings.Contains(out, "ingress") {
			t.Errorf("qdiscs left after removal:\n%s", out)
		}
	}
	assertNoIfb(t, n.hostNS)
}

// assertNoIfb fails if the namespace has an ifb device.
func assertNoIfb(t *testing.T, ns string) {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+ns, "ip", "-o", "link", "show", "type", "ifb").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("ifb devices left: %v: %s", err, out)
	}
}

// TestShapeLinkHost goes through the package-level ShapeLink, which acts in
// the calling thread's namespace.
func TestShapeLinkHost(t *testing.T) {
	n := newShapeNet(t)
	s := link.Shape{IngressRate: 8_000_000, EgressRate: 4_000_000}
	if err := netns.Do(n.hostNS, func() error { return link.ShapeLink(n.dev, s) }); err != nil {
		t.Fatal(err)
	}
	if got := must[link.Shape](t)(n.h.ShapeGet(n.dev)); !near(got.IngressRate, s.IngressRate) || !near(got.EgressRate, s.EgressRate) {
		t.Errorf("ShapeGet = %+v, want rates of %+v", got, s)
	}
	err := netns.Do(n.hostNS, func() error { return link.ShapeLink("nope", s) })
	if !link.IsNotFound(err) {
		t.Errorf("ShapeLink(nope) = %v, want not found", err)
	}
}

func TestShapeErrors(t *testing.T) {
	n := newShapeNet(t)
	s := link.Shape{IngressRate: 1_000_000, EgressRate: 1_000_000}
	if err := n.h.ShapeLink("nope", s); !link.IsNotFound(err) {
		t.Errorf("ShapeLink(nope) = %v, want not found", err)
	}
	if _, err := n.h.ShapeGet("nope"); !link.IsNotFound(err) {
		t.Errorf("ShapeGet(nope) = %v, want not found", err)
	}
	if err := n.h.ShapeDel("nope"); !link.IsNotFound(err) {
		t.Errorf("ShapeDel(nope) = %v, want not found", err)
	}
	for _, bad := range []link.Shape{
		{IngressRate: 7},
		{EgressRate: 7},
	} {
		if err := n.h.ShapeLink(n.dev, bad); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("ShapeLink(%+v) = %v, want invalid", bad, err)
		}
	}
	if got := must[link.Shape](t)(n.h.ShapeGet(n.dev)); got != (link.Shape{}) {
		t.Errorf("invalid limits left %+v", got)
	}
	// Bursts the kernel cannot hold are capped: over 32 bits of bytes, or
	// of ticks at the rate, as containerd (2^32-1 bits) and CRI-O
	// (2^35-9 bits) send them with a Kubernetes limit of 10M.
	for _, big := range []link.Shape{
		{IngressRate: 1000, IngressBurst: 1 << 40},
		{EgressRate: 8000, EgressBurst: 8_000 * 300},
		{IngressRate: 10_000_000, IngressBurst: math.MaxUint32, EgressRate: 10_000_000, EgressBurst: math.MaxUint32*8 - 1},
	} {
		if err := n.h.ShapeLink(n.dev, big); err != nil {
			t.Errorf("ShapeLink(%+v) = %v, want the burst capped", big, err)
			continue
		}
		got := must[link.Shape](t)(n.h.ShapeGet(n.dev))
		if !near(got.IngressRate, big.IngressRate) || !near(got.EgressRate, big.EgressRate) {
			t.Errorf("ShapeGet after %+v = %+v: rates differ", big, got)
		}
		for _, b := range [][2]uint64{{got.IngressBurst, big.IngressBurst}, {got.EgressBurst, big.EgressBurst}} {
			if b[1] != 0 && (b[0] == 0 || b[0] > b[1]) {
				t.Errorf("ShapeGet after %+v = %+v: a burst of %d bits, want (0, %d]", big, got, b[0], b[1])
			}
		}
	}
}

// egressShapedOverIfb returns a shapeNet whose host end has an egress
// limit, and the name of the ifb device that queues it; it skips the test
// where the kernel has the police action, which needs no ifb.
func egressShapedOverIfb(t *testing.T) (shapeNet, string) {
	t.Helper()
	n := newShapeNet(t)
	if err := n.h.ShapeLink(n.dev, link.Shape{EgressRate: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	ifb := egressIfb(t, n.hostNS, n.dev)
	if ifb == "" {
		t.Skip("the kernel has the police action: no ifb")
	}
	return n, ifb
}

// TestShapeRollback makes the egress half fail after the ingress half was
// installed: a link squats on the ifb's name. Only where the kernel has no
// police action, since otherwise no ifb is needed.
func TestShapeRollback(t *testing.T) {
	n, ifb := egressShapedOverIfb(t)
	if err := n.h.ShapeDel(n.dev); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.h.BridgeEnsure(ifb, 1500); err != nil {
		t.Fatal(err)
	}
	err := n.h.ShapeLink(n.dev, link.Shape{IngressRate: 1_000_000, EgressRate: 1_000_000})
	if errdefs.KindOf(err) != errdefs.KindConflict {
		t.Fatalf("ShapeLink with %s taken = %v, want conflict", ifb, err)
	}
	if got := must[link.Shape](t)(n.h.ShapeGet(n.dev)); got != (link.Shape{}) {
		t.Errorf("failed ShapeLink left %+v", got)
	}
	if l, err := n.h.LinkGet(ifb); err != nil || l.Kind != "bridge" {
		t.Errorf("the squatting %s = %+v, %v; want it untouched", ifb, l, err)
	}
}

// TestShapeSweepsIfb checks that an ifb outliving its link (deleting the
// veth does not take it) goes at the next ShapeLink.
func TestShapeSweepsIfb(t *testing.T) {
	n, ifb := egressShapedOverIfb(t)
	if err := n.h.LinkDel(n.dev); err != nil {
		t.Fatal(err)
	}
	if _, err := n.h.LinkGet(ifb); err != nil {
		t.Fatalf("%s went with its link: %v (the sweep is not needed)", ifb, err)
	}
	// Another link with a limit, so that its own ifb is kept.
	out, err := exec.Command("nsenter", "--net="+n.hostNS, "ip", "link", "add", "other0", "type", "veth", "peer", "name", "other1").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := n.h.ShapeLink("other0", link.Shape{EgressRate: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.h.LinkGet(ifb); !link.IsNotFound(err) {
		t.Errorf("%s of a deleted link outlived a ShapeLink: %v", ifb, err)
	}
	if got := must[link.Shape](t)(n.h.ShapeGet("other0")); !near(got.EgressRate, 1_000_000) {
		t.Errorf("ShapeGet(other0) = %+v", got)
	}
}

// TestShapeDelOfAGoneLink checks that ShapeDel of a link that is gone (a
// CNI DEL after the runtime deleted the namespace, and so the veth) says
// not found and takes the link's ifb.
func TestShapeDelOfAGoneLink(t *testing.T) {
	n, ifb := egressShapedOverIfb(t)
	if err := n.h.LinkDel(n.dev); err != nil {
		t.Fatal(err)
	}
	if err := n.h.ShapeDel(n.dev); !link.IsNotFound(err) {
		t.Errorf("ShapeDel(%s) of a deleted link = %v, want not found", n.dev, err)
	}
	if _, err := n.h.LinkGet(ifb); !link.IsNotFound(err) {
		t.Errorf("%s of a deleted link outlived a ShapeDel of it: %v", ifb, err)
	}
}

// iperf runs iperf3 for 2s between a server on the host end's bridge and a
// client in the container, and returns the throughput in Mbit/s: from the
// container (egress) or, reversed, into it (ingress).
func iperf(t *testing.T, n shapeNet, intoContainer bool) float64 {
	t.Helper()
	server := exec.Command("nsenter", "--net="+n.hostNS, "iperf3", "-s", "-1", "-B", bwHostAddr, "-p", "5201")
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = server.Process.Kill() // this server only, if still running
		_ = server.Wait()
	}()
	args := []string{"--net=" + n.ctrNS, "iperf3", "-c", bwHostAddr, "-p", "5201", "-t", "2", "-J", "--connect-timeout", "1000"}
	if intoContainer {
		args = append(args, "-R")
	}
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, "nsenter", args...).Output()
		cancel()
		var r struct {
			Error string
			End   struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			}
		}
		if jerr := json.Unmarshal(out, &r); jerr == nil && err == nil && r.Error == "" {
			return r.End.SumReceived.BitsPerSecond / 1e6
		}
		// The server may not be listening yet.
		if attempt == 20 {
			t.Fatalf("iperf3 client: %v: %s %s", err, r.Error, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestShapeBandwidth measures real traffic through 10 Mbit/s limits.
func TestShapeBandwidth(t *testing.T) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("needs iperf3")
	}
	n := newShapeNet(t)
	for _, dir := range []struct {
		name          string
		intoContainer bool
		limit         link.Shape
	}{
		{"ingress", true, link.Shape{IngressRate: 10_000_000}},
		{"egress", false, link.Shape{EgressRate: 10_000_000}},
	} {
		t.Run(dir.name, func(t *testing.T) {
			if err := n.h.ShapeDel(n.dev); err != nil {
				t.Fatal(err)
			}
			free := iperf(t, n, dir.intoContainer)
			if err := n.h.ShapeLink(n.dev, dir.limit); err != nil {
				t.Fatal(err)
			}
			limited := iperf(t, n, dir.intoContainer)
			// The other direction is not limited.
			other := iperf(t, n, !dir.intoContainer)
			t.Logf("%s: %.1f Mbit/s unlimited, %.2f Mbit/s limited to 10, other direction %.1f Mbit/s", dir.name, free, limited, other)
			if limited > 12 || limited < 6 {
				t.Errorf("%s limited to 10 Mbit/s: measured %.2f Mbit/s", dir.name, limited)
			}
			if free < 100 || other < 100 {
				t.Errorf("%s unlimited: measured %.1f Mbit/s, other direction %.1f Mbit/s; want far above 10", dir.name, free, other)
			}
		})
	}
}

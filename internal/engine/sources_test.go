package engine

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/firewalltest"
)

func endpoint(network, port string, addrs ...string) Endpoint {
	ep := Endpoint{Network: network, Endpoint: driver.Endpoint{HostIf: port}}
	for _, a := range addrs {
		ep.Addrs = append(ep.Addrs, netip.MustParsePrefix(a))
	}
	return ep
}

// Each port of a container may send from each of its addresses, and a
// record that does not name every port claims nothing (its unnamed
// port's own traffic would be dropped).
func TestClaimsOf(t *testing.T) {
	a := endpoint("front", "vetha", "10.81.0.2/24", "fd00:81::2/64")
	b := endpoint("back", "vethb", "10.82.0.2/24")
	src := func(port, addr string) firewall.Source {
		return firewall.Source{Port: port, Addr: netip.MustParseAddr(addr)}
	}
	got := claimsOf([]Endpoint{a, b})
	want := []firewall.Source{src("vetha", "10.81.0.2"), src("vetha", "fd00:81::2"), src("vetha", "10.82.0.2"),
		src("vethb", "10.81.0.2"), src("vethb", "fd00:81::2"), src("vethb", "10.82.0.2")}
	if !slices.Equal(got, want) {
		t.Errorf("claimsOf = %v, want %v", got, want)
	}
	unnamed := endpoint("back", "", "10.82.0.2/24")
	if got := claimsOf([]Endpoint{a, unnamed}); got != nil {
		t.Errorf("claimsOf with an unnamed port = %v, want none", got)
	}
	if got := pairsOf([]Endpoint{a, unnamed}); len(got) != 3 {
		t.Errorf("pairsOf with an unnamed port = %v, want the named port's three", got)
	}
}

// Leaving one network releases its address and every pair with its port
// or its address, and keeps the rest: after it, the container's claims
// are those of its remaining endpoint alone.
func TestReleaseEndpoint(t *testing.T) {
	fw := firewalltest.New()
	e := &Engine{fw: fw}
	a := endpoint("front", "vetha", "10.81.0.2/24")
	b := endpoint("back", "vethb", "10.82.0.2/24")
	if err := e.claim(fw, "c1", []Endpoint{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := e.releaseEndpoint("c1", []Endpoint{a, b}, b); err != nil {
		t.Fatal(err)
	}
	want := firewalltest.New()
	if err := want.AddSources("c1", claimsOf([]Endpoint{a})); err != nil {
		t.Fatal(err)
	}
	if fw.String() != want.String() {
		t.Errorf("after leaving back:\n%s\nwant:\n%s", fw, want)
	}
	// Once more (after the drop), and with the endpoint gone from the
	// list: nothing else goes.
	if err := e.releaseEndpoint("c1", []Endpoint{a}, b); err != nil {
		t.Fatal(err)
	}
	if fw.String() != want.String() {
		t.Errorf("after releasing again:\n%s\nwant:\n%s", fw, want)
	}
}

// A run claims under the names Join gives when no other link holds them;
// when Join gave another, the claims move to it, and none stays under
// the name not given (another container's port may hold it).
func TestClaimRenamed(t *testing.T) {
	fw := firewalltest.New()
	e := &Engine{fw: fw}
	claimed := []Endpoint{endpoint("front", "vethaaaa", "10.81.0.2/24")}
	if err := e.claim(fw, "c1", claimed); err != nil {
		t.Fatal(err)
	}
	c := &Container{ID: "c1", OwnsNetns: true, Endpoints: []Endpoint{endpoint("front", "vethbbbb", "10.81.0.2/24")}}
	if err := e.claimRenamed(c, claimed); err != nil {
		t.Fatal(err)
	}
	want := firewalltest.New()
	if err := want.AddSources("c1", claimsOf(c.Endpoints)); err != nil {
		t.Fatal(err)
	}
	if fw.String() != want.String() {
		t.Errorf("after the rename:\n%s\nwant:\n%s", fw, want)
	}
	calls := len(fw.Calls())
	if err := e.claimRenamed(c, c.Endpoints); err != nil || len(fw.Calls()) != calls {
		t.Errorf("claimRenamed with the names given: %v, calls %v", err, fw.Calls()[calls:])
	}
}

// A teardown releases the pairs of the name a run claimed under and Join
// did not give (another link held it) as well as the given one's.
func TestUnpublishAndReleaseOtherNames(t *testing.T) {
	fw := firewalltest.New()
	e := &Engine{fw: fw}
	given := []Endpoint{endpoint("front", "vethreal", "10.81.0.2/24")}
	claimed := []Endpoint{endpoint("front", "vethpred", "10.81.0.2/24")}
	for _, eps := range [][]Endpoint{claimed, given} {
		if err := e.claim(fw, "c1", eps); err != nil {
			t.Fatal(err)
		}
	}
	c := &Container{ID: "c1", OwnsNetns: true, Endpoints: given}
	if err := unpublishAndRelease(fw, c.ID, c.Ports, given, []Endpoint{{Network: "front", Endpoint: driver.Endpoint{HostIf: "vethpred"}}}); err != nil {
		t.Fatal(err)
	}
	if got := fw.String(); got != "" {
		t.Errorf("left after the release:\n%s", got)
	}
}

// A pod's attachments (one container ID, a network each) claim their
// addresses for each other's ports once complete: after the second's
// ADD, after a restore of the firewall, and the rest of the pod alone
// once one is torn down. Another pod, and a half-made attachment of the
// same one, stay out of it.
func TestCNIPodClaims(t *testing.T) {
	st := newStore(t)
	fw := firewalltest.New()
	e := firewallEngine(t, st, fw)
	attachment := func(container, ifname, port, addr string) *CNIAttachment {
		a := &CNIAttachment{ID: CNIAttachmentID(container, ifname), ContainerID: container, IfName: ifname, Network: "gone",
			Endpoint: endpoint("gone", port, addr)}
		recordAttachment(t, st, a)
		if err := fw.AddSources(a.ID, claimsOf([]Endpoint{a.Endpoint})); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := attachment("c1", "eth0", "vetha", "10.81.0.2/24")
	x := attachment("c2", "eth0", "vethx", "10.81.0.3/24")
	b := attachment("c1", "net1", "vethb", "10.82.0.2/24")
	half := &CNIAttachment{ID: CNIAttachmentID("c1", "net2"), ContainerID: "c1", IfName: "net2", Network: "gone",
		Endpoint: endpoint("gone", "", "10.83.0.2/24"), Owner: selfProc()}
	recordAttachment(t, st, half)
	if err := e.claimPod(b.ID); err != nil {
		t.Fatal(err)
	}
	want := firewalltest.New()
	for _, c := range []struct {
		a     *CNIAttachment
		ports []string
	}{{a, []string{"vetha", "vethb"}}, {b, []string{"vethb", "vetha"}}, {x, []string{"vethx"}}} {
		for _, p := range c.ports {
			if err := want.AddSources(c.a.ID, []firewall.Source{{Port: p, Addr: c.a.Endpoint.Addrs[0].Addr()}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := fw.String(); got != want.String() {
		t.Errorf("the pod's claims:\n%s\nwant:\n%s", got, want)
	}
	restored := firewalltest.New()
	e.fw = restored
	for _, id := range []string{a.ID, b.ID, x.ID, half.ID} {
		if err := e.restoreAttachmentPorts(id); err != nil {
			t.Fatal(err)
		}
	}
	if got := restored.String(); got != want.String() {
		t.Errorf("the pod's claims restored:\n%s\nwant:\n%s", got, want)
	}
	e.fw = fw
	if err := e.cniTeardown(b); err != nil {
		t.Fatal(err)
	}
	want = firewalltest.New()
	for _, c := range []*CNIAttachment{a, x} {
		if err := want.AddSources(c.ID, claimsOf([]Endpoint{c.Endpoint})); err != nil {
			t.Fatal(err)
		}
	}
	if got := fw.String(); got != want.String() {
		t.Errorf("left after the teardown of the pod's second attachment:\n%s\nwant:\n%s", got, want)
	}
}

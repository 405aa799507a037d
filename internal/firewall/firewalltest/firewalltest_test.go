package firewalltest_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/firewalltest"
)

func TestRecorder(t *testing.T) {
	r := firewalltest.New()
	var fw firewall.Firewall = r
	n := firewall.Network{Name: "n1", Bridge: "br0", Masquerade: true,
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}}
	for range 2 {
		if err := fw.EnsureNetwork(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.EnsureNetwork(firewall.Network{Name: "n2", Bridge: "br1", Internal: true, ICC: true}); err != nil {
		t.Fatal(err)
	}
	want := "network n1 bridge br0 subnets 10.99.0.0/24 masquerade\n" +
		"network n2 bridge br1 subnets  icc internal\n"
	if got := r.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}

	boom := errors.New("boom")
	r.FailOn("RemoveNetwork n1", boom)
	if err := fw.RemoveNetwork("n1"); !errors.Is(err, boom) {
		t.Fatalf("RemoveNetwork = %v, want boom", err)
	}
	if _, ok := r.Network("n1"); !ok {
		t.Fatal("failed RemoveNetwork removed n1")
	}
	for range 2 {
		if err := fw.RemoveNetwork("n1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := r.Network("n1"); ok {
		t.Fatal("n1 still installed")
	}
	if err := fw.EnsureNetwork(firewall.Network{Name: "bad name", Bridge: "br0"}); errdefs.KindOf(err) != errdefs.KindInvalid {
		t.Fatalf("EnsureNetwork(bad name) = %v, want invalid", err)
	}
	wantCalls := []string{"EnsureNetwork n1", "EnsureNetwork n1", "EnsureNetwork n2", "RemoveNetwork n1",
		"RemoveNetwork n1", "RemoveNetwork n1", "EnsureNetwork bad name"}
	if got := r.Calls(); !slices.Equal(got, wantCalls) {
		t.Fatalf("Calls() = %q, want %q", got, wantCalls)
	}
}

func TestRecorderPorts(t *testing.T) {
	r := firewalltest.New()
	var fw firewall.Firewall = r
	m := func(host string, port uint16) firewall.PortMapping {
		p := firewall.PortMapping{Network: "n1", HostPort: port, Proto: "tcp",
			ContainerIP: netip.MustParseAddr("10.99.0.2"), ContainerPort: 80}
		if host != "" {
			p.HostIP = netip.MustParseAddr(host)
		}
		return p
	}
	ports := []firewall.PortMapping{m("", 8080), m("127.0.0.1", 8081)}
	for range 2 {
		if err := fw.AddPorts("c1", ports); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.AddPorts("c2", []firewall.PortMapping{m("0.0.0.0", 8080)}); err != nil { // replaces c1's
		t.Fatal(err)
	}
	want := "port c1 n1 127.0.0.1:8081->10.99.0.2:80/tcp\n" + "port c2 n1 8080->10.99.0.2:80/tcp\n"
	if got := r.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if owners, _ := fw.Owners(); !slices.Equal(owners, []string{"c1", "c2"}) {
		t.Fatalf("Owners() = %v", owners)
	}
	for range 2 {
		if err := fw.RemovePorts("c1", ports); err != nil {
			t.Fatal(err)
		}
	}
	if owners, _ := fw.Owners(); !slices.Equal(owners, []string{"c2"}) {
		t.Fatalf("Owners() after RemovePorts(c1) = %v", owners)
	}
	bad := m("", 8080)
	bad.Proto = "icmp"
	if err := fw.AddPorts("c3", []firewall.PortMapping{bad}); errdefs.KindOf(err) != errdefs.KindInvalid {
		t.Fatalf("AddPorts(icmp) = %v, want invalid", err)
	}
}

func TestRecorderLinks(t *testing.T) {
	r := firewalltest.New()
	var fw firewall.Firewall = r
	a := netip.MustParseAddr
	l := func(from, to string, port uint16) firewall.Link {
		return firewall.Link{Network: "n1", From: a(from), To: a(to), Proto: "tcp", Port: port}
	}
	links := []firewall.Link{l("10.99.0.2", "10.99.0.3", 80), l("10.99.0.2", "10.99.0.3", 81)}
	for range 2 {
		if err := fw.AddLinks("a", links); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.AddLinks("b", []firewall.Link{l("fd00::3", "fd00::2", 443), l("10.99.0.2", "10.99.0.3", 81)}); err != nil { // takes 81 over
		t.Fatal(err)
	}
	want := "link a n1 10.99.0.2->10.99.0.3:80/tcp\n" + "link b n1 10.99.0.2->10.99.0.3:81/tcp\n" +
		"link b n1 fd00::3->[fd00::2]:443/tcp\n"
	if got := r.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if owners, _ := fw.LinkOwners(); !slices.Equal(owners, []string{"a", "b"}) {
		t.Fatalf("LinkOwners() = %v", owners)
	}
	if owners, _ := fw.Owners(); len(owners) != 0 {
		t.Fatalf("Owners() = %v, want port owners only", owners)
	}
	for range 2 {
		if err := fw.RemoveLinks("a", links); err != nil { // 81 is b's: skipped
			t.Fatal(err)
		}
	}
	if got, want := r.String(), want[len("link a n1 10.99.0.2->10.99.0.3:80/tcp\n"):]; got != want {
		t.Fatalf("String() after RemoveLinks(a) = %q, want %q", got, want)
	}
	if err := fw.RemoveLinks("b", nil); err != nil {
		t.Fatal(err)
	}
	if got := r.String(); got != "" {
		t.Fatalf("String() after RemoveLinks = %q", got)
	}
	bad := l("10.99.0.2", "fd00::2", 80)
	if err := fw.AddLinks("c", []firewall.Link{bad}); errdefs.KindOf(err) != errdefs.KindInvalid {
		t.Fatalf("AddLinks(mixed families) = %v, want invalid", err)
	}
}

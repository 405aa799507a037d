package firewall_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
)

func TestValidate(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		n     firewall.Network
		valid bool
	}{
		{firewall.Network{Name: "n1", Bridge: "br0", Subnets: []netip.Prefix{p("10.0.0.0/24"), p("fd00::/64")}}, true},
		{firewall.Network{Name: "n1", Bridge: "br0", Subnets: []netip.Prefix{p("10.0.0.7/24")}}, true},
		{firewall.Network{Name: "n1", Bridge: "br0"}, true},
		{firewall.Network{Name: "", Bridge: "br0"}, false},
		{firewall.Network{Name: "a b", Bridge: "br0"}, false},
		{firewall.Network{Name: `a"b`, Bridge: "br0"}, false},
		{firewall.Network{Name: strings.Repeat("n", firewall.MaxNameLen+1), Bridge: "br0"}, false},
		{firewall.Network{Name: "n1", Bridge: ""}, false},
		{firewall.Network{Name: "n1", Bridge: "br/0"}, false},
		{firewall.Network{Name: "n1", Bridge: "sixteen-chars-xx"}, false},
		{firewall.Network{Name: "n1", Bridge: "br0", Subnets: []netip.Prefix{{}}}, false},
		{firewall.Network{Name: "n1", Bridge: "br0", Subnets: []netip.Prefix{p("0.0.0.0/0")}}, false},
		{firewall.Network{Name: "n1", Bridge: "br0", Subnets: []netip.Prefix{p("::ffff:10.0.0.0/120")}}, false},
		{firewall.Network{Name: "n1", Bridge: "br0", Subnets: []netip.Prefix{p("10.0.0.0/24"), p("10.1.0.0/24")}}, false},
	}
	for _, tt := range tests {
		err := tt.n.Validate()
		if tt.valid && err != nil || !tt.valid && errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("Validate(%+v) = %v, want valid %v", tt.n, err, tt.valid)
		}
	}
}

func TestPortMappingValidate(t *testing.T) {
	a := netip.MustParseAddr
	ok := firewall.PortMapping{Network: "n1", HostPort: 8080, Proto: "tcp", ContainerIP: a("10.0.0.2"), ContainerPort: 80}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, want := ok.String(), "8080->10.0.0.2:80/tcp"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for _, change := range []func(m *firewall.PortMapping){
		func(m *firewall.PortMapping) { m.Proto = "icmp" },
		func(m *firewall.PortMapping) { m.HostPort = 0 },
		func(m *firewall.PortMapping) { m.ContainerPort = 0 },
		func(m *firewall.PortMapping) { m.ContainerIP = netip.Addr{} },
		func(m *firewall.PortMapping) { m.ContainerIP = a("::ffff:10.0.0.2") },
		func(m *firewall.PortMapping) { m.HostIP = a("::1") },
		func(m *firewall.PortMapping) { m.Network = "" },
	} {
		m := ok
		change(&m)
		if err := m.Validate(); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("Validate(%+v) = %v, want invalid", m, err)
		}
	}
	for _, host := range []string{"127.0.0.1", "0.0.0.0", "::ffff:192.0.2.1"} {
		m := ok
		m.HostIP = a(host)
		if err := m.Validate(); err != nil {
			t.Errorf("Validate(host %s) = %v", host, err)
		}
	}
	if err := firewall.ValidateOwner("a b"); errdefs.KindOf(err) != errdefs.KindInvalid {
		t.Errorf("ValidateOwner(a b) = %v, want invalid", err)
	}
}

func TestLinkValidate(t *testing.T) {
	a := netip.MustParseAddr
	ok := firewall.Link{Network: "n1", From: a("10.0.0.2"), To: a("10.0.0.3"), Proto: "tcp", Port: 80}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, want := ok.String(), "10.0.0.2->10.0.0.3:80/tcp"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for _, change := range []func(l *firewall.Link){
		func(l *firewall.Link) { l.Proto = "icmp" },
		func(l *firewall.Link) { l.Port = 0 },
		func(l *firewall.Link) { l.From = netip.Addr{} },
		func(l *firewall.Link) { l.To = a("0.0.0.0") },
		func(l *firewall.Link) { l.To = a("::ffff:10.0.0.3") },
		func(l *firewall.Link) { l.To = a("fd00::3") },
		func(l *firewall.Link) { l.From, l.To = a("fe80::1%eth0"), a("fe80::2") },
		func(l *firewall.Link) { l.Network = "a b" },
	} {
		l := ok
		change(&l)
		if err := l.Validate(); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("Validate(%+v) = %v, want invalid", l, err)
		}
	}
	v6 := firewall.Link{Network: "n1", From: a("fd00::2"), To: a("fd00::3"), Proto: "sctp", Port: 9}
	if err := v6.Validate(); err != nil {
		t.Errorf("Validate(%s) = %v", v6, err)
	}
}

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

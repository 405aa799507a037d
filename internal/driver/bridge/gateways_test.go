package bridge

import (
	"net/netip"
	"testing"
)

func TestSharesSubnet(t *testing.T) {
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	gw := pp("203.0.113.1/24", "fd00::1/64")
	tests := []struct {
		have []string
		want bool
	}{
		{[]string{"203.0.113.1/24"}, false},                     // only knit's own
		{[]string{"203.0.113.1/24", "203.0.113.200/24"}, true},  // a secondary of it
		{[]string{"203.0.113.1/24", "203.0.113.200/25"}, false}, // another prefix: not its secondary
		{[]string{"203.0.113.1/24", "198.51.100.1/24"}, false},  // another subnet
		{[]string{"fd00::1/64", "fd00::2/64"}, false},           // IPv6 has no secondaries
	}
	for _, tt := range tests {
		if got := sharesSubnet(gw, pp(tt.have...)); got != tt.want {
			t.Errorf("sharesSubnet(%v, %v) = %v, want %v", gw, tt.have, got, tt.want)
		}
	}
}

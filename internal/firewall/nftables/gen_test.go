package nftables

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/knit-dev/knit/internal/firewall"
)

func TestStampRoundTrip(t *testing.T) {
	v := verified{boot: "6f1c0b8e-1d2a-4c1b-9a51-0d0c7a3e5f10", netns: 4026532281, gen: 4294967295, base: baseDigest()[:16],
		nets: map[string]string{"bridge": "0123456789abcdef", "n-1.x": "fedcba9876543210"}}
	got, err := parseStamp(v.String())
	if err != nil || !reflect.DeepEqual(got, v) {
		t.Fatalf("parseStamp(%q) = %+v, %v; want %+v", v.String(), got, err, v)
	}
	for _, bad := range []string{"", "gen 1\n", "boot x netns 1 gen\n", "boot x netns 1 gen 2\n", "boot x netns 1 gen 2 base b\nnet a\n", "boot x netns 1 gen 2 base b\nnope a b\n"} {
		if _, err := parseStamp(bad); err == nil {
			t.Errorf("parseStamp(%q) accepted a damaged stamp", bad)
		}
	}
}

// A network's fingerprint names its settings and the rules knit wants for
// them: the same settings give the same one (from the cache or not),
// settings that change the wanted rules give another.
func TestFingerprint(t *testing.T) {
	n := firewall.Network{Name: "web", Bridge: "br-web", Subnets: []netip.Prefix{netip.MustParsePrefix("10.5.0.0/24")},
		Masquerade: true, ICC: true}
	first := fingerprint(n)
	if again := fingerprint(n); again != first {
		t.Errorf("fingerprint from the cache %s, first %s", again, first)
	}
	fingerprints.Clear()
	if fresh := fingerprint(n); fresh != first {
		t.Errorf("fingerprint made again %s, first %s", fresh, first)
	}
	seen := map[string]string{first: "as is"}
	for what, change := range map[string]func(*firewall.Network){
		"icc off":       func(m *firewall.Network) { m.ICC = false },
		"no masquerade": func(m *firewall.Network) { m.Masquerade = false },
		"internal":      func(m *firewall.Network) { m.Internal = true },
		"routed":        func(m *firewall.Network) { m.Routed4 = true },
		"other bridge":  func(m *firewall.Network) { m.Bridge = "br-other" },
		"other subnet":  func(m *firewall.Network) { m.Subnets = []netip.Prefix{netip.MustParsePrefix("10.6.0.0/24")} },
	} {
		m := n
		change(&m)
		fp := fingerprint(m)
		if other, ok := seen[fp]; ok {
			t.Errorf("%s: the same fingerprint as %s", what, other)
		}
		seen[fp] = what
	}
}

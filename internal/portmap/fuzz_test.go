package portmap

import (
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
)

var publishSeeds = []string{
	"80", "8080:80", "127.0.0.1:8080:80", "127.0.0.1::80", "[::1]:8080:80",
	"[2001:db8::1]::80", "8000-8010:80-90", "8000-8010:80", "80/udp", "53:53/udp",
	"9000:9000/sctp", "0.0.0.0:80:80", "[::ffff:1.2.3.4]:1:1", "[fe80::1%eth0]:1:1",
	"", "0", "65536", "90-80", "::80", "::1:8080:80", "[::1]:80", "80/", "80/icmp",
	"8000:80-90", ":80", "[", "]:", "1-2-3", "80/TCP", "00:00", "[::]:-:-",
}

// checkSpec asserts what the parsers promise of every Spec they return.
func checkSpec(t *testing.T, in string, sp Spec) {
	t.Helper()
	if err := sp.validate(); err != nil {
		t.Fatalf("%q parsed to invalid %+v: %v", in, sp, err)
	}
	if sp.HostIP.IsValid() && (sp.HostIP.Is4In6() || sp.HostIP.Zone() != "") {
		t.Fatalf("%q: host IP %v not canonical", in, sp.HostIP)
	}
}

// FuzzParsePublish checks that ParsePublish never panics, that every error is
// KindInvalid, and that what it accepts is valid and survives a round trip
// through Spec.String.
func FuzzParsePublish(f *testing.F) {
	for _, s := range publishSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		specs, err := ParsePublish(in)
		if err != nil {
			if errdefs.KindOf(err) != errdefs.KindInvalid {
				t.Fatalf("ParsePublish(%q): %v is not KindInvalid", in, err)
			}
			return
		}
		if len(specs) != 1 {
			t.Fatalf("ParsePublish(%q) = %d specs", in, len(specs))
		}
		checkSpec(t, in, specs[0])
		again, err := ParsePublish(specs[0].String())
		if err != nil || again[0] != specs[0] {
			t.Fatalf("round trip %q → %q → %+v, %v; want %+v", in, specs[0], again, err, specs[0])
		}
	})
}

// FuzzParseExpose checks that ParseExpose never panics, that its errors are
// KindInvalid, and that its Specs are valid, have no host part and read the
// same through ParsePublish.
func FuzzParseExpose(f *testing.F) {
	for _, s := range []string{"80", "80/udp", "8000-8010/tcp", "1-65535/sctp", "0", "65536", "90-80", "80/", "8080:80", "x", "/", "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		specs, err := ParseExpose(in)
		if err != nil {
			if errdefs.KindOf(err) != errdefs.KindInvalid {
				t.Fatalf("ParseExpose(%q): %v is not KindInvalid", in, err)
			}
			return
		}
		if len(specs) != 1 {
			t.Fatalf("ParseExpose(%q) = %d specs", in, len(specs))
		}
		sp := specs[0]
		checkSpec(t, in, sp)
		if sp.HostIP.IsValid() || sp.HostPortFirst != 0 || sp.HostPortLast != 0 {
			t.Fatalf("ParseExpose(%q) = %+v has a host part", in, sp)
		}
		pub, err := ParsePublish(in)
		if err != nil || pub[0] != sp {
			t.Fatalf("ParsePublish(%q) = %+v, %v; ParseExpose gave %+v", in, pub, err, sp)
		}
	})
}

package files

import (
	"slices"
	"strings"
	"testing"
)

// FuzzParseAddHost checks that an accepted --add-host value has a name
// that keeps the hosts file's syntax and an address, and that writing it
// back gives the same entry.
func FuzzParseAddHost(f *testing.F) {
	for _, s := range []string{"db:10.0.0.5", "db=10.0.0.5", "v6:2001:db8::1", "v6:[2001:db8::1]", "gw:host-gateway", "x:[]", ":", "a=b=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseAddHost(s)
		if err != nil {
			return
		}
		if len(h.Names) != 1 || h.Names[0] == "" || strings.ContainsAny(h.Names[0], " \t\r\n#=:") || h.HostGateway == h.IP.IsValid() {
			t.Fatalf("ParseAddHost(%q) = %+v: invalid entry accepted", s, h)
		}
		ip := "host-gateway"
		if !h.HostGateway {
			ip = h.IP.String()
		}
		h2, err := ParseAddHost(h.Names[0] + "=" + ip)
		if err != nil || h2.IP != h.IP || !slices.Equal(h2.Names, h.Names) {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", s, h2, err, h)
		}
		if lines := strings.Count(string(Hosts(nil, []HostEntry{h})), "\n"); lines != 6+btoi(h.IP.IsValid()) {
			t.Fatalf("Hosts with %+v has %d lines", h, lines)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// FuzzResolvConf checks that any host resolv.conf yields a usable one: at
// least one non-loopback nameserver, and a rendering that parses back to
// what was rendered.
func FuzzResolvConf(f *testing.F) {
	f.Add([]byte("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"), false)
	f.Add([]byte("# c\n;d\ndomain x\nnameserver 2001:db8::1\nnameserver fe80::1%eth0\n"), true)
	f.Add([]byte("nameserver\nsearch\noptions\n\x00"), false)
	f.Fuzz(func(t *testing.T, host []byte, ipv6 bool) {
		out := ResolvConf(host, ResolvOptions{IPv6: ipv6})
		r := ParseResolvConf(out)
		if len(r.Nameservers) == 0 {
			t.Fatalf("no nameserver in\n%s", out)
		}
		for _, a := range r.Nameservers {
			if a.Unmap().IsLoopback() || (a.Is6() && !a.Is4In6() && !ipv6) {
				t.Fatalf("nameserver %v kept in\n%s", a, out)
			}
		}
		if again := ResolvConf(out, ResolvOptions{IPv6: ipv6}); string(again) != string(out) {
			t.Fatalf("not a fixed point:\n%s\nthen\n%s", out, again)
		}
	})
}

// FuzzValidateDNSOption checks that an accepted option is one resolv.conf
// word of a known name.
func FuzzValidateDNSOption(f *testing.F) {
	for _, s := range []string{"ndots:2", "rotate", "timeout:", "ndots:-1", "edns0:1", "attempts:65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateDNSOption(s) != nil {
			return
		}
		name, _, _ := strings.Cut(s, ":")
		if _, ok := dnsOptions[name]; !ok || len(strings.Fields(s)) != 1 || strings.ContainsAny(s, "#;\n") {
			t.Fatalf("ValidateDNSOption accepted %q", s)
		}
		r := ParseResolvConf(ResolvConf(nil, ResolvOptions{Options: []string{s}}))
		if !slices.Equal(r.Options, []string{s}) {
			t.Fatalf("option %q rendered and read back as %q", s, r.Options)
		}
	})
}

// FuzzValidateSearchDomain checks that an accepted domain survives
// resolv.conf rendering as one search entry.
func FuzzValidateSearchDomain(f *testing.F) {
	for _, s := range []string{"example.com", ".", "a..b", "x.", "-a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateSearchDomain(s) != nil || s == "." {
			return
		}
		r := ParseResolvConf(ResolvConf(nil, ResolvOptions{Search: []string{s}}))
		if !slices.Equal(r.Search, []string{s}) {
			t.Fatalf("search domain %q rendered and read back as %q", s, r.Search)
		}
	})
}

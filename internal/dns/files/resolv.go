package files

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// Resolv is what knit reads from and writes to resolv.conf.
type Resolv struct {
	Nameservers []netip.Addr
	Search      []string
	Options     []string
	// Notes end the file as comments: where its parts came from.
	Notes []string
}

// ParseResolvConf reads a resolv.conf tolerantly, as the resolver does:
// comment lines (# or ;) and unknown or malformed lines are skipped;
// "domain" and "search" replace each other (the last wins); "options" lines
// add up. A field starting with # or ; ends a line.
func ParseResolvConf(b []byte) Resolv {
	var r Resolv
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		for i, w := range f {
			if w[0] == '#' || w[0] == ';' {
				f = f[:i]
				break
			}
		}
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(f[1]); err == nil {
				r.Nameservers = append(r.Nameservers, a)
			}
		case "domain":
			r.Search = []string{f[1]}
		case "search":
			r.Search = slices.Clone(f[1:])
		case "options":
			r.Options = append(r.Options, f[1:]...)
		}
	}
	return r
}

// ResolvOptions are the user's DNS settings for a container.
type ResolvOptions struct {
	DNS     []netip.Addr // --dns: replaces the host's nameservers
	Search  []string     // --dns-search: replaces the host's; "." alone means none
	Options []string     // --dns-option: replaces the host's
	// HostOptions, if kept, are the host's options as the container got
	// them when it was made, used instead of the host's current ones.
	HostOptions     []string
	HostOptionsKept bool
	KeepLoopback    bool   // host networking: the host's own resolver is reachable
	Source          string // the host's file read, for the notes ("" is /etc/resolv.conf)
	IPv6            bool   // the container has IPv6 connectivity
	NoIPv4          bool   // the container has no IPv4 (IPv6-only networks)
	// Embedded: the nameserver is knit's embedded server (see
	// EmbeddedOptions). Upstreams, where it sends other names (--dns, or
	// the host's /etc/resolv.conf servers; none: Docker's defaults), are
	// noted in the file as Docker's ExtServers; UserDNS says they are the
	// user's --dns.
	Embedded  bool
	Upstreams []netip.Addr
	UserDNS   bool
}

// Docker's fallback nameservers, used when none of the host's is usable.
var (
	defaultDNS4 = []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("8.8.4.4")}
	defaultDNS6 = []netip.Addr{netip.MustParseAddr("2001:4860:4860::8888"), netip.MustParseAddr("2001:4860:4860::8844")}
)

// ResolvConf builds the container's resolv.conf from the host's as Docker
// does. Each of --dns, --dns-search and --dns-option replaces the host's
// part when given. Of the host's nameservers, loopback ones (127.0.0.0/8,
// ::1) are unreachable from a container's own network namespace and are
// dropped unless KeepLoopback; IPv6 ones are dropped too unless IPv6 or
// KeepLoopback, as Docker does, so queries do not time out on an address
// family the container lacks. If no nameserver is left, Docker's defaults
// (Google Public DNS) are used.
func ResolvConf(host []byte, o ResolvOptions) []byte {
	r := ParseResolvConf(host)
	var overrides []string // in moby's order
	for _, part := range []struct {
		name  string
		given bool
	}{{"nameservers", len(o.DNS) > 0 && !o.Embedded || o.UserDNS}, {"search", len(o.Search) > 0}, {"options", len(o.Options) > 0}} {
		if part.given {
			overrides = append(overrides, part.name)
		}
	}
	if len(o.DNS) > 0 {
		r.Nameservers = o.DNS
	} else {
		r.Nameservers = slices.DeleteFunc(r.Nameservers, func(a netip.Addr) bool {
			a = a.Unmap()
			return !o.KeepLoopback && (a.IsLoopback() || lacksFamily(a, !o.NoIPv4, o.IPv6))
		})
		if len(r.Nameservers) == 0 {
			if !o.NoIPv4 {
				r.Nameservers = slices.Clone(defaultDNS4)
			}
			if o.IPv6 {
				r.Nameservers = append(r.Nameservers, defaultDNS6...)
			}
		}
	}
	if len(o.Search) > 0 {
		r.Search = slices.DeleteFunc(slices.Clone(o.Search), func(s string) bool { return s == "." })
	}
	if o.HostOptionsKept {
		r.Options = o.HostOptions
	}
	if len(o.Options) > 0 {
		r.Options = o.Options
	}
	if o.Embedded {
		ndotsFrom := "internal"
		if HasNdots(r.Options) {
			ndotsFrom = map[bool]string{true: "override", false: "host"}[len(o.Options) > 0]
		}
		r.Options = EmbeddedOptions(r.Options)
		// As moby's notes (internal/resolvconf): host(ADDR) for a server
		// asked from the host's namespace (AskedFromHost).
		r.Notes = []string{"Based on host file: '" + cmp.Or(o.Source, "/etc/resolv.conf") + "' (internal resolver)"}
		ext := o.Upstreams
		if len(ext) == 0 {
			ext = defaultDNS4
			r.Notes = append(r.Notes, "Used default nameservers.")
		}
		hosts := make([]string, len(ext))
		for i, a := range ext {
			hosts[i] = a.String()
			if AskedFromHost(a, o.UserDNS, !o.NoIPv4, o.IPv6) {
				hosts[i] = "host(" + hosts[i] + ")"
			}
		}
		r.Notes = append(r.Notes,
			"ExtServers: ["+strings.Join(hosts, " ")+"]",
			"Overrides: ["+strings.Join(overrides, " ")+"]",
			"Option ndots from: "+ndotsFrom)
	}
	return r.Render()
}

// AskedFromHost reports whether the embedded server asks nameserver a of
// a container's from the host's namespace rather than the container's
// own, as Docker's (its HostLoopback): a server of the host's resolv.conf
// (not the user's --dns) that the container could not reach, on loopback,
// with a zone (a link-local address of the host's link), or of a family
// the container lacks (ipv4, ipv6: whether it has addresses of each).
func AskedFromHost(a netip.Addr, userDNS, ipv4, ipv6 bool) bool {
	return !userDNS && (a.Unmap().IsLoopback() || a.Zone() != "" || lacksFamily(a, ipv4, ipv6))
}

// lacksFamily reports whether a is of a family a container without
// addresses of it (ipv4, ipv6: whether it has them) cannot reach.
func lacksFamily(a netip.Addr, ipv4, ipv6 bool) bool {
	a = a.Unmap()
	return a.Is6() && !ipv6 || a.Is4() && !ipv4
}

// EmbeddedOptions returns the options of a resolv.conf whose nameserver is
// the embedded server: opts, with ndots:0 added unless they set ndots, as
// Docker does. A container's name is then asked as is before the search
// domains are tried, which would send it upstream (and could find another
// host of that name there).
func EmbeddedOptions(opts []string) []string {
	if HasNdots(opts) {
		return opts
	}
	return append(slices.Clone(opts), "ndots:0")
}

// HasNdots says whether resolv.conf options set ndots.
func HasNdots(opts []string) bool {
	return slices.ContainsFunc(opts, func(o string) bool { return strings.HasPrefix(o, "ndots:") })
}

// Render writes r in resolv.conf syntax.
func (r Resolv) Render() []byte {
	var b bytes.Buffer
	b.WriteString("# Generated by knit. This file can be edited: knit then changes only its own\n# lines in it.\n")
	for _, a := range r.Nameservers {
		b.WriteString("nameserver " + a.String() + "\n")
	}
	if len(r.Search) > 0 {
		b.WriteString("search " + strings.Join(r.Search, " ") + "\n")
	}
	if len(r.Options) > 0 {
		b.WriteString("options " + strings.Join(r.Options, " ") + "\n")
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.Notes {
			b.WriteString("# " + n + "\n")
		}
	}
	return b.Bytes()
}

package files

import (
	"net/netip"
	"strings"
	"unicode"

	"github.com/knit-dev/knit/internal/errdefs"
)

// HostEntry is one line of /etc/hosts: an address and its names. A
// HostGateway entry has no address yet; the engine fills in the host's.
type HostEntry struct {
	IP          netip.Addr
	Names       []string
	HostGateway bool
}

// hostGateway is the --add-host value that stands for the host's address.
const hostGateway = "host-gateway"

// ParseAddHost parses an --add-host value: "name:ip" or "name=ip", where ip
// may be an IPv6 address with or without brackets ("h:2001:db8::1",
// "h=[2001:db8::1]") or "host-gateway". The name is split at the first "="
// if there is one, else at the first ":".
func ParseAddHost(s string) (HostEntry, error) {
	name, ip, ok := strings.Cut(s, "=")
	if !ok {
		name, ip, ok = strings.Cut(s, ":")
	}
	if !ok {
		return HostEntry{}, errdefs.Invalid("invalid --add-host %q: expected NAME:IP or NAME=IP", s)
	}
	name, ip = strings.TrimSpace(name), strings.TrimSpace(ip)
	// Docker takes any name (my_host included); only what would break the
	// hosts file's syntax is refused.
	// (":" would not survive the record's NAME:IP form.)
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == '#' || r == ':' }) {
		return HostEntry{}, errdefs.Invalid("invalid --add-host %q: the name must be non-empty, without blanks, # or :", s)
	}
	if ip == hostGateway {
		return HostEntry{Names: []string{name}, HostGateway: true}, nil
	}
	if len(ip) > 2 && ip[0] == '[' && ip[len(ip)-1] == ']' {
		ip = ip[1 : len(ip)-1]
	}
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Zone() != "" {
		return HostEntry{}, errdefs.Invalid("invalid --add-host %q: %q is not an IP address (nor %s)", s, ip, hostGateway)
	}
	return HostEntry{IP: a, Names: []string{name}}, nil
}

// localhostBlock starts every /etc/hosts Docker writes.
const localhostBlock = "127.0.0.1\tlocalhost\n" +
	"::1\tlocalhost ip6-localhost ip6-loopback\n" +
	"fe00::0\tip6-localnet\n" +
	"ff00::0\tip6-mcastprefix\n" +
	"ff02::1\tip6-allnodes\n" +
	"ff02::2\tip6-allrouters\n"

// Hosts renders /etc/hosts as Docker does: the localhost block, then the
// extra entries (--add-host, links) in order, then the container's own
// addresses and names. Entries without an address or names are left out;
// names are written as given (validate them on input).
func Hosts(own []HostEntry, extra []HostEntry) []byte {
	return AppendHosts(AppendHosts([]byte(localhostBlock), extra), own)
}

// AppendHosts appends entries to an /etc/hosts content, one line each; host
// networking appends --add-host entries to a copy of the host's own file.
func AppendHosts(b []byte, entries []HostEntry) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	for _, e := range entries {
		if !e.IP.IsValid() || len(e.Names) == 0 {
			continue
		}
		b = append(b, e.IP.String()...)
		b = append(b, '\t')
		b = append(b, strings.Join(e.Names, " ")...)
		b = append(b, '\n')
	}
	return b
}

// MergeLines changes the lines of a file that knit wrote as old and
// someone then edited (cur) to say what want says, keeping the edits: each
// line of old that want no longer has is taken out of cur (once), and each
// line of want that old did not have is added at the end, unless cur has
// it already (a refresh cut short after its rewrite and done again). A
// line of knit's that the user changed or took out stays as the user left
// it.
func MergeLines(cur, old, want []byte) []byte {
	lines := func(b []byte) []string {
		if len(b) == 0 {
			return nil
		}
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	count := func(ls []string) map[string]int {
		m := map[string]int{}
		for _, l := range ls {
			m[l]++
		}
		return m
	}
	had, wants := count(lines(old)), count(lines(want))
	drop := map[string]int{}
	for l, n := range had {
		if n > wants[l] {
			drop[l] = n - wants[l]
		}
	}
	var out []string
	for _, l := range lines(cur) {
		if drop[l] > 0 {
			drop[l]--
			continue
		}
		out = append(out, l)
	}
	have := count(out)
	for _, l := range lines(want) {
		switch {
		case had[l] > 0: // knit's before: as the user left it
			had[l]--
		case have[l] > 0: // new, but there already
			have[l]--
		default:
			out = append(out, l)
		}
	}
	return []byte(strings.Join(out, "\n") + "\n")
}

// RewriteDone reports whether cur, a file knit had written as old, then
// began to rewrite as pending, shows that rewrite done (edited since or
// not): it has every line pending added to old, and none of those pending
// took out, as often.
func RewriteDone(cur, old, pending []byte) bool {
	count := func(b []byte) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(string(b), "\n") {
			m[l]++
		}
		return m
	}
	have, had, will := count(cur), count(old), count(pending)
	for l, n := range will {
		if n > had[l] && have[l] < n { // added, not there
			return false
		}
	}
	for l, n := range had {
		if n > will[l] && have[l] > will[l] { // taken out, still there
			return false
		}
	}
	return true
}

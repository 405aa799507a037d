// Package files builds the contents of a container's /etc/hosts,
// /etc/resolv.conf and /etc/hostname the way Docker does, and parses and
// validates the user input that shapes them (--add-host, --dns-search,
// --dns-option, --hostname).
//
// It only computes bytes; the engine writes them and the runner bind-mounts
// them. Invariants: rendering never fails and never panics, whatever the
// host's files contain; every validation error is errdefs.Invalid and quotes
// the offending value.
package files

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/knit-dev/knit/internal/errdefs"
)

// ValidHostname checks s against RFC 1123, with underscores allowed:
// dot-separated labels of 1 to 63 letters, digits, hyphens and underscores,
// not starting or ending with a hyphen, 253 characters at most in all.
// Container names have underscores (every generated one does), and they
// are hostnames and link aliases by default; Docker has accepted them in
// hostnames and aliases since 1.13, and resolvers take them in /etc/hosts
// and in DNS answers alike.
func ValidHostname(s string) error {
	if why := hostnameProblem(s); why != "" {
		return errdefs.Invalid("invalid hostname %q: %s", s, why)
	}
	return nil
}

func hostnameProblem(s string) string {
	if s == "" {
		return "it is empty"
	}
	if len(s) > 253 {
		return fmt.Sprintf("it is %d characters long, the limit is 253", len(s))
	}
	for _, label := range strings.Split(s, ".") {
		switch {
		case label == "":
			return "it has an empty label (a leading, trailing or doubled dot)"
		case len(label) > 63:
			return fmt.Sprintf("label %q is %d characters long, the limit is 63", label, len(label))
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Sprintf("label %q starts or ends with a hyphen", label)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Sprintf("it contains %q; use only letters, digits, hyphens, underscores and dots", rune(c))
			}
		}
	}
	return ""
}

// Hostname returns the contents of the container's /etc/hostname.
func Hostname(name string) []byte { return []byte(name + "\n") }

// ValidateSearchDomain checks a --dns-search value: a domain name (a
// trailing dot is allowed) or "." alone, which means no search domains.
func ValidateSearchDomain(s string) error {
	if s == "." {
		return nil
	}
	if why := hostnameProblem(strings.TrimSuffix(s, ".")); why != "" {
		return errdefs.Invalid("invalid DNS search domain %q: %s", s, why)
	}
	return nil
}

// dnsOptions are the resolver options glibc understands (resolv.conf(5));
// true marks those that take a number, as "ndots:N".
var dnsOptions = map[string]bool{
	"ndots": true, "timeout": true, "attempts": true,
	"rotate": false, "edns0": false, "single-request": false, "single-request-reopen": false,
	"no-tld-query": false, "use-vc": false, "no-reload": false, "trust-ad": false,
	"inet6": false, "debug": false, "no-aaaa": false, "no-check-names": false,
}

const dnsOptionsHelp = "valid options are ndots:N, timeout:N, attempts:N, rotate, edns0, single-request, " +
	"single-request-reopen, no-tld-query, use-vc, no-reload, trust-ad, inet6, debug, no-aaaa, no-check-names"

// ValidateDNSOption checks a --dns-option value against the options glibc's
// resolver understands; numbers must be plain decimal.
func ValidateDNSOption(s string) error {
	name, val, hasVal := strings.Cut(s, ":")
	numeric, known := dnsOptions[name]
	switch {
	case !known:
		return errdefs.Invalid("invalid DNS option %q: unknown option; %s", s, dnsOptionsHelp)
	case numeric && !hasVal:
		return errdefs.Invalid("invalid DNS option %q: %s needs a number, as in %s:2", s, name, name)
	case !numeric && hasVal:
		return errdefs.Invalid("invalid DNS option %q: %s takes no value", s, name)
	case numeric:
		if _, err := strconv.ParseUint(val, 10, 16); err != nil || strings.HasPrefix(val, "+") {
			return errdefs.Invalid("invalid DNS option %q: %q is not a number from 0 to 65535", s, val)
		}
	}
	return nil
}

// Package firewall states what knit needs from the host's packet filter in
// terms of networks (and, later, endpoints and published ports), never in
// terms of rules. A backend (nftables/) turns that intent into rules; the
// recording stub (firewalltest/) lets callers be tested without root.
//
// Invariants:
//   - Callers speak intent: a Network says what its containers may do, not
//     how. Which tables, chains and rules express it is the backend's choice.
//   - Every call is all-or-nothing: a backend applies the changes of one
//     call in one atomic step, so no packet sees half a network.
//   - EnsureNetwork both installs and repairs, and calling it twice leaves
//     one copy; RemoveNetwork removes exactly what EnsureNetwork added for
//     that network name and nothing else, and is idempotent.
//   - The host's own traffic is never affected: backends add only
//     accept-by-default chains in tables they own, and match only traffic of
//     knit's bridges and subnets.
package firewall

import (
	"net/netip"
	"strings"

	"github.com/knit-dev/knit/internal/errdefs"
)

// Network is what the firewall must know about one knit network.
type Network struct {
	// Name identifies the network's rules: backends tag everything they add
	// with it, so that RemoveNetwork and a prune find exactly those.
	Name string
	// Bridge is the kernel bridge the network's containers hang off.
	Bridge string
	// Subnets are the network's address ranges, at most one per family.
	Subnets []netip.Prefix
	// Masquerade rewrites the source address of traffic that leaves the
	// network through another interface to that interface's address.
	Masquerade bool
	// ICC allows containers on the same network to talk to each other. It
	// is not enforced yet: traffic inside one bridge is switched, not
	// routed, and filtering it needs a bridge-family table (a later step).
	ICC bool
	// Internal cuts the network off from everything but itself: no traffic
	// is forwarded between its bridge and any other interface, and nothing
	// is masqueraded.
	Internal bool
}

// Firewall installs and removes the packet-filter state of knit's networks.
type Firewall interface {
	// EnsureNetwork installs (or repairs) the network's rules in ONE atomic
	// batch; knit's own tables are created if missing.
	EnsureNetwork(n Network) error
	// RemoveNetwork deletes exactly what EnsureNetwork added for the named
	// network, atomically. Idempotent.
	RemoveNetwork(name string) error
}

// Limits on names, chosen so that a tag ("knit:net=" + name) fits the 128
// bytes nft prints of a comment, and a bridge name fits IFNAMSIZ.
const (
	MaxNameLen   = 64
	MaxBridgeLen = 15
)

// Validate reports whether n can be expressed by a backend; the error is
// KindInvalid. Subnets need not be in canonical (masked) form.
func (n Network) Validate() error {
	if err := ValidateName(n.Name); err != nil {
		return err
	}
	if n.Bridge == "" || len(n.Bridge) > MaxBridgeLen || strings.ContainsAny(n.Bridge, "/ \t\n\"\\\x00") {
		return errdefs.Invalid("network %s: invalid bridge name %q", n.Name, n.Bridge)
	}
	seen := map[bool]bool{}
	for _, p := range n.Subnets {
		if !p.IsValid() || p.Bits() == 0 {
			return errdefs.Invalid("network %s: invalid subnet %q", n.Name, p)
		}
		if p.Addr().Is4In6() {
			return errdefs.Invalid("network %s: subnet %s is IPv4-mapped", n.Name, p)
		}
		if seen[p.Addr().Is4()] {
			return errdefs.Invalid("network %s: more than one subnet per family", n.Name)
		}
		seen[p.Addr().Is4()] = true
	}
	return nil
}

// ValidateName reports whether name can tag a network's rules: 1 to
// MaxNameLen printable ASCII characters without blanks, quotes or
// backslashes. The error is KindInvalid.
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return errdefs.Invalid("invalid network name %q: want 1 to %d characters", name, MaxNameLen)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return errdefs.Invalid("invalid network name %q: character %q", name, c)
		}
	}
	return nil
}

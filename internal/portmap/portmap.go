// Package portmap parses Docker's publish (-p) and expose (--expose) flags
// and chooses host ports for them.
//
// Parsing and allocation are pure: they read no files, keep no state and call
// no kernel. The one kernel-facing piece, Listeners, is a snapshot of the
// sockets bound on the host, read from /proc/net; its Taken method plugs into
// Allocate next to the caller's own record of published ports.
//
// Invariants:
//   - ParsePublish and ParseExpose return Specs that pass the same validation
//     Allocate applies; every parse error is errdefs.Invalid and quotes the
//     input.
//   - Allocate is all-or-nothing: it returns either one Mapping per port the
//     specs describe, in spec order, or an error and no mappings. It calls
//     taken but changes nothing; the caller records the result (in the same
//     store transaction that answered taken, so two knit processes never hand
//     out the same port).
//   - No two returned mappings overlap, and none overlaps a port taken
//     reports. Fixed host ports are honoured exactly or fail with
//     errdefs.Conflict; random ones lie in EphemeralRange.
//   - Overlap (see Overlaps) is one rule everywhere: same protocol and port,
//     and addresses that could both receive the same packet. The zero
//     netip.Addr means every host address, IPv4 and IPv6.
package portmap

import (
	"net/netip"
	"strings"
)

// Proto is a transport protocol: "tcp", "udp" or "sctp".
type Proto string

// The protocols Docker can publish.
const (
	TCP  Proto = "tcp"
	UDP  Proto = "udp"
	SCTP Proto = "sctp"
)

// parseProto accepts a protocol in any case, as Docker does.
func parseProto(s string) (Proto, bool) {
	switch p := Proto(strings.ToLower(s)); p {
	case TCP, UDP, SCTP:
		return p, true
	}
	return "", false
}

func (p Proto) valid() bool { return p == TCP || p == UDP || p == SCTP }

// Overlaps reports whether a socket bound to address a and one bound to b,
// with the same protocol and port, would clash. The zero Addr (all host
// addresses) overlaps everything; an unspecified address (0.0.0.0, ::)
// overlaps every address of its family; two specific addresses overlap only
// when equal. IPv4 and IPv6 addresses never overlap each other, because knit
// binds IPv6 sockets with IPV6_V6ONLY, as Docker does.
func Overlaps(a, b netip.Addr) bool {
	if !a.IsValid() || !b.IsValid() {
		return true
	}
	a, b = a.Unmap(), b.Unmap()
	if a.Is4() != b.Is4() {
		return false
	}
	return a == b || a.IsUnspecified() || b.IsUnspecified()
}

// Package ipam is knit's address allocator: it picks subnets for new networks
// from address pools and addresses for endpoints from subnets.
//
// It is pure: it reads no files, keeps no state and calls no kernel. Callers
// pass what is taken (other networks and host routes, addresses in use) and
// persist the result themselves, inside the same store transaction that read
// what was taken, so two knit processes never hand out the same address.
//
// IPv4 and IPv6 share one code path over net/netip. Invariants:
//   - results are deterministic: the first free subnet of the first pool, the
//     lowest free address of a range;
//   - the network address of a subnet is never handed out (except on IPv4 /31
//     and /32, which have none, RFC 3021), nor the IPv4 broadcast address
//     (subnets shorter than /31), nor the gateway;
//   - every error wraps one of the sentinel errors below, so callers test it
//     with errors.Is, and its text names the address and subnet concerned.
package ipam

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Sentinel errors; the errors returned wrap exactly one of them.
var (
	ErrNoSubnet   = errors.New("no free subnet")
	ErrExhausted  = errors.New("no free address")
	ErrOutside    = errors.New("address outside subnet")
	ErrReserved   = errors.New("address reserved")
	ErrInUse      = errors.New("address in use")
	ErrInvalidArg = errors.New("invalid argument")
)

// ipamError carries a sentinel kind and a message that names the addresses
// involved, so that Error reads well without repeating the sentinel's text.
type ipamError struct {
	kind error
	msg  string
}

func (e *ipamError) Error() string { return e.msg }
func (e *ipamError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &ipamError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// FirstHost returns the network address of p plus one: the default gateway.
// It returns the zero Addr when p has no such address (a /32 or /128).
func FirstHost(p netip.Prefix) netip.Addr {
	if !p.IsValid() {
		return netip.Addr{}
	}
	p = p.Masked()
	a := p.Addr().Next()
	if !a.IsValid() || !p.Contains(a) {
		return netip.Addr{}
	}
	return a
}

// Overlaps reports whether a and b share any address. Prefixes of different
// address families, and invalid prefixes, never overlap.
func Overlaps(a, b netip.Prefix) bool { return a.Overlaps(b) }

// Allocate returns the lowest address of rng (the whole subnet when rng is
// the zero Prefix) that is not reserved (see Check) and for which inUse
// returns false. rng must lie inside subnet. The cost is proportional to the
// number of used addresses below the result, so inUse may be any lookup; an
// IPv6 /64 is never exhausted in practice.
func Allocate(subnet, rng netip.Prefix, gw netip.Addr, inUse func(netip.Addr) bool) (netip.Addr, error) {
	return AllocateFrom(subnet, rng, gw, netip.Addr{}, inUse)
}

// AllocateFrom is Allocate with the search started at from, which the
// caller knows to have only used or reserved addresses of rng below it
// (a hint it keeps: see the engine's ipam-next bucket); an invalid from,
// or one outside rng, starts at the beginning. The result is the same as
// Allocate's, found with fewer calls to inUse.
func AllocateFrom(subnet, rng netip.Prefix, gw, from netip.Addr, inUse func(netip.Addr) bool) (netip.Addr, error) {
	if !subnet.IsValid() {
		return netip.Addr{}, errorf(ErrInvalidArg, "invalid subnet %s", subnet)
	}
	subnet = subnet.Masked()
	scope := subnet
	if rng.IsValid() {
		rng = rng.Masked()
		if rng.Bits() < subnet.Bits() || !subnet.Contains(rng.Addr()) {
			return netip.Addr{}, errorf(ErrOutside, "ip range %s is outside subnet %s: choose a range inside the subnet", rng, subnet)
		}
		scope = rng
	}
	last := lastAddr(scope)
	r := newReserved(subnet, gw)
	start := scope.Addr()
	if from.IsValid() && from.Zone() == "" && scope.Contains(from) {
		start = from
	}
	for a := start; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
		if r.reason(a) == "" && (inUse == nil || !inUse(a)) {
			return a, nil
		}
	}
	if scope != subnet {
		return netip.Addr{}, errorf(ErrExhausted, "no free address left in ip range %s of subnet %s: remove unused containers or use a larger range", scope, subnet)
	}
	return netip.Addr{}, errorf(ErrExhausted, "no free address left in subnet %s: remove unused containers or use a larger subnet", subnet)
}

// Check validates an address requested by the user (--ip): it must be inside
// subnet (ErrOutside; it may be outside the network's ip-range), must not be
// the network, broadcast or gateway address (ErrReserved) and must not be in
// use (ErrInUse).
func Check(subnet netip.Prefix, gw netip.Addr, want netip.Addr, inUse func(netip.Addr) bool) error {
	if !subnet.IsValid() {
		return errorf(ErrInvalidArg, "invalid subnet %s", subnet)
	}
	subnet = subnet.Masked()
	if !want.IsValid() || want.Zone() != "" || !subnet.Contains(want) {
		return errorf(ErrOutside, "address %s is outside subnet %s: choose an address inside the subnet", want, subnet)
	}
	if why := newReserved(subnet, gw).reason(want); why != "" {
		return errorf(ErrReserved, "address %s is reserved: it is %s of subnet %s", want, why, subnet)
	}
	if inUse != nil && inUse(want) {
		return errorf(ErrInUse, "address %s is already in use in subnet %s", want, subnet)
	}
	return nil
}

// reserved holds the addresses of a subnet that are never handed out; an
// address absent from the subnet (the zero Addr) reserves nothing.
type reserved struct{ gw, network, broadcast netip.Addr }

func newReserved(subnet netip.Prefix, gw netip.Addr) reserved {
	r := reserved{gw: gw}
	is4 := subnet.Addr().Is4()
	if !is4 || subnet.Bits() < 31 { // RFC 3021: IPv4 /31 and /32 have no network address
		r.network = subnet.Addr()
	}
	if is4 && subnet.Bits() < 31 {
		r.broadcast = lastAddr(subnet)
	}
	return r
}

// reason says why a is reserved, or "".
func (r reserved) reason(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return ""
	case a == r.gw:
		return "the gateway"
	case a == r.network:
		return "the network address"
	case a == r.broadcast:
		return "the broadcast address"
	}
	return ""
}

// Broadcast returns the broadcast address of an IPv4 subnet of up to 30
// bits; false for IPv6 and for /31 and /32, which have none.
func Broadcast(subnet netip.Prefix) (netip.Addr, bool) {
	r := newReserved(subnet, netip.Addr{})
	return r.broadcast, r.broadcast.IsValid()
}

// lastAddr returns the highest address of p: its host bits all set.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// MAC returns Docker's MAC address for an IPv4 address: 02:42 followed by
// the four address bytes, so that a container's MAC follows its address.
// For an IPv6 address (a container on an IPv6-only network) it is drawn
// from a hash of the address, outside 02:42 as RandomMAC's: the same
// address always gets the same MAC, so that neighbours' caches stay right
// when an address is given again.
func MAC(a netip.Addr) net.HardwareAddr {
	a = a.Unmap()
	if !a.Is4() {
		sum := sha256.Sum256(a.AsSlice())
		return localMAC(sum[:6])
	}
	b := a.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// FollowsMAC reports whether mac is the one MAC derives from a: a
// neighbour that knew a under another holder finds it at the same MAC.
func FollowsMAC(a netip.Addr, mac net.HardwareAddr) bool {
	return bytes.Equal(MAC(a), mac)
}

// RandomMAC returns a random locally administered unicast MAC address that
// never starts with 02:42, so that it cannot collide with one made by MAC.
func RandomMAC() net.HardwareAddr {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux.
	return localMAC(b)
}

// localMAC makes the six bytes b a locally administered unicast MAC
// address outside 02:42.
func localMAC(b []byte) net.HardwareAddr {
	m := net.HardwareAddr(b[:6:6])
	m[0] = m[0]&^0x01 | 0x02
	if m[0] == 0x02 && m[1] == 0x42 {
		m[1] ^= 0x01
	}
	return m
}

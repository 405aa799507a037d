package ipam

import (
	"net/netip"
	"slices"
	"sort"
)

// PoolSpec is an address pool: Base split into subnets of prefix length Size.
type PoolSpec struct {
	Base netip.Prefix
	Size int
}

// DefaultPools returns dockerd's default IPv4 address pools, in its order.
func DefaultPools() []PoolSpec {
	return []PoolSpec{
		{netip.MustParsePrefix("172.17.0.0/16"), 16},
		{netip.MustParsePrefix("172.18.0.0/16"), 16},
		{netip.MustParsePrefix("172.19.0.0/16"), 16},
		{netip.MustParsePrefix("172.20.0.0/14"), 16},
		{netip.MustParsePrefix("172.24.0.0/14"), 16},
		{netip.MustParsePrefix("172.28.0.0/14"), 16},
		{netip.MustParsePrefix("192.168.0.0/16"), 20},
	}
}

// DefaultULAPools returns the IPv6 pool for networks that ask for IPv6
// without a subnet: the unique local /48 fd4b:6e69:7400::/48 (its global ID
// spells "Knit" in ASCII) split into 65536 /64s. A fixed prefix rather than
// a random one (RFC 4193) keeps addresses predictable across hosts and
// reinstalls; these subnets are private to the host, so a clash with another
// site's ULA only matters when both are routed together.
func DefaultULAPools() []PoolSpec {
	return []PoolSpec{{netip.MustParsePrefix("fd4b:6e69:7400::/48"), 64}}
}

// valid reports whether the pool can be split: Size between Base's length
// and the address length.
func (p PoolSpec) valid() bool {
	return p.Base.IsValid() && p.Size >= p.Base.Bits() && p.Size <= p.Base.Addr().BitLen()
}

// span is the closed address interval [lo, hi] of one family.
type span struct{ lo, hi netip.Addr }

// PickSubnet returns the first subnet, in pool order and then address order,
// that overlaps none of taken (other networks, host routes). It jumps over
// taken ranges instead of trying every candidate, so its cost grows with
// len(taken), not with the size of the pools. It returns an error wrapping
// ErrInvalidArg for a pool whose Size is out of range and ErrNoSubnet when
// every candidate is taken.
func PickSubnet(pools []PoolSpec, taken []netip.Prefix) (netip.Prefix, error) {
	for _, p := range pools {
		if !p.valid() {
			return netip.Prefix{}, errorf(ErrInvalidArg, "invalid address pool %s with size %d: size must be between %d and %d",
				p.Base, p.Size, p.Base.Bits(), p.Base.Addr().BitLen())
		}
	}
	spans := mergeSpans(taken)
	for _, p := range pools {
		if s, ok := pickInPool(p, spans); ok {
			return s, nil
		}
	}
	return netip.Prefix{}, errorf(ErrNoSubnet, "every subnet of the %d address pools overlaps an existing network or host route: remove unused networks or configure more address pools", len(pools))
}

// pickInPool returns the first subnet of p overlapping no span.
func pickInPool(p PoolSpec, spans []span) (netip.Prefix, bool) {
	base := p.Base.Masked()
	end := lastAddr(base)
	for start := base.Addr(); start.IsValid() && start.Compare(end) <= 0; {
		cand := netip.PrefixFrom(start, p.Size)
		hi := lastAddr(cand)
		// First span ending at or after the candidate's start.
		i := sort.Search(len(spans), func(i int) bool { return spans[i].hi.Compare(start) >= 0 })
		if i == len(spans) || spans[i].lo.Compare(hi) > 0 || spans[i].lo.BitLen() != start.BitLen() {
			return cand, true
		}
		// Skip to the first candidate after the span.
		blocking := netip.PrefixFrom(spans[i].hi, p.Size).Masked()
		start = lastAddr(blocking).Next()
	}
	return netip.Prefix{}, false
}

// mergeSpans turns prefixes into sorted, disjoint address intervals. IPv4
// sorts before IPv6 (netip.Addr.Compare), so one sorted slice serves both.
func mergeSpans(ps []netip.Prefix) []span {
	spans := make([]span, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			p = p.Masked()
			spans = append(spans, span{p.Addr(), lastAddr(p)})
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo.Compare(b.lo) })
	out := spans[:0]
	for _, s := range spans {
		if n := len(out); n > 0 && out[n-1].lo.BitLen() == s.lo.BitLen() && s.lo.Compare(out[n-1].hi) <= 0 {
			if s.hi.Compare(out[n-1].hi) > 0 {
				out[n-1].hi = s.hi
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

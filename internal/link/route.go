package link

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/faults"
)

// Route is one route of the main table.
type Route struct {
	Dst       netip.Prefix // 0.0.0.0/0 or ::/0 for a default route
	Gateway   netip.Addr   // zero for a directly connected route
	LinkIndex int
}

// RouteAddDefault adds a default route via gw out of the link with the given
// index; gw's family picks the IPv4 or IPv6 table. The link must be up and
// gw inside one of its subnets.
//
// Equivalent to: ip route add default via GW dev DEV
func (h *Handle) RouteAddDefault(index int, gw netip.Addr) error {
	if !gw.IsValid() {
		return errdefs.Invalid("add default route: no gateway")
	}
	r := &netlink.Route{LinkIndex: index, Gw: gw.AsSlice()}
	faults.Step("link.route-add")
	if err := h.nl.RouteAdd(r); err != nil {
		return wrap(err, "add default route via %s dev %d", gw, index)
	}
	return nil
}

// RouteList returns the main table's IPv4 and IPv6 routes.
//
// Equivalent to: ip route show; ip -6 route show
func (h *Handle) RouteList() ([]Route, error) {
	return h.routeList(func() ([]netlink.Route, error) { return h.nl.RouteList(nil, netlink.FAMILY_ALL) })
}

// RouteListAllTables returns the IPv4 and IPv6 routes of every routing
// table (a source-based routing plugin moves them out of main).
//
// Equivalent to: ip route show table all; ip -6 route show table all
func (h *Handle) RouteListAllTables() ([]Route, error) {
	return h.routeList(func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
}

func (h *Handle) routeList(list func() ([]netlink.Route, error)) ([]Route, error) {
	routes, err := dump(list)
	if err != nil {
		return nil, wrap(err, "list routes")
	}
	out := make([]Route, 0, len(routes))
	for _, r := range routes {
		dst := fromIPNet(r.Dst)
		if r.Dst == nil { // netlink leaves a default route's Dst empty
			dst = netip.PrefixFrom(zeroAddr(r.Family), 0)
		}
		gw, _ := netip.AddrFromSlice(r.Gw)
		out = append(out, Route{Dst: dst, Gateway: gw.Unmap(), LinkIndex: r.LinkIndex})
	}
	return out, nil
}

func zeroAddr(family int) netip.Addr {
	if family == netlink.FAMILY_V6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// HostRoutes returns the destinations of the non-default IPv4 and IPv6
// routes of the calling thread's network namespace, for checking that a new
// subnet does not overlap one already in use.
//
// Equivalent to: ip route show; ip -6 route show (the non-default entries)
func HostRoutes() ([]netip.Prefix, error) {
	h, err := Host()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	routes, err := h.RouteList()
	if err != nil {
		return nil, fmt.Errorf("host routes: %w", err)
	}
	var dsts []netip.Prefix
	for _, r := range routes {
		if r.Dst.Bits() > 0 {
			dsts = append(dsts, r.Dst)
		}
	}
	return dsts, nil
}

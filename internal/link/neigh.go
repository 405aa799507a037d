package link

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NeighForget deletes the neighbour entry for a on link index, if there is
// one: the next packet to a asks for its MAC afresh.
//
// Equivalent to: ip neigh del A dev DEV (ignoring "No such file")
func (h *Handle) NeighForget(index int, a netip.Addr) error {
	family := unix.AF_INET
	if a.Is6() {
		family = unix.AF_INET6
	}
	err := h.nl.NeighDel(&netlink.Neigh{LinkIndex: index, Family: family, IP: a.AsSlice()})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return wrap(err, "forget neighbour %s on link %d", a, index)
	}
	return nil
}

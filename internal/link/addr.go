package link

import (
	"errors"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/faults"
)

// AddrAdd adds p (an address with its subnet's prefix length) to the link
// with the given index. An address already present is KindConflict.
// IPv6 addresses skip duplicate address detection: the address was
// allocated, and DAD would keep it unusable for a second or more.
//
// Equivalent to: ip addr add P dev DEV [nodad]
func (h *Handle) AddrAdd(index int, p netip.Prefix) error {
	if !p.IsValid() {
		return errdefs.Invalid("add address %s: invalid prefix", p)
	}
	faults.Step("link.addr-add")
	if err := h.nl.AddrAdd(byIndex(index), toAddr(p)); err != nil {
		return wrap(err, "add address %s to link %d", p, index)
	}
	return nil
}

// AddrEnsure is AddrAdd where an address already present is success.
//
// Equivalent to: ip addr add P dev DEV [nodad] (ignoring "File exists")
func (h *Handle) AddrEnsure(index int, p netip.Prefix) error {
	err := h.AddrAdd(index, p)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// AddrDel removes p from the link with the given index; an address the
// link does not have is success.
//
// Equivalent to: ip addr del P dev DEV
func (h *Handle) AddrDel(index int, p netip.Prefix) error {
	faults.Step("link.addr-del")
	err := h.nl.AddrDel(byIndex(index), toAddr(p))
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return wrap(err, "delete address %s from link %d", p, index)
	}
	return nil
}

// AddrList returns the addresses of the link with the given index, both
// families, link-local ones included.
//
// Equivalent to: ip addr show dev DEV
func (h *Handle) AddrList(index int) ([]netip.Prefix, error) {
	addrs, err := dump(func() ([]netlink.Addr, error) {
		return h.nl.AddrList(byIndex(index), netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, wrap(err, "list addresses of link %d", index)
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, fromIPNet(a.IPNet))
	}
	return out, nil
}

func toAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// fromIPNet keeps the host bits, unlike netip.Prefix.Masked.
func fromIPNet(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	bits, total := n.Mask.Size()
	if a.Is4In6() && total == 8*net.IPv6len {
		bits -= 96
	}
	return netip.PrefixFrom(a.Unmap(), bits)
}

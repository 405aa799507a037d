// Package link makes kernel network objects through a netlink handle bound
// to one network namespace: one method per kernel operation, each naming the
// `ip` command an operator would type.
//
// Invariants:
//   - A Handle acts only in the namespace it was opened in; creating a veth
//     peer in another namespace is done by passing a namespace fd to the
//     kernel, never by switching threads here (netns owns that).
//   - Addresses and routes cross the API as net/netip values; the IPv4/IPv6
//     difference is decided once, where the kernel needs it.
//   - Errors keep the kernel errno in their chain and carry an errdefs kind:
//     EEXIST is a conflict, a missing link is not-found.
//   - Nothing here reads or writes knit's store or remembers state between
//     calls: callers pass indexes they already know to save round trips.
package link

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/faults"
	"github.com/knit-dev/knit/internal/netns"
)

// Handle is a netlink route socket bound to one network namespace. It is safe
// for use by one goroutine at a time.
type Handle struct {
	nl     *netlink.Handle
	pooled bool // opened by a Pool, on the process's namespace
}

// Host opens a handle on the calling thread's network namespace (the host's,
// unless called inside netns.Do).
func Host() (*Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &Handle{nl: h}, nil
}

// At opens a handle on the network namespace bound at nsPath. The socket is
// opened inside netns.Do rather than with netlink.NewHandleAt, whose thread
// switch unlocks the thread even when switching back failed.
func At(nsPath string) (*Handle, error) {
	var h *Handle
	err := netns.Do(nsPath, func() error {
		var err error
		h, err = Host()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", nsPath, err)
	}
	return h, nil
}

// Close releases the socket.
func (h *Handle) Close() { h.nl.Close() }

// Link is what callers need to know about one network interface.
type Link struct {
	Index       int
	Name        string
	Kind        string // "bridge", "veth", "device", ...
	Alias       string
	MasterIndex int
	MTU         int
	MAC         net.HardwareAddr
	Up          bool // administratively up
}

func fromNetlink(l netlink.Link) Link {
	a := l.Attrs()
	return Link{
		Index: a.Index, Name: a.Name, Kind: l.Type(), Alias: a.Alias,
		MasterIndex: a.MasterIndex, MTU: a.MTU, MAC: a.HardwareAddr,
		Up: a.Flags&net.FlagUp != 0,
	}
}

// LinkGet returns the link called name; a missing link is KindNotFound.
//
// Equivalent to: ip link show DEV
func (h *Handle) LinkGet(name string) (Link, error) {
	l, err := h.nl.LinkByName(name)
	if err != nil {
		return Link{}, wrap(err, "get link %s", name)
	}
	return fromNetlink(l), nil
}

// LoopbackIndex is the index of lo in every network namespace: the kernel
// registers it first and checks that it got 1 (LOOPBACK_IFINDEX).
const LoopbackIndex = 1

// LinkSetUp sets the link with the given index up.
//
// Equivalent to: ip link set DEV up
func (h *Handle) LinkSetUp(index int) error {
	faults.Step("link.set-up")
	if err := h.nl.LinkSetUp(byIndex(index)); err != nil {
		return wrap(err, "set link %d up", index)
	}
	return nil
}

// LinkSetNoIPv6Addrs keeps the kernel from giving the link with the given
// index IPv6 addresses of its own: no link-local address, hence no
// duplicate address detection, router solicitations or multicast reports
// from it. Set it before the link is up. Unlike sysctl's disable_ipv6
// (whose /proc/sys lookup grows with the number of namespaces on the host)
// it is one netlink request; addresses added by hand still work.
//
// A link without IPv6 at all (a host booted with ipv6.disable=1, an MTU
// below IPv6's 1280) has nothing to suppress: the kernel's
// EAFNOSUPPORT is success.
//
// Equivalent to: ip link set DEV addrgenmode none
func (h *Handle) LinkSetNoIPv6Addrs(index int) error {
	faults.Step("link.addrgen")
	err := h.nl.LinkSetIP6AddrGenMode(byIndex(index), addrGenModeNone)
	if err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
		return wrap(err, "set link %d addrgenmode none", index)
	}
	return nil
}

// LinkSetGroup puts the link called name in interface group group. A
// missing link is KindNotFound.
//
// Equivalent to: ip link set DEV group GROUP
func (h *Handle) LinkSetGroup(name string, group uint32) error {
	l, err := h.nl.LinkByName(name)
	if err == nil && l.Attrs().Group == group {
		return nil
	}
	if err == nil {
		faults.Step("link.set-group")
		err = h.nl.LinkSetGroup(l, int(group))
	}
	if err != nil {
		return wrap(err, "set link %s group %d", name, group)
	}
	return nil
}

// SetUp sets the link called name up, for callers that know only the
// name (such as lo in a new namespace).
//
// Equivalent to: ip link set DEV up
func (h *Handle) SetUp(name string) error {
	l, err := h.LinkGet(name)
	if err != nil {
		return err
	}
	return h.LinkSetUp(l.Index)
}

// LinkDel deletes the link called name (with a veth, both ends). A missing
// link is KindNotFound.
//
// Equivalent to: ip link del DEV
func (h *Handle) LinkDel(name string) error {
	l, err := h.nl.LinkByName(name)
	if err == nil {
		faults.Step("link.del")
		err = h.nl.LinkDel(l)
	}
	if err != nil {
		return wrap(err, "delete link %s", name)
	}
	return nil
}

// byIndex names a link by index only, so that netlink does not look it up.
func byIndex(index int) netlink.Link {
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
}

// wrap adds context to a netlink error and gives it an errdefs kind.
func wrap(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, unix.EEXIST):
		return errdefs.Conflict("%s: %w", msg, err)
	case errors.Is(err, unix.ENODEV), errors.As(err, new(netlink.LinkNotFoundError)):
		return errdefs.NotFound("%s: %w", msg, err)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// dump retries a netlink dump that a concurrent change interrupted, which
// would otherwise return a possibly incomplete list.
func dump[T any](list func() (T, error)) (T, error) {
	for range 4 {
		v, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return list()
}

// IsNotFound reports whether err says the object does not exist.
func IsNotFound(err error) bool { return errdefs.KindOf(err) == errdefs.KindNotFound }

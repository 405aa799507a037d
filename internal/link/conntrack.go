package link

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/faults"
	"github.com/knit-dev/knit/internal/netns"
)

// ConntrackDeleteDstPort deletes the connection-tracking entries of proto
// (unix.IPPROTO_UDP, ...) whose original destination port is port, in both
// families. A datagram flow keeps its entry, and the address translation
// decided for its first packet, as long as packets keep coming: without
// this a client that reuses its source port would keep reaching the old
// container (or the host) after a port is published or unpublished.
//
// Equivalent to: conntrack -D -p udp --orig-port-dst PORT
func (h *Handle) ConntrackDeleteDstPort(proto uint8, port uint16) error {
	f := &netlink.ConntrackFilter{}
	if err := f.AddProtocol(proto); err != nil {
		return err
	}
	if err := f.AddPort(netlink.ConntrackOrigDstPort, port); err != nil {
		return err
	}
	faults.Step("link.conntrack-del")
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		if _, err := h.nl.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f); err != nil {
			return wrap(err, "delete conntrack entries of port %d", port)
		}
	}
	return nil
}

// ConntrackAt opens a handle for connection-tracking requests in the
// network namespace at nsPath. (A handle of At has a route socket only:
// its conntrack requests would go to the calling thread's namespace.)
func ConntrackAt(nsPath string) (*Handle, error) {
	var h *Handle
	err := netns.Do(nsPath, func() error {
		nl, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		h = &Handle{nl: nl}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open netfilter netlink in %s: %w", nsPath, err)
	}
	return h, nil
}

// ConntrackDeleteRetargeted deletes the UDP flows to dst:port whose
// replies come from another address than to: after the DNAT of dst:port
// moved to to, a client that keeps its source port would keep its flow's
// first translation, to an address that may no longer be reachable.
//
// Equivalent to: conntrack -L -p udp --orig-dst DST --dport PORT, then
// conntrack -D of each whose reply source is not TO
func (h *Handle) ConntrackDeleteRetargeted(dst netip.Addr, port uint16, to netip.Addr) error {
	faults.Step("link.conntrack-del")
	family := netlink.InetFamily(unix.AF_INET)
	if dst.Is6() {
		family = unix.AF_INET6
	}
	_, err := h.nl.ConntrackDeleteFilters(netlink.ConntrackTable, family, retargeted{dst, port, to})
	if err != nil {
		return wrap(err, "delete conntrack entries of %s:%d", dst, port)
	}
	return nil
}

// retargeted matches ConntrackDeleteRetargeted's flows.
type retargeted struct {
	dst  netip.Addr
	port uint16
	to   netip.Addr
}

func (r retargeted) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	dst, _ := netip.AddrFromSlice(f.Forward.DstIP)
	from, _ := netip.AddrFromSlice(f.Reverse.SrcIP)
	return f.Forward.Protocol == unix.IPPROTO_UDP && dst.Unmap() == r.dst && f.Forward.DstPort == r.port && from.Unmap() != r.to
}

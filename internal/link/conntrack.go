package link

import (
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/faults"
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

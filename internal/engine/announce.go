package engine

import (
	"time"

	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
)

// announceWait bounds the wait for a new port to forward (a second at
// most with the bridge's STP off, ~30 s on an administrator's bridge with
// it on, which gets none): it holds up nothing but this goroutine.
const announceWait = 10 * time.Second

// announce tells the containers on the bridges of endpoints eps (of the
// container in the namespace at nsPath), once each port forwards, where
// its addresses are whose MAC does not follow them
// (driver.Endpoint.Unforeseen): their entries for an address given again
// point at its last holder's MAC for tens of seconds otherwise. (Join
// made the host forget its own.) A port forwards once the kernel's link
// watch has seen its carrier, up to a second after the join: this runs in
// the container's supervisor, beside its process. At best, and silent (a
// supervisor has nobody to tell): a container whose entry stays wrong
// asks again once it times out.
func announce(eps []Endpoint, nsPath string) {
	for _, ep := range eps {
		addrs := ep.Unforeseen()
		if len(addrs) == 0 || ep.HostIf == "" || !link.WaitForwarding(ep.HostIf, announceWait) {
			continue
		}
		_ = netns.Do(nsPath, func() error { return link.Announce(ep.IfName, ep.MAC, addrs) })
	}
}

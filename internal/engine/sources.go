package engine

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/netns"
)

// claimsOf are the sources (firewall.Source) of a container whose
// endpoints are eps: each of its ports may send from each of its
// addresses (a reply to a connection made to one network's address may
// leave through another's default route), and no other container's port
// from any. None while a record does not name every port (a setup under
// way; a container an older knit started detached): a claim on an
// address whose own port is unknown would drop that port's traffic.
func claimsOf(eps []Endpoint) []firewall.Source {
	if slices.ContainsFunc(eps, func(ep Endpoint) bool { return ep.HostIf == "" }) {
		return nil
	}
	return pairsOf(eps)
}

// pairsOf are the sources of eps's named ports, each with each address of
// eps: what claimsOf claims, or may have claimed, for them.
func pairsOf(eps []Endpoint) []firewall.Source {
	var srcs []firewall.Source
	for _, p := range eps {
		if p.HostIf == "" {
			continue
		}
		for _, ep := range eps {
			for _, a := range ep.Addrs {
				srcs = append(srcs, firewall.Source{Port: p.HostIf, Addr: a.Addr()})
			}
		}
	}
	return srcs
}

// addrsOf are the addresses of eps.
func addrsOf(eps []Endpoint) []netip.Addr {
	var addrs []netip.Addr
	for _, ep := range eps {
		for _, a := range ep.Addrs {
			addrs = append(addrs, a.Addr())
		}
	}
	return addrs
}

// claim claims the addresses of owner's endpoints eps for their ports,
// once Join made them and before anything in the namespace runs: from
// then on no other container's port sends from them (a neighbour giving
// one to the embedded DNS server, which tells containers by their
// address).
func (e *Engine) claim(fw firewall.Firewall, owner string, eps []Endpoint) error {
	srcs := claimsOf(eps)
	if fw == nil || len(srcs) == 0 {
		return nil
	}
	if err := fw.AddSources(owner, srcs); err != nil {
		return fmt.Errorf("claim source addresses: %w", err)
	}
	return nil
}

// release releases owner's claims of its endpoints eps. An endpoint
// whose port no record names (a crash before the record was written)
// makes it release every claim of owner's, which reads them all.
func (e *Engine) release(fw firewall.Firewall, owner string, eps []Endpoint) error {
	if fw == nil || len(eps) == 0 {
		return nil
	}
	srcs, addrs := claimsOf(eps), addrsOf(eps)
	for _, ep := range eps {
		if ep.HostIf == "" {
			srcs, addrs = nil, nil
			break
		}
	}
	if err := fw.RemoveSources(owner, srcs, addrs); err != nil {
		return fmt.Errorf("release source addresses: %w", err)
	}
	return nil
}

// releaseEndpoint releases what a container with endpoints eps claimed
// for leaving, one of them: its addresses, the others' ports' leave to
// send from them, and its port's leave to send from the others'. (A port
// no record names yet, a connect's under way, had none.) Idempotent: it
// is done again once the endpoint is dropped, so that a claim put back
// meanwhile (a restore, a connect's) goes too.
func (e *Engine) releaseEndpoint(owner string, eps []Endpoint, leaving Endpoint) error {
	if e.fw == nil {
		return nil
	}
	var others []Endpoint
	for _, ep := range eps {
		if ep.Network != leaving.Network {
			others = append(others, ep)
		}
	}
	kept := map[firewall.Source]bool{}
	for _, s := range pairsOf(others) {
		kept[s] = true
	}
	var srcs []firewall.Source
	for _, s := range pairsOf(append(others, leaving)) {
		if !kept[s] {
			srcs = append(srcs, s)
		}
	}
	if len(srcs) == 0 && len(leaving.Addrs) == 0 {
		return nil
	}
	if err := e.fw.RemoveSources(owner, srcs, addrsOf([]Endpoint{leaving})); err != nil {
		return fmt.Errorf("release source addresses: %w", err)
	}
	return nil
}

// reclaim claims the addresses of container id's recorded endpoints, if
// it runs: read under the firewall lock, as restorePorts does, so that
// an exit's teardown (which releases them after deleting the namespace)
// either finds them claimed, or comes first and they are not.
func (e *Engine) reclaim(id string) error {
	if e.fw == nil {
		return nil
	}
	return e.underFirewallLock(func(fw firewall.Firewall) error {
		c, err := e.get(id)
		if err != nil || !c.Running() || c.OwnsNetns && !netns.Mounted(c.Netns) {
			return err
		}
		return e.claim(fw, c.ID, c.Endpoints)
	})
}

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

// minus returns the sources of a that are not in b.
func minus(a, b []firewall.Source) []firewall.Source {
	in := map[firewall.Source]bool{}
	for _, s := range b {
		in[s] = true
	}
	var out []firewall.Source
	for _, s := range a {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
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
	others := slices.DeleteFunc(slices.Clone(eps), func(ep Endpoint) bool { return ep.Network == leaving.Network })
	srcs := minus(pairsOf(append(slices.Clone(others), leaving)), pairsOf(others))
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

// portsNamed returns a copy of eps (on nets, in order) with the names
// their drivers' Join gives their ports unless another link holds one:
// a run claims its addresses under them while Join makes the links.
func (e *Engine) portsNamed(eps []Endpoint, nets []*Network) []Endpoint {
	named := slices.Clone(eps)
	for i := range named {
		if named[i].HostIf != "" || i >= len(nets) {
			continue
		}
		if d, err := e.driverFor(nets[i]); err == nil {
			named[i].HostIf = d.PortName(&named[i].Endpoint)
		}
	}
	return named
}

// claimRenamed claims c's addresses again when Join named a port other
// than claimed (another link held the name): the claims under the name
// that was not given go, which the port of whoever holds it must not
// keep.
func (e *Engine) claimRenamed(c *Container, claimed []Endpoint) error {
	if slices.EqualFunc(c.Endpoints, claimed, func(a, b Endpoint) bool { return a.HostIf == b.HostIf }) {
		return nil
	}
	if err := e.claim(e.fw, c.ID, c.Endpoints); err != nil {
		return err
	}
	wrong := minus(claimsOf(claimed), claimsOf(c.Endpoints))
	if len(wrong) == 0 || e.fw == nil {
		return nil
	}
	if err := e.fw.RemoveSources(c.ID, wrong, nil); err != nil {
		return fmt.Errorf("release source addresses: %w", err)
	}
	return nil
}

// unpublishAndRelease removes owner's published ports and its claims for
// its endpoints eps (with their ports' names, and the pairs of other
// ports, endpoints without addresses, it may have claimed under) in one
// batch; every claim of owner's, which reads them all, when a port has no
// name (a crash before the record was written). fw may be the firewall
// without its lock, for a caller that holds it.
func unpublishAndRelease(fw firewall.Firewall, owner string, ports []firewall.PortMapping, eps, other []Endpoint) error {
	if fw == nil || len(ports) == 0 && len(eps) == 0 {
		return nil
	}
	if unnamed := slices.ContainsFunc(eps, func(ep Endpoint) bool { return ep.HostIf == "" }); unnamed || len(eps) == 0 {
		if len(ports) > 0 {
			if err := fw.RemovePorts(owner, ports); err != nil {
				return fmt.Errorf("unpublish ports: %w", err)
			}
		}
		if unnamed {
			if err := fw.RemoveSources(owner, nil, nil); err != nil {
				return fmt.Errorf("release source addresses: %w", err)
			}
		}
		return nil
	}
	if err := fw.RemovePortsAndSources(owner, ports, pairsOf(append(slices.Clone(eps), other...)), addrsOf(eps)); err != nil {
		return fmt.Errorf("unpublish ports and release source addresses: %w", err)
	}
	return nil
}

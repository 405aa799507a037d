package engine

import (
	"fmt"

	"github.com/knit-dev/knit/internal/firewall"
)

// endpointSources are the addresses ep's port on its bridge sends from
// (firewall.Source): none before Join names the port.
func endpointSources(ep *Endpoint) []firewall.Source {
	if ep.HostIf == "" {
		return nil
	}
	srcs := make([]firewall.Source, 0, len(ep.Addrs))
	for _, a := range ep.Addrs {
		srcs = append(srcs, firewall.Source{Port: ep.HostIf, Addr: a.Addr()})
	}
	return srcs
}

// claimSources claims ep's addresses for its port, right after Join made
// it and before anything in the namespace runs: from then on no other
// container's port sends from them (a neighbour giving ep's address to
// the embedded DNS server, which tells containers by their address).
func (e *Engine) claimSources(owner string, ep *Endpoint) error {
	srcs := endpointSources(ep)
	if e.fw == nil || len(srcs) == 0 {
		return nil
	}
	if err := e.fw.AddSources(owner, srcs); err != nil {
		return fmt.Errorf("claim source addresses: %w", err)
	}
	return nil
}

// releaseSources releases owner's claims for eps; an endpoint whose port
// is not recorded (a crash before the record was written) makes it
// release every claim of owner's, which reads them all.
func (e *Engine) releaseSources(fw firewall.Firewall, owner string, eps []Endpoint) error {
	if fw == nil || len(eps) == 0 {
		return nil
	}
	var srcs []firewall.Source
	for i := range eps {
		if eps[i].HostIf == "" {
			srcs = nil
			break
		}
		srcs = append(srcs, endpointSources(&eps[i])...)
	}
	if err := fw.RemoveSources(owner, srcs); err != nil {
		return fmt.Errorf("release source addresses: %w", err)
	}
	return nil
}

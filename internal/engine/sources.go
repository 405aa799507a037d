package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/store"
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

// The attachments of one pod (a runtime's container: one container ID
// and namespace, an ADD per network) send from each other's addresses,
// as the networks of a knit container do: a reply to a connection made
// to one network's address leaves by the namespace's default route,
// another network's port. Each attachment claims its addresses for every
// port of its pod. Its record names its port once Join has made it (an
// ADD then claims for the pod before it records itself complete).

// podOf returns the attachments of a's pod other than a whose records
// name their ports, read in tx.
func podOf(tx store.Tx, a *CNIAttachment) ([]*CNIAttachment, error) {
	id, err := json.Marshal(a.ContainerID)
	if err != nil {
		return nil, err
	}
	// Most records are other pods': a look at the bytes leaves them.
	field := append([]byte(`"containerId":`), id...)
	var pod []*CNIAttachment
	err = tx.Scan(bucketCNI, func(k, v []byte) error {
		if string(k) == a.ID || !bytes.Contains(v, field) {
			return nil
		}
		var s CNIAttachment
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		if s.ContainerID == a.ContainerID && s.Netns == a.Netns && s.Endpoint.HostIf != "" {
			pod = append(pod, &s)
		}
		return nil
	})
	return pod, err
}

// readPod reads attachment id's record and, if it names its port, the
// rest of its pod (store.ErrNotFound if there is no record).
func (e *Engine) readPod(id string) (a *CNIAttachment, pod []*CNIAttachment, err error) {
	err = e.st.View(func(tx store.Tx) (err error) {
		if a, err = getAttachment(tx, id); err != nil {
			return err
		}
		if a.Endpoint.HostIf != "" {
			pod, err = podOf(tx, a)
		}
		return err
	})
	return a, pod, err
}

// podClaims are the claims of a, in a pod whose other attachments are
// pod: each of the pod's ports may send from a's addresses.
func podClaims(a *CNIAttachment, pod []*CNIAttachment) []firewall.Source {
	return claimsOf(append([]Endpoint{a.Endpoint}, portsOnly(pod)...))
}

// portsOnly returns the endpoints of pod without their addresses.
func portsOnly(pod []*CNIAttachment) []Endpoint {
	var eps []Endpoint
	for _, s := range pod {
		eps = append(eps, Endpoint{Network: s.Network, Endpoint: driver.Endpoint{HostIf: s.Endpoint.HostIf}})
	}
	return eps
}

// claimPod claims the addresses of attachment id for the ports of the
// rest of its pod, and theirs for its port, read under the firewall
// lock: of two ADDs of one pod at once, the later to record its port
// finds the other's (and claims for both), and a teardown (which reads
// the pod under the lock too) either comes first or finds the pairs
// made.
func (e *Engine) claimPod(id string) error {
	if e.fw == nil {
		return nil
	}
	return e.underFirewallLock(func(fw firewall.Firewall) error {
		a, pod, err := e.readPod(id)
		if errors.Is(err, store.ErrNotFound) || err == nil && len(pod) == 0 {
			return nil
		} else if err != nil {
			return err
		}
		if err := fw.AddSources(a.ID, podClaims(a, pod)); err != nil {
			return fmt.Errorf("claim source addresses for the pod's ports: %w", err)
		}
		for i, s := range pod {
			rest := append(slices.Concat(pod[:i], pod[i+1:]), a)
			if err := fw.AddSources(s.ID, podClaims(s, rest)); err != nil {
				return fmt.Errorf("claim source addresses for the pod's ports: %w", err)
			}
		}
		return nil
	})
}

// releasePod releases what the rest of a's pod claimed for a's port
// (their addresses), under the firewall lock that fw is used with; the
// pod is returned for a's own release.
func (e *Engine) releasePod(fw firewall.Firewall, a *CNIAttachment) ([]*CNIAttachment, error) {
	if a.Endpoint.HostIf == "" {
		return nil, nil // an ADD's that had not named its port: nobody claimed for it
	}
	var pod []*CNIAttachment
	err := e.st.View(func(tx store.Tx) (err error) {
		pod, err = podOf(tx, a)
		return err
	})
	if err != nil {
		return nil, err
	}
	port := portsOnly([]*CNIAttachment{a})
	for _, s := range pod {
		if err := fw.RemoveSources(s.ID, pairsOf(append(port, Endpoint{Endpoint: driver.Endpoint{Addrs: s.Endpoint.Addrs}})), nil); err != nil {
			return nil, fmt.Errorf("release the pod's source addresses: %w", err)
		}
	}
	return pod, nil
}

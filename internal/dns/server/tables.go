package server

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// tables are one snapshot's lookup maps, built once so that a query costs
// map lookups only. They are never changed after newTables returns, so
// queries read them without locks while a reload builds the next ones.
type tables struct {
	port      uint16
	upstreams []netip.AddrPort
	// byListen maps a listen address to the networks served on it.
	byListen map[netip.Addr][]*network
	// byContainer maps a container ID to the networks it is attached to,
	// in snapshot order: a known client's scope.
	byContainer map[string][]*network
	// listen holds the server's own addresses, never forwarded to.
	listen map[netip.AddrPort]bool
	// links maps a container ID and a link alias of its (key form) to
	// the target's endpoint on the link's network, where both are.
	links map[string]map[string]linked
	// netns holds the namespaces containers' queries go out from.
	netns map[string]bool
}

// linked is a link alias's target: its endpoint, and the network.
type linked struct {
	net *network
	ep  *Endpoint
}

// network is one network's names and addresses.
type network struct {
	name     string
	subnets  []netip.Prefix
	internal bool
	// names maps a lowercased name without the trailing dot (container
	// name, hostname, alias, name.network, alias.network) to its
	// endpoints, each once.
	names map[string][]*Endpoint
	addrs map[netip.Addr]*Endpoint
}

// newTables indexes s. Addresses are unmapped (::ffff:a.b.c.d is a.b.c.d),
// names that could never be packed into a message are left out, and the
// first endpoint listed with an address owns it.
func newTables(s *Snapshot) *tables {
	t := &tables{
		port:        s.port(),
		upstreams:   s.Upstreams,
		byListen:    make(map[netip.Addr][]*network),
		byContainer: make(map[string][]*network),
		listen:      make(map[netip.AddrPort]bool),
		links:       make(map[string]map[string]linked),
		netns:       make(map[string]bool),
	}
	for i := range s.Networks {
		sn := &s.Networks[i]
		n := &network{name: sn.Name, subnets: sn.Subnets, internal: sn.Internal,
			names: make(map[string][]*Endpoint), addrs: make(map[netip.Addr]*Endpoint)}
		byID := make(map[string]*Endpoint)
		for _, a := range sn.Listen {
			a = a.Unmap()
			t.byListen[a] = append(t.byListen[a], n)
			t.listen[netip.AddrPortFrom(a, t.port)] = true
		}
		for _, e := range sn.Endpoints {
			ep := unmapped(e)
			for _, a := range ep.Addrs {
				if _, taken := n.addrs[a]; !taken {
					n.addrs[a] = ep
				}
			}
			for _, name := range endpointNames(ep, sn.Name) {
				n.add(name, ep)
			}
			if ep.Netns != "" {
				t.netns[ep.Netns] = true
			}
			if _, seen := byID[ep.Container]; ep.Container != "" && !seen {
				byID[ep.Container] = ep
			}
			if ep.Container != "" && !slices.Contains(t.byContainer[ep.Container], n) {
				t.byContainer[ep.Container] = append(t.byContainer[ep.Container], n)
			}
		}
		for id, ep := range byID {
			for alias, target := range ep.Links {
				if tep := byID[target]; tep != nil {
					if t.links[id] == nil {
						t.links[id] = make(map[string]linked)
					}
					t.links[id][alias] = linked{n, tep}
				}
			}
		}
	}
	return t
}

// unmapped returns a copy of e with its addresses unmapped and its link
// aliases in key form; the caller's snapshot stays as it was.
func unmapped(e Endpoint) *Endpoint {
	addrs := make([]netip.Addr, len(e.Addrs))
	for i, a := range e.Addrs {
		addrs[i] = a.Unmap()
	}
	e.Addrs = addrs
	if len(e.Links) > 0 {
		links := make(map[string]string, len(e.Links))
		for alias, id := range e.Links {
			links[key(alias)] = id
		}
		e.Links = links
	}
	return &e
}

// endpointNames lists the names ep answers to on network net.
func endpointNames(ep *Endpoint, net string) []string {
	names := []string{ep.Name, ep.Hostname, ep.ShortID}
	for _, n := range names[:3] { // each also as NAME.NETWORK, as Docker's
		if n != "" {
			names = append(names, n+"."+net)
		}
	}
	for _, a := range ep.Aliases {
		if a != "" {
			names = append(names, a, a+"."+net)
		}
	}
	return names
}

func (n *network) add(name string, ep *Endpoint) {
	k := key(name)
	if k == "" {
		return
	}
	if _, ok := dns.IsDomainName(k); !ok {
		return
	}
	eps := n.names[k]
	if len(eps) > 0 && eps[len(eps)-1] == ep { // Name and Hostname are often equal
		return
	}
	n.names[k] = append(eps, ep)
}

// key is the form names are indexed by: lowercase, no trailing dot.
func key(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// scope returns the networks whose names a query may resolve, and the
// client's endpoint, nil when the client is not a container on the
// listener's networks. A known client sees every network its container is
// on, whichever gateway it asked; an unknown one sees the listener's.
func (t *tables) scope(local, client netip.Addr) ([]*network, *Endpoint) {
	nets := t.byListen[local]
	for _, n := range nets {
		if ep := n.addrs[client]; ep != nil {
			if ep.Container == "" {
				return nets, ep
			}
			return t.byContainer[ep.Container], ep
		}
	}
	return nets, nil
}

// allowed reports whether client may query on local: it is in a subnet of
// one of local's networks, or a network lists no subnets; on an address
// that serves no network, nobody may.
func (t *tables) allowed(local, client netip.Addr) bool {
	nets := t.byListen[local]
	if len(nets) == 0 {
		// A listener being closed serves no network any more: refused,
		// or it would forward for anyone until it is gone.
		return false
	}
	for _, n := range nets {
		if len(n.subnets) == 0 || slices.ContainsFunc(n.subnets, func(p netip.Prefix) bool { return p.Contains(client) }) {
			return true
		}
	}
	return false
}

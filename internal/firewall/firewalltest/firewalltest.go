// Package firewalltest is a recording firewall.Firewall for unit tests of
// its callers: it keeps the intent it was given, renders it as text to
// compare against, and fails chosen calls on request.
//
// Invariants:
//   - It validates its input as a real backend does, so a caller's test
//     catches a network no backend could install.
//   - A failed call changes nothing, as with a real backend.
//   - It never touches the kernel; it is safe for concurrent use.
package firewalltest

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/knit-dev/knit/internal/firewall"
)

// Recorder records calls and the resulting set of installed networks,
// published ports and links.
type Recorder struct {
	mu       sync.Mutex
	calls    []string
	networks map[string]firewall.Network
	ports    owned[portKey, firewall.PortMapping]
	links    owned[linkKey, firewall.Link]
	guarded  owned[netip.Addr, netip.Addr]
	senders  owned[firewall.Source, firewall.Source]
	fail     map[string]error
	lost     bool // Flush emptied everything; EnsureNetworkReport says so until MarkRestored
	// foreignDrop is DropForeignForwarding's state per family (index 1: IPv6).
	foreignDrop [2]bool
}

// portKey identifies a published port as the backends do: one mapping per
// host address (or every address of a family), protocol and host port.
type portKey struct {
	host  netip.Addr // zero: every address
	v6    bool
	proto string
	port  uint16
}

func keyOf(m firewall.PortMapping) portKey {
	k := portKey{v6: m.ContainerIP.Is6(), proto: m.Proto, port: m.HostPort}
	if !m.AnyHost() {
		k.host = m.HostIP.Unmap()
	}
	return k
}

// linkKey identifies a link as the backends do: by its addresses,
// protocol and port, whatever its network.
type linkKey struct {
	from, to netip.Addr
	proto    string
	port     uint16
}

func linkKeyOf(l firewall.Link) linkKey { return linkKey{l.From, l.To, l.Proto, l.Port} }

var _ firewall.Firewall = (*Recorder)(nil)

// New returns an empty Recorder.
func New() *Recorder {
	return &Recorder{networks: map[string]firewall.Network{}, ports: owned[portKey, firewall.PortMapping]{}, links: owned[linkKey, firewall.Link]{}, guarded: owned[netip.Addr, netip.Addr]{}, senders: owned[firewall.Source, firewall.Source]{}, fail: map[string]error{}}
}

// FailOn makes the next call described by call ("EnsureNetwork NAME",
// "Check", "RemoveNetwork NAME", "AddPorts OWNER", "RemovePorts OWNER", "AddLinks
// OWNER", "RemoveLinks OWNER" or "SetLinks OWNER") return err
// without changing anything.
func (r *Recorder) FailOn(call string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail[call] = err
}

// EnsureNetwork records n as installed, replacing an earlier n of that name.
func (r *Recorder) EnsureNetwork(n firewall.Network) error {
	if err := r.record("EnsureNetwork " + n.Name); err != nil {
		return err
	}
	if err := n.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n.Subnets = slices.Clone(n.Subnets)
	r.networks[n.Name] = n
	return nil
}

// EnsureNetworkReport is EnsureNetwork, reporting a Flush since the last
// MarkRestored as lost.
func (r *Recorder) EnsureNetworkReport(n firewall.Network) (lost bool, err error) {
	if err := r.EnsureNetwork(n); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lost, nil
}

// NoteLost makes EnsureNetworkReport report a loss until MarkRestored.
func (r *Recorder) NoteLost() error { return r.setLost("NoteLost", true) }

// MarkRestored clears what a Flush left for EnsureNetworkReport to report.
func (r *Recorder) MarkRestored() error { return r.setLost("MarkRestored", false) }

func (r *Recorder) setLost(call string, lost bool) error {
	if err := r.record(call); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost = lost
	return nil
}

// Flush empties the recorder as `nft flush ruleset` empties a backend:
// every network, port and link goes (the calls recorded stay).
func (r *Recorder) Flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.networks)
	clear(r.ports)
	clear(r.links)
	clear(r.guarded)
	clear(r.senders)
	r.foreignDrop = [2]bool{}
	r.lost = true
}

// RemoveNetwork forgets the named network; a missing one is not an error.
func (r *Recorder) RemoveNetwork(name string) error {
	if err := r.record("RemoveNetwork " + name); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.networks, name)
	return nil
}

// AddPorts records owner's mappings, replacing any other owner's of the
// same host address, protocol and port, as a backend does.
func (r *Recorder) AddPorts(owner string, ports []firewall.PortMapping) error {
	return change(r, "AddPorts "+owner, owner, ports, func() { r.ports.add(owner, ports, keyOf) })
}

// RemovePorts forgets owner's mappings (all of them for nil ports);
// others' and missing ones are skipped.
func (r *Recorder) RemovePorts(owner string, ports []firewall.PortMapping) error {
	return change(r, "RemovePorts "+owner, owner, ports, func() { r.ports.remove(owner, ports, keyOf) })
}

// Networks returns the names of the installed networks, sorted.
func (r *Recorder) Networks() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.networks))
	for name := range r.networks {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// Owners returns the owners of published ports, sorted.
func (r *Recorder) Owners() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ports.owners(), nil
}

// AddLinks records owner's links, replacing any other owner's of the same
// addresses, protocol and port, as a backend does.
func (r *Recorder) AddLinks(owner string, links []firewall.Link) error {
	return change(r, "AddLinks "+owner, owner, links, func() { r.links.add(owner, links, linkKeyOf) })
}

// RemoveLinks forgets owner's links (all of them for nil links); others'
// and missing ones are skipped.
func (r *Recorder) RemoveLinks(owner string, links []firewall.Link) error {
	return change(r, "RemoveLinks "+owner, owner, links, func() { r.links.remove(owner, links, linkKeyOf) })
}

// SetLinks makes owner's links exactly links, in one step.
func (r *Recorder) SetLinks(owner string, links []firewall.Link) error {
	return change(r, "SetLinks "+owner, owner, links, func() {
		r.links.remove(owner, nil, linkKeyOf)
		r.links.add(owner, links, linkKeyOf)
	})
}

// LinkOwners returns the owners of links, sorted.
func (r *Recorder) LinkOwners() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.links.owners(), nil
}

// AddSources records owner's sources and claims their addresses, taking
// over any other owner's claim on one, as a backend does.
func (r *Recorder) AddSources(owner string, srcs []firewall.Source) error {
	return change(r, "AddSources "+owner, owner, srcs, func() { r.addSources(owner, srcs) })
}

// RemoveSources forgets owner's sources srcs and claims on addrs (all of
// them when both are nil); others' and missing ones are skipped.
func (r *Recorder) RemoveSources(owner string, srcs []firewall.Source, addrs []netip.Addr) error {
	if err := validClaims(addrs); err != nil {
		return err
	}
	return change(r, "RemoveSources "+owner, owner, srcs, func() {
		if srcs == nil && addrs == nil {
			r.senders.remove(owner, nil, same)
			r.guarded.remove(owner, nil, same)
			return
		}
		r.removeSources(owner, srcs, addrs)
	})
}

// AddPortsAndSources is AddPorts and AddSources in one call: it fails
// (FailOn("AddPortsAndSources OWNER")) or changes both.
func (r *Recorder) AddPortsAndSources(owner string, ports []firewall.PortMapping, srcs []firewall.Source) error {
	if err := validSources(srcs); err != nil {
		return err
	}
	return change(r, "AddPortsAndSources "+owner, owner, ports, func() {
		r.ports.add(owner, ports, keyOf)
		r.addSources(owner, srcs)
	})
}

// RemovePortsAndSources is RemovePorts and RemoveSources of the keys
// given in one call.
func (r *Recorder) RemovePortsAndSources(owner string, ports []firewall.PortMapping, srcs []firewall.Source, addrs []netip.Addr) error {
	if err := errors.Join(validClaims(addrs), validSources(srcs)); err != nil {
		return err
	}
	return change(r, "RemovePortsAndSources "+owner, owner, ports, func() {
		if len(ports) > 0 {
			r.ports.remove(owner, ports, keyOf)
		}
		r.removeSources(owner, srcs, addrs)
	})
}

// addSources records srcs and claims their addresses, under r.mu.
func (r *Recorder) addSources(owner string, srcs []firewall.Source) {
	r.senders.add(owner, srcs, same)
	for _, s := range srcs {
		r.guarded.add(owner, []netip.Addr{s.Addr}, same)
	}
}

// removeSources forgets the given sources and claims, under r.mu.
func (r *Recorder) removeSources(owner string, srcs []firewall.Source, addrs []netip.Addr) {
	if len(srcs) > 0 {
		r.senders.remove(owner, srcs, same)
	}
	if len(addrs) > 0 {
		r.guarded.remove(owner, addrs, same)
	}
}

func validSources(srcs []firewall.Source) error {
	for _, s := range srcs {
		if err := s.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func validClaims(addrs []netip.Addr) error {
	for _, a := range addrs {
		if err := firewall.ValidateClaim(a); err != nil {
			return err
		}
	}
	return nil
}

// SourceOwners returns the owners of sources and claims, sorted.
func (r *Recorder) SourceOwners() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Compact(slices.Sorted(slices.Values(append(r.senders.owners(), r.guarded.owners()...)))), nil
}

// same is the key of an element that is its own key.
func same[K comparable](k K) K { return k }

// DropForeignForwarding records the family's drop.
func (r *Recorder) DropForeignForwarding(v6 bool) error {
	return r.setForeignDrop("DropForeignForwarding", v6, true)
}

// AllowForeignForwarding forgets it.
func (r *Recorder) AllowForeignForwarding(v6 bool) error {
	return r.setForeignDrop("AllowForeignForwarding", v6, false)
}

func (r *Recorder) setForeignDrop(call string, v6, on bool) error {
	if err := r.record(call); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.foreignDrop[family(v6)] = on
	return nil
}

// ForeignDrop reports DropForeignForwarding's state for the family.
func (r *Recorder) ForeignDrop(v6 bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.foreignDrop[family(v6)]
}

func family(v6 bool) int {
	if v6 {
		return 1
	}
	return 0
}

// Check returns the error FailOn("Check", err) set, once; it is not in
// Calls, being no change.
func (r *Recorder) Check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.fail["Check"]
	delete(r.fail, "Check")
	return err
}

// change records call, validates items as a backend would, and applies
// apply under the lock; a failed call changes nothing.
func change[T interface{ Validate() error }](r *Recorder, call, owner string, items []T, apply func()) error {
	if err := r.record(call); err != nil {
		return err
	}
	if err := firewall.ValidateOwner(owner); err != nil {
		return err
	}
	for _, it := range items {
		if err := it.Validate(); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	apply()
	return nil
}

// owned maps an element's key to its owner and value, as the backends'
// map and set elements carry their owner in a comment.
type owned[K comparable, V any] map[K]struct {
	owner string
	v     V
}

func (o owned[K, V]) add(owner string, vs []V, key func(V) K) {
	for _, v := range vs {
		o[key(v)] = struct {
			owner string
			v     V
		}{owner, v}
	}
}

// remove deletes owner's elements among vs, or all of owner's for nil vs.
func (o owned[K, V]) remove(owner string, vs []V, key func(V) K) {
	for k, e := range o {
		if e.owner == owner && (vs == nil || slices.ContainsFunc(vs, func(v V) bool { return key(v) == k })) {
			delete(o, k)
		}
	}
}

func (o owned[K, V]) owners() []string {
	var out []string
	for _, e := range o {
		if !slices.Contains(out, e.owner) {
			out = append(out, e.owner)
		}
	}
	slices.Sort(out)
	return out
}

// record appends call to the log and returns the error FailOn set for it.
func (r *Recorder) record(call string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call)
	err, ok := r.fail[call]
	if ok {
		delete(r.fail, call)
	}
	return err
}

// Calls returns the calls made so far, failed ones included, in order.
func (r *Recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// Network returns the installed network called name.
func (r *Recorder) Network(name string) (firewall.Network, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.networks[name]
	return n, ok
}

// String renders the installed networks, one a line, sorted by name, then
// the published ports, sorted, then the links, sorted:
//
//	network NAME bridge BR subnets A,B [masquerade] [icc] [internal] [routed]
//	port OWNER NETWORK [HOSTIP:]HOSTPORT->CONTAINERIP:PORT/PROTO
//	link OWNER NETWORK FROM->TO:PORT/PROTO
//	claim OWNER ADDR
//	source OWNER PORT=ADDR
func (r *Recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(r.networks)) {
		n := r.networks[name]
		subnets := make([]string, len(n.Subnets))
		for i, p := range n.Subnets {
			subnets[i] = p.String()
		}
		fmt.Fprintf(&b, "network %s bridge %s subnets %s", n.Name, n.Bridge, strings.Join(subnets, ","))
		for _, f := range []struct {
			on   bool
			word string
		}{{n.Masquerade, "masquerade"}, {n.ICC, "icc"}, {n.Internal, "internal"}, {n.Routed4, "routed4"}, {n.Routed6, "routed6"}} {
			if f.on {
				b.WriteString(" " + f.word)
			}
		}
		b.WriteString("\n")
	}
	var ports []string
	for _, p := range r.ports {
		ports = append(ports, fmt.Sprintf("port %s %s %s\n", p.owner, p.v.Network, p.v))
	}
	slices.Sort(ports)
	b.WriteString(strings.Join(ports, ""))
	var links []string
	for _, l := range r.links {
		links = append(links, fmt.Sprintf("link %s %s %s\n", l.owner, l.v.Network, l.v))
	}
	slices.Sort(links)
	b.WriteString(strings.Join(links, ""))
	var sources []string
	for _, s := range r.guarded {
		sources = append(sources, fmt.Sprintf("claim %s %s\n", s.owner, s.v))
	}
	for _, s := range r.senders {
		sources = append(sources, fmt.Sprintf("source %s %s\n", s.owner, s.v))
	}
	slices.Sort(sources)
	b.WriteString(strings.Join(sources, ""))
	return b.String()
}

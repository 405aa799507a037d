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
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/knit-dev/knit/internal/firewall"
)

// Recorder records calls and the resulting set of installed networks and
// published ports.
type Recorder struct {
	mu       sync.Mutex
	calls    []string
	networks map[string]firewall.Network
	ports    map[portKey]ownedPort
	fail     map[string]error
}

// portKey identifies a published port as the backends do: one mapping per
// host address (or every address of a family), protocol and host port.
type portKey struct {
	host  netip.Addr // zero: every address
	v6    bool
	proto string
	port  uint16
}

type ownedPort struct {
	owner string
	m     firewall.PortMapping
}

func keyOf(m firewall.PortMapping) portKey {
	k := portKey{v6: m.ContainerIP.Is6(), proto: m.Proto, port: m.HostPort}
	if !m.AnyHost() {
		k.host = m.HostIP.Unmap()
	}
	return k
}

var _ firewall.Firewall = (*Recorder)(nil)

// New returns an empty Recorder.
func New() *Recorder {
	return &Recorder{networks: map[string]firewall.Network{}, ports: map[portKey]ownedPort{}, fail: map[string]error{}}
}

// FailOn makes the next call described by call ("EnsureNetwork NAME",
// "RemoveNetwork NAME", "AddPorts OWNER" or "RemovePorts OWNER") return err
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
	if err := r.record("AddPorts " + owner); err != nil {
		return err
	}
	if err := validatePorts(owner, ports); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range ports {
		r.ports[keyOf(m)] = ownedPort{owner, m}
	}
	return nil
}

// RemovePorts forgets owner's mappings; others' and missing ones are
// skipped.
func (r *Recorder) RemovePorts(owner string, ports []firewall.PortMapping) error {
	if err := r.record("RemovePorts " + owner); err != nil {
		return err
	}
	if err := validatePorts(owner, ports); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range ports {
		if p, ok := r.ports[keyOf(m)]; ok && p.owner == owner {
			delete(r.ports, keyOf(m))
		}
	}
	if ports == nil { // every mapping of owner
		for k, p := range r.ports {
			if p.owner == owner {
				delete(r.ports, k)
			}
		}
	}
	return nil
}

// Owners returns the owners of published ports, sorted.
func (r *Recorder) Owners() ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var owners []string
	for _, p := range r.ports {
		if !slices.Contains(owners, p.owner) {
			owners = append(owners, p.owner)
		}
	}
	slices.Sort(owners)
	return owners, nil
}

func validatePorts(owner string, ports []firewall.PortMapping) error {
	if err := firewall.ValidateOwner(owner); err != nil {
		return err
	}
	for _, m := range ports {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	return nil
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
// the published ports, sorted:
//
//	network NAME bridge BR subnets A,B [masquerade] [icc] [internal] [routed]
//	port OWNER NETWORK [HOSTIP:]HOSTPORT->CONTAINERIP:PORT/PROTO
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
		}{{n.Masquerade, "masquerade"}, {n.ICC, "icc"}, {n.Internal, "internal"}, {n.Routed, "routed"}} {
			if f.on {
				b.WriteString(" " + f.word)
			}
		}
		b.WriteString("\n")
	}
	var ports []string
	for _, p := range r.ports {
		ports = append(ports, fmt.Sprintf("port %s %s %s\n", p.owner, p.m.Network, p.m))
	}
	slices.Sort(ports)
	b.WriteString(strings.Join(ports, ""))
	return b.String()
}

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
	"slices"
	"strings"
	"sync"

	"github.com/knit-dev/knit/internal/firewall"
)

// Recorder records calls and the resulting set of installed networks.
type Recorder struct {
	mu       sync.Mutex
	calls    []string
	networks map[string]firewall.Network
	fail     map[string]error
}

var _ firewall.Firewall = (*Recorder)(nil)

// New returns an empty Recorder.
func New() *Recorder {
	return &Recorder{networks: map[string]firewall.Network{}, fail: map[string]error{}}
}

// FailOn makes the next call described by call ("EnsureNetwork NAME" or
// "RemoveNetwork NAME") return err without changing anything.
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

// String renders the installed networks, one a line, sorted by name:
//
//	network NAME bridge BR subnets A,B [masquerade] [icc] [internal]
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
		}{{n.Masquerade, "masquerade"}, {n.ICC, "icc"}, {n.Internal, "internal"}} {
			if f.on {
				b.WriteString(" " + f.word)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

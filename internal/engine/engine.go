// Package engine orchestrates knit's work: it turns a request ("run this
// command on that network") into store transactions, driver calls and a
// supervised process, and undoes what it did when a step fails.
//
// Invariants:
//   - The store is the record of intent; the kernel is brought to match it.
//     Every command first reconciles: containers whose supervisor died are
//     torn down, so a crash at any point is repaired by the next command.
//   - Store transactions are short; no lock is held while waiting on a
//     process or doing kernel work.
//   - Kernel work happens before the store forgets an object, so a crash
//     between the two leaves a record that the next reconcile finishes.
package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/knit-dev/knit/internal/config"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/store"
)

// Paths are the directories knit keeps its state in.
type Paths struct {
	DataRoot   string // persistent: the store and the containers' logs
	ExecRoot   string // runtime: namespace bind mounts and the containers' /etc files
	Config     string // config.json (optional)
	NetnsLinks string // where `ip netns` looks; knit adds knit-NAME symlinks there
}

// FirewallStamp is where the firewall keeps its record of what it last saw
// up to date (nftables.WithStamp): on the exec-root, which a reboot clears.
func (p Paths) FirewallStamp() string { return filepath.Join(p.ExecRoot, "nftables.verified") }

// DefaultPaths are the paths used when nothing overrides them.
func DefaultPaths() Paths {
	return Paths{
		DataRoot:   "/var/lib/knit",
		ExecRoot:   "/run/knit",
		Config:     "/etc/knit/config.json",
		NetnsLinks: "/run/netns",
	}
}

// Engine runs knit's operations. It is cheap to make and holds no locks.
type Engine struct {
	paths   Paths
	cfg     *config.Config
	st      store.Store
	drivers map[string]driver.Driver
	fw      firewall.Firewall // nil when the firewall is off (config "iptables": false)
	dnsr    dnsRedirector     // the firewall's, when it can; nil: resolv.conf names the gateway
	self    string            // path of the knit binary, re-executed for supervisors

	fwCheck sync.Once // CheckFirewall's, once per engine
	fwErr   error
}

// CheckFirewall reports whether the firewall can be used. The firewall
// opens its sockets on first use, so that commands that never touch it
// (ps, inspect, rm of a stopped container) bind no netfilter socket; the
// commands that will change it (run on a network, connect, network create,
// rm and prune, CNI ADD) call this first, so that a kernel without
// nf_tables stops them before they change anything, not half-way.
func (e *Engine) CheckFirewall() error {
	if e.fw == nil {
		return nil
	}
	e.fwCheck.Do(func() {
		if err := e.fw.Check(); err != nil {
			e.fwErr = fmt.Errorf("%w: %w (set \"iptables\": false in the configuration to run without it)", ErrFirewallUnusable, err)
		}
	})
	return e.fwErr
}

// ErrFirewallUnusable is CheckFirewall's error: no command that changes the
// firewall can work here.
var ErrFirewallUnusable = errors.New("the firewall cannot be used")

// Options wires an Engine.
type Options struct {
	Paths   Paths
	Config  *config.Config
	Store   store.Store
	Drivers map[string]driver.Driver
	// Firewall programs NAT and filtering; nil leaves the firewall alone.
	Firewall firewall.Firewall
}

// New returns an Engine over the given dependencies.
func New(o Options) (*Engine, error) {
	// This process's start time is read now, before any descriptor limit
	// could make /proc unreadable: a record written with an unread start
	// (0) would make this live process look dead to every other knit.
	selfProc()
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	e := &Engine{paths: o.Paths, cfg: o.Config, st: o.Store, drivers: o.Drivers, self: self}
	if r, ok := o.Firewall.(dnsRedirector); ok {
		e.dnsr = r
	}
	if o.Firewall != nil {
		// The lock lives beside the store, which exists before the exec-root
		// tmpfs is mounted.
		e.fw = &lockedFirewall{fw: o.Firewall, path: filepath.Join(o.Paths.DataRoot, "firewall.lock")}
	}
	return e, nil
}

func (e *Engine) netnsDir() string           { return filepath.Join(e.paths.ExecRoot, "netns") }
func (e *Engine) netnsPath(id string) string { return filepath.Join(e.netnsDir(), id) }

// isNetnsFile reports whether path names a namespace file of this engine's
// exec-root (one that netnsPath could return).
func (e *Engine) isNetnsFile(path string) bool { return filepath.Dir(path) == e.netnsDir() }

func (e *Engine) netnsLink(name string) string {
	return filepath.Join(e.paths.NetnsLinks, "knit-"+name)
}

// containerDir holds a container's /etc files: runtime state, on the
// exec-root tmpfs (a file created on a journaled disk costs ~1.5 ms here).
func (e *Engine) containerDir(id string) string {
	return filepath.Join(e.paths.ExecRoot, "containers", id)
}

// logDir holds a detached container's log, which outlives a reboot.
func (e *Engine) logDir(id string) string { return filepath.Join(e.paths.DataRoot, "containers", id) }

// prepareExecRoot makes the exec-root a tmpfs with shared propagation.
func (e *Engine) prepareExecRoot() error {
	if err := netns.PrepareDir(e.paths.ExecRoot); err != nil {
		return fmt.Errorf("prepare %s: %w", e.paths.ExecRoot, err)
	}
	return nil
}

func (e *Engine) driverFor(n *Network) (driver.Driver, error) {
	d, ok := e.drivers[n.Driver]
	if !ok {
		return nil, fmt.Errorf("network %s: driver %q is not available", n.Name, n.Driver)
	}
	return d, nil
}

// Linger lets the process exit without waiting for the kernel to free
// what its firewall batches deleted (nftables.Firewall.Linger): for a
// command's last step.
func (e *Engine) Linger() {
	fw := e.fw
	if l, ok := fw.(*lockedFirewall); ok {
		fw = l.fw
	}
	if l, ok := fw.(interface{ Linger() }); ok {
		l.Linger()
	}
}

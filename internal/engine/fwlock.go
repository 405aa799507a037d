package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
)

// lockedFirewall serialises firewall changes across knit processes. Each
// change reads knit's table and sends a batch computed from what it read;
// two processes doing that at once (32 parallel runs creating the table)
// would send batches that contradict each other. A flock on a file in the
// exec-root makes every read-then-write atomic with respect to the others.
type lockedFirewall struct {
	fw   firewall.Firewall
	path string
}

func (l *lockedFirewall) do(fn func() error) error {
	unlock, err := lockFile(l.path)
	if err != nil {
		return fmt.Errorf("lock firewall: %w", err)
	}
	defer unlock()
	return fn()
}

// lockFile takes an exclusive flock on path, creating it and its
// directory; the returned func releases it.
func lockFile(path string) (unlock func(), err error) { return flockFile(path, unix.LOCK_EX) }

// lockFileShared takes a shared flock on path, as lockFile does.
func lockFileShared(path string) (unlock func(), err error) { return flockFile(path, unix.LOCK_SH) }

// lockWait bounds how long a command waits for one of these locks (a
// variable for the tests). Every holder keeps one for milliseconds: a
// holder stopped (^Z) or hung must not stall every later command and
// every supervisor's exit for ever, as a blocking flock would.
var lockWait = time.Minute

// A holder of the exclusive lock may delete the file (removeLockFile): a
// waiter that opened it before then gets a lock on a file no longer at
// path, sees so and starts again on the new one, so two processes never
// hold locks on two files of one path.
func flockFile(path string, how int) (unlock func(), err error) {
	deadline := time.Now().Add(lockWait)
	for {
		unlock, moved, err := flockOnce(path, how, time.Until(deadline))
		if errors.Is(err, errLockHeld) { // held, and the wait was spent on a file replaced meanwhile
			return nil, busyLock(path)
		}
		if err != nil || !moved {
			return unlock, err
		}
		if time.Now().After(deadline) {
			return nil, busyLock(path)
		}
	}
}

func busyLock(path string) error {
	return errdefs.Unavailable("lock %s is busy: another knit process has held it for over %s; retry, or look for a stopped or stuck knit process (fuser %s)", path, lockWait, path)
}

// errLockHeld is flockOnce's answer, without a wait, for a lock held.
var errLockHeld = errors.New("lock held")

// tryLockFileShared takes a shared flock on path, as lockFileShared, unless
// a process holds it exclusively (a network rm, say): then it does not
// wait, and says so.
func tryLockFileShared(path string) (unlock func(), held bool, err error) {
	for range 3 { // a file replaced meanwhile (see flockFile): again
		unlock, moved, err := flockOnce(path, unix.LOCK_SH, 0)
		if errors.Is(err, errLockHeld) {
			return nil, true, nil
		}
		if err != nil || !moved {
			return unlock, false, err
		}
	}
	return nil, false, fmt.Errorf("lock %s: replaced three times while being taken", path)
}

// lockBusy reports whether a process holds the lock at path exclusively
// (this process's own, through another open file, counts too). It neither
// waits nor keeps the lock, nor makes a missing file: nobody holds that.
func lockBusy(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	}
	return errors.Is(err, unix.EWOULDBLOCK)
}

// removeLockFile deletes the lock file at path, which the caller holds
// exclusively (see flockFile).
func removeLockFile(path string) { _ = os.Remove(path) }

// flockOnce takes the lock on the file at path, waiting at most wait;
// moved says that the file it locked was deleted or replaced meanwhile
// (no lock is kept then).
func flockOnce(path string, how int, wait time.Duration) (unlock func(), moved bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, false, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("open lock %s: %w", path, err)
	}
	err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	if err == nil {
		return stillAt(f, path)
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		f.Close()
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	if wait <= 0 {
		f.Close()
		return nil, false, errLockHeld
	}
	// Held: wait in the kernel, which hands the lock over the moment it
	// is free (polling would miss the short gaps between holders of a
	// shared lock, and an exclusive waiter would starve), but no longer
	// than lockWait. A wait given up on releases the lock once it gets it.
	got := make(chan error, 1)
	go func() { got <- unix.Flock(int(f.Fd()), how) }()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, false, fmt.Errorf("lock %s: %w", path, err)
		}
		return stillAt(f, path)
	case <-timer.C:
		go func() { <-got; f.Close() }()
		return nil, false, busyLock(path)
	}
}

// stillAt returns the unlock of f, which the caller has locked, if f is
// still the file at path; if the path is gone or names another file now,
// it closes f and reports it moved.
func stillAt(f *os.File, path string) (unlock func(), moved bool, err error) {
	var have, now unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &have); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	err = unix.Stat(path, &now)
	if err == nil && have.Dev == now.Dev && have.Ino == now.Ino {
		return func() { f.Close() }, false, nil // closing releases the lock
	}
	f.Close()
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	return nil, true, nil
}

func (l *lockedFirewall) EnsureNetwork(n firewall.Network) error {
	return l.do(func() error { return l.fw.EnsureNetwork(n) })
}

func (l *lockedFirewall) EnsureNetworkReport(n firewall.Network) (lost bool, err error) {
	err = l.do(func() (err error) { lost, err = l.fw.EnsureNetworkReport(n); return err })
	return lost, err
}

// MarkRestored under the lock: a base rebuilt (and a new loss noted) by
// another process is then either before it, and a loss this clears, or
// after it, and kept.
func (l *lockedFirewall) MarkRestored() error { return l.do(l.fw.MarkRestored) }

func (l *lockedFirewall) DropForeignForwarding(v6 bool) error {
	return l.do(func() error { return l.fw.DropForeignForwarding(v6) })
}

func (l *lockedFirewall) AllowForeignForwarding(v6 bool) error {
	return l.do(func() error { return l.fw.AllowForeignForwarding(v6) })
}

func (l *lockedFirewall) NoteLost() error { return l.do(l.fw.NoteLost) }

func (l *lockedFirewall) RemoveNetwork(name string) error {
	return l.do(func() error { return l.fw.RemoveNetwork(name) })
}

func (l *lockedFirewall) AddPorts(owner string, p []firewall.PortMapping) error {
	return l.do(func() error { return l.fw.AddPorts(owner, p) })
}

func (l *lockedFirewall) RemovePorts(owner string, p []firewall.PortMapping) error {
	return l.do(func() error { return l.fw.RemovePorts(owner, p) })
}

func (l *lockedFirewall) AddLinks(owner string, ls []firewall.Link) error {
	return l.do(func() error { return l.fw.AddLinks(owner, ls) })
}

func (l *lockedFirewall) RemoveLinks(owner string, ls []firewall.Link) error {
	return l.do(func() error { return l.fw.RemoveLinks(owner, ls) })
}

func (l *lockedFirewall) SetLinks(owner string, ls []firewall.Link) error {
	return l.do(func() error { return l.fw.SetLinks(owner, ls) })
}

func (l *lockedFirewall) AddSources(owner string, s []firewall.Source) error {
	return l.do(func() error { return l.fw.AddSources(owner, s) })
}

func (l *lockedFirewall) RemoveSources(owner string, s []firewall.Source, a []netip.Addr) error {
	return l.do(func() error { return l.fw.RemoveSources(owner, s, a) })
}

func (l *lockedFirewall) AddPortsAndSources(owner string, p []firewall.PortMapping, s []firewall.Source) error {
	return l.do(func() error { return l.fw.AddPortsAndSources(owner, p, s) })
}

func (l *lockedFirewall) RemovePortsAndSources(owner string, p []firewall.PortMapping, s []firewall.Source, a []netip.Addr) error {
	return l.do(func() error { return l.fw.RemovePortsAndSources(owner, p, s, a) })
}

func (l *lockedFirewall) SourceOwners() ([]string, error) { return l.fw.SourceOwners() }

func (l *lockedFirewall) Owners() ([]string, error)     { return l.fw.Owners() }
func (l *lockedFirewall) Networks() ([]string, error)   { return l.fw.Networks() }
func (l *lockedFirewall) LinkOwners() ([]string, error) { return l.fw.LinkOwners() }
func (l *lockedFirewall) Check() error                  { return l.fw.Check() }

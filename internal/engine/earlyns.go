package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
)

// ownsNetns reports whether a container run with network mode mode gets a
// network namespace of its own (none, bridge and user-defined networks do;
// host and container:NAME share one).
func ownsNetns(mode string) bool {
	return mode != ModeHost && !strings.HasPrefix(mode, ModeContainer)
}

// netnsLock orders the making of namespaces that no record names yet with
// prune, which deletes namespaces that no record names.
func (e *Engine) netnsLock() string { return filepath.Join(e.paths.ExecRoot, "netns.lock") }

// earlyNetns is a container's network namespace, made while its record is
// written. The namespace (unshare, bind mount, lo up: ~0.5 ms of kernel
// work) needs only the container's ID, and reconcile, the network checks
// and the reservation (~0.5 ms) need only the store, so they overlap.
//
// Until the record exists no record names the namespace. Its maker holds a
// shared flock on netnsLock meanwhile, and prune takes that lock
// exclusively before it looks for namespaces without a record, so it never
// deletes one being made. A crash in between leaves a namespace with no
// record and no lock holder: prune deletes it.
type earlyNetns struct {
	path    string
	made    *netns.Pending
	h       *link.Handle // bound to the namespace, lo up
	unlock  func()       // the shared lock, if taken
	release sync.Once    // of the lock: once a record names it, or once it is gone
}

// startNetns starts making the namespace of container id: the kernel makes
// it while the caller prepares the exec-root and takes the lock, which
// must be held before the namespace's file appears.
func (e *Engine) startNetns(id string) *earlyNetns {
	ns := &earlyNetns{path: e.netnsPath(id)}
	// One trip into the new namespace: bring lo up and keep a netlink
	// handle bound to it for the drivers.
	ns.made = netns.Begin(ns.path, func() (err error) {
		if ns.h, err = link.Host(); err != nil {
			return err
		}
		if err = ns.h.LinkSetUp(link.LoopbackIndex); err != nil {
			ns.h.Close()
			ns.h = nil
			return fmt.Errorf("set lo up: %w", err)
		}
		return nil
	})
	return ns
}

// place takes the lock and makes the namespace's file, on the prepared
// exec-root; err (the exec-root could not be prepared) abandons it. It
// returns err, or why the lock could not be taken.
func (ns *earlyNetns) place(e *Engine, err error) error {
	if err == nil {
		err = os.MkdirAll(e.netnsDir(), 0o755)
	}
	if err == nil {
		ns.unlock, err = lockFileShared(e.netnsLock())
	}
	ns.made.Place(err)
	return err
}

// recorded says a committed record names the namespace: prune keeps it
// from now on even while it is still being made, so the lock goes at once
// (a prune waits for runs only this long).
func (ns *earlyNetns) recorded() {
	ns.release.Do(func() {
		if ns.unlock != nil {
			ns.unlock()
		}
	})
}

// claim waits for the namespace and hands its handle (the caller closes it)
// to the container whose record names it.
func (ns *earlyNetns) claim() (*link.Handle, error) {
	err := ns.made.Wait()
	ns.recorded()
	if err != nil {
		return nil, fmt.Errorf("create network namespace: %w", err)
	}
	return ns.h, nil
}

// abandon deletes the namespace of a run that made no record.
func (ns *earlyNetns) abandon() {
	_ = ns.made.Wait()
	if ns.h != nil {
		ns.h.Close()
	}
	_ = netns.Delete(ns.path)
	ns.recorded() // not recorded: gone
}

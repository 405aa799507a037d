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
	return mode != ModeHost && !strings.HasPrefix(mode, containerMode)
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
	done    chan struct{}
	h       *link.Handle // bound to the namespace, lo up
	err     error
	unlock  func()    // the shared lock
	release sync.Once // of the lock: once a record names it, or once it is gone
}

// startNetns starts making the namespace of container id, on the prepared
// exec-root.
func (e *Engine) startNetns(id string) (*earlyNetns, error) {
	if err := os.MkdirAll(e.netnsDir(), 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFileShared(e.netnsLock())
	if err != nil {
		return nil, err
	}
	ns := &earlyNetns{path: e.netnsPath(id), done: make(chan struct{}), unlock: unlock}
	go func() {
		defer close(ns.done)
		// One trip into the new namespace: bring lo up and keep a netlink
		// handle bound to it for the drivers.
		err := netns.Create(ns.path, func() (err error) {
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
		if err != nil {
			ns.err = fmt.Errorf("create network namespace: %w", err)
		}
	}()
	return ns, nil
}

// recorded says a committed record names the namespace: prune keeps it
// from now on even while it is still being made, so the lock goes at once
// (a prune waits for runs only this long).
func (ns *earlyNetns) recorded() { ns.release.Do(ns.unlock) }

// claim waits for the namespace and hands its handle (the caller closes it)
// to the container whose record names it.
func (ns *earlyNetns) claim() (*link.Handle, error) {
	<-ns.done
	ns.recorded()
	return ns.h, ns.err
}

// abandon deletes the namespace of a run that made no record.
func (ns *earlyNetns) abandon() {
	<-ns.done
	if ns.h != nil {
		ns.h.Close()
	}
	_ = netns.Delete(ns.path)
	ns.release.Do(ns.unlock)
}

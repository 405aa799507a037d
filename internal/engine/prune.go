package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/store"
)

// PruneReport lists what Prune removed.
type PruneReport struct {
	Containers []string // stopped containers, by name
	Links      []string // host-side links whose container is gone
	Netns      []string // namespace mounts whose container is gone
	Addresses  []string // network/address allocations whose container is gone
	Ports      []string // containers whose published-port, link or source elements outlived them
	Networks   []string // user-defined networks no container used
	CNI        []string // CNI attachments whose ADD died half-way
}

// Prune removes stopped containers and every kernel object and allocation
// knit made that no live container owns.
func (e *Engine) Prune() (*PruneReport, error) {
	if err := e.ReconcileStrict(); err != nil {
		return nil, err
	}
	r := &PruneReport{}
	var all []*Container
	var nets []*Network
	err := e.st.View(func(tx store.Tx) (err error) {
		if all, err = listContainers(tx); err != nil {
			return err
		}
		nets, err = listNetworks(tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	live, err := e.pruneContainers(all, r)
	errs := []error{err}
	// CNI attachments whose ADD died half-way; complete ones belong to
	// their runtime, which removes them with DEL or GC.
	halfMade, err := e.CNIGC("", "", func(string, string) bool { return true })
	r.CNI = halfMade
	errs = append(errs, err)
	errs = append(errs, e.pruneNetns(live, r), e.pruneLinks(live, nets, r), e.pruneAddrs(live, nets, r), e.pruneDirs(), e.prunePorts(live, r))
	// As docker system prune: networks no container uses go too, which
	// also finishes removals a crash interrupted.
	removed, err := e.PruneNetworks(nil)
	r.Networks = removed
	errs = append(errs, err, e.pruneNetworkRules(r), e.pruneNetworkLocks(), e.syncDNS())
	return r, errors.Join(errs...)
}

// PruneContainers removes every stopped container (docker container
// prune), as Prune does first, and returns their names.
func (e *Engine) PruneContainers() ([]string, error) {
	if err := e.Reconcile(); err != nil {
		return nil, err
	}
	var all []*Container
	if err := e.st.View(func(tx store.Tx) (err error) { all, err = listContainers(tx); return err }); err != nil {
		return nil, err
	}
	r := &PruneReport{}
	_, err := e.pruneContainers(all, r)
	return r.Containers, err
}

// pruneContainers forgets the stopped containers of all and returns the
// others, which prune keeps, by ID. A stopped one whose exit could not undo
// its kernel state (finish) still holds its addresses and host ports: it is
// undone now, and forgotten only once that worked; until then it is kept.
func (e *Engine) pruneContainers(all []*Container, r *PruneReport) (map[string]*Container, error) {
	var errs []error
	live := map[string]*Container{}
	for _, c := range all {
		if c.State.Status != StatusExited {
			live[c.ID] = c
			continue
		}
		if c.State.Error != "" {
			// Its exit could not undo everything: its kernel state, and the
			// links that let others reach its address, go before the
			// address is released.
			err := e.teardownKernel(c)
			if err == nil {
				if rerr := e.relink(c.ID, true); errors.Is(rerr, errLinksKept) {
					err = rerr
				} else if rerr != nil {
					errs = append(errs, fmt.Errorf("container %s: %w", c.Name, rerr))
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("container %s: %w", c.Name, err))
				live[c.ID] = c // what it holds stays held
				continue
			}
		}
		if err := e.forget(c); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Containers = append(r.Containers, c.Name)
	}
	return live, errors.Join(errs...)
}

func (e *Engine) pruneNetns(live map[string]*Container, r *PruneReport) error {
	// Runs make their namespace while their record is written (earlyNetns):
	// the lock waits for those in flight. On the exec-root tmpfs, which a
	// run mounts first, or the lock would be a file under it.
	if err := e.prepareExecRoot(); err != nil {
		return err
	}
	unlock, err := lockFile(e.netnsLock())
	if err != nil {
		return err
	}
	defer unlock()
	names, err := netns.List(e.netnsDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs []error
	for _, id := range names {
		if _, ok := live[id]; ok {
			continue
		}
		// Kept if active (a run that started after Prune looked) or if
		// the store cannot tell.
		if active, err := e.active(id); err != nil {
			errs = append(errs, err)
			continue
		} else if active {
			continue
		}
		if err := netns.Delete(filepath.Join(e.netnsDir(), id)); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Netns = append(r.Netns, id)
	}
	e.pruneNetnsLinks()
	return errors.Join(errs...)
}

// pruneNetnsLinks removes the knit-NAME links for `ip netns` that point to
// a namespace file of this exec-root that is gone. Links to another knit's
// namespaces are not this one's to judge.
func (e *Engine) pruneNetnsLinks() {
	entries, _ := os.ReadDir(e.paths.NetnsLinks)
	for _, de := range entries {
		p := filepath.Join(e.paths.NetnsLinks, de.Name())
		if t, err := os.Readlink(p); err == nil && strings.HasPrefix(de.Name(), "knit-") && e.isNetnsFile(t) {
			// Read again just before: a run of a container of the same
			// name may have pointed the link at its namespace meanwhile.
			if _, err := os.Stat(t); err != nil {
				if again, err := os.Readlink(p); err == nil && again == t {
					_ = os.Remove(p)
				}
			}
		}
	}
}

func (e *Engine) pruneLinks(live map[string]*Container, nets []*Network, r *PruneReport) error {
	owned := map[string]bool{}
	for _, c := range live {
		for _, ep := range c.Endpoints {
			owned[ep.HostIf] = true
		}
	}
	var errs []error
	for _, n := range nets {
		d, err := e.driverFor(n)
		if err != nil {
			continue
		}
		owners := map[string]string{} // host link → the container ID of its alias
		strays, err := d.Strays(&n.Network, func(hostIf, containerID string) bool {
			owners[hostIf] = containerID
			if _, isLive := live[containerID]; isLive || owned[hostIf] {
				return true
			}
			active, err := e.active(containerID)
			if err != nil {
				errs = append(errs, err) // kept
				return true
			}
			return active
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", n.Name, err))
			continue
		}
		for _, l := range strays {
			removed, err := e.removeStray(owners[l], func() error { return d.RemoveLink(l) })
			if err != nil {
				errs = append(errs, err)
			}
			if removed {
				r.Links = append(r.Links, l)
			}
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) pruneAddrs(live map[string]*Container, nets []*Network, r *PruneReport) error {
	return e.st.Update(func(tx store.Tx) error {
		for _, n := range nets {
			used, err := usedAddrs(tx, n.Name)
			if err != nil {
				return err
			}
			for a, owner := range used {
				if _, kept := live[owner]; kept {
					continue // a container prune keeps (its teardown failed)
				}
				if _, err := getContainer(tx, owner); !errors.Is(err, store.ErrNotFound) {
					// Decided in this transaction: a record frees its own
					// addresses. A newer run's; or one that exited since
					// prune listed the containers, whose teardown may have
					// failed and left its veth on the address (recordExit
					// keeps them then, for a prune that lists it).
					continue
				}
				if _, err := getAttachment(tx, owner); err == nil {
					continue // a CNI attachment's
				}
				if err := releaseAddr(tx, n.Name, a); err != nil {
					return err
				}
				r.Addresses = append(r.Addresses, n.Name+"/"+a.String())
			}
		}
		return nil
	})
}

// pruneDirs removes per-container directories that no record points to.
// The directories are listed before the store is read, so a run that starts
// meanwhile has its record in what is read.
func (e *Engine) pruneDirs() error {
	var dirs []string
	for _, root := range []string{e.paths.ExecRoot, e.paths.DataRoot} {
		entries, _ := os.ReadDir(filepath.Join(root, "containers"))
		for _, de := range entries {
			dirs = append(dirs, filepath.Join(root, "containers", de.Name()))
		}
	}
	known := map[string]bool{}
	err := e.st.View(func(tx store.Tx) error {
		return tx.List(bucketContainers, func(k string, _ []byte) error { known[k] = true; return nil })
	})
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if !known[filepath.Base(d)] {
			_ = os.RemoveAll(d)
		}
	}
	return nil
}

// prunePorts removes firewall elements of containers that no longer exist.
func (e *Engine) prunePorts(live map[string]*Container, r *PruneReport) error {
	if e.fw == nil {
		return nil
	}
	var errs []error
	for _, kind := range []struct {
		owners func() ([]string, error)
		remove func(id string) error
	}{
		{e.fw.Owners, func(id string) error { return e.fw.RemovePorts(id, nil) }},
		{e.fw.LinkOwners, func(id string) error { return e.fw.RemoveLinks(id, nil) }},
		{e.fw.SourceOwners, func(id string) error { return e.fw.RemoveSources(id, nil, nil) }},
	} {
		owners, err := kind.owners()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, id := range owners {
			if _, ok := live[id]; ok {
				continue
			}
			removed, err := e.removeStray(id, func() error { return kind.remove(id) })
			if err != nil {
				errs = append(errs, err)
			}
			if removed && !slices.Contains(r.Ports, id) {
				r.Ports = append(r.Ports, id)
			}
		}
	}
	return errors.Join(errs...)
}

// removeStray removes, with remove, a kernel object (firewall elements, a
// link) of container or attachment id unless id is active, read now. A CNI
// attachment's are decided under its lock: an ADD that replaces the
// attachment has no record for a moment, and it makes the new objects
// under the old names (the veth's is derived from the ID), which must not
// be taken for the old ones.
func (e *Engine) removeStray(id string, remove func() error) (bool, error) {
	if strings.HasPrefix(id, cniIDPrefix) {
		unlock, err := e.attachmentLock(id)
		if err != nil {
			return false, err
		}
		defer unlock()
	}
	if active, err := e.active(id); err != nil || active {
		return false, err
	}
	if err := remove(); err != nil {
		return false, err
	}
	return true, nil
}

// active reports whether id is a CNI attachment or a container that is not
// exited, read now. A store that cannot say (busy past its lock timeout, a
// record that does not decode) is an error, never "inactive": prune's
// callers then keep what they would have removed.
func (e *Engine) active(id string) (bool, error) {
	var active bool
	err := e.st.View(func(tx store.Tx) error {
		_, err := getAttachment(tx, id)
		if err == nil {
			active = true
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		c, err := getContainer(tx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		active = c.State.Status != StatusExited
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("is %s still in use: %w", id, err)
	}
	return active, nil
}

// pruneNetworkRules removes the firewall rules of networks that have no
// record (left by a crash between a network's rules and its record).
func (e *Engine) pruneNetworkRules(r *PruneReport) error {
	if e.fw == nil {
		return nil
	}
	names, err := e.fw.Networks()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		errs = append(errs, e.ifNetworkGone(name, func() error {
			if err := e.fw.RemoveNetwork(name); err != nil {
				return err
			}
			r.Networks = append(r.Networks, name+" (rules only)")
			removeLockFile(e.networkLock(name))
			return nil
		}))
	}
	return errors.Join(errs...)
}

// ifNetworkGone runs fn under the exclusive lock of network name if the
// network has no record, before the lock and once it is held: a create of
// that name finishes first.
func (e *Engine) ifNetworkGone(name string, fn func() error) error {
	if _, err := e.lookupNetwork(name); errdefs.KindOf(err) != errdefs.KindNotFound {
		return nil
	}
	unlock, err := lockFile(e.networkLock(name))
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := e.lookupNetwork(name); errdefs.KindOf(err) != errdefs.KindNotFound {
		return nil
	}
	return fn()
}

// pruneNetworkLocks deletes the lock files of networks that do not exist:
// knits before 2026-11-30 left one for every network name ever used.
func (e *Engine) pruneNetworkLocks() error {
	entries, err := os.ReadDir(filepath.Join(e.paths.DataRoot, "locks"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var errs []error
	for _, de := range entries {
		name, isNet := strings.CutPrefix(de.Name(), "network-")
		name, isLock := strings.CutSuffix(name, ".lock")
		if !isNet || !isLock || name == "" {
			continue
		}
		errs = append(errs, e.ifNetworkGone(name, func() error {
			removeLockFile(e.networkLock(name))
			return nil
		}))
	}
	return errors.Join(errs...)
}

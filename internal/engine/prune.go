package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/store"
)

// PruneReport lists what Prune removed.
type PruneReport struct {
	Containers []string // stopped containers, by name
	Links      []string // host-side links whose container is gone
	Netns      []string // namespace mounts whose container is gone
	Addresses  []string // network/address allocations whose container is gone
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
	var errs []error
	live := map[string]*Container{}
	for _, c := range all {
		if c.State.Status == StatusExited {
			if err := e.forget(c); err != nil {
				errs = append(errs, err)
				continue
			}
			r.Containers = append(r.Containers, c.Name)
			continue
		}
		live[c.ID] = c
	}
	errs = append(errs, e.pruneNetns(live, r), e.pruneLinks(live, nets, r), e.pruneAddrs(live, nets, r), e.pruneDirs(live))
	return r, errors.Join(errs...)
}

func (e *Engine) pruneNetns(live map[string]*Container, r *PruneReport) error {
	names, err := netns.List(e.netnsDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs []error
	for _, id := range names {
		if _, ok := live[id]; ok {
			continue
		}
		if err := netns.Delete(filepath.Join(e.netnsDir(), id)); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Netns = append(r.Netns, id)
	}
	// Dangling knit-NAME links for `ip netns`.
	entries, _ := os.ReadDir(e.paths.NetnsLinks)
	for _, de := range entries {
		p := filepath.Join(e.paths.NetnsLinks, de.Name())
		if t, err := os.Readlink(p); err == nil && strings.HasPrefix(de.Name(), "knit-") && strings.HasPrefix(t, e.netnsDir()) {
			if _, err := os.Stat(t); err != nil {
				_ = os.Remove(p)
			}
		}
	}
	return errors.Join(errs...)
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
		strays, err := d.Strays(&n.Network, func(hostIf, containerID string) bool {
			_, isLive := live[containerID]
			return owned[hostIf] || isLive
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", n.Name, err))
			continue
		}
		for _, l := range strays {
			if err := d.RemoveLink(l); err != nil {
				errs = append(errs, err)
				continue
			}
			r.Links = append(r.Links, l)
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
				if _, ok := live[owner]; ok {
					continue
				}
				if err := tx.Delete(ipamBucket(n.Name), a.String()); err != nil {
					return err
				}
				r.Addresses = append(r.Addresses, n.Name+"/"+a.String())
			}
		}
		return nil
	})
}

// pruneDirs removes per-container directories that no record points to.
func (e *Engine) pruneDirs(live map[string]*Container) error {
	known := map[string]bool{}
	err := e.st.View(func(tx store.Tx) error {
		return tx.List(bucketContainers, func(k string, _ []byte) error { known[k] = true; return nil })
	})
	if err != nil {
		return err
	}
	for _, root := range []string{e.paths.ExecRoot, e.paths.DataRoot} {
		dir := filepath.Join(root, "containers")
		entries, _ := os.ReadDir(dir)
		for _, de := range entries {
			if !known[de.Name()] {
				_ = os.RemoveAll(filepath.Join(dir, de.Name()))
			}
		}
	}
	return nil
}

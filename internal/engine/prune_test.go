package engine

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/firewalltest"
	"github.com/knit-dev/knit/internal/store"
)

// A prune removes the rules of networks that have no record, and keeps
// those of networks that do.
func TestPruneNetworkRules(t *testing.T) {
	st := newStore(t)
	rec := firewalltest.New()
	e := &Engine{st: st, fw: rec, paths: Paths{DataRoot: t.TempDir()}}
	kept := &Network{Network: driver.Network{ID: "id1", Name: "kept", Bridge: "br-kept", Subnets: []driver.Subnet{{Prefix: netip.MustParsePrefix("10.1.0.0/24")}}}}
	if err := st.Update(func(tx store.Tx) error { return putJSON(tx, bucketNetworks, kept.Name, kept) }); err != nil {
		t.Fatal(err)
	}
	for _, n := range []firewall.Network{firewallNetwork(kept), {Name: "ghost", Bridge: "br-ghost"}} {
		if err := rec.EnsureNetwork(n); err != nil {
			t.Fatal(err)
		}
	}
	r := &PruneReport{}
	if err := e.pruneNetworkRules(r); err != nil {
		t.Fatal(err)
	}
	if names, _ := rec.Networks(); !slices.Equal(names, []string{"kept"}) {
		t.Errorf("networks with rules after prune: %v, want [kept]", names)
	}
	if !slices.Equal(r.Networks, []string{"ghost (rules only)"}) {
		t.Errorf("report: %v", r.Networks)
	}
}

// A prune removes the knit-NAME links whose namespace file in this
// exec-root is gone, and leaves every other link alone: a live one, one
// into a sibling directory whose name merely starts like the namespace
// directory's, and one that knit did not name.
func TestPruneNetnsLinks(t *testing.T) {
	root := t.TempDir()
	e := &Engine{paths: Paths{ExecRoot: filepath.Join(root, "run"), NetnsLinks: filepath.Join(root, "links")}}
	for _, d := range []string{e.netnsDir(), e.netnsDir() + "-other", e.paths.NetnsLinks} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(e.netnsPath("live"), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"knit-gone":    e.netnsPath("gone"),
		"knit-live":    e.netnsPath("live"),
		"knit-sibling": filepath.Join(e.netnsDir()+"-other", "gone"),
		"other":        e.netnsPath("gone"),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(e.paths.NetnsLinks, name)); err != nil {
			t.Fatal(err)
		}
	}
	e.pruneNetnsLinks()
	var left []string
	entries, _ := os.ReadDir(e.paths.NetnsLinks)
	for _, de := range entries {
		left = append(left, de.Name())
	}
	if want := []string{"knit-live", "knit-sibling", "other"}; !slices.Equal(left, want) {
		t.Errorf("links after prune: %v, want %v", left, want)
	}
}

// pruneAddrs keeps the addresses of exited containers prune keeps (their
// teardown failed), and releases those of the others.
func TestPruneAddrsKeepsKept(t *testing.T) {
	st := newStore(t)
	e := &Engine{st: st, paths: Paths{DataRoot: t.TempDir()}}
	n := testNetwork()
	kept := &Container{ID: hexID("kept"), Name: "kept", State: State{Status: StatusExited}}
	gone := &Container{ID: hexID("gone"), Name: "gone", State: State{Status: StatusExited}}
	seed(t, st, kept, gone)
	if err := st.Update(func(tx store.Tx) error {
		return errors.Join(putJSON(tx, bucketNetworks, n.Name, n),
			tx.Put(ipamBucket(n.Name), "10.9.0.2", []byte(kept.ID)), tx.Put(ipamBucket(n.Name), "10.9.0.3", []byte(gone.ID)))
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.pruneAddrs(map[string]*Container{kept.ID: kept}, []*Network{n}, &PruneReport{}); err != nil {
		t.Fatal(err)
	}
	if got := owners(t, st, n.Name); len(got) != 1 || got["10.9.0.2"] != kept.ID {
		t.Errorf("allocations after prune: %v, want only the kept container's", got)
	}
}

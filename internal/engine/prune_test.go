package engine

import (
	"net/netip"
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

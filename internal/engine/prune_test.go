package engine

import (
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/driver/bridge"
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
// teardown failed) and of any container with a record (one that exited
// after prune listed them, whose teardown may have failed and left its
// veth on the address), and releases those whose holder has none.
func TestPruneAddrsKeepsKept(t *testing.T) {
	st := newStore(t)
	e := &Engine{st: st, paths: Paths{DataRoot: t.TempDir()}}
	n := testNetwork()
	kept := &Container{ID: hexID("kept"), Name: "kept", State: State{Status: StatusExited}}
	later := &Container{ID: hexID("later"), Name: "later", State: State{Status: StatusExited, Error: "remove its link: busy"}}
	gone := hexID("gone") // forgotten
	seed(t, st, kept, later)
	if err := st.Update(func(tx store.Tx) error {
		return errors.Join(putJSON(tx, bucketNetworks, n.Name, n),
			tx.Put(ipamBucket(n.Name), "10.9.0.2", []byte(kept.ID)), tx.Put(ipamBucket(n.Name), "10.9.0.3", []byte(gone)),
			tx.Put(ipamBucket(n.Name), "10.9.0.4", []byte(later.ID)))
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.pruneAddrs(map[string]*Container{kept.ID: kept}, []*Network{n}, &PruneReport{}); err != nil {
		t.Fatal(err)
	}
	if got := owners(t, st, n.Name); len(got) != 2 || got["10.9.0.2"] != kept.ID || got["10.9.0.4"] != later.ID {
		t.Errorf("allocations after prune: %v, want the kept container's and the later one's", got)
	}
}

// A stopped container whose exit could not undo its kernel state is torn
// down by prune, and forgotten only once that worked: a failed teardown
// keeps it (and what it holds) for the next prune, which removes it.
func TestPruneRetriesFailedTeardown(t *testing.T) {
	st := newStore(t)
	fw := firewalltest.New()
	e := firewallEngine(t, st, fw)
	id := hexID("stuck")
	stuck := portHolder(t, id, "stuck", State{Status: StatusExited, Error: "remove published ports: netlink: busy"})
	clean := &Container{ID: hexID("clean"), Name: "clean", Dir: filepath.Join(t.TempDir(), "clean"), State: State{Status: StatusExited}}
	running := &Container{ID: hexID("up"), Name: "up", State: State{Status: StatusRunning, Supervisor: selfProc()}}
	seed(t, st, stuck, clean, running)
	if err := fw.AddPorts(id, stuck.Ports); err != nil {
		t.Fatal(err)
	}
	prune := func() (map[string]*Container, *PruneReport, error) {
		var all []*Container
		if err := st.View(func(tx store.Tx) (err error) { all, err = listContainers(tx); return err }); err != nil {
			t.Fatal(err)
		}
		r := &PruneReport{}
		live, err := e.pruneContainers(all, r)
		return live, r, err
	}

	fw.FailOn("RemovePorts "+id, errors.New("netlink: busy"))
	live, r, err := prune()
	if err == nil || !strings.Contains(err.Error(), "container stuck") {
		t.Errorf("first prune: %v, want the stuck container's teardown error", err)
	}
	if _, kept := live[id]; !kept || live[running.ID] == nil || live[clean.ID] != nil {
		t.Errorf("kept after the first prune: %v, want stuck and up", slices.Collect(maps.Keys(live)))
	}
	if !slices.Equal(r.Containers, []string{"clean"}) {
		t.Errorf("first prune removed %v, want [clean]", r.Containers)
	}
	if err := st.View(func(tx store.Tx) error { _, err := getContainer(tx, id); return err }); err != nil {
		t.Errorf("the stuck container's record after a failed teardown: %v", err)
	}
	if owners, _ := fw.Owners(); !slices.Contains(owners, id) {
		t.Errorf("the stuck container's port elements went with a failed teardown: %v", owners)
	}

	// FailOn fails one call: the next prune's teardown works.
	live, r, err = prune()
	if err != nil {
		t.Fatalf("second prune: %v", err)
	}
	if _, kept := live[id]; kept || !slices.Equal(r.Containers, []string{"stuck"}) {
		t.Errorf("second prune removed %v and kept %v, want stuck removed", r.Containers, slices.Collect(maps.Keys(live)))
	}
	if owners, _ := fw.Owners(); slices.Contains(owners, id) {
		t.Errorf("the stuck container's port elements outlived it: %v", owners)
	}
	if err := st.View(func(tx store.Tx) error { _, err := getContainer(tx, id); return err }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the stuck container's record after the second prune: %v, want it gone", err)
	}
}

// When the store cannot say whether an owner is still in use (here its
// record does not decode), prune keeps what it would have removed and
// reports why: it never takes "unknown" for "gone".
func TestPruneKeepsWhatTheStoreCannotJudge(t *testing.T) {
	st := newStore(t)
	e := firewallEngine(t, st, firewalltest.New())
	id := hexID("bad")
	if err := st.Update(func(tx store.Tx) error { return tx.Put(bucketContainers, id, []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
	removed := false
	ok, err := e.removeStray(id, func() error { removed = true; return nil })
	if ok || removed || err == nil || !strings.Contains(err.Error(), id) {
		t.Errorf("removeStray of an undecodable record's objects = %v, %v (removed: %v); want kept, with an error naming it", ok, err, removed)
	}
	// Gone and exited are judged as before.
	ok, err = e.removeStray(hexID("gone"), func() error { return nil })
	if !ok || err != nil {
		t.Errorf("removeStray of an owner without a record = %v, %v; want removed", ok, err)
	}
}

// A network that the store cannot read is not taken for one that is gone:
// the teardown reports it, and the exit keeps the address held.
func TestTeardownReportsUnreadableNetwork(t *testing.T) {
	st := newStore(t)
	e := firewallEngine(t, st, firewalltest.New())
	if err := st.Update(func(tx store.Tx) error { return tx.Put(bucketNetworks, "n", []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
	c := portHolder(t, hexID("c"), "c", State{Status: StatusRunning})
	c.Endpoints = []Endpoint{{Network: "n"}}
	if err := e.teardownKernel(c); err == nil || !strings.Contains(err.Error(), "decode") {
		t.Errorf("teardown with an unreadable network record: %v, want the store's error", err)
	}
	// A network with no record is gone, with its links: no error.
	c.Endpoints = []Endpoint{{Network: "gone"}}
	if err := e.teardownKernel(c); err != nil {
		t.Errorf("teardown on a removed network: %v", err)
	}
}

// Once knit's table was flushed, the next network ensured puts back the
// other networks' rules and the published ports of every running
// container and CNI attachment; not those of an exited container or of
// one being torn down, nor the rules of a network being removed.
func TestRestoreFirewallAfterFlush(t *testing.T) {
	st := newStore(t)
	rec := firewalltest.New()
	e := firewallEngine(t, st, rec)
	net := func(name, subnet string) *Network {
		return &Network{Network: driver.Network{ID: name + "id", Name: name, Bridge: "br-" + name, Subnets: []driver.Subnet{{Prefix: netip.MustParsePrefix(subnet)}}}}
	}
	n1, n2, leaving := net("n1", "10.1.0.0/24"), net("n2", "10.2.0.0/24"), net("leaving", "10.3.0.0/24")
	leaving.Removing = true
	up := portHolder(t, hexID("up"), "up", State{Status: StatusRunning, Supervisor: selfProc()})
	up.Netns = "/proc/self/ns/net" // a namespace that is there
	down := portHolder(t, hexID("down"), "down", State{Status: StatusExited})
	down.Ports[0].HostPort = 8081
	// Running, but its teardown has deleted its namespace: its ports go
	// next, and are not put back.
	torn := portHolder(t, hexID("torn"), "torn", State{Status: StatusRunning, Supervisor: selfProc()})
	torn.Ports[0].HostPort = 8082
	att := &CNIAttachment{ID: cniIDPrefix + "pod", ContainerID: "pod", IfName: "eth0", Network: "n2",
		Ports: []firewall.PortMapping{{Network: "n2", HostPort: 9090, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.2.0.9"), ContainerPort: 80}}}
	seed(t, st, up, down, torn)
	if err := st.Update(func(tx store.Tx) error {
		for _, n := range []*Network{n1, n2, leaving} {
			if err := putJSON(tx, bucketNetworks, n.Name, n); err != nil {
				return err
			}
		}
		return putJSON(tx, bucketCNI, att.ID, att)
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Network{n1, n2} {
		if err := rec.EnsureNetwork(firewallNetwork(n)); err != nil {
			t.Fatal(err)
		}
	}
	rec.Flush()
	// A run on n1 ensures it (ensureNetwork, which then calls this).
	if lost, err := e.fw.EnsureNetworkReport(firewallNetwork(n1)); err != nil || !lost {
		t.Fatalf("ensure after the flush: lost %v, %v; want the loss reported", lost, err)
	}
	if err := e.restoreFirewall("n1"); err != nil {
		t.Fatal(err)
	}
	if names, _ := rec.Networks(); !slices.Equal(names, []string{"n1", "n2"}) {
		t.Errorf("networks with rules after the restore: %v, want [n1 n2]", names)
	}
	owners, _ := rec.Owners()
	slices.Sort(owners)
	if want := []string{att.ID, up.ID}; !slices.Equal(owners, want) {
		t.Errorf("port owners after the restore: %v, want %v", owners, want)
	}
	if lost, err := e.fw.EnsureNetworkReport(firewallNetwork(n1)); err != nil || lost {
		t.Errorf("ensure with nothing flushed since: lost %v, %v; want false", lost, err)
	}

	// An owner that cannot be put back is reported, and the others are
	// restored all the same; the loss is cleared once all were tried, so
	// that a failing owner does not make every command restore again.
	rec.Flush()
	rec.FailOn("AddPorts "+up.ID, errors.New("netlink: busy"))
	if err := e.restoreFirewall("n1"); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("restore with a failing AddPorts: %v, want its error", err)
	}
	if owners, _ := rec.Owners(); !slices.Contains(owners, att.ID) {
		t.Errorf("the attachment's ports after a restore where up's failed: %v", owners)
	}
	if names, _ := rec.Networks(); !slices.Contains(names, "n2") {
		t.Errorf("n2's rules after a restore where up's ports failed: %v", names)
	}
	if lost, _ := e.fw.EnsureNetworkReport(firewallNetwork(n1)); lost {
		t.Error("a restore that tried every owner left the loss to report")
	}

	// A network whose rules cannot be put back is open: the loss stays,
	// and the next command's restore puts them back and clears it.
	rec.Flush()
	if _, err := e.fw.EnsureNetworkReport(firewallNetwork(n1)); err != nil {
		t.Fatal(err)
	}
	rec.FailOn("EnsureNetwork n2", errors.New("netlink: busy"))
	if err := e.restoreFirewall("n1"); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("restore with a failing network: %v, want its error", err)
	}
	if lost, _ := e.fw.EnsureNetworkReport(firewallNetwork(n1)); !lost {
		t.Error("a restore that left n2 without rules cleared the loss")
	}
	if err := e.restoreFirewall("n1"); err != nil {
		t.Fatal(err)
	}
	if names, _ := rec.Networks(); !slices.Contains(names, "n2") {
		t.Errorf("n2's rules after the next restore: %v", names)
	}
	if lost, _ := e.fw.EnsureNetworkReport(firewallNetwork(n1)); lost {
		t.Error("the restore that put n2 back left the loss to report")
	}

	// A network whose lock a removal holds is skipped at once: the
	// restore does not wait for it (at every command while a loss stays).
	rec.Flush()
	unlock, err := lockFile(e.networkLock("n2")) // its rm, under way
	if err != nil {
		t.Fatal(err)
	}
	defer func(old time.Duration) { lockWait = old }(lockWait)
	lockWait = 3 * time.Second
	start := time.Now()
	if err := e.restoreFirewall("n1"); err != nil || time.Since(start) > time.Second {
		t.Errorf("restore while n2's removal holds its lock: %v after %v, want done at once", err, time.Since(start))
	}
	unlock()
}

// slowUpdate is a store whose writes start 100 ms late.
type slowUpdate struct{ store.Store }

func (s *slowUpdate) Update(fn func(store.Tx) error) error {
	time.Sleep(100 * time.Millisecond)
	return s.Store.Update(fn)
}

// removeHook is a firewall that runs a function while it removes ports.
type removeHook struct {
	firewall.Firewall
	during func()
}

func (h *removeHook) RemovePorts(owner string, ports []firewall.PortMapping) error {
	err := h.Firewall.RemovePorts(owner, ports)
	h.during()
	return err
}

// A CNI teardown removes the attachment's ports and its record together
// under the firewall lock: a restore of the firewall that comes while the
// ports go waits, then finds no record, and puts nothing back (which would
// lead the host port to the next holder of the address for good).
func TestCNITeardownAndRestoreDoNotInterleave(t *testing.T) {
	st := newStore(t)
	rec := firewalltest.New()
	// The forgetting transaction is slow, which leaves a restore that
	// could run between the ports' removal and it the time to.
	e := firewallEngine(t, &slowUpdate{st}, nil)
	att := &CNIAttachment{ID: cniIDPrefix + "pod", ContainerID: "pod", IfName: "eth0", Network: "gone",
		Ports: []firewall.PortMapping{{Network: "gone", HostPort: 9090, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.2.0.9"), ContainerPort: 80}}}
	if err := st.Update(func(tx store.Tx) error { return putJSON(tx, bucketCNI, att.ID, att) }); err != nil {
		t.Fatal(err)
	}
	if err := rec.AddPorts(att.ID, att.Ports); err != nil {
		t.Fatal(err)
	}
	restored := make(chan error, 1)
	hook := &removeHook{Firewall: rec, during: func() {
		go func() { restored <- e.restoreAttachmentPorts(att.ID) }()
	}}
	e.fw = &lockedFirewall{fw: hook, path: filepath.Join(t.TempDir(), "firewall.lock")}
	if err := e.cniTeardown(att); err != nil {
		t.Fatal(err)
	}
	if err := <-restored; err != nil {
		t.Fatal(err)
	}
	if owners, _ := rec.Owners(); len(owners) != 0 {
		t.Errorf("port owners after the teardown and a restore beside it: %v, want none", owners)
	}
}

// The restore after a loss (the upgrade that added the RA guard counts as
// one: its table is missing) puts the host ends of the veths knit made on
// its networks' bridges (a container's, a CNI attachment's: the same
// driver's) in the guard's group, which a knit from before the guard did
// not; a port someone else attached is left alone.
func TestRestoreGroupsOldPorts(t *testing.T) {
	st := newStore(t)
	e := firewallEngine(t, st, firewalltest.New())
	e.drivers = map[string]driver.Driver{"bridge": bridge.New()}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-g"}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(br) })
	for name, alias := range map[string]string{"vethold": "knit:" + hexID("old"), "vethcni": "knit:cni-pod", "vethhand": ""} {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Index}, PeerName: name + "p"}
		if err := netlink.LinkAdd(v); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = netlink.LinkDel(v) })
		if alias != "" {
			if err := netlink.LinkSetAlias(v, alias); err != nil {
				t.Fatal(err)
			}
		}
	}
	n := &Network{Network: driver.Network{ID: "gid", Name: "g", Driver: "bridge", Bridge: "br-g", Subnets: []driver.Subnet{{Prefix: netip.MustParsePrefix("10.4.0.0/24")}}}}
	if err := st.Update(func(tx store.Tx) error { return putJSON(tx, bucketNetworks, n.Name, n) }); err != nil {
		t.Fatal(err)
	}
	if err := e.restoreFirewall(""); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint32{"vethold": firewall.PortGroup, "vethcni": firewall.PortGroup, "vethhand": 0} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if g := l.Attrs().Group; g != want {
			t.Errorf("%s is in group %d after the restore, want %d", name, g, want)
		}
	}
}

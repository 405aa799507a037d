package engine

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/firewalltest"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/store"
	"github.com/knit-dev/knit/internal/testutil"
	"golang.org/x/sys/unix"
)

// linkPair seeds a running target exposing 80/tcp on network n and a
// container linked to it, in state st, whose namespace is netnsPath.
func linkPair(t *testing.T, st State, netnsPath string) (e *Engine, fw *firewalltest.Recorder, target, linked *Container) {
	t.Helper()
	store := newStore(t)
	fw = firewalltest.New()
	e = firewallEngine(t, store, fw)
	ep := func(addr string) []Endpoint {
		return []Endpoint{{Network: "n", Endpoint: driver.Endpoint{Addrs: []netip.Prefix{netip.MustParsePrefix(addr)}}}}
	}
	target = &Container{ID: hexID("a1"), Name: "db", OwnsNetns: true, Netns: testutil.NewNetns(t),
		State: State{Status: StatusRunning}, Endpoints: ep("10.0.0.3/24"),
		Spec: Spec{Exposed: []portmap.Spec{{ContainerFirst: 80, ContainerLast: 80, Proto: portmap.TCP}}}}
	linked = &Container{ID: hexID("b2"), Name: "app", OwnsNetns: true, Netns: netnsPath,
		State: st, Endpoints: ep("10.0.0.2/24"),
		Links: []Link{{TargetID: target.ID, Name: "db", Alias: "db"}}}
	seed(t, store, target, linked)
	return e, fw, target, linked
}

// A relink of the target (it connected or disconnected) while a linked
// container is still being set up keeps that container's elements: its
// run added them before the relink took the lock, or adds them after.
func TestRelinkKeepsContainerBeingCreated(t *testing.T) {
	e, fw, target, linked := linkPair(t, State{Status: StatusCreated, Owner: selfProc()}, testutil.NewNetns(t))
	if err := e.applyLinks(linked); err != nil {
		t.Fatal(err)
	}
	if err := e.relink(target.ID, false); err != nil {
		t.Fatal(err)
	}
	if got, want := fw.String(), "link "+linked.ID+" n 10.0.0.2->10.0.0.3:80/tcp"; !strings.Contains(got, want) {
		t.Fatalf("after the relink the link of the container being created is gone:\n%s", got)
	}
}

// A relink never puts back the elements of a container whose namespace is
// gone: its teardown removed them, and nothing would remove them again.
func TestRelinkLeavesOutTornDown(t *testing.T) {
	gone := filepath.Join(t.TempDir(), "netns-gone")
	e, fw, target, _ := linkPair(t, State{Status: StatusRunning}, gone)
	if err := e.relink(target.ID, false); err != nil {
		t.Fatal(err)
	}
	if got := fw.String(); strings.Contains(got, "link ") {
		t.Fatalf("the relink put back the link of a container torn down:\n%s", got)
	}
}

// When a --link target exits, the elements that let its linkers reach its
// address go: the address is released, and may go to another container.
func TestTargetExitTakesBackTheLinks(t *testing.T) {
	st := newStore(t)
	fw := &linksRemovedWhen{Recorder: firewalltest.New(), st: st}
	e := firewallEngine(t, st, fw)
	e.paths.ExecRoot = "/dev/null/run" // no DNS server to sync
	target, linker := linkedPair(t, st)
	rules := e.linkRules(linker, "")
	if len(rules) != 1 {
		t.Fatalf("link rules of web: %v, want one to db's port", rules)
	}
	if err := fw.AddLinks(linker.ID, rules); err != nil {
		t.Fatal(err)
	}
	if err := e.finish(target.ID, 0); err != nil {
		t.Fatal(err)
	}
	if owners, _ := fw.LinkOwners(); slices.Contains(owners, linker.ID) {
		t.Errorf("web's link elements to db outlived db's exit: %v", fw)
	}
	// Taken back while db's address was still its own: a crash before
	// the exit's record must not leave them for an address given out.
	if len(fw.held) == 0 || !fw.held[0] {
		t.Errorf("web's link elements were first removed with db's address held: %v, want true first", fw.held)
	}
	cur, err := e.get(linker.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rules := e.linkRules(cur, ""); len(rules) != 0 {
		t.Errorf("link rules of web once db stopped: %v, want none", rules)
	}
}

// linksRemovedWhen is a firewall that notes, at each change of an owner's
// links (RemoveLinks, SetLinks), whether the address 10.8.0.2 on network n
// is still held.
type linksRemovedWhen struct {
	*firewalltest.Recorder
	st   store.Store
	held []bool
}

func (f *linksRemovedWhen) note() {
	var held bool
	_ = f.st.View(func(tx store.Tx) error {
		_, err := tx.Get(ipamBucket("n"), "10.8.0.2")
		held = err == nil
		return nil
	})
	f.held = append(f.held, held)
}

func (f *linksRemovedWhen) RemoveLinks(owner string, ls []firewall.Link) error {
	f.note()
	return f.Recorder.RemoveLinks(owner, ls)
}

func (f *linksRemovedWhen) SetLinks(owner string, ls []firewall.Link) error {
	f.note()
	return f.Recorder.SetLinks(owner, ls)
}

// When the linkers' elements cannot be taken back at a target's exit, its
// address stays held (another container given it would be reachable
// through them) and the exit records the error; prune then finishes the
// job and releases the address.
func TestTargetExitKeepsAddressWhenLinksStay(t *testing.T) {
	st := newStore(t)
	fw := firewalltest.New()
	e := firewallEngine(t, st, fw)
	e.paths.ExecRoot = "/dev/null/run" // no DNS server to sync
	target, linker := linkedPair(t, st)
	if err := fw.AddLinks(linker.ID, e.linkRules(linker, "")); err != nil {
		t.Fatal(err)
	}
	held := func() bool {
		err := st.View(func(tx store.Tx) error { _, err := tx.Get(ipamBucket("n"), "10.8.0.2"); return err })
		return err == nil
	}
	// Both of the exit's relinks fail (before and after recording it);
	// prune's succeeds.
	e.fw = &stuckLinks{Recorder: fw, owner: linker.ID, fails: 2}
	_ = e.finish(target.ID, 0)
	cur, err := e.get(target.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !held() || cur.State.Status != StatusExited || !strings.Contains(cur.State.Error, "busy") {
		t.Fatalf("after an exit whose relink failed: address held %v, state %+v; want it held and the error recorded", held(), cur.State)
	}
	var all []*Container
	if err := st.View(func(tx store.Tx) (err error) { all, err = listContainers(tx); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pruneContainers(all, &PruneReport{}); err != nil {
		t.Fatal(err)
	}
	if held() {
		t.Error("prune kept db's address once the links were taken back")
	}
	if owners, _ := fw.LinkOwners(); slices.Contains(owners, linker.ID) {
		t.Errorf("web's link elements to db outlived prune: %v", fw)
	}
}

// linkedPair records two running containers on network n: db (10.8.0.2,
// which it holds, exposing 5432/tcp) and web, linked to db.
func linkedPair(t *testing.T, st store.Store) (target, linker *Container) {
	t.Helper()
	ep := func(id, addr string) Endpoint {
		return Endpoint{Network: "n", Endpoint: driver.Endpoint{ContainerID: id, IfName: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix(addr)}}}
	}
	target = &Container{ID: hexID("aa"), Name: "db", Dir: filepath.Join(t.TempDir(), "db"),
		State:     State{Status: StatusRunning, Supervisor: selfProc()},
		Endpoints: []Endpoint{ep(hexID("aa"), "10.8.0.2/24")},
		Spec:      Spec{Exposed: []portmap.Spec{{ContainerFirst: 5432, ContainerLast: 5432, Proto: "tcp"}}}}
	linker = &Container{ID: hexID("bb"), Name: "web", Dir: filepath.Join(t.TempDir(), "web"), Netns: "/nonexistent",
		State:     State{Status: StatusRunning, Supervisor: selfProc()},
		Endpoints: []Endpoint{ep(hexID("bb"), "10.8.0.3/24")},
		Links:     []Link{{TargetID: target.ID, Name: "db", Alias: "db"}}}
	seed(t, st, target, linker)
	if err := st.Update(func(tx store.Tx) error { return tx.Put(ipamBucket("n"), "10.8.0.2", []byte(target.ID)) }); err != nil {
		t.Fatal(err)
	}
	return target, linker
}

// stuckLinks is a firewall whose RemoveLinks and SetLinks for owner fail
// fails times.
type stuckLinks struct {
	*firewalltest.Recorder
	owner string
	fails int
}

func (f *stuckLinks) RemoveLinks(owner string, ls []firewall.Link) error {
	if owner == f.owner && f.fails > 0 {
		f.fails--
		return errors.New("netlink: busy")
	}
	return f.Recorder.RemoveLinks(owner, ls)
}

func (f *stuckLinks) SetLinks(owner string, ls []firewall.Link) error {
	if owner == f.owner && f.fails > 0 {
		f.fails--
		return errors.New("netlink: busy")
	}
	return f.Recorder.SetLinks(owner, ls)
}

// A target's exit makes its linkers' elements those of their records in
// one firewall call (SetLinks: one batch), never a removal and then an
// addition, between which a link that stays (web's to cache) would be
// absent. When that call fails, nothing changed: the link to the target
// stays too, so its address stays held.
func TestRelinkIsOneChange(t *testing.T) {
	for _, fail := range []bool{false, true} {
		st := newStore(t)
		fw := firewalltest.New()
		e := firewallEngine(t, st, fw)
		e.paths.ExecRoot = "/dev/null/run" // no DNS server to sync
		target, linker := linkedPair(t, st)
		cache := &Container{ID: hexID("cc"), Name: "cache", Dir: filepath.Join(t.TempDir(), "cache"),
			State:     State{Status: StatusRunning, Supervisor: selfProc()},
			Endpoints: []Endpoint{{Network: "n", Endpoint: driver.Endpoint{ContainerID: hexID("cc"), IfName: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("10.8.0.4/24")}}}},
			Spec:      Spec{Exposed: []portmap.Spec{{ContainerFirst: 6379, ContainerLast: 6379, Proto: "tcp"}}}}
		linker.Links = append(linker.Links, Link{TargetID: cache.ID, Name: "cache", Alias: "cache"})
		linker.Netns = testutil.NewNetns(t) // running, its namespace there
		seed(t, st, cache, linker)
		if err := fw.AddLinks(linker.ID, e.linkRules(linker, "")); err != nil {
			t.Fatal(err)
		}
		if fail { // both of the exit's relinks (before and after recording it)
			e.fw = &stuckLinks{Recorder: fw, owner: linker.ID, fails: 2}
		}
		before := len(fw.Calls())
		_ = e.finish(target.ID, 0)
		for _, call := range fw.Calls()[before:] {
			if call == "RemoveLinks "+linker.ID || call == "AddLinks "+linker.ID {
				t.Errorf("fail=%v: the relink called %s: %q", fail, call, fw.Calls()[before:])
			}
		}
		got := fw.String()
		if !strings.Contains(got, "10.8.0.4:6379") {
			t.Errorf("fail=%v: web's link to cache is gone:\n%s", fail, got)
		}
		if strings.Contains(got, "10.8.0.2:5432") != fail {
			t.Errorf("fail=%v: web's link to db (the target that exited):\n%s", fail, got)
		}
		err := st.View(func(tx store.Tx) error { _, err := tx.Get(ipamBucket("n"), "10.8.0.2"); return err })
		if held := err == nil; held != fail {
			t.Errorf("fail=%v: db's address held: %v", fail, held)
		}
	}
}

// A link's environment is Docker's (daemon/links): TCP ports first, each
// port's four variables, a run of consecutive ports' _START/_END, the
// link's name, and the target's own variables but those knit sets.
func TestLinkEnv(t *testing.T) {
	target := &Container{
		Spec: Spec{
			Exposed: []portmap.Spec{{ContainerFirst: 80, ContainerLast: 81, Proto: portmap.TCP}},
			Publish: []portmap.Spec{{HostPortFirst: 5353, HostPortLast: 5353, ContainerFirst: 53, ContainerLast: 53, Proto: portmap.UDP}},
			Env:     []string{"PATH=/bin", "HOSTNAME=x", "DB_PASS=s3cret", "TERM=xterm"},
		},
		Ports: []firewall.PortMapping{{HostPort: 5353, Proto: "udp", ContainerPort: 53}},
	}
	ep := &Endpoint{Endpoint: driver.Endpoint{Addrs: []netip.Prefix{netip.MustParsePrefix("fd00::5/64"), netip.MustParsePrefix("172.17.0.5/16")}}}
	want := []string{
		"MY_DB_PORT=tcp://172.17.0.5:80",
		"MY_DB_PORT_80_TCP=tcp://172.17.0.5:80", "MY_DB_PORT_80_TCP_ADDR=172.17.0.5", "MY_DB_PORT_80_TCP_PORT=80", "MY_DB_PORT_80_TCP_PROTO=tcp",
		"MY_DB_PORT_81_TCP=tcp://172.17.0.5:81", "MY_DB_PORT_81_TCP_ADDR=172.17.0.5", "MY_DB_PORT_81_TCP_PORT=81", "MY_DB_PORT_81_TCP_PROTO=tcp",
		"MY_DB_PORT_80_TCP_START=tcp://172.17.0.5:80", "MY_DB_PORT_80_TCP_PORT_START=80",
		"MY_DB_PORT_80_TCP_END=tcp://172.17.0.5:81", "MY_DB_PORT_80_TCP_PORT_END=81",
		"MY_DB_PORT_53_UDP=udp://172.17.0.5:53", "MY_DB_PORT_53_UDP_ADDR=172.17.0.5", "MY_DB_PORT_53_UDP_PORT=53", "MY_DB_PORT_53_UDP_PROTO=udp",
		"MY_DB_NAME=/web/my-db",
		"MY_DB_ENV_DB_PASS=s3cret",
	}
	if got := linkEnv("web", "my-db", ep, target); !slices.Equal(got, want) {
		t.Errorf("linkEnv =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// On an IPv6-only network, the IPv6 address, in brackets in URLs.
	six := &Endpoint{Endpoint: driver.Endpoint{Addrs: []netip.Prefix{netip.MustParsePrefix("fd00::5/64")}}}
	if got := linkEnv("web", "my-db", six, target); !slices.Contains(got, "MY_DB_PORT=tcp://[fd00::5]:80") || !slices.Contains(got, "MY_DB_PORT_80_TCP_ADDR=fd00::5") {
		t.Errorf("linkEnv on an IPv6-only network =\n%s", strings.Join(got, "\n"))
	}
	// A target with no ports: only its name and variables.
	if got := linkEnv("web", "db", ep, &Container{Spec: Spec{Env: []string{"A=1"}}}); !slices.Equal(got, []string{"DB_NAME=/web/db", "DB_ENV_A=1"}) {
		t.Errorf("linkEnv without ports = %q", got)
	}
}

// The variables are made from the target and the linker as they are at
// the start (the linker's recorded name, not the caller's copy; a target
// gone gives none), and the container's own variables win over them.
func TestLinksEnvAtStart(t *testing.T) {
	st := newStore(t)
	e := firewallEngine(t, st, nil)
	on := func(addr string) []Endpoint {
		return []Endpoint{{Network: "bridge", Endpoint: driver.Endpoint{Addrs: []netip.Prefix{netip.MustParsePrefix(addr)}}}}
	}
	db := &Container{ID: hexID("db"), Name: "db", State: State{Status: StatusRunning}, Endpoints: on("172.17.0.3/16"),
		Spec: Spec{Exposed: []portmap.Spec{{ContainerFirst: 5432, ContainerLast: 5432, Proto: portmap.TCP}}}}
	c := &Container{ID: hexID("web"), Name: "web", Endpoints: on("172.17.0.4/16"), Spec: Spec{Env: []string{"PATH=/bin", "DB_NAME=mine"}},
		Links: []Link{{TargetID: db.ID, Name: "db", Alias: "db"}, {TargetID: hexID("gone"), Name: "gone", Alias: "gone"}}}
	renamed := *c
	renamed.Name = "renamed"
	seed(t, st, db, &renamed)
	links, err := e.linksEnv(c) // a supervisor's copy from before the rename
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(links, "DB_NAME=/renamed/db") {
		t.Errorf("linksEnv = %q, want DB_NAME=/renamed/db (the recorded name)", links)
	}
	got := mergeEnv(links, c.Spec.Env)
	want := []string{"DB_PORT=tcp://172.17.0.3:5432", "DB_PORT_5432_TCP=tcp://172.17.0.3:5432", "DB_PORT_5432_TCP_ADDR=172.17.0.3",
		"DB_PORT_5432_TCP_PORT=5432", "DB_PORT_5432_TCP_PROTO=tcp", "DB_NAME=mine", "PATH=/bin"}
	if !slices.Equal(got, want) {
		t.Errorf("environment =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// /etc/hosts as Docker writes it: --add-host lines before the links' (the
// first line of a name is the one a resolver takes), a link's IPv6
// address on a line of its own, and the container's own entry last.
func TestEtcHostsOrder(t *testing.T) {
	st := newStore(t)
	e := firewallEngine(t, st, nil)
	db := &Container{ID: hexID("db"), Name: "db", State: State{Status: StatusRunning}, Spec: Spec{Hostname: "dbhost"},
		Endpoints: []Endpoint{{Network: "bridge", Endpoint: driver.Endpoint{Addrs: []netip.Prefix{
			netip.MustParsePrefix("172.17.0.3/16"), netip.MustParsePrefix("fd00::3/64")}}}}}
	c := &Container{ID: hexID("web"), Name: "web", Spec: Spec{Hostname: "webhost"},
		Endpoints: []Endpoint{{Network: "bridge", Endpoint: driver.Endpoint{Addrs: []netip.Prefix{netip.MustParsePrefix("172.17.0.4/16")}}}},
		Links:     []Link{{TargetID: db.ID, Name: "db", Alias: "database"}}}
	seed(t, st, db, c)
	o := &RunOptions{AddHosts: []files.HostEntry{{IP: netip.MustParseAddr("192.0.2.9"), Names: []string{"database"}}}}
	hosts, _, err := e.etcFiles(c, o, ModeBridge, nil)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(hosts), "\n")
	i := slices.Index(lines, "192.0.2.9\tdatabase")
	j := slices.Index(lines, "172.17.0.3\tdatabase dbhost db")
	k := slices.Index(lines, "fd00::3\tdatabase dbhost db")
	own := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "172.17.0.4\t") })
	if i < 0 || j < 0 || k < 0 || own < 0 || !(i < j && j < k && k < own) {
		t.Errorf("/etc/hosts:\n%s\nwant the --add-host line, then the link's IPv4 and IPv6 lines, then the container's own", hosts)
	}
}

// A refresh cut short between its rewrite and its record (a crash) is
// repaired by the next: the lines it added count as knit's, so a later
// refresh that no longer wants them takes them out, the user's line kept.
func TestRefreshFileAfterACrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	a := []byte("127.0.0.1\tlocalhost\n10.1.0.2\tweb\n")
	if err := os.WriteFile(path, a, 0o644); err != nil {
		t.Fatal(err)
	}
	noteWritten(path, a)
	if _, ok := lastWritten(path); !ok {
		t.Skip("no trusted xattrs on this file system")
	}
	// The user adds a line; a connect to a second network is cut short
	// after its rewrite: pending recorded, the file rewritten, no record.
	edited := append(slices.Clone(a), "10.9.9.9\textra\n"...)
	b := []byte("127.0.0.1\tlocalhost\n10.1.0.2\tweb\n10.2.0.2\tweb\n")
	if err := unix.Setxattr(path, pendingAttr, b, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, files.MergeLines(edited, a, b), 0o644); err != nil {
		t.Fatal(err)
	}
	// Then the container leaves the second network.
	if err := refreshFile(path, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != string(edited) {
		t.Errorf("hosts after the repair = %q, want %q (the second network's line gone, the user's kept)", got, edited)
	}
	if _, ok := getAttr(path, pendingAttr); ok {
		t.Error("the pending record stayed")
	}
}

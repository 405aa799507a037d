package engine

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/knit-dev/knit/internal/config"
	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/firewalltest"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/store"
)

// leaveRecorder is a driver that only records the endpoints and networks
// it is asked to remove.
type leaveRecorder struct{ left, deleted []string }

func (d *leaveRecorder) CreateNetwork(*driver.Network) error { return nil }
func (d *leaveRecorder) DeleteNetwork(n *driver.Network) error {
	d.deleted = append(d.deleted, n.ID)
	return nil
}
func (d *leaveRecorder) Join(*driver.Network, *driver.Endpoint, driver.Sandbox) error { return nil }
func (d *leaveRecorder) RemoveLink(string) error                                      { return nil }
func (d *leaveRecorder) PortName(*driver.Endpoint) string                             { return "" }
func (d *leaveRecorder) Strays(*driver.Network, func(string, string) bool) ([]string, error) {
	return nil, nil
}
func (d *leaveRecorder) Leave(_ *driver.Network, ep *driver.Endpoint, _ driver.Sandbox, _ driver.LeaveOptions) error {
	d.left = append(d.left, ep.ContainerID+" "+ep.IfName)
	return nil
}

// TestReconcileUndoesDeadConnect: a `network connect` killed after it
// recorded the endpoint is undone by the next reconcile (link, endpoint,
// address); one whose process lives is left alone.
func TestReconcileUndoesDeadConnect(t *testing.T) {
	st := newStore(t)
	d := &leaveRecorder{}
	e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: t.TempDir()},
		drivers: map[string]driver.Driver{"bridge": d}}
	ep := func(id, network, ifName, addr string) Endpoint {
		return Endpoint{Network: network, Endpoint: driver.Endpoint{ContainerID: id, IfName: ifName,
			Addrs: []netip.Prefix{netip.MustParsePrefix(addr)}}}
	}
	running := func(name string) *Container {
		id := hexID(name)
		return &Container{ID: id, Name: name, Dir: filepath.Join(t.TempDir(), name), Netns: "/nonexistent",
			State:     State{Status: StatusRunning, Supervisor: selfProc()},
			Endpoints: []Endpoint{ep(id, "other", "eth1", "10.5.0.2/24")}}
	}
	halfDone, underWay, exited := running("aaa"), running("bbb"), running("ccc")
	underWay.Endpoints[0].Addrs = []netip.Prefix{netip.MustParsePrefix("10.5.0.3/24")}
	exited.State = State{Status: StatusExited}
	seed(t, st, halfDone, underWay, exited)
	dead := Proc{Pid: 2147483646, Start: 1} // no such PID
	err := st.Update(func(tx store.Tx) error {
		n := &Network{Network: driver.Network{Name: "other", ID: "other-id", Driver: "bridge"}}
		return errors.Join(putJSON(tx, bucketNetworks, "other", n),
			tx.Put(ipamBucket("other"), "10.5.0.2", []byte(halfDone.ID)),
			tx.Put(ipamBucket("other"), "10.5.0.3", []byte(underWay.ID)),
			tx.Put(bucketConnecting, connectingKey(halfDone.ID, "other"), formatProc(dead)),
			tx.Put(bucketConnecting, connectingKey(underWay.ID, "other"), formatProc(selfProc())),
			// Containers that exited or are gone: their end released it all.
			tx.Put(bucketConnecting, connectingKey(exited.ID, "other"), formatProc(dead)),
			tx.Put(bucketConnecting, connectingKey(hexID("ddd"), "other"), formatProc(dead)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Reconcile(); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if want := []string{halfDone.ID + " eth1"}; !slices.Equal(d.left, want) {
		t.Errorf("links removed: %v, want %v", d.left, want)
	}
	err = st.View(func(tx store.Tx) error {
		c, err := getContainer(tx, halfDone.ID)
		if err != nil {
			return err
		}
		if len(c.Endpoints) != 0 {
			t.Errorf("the dead connect's endpoint is still recorded: %+v", c.Endpoints)
		}
		if _, err := tx.Get(ipamBucket("other"), "10.5.0.2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("10.5.0.2 is still allocated (%v)", err)
		}
		if _, err := tx.Get(bucketConnecting, connectingKey(halfDone.ID, "other")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the dead connect is still under way (%v)", err)
		}
		// The live one: untouched.
		if c, err := getContainer(tx, underWay.ID); err != nil || len(c.Endpoints) != 1 {
			t.Errorf("the connect under way lost its endpoint: %v %+v", err, c)
		}
		if _, err := tx.Get(bucketConnecting, connectingKey(underWay.ID, "other")); err != nil {
			t.Errorf("the connect under way is no longer recorded: %v", err)
		}
		for _, id := range []string{exited.ID, hexID("ddd")} {
			if _, err := tx.Get(bucketConnecting, connectingKey(id, "other")); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the connect of %s, which exited or is gone, is still under way (%v)", id[:4], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A disconnect waits for the connect under way instead of racing it.
	if err := e.Disconnect("other", underWay.Name, false); errdefs.KindOf(err) != errdefs.KindConflict {
		t.Errorf("disconnect during a connect: %v, want a conflict", err)
	}
}

// dnsNetwork is a DNS-enabled network record with one IPv4 subnet.
func dnsNetwork(name, subnet string) *Network {
	p := netip.MustParsePrefix(subnet)
	return &Network{DNS: true, Network: driver.Network{Name: name, ID: name + "-id", Driver: "bridge",
		Subnets: []driver.Subnet{{Prefix: p, Gateway: p.Addr().Next()}}}}
}

// writeResolv gives c a resolv.conf naming server, and returns its path.
func writeResolv(t *testing.T, c *Container, server string) string {
	t.Helper()
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.Dir, "resolv.conf")
	if err := os.WriteFile(path, []byte("nameserver "+server+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func nameservers(t *testing.T, path string) []netip.Addr {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return files.ParseResolvConf(b).Nameservers
}

// TestRefreshFiles: after a connect or a disconnect, the container's
// hosts lists its addresses on the networks it is on, and resolv.conf names
// the embedded server of its first DNS network, or its --dns servers once
// it has none; the files are rewritten in place, as bind mounts need.
func TestRefreshFiles(t *testing.T) {
	st := newStore(t)
	e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: t.TempDir()}}
	a, b := dnsNetwork("a", "10.1.0.0/24"), dnsNetwork("b", "10.2.0.0/24")
	if err := st.Update(func(tx store.Tx) error {
		return errors.Join(putJSON(tx, bucketNetworks, "a", a), putJSON(tx, bucketNetworks, "b", b))
	}); err != nil {
		t.Fatal(err)
	}
	ep := func(n, addr string) Endpoint {
		return Endpoint{Network: n, Endpoint: driver.Endpoint{Addrs: []netip.Prefix{netip.MustParsePrefix(addr)}}}
	}
	c := &Container{ID: hexID("aaa"), Name: "x", Dir: filepath.Join(t.TempDir(), "x"),
		State:     State{Status: StatusRunning},
		Spec:      Spec{Hostname: "xhost", DNS: []netip.Addr{netip.MustParseAddr("203.0.113.53")}, ExtraHosts: []string{"extra:192.0.2.7"}},
		Endpoints: []Endpoint{ep("a", "10.1.0.5/24"), ep("b", "10.2.0.5/24")}}
	resolv := writeResolv(t, c, "198.51.100.2")
	hosts := filepath.Join(c.Dir, "hosts")
	if err := os.WriteFile(hosts, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(resolv)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		endpoints []Endpoint
		server    string
		addrs     []string // in hosts
		gone      []string
	}{
		{c.Endpoints, "10.1.0.1", []string{"10.1.0.5", "10.2.0.5", "192.0.2.7"}, nil},
		{c.Endpoints[1:], "10.2.0.1", []string{"10.2.0.5", "192.0.2.7"}, []string{"10.1.0.5"}},
		{nil, "203.0.113.53", []string{"192.0.2.7"}, []string{"10.1.0.5", "10.2.0.5"}},
	} {
		c.Endpoints = tc.endpoints
		seed(t, st, c)
		if err := e.refreshFiles(c.ID); err != nil {
			t.Fatal(err)
		}
		if got := nameservers(t, resolv); !slices.Equal(got, []netip.Addr{netip.MustParseAddr(tc.server)}) {
			t.Errorf("on %d networks: nameservers %v, want %s", len(tc.endpoints), got, tc.server)
		}
		h, _ := os.ReadFile(hosts)
		for _, a := range tc.addrs {
			if !strings.Contains(string(h), a+"\t") {
				t.Errorf("on %d networks: hosts lacks %s:\n%s", len(tc.endpoints), a, h)
			}
		}
		for _, a := range tc.gone {
			if strings.Contains(string(h), a) {
				t.Errorf("on %d networks: hosts still has %s:\n%s", len(tc.endpoints), a, h)
			}
		}
	}
	if after, err := os.Stat(resolv); err != nil || !os.SameFile(before, after) {
		t.Errorf("resolv.conf was replaced, not rewritten: a bind mount would keep the old one")
	}
}

// TestReconcileFinishesDeadConnectDNS: a connect killed after its link was
// recorded is finished, not undone: its resolv.conf is pointed at the
// network's server, and a DNS server that cannot be updated now does not
// make every later command fail on it.
func TestReconcileFinishesDeadConnectDNS(t *testing.T) {
	st := newStore(t)
	d := &leaveRecorder{}
	// An exec-root that cannot be made: every DNS sync fails.
	e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"},
		drivers: map[string]driver.Driver{"bridge": d}}
	n := dnsNetwork("other", "10.5.0.0/24")
	id := hexID("aaa")
	c := &Container{ID: id, Name: "x", Dir: filepath.Join(t.TempDir(), "x"), Netns: "/nonexistent",
		State: State{Status: StatusRunning, Supervisor: selfProc()},
		Endpoints: []Endpoint{{Network: "other", Endpoint: driver.Endpoint{ContainerID: id, IfName: "eth1",
			Addrs: []netip.Prefix{netip.MustParsePrefix("10.5.0.2/24")}}}}}
	resolv := writeResolv(t, c, "198.51.100.2")
	seed(t, st, c)
	dead := Proc{Pid: 2147483646, Start: 1} // no such PID
	if err := st.Update(func(tx store.Tx) error {
		return errors.Join(putJSON(tx, bucketNetworks, "other", n),
			tx.Put(ipamBucket("other"), "10.5.0.2", []byte(id)),
			tx.Put(bucketConnecting, connectingKey(id, "other"), finishStage(dead)))
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.Reconcile(); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if len(d.left) != 0 {
		t.Errorf("links removed: %v, want none", d.left)
	}
	if got := nameservers(t, resolv); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("10.5.0.1")}) {
		t.Errorf("resolv.conf nameservers %v, want the network's server 10.5.0.1", got)
	}
	err := st.View(func(tx store.Tx) error {
		cur, err := getContainer(tx, id)
		if err != nil {
			return err
		}
		if len(cur.Endpoints) != 1 {
			t.Errorf("the finished connect's endpoint is gone: %+v", cur.Endpoints)
		}
		if _, err := tx.Get(bucketConnecting, connectingKey(id, "other")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the finished connect is still under way (%v)", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConnectKeepsItsLinkWhenDNSFails: once the link is recorded, a
// connect whose DNS update fails reports it and leaves the rest to the
// next command; it does not undo a connect that a crash during the undo
// would leave half-done (its entry says "finish it").
func TestConnectKeepsItsLinkWhenDNSFails(t *testing.T) {
	st := newStore(t)
	d := &leaveRecorder{}
	off := false
	// An exec-root that cannot be made: every DNS sync fails.
	e := &Engine{st: st, cfg: &config.Config{IPForward: &off}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"},
		drivers: map[string]driver.Driver{"bridge": d}}
	id := hexID("aaa")
	c := &Container{ID: id, Name: "x", Dir: filepath.Join(t.TempDir(), "x"), Netns: "/nonexistent", OwnsNetns: true,
		State: State{Status: StatusRunning, Supervisor: selfProc()}}
	resolv := writeResolv(t, c, "198.51.100.2")
	seed(t, st, c)
	if err := st.Update(func(tx store.Tx) error {
		return putJSON(tx, bucketNetworks, "other", dnsNetwork("other", "10.5.0.0/24"))
	}); err != nil {
		t.Fatal(err)
	}
	err := e.Connect("other", "x", ConnectOptions{})
	if err == nil || !strings.Contains(err.Error(), "is connected to network other, but: it is not yet in the network's DNS") {
		t.Fatalf("Connect with the DNS failing: %v, want the connect reported made but its DNS not", err)
	}
	if len(d.left) != 0 {
		t.Errorf("links removed: %v, want none", d.left)
	}
	if got := nameservers(t, resolv); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("10.5.0.1")}) {
		t.Errorf("resolv.conf nameservers %v, want the network's server 10.5.0.1", got)
	}
	err = st.View(func(tx store.Tx) error {
		cur, err := getContainer(tx, id)
		if err != nil {
			return err
		}
		if len(cur.Endpoints) != 1 {
			t.Errorf("endpoints after the connect: %+v, want the one on other", cur.Endpoints)
		}
		v, err := tx.Get(bucketConnecting, connectingKey(id, "other"))
		if _, stage, _ := parseConnecting(v); err != nil || stage != "dns" {
			t.Errorf("the connect's entry: %q (%v), want it at the DNS stage for the next command", v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReconcileFinishesDeadDisconnect: a disconnect killed before or after
// it dropped the endpoint is finished by the next command: the link left
// (a stopped container's has none), the endpoint and its address gone,
// resolv.conf naming the server of the network that is left, and the
// entry gone.
func TestReconcileFinishesDeadDisconnect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  string
		dropped bool // before the crash
		left    int  // links the repair removes
	}{
		{"before the drop", StatusRunning, false, 1},
		{"after the drop", StatusRunning, true, 0},
		{"stopped, before the drop", StatusExited, false, 0},
	} {
		st := newStore(t)
		d := &leaveRecorder{}
		// An exec-root that cannot be made: the DNS sync fails, and is
		// only reported.
		e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"},
			drivers: map[string]driver.Driver{"bridge": d}}
		id := hexID("aaa")
		ep := func(n, ifname, addr string) Endpoint {
			return Endpoint{Network: n, Endpoint: driver.Endpoint{ContainerID: id, IfName: ifname, Addrs: []netip.Prefix{netip.MustParsePrefix(addr)}}}
		}
		c := &Container{ID: id, Name: "x", Dir: filepath.Join(t.TempDir(), "x"), Netns: "/nonexistent",
			State:     State{Status: tc.status, Supervisor: selfProc()},
			Endpoints: []Endpoint{ep("a", "eth0", "10.1.0.5/24"), ep("b", "eth1", "10.2.0.5/24")}}
		if tc.dropped {
			c.Endpoints = c.Endpoints[1:]
		}
		resolv := writeResolv(t, c, "10.1.0.1")
		seed(t, st, c)
		dead := Proc{Pid: 2147483646, Start: 1} // no such PID
		if err := st.Update(func(tx store.Tx) error {
			err := errors.Join(putJSON(tx, bucketNetworks, "a", dnsNetwork("a", "10.1.0.0/24")),
				putJSON(tx, bucketNetworks, "b", dnsNetwork("b", "10.2.0.0/24")),
				tx.Put(ipamBucket("b"), "10.2.0.5", []byte(id)),
				tx.Put(bucketConnecting, connectingKey(id, "a"), leaveStage(dead)))
			if !tc.dropped {
				err = errors.Join(err, tx.Put(ipamBucket("a"), "10.1.0.5", []byte(id)))
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := e.Reconcile(); err != nil {
			t.Fatalf("%s: Reconcile: %v", tc.name, err)
		}
		if len(d.left) != tc.left {
			t.Errorf("%s: links left %v, want %d", tc.name, d.left, tc.left)
		}
		// A stopped container's files are made again when it starts.
		if got := nameservers(t, resolv); tc.status == StatusRunning && !slices.Equal(got, []netip.Addr{netip.MustParseAddr("10.2.0.1")}) {
			t.Errorf("%s: resolv.conf nameservers %v, want b's server 10.2.0.1", tc.name, got)
		}
		err := st.View(func(tx store.Tx) error {
			cur, err := getContainer(tx, id)
			if err != nil {
				return err
			}
			if len(cur.Endpoints) != 1 || cur.Endpoints[0].Network != "b" {
				t.Errorf("%s: endpoints %+v, want only b's", tc.name, cur.Endpoints)
			}
			if _, err := tx.Get(ipamBucket("a"), "10.1.0.5"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: a's address is still allocated (%v)", tc.name, err)
			}
			if _, err := tx.Get(bucketConnecting, connectingKey(id, "a")); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: the disconnect is still under way (%v)", tc.name, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// failingLinks is a driver whose links can be neither made nor removed.
type failingLinks struct{ leaveRecorder }

func (*failingLinks) Join(*driver.Network, *driver.Endpoint, driver.Sandbox) error {
	return errors.New("join: no")
}
func (*failingLinks) Leave(*driver.Network, *driver.Endpoint, driver.Sandbox, driver.LeaveOptions) error {
	return errors.New("leave: no")
}

// connectFixture records a running container "y" (ID id) and a network
// "other" in st, and returns an engine over them with the bridge driver d.
func connectFixture(t *testing.T, st store.Store, id string, d driver.Driver) *Engine {
	t.Helper()
	off := false
	// An exec-root that cannot be made: no tmpfs (the DNS sync only reports
	// its failure).
	e := &Engine{st: st, cfg: &config.Config{IPForward: &off}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"},
		drivers: map[string]driver.Driver{"bridge": d}}
	c := &Container{ID: id, Name: "y", Dir: filepath.Join(t.TempDir(), "y"), Netns: "/nonexistent", OwnsNetns: true,
		State: State{Status: StatusRunning, Supervisor: selfProc()}}
	seed(t, st, c)
	if err := st.Update(func(tx store.Tx) error {
		return putJSON(tx, bucketNetworks, "other", dnsNetwork("other", "10.6.0.0/24"))
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// A connect that fails and cannot take its link back keeps the endpoint,
// its address and its entry of a connect under way (for the reconcile after
// this process to undo): another container must not get an address that
// may still be on a live link.
func TestFailedConnectKeepsWhatItCouldNotUndo(t *testing.T) {
	st := newStore(t)
	id := hexID("bbb")
	e := connectFixture(t, st, id, &failingLinks{})
	err := e.Connect("other", "y", ConnectOptions{})
	if err == nil || !strings.Contains(err.Error(), "leave: no") {
		t.Fatalf("Connect = %v, want the join's and the undo's errors", err)
	}
	err = st.View(func(tx store.Tx) error {
		cur, err := getContainer(tx, id)
		if err != nil {
			return err
		}
		if len(cur.Endpoints) != 1 {
			t.Errorf("endpoints %v, want the one it could not undo", cur.Endpoints)
		}
		used, err := usedAddrs(tx, "other")
		if err != nil {
			return err
		}
		if len(used) != 1 {
			t.Errorf("addresses held on other: %v, want the endpoint's", used)
		}
		if v, err := tx.Get(bucketConnecting, connectingKey(id, "other")); err != nil || len(v) == 0 {
			t.Errorf("no entry of the connect under way (%v): no reconcile would undo it", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A disconnect that fails after it dropped the endpoint (its address is
// free already) keeps its entry of a disconnect under way, so that the
// reconcile after this process finishes the rest; before, the entry went
// with the error and the links and /etc files were never brought up to date.
func TestDisconnectFailingAfterTheDropKeepsItsEntry(t *testing.T) {
	st := newStore(t)
	d := &leaveRecorder{}
	// An exec-root that cannot be made: the DNS sync fails, and is only
	// reported.
	e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"},
		drivers: map[string]driver.Driver{"bridge": d}}
	id := hexID("ccc")
	ep := func(n, ifname, addr string) Endpoint {
		return Endpoint{Network: n, Endpoint: driver.Endpoint{ContainerID: id, IfName: ifname, Addrs: []netip.Prefix{netip.MustParsePrefix(addr)}}}
	}
	// Its directory is a file: the /etc files cannot be rewritten.
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Container{ID: id, Name: "z", Dir: notDir, Netns: "/nonexistent",
		State:     State{Status: StatusRunning, Supervisor: selfProc()},
		Endpoints: []Endpoint{ep("a", "eth0", "10.1.0.5/24"), ep("b", "eth1", "10.2.0.5/24")}}
	seed(t, st, c)
	if err := st.Update(func(tx store.Tx) error {
		return errors.Join(putJSON(tx, bucketNetworks, "a", dnsNetwork("a", "10.1.0.0/24")),
			putJSON(tx, bucketNetworks, "b", dnsNetwork("b", "10.2.0.0/24")))
	}); err != nil {
		t.Fatal(err)
	}
	err := e.Disconnect("b", "z", false)
	if err == nil || !strings.Contains(err.Error(), "/etc files are not updated") {
		t.Fatalf("Disconnect = %v, want the /etc files' error", err)
	}
	_ = st.View(func(tx store.Tx) error {
		if v, err := tx.Get(bucketConnecting, connectingKey(id, "b")); err != nil || len(v) == 0 {
			t.Errorf("the disconnect's entry is gone (%v): nothing will finish it", err)
		}
		return nil
	})
}

// A disconnect whose link cannot be taken down fails, and leaves the
// container as its record has it: connected, its ports there published
// (leave takes them down first).
func TestDisconnectFailingToLeaveKeepsItsPorts(t *testing.T) {
	st := newStore(t)
	id := hexID("ddd")
	fw := firewalltest.New()
	e := connectFixture(t, st, id, &failingLinks{})
	e.fw = fw
	port := firewall.PortMapping{Network: "other", Proto: "tcp", HostPort: 8080, ContainerIP: netip.MustParseAddr("10.6.0.5"), ContainerPort: 80}
	if err := st.Update(func(tx store.Tx) error {
		c, err := getContainer(tx, id)
		if err != nil {
			return err
		}
		c.Endpoints = []Endpoint{{Network: "other", Endpoint: driver.Endpoint{ContainerID: id, IfName: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("10.6.0.5/24")}}}}
		c.Ports = []firewall.PortMapping{port}
		return putContainer(tx, c)
	}); err != nil {
		t.Fatal(err)
	}
	if err := fw.AddPorts(id, []firewall.PortMapping{port}); err != nil {
		t.Fatal(err)
	}
	if err := e.Disconnect("other", "y", false); err == nil || !strings.Contains(err.Error(), "leave: no") {
		t.Fatalf("Disconnect = %v, want the leave's error", err)
	}
	if owners, _ := fw.Owners(); !slices.Equal(owners, []string{id}) {
		t.Errorf("port owners after the failed disconnect: %v, want the container's port published again\n%s", owners, fw)
	}
	c, err := e.get(id)
	if err != nil || len(c.Endpoints) != 1 || len(c.Ports) != 1 {
		t.Errorf("record after the failed disconnect: %+v, %v; want it connected, with its port", c, err)
	}
}

// exitingJoin is a driver whose Join lets the container's exit be recorded
// (as its supervisor's finish would, from a record read before the
// connect) while the link is made.
type exitingJoin struct {
	leaveRecorder
	st store.Store
	id string
}

func (d *exitingJoin) Join(*driver.Network, *driver.Endpoint, driver.Sandbox) error {
	return d.st.Update(func(tx store.Tx) error {
		c, err := getContainer(tx, d.id)
		if err != nil {
			return err
		}
		c.State.Status = StatusExited
		return putContainer(tx, c)
	})
}

// A connect whose container exits while the link is made is undone: the
// exit's teardown knew only the endpoints it read before, so the connect's
// link and address would outlive it.
func TestConnectUndoneWhenTheContainerExits(t *testing.T) {
	st := newStore(t)
	id := hexID("ddd")
	d := &exitingJoin{st: st, id: id}
	e := connectFixture(t, st, id, d)
	err := e.Connect("other", "y", ConnectOptions{})
	if errdefs.KindOf(err) != errdefs.KindConflict || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("Connect = %v, want a conflict: the container stopped", err)
	}
	if !slices.Equal(d.left, []string{id + " eth0"}) {
		t.Errorf("links left: %q, want the connect's", d.left)
	}
	err = st.View(func(tx store.Tx) error {
		cur, err := getContainer(tx, id)
		if err != nil {
			return err
		}
		used, err := usedAddrs(tx, "other")
		if len(cur.Endpoints) != 0 || len(used) != 0 {
			t.Errorf("endpoints %v, addresses on other %v: want none", cur.Endpoints, used)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// changeAfterRead is a store that, once, right after a View, commits
// change: another command getting in after the caller read the record.
type changeAfterRead struct {
	store.Store
	change func(tx store.Tx) error
	once   sync.Once
}

func (s *changeAfterRead) View(fn func(store.Tx) error) error {
	err := s.Store.View(fn)
	s.once.Do(func() { _ = s.Store.Update(s.change) })
	return err
}

// connectAfterRead records an endpoint on network "late" for container
// id, as a `network connect` that got in after finish read the record
// would.
func connectAfterRead(st store.Store, id string) *changeAfterRead {
	return &changeAfterRead{Store: st, change: func(tx store.Tx) error {
		c, err := getContainer(tx, id)
		if err != nil {
			return err
		}
		ep, err := allocateEndpoint(tx, dnsNetwork("late", "10.7.0.0/24"), c, EndpointOptions{}, "eth1", nil)
		if err != nil {
			return err
		}
		c.Endpoints = append(c.Endpoints, *ep)
		return putContainer(tx, c)
	}}
}

// The exit of a container that a connect reached during its teardown
// undoes that endpoint too (its link) and releases its address, with or
// without --rm.
func TestFinishUndoesAnEndpointConnectedDuringTheTeardown(t *testing.T) {
	for _, autoRemove := range []bool{false, true} {
		id := hexID("eee")
		st := connectAfterRead(newStore(t), id)
		d := &leaveRecorder{}
		// An exec-root that cannot be made: the DNS sync fails, and is
		// only reported.
		e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"},
			drivers: map[string]driver.Driver{"bridge": d}}
		c := &Container{ID: id, Name: "x", Dir: filepath.Join(t.TempDir(), "x"),
			State: State{Status: StatusRunning, Supervisor: selfProc()}, Spec: Spec{AutoRemove: autoRemove}}
		st.once.Do(func() {}) // not during the seeding
		seed(t, st.Store, c)
		if err := st.Store.Update(func(tx store.Tx) error {
			return putJSON(tx, bucketNetworks, "late", dnsNetwork("late", "10.7.0.0/24"))
		}); err != nil {
			t.Fatal(err)
		}
		st.once = sync.Once{}
		if err := e.finish(id, 0); err != nil {
			t.Fatalf("--rm %v: finish: %v", autoRemove, err)
		}
		if !slices.Equal(d.left, []string{id + " eth1"}) {
			t.Errorf("--rm %v: links left: %q, want the late endpoint's", autoRemove, d.left)
		}
		err := st.View(func(tx store.Tx) error {
			used, err := usedAddrs(tx, "late")
			if len(used) != 0 {
				t.Errorf("--rm %v: addresses held on late: %v, want none", autoRemove, used)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A port a disconnect moved to another network while the container's
// teardown ran goes with the container: the teardown unpublished the
// ports it had read, finish those it finds moved once the exit is recorded.
func TestFinishUnpublishesAPortMovedDuringTheTeardown(t *testing.T) {
	id := hexID("fff")
	fw := firewalltest.New()
	// A disconnect of "a" getting in after finish read the record moves
	// the port to network "b" and publishes it there (republish).
	st := &changeAfterRead{Store: newStore(t), change: func(tx store.Tx) error {
		c, err := getContainer(tx, id)
		if err != nil {
			return err
		}
		c.Ports[0].Network, c.Ports[0].ContainerIP = "b", netip.MustParseAddr("10.2.0.5")
		if err := fw.AddPorts(id, c.Ports); err != nil {
			return err
		}
		return putContainer(tx, c)
	}}
	e := &Engine{st: st, fw: fw, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"},
		drivers: map[string]driver.Driver{"bridge": &leaveRecorder{}}}
	port := firewall.PortMapping{Network: "a", Proto: "tcp", HostPort: 8080, ContainerIP: netip.MustParseAddr("10.1.0.5"), ContainerPort: 80}
	c := &Container{ID: id, Name: "x", Dir: filepath.Join(t.TempDir(), "x"),
		State: State{Status: StatusRunning, Supervisor: selfProc()}, Ports: []firewall.PortMapping{port}}
	st.once.Do(func() {}) // not during the seeding
	seed(t, st.Store, c)
	if err := fw.AddPorts(id, c.Ports); err != nil {
		t.Fatal(err)
	}
	st.once = sync.Once{}
	if err := e.finish(id, 0); err != nil {
		t.Fatalf("finish: %v", err)
	}
	if owners, _ := fw.Owners(); len(owners) != 0 {
		t.Errorf("ports published after the exit: %v, want none\n%s", owners, fw)
	}
}

// republishingLeave is a driver whose Leave (in the exit's teardown,
// after the teardown unpublished the ports it read) publishes the
// container's ports again, as a disconnect's republish getting in then
// would.
type republishingLeave struct {
	leaveRecorder
	fw    *firewalltest.Recorder
	ports []firewall.PortMapping
}

func (d *republishingLeave) Leave(n *driver.Network, ep *driver.Endpoint, sb driver.Sandbox, o driver.LeaveOptions) error {
	_ = d.fw.AddPorts(ep.ContainerID, d.ports)
	return d.leaveRecorder.Leave(n, ep, sb, o)
}

// A port a disconnect under way publishes again after the exit's teardown
// unpublished it goes with the exit too: the disconnect's entry tells
// finish to sweep every port of the record.
func TestFinishSweepsPortsWhileADisconnectIsUnderWay(t *testing.T) {
	id := hexID("ace")
	fw := firewalltest.New()
	st := newStore(t)
	port := firewall.PortMapping{Network: "b", Proto: "tcp", HostPort: 8080, ContainerIP: netip.MustParseAddr("10.2.0.5"), ContainerPort: 80}
	d := &republishingLeave{fw: fw, ports: []firewall.PortMapping{port}}
	e := &Engine{st: st, fw: fw, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"},
		drivers: map[string]driver.Driver{"bridge": d}}
	c := &Container{ID: id, Name: "x", Dir: filepath.Join(t.TempDir(), "x"),
		State:     State{Status: StatusRunning, Supervisor: selfProc()},
		Endpoints: []Endpoint{{Network: "b", Endpoint: driver.Endpoint{ContainerID: id, IfName: "eth1", Addrs: []netip.Prefix{netip.MustParsePrefix("10.2.0.5/24")}}}},
		Ports:     []firewall.PortMapping{port}}
	seed(t, st, c)
	if err := st.Update(func(tx store.Tx) error {
		return errors.Join(putJSON(tx, bucketNetworks, "b", dnsNetwork("b", "10.2.0.0/24")),
			tx.Put(bucketConnecting, connectingKey(id, "a"), leaveStage(selfProc())))
	}); err != nil {
		t.Fatal(err)
	}
	if err := fw.AddPorts(id, c.Ports); err != nil {
		t.Fatal(err)
	}
	if err := e.finish(id, 0); err != nil {
		t.Fatalf("finish: %v", err)
	}
	if owners, _ := fw.Owners(); len(owners) != 0 {
		t.Errorf("ports published after the exit: %v, want none\n%s", owners, fw)
	}
}

// republish after the container's exit was recorded (its teardown past
// the point where it looks for moved ports) takes back what it published.
func TestRepublishAfterTheExitPublishesNothing(t *testing.T) {
	id := hexID("abc")
	fw := firewalltest.New()
	st := newStore(t)
	e := &Engine{st: st, fw: fw, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"}}
	port := firewall.PortMapping{Network: "b", Proto: "tcp", HostPort: 8080, ContainerIP: netip.MustParseAddr("10.2.0.5"), ContainerPort: 80}
	seed(t, st, &Container{ID: id, Name: "x", State: State{Status: StatusExited}, Ports: []firewall.PortMapping{port}})
	// Its host port, released, is another container's by now.
	other := hexID("bcd")
	if err := fw.AddPorts(other, []firewall.PortMapping{port}); err != nil {
		t.Fatal(err)
	}
	if err := e.republish(id, []Endpoint{{Network: "b"}}); err != nil {
		t.Fatalf("republish: %v", err)
	}
	if owners, _ := fw.Owners(); !slices.Equal(owners, []string{other}) {
		t.Errorf("port owners after republish for an exited container: %v, want only the other container's\n%s", owners, fw)
	}
}

// fakeRedirector stands for the firewall's 127.0.0.11 rules.
type fakeRedirector struct{}

func (fakeRedirector) RedirectDNS(string, netip.Addr) error { return nil }
func (fakeRedirector) HasDNSRedirect(string) (bool, error)  { return false, nil }
func (fakeRedirector) RemoveDNSRedirect(string) error       { return nil }

// resolv.conf names 127.0.0.11 when the firewall can redirect it to a DNS
// network's IPv4 gateway (the first DNS network that has one); the gateway
// itself when the firewall is off or the DNS networks are IPv6-only.
func TestResolvConfNameserver(t *testing.T) {
	v4, v6 := dnsNetwork("v4", "10.9.0.0/24"), dnsNetwork("v6", "fd00:9::/64")
	c := &Container{ID: hexID("c"), Name: "c", Spec: Spec{Hostname: "c"}}
	for _, tc := range []struct {
		name string
		dnsr dnsRedirector
		nets []*Network
		want string
	}{
		{"redirected", fakeRedirector{}, []*Network{v4}, "nameserver 127.0.0.11\n"},
		{"IPv6-only first", fakeRedirector{}, []*Network{v6, v4}, "nameserver 127.0.0.11\n"},
		{"IPv6-only", fakeRedirector{}, []*Network{v6}, "nameserver fd00:9::1\n"},
		{"firewall off", nil, []*Network{v4}, "nameserver 10.9.0.1\n"},
	} {
		e := &Engine{cfg: &config.Config{}, dnsr: tc.dnsr}
		_, resolv, err := e.etcFiles(c, &RunOptions{}, "network", tc.nets)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(resolv), tc.want) {
			t.Errorf("%s: resolv.conf\n%s\nwant %q", tc.name, resolv, tc.want)
		}
	}
}

// A port published on every address of a dual-stack network has an IPv6
// twin on the same host port; moved to an IPv4-only network, the twin
// cannot follow, and its release must not release the host port the IPv4
// mapping keeps (both are recorded under one key).
func TestRehomePortsKeepsASharedHostPort(t *testing.T) {
	st := newStore(t)
	second := dnsNetwork("second", "10.95.0.0/24")
	c := &Container{ID: hexID("c1"), Name: "mover", Endpoints: []Endpoint{{Network: "second", Endpoint: driver.Endpoint{
		IfName: "eth1", Addrs: []netip.Prefix{netip.MustParsePrefix("10.95.0.2/24")}}}}}
	old := []firewall.PortMapping{
		{Network: "first", HostPort: 8085, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.94.0.2"), ContainerPort: 80},
		{Network: "first", HostIP: netip.IPv6Unspecified(), HostPort: 8085, Proto: "tcp", ContainerIP: netip.MustParseAddr("fd00::2"), ContainerPort: 80},
		{Network: "first", HostIP: netip.IPv6Unspecified(), HostPort: 9090, Proto: "udp", ContainerIP: netip.MustParseAddr("fd00::2"), ContainerPort: 53},
	}
	moved := []Endpoint{{Network: "second", Endpoint: driver.Endpoint{IfName: "eth1", Gateways: []netip.Addr{netip.MustParseAddr("10.95.0.1")}}}}
	var rehomed, lost []firewall.PortMapping
	// The records a run made: tcp/8085 on every address, udp/9090 on [::].
	record := func(proto portmap.Proto, port uint16, key string) {
		t.Helper()
		if err := st.Update(func(tx store.Tx) error { return tx.Put(portsBucket(proto, port), key, []byte(c.ID)) }); err != nil {
			t.Fatal(err)
		}
	}
	record(portmap.TCP, 8085, "*")
	record(portmap.UDP, 9090, "::")
	err := st.Update(func(tx store.Tx) error {
		if err := putJSON(tx, bucketNetworks, "second", second); err != nil {
			return err
		}
		rehomed, lost = rehomePorts(tx, c, old, moved)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rehomed) != 1 || rehomed[0].Network != "second" || rehomed[0].ContainerIP != netip.MustParseAddr("10.95.0.2") || rehomed[0].HostPort != 8085 {
		t.Errorf("rehomed = %+v, want the IPv4 mapping on 10.95.0.2", rehomed)
	}
	if len(lost) != 1 || lost[0].HostPort != 9090 {
		t.Errorf("lost = %+v, want only the udp/9090 twin (8085 is kept)", lost)
	}
	// Nor one whose host port a mapping through another network keeps
	// (the [::] twin on an IPv6-only network).
	c.Ports = []firewall.PortMapping{{Network: "six", HostIP: netip.IPv6Unspecified(), HostPort: 8087, Proto: "tcp", ContainerIP: netip.MustParseAddr("fd00:6::2"), ContainerPort: 80}}
	record(portmap.TCP, 8087, "*")
	v4 := []firewall.PortMapping{{Network: "first", HostPort: 8087, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.94.0.2"), ContainerPort: 80}}
	if err := st.View(func(tx store.Tx) error { _, lost = rehomePorts(tx, c, v4, nil); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(lost) != 0 {
		t.Errorf("lost = %+v, want none: [::]:8087 keeps the host port", lost)
	}
	// But a port published on 0.0.0.0 and on [::] has a record for each:
	// the one whose mapping is lost goes (-p 0.0.0.0:8088:80 -p
	// [::]:8088:80 through an IPv4-only and an IPv6-only network, the
	// first left; or -p 127.0.0.1:8089:80 -p [::]:8089:80, the [::] one
	// lost).
	for _, lostOne := range []struct {
		kept, gone firewall.PortMapping
	}{
		{firewall.PortMapping{Network: "six", HostIP: netip.IPv6Unspecified(), HostPort: 8088, Proto: "tcp", ContainerIP: netip.MustParseAddr("fd00:6::2"), ContainerPort: 80},
			firewall.PortMapping{Network: "first", HostIP: netip.IPv4Unspecified(), HostPort: 8088, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.94.0.2"), ContainerPort: 80}},
		{firewall.PortMapping{Network: "second", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8089, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.95.0.2"), ContainerPort: 80},
			firewall.PortMapping{Network: "first", HostIP: netip.IPv6Unspecified(), HostPort: 8089, Proto: "tcp", ContainerIP: netip.MustParseAddr("fd00::2"), ContainerPort: 80}},
	} {
		record(portmap.TCP, lostOne.kept.HostPort, hostIPKey(lostOne.kept.HostIP))
		record(portmap.TCP, lostOne.gone.HostPort, hostIPKey(lostOne.gone.HostIP))
		c.Ports = []firewall.PortMapping{lostOne.kept}
		if err := st.View(func(tx store.Tx) error {
			_, lost = rehomePorts(tx, c, []firewall.PortMapping{lostOne.gone}, nil)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(lost) != 1 || lost[0] != lostOne.gone {
			t.Errorf("lost = %+v, want %+v: its record is its own", lost, lostOne.gone)
		}
	}
}

// A port published on every address whose IPv4 mapping is gone, its [::]
// one left, no longer holds the port on IPv4: its record says [::]. One
// whose [::] mapping went keeps "*"; one published on [::] alone is
// untouched.
func TestNarrowPortsFreesIPv4(t *testing.T) {
	st := newStore(t)
	id := hexID("c1")
	v6 := func(port uint16) firewall.PortMapping {
		return firewall.PortMapping{Network: "six", HostIP: netip.IPv6Unspecified(), HostPort: port, Proto: "tcp", ContainerIP: netip.MustParseAddr("fd00::2"), ContainerPort: 80}
	}
	v4 := firewall.PortMapping{Network: "four", HostPort: 8082, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.9.0.2"), ContainerPort: 80}
	c := &Container{ID: id, Ports: []firewall.PortMapping{v6(8081), v4, v6(8083)}}
	records := func(tx store.Tx) map[string]string {
		got := map[string]string{}
		for _, port := range []uint16{8081, 8082, 8083} {
			_ = tx.List(portsBucket(portmap.TCP, port), func(k string, v []byte) error {
				got[fmt.Sprintf("%d %s", port, k)] = string(v)
				return nil
			})
		}
		return got
	}
	err := st.Update(func(tx store.Tx) error {
		for _, r := range []struct {
			port uint16
			key  string
		}{{8081, "*"}, {8082, "*"}, {8083, "::"}} {
			if err := tx.Put(portsBucket(portmap.TCP, r.port), r.key, []byte(id)); err != nil {
				return err
			}
		}
		if err := narrowPorts(tx, c); err != nil {
			return err
		}
		if got, want := records(tx), map[string]string{"8081 ::": id, "8082 *": id, "8083 ::": id}; !maps.Equal(got, want) {
			t.Errorf("records = %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

package engine

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/config"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/firewalltest"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store"
	"github.com/knit-dev/knit/internal/store/bolt"
)

func newStore(t *testing.T) store.Store {
	t.Helper()
	return bolt.Open(filepath.Join(t.TempDir(), "knit.db"))
}

// seed records containers and their names.
func seed(t *testing.T, st store.Store, cs ...*Container) {
	t.Helper()
	err := st.Update(func(tx store.Tx) error {
		for _, c := range cs {
			if err := putContainer(tx, c); err != nil {
				return err
			}
			if c.Name != "" {
				if err := tx.Put(bucketNames, c.Name, []byte(c.ID)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
}

func hexID(prefix string) string { return prefix + strings.Repeat("0", 64-len(prefix)) }

func TestLookupContainer(t *testing.T) {
	st := newStore(t)
	web := &Container{ID: hexID("abc1"), Name: "web"}
	db := &Container{ID: hexID("abc2"), Name: "db"}
	solo := &Container{ID: hexID("def"), Name: "solo"}
	// A container named like a prefix of another's ID: the name wins.
	named := &Container{ID: hexID("123"), Name: "def"}
	seed(t, st, web, db, solo, named)

	tests := []struct {
		ref    string
		wantID string
		kind   errdefs.Kind // KindUnknown: no error
	}{
		{"web", web.ID, errdefs.KindUnknown},
		{"db", db.ID, errdefs.KindUnknown},
		{web.ID, web.ID, errdefs.KindUnknown},
		{db.ID, db.ID, errdefs.KindUnknown},
		{"abc1", web.ID, errdefs.KindUnknown},
		{"abc2", db.ID, errdefs.KindUnknown},
		{"d", solo.ID, errdefs.KindUnknown},
		{"def", named.ID, errdefs.KindUnknown},
		{"12", named.ID, errdefs.KindUnknown},
		{"abc", "", errdefs.KindInvalid},
		{"a", "", errdefs.KindInvalid},
		{"", "", errdefs.KindInvalid},
		{"nope", "", errdefs.KindNotFound},
		{"abc3", "", errdefs.KindNotFound},
		{web.ID + "0", "", errdefs.KindNotFound},
		{"WEB", "", errdefs.KindNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			var c *Container
			err := st.View(func(tx store.Tx) (err error) { c, err = lookupContainer(tx, tt.ref); return err })
			if tt.kind != errdefs.KindUnknown {
				if err == nil {
					t.Fatalf("lookupContainer(%q) = %s, want error of kind %v", tt.ref, c.ID, tt.kind)
				}
				if k := errdefs.KindOf(err); k != tt.kind {
					t.Fatalf("lookupContainer(%q) error kind = %v, want %v: %v", tt.ref, k, tt.kind, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("lookupContainer(%q): %v", tt.ref, err)
			}
			if c.ID != tt.wantID {
				t.Errorf("lookupContainer(%q) = %s, want %s", tt.ref, c.ID, tt.wantID)
			}
		})
	}
}

func TestLookupContainerEmptyStore(t *testing.T) {
	st := newStore(t)
	err := st.View(func(tx store.Tx) error { _, err := lookupContainer(tx, "web"); return err })
	if errdefs.KindOf(err) != errdefs.KindNotFound {
		t.Fatalf("lookupContainer on an empty store = %v, want KindNotFound", err)
	}
}

func testNetwork() *Network {
	return &Network{Network: driver.Network{
		Name: "net29",
		Subnets: []driver.Subnet{{
			Prefix:  netip.MustParsePrefix("10.9.0.0/29"),
			Gateway: netip.MustParseAddr("10.9.0.1"),
		}},
	}}
}

// allocate runs allocateEndpoint for a new container in its own transaction.
func allocate(st store.Store, n *Network, id string, o *RunOptions) (*Endpoint, error) {
	var ep *Endpoint
	err := st.Update(func(tx store.Tx) (err error) {
		if _, err := getNetwork(tx, n.Name); err != nil {
			if err := putJSON(tx, bucketNetworks, n.Name, n); err != nil {
				return err
			}
		}
		req := EndpointOptions{IP: o.IP, IP6: o.IP6, MAC: o.MAC, Aliases: o.Aliases}
		ep, err = allocateEndpoint(tx, n, &Container{ID: id}, req, "eth0", map[bool]bool{})
		return err
	})
	return ep, err
}

func owners(t *testing.T, st store.Store, network string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := st.View(func(tx store.Tx) error {
		return tx.List(ipamBucket(network), func(k string, v []byte) error { got[k] = string(v); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestAllocateEndpoint(t *testing.T) {
	n := testNetwork()
	ip := netip.MustParseAddr
	tests := []struct {
		name     string
		taken    []string // addresses owned by other containers
		internal bool
		o        RunOptions
		want     string // address, or "" when an error is expected
		wantMAC  string
		kind     errdefs.Kind
	}{
		{name: "lowest free", want: "10.9.0.2", wantMAC: "02:42:0a:09:00:02"},
		{name: "skips taken", taken: []string{"10.9.0.2", "10.9.0.3"}, want: "10.9.0.4", wantMAC: "02:42:0a:09:00:04"},
		{name: "fills hole", taken: []string{"10.9.0.2", "10.9.0.4"}, want: "10.9.0.3", wantMAC: "02:42:0a:09:00:03"},
		{name: "requested", o: RunOptions{IP: ip("10.9.0.5")}, want: "10.9.0.5", wantMAC: "02:42:0a:09:00:05"},
		{name: "requested highest host", o: RunOptions{IP: ip("10.9.0.6")}, want: "10.9.0.6", wantMAC: "02:42:0a:09:00:06"},
		{name: "requested mac", o: RunOptions{MAC: mustMAC(t, "92:d0:c6:0a:29:33")}, want: "10.9.0.2", wantMAC: "92:d0:c6:0a:29:33"},
		{name: "internal has no gateway", internal: true, want: "10.9.0.2", wantMAC: "02:42:0a:09:00:02"},
		{name: "requested taken", taken: []string{"10.9.0.5"}, o: RunOptions{IP: ip("10.9.0.5")}, kind: errdefs.KindConflict},
		{name: "requested outside", o: RunOptions{IP: ip("10.9.0.8")}, kind: errdefs.KindInvalid},
		{name: "requested far outside", o: RunOptions{IP: ip("192.168.1.1")}, kind: errdefs.KindInvalid},
		{name: "requested gateway", o: RunOptions{IP: ip("10.9.0.1")}, kind: errdefs.KindInvalid},
		{name: "requested network address", o: RunOptions{IP: ip("10.9.0.0")}, kind: errdefs.KindInvalid},
		{name: "requested broadcast", o: RunOptions{IP: ip("10.9.0.7")}, kind: errdefs.KindInvalid},
		{name: "requested other family", o: RunOptions{IP: ip("fd00::5")}, kind: errdefs.KindInvalid},
		{name: "exhausted", taken: []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}, kind: errdefs.KindConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore(t)
			n := *n
			n.Internal = tt.internal
			want := map[string]string{}
			err := st.Update(func(tx store.Tx) error {
				for _, a := range tt.taken {
					want[a] = "other"
					if err := tx.Put(ipamBucket(n.Name), a, []byte("other")); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			ep, err := allocate(st, &n, "me", &tt.o)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("allocateEndpoint = %v, want error of kind %v", ep.Addrs, tt.kind)
				}
				if k := errdefs.KindOf(err); k != tt.kind {
					t.Fatalf("allocateEndpoint error kind = %v, want %v: %v", k, tt.kind, err)
				}
			} else {
				if err != nil {
					t.Fatalf("allocateEndpoint: %v", err)
				}
				wantAddrs := []netip.Prefix{netip.MustParsePrefix(tt.want + "/29")}
				if !slices.Equal(ep.Addrs, wantAddrs) {
					t.Errorf("Addrs = %v, want %v", ep.Addrs, wantAddrs)
				}
				if ep.MAC.String() != tt.wantMAC {
					t.Errorf("MAC = %s, want %s", ep.MAC, tt.wantMAC)
				}
				var wantGW []netip.Addr
				if !tt.internal {
					wantGW = []netip.Addr{ip("10.9.0.1")}
				}
				if !slices.Equal(ep.Gateways, wantGW) {
					t.Errorf("Gateways = %v, want %v", ep.Gateways, wantGW)
				}
				if ep.Network != n.Name || ep.ContainerID != "me" || ep.IfName != "eth0" || ep.DefaultRoute == tt.internal {
					t.Errorf("endpoint = %+v, want network %s, container me, eth0, a default route unless internal", ep, n.Name)
				}
				want[tt.want] = "me"
			}
			// On error the transaction rolled back: only the seeded entries remain.
			if got := owners(t, st, n.Name); !maps.Equal(got, want) {
				t.Errorf("ipam bucket = %v, want %v", got, want)
			}
		})
	}
}

// TestAllocateEndpointSequence fills a /29 one container at a time.
func TestAllocateEndpointSequence(t *testing.T) {
	st := newStore(t)
	n := testNetwork()
	var got []string
	for i := range 5 {
		ep, err := allocate(st, n, string(rune('a'+i)), &RunOptions{})
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		got = append(got, ep.Addrs[0].Addr().String())
	}
	want := []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}
	if !slices.Equal(got, want) {
		t.Fatalf("addresses = %v, want %v", got, want)
	}
	_, err := allocate(st, n, "f", &RunOptions{})
	if errdefs.KindOf(err) != errdefs.KindConflict {
		t.Fatalf("sixth allocation: %v, want KindConflict", err)
	}
}

func TestReleaseAddrs(t *testing.T) {
	st := newStore(t)
	c := &Container{ID: "me", Endpoints: []Endpoint{
		{Network: "n1", Endpoint: driver.Endpoint{Addrs: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.2/24"), // mine
			netip.MustParsePrefix("10.0.0.3/24"), // taken over by another container
			netip.MustParsePrefix("10.0.0.4/24"), // not recorded at all
		}}},
		{Network: "n2", Endpoint: driver.Endpoint{Addrs: []netip.Prefix{
			netip.MustParsePrefix("fd00::2/64"), // mine
		}}},
	}}
	err := st.Update(func(tx store.Tx) error {
		return errors.Join(
			tx.Put(ipamBucket("n1"), "10.0.0.2", []byte("me")),
			tx.Put(ipamBucket("n1"), "10.0.0.3", []byte("other")),
			tx.Put(ipamBucket("n1"), "10.0.0.5", []byte("other")),
			tx.Put(ipamBucket("n2"), "fd00::2", []byte("me")),
			tx.Put(ipamBucket("n3"), "10.0.0.2", []byte("me")), // not one of c's endpoints
		)
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := st.Update(func(tx store.Tx) error { return releaseAddrs(tx, c) }); err != nil {
			t.Fatalf("releaseAddrs: %v", err)
		}
		for net, want := range map[string]map[string]string{
			"n1": {"10.0.0.3": "other", "10.0.0.5": "other"},
			"n2": {},
			"n3": {"10.0.0.2": "me"},
		} {
			if got := owners(t, st, net); !maps.Equal(got, want) {
				t.Errorf("ipam/%s = %v, want %v", net, got, want)
			}
		}
	}
}

func TestOrphaned(t *testing.T) {
	start, err := runner.StartTime(os.Getpid())
	if err != nil {
		t.Fatalf("StartTime(self): %v", err)
	}
	self := Proc{Pid: os.Getpid(), Start: start}
	reused := Proc{Pid: os.Getpid(), Start: start + 1} // same PID, another process
	tests := []struct {
		name  string
		state State
		want  bool
	}{
		{"running, supervisor alive", State{Status: StatusRunning, Supervisor: self}, false},
		{"running, supervisor gone", State{Status: StatusRunning, Supervisor: Proc{}}, true},
		{"running, supervisor pid reused", State{Status: StatusRunning, Supervisor: reused}, true},
		{"running, only owner alive", State{Status: StatusRunning, Owner: self}, true},
		{"created, owner alive", State{Status: StatusCreated, Owner: self}, false},
		{"created, owner gone", State{Status: StatusCreated}, true},
		{"created, owner pid reused", State{Status: StatusCreated, Owner: reused}, true},
		{"created, only supervisor alive", State{Status: StatusCreated, Supervisor: self}, true},
		{"exited", State{Status: StatusExited}, false},
		{"exited, supervisor alive", State{Status: StatusExited, Supervisor: self}, false},
		{"unknown status", State{Status: "paused"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := orphaned(&Container{State: tt.state}); got != tt.want {
				t.Errorf("orphaned(%+v) = %v, want %v", tt.state, got, tt.want)
			}
		})
	}
}

// exists answers for a PID, not for a process we may signal: a zombie still
// exists (its supervisor's record is repaired once it is reaped), a reaped
// one does not, and neither does a PID above any pid_max.
func TestExists(t *testing.T) {
	if !exists(os.Getpid()) {
		t.Error("exists(self) = false")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// A zombie until waited for: poll its state rather than sleep.
	for i := 0; ; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err == nil && strings.Contains(string(b), ") Z ") {
			break
		}
		if i == 1000 {
			t.Fatalf("child %d never became a zombie", pid)
		}
		time.Sleep(time.Millisecond)
	}
	if !exists(pid) {
		t.Errorf("exists(zombie %d) = false", pid)
	}
	_ = cmd.Wait()
	if exists(pid) {
		t.Errorf("exists(reaped %d) = true", pid)
	}
	if exists(1 << 30) {
		t.Error("exists(1<<30) = true")
	}
}

// TestAllocationStaysLowestFree runs random allocations (some of a
// requested address), releases and a network's re-creation under its name,
// and checks each automatic allocation against a model: the lowest free
// address, whatever the ipam-next hint says.
func TestAllocationStaysLowestFree(t *testing.T) {
	st := newStore(t)
	n := testNetwork()
	n.ID = "net-1"
	n.Subnets[0].Prefix = netip.MustParsePrefix("10.9.0.0/26")
	rnd := rand.New(rand.NewPCG(1, 2))
	held := map[netip.Addr]string{} // the model
	lowest := func() netip.Addr {
		for a := netip.MustParseAddr("10.9.0.2"); a.Compare(netip.MustParseAddr("10.9.0.62")) <= 0; a = a.Next() {
			if _, ok := held[a]; !ok {
				return a
			}
		}
		return netip.Addr{}
	}
	for i := range 600 {
		id := fmt.Sprint("c", i)
		switch op := rnd.IntN(10); {
		case op < 5: // allocate the lowest free address
			want := lowest()
			ep, err := allocate(st, n, id, &RunOptions{})
			if !want.IsValid() {
				if err == nil {
					t.Fatalf("step %d: allocated %v from a full subnet", i, ep.Addrs)
				}
				continue
			}
			if err != nil || ep.Addrs[0].Addr() != want {
				t.Fatalf("step %d: allocated %v, %v; want %s (held %d)", i, ep, err, want, len(held))
			}
			held[want] = id
		case op < 6: // ask for an address
			a := netip.AddrFrom4([4]byte{10, 9, 0, byte(2 + rnd.IntN(61))})
			if _, ok := held[a]; ok {
				continue
			}
			if _, err := allocate(st, n, id, &RunOptions{IP: a}); err != nil {
				t.Fatalf("step %d: --ip %s: %v", i, a, err)
			}
			held[a] = id
		case op < 9: // release one
			for a, owner := range held {
				c := &Container{ID: owner, Endpoints: []Endpoint{{Network: n.Name,
					Endpoint: driver.Endpoint{Addrs: []netip.Prefix{netip.PrefixFrom(a, 26)}}}}}
				if err := st.Update(func(tx store.Tx) error { return releaseAddrs(tx, c) }); err != nil {
					t.Fatal(err)
				}
				delete(held, a)
				break
			}
		default: // the network is removed and made again under its name
			if rnd.IntN(10) != 0 {
				continue
			}
			err := st.Update(func(tx store.Tx) error {
				for a := range held {
					if err := tx.Delete(ipamBucket(n.Name), a.String()); err != nil {
						return err
					}
				}
				return tx.Delete(bucketNetworks, n.Name) // a crash skipped forgetIPAMNext
			})
			if err != nil {
				t.Fatal(err)
			}
			clear(held)
			n.ID = fmt.Sprint("net-", i)
		}
	}
}

// TestReconcileDecidesEachEntry mixes entries of a live and of a dead
// owner (and a damaged one) in the live index: Reconcile drops exactly the
// entries whose owner is gone, however the owners follow one another.
func TestReconcileDecidesEachEntry(t *testing.T) {
	st := newStore(t)
	self, _ := runner.StartTime(os.Getpid())
	live := fmt.Sprintf("%d:%d", os.Getpid(), self)
	const dead = "2147483646:1" // no such PID
	entries := map[string]string{
		"a1": live, "a2": live, "b1": dead, "b2": dead, "c1": live, "d1": "garbage", "e1": live, "f1": dead,
	}
	err := st.Update(func(tx store.Tx) error {
		for id, v := range entries {
			if err := tx.Put(bucketLive, id, []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{st: st}
	if err := e.Reconcile(); err != nil {
		t.Fatal(err)
	}
	var got []string
	_ = st.View(func(tx store.Tx) error {
		return tx.List(bucketLive, func(id string, _ []byte) error { got = append(got, id); return nil })
	})
	if want := []string{"a1", "a2", "c1", "e1"}; !slices.Equal(got, want) {
		t.Errorf("live index after Reconcile = %v, want %v", got, want)
	}
}

// A run's reservation also does reconcile's check: a container whose owner
// died is repaired before the run reserves, so its name (and what else it
// held) is free for the run, in the one transaction that reserves.
func TestReserveRepairsDeadOwnersFirst(t *testing.T) {
	st := newStore(t)
	e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: t.TempDir()}}
	dead := &Container{ID: hexID("dead"), Name: "web", Dir: filepath.Join(t.TempDir(), "dead"),
		State: State{Status: StatusCreated, Owner: Proc{Pid: 2147483646, Start: 1}}, // no such PID
		Spec:  Spec{NetworkMode: ModeHost}}
	seed(t, st, dead)
	c, p, err := e.reserve(hexID("live"), &RunOptions{Name: "web", Network: ModeHost, Args: []string{"true"}}, nil)
	if err != nil {
		t.Fatalf("reserve: %v", err)
	}
	if c.Name != "web" || p.mode != ModeHost {
		t.Errorf("reserved %s in mode %s, want web in mode host", c.Name, p.mode)
	}
	err = st.View(func(tx store.Tx) error {
		if _, err := getContainer(tx, dead.ID); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("the dead owner's container is still recorded (%v)", err)
		}
		if owner, err := tx.Get(bucketNames, "web"); err != nil || string(owner) != c.ID {
			return fmt.Errorf("name web belongs to %q (%v), want %s", owner, err, c.ID)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	// Without the dead owner's repair the name would be taken: the same
	// reservation again is refused.
	if _, _, err := e.reserve(hexID("next"), &RunOptions{Name: "web", Network: ModeHost, Args: []string{"true"}}, nil); errdefs.KindOf(err) != errdefs.KindConflict {
		t.Errorf("a second run named web: %v, want a conflict", err)
	}
}

// TestLinkNetnsLeavesAnotherKnitsLink: the knit-NAME link for `ip netns`
// of a live namespace of another knit (another exec-root) is not taken; a
// dangling one, or one of this knit's, is replaced.
func TestLinkNetnsLeavesAnotherKnitsLink(t *testing.T) {
	ours, theirs, links := t.TempDir(), t.TempDir(), t.TempDir()
	e := &Engine{paths: Paths{ExecRoot: ours, NetnsLinks: links}}
	touch := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o444); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := &Container{Name: "web", Netns: touch(filepath.Join(ours, "netns", "id1"))}
	link := filepath.Join(links, "knit-web")
	for _, tc := range []struct {
		name, had string
		mine      bool
	}{
		{"another knit's, live", touch(filepath.Join(theirs, "netns", "id2")), false},
		{"another knit's, dangling", filepath.Join(theirs, "netns", "gone"), true},
		{"this knit's, an older container's", touch(filepath.Join(ours, "netns", "id0")), true},
		{"none", "", true},
	} {
		_ = os.Remove(link)
		if tc.had != "" {
			if err := os.Symlink(tc.had, link); err != nil {
				t.Fatal(err)
			}
		}
		e.linkNetns(c)
		want := tc.had
		if tc.mine {
			want = c.Netns
		}
		if got, _ := os.Readlink(link); got != want {
			t.Errorf("%s: link points at %q, want %q", tc.name, got, want)
		}
	}
}

// -p 0.0.0.0:P and -p [::]:P each hold their own family, as in Docker, so
// two containers can hold them; -p P (every address) collides with both.
func TestHostPortFamilies(t *testing.T) {
	st := newStore(t)
	spec := func(host string) []portmap.Spec {
		s := portmap.Spec{HostPortFirst: 8080, HostPortLast: 8080, ContainerFirst: 80, ContainerLast: 80, Proto: portmap.TCP}
		if host != "" {
			s.HostIP = netip.MustParseAddr(host)
		}
		return []portmap.Spec{s}
	}
	ctr := func(id string) *Container {
		return &Container{ID: id, Endpoints: []Endpoint{{Network: "n", Endpoint: driver.Endpoint{
			Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/24"), netip.MustParsePrefix("fd00::2/64")}}}}}
	}
	reserve := func(id, host string) error {
		return st.Update(func(tx store.Tx) error { return reservePorts(tx, ctr(id), spec(host), nil) })
	}
	if err := reserve("a", "0.0.0.0"); err != nil {
		t.Fatal(err)
	}
	if err := reserve("b", "::"); err != nil {
		t.Errorf("[::]:8080 beside 0.0.0.0:8080: %v", err)
	}
	for _, host := range []string{"", "0.0.0.0", "::", "127.0.0.1"} {
		if err := reserve("c", host); errdefs.KindOf(err) != errdefs.KindConflict {
			t.Errorf("%q:8080 after 0.0.0.0 and [::]: %v, want a conflict", host, err)
		}
	}
	// Releasing a's frees IPv4 only.
	if err := st.Update(func(tx store.Tx) error {
		return releasePorts(tx, &Container{ID: "a", Ports: []firewall.PortMapping{{HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 8080, Proto: "tcp"}}})
	}); err != nil {
		t.Fatal(err)
	}
	if err := reserve("c", "127.0.0.1"); err != nil {
		t.Errorf("127.0.0.1:8080 after the release: %v", err)
	}
	if err := reserve("d", "::1"); errdefs.KindOf(err) != errdefs.KindInvalid || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("[::1]:8080: %v, want it refused, pointing at 127.0.0.1", err)
	}
}

// A --rm container whose kernel state could not be undone when it exited
// is kept, exited, with its host port and addresses: none is handed out
// while still in use; a prune removes it later.
func TestAutoRemoveKeepsWhatTeardownCouldNotUndo(t *testing.T) {
	st := newStore(t)
	fw := firewalltest.New()
	e := firewallEngine(t, st, fw)
	id := hexID("rm1")
	c := portHolder(t, id, "gone", State{Status: StatusRunning})
	c.Spec.AutoRemove = true
	seed(t, st, c)
	if err := st.Update(func(tx store.Tx) error { return tx.Put(portsBucket("tcp", 8080), "*", []byte(id)) }); err != nil {
		t.Fatal(err)
	}
	fw.FailOn("RemovePorts "+id, errors.New("netlink: busy"))
	if err := e.finish(id, 0); err == nil {
		t.Fatal("finish reported no error")
	}
	var owner []byte
	err := st.View(func(tx store.Tx) (err error) {
		if _, err = getContainer(tx, id); err != nil {
			return err
		}
		owner, err = tx.Get(portsBucket("tcp", 8080), "*")
		return err
	})
	if err != nil || string(owner) != id {
		t.Errorf("after a failed teardown the record or its host port is gone: %v, port held by %q", err, owner)
	}
}

// -P publishes each exposed port once, and not those -p publishes.
func TestPublishAllSpecs(t *testing.T) {
	one := func(first, last uint16, proto portmap.Proto) portmap.Spec {
		return portmap.Spec{ContainerFirst: first, ContainerLast: last, Proto: proto}
	}
	bound := one(80, 80, portmap.TCP)
	bound.HostPortFirst, bound.HostPortLast = 8080, 8080
	o := &RunOptions{PublishAll: true, Publish: []portmap.Spec{bound},
		Expose: []portmap.Spec{one(80, 80, portmap.TCP), one(81, 81, portmap.TCP), one(81, 81, portmap.TCP),
			one(80, 80, portmap.UDP), one(8000, 8001, portmap.TCP), one(65535, 65535, portmap.TCP)}}
	want := []portmap.Spec{bound, one(81, 81, portmap.TCP), one(80, 80, portmap.UDP), one(8000, 8000, portmap.TCP),
		one(8001, 8001, portmap.TCP), one(65535, 65535, portmap.TCP)}
	if got := portSpecs(o); !slices.Equal(got, want) {
		t.Errorf("portSpecs =\n%v\nwant\n%v", got, want)
	}
}

// With systemd-resolved's stub as the host's only nameserver, containers
// get the upstream servers resolved uses, as with Docker.
func TestReadHostResolv(t *testing.T) {
	dir := t.TempDir()
	etc, resolved := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "resolved.conf")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(resolved, "nameserver 192.0.2.53\n")
	for _, tc := range []struct{ etc, want string }{
		{"nameserver 127.0.0.53\nsearch lan\n", "nameserver 192.0.2.53\n"},
		{"nameserver 198.51.100.53\n", "nameserver 198.51.100.53\n"},
		{"nameserver 127.0.0.53\nnameserver 198.51.100.53\n", "nameserver 127.0.0.53\nnameserver 198.51.100.53\n"},
	} {
		write(etc, tc.etc)
		if got := string(readHostResolvFrom(etc, resolved).file); got != tc.want {
			t.Errorf("host resolv.conf %q: read %q, want %q", tc.etc, got, tc.want)
		}
	}
	write(etc, "nameserver 127.0.0.53\n")
	if got := string(readHostResolvFrom(etc, filepath.Join(dir, "missing")).file); got != "nameserver 127.0.0.53\n" {
		t.Errorf("without resolved's file: %q", got)
	}
}

// config default-gateway is a router's address: never handed out.
func TestDefaultRouteIsNotHandedOut(t *testing.T) {
	st := newStore(t)
	n := testNetwork()
	n.Subnets[0].DefaultRoute = netip.MustParseAddr("10.9.0.2")
	ep, err := allocate(st, n, hexID("a"), &RunOptions{})
	if err != nil || ep.Addrs[0].Addr() != netip.MustParseAddr("10.9.0.3") || ep.Gateways[0] != n.Subnets[0].DefaultRoute {
		t.Errorf("allocation: %+v, %v; want 10.9.0.3 routed via 10.9.0.2", ep, err)
	}
	if _, err := allocate(st, n, hexID("b"), &RunOptions{IP: netip.MustParseAddr("10.9.0.2")}); errdefs.KindOf(err) != errdefs.KindConflict {
		t.Errorf("--ip of the default gateway: %v, want a conflict", err)
	}
}

// A repair that cannot undo a half-made container gives it back to its
// dead owner: the live index names it, and the next reconcile retries.
func TestFailedRepairIsRetried(t *testing.T) {
	st := newStore(t)
	fw := firewalltest.New()
	e := firewallEngine(t, st, fw)
	id := hexID("half")
	gone := Proc{Pid: 2147483646, Start: 1} // no such PID
	c := portHolder(t, id, "half", State{Status: StatusCreated, Owner: gone})
	seed(t, st, c)
	fw.FailOn("RemovePorts "+id, errors.New("netlink: busy"))
	if err := e.Reconcile(); err != nil {
		t.Fatal(err)
	}
	var d dead
	err := st.View(func(tx store.Tx) (err error) {
		cur, err := getContainer(tx, id)
		if err != nil {
			return err
		}
		if cur.State.Owner != gone {
			t.Errorf("owner after a failed repair: %+v, want the dead one back", cur.State.Owner)
		}
		d, err = findDead(tx, false, false)
		return err
	})
	if err != nil || !slices.Contains(d.ids, id) {
		t.Fatalf("after a failed repair the record is %v, not found dead again (%v)", err, d.ids)
	}
	// FailOn fails one call: the next reconcile's repair succeeds.
	if err := e.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if err := st.View(func(tx store.Tx) error { _, err := getContainer(tx, id); return err }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after the second reconcile: %v, want the record gone", err)
	}
}

// failingRemovePorts is a firewall whose RemovePorts always fails, and
// counts its calls.
type failingRemovePorts struct {
	*firewalltest.Recorder
	calls int
}

func (f *failingRemovePorts) RemovePorts(string, []firewall.PortMapping) error {
	f.calls++
	return errors.New("netlink: busy")
}

// A half-made container whose teardown keeps failing costs a run one
// repair, not three: once only what the run tried is left, it goes ahead.
func TestReserveTriesAStuckRepairOnce(t *testing.T) {
	st := newStore(t)
	fw := &failingRemovePorts{Recorder: firewalltest.New()}
	e := firewallEngine(t, st, fw)
	stuck := portHolder(t, hexID("stuck"), "stuck", State{Status: StatusCreated, Owner: Proc{Pid: 2147483646, Start: 1}})
	seed(t, st, stuck)
	if _, _, err := e.reserve(hexID("run"), &RunOptions{Name: "web", Network: ModeHost, Args: []string{"true"}}, nil); err != nil {
		t.Fatalf("reserve: %v", err)
	}
	if fw.calls != 1 {
		t.Errorf("the stuck container's teardown was tried %d times, want once", fw.calls)
	}
}

// firewallEngine is an engine over st and fw, with private directories.
func firewallEngine(t *testing.T, st store.Store, fw firewall.Firewall) *Engine {
	return &Engine{st: st, fw: fw, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: t.TempDir()}}
}

// portHolder is a container in state st whose namespace file is gone and
// that publishes host port 8080: undoing it reaches only the firewall.
func portHolder(t *testing.T, id, name string, st State) *Container {
	return &Container{ID: id, Name: name, Dir: filepath.Join(t.TempDir(), name), OwnsNetns: true, Netns: filepath.Join(t.TempDir(), "gone"),
		State: st,
		Ports: []firewall.PortMapping{{Network: "n", HostPort: 8080, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.0.0.2"), ContainerPort: 80}}}
}

// A container on internal networks only has an isolated DNS record: the
// embedded server forwards none of its queries. Any other network (the
// default one included) gives it a way out, and its queries go upstream.
func TestDNSRecordIsolated(t *testing.T) {
	st := newStore(t)
	closed, open := testNetwork(), testNetwork()
	closed.Name, closed.DNS, closed.Internal = "closed", true, true
	open.Name, open.DNS = "open", true
	if err := st.Update(func(tx store.Tx) error {
		return errors.Join(putJSON(tx, bucketNetworks, closed.Name, closed), putJSON(tx, bucketNetworks, open.Name, open))
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		nets []string
		want bool
	}{
		{[]string{"closed"}, true},
		{[]string{"closed", "open"}, false},
		{[]string{"closed", ModeBridge}, false},
		{[]string{"open"}, false},
	} {
		c := &Container{ID: hexID("x"), Name: "x", State: State{Status: StatusRunning}}
		for _, n := range tc.nets {
			c.Endpoints = append(c.Endpoints, Endpoint{Network: n})
		}
		var r dnsRecord
		err := st.Update(func(tx store.Tx) error {
			if err := putDNS(tx, c); err != nil {
				return err
			}
			return getJSON(tx, bucketDNS, c.ID, &r)
		})
		if err != nil {
			t.Fatalf("%v: %v", tc.nets, err)
		}
		if r.Isolated != tc.want {
			t.Errorf("on %v: Isolated = %v, want %v", tc.nets, r.Isolated, tc.want)
		}
	}
}

// After a reboot every PID in the live index is of a dead process, though
// the new boot's processes reuse them: the first reconcile checks start
// times, repairs, and records the boot; the quick check does from then on.
func TestReconcileAfterReboot(t *testing.T) {
	if bootID() == "" {
		t.Skip("no /proc/sys/kernel/random/boot_id to tell boots apart")
	}
	self, _ := runner.StartTime(os.Getpid())
	reused := fmt.Sprintf("%d:%d", os.Getpid(), self+1) // this PID, another process's start
	for _, tc := range []struct {
		name, boot string
		kept       bool
	}{
		{"another boot", "0aa0-another-boot", false},
		{"a store from before boots were recorded", "", false},
		{"this boot: the quick check", bootID(), true},
	} {
		st := newStore(t)
		if err := st.Update(func(tx store.Tx) error {
			if tc.boot != "" {
				if err := tx.Put(bucketMeta, "boot", []byte(tc.boot)); err != nil {
					return err
				}
			}
			return tx.Put(bucketLive, "a1", []byte(reused))
		}); err != nil {
			t.Fatal(err)
		}
		if err := (&Engine{st: st}).Reconcile(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_ = st.View(func(tx store.Tx) error {
			_, err := tx.Get(bucketLive, "a1")
			if kept := err == nil; kept != tc.kept {
				t.Errorf("%s: live entry kept %v, want %v", tc.name, kept, tc.kept)
			}
			if b, _ := tx.Get(bucketMeta, "boot"); string(b) != bootID() {
				t.Errorf("%s: boot recorded %q, want this boot's", tc.name, b)
			}
			return nil
		})
	}
}

// A store from before the schema was recorded is brought up to date by the
// first command: the indexes a newer knit keeps are filled for the records
// an older one wrote. A store of a newer schema is refused.
func TestMigrate(t *testing.T) {
	st := newStore(t)
	e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"}}
	x := &Container{ID: hexID("a1"), Name: "x", State: State{Status: StatusRunning, Supervisor: selfProc()}}
	j := &Container{ID: hexID("a2"), Name: "j", JoinedTo: x.ID, State: State{Status: StatusCreated, Owner: selfProc()}}
	l := &Container{ID: hexID("a3"), Name: "l", Links: []Link{{TargetID: x.ID, Name: "x", Alias: "x"}},
		State: State{Status: StatusRunning, Supervisor: selfProc()}}
	// As an older knit wrote them: the records alone.
	if err := st.Update(func(tx store.Tx) error {
		return errors.Join(putJSON(tx, bucketContainers, x.ID, x), putJSON(tx, bucketContainers, j.ID, j), putJSON(tx, bucketContainers, l.ID, l))
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.Reconcile(); err != nil {
		t.Fatal(err)
	}
	err := st.View(func(tx store.Tx) error {
		if v, err := storeSchema(tx); err != nil || v != currentSchema {
			t.Errorf("schema after the first command: %d, %v; want %d", v, err, currentSchema)
		}
		if !isLinked(tx, x.ID) {
			t.Error("the linker is not in linkedby/ after the migration")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if j, _ := e.joiner(x); j == nil {
		t.Error("the joiner being set up is not in joins/ after the migration")
	}
	if err := st.Update(func(tx store.Tx) error { return tx.Put(bucketMeta, "schema", []byte("99")) }); err != nil {
		t.Fatal(err)
	}
	if err := e.Reconcile(); err == nil || !strings.Contains(err.Error(), "newer knit") {
		t.Errorf("Reconcile of a schema-99 store: %v, want a refusal naming a newer knit", err)
	}
}

// failNthUpdate is a store whose nth write transaction from now fails.
type failNthUpdate struct {
	store.Store
	n int
}

func (s *failNthUpdate) Update(fn func(store.Tx) error) error {
	if s.n--; s.n == 0 {
		return errors.New("store: lock timeout")
	}
	return s.Store.Update(fn)
}

// A repair whose last step, forgetting the record, fails is a failed
// repair too: the record goes back to its dead owner for the next
// reconcile, instead of staying claimed by the repairer (a foreground run
// may live for days) while it holds its name, address and ports.
func TestRepairWhoseForgetFailsIsRetried(t *testing.T) {
	bolt := newStore(t)
	if err := bolt.Update(ensureSchema); err != nil {
		t.Fatal(err)
	}
	st := &failNthUpdate{Store: bolt}
	e := firewallEngine(t, st, firewalltest.New())
	id := hexID("half")
	gone := Proc{Pid: 2147483646, Start: 1} // no such PID
	seed(t, bolt, portHolder(t, id, "half", State{Status: StatusCreated, Owner: gone}))
	st.n = 2 // the repair's claim works, its forget fails
	_ = e.Reconcile()
	if err := bolt.View(func(tx store.Tx) error {
		cur, err := getContainer(tx, id)
		if err == nil && cur.State.Owner != gone {
			t.Errorf("owner after a repair whose forget failed: %+v, want the dead one back", cur.State.Owner)
		}
		return err
	}); err != nil {
		t.Fatalf("the record after a repair whose forget failed: %v, want it kept", err)
	}
	if err := e.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if err := bolt.View(func(tx store.Tx) error { _, err := getContainer(tx, id); return err }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after the next reconcile: %v, want the record gone", err)
	}
}

// After a reboot, a repair that gave its record back leaves the boot
// unrecorded: the next reconcile checks every record's boot again (a
// PID of this boot could pass for the dead owner's), and records it once
// nothing is left.
func TestRebootNotedOnceRepaired(t *testing.T) {
	if bootID() == "" {
		t.Skip("no /proc/sys/kernel/random/boot_id to tell boots apart")
	}
	bolt := newStore(t)
	if err := bolt.Update(func(tx store.Tx) error {
		return errors.Join(ensureSchema(tx), tx.Put(bucketMeta, "boot", []byte("0aa0-last-boot")))
	}); err != nil {
		t.Fatal(err)
	}
	st := &failNthUpdate{Store: bolt}
	e := firewallEngine(t, st, firewalltest.New())
	id := hexID("half")
	seed(t, bolt, portHolder(t, id, "half", State{Status: StatusCreated, Owner: Proc{Pid: 2147483646, Start: 1, Boot: "0aa0-last-boot"}}))
	boot := func() string {
		var b []byte
		_ = bolt.View(func(tx store.Tx) (err error) { b, err = tx.Get(bucketMeta, "boot"); return err })
		return string(b)
	}
	st.n = 2 // the repair's claim works, its forget fails: given back
	_ = e.Reconcile()
	if got := boot(); got == bootID() {
		t.Errorf("boot recorded as checked with a record of the last boot given back")
	}
	if err := e.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := boot(); got != bootID() {
		t.Errorf("boot after the repair: %q, want this one's", got)
	}
}

// After a reboot, a record of the last boot whose PID and start time are
// those of a process of this boot (a boot-time service starts its
// processes at the same PIDs and ticks every time) names a dead process
// all the same: the reconcile repairs the container (it has exited), and
// no signal reaches the namesake. A record of this boot naming the same
// process is left alone, also when it comes first in the live index.
func TestReconcileAfterRebootSparesTheNamesake(t *testing.T) {
	if bootID() == "" {
		t.Skip("no /proc/sys/kernel/random/boot_id to tell boots apart")
	}
	const last = "0aa0-last-boot"
	for _, tc := range []struct {
		name    string
		boots   []string // the records', in the live index's order
		running []bool
	}{
		{"a record of the last boot", []string{last}, []bool{false}},
		{"a record of this boot", []string{bootID()}, []bool{true}},
		{"one of each, this boot's first", []string{bootID(), last}, []bool{true, false}},
	} {
		namesake := exec.Command("sleep", "60")
		if err := namesake.Start(); err != nil {
			t.Fatal(err)
		}
		ended := make(chan struct{})
		go func() { _ = namesake.Wait(); close(ended) }()
		start, err := runner.StartTime(namesake.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		old := Proc{Pid: namesake.Process.Pid, Start: start, Boot: last}
		if alive(old) || killProc(old) {
			t.Errorf("%s: a process of the last boot is alive, or was killed", tc.name)
		}

		st := newStore(t)
		if err := st.Update(func(tx store.Tx) error {
			return errors.Join(ensureSchema(tx), tx.Put(bucketMeta, "boot", []byte(last)))
		}); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i, boot := range tc.boots {
			p := Proc{Pid: namesake.Process.Pid, Start: start, Boot: boot}
			ids = append(ids, hexID(fmt.Sprintf("b00%d", i)))
			seed(t, st, portHolder(t, ids[i], fmt.Sprintf("svc%d", i), State{Status: StatusRunning, Supervisor: p, Process: p}))
		}
		if err := firewallEngine(t, st, firewalltest.New()).Reconcile(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_ = st.View(func(tx store.Tx) error {
			for i, id := range ids {
				c, err := getContainer(tx, id)
				_, lerr := tx.Get(bucketLive, id)
				if running := err == nil && c.State.Status == StatusRunning && lerr == nil; running != tc.running[i] {
					t.Errorf("%s: record %d still running %v (%v, live entry: %v), want %v", tc.name, i, running, err, lerr, tc.running[i])
				}
			}
			return nil
		})
		select {
		case <-ended:
			t.Errorf("%s: the namesake process was killed", tc.name)
		case <-time.After(100 * time.Millisecond):
		}
		_ = namesake.Process.Kill()
		<-ended
	}
}

// The embedded server a container asks is on an open network's gateway
// when it has one (an internal network's forwards nothing), IPv4 before
// IPv6 (127.0.0.11 leads only to an IPv4 one); the order of networks
// decides among the rest.
func TestDNSServerChoice(t *testing.T) {
	net := func(name string, internal bool, subnets ...string) *Network {
		n := &Network{Network: driver.Network{Name: name, Internal: internal}, DNS: true}
		for _, p := range subnets {
			pfx := netip.MustParsePrefix(p)
			n.Subnets = append(n.Subnets, driver.Subnet{Prefix: pfx, Gateway: pfx.Addr().Next()})
		}
		return n
	}
	shut := net("shut", true, "10.1.0.0/24", "fd00:1::/64")
	open4, open6 := net("open4", false, "10.2.0.0/24"), net("open6", false, "fd00:2::/64")
	noDNS := net("nodns", false, "10.3.0.0/24")
	noDNS.DNS = false
	e := &Engine{dnsr: &fakeRedirector{}}
	for _, tc := range []struct {
		nets           []*Network
		server, target string
	}{
		{[]*Network{shut, open4}, "10.2.0.1", "10.2.0.1"},
		{[]*Network{shut, open6}, "fd00:2::1", "invalid IP"},
		{[]*Network{open6, open4}, "10.2.0.1", "10.2.0.1"},
		{[]*Network{shut}, "10.1.0.1", "10.1.0.1"},
		{[]*Network{noDNS, open6}, "fd00:2::1", "invalid IP"},
		{[]*Network{noDNS}, "invalid IP", "invalid IP"},
	} {
		var names []string
		for _, n := range tc.nets {
			names = append(names, n.Name)
		}
		server, _ := dnsServer(tc.nets)
		if got := server.String(); got != tc.server {
			t.Errorf("%v: server %s, want %s", names, got, tc.server)
		}
		if got := e.dnsRedirectTarget(tc.nets).String(); got != tc.target {
			t.Errorf("%v: 127.0.0.11 leads to %s, want %s", names, got, tc.target)
		}
	}
}

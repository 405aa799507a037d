package engine

import (
	"errors"
	"fmt"
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
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store"
	"golang.org/x/sys/unix"
)

// busyReads is a store whose reads time out, as when another knit holds
// the file past the timeout, and that counts its writes.
type busyReads struct {
	store.Store
	updates int
}

func (s *busyReads) View(func(store.Tx) error) error {
	return errdefs.Unavailable("store is busy")
}

func (s *busyReads) Update(fn func(store.Tx) error) error {
	s.updates++
	return s.Store.Update(fn)
}

// A teardown that cannot read the attachment's network fails and keeps the
// record and the address: only a network that is gone lets it skip the
// link's removal. (Releasing the address while the veth still holds it
// would hand it out twice.)
func TestCNITeardownKeepsStateWhenTheNetworkCannotBeRead(t *testing.T) {
	st := &busyReads{Store: newStore(t)}
	e := &Engine{st: st}
	a := &CNIAttachment{ID: CNIAttachmentID("c1", "eth0"), Network: "knet"}
	err := e.cniTeardown(a)
	if errdefs.KindOf(err) != errdefs.KindUnavailable {
		t.Fatalf("teardown: %v, want the store's busy error", err)
	}
	if st.updates != 0 {
		t.Errorf("teardown wrote to the store %d times after failing to read the network", st.updates)
	}
}

// deadProc returns a process that has ended, as a Proc.
func deadProc(t *testing.T) Proc {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start, err := runner.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return Proc{Pid: cmd.Process.Pid, Start: start}
}

// awaitLockWaiter returns once some process waits for the flock on path
// (a "->" line in /proc/locks), or fails the test after 10 s.
func awaitLockWaiter(t *testing.T, path, what string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	suffix := fmt.Sprintf(":%d", st.Ino)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile("/proc/locks")
		if err != nil {
			t.Skip("no /proc/locks:", err)
		}
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) > 6 && f[1] == "->" && strings.HasSuffix(f[6], suffix) {
				return
			}
		}
	}
	t.Fatalf("%s never waited for the attachment's lock %s", what, path)
}

// attachmentLockPath is the file attachmentLock(id) locks.
func attachmentLockPath(t *testing.T, e *Engine, id string) string {
	t.Helper()
	unlock, err := e.attachmentLock(id)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	matches, _ := filepath.Glob(filepath.Join(e.paths.DataRoot, "locks", "cni-*.lock"))
	if len(matches) != 1 {
		t.Fatalf("lock files %q, want one", matches)
	}
	return matches[0]
}

// recordAttachment writes a's record.
func recordAttachment(t *testing.T, st store.Store, a *CNIAttachment) {
	t.Helper()
	if err := st.Update(func(tx store.Tx) error { return putJSON(tx, bucketCNI, a.ID, a) }); err != nil {
		t.Fatal(err)
	}
}

// underAnADD holds attachment id's lock, as an ADD in progress would, runs
// op (named what) meanwhile, waits until op waits for the lock, runs
// during (the ADD's work), releases the lock and returns op's error.
func underAnADD(t *testing.T, e *Engine, id, what string, op func() error, during func()) error {
	t.Helper()
	path := attachmentLockPath(t, e, id)
	unlock, err := e.attachmentLock(id)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- op() }()
	awaitLockWaiter(t, path, what)
	during()
	unlock()
	return <-done
}

// The concurrency test's failure: prune listed an attachment while its ADD
// was in progress, and by the time it found the ADD's process gone, the
// next ADD had remade the attachment; the teardown of the stale record
// took the new attachment's published port. GC decides again under the
// attachment's lock, which ADD holds throughout.
func TestCNIGCDecidesUnderTheAttachmentsLock(t *testing.T) {
	st := newStore(t)
	fw := firewalltest.New()
	e := firewallEngine(t, st, fw)
	id := CNIAttachmentID("c1", "eth0")
	ports := []firewall.PortMapping{{Network: "gone", HostPort: 8630, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.86.0.2"), ContainerPort: 80}}
	// Half-made: its ADD died (as far as GC can tell when it lists).
	recordAttachment(t, st, &CNIAttachment{ID: id, ContainerID: "c1", IfName: "eth0", Network: "gone", Ports: ports, Owner: deadProc(t)})
	if err := fw.AddPorts(id, ports); err != nil {
		t.Fatal(err)
	}
	var removed []string
	gc := func() (err error) {
		removed, err = e.CNIGC("", "", func(string, string) bool { return true })
		return err
	}
	// The next ADD completes the attachment again, its port published.
	err := underAnADD(t, e, id, "GC", gc, func() {
		recordAttachment(t, st, &CNIAttachment{ID: id, ContainerID: "c1", IfName: "eth0", Network: "gone", Ports: ports,
			Endpoint: Endpoint{Endpoint: driver.Endpoint{HostIf: "vethnew"}}})
	})
	if err != nil || len(removed) != 0 {
		t.Errorf("GC removed %q (%v), want nothing: the attachment is complete again", removed, err)
	}
	if calls := fw.Calls(); slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "RemovePorts") }) {
		t.Errorf("GC unpublished the new attachment's port: %q", calls)
	}
	if err := st.View(func(tx store.Tx) error { _, err := getAttachment(tx, id); return err }); err != nil {
		t.Errorf("the attachment's record: %v, want it kept", err)
	}
}

// prune's removal of firewall elements that no record owns waits for an
// attachment's lock: an ADD replacing the attachment has no record for a
// moment, and its new elements are not strays.
func TestPrunePortsDecidesUnderTheAttachmentsLock(t *testing.T) {
	st := newStore(t)
	fw := firewalltest.New()
	e := firewallEngine(t, st, fw)
	id := CNIAttachmentID("c1", "eth0")
	ports := []firewall.PortMapping{{Network: "gone", HostPort: 8630, Proto: "tcp", ContainerIP: netip.MustParseAddr("10.86.0.2"), ContainerPort: 80}}
	if err := fw.AddPorts(id, ports); err != nil { // what prune lists
		t.Fatal(err)
	}
	// An ADD between its replace and its record.
	prune := func() error { return e.prunePorts(map[string]*Container{}, &PruneReport{}) }
	err := underAnADD(t, e, id, "prune", prune, func() {
		recordAttachment(t, st, &CNIAttachment{ID: id, ContainerID: "c1", IfName: "eth0", Network: "gone", Ports: ports})
	})
	if err != nil {
		t.Fatal(err)
	}
	if owners, _ := fw.Owners(); !slices.Contains(owners, id) {
		t.Errorf("prune removed the elements of an attachment recorded while it waited: owners %q", owners)
	}
}

// strayLinks is a driver whose bridge has one veth, tagged with owner, and
// that records the links it is asked to remove.
type strayLinks struct {
	leaveRecorder
	hostIf, owner string
	removed       []string
}

func (d *strayLinks) Strays(_ *driver.Network, keep func(string, string) bool) ([]string, error) {
	if keep(d.hostIf, d.owner) {
		return nil, nil
	}
	return []string{d.hostIf}, nil
}

func (d *strayLinks) RemoveLink(name string) error {
	d.removed = append(d.removed, name)
	return nil
}

// prune's removal of links that no record owns waits for an attachment's
// lock too: the replacing ADD makes its veth under the old one's name.
func TestPruneLinksDecidesUnderTheAttachmentsLock(t *testing.T) {
	st := newStore(t)
	id := CNIAttachmentID("c1", "eth0")
	d := &strayLinks{hostIf: "veth53394c4", owner: id}
	e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: t.TempDir()},
		drivers: map[string]driver.Driver{"bridge": d}}
	n := &Network{Network: driver.Network{Name: "conc-cni", Driver: "bridge"}}
	prune := func() error { return e.pruneLinks(map[string]*Container{}, []*Network{n}, &PruneReport{}) }
	err := underAnADD(t, e, id, "prune", prune, func() {
		recordAttachment(t, st, &CNIAttachment{ID: id, ContainerID: "c1", IfName: "eth0", Network: "conc-cni"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.removed) != 0 {
		t.Errorf("prune removed %q, the link of an attachment recorded while it waited", d.removed)
	}
}

// joinRecorder is a driver that records the endpoints it joins.
type joinRecorder struct {
	leaveRecorder
	joined []string
}

func (d *joinRecorder) Join(_ *driver.Network, ep *driver.Endpoint, _ driver.Sandbox) error {
	d.joined = append(d.joined, ep.ContainerID+" "+ep.IfName)
	return nil
}

// ADD asks the request's Accept about the network it found before it
// attaches anything: a refusal leaves no record, address or link.
func TestCNIAddAsksAcceptFirst(t *testing.T) {
	st := newStore(t)
	d := &joinRecorder{}
	e := &Engine{st: st, fw: firewalltest.New(), cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"},
		drivers: map[string]driver.Driver{"bridge": d}}
	if err := st.Update(func(tx store.Tx) error {
		return putJSON(tx, bucketNetworks, "knet", dnsNetwork("knet", "10.9.0.0/24"))
	}); err != nil {
		t.Fatal(err)
	}
	netnsFile := "/proc/self/ns/net" // the test's sandbox (TestMain): no eth0
	refusal := errors.New("the configuration describes another network")
	var asked *Network
	_, _, err := e.CNIAdd(CNIRequest{Config: "c", ContainerID: "c1", IfName: "eth0", Netns: netnsFile,
		Network: NetworkCreateOptions{Name: "knet"}, DefaultRoute: true,
		Accept: func(n *Network) error { asked = n; return refusal }})
	if !errors.Is(err, refusal) {
		t.Fatalf("CNIAdd = %v, want Accept's refusal", err)
	}
	if asked == nil || asked.Name != "knet" {
		t.Errorf("Accept was asked about %v, want knet", asked)
	}
	if len(d.joined) != 0 {
		t.Errorf("joined %q before Accept refused", d.joined)
	}
	err = st.View(func(tx store.Tx) error {
		used, err := usedAddrs(tx, "knet")
		if len(used) != 0 {
			t.Errorf("addresses held on knet: %v, want none", used)
		}
		if _, aerr := getAttachment(tx, CNIAttachmentID("c1", "eth0")); !errors.Is(aerr, store.ErrNotFound) {
			t.Errorf("attachment record: %v, want none", aerr)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// portMappings on an internal network are not mapped (nothing outside
// reaches it), as netavark does; elsewhere the network's host-ip applies
// to a mapping that names no host address.
func TestCNIPortSpecs(t *testing.T) {
	ports := []CNIPort{{HostPort: 8080, ContainerPort: 80, Proto: "tcp"}}
	if got := cniPortSpecs(ports, &Network{Network: driver.Network{Internal: true}}); got != nil {
		t.Errorf("on an internal network: %+v, want none", got)
	}
	n := &Network{HostIP: netip.MustParseAddr("127.0.0.1")}
	got := cniPortSpecs(ports, n)
	if len(got) != 1 || got[0].HostIP != n.HostIP || got[0].HostPortFirst != 8080 || got[0].ContainerFirst != 80 {
		t.Errorf("cniPortSpecs = %+v", got)
	}
}

// STATUS counts a free address as ADD does: a network whose only address
// left is its router's default gateway (config default-gateway), which
// ADD never hands out, is full.
func TestCNIStatusAgreesWithADDOnTheDefaultGateway(t *testing.T) {
	st := newStore(t)
	e := firewallEngine(t, st, firewalltest.New())
	n := dnsNetwork("full", "10.9.0.0/30") // .1 the bridge, .2 the only host address
	n.Subnets[0].DefaultRoute = netip.MustParseAddr("10.9.0.2")
	if err := st.Update(func(tx store.Tx) error { return putJSON(tx, bucketNetworks, n.Name, n) }); err != nil {
		t.Fatal(err)
	}
	err := e.CNIStatus(NetworkCreateOptions{Name: "full"})
	if errdefs.KindOf(err) != errdefs.KindConflict || !strings.Contains(err.Error(), "no free address") {
		t.Errorf("CNIStatus = %v, want no free address", err)
	}
}

// STATUS of a network a live `network rm` is removing answers at once (50,
// being removed), where finishing the removal would wait for that
// command's lock (up to lockWait); one a crash left marked it finishes.
func TestCNIStatusDoesNotWaitForARemoval(t *testing.T) {
	st := newStore(t)
	e := firewallEngine(t, st, firewalltest.New())
	n := dnsNetwork("going", "10.9.0.0/24")
	n.Removing = true
	if err := st.Update(func(tx store.Tx) error { return putJSON(tx, bucketNetworks, n.Name, n) }); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockFile(e.networkLock(n.Name)) // the rm under way
	if err != nil {
		t.Fatal(err)
	}
	defer func(old time.Duration) { lockWait = old }(lockWait)
	lockWait = 3 * time.Second
	start := time.Now()
	err = e.CNIStatus(NetworkCreateOptions{Name: "going"})
	if took := time.Since(start); !errors.Is(err, errNetworkRemoving) || took > time.Second {
		t.Errorf("CNIStatus during a removal = %v after %v, want being removed at once", err, took)
	}
	unlock()
}

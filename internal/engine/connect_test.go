package engine

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/knit-dev/knit/internal/config"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
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

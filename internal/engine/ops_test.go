package engine

import (
	"errors"
	"os/exec"
	"slices"
	"testing"

	"github.com/knit-dev/knit/internal/firewall/firewalltest"
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store"
)

// Removing a stopped container touches the kernel only when stopping
// could not undo its network (State.Error): otherwise it is gone already,
// and the firewall is not even asked.
func TestRemoveStoppedTearsDownOnlyWhatIsLeft(t *testing.T) {
	for _, tc := range []struct {
		name, stopErr string
		wantCalls     []string
	}{
		{"stopped cleanly", "", nil},
		{"stop could not undo it", "unpublish ports: netlink: busy", []string{"RemovePorts " + hexID("x")}},
	} {
		st := newStore(t)
		fw := firewalltest.New()
		e := firewallEngine(t, st, fw)
		seed(t, st, portHolder(t, hexID("x"), "x", State{Status: StatusExited, Error: tc.stopErr}))
		if err := e.Remove("x", RemoveOptions{}); err != nil {
			t.Fatalf("%s: Remove: %v", tc.name, err)
		}
		if got := fw.Calls(); !slices.Equal(got, tc.wantCalls) {
			t.Errorf("%s: firewall calls %q, want %q", tc.name, got, tc.wantCalls)
		}
		if err := st.View(func(tx store.Tx) error { _, err := getContainer(tx, hexID("x")); return err }); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: the record after Remove: %v, want it gone", tc.name, err)
		}
	}
}

// startProc starts a process that sleeps until the test ends, and returns
// it as a Proc.
func startProc(t *testing.T) Proc {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	start, err := runner.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return Proc{Pid: cmd.Process.Pid, Start: start}
}

// awaitSupervisor returns once the supervisor has recorded the exit, while
// its process still runs (closing its sockets, say): it does not fall back
// to killing the container and finishing the run itself.
func TestAwaitSupervisorTakesTheRecordedExit(t *testing.T) {
	st := newStore(t)
	e := firewallEngine(t, st, firewalltest.New())
	sup, ctr := startProc(t), startProc(t)
	c := &Container{ID: hexID("run"), Name: "run", State: State{Status: StatusRunning, Supervisor: sup, Process: ctr}}
	seed(t, st, c)
	done := make(chan error, 1)
	go func() { done <- e.awaitSupervisor(c) }()
	// The supervisor records the exit (code 3) and lives on.
	if err := st.Update(func(tx store.Tx) error {
		cur, err := getContainer(tx, c.ID)
		if err != nil {
			return err
		}
		cur.State.Status, cur.State.ExitCode = StatusExited, 3
		return putContainer(tx, cur)
	}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("awaitSupervisor: %v", err)
	}
	if !alive(ctr) || !alive(sup) {
		t.Errorf("the container (alive %v) or the supervisor (alive %v) was killed: awaitSupervisor gave up waiting", alive(ctr), alive(sup))
	}
	var cur *Container
	if err := st.View(func(tx store.Tx) (err error) { cur, err = getContainer(tx, c.ID); return err }); err != nil {
		t.Fatal(err)
	}
	if cur.State.ExitCode != 3 || cur.State.Status != StatusExited {
		t.Errorf("state after awaitSupervisor: %+v, want the supervisor's exit (code 3)", cur.State)
	}
}

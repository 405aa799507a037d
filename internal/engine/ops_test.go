package engine

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/config"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall/firewalltest"
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store"
	"golang.org/x/sys/unix"
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

// awaitSupervisor returns once the supervisor has recorded the exit, or
// removed the record (--rm), while its process still runs (closing its
// sockets, say): not before, and without falling back to killing the
// container and finishing the run itself.
func TestAwaitSupervisorTakesTheRecordedExit(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(tx store.Tx, cur *Container) error
	}{
		{"exit recorded", func(tx store.Tx, cur *Container) error {
			cur.State.Status, cur.State.ExitCode = StatusExited, 3
			return putContainer(tx, cur)
		}},
		{"record removed (--rm)", func(tx store.Tx, cur *Container) error {
			return errors.Join(tx.Delete(bucketContainers, cur.ID), tx.Delete(bucketLive, cur.ID))
		}},
	} {
		st := newStore(t)
		e := firewallEngine(t, st, firewalltest.New())
		sup, ctr := startProc(t), startProc(t)
		c := &Container{ID: hexID("run"), Name: "run", State: State{Status: StatusRunning, Supervisor: sup, Process: ctr}}
		seed(t, st, c)
		done := make(chan error, 1)
		go func() { done <- e.awaitSupervisor(c) }()
		time.Sleep(20 * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("%s: awaitSupervisor returned (%v) while the run was still recorded as running", tc.name, err)
		default:
		}
		// The supervisor ends the run in the store and lives on.
		if err := st.Update(func(tx store.Tx) error {
			cur, err := getContainer(tx, c.ID)
			if err != nil {
				return err
			}
			return tc.end(tx, cur)
		}); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("%s: awaitSupervisor: %v", tc.name, err)
		}
		if !alive(ctr) || !alive(sup) {
			t.Errorf("%s: the container (alive %v) or the supervisor (alive %v) was killed: awaitSupervisor gave up waiting", tc.name, alive(ctr), alive(sup))
		}
	}
}

// A supervisor that is gone, even one whose PID another process has
// taken since, leaves its run to the waiting command: it is repaired (the
// container killed, the exit recorded) before awaitSupervisor returns.
func TestAwaitSupervisorRepairsWhenTheSupervisorIsGone(t *testing.T) {
	st := newStore(t)
	e := firewallEngine(t, st, firewalltest.New())
	other, ctr := startProc(t), startProc(t)
	gone := Proc{Pid: other.Pid, Start: other.Start + 1} // its PID, now another process's
	c := &Container{ID: hexID("orphan"), Name: "orphan", State: State{Status: StatusRunning, Supervisor: gone, Process: ctr}}
	seed(t, st, c)
	if err := e.awaitSupervisor(c); err != nil {
		t.Fatalf("awaitSupervisor: %v", err)
	}
	cur, err := e.get(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cur.State.Status != StatusExited || cur.State.ExitCode != exitKilled {
		t.Errorf("after awaitSupervisor: status %s, exit %d; want exited, %d", cur.State.Status, cur.State.ExitCode, exitKilled)
	}
	if runner.WaitExit(ctr.Pid, time.Second); alive(ctr) {
		t.Error("the container's process outlived its repair")
	}
	if !alive(other) {
		t.Error("the process that took the supervisor's PID was killed")
	}
}

// A command that will change the firewall checks it first: when it cannot
// be used, it stops before it reserves or changes anything.
func TestCommandsCheckTheFirewallFirst(t *testing.T) {
	for name, op := range map[string]func(e *Engine) error{
		"run": func(e *Engine) error {
			_, err := e.Create(RunOptions{Args: []string{"true"}, Name: "web", Network: ModeBridge})
			return err
		},
		"network create":  func(e *Engine) error { _, err := e.CreateNetwork(NetworkCreateOptions{Name: "n"}); return err },
		"network rm":      func(e *Engine) error { return e.RemoveNetwork("n") },
		"network prune":   func(e *Engine) error { _, err := e.PruneNetworks(nil); return err },
		"network connect": func(e *Engine) error { return e.Connect("n", "web", ConnectOptions{}) },
	} {
		st := newStore(t)
		fw := firewalltest.New()
		e := firewallEngine(t, st, fw)
		fw.FailOn("Check", errors.New("netlink: protocol not supported"))
		err := op(e)
		if !errors.Is(err, ErrFirewallUnusable) || !strings.Contains(err.Error(), `"iptables": false`) {
			t.Errorf("%s with an unusable firewall: %v, want ErrFirewallUnusable and how to do without", name, err)
		}
		var cs []*Container
		var ns []*Network
		if err := st.View(func(tx store.Tx) (err error) {
			if cs, err = listContainers(tx); err == nil {
				ns, err = listNetworks(tx)
			}
			return err
		}); err != nil || len(cs) != 0 || len(ns) != 0 {
			t.Errorf("%s: %d containers and %d networks recorded after the refusal (%v), want none", name, len(cs), len(ns), err)
		}
		if calls := fw.Calls(); len(calls) != 0 {
			t.Errorf("%s: firewall calls after the refusal: %q", name, calls)
		}
	}
}

// A lock file deleted by its exclusive holder (a network's, once the
// network is gone) while another waits for it: the waiter ends up holding
// the lock of the file at the path, not of the deleted one, so a third
// locker still has to wait for it.
func TestLockFileDeletedWhileWaited(t *testing.T) {
	defer func(d time.Duration) { lockWait = d }(lockWait)
	path := filepath.Join(t.TempDir(), "locks", "network-x.lock")
	unlockA, err := lockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func(), 1)
	go func() {
		u, err := lockFileShared(path)
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	time.Sleep(100 * time.Millisecond) // the waiter has opened the file and waits
	removeLockFile(path)
	unlockA()
	unlockB := <-got
	if unlockB == nil {
		t.Fatal("the waiter got no lock")
	}
	lockWait = 100 * time.Millisecond
	if u, err := lockFile(path); errdefs.KindOf(err) != errdefs.KindUnavailable {
		if u != nil {
			u()
		}
		t.Errorf("an exclusive lock while the waiter holds a shared one: %v, want busy", err)
	}
	unlockB()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the lock file at the path: %v", err)
	}
}

// A lock another process holds past lockWait is an error that says so,
// not a wait for ever.
func TestLockFileGivesUp(t *testing.T) {
	defer func(d time.Duration) { lockWait = d }(lockWait)
	lockWait = 50 * time.Millisecond
	path := filepath.Join(t.TempDir(), "x.lock")
	holder := exec.Command("flock", "-o", path, "sleep", "5") // -o: flock(1) alone holds it
	if err := holder.Start(); err != nil {
		t.Skip("no flock(1):", err)
	}
	defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
	// Until flock(1) holds it.
	for i := 0; ; i++ {
		f, _ := os.Open(path)
		busy := f != nil && unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB) != nil
		if f != nil {
			f.Close()
		}
		if busy {
			break
		}
		if i == 500 {
			t.Fatal("flock(1) never took the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := lockFile(path); errdefs.KindOf(err) != errdefs.KindUnavailable || !strings.Contains(err.Error(), "busy") {
		t.Errorf("lockFile of a held lock = %v, want busy", err)
	}
	_ = holder.Process.Kill()
	_ = holder.Wait()
	unlock, err := lockFile(path)
	if err != nil {
		t.Fatalf("lockFile once free: %v", err)
	}
	unlock()
}

// A container:X run counts as X's joiner from its reservation on, not only
// once it runs: it may enter X's namespace at any moment while it is set
// up, and X's teardown must then delete its links itself (the namespace,
// and the veth and address in it, live on with the joiner).
func TestJoinerBeingSetUp(t *testing.T) {
	st := newStore(t)
	e := &Engine{st: st}
	x := &Container{ID: hexID("x"), Name: "x", State: State{Status: StatusRunning}}
	j := &Container{ID: hexID("j"), Name: "j", JoinedTo: x.ID, State: State{Status: StatusCreated, Owner: selfProc()}}
	seed(t, st, x, j)
	if got, err := e.joiner(x); err != nil || got == nil || got.ID != j.ID {
		t.Errorf("joiner of x with j being set up = %v, %v; want j", got, err)
	}
	j.State = State{Status: StatusExited}
	seed(t, st, j)
	if got, err := e.joiner(x); err != nil || got != nil {
		t.Errorf("joiner of x with j exited = %v, %v; want none", got, err)
	}
}

// rm -f of a container being set up kills the command setting it up, but
// not another knit that claimed the record to remove it (an rm -f, or an
// exec whose reconcile repairs a dead run): it waits for that one instead.
func TestRemoveForceWaitsForAClaimer(t *testing.T) {
	st := newStore(t)
	e := &Engine{st: st, cfg: &config.Config{}, paths: Paths{DataRoot: t.TempDir(), ExecRoot: "/dev/null/run"}}
	claimer := startProc(t)
	c := &Container{ID: hexID("fff"), Name: "half", Dir: filepath.Join(t.TempDir(), "half"),
		State: State{Status: StatusCreated, Owner: claimer, Claimed: true}}
	seed(t, st, c)
	if err := e.Remove("half", RemoveOptions{}); errdefs.KindOf(err) != errdefs.KindConflict || !strings.Contains(err.Error(), "is removing it") {
		t.Errorf("rm without -f: %v, want a conflict naming the remover", err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Remove("half", RemoveOptions{Force: true}) }()
	select {
	case err := <-done:
		t.Fatalf("rm -f returned (%v) while the claimer still removes the container", err)
	case <-time.After(200 * time.Millisecond):
	}
	if !alive(claimer) {
		t.Fatal("rm -f killed the knit that claimed the container")
	}
	// The claimer finishes: the record goes.
	if err := st.Update(func(tx store.Tx) error { return tx.Delete(bucketContainers, c.ID) }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("rm -f once the claimer removed the container: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("rm -f did not return once the record was gone")
	}
}

// tailOffset finds where the last n lines begin, across read blocks, with
// or without a newline at the end.
func TestTailOffset(t *testing.T) {
	long := strings.Repeat("x", 40<<10) // longer than a read block
	for _, tc := range []struct {
		content string
		n       int
		want    string
	}{
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\nc\n", 3, "a\nb\nc\n"},
		{"a\nb\nc\n", 10, "a\nb\nc\n"},
		{"a\nb\nc\n", 0, ""},
		{"", 5, ""},
		{"\n\n", 1, "\n"},
		{"first\n" + long + "\nlast\n", 2, long + "\nlast\n"},
	} {
		path := filepath.Join(t.TempDir(), "log")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		off, err := tailOffset(f, tc.n)
		f.Close()
		if err != nil || tc.content[off:] != tc.want {
			t.Errorf("last %d lines of %.20q: from %d (%v), want %.20q", tc.n, tc.content, off, err, tc.want)
		}
	}
}

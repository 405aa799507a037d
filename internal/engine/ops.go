package engine

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/logfile"
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store"
)

// Containers lists every container, newest first, after reconciling.
func (e *Engine) Containers() ([]*Container, error) {
	if err := e.ReconcileStrict(); err != nil {
		return nil, err
	}
	var all []*Container
	err := e.st.View(func(tx store.Tx) (err error) { all, err = listContainers(tx); return err })
	sort.Slice(all, func(i, j int) bool { return all[i].Created.After(all[j].Created) })
	return all, err
}

// Container returns one container by name, ID or unique ID prefix.
func (e *Engine) Container(ref string) (*Container, error) {
	if err := e.Reconcile(); err != nil {
		return nil, err
	}
	return e.get(ref)
}

func (e *Engine) get(ref string) (*Container, error) {
	var c *Container
	err := e.st.View(func(tx store.Tx) (err error) { c, err = lookupContainer(tx, ref); return err })
	if errors.Is(err, store.ErrNotFound) {
		return nil, errdefs.NotFound("no such container: %s", ref)
	}
	return c, err
}

// Network returns one network's record.
func (e *Engine) Network(name string) (*Network, error) { return e.lookupNetwork(name) }

// Kill sends sig to a running container's process.
func (e *Engine) Kill(ref string, sig syscall.Signal) (*Container, error) {
	c, err := e.Container(ref)
	if err != nil {
		return nil, err
	}
	stopping := c.Running() && mayBeRestarted(c) && stopsRestarts(c, sig)
	if stopping {
		if c, err = e.requestStop(c.ID); err != nil {
			return nil, err
		}
		if c.betweenRuns() {
			return c, nil // its supervisor sees the request and starts nothing
		}
	}
	if c.betweenRuns() {
		return nil, errRestarting(c)
	}
	var h *runner.Handle
	ok := c.Running()
	if ok {
		h, ok = openProc(c.State.Process)
	}
	if !ok && stopping && c.Running() {
		// It exited before the request: its supervisor sees the request
		// and does not restart it, which is what this kill asked.
		return c, nil
	}
	if !ok {
		return nil, errdefs.Conflict("cannot kill container %s: %v", c.Name, errNotRunning)
	}
	defer h.Close()
	if err := h.Signal(sig); err != nil {
		return nil, fmt.Errorf("signal %s: %w", c.Name, err)
	}
	return c, nil
}

// Stop sends sig, waits up to timeout (-1 s: for ever) for the container to
// exit, then sends SIGKILL; it returns once the supervisor has released the
// network. A 0 sig and a nil timeout are the container's own (its run's
// --stop-signal and --stop-timeout), else SIGTERM and 10 seconds, as in
// Docker. Stopping a stopped container is not an error, as in Docker.
func (e *Engine) Stop(ref string, timeout *time.Duration, sig syscall.Signal) (*Container, error) {
	c, err := e.Container(ref)
	if err != nil || !c.Running() {
		return c, err
	}
	if mayBeRestarted(c) {
		// The process to signal is the one named once no restart can
		// replace it.
		if c, err = e.requestStop(c.ID); err != nil || !c.Running() {
			return c, err
		}
	}
	stopProcess(c, timeout, sig)
	return c, e.awaitSupervisor(c)
}

// stopProcess sends c's process sig, waits up to timeout (-1 s: for ever)
// for it to exit, then sends SIGKILL; a 0 sig and a nil timeout are the
// container's own (--stop-signal, --stop-timeout), else SIGTERM and 10 s.
func stopProcess(c *Container, timeout *time.Duration, sig syscall.Signal) {
	if sig == 0 {
		sig = syscall.Signal(c.Spec.StopSignal)
	}
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	wait := stopWait(c, timeout)
	// Through a pidfd: the PID of a container that exits during the wait
	// may be another process's by the SIGKILL.
	if h, ok := openProc(c.State.Process); ok {
		_ = h.Signal(sig)
		if !h.WaitExit(wait) {
			_ = h.Signal(syscall.SIGKILL)
		}
		h.Close()
	}
}

// stopWait is how long a stop waits before SIGKILL (negative: for ever):
// timeout, else the container's --stop-timeout, else 10 s.
func stopWait(c *Container, timeout *time.Duration) time.Duration {
	switch {
	case timeout != nil:
		return *timeout
	case c.Spec.StopTimeout != nil:
		return time.Duration(*c.Spec.StopTimeout) * time.Second
	}
	return 10 * time.Second
}

// restartWait bounds how long Restart waits for the supervisor to start
// the command again once the old one is gone.
const restartWait = 10 * time.Second

// Restart stops a detached container's command as Stop does, and its
// supervisor starts it again at once, in the same network namespace, on
// the same endpoints, as docker restart; it returns once the new command
// runs. A container that is not running cannot be started again by knit
// yet (it runs once), nor one that a foreground knit run supervises.
func (e *Engine) Restart(ref string, timeout *time.Duration, sig syscall.Signal) (*Container, error) {
	c, err := e.Container(ref)
	if err != nil {
		return nil, err
	}
	switch {
	case !c.Running():
		return nil, errdefs.Conflict("container %s is not running, and knit cannot start a stopped container again yet: run a new one", c.Name)
	case !c.Spec.Detach:
		return nil, errdefs.Conflict("container %s runs in the foreground of a knit run, which cannot start it again: only a detached container (run -d) restarts", c.Name)
	}
	err = e.st.Update(func(tx store.Tx) error {
		cur, err := getContainer(tx, c.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return errdefs.NotFound("no such container: %s", ref)
		case err != nil:
			return err
		case !cur.Running() || cur.State.StopRequested:
			return errdefs.Conflict("container %s is stopping", cur.Name)
		}
		cur.State.RestartFor = cur.State.Process
		if wait := stopWait(cur, timeout); wait >= 0 { // the request's end: the stop's, then the start's
			cur.State.RestartBy = time.Now().Add(wait + restartWait).UTC()
		}
		c = cur
		return putContainer(tx, cur)
	})
	if err != nil {
		return nil, err
	}
	old := c.State.Process
	if !c.State.Restarting { // else its supervisor cuts its back-off short
		stopProcess(c, timeout, sig)
	}
	deadline := time.Now().Add(restartWait)
	for {
		cur, err := e.Container(c.ID)
		if err != nil {
			return nil, err
		}
		switch {
		case !cur.Running():
			return cur, errdefs.Conflict("container %s stopped instead of restarting (exit code %d)", cur.Name, cur.State.ExitCode)
		case !cur.State.Process.is(old) && cur.State.RestartFor.Pid == 0:
			return cur, nil // started again (a command that ends at once may be restarting already)
		case time.Now().After(deadline):
			return cur, errdefs.Unavailable("container %s: its supervisor did not start it again within %s", cur.Name, restartWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitSupervisor waits for the supervisor to record the exit; if it does
// not within a few seconds (it was killed, or it hangs), the caller finishes
// the job itself, which is idempotent.
//
// It waits for the record, not for the supervisor's process to end: a
// process that deleted a firewall element waits at its exit, closing its
// netfilter socket, for the kernel to free the element after an RCU grace
// period (5–15 ms here). What the supervisor has left to do by then is the
// DNS server's resync, which the caller does too (and, for a container
// with linkers, a second relink for a linker made during the exit).
func (e *Engine) awaitSupervisor(c *Container) error {
	sup := c.State.Supervisor
	if sup.Pid == os.Getpid() {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for wait := 300 * time.Microsecond; time.Now().Before(deadline); wait = min(2*wait, 2*time.Millisecond) {
		if !alive(sup) {
			// Dead before it recorded the exit, or after, before its
			// DNS resync: repair checks the start time (its PID may be
			// another process's by now), and the resync is done here.
			err := e.repair(c.ID)
			if ended, rerr := e.runEnded(c.ID); rerr == nil && ended {
				e.dnsChanged(c)
			}
			return err
		}
		if ended, err := e.runEnded(c.ID); err != nil || ended {
			if ended {
				e.dnsChanged(c) // its name must not answer once stop returns
			}
			return err
		}
		runner.WaitExit(sup.Pid, wait) // returns at once if it exits
	}
	// The process the record names now: a restart may have replaced c's.
	if cur, err := e.get(c.ID); err == nil && cur.Running() {
		killProc(cur.State.Process)
	}
	killProc(c.State.Process)
	return e.finish(c.ID, exitKilled)
}

// Processes returns the host PIDs of every process in a running
// container's PID namespace (its command, an --init, what exec started),
// for knit top: the processes whose /proc/PID/ns/pid is its PID 1's.
func (e *Engine) Processes(ref string) ([]int, error) {
	c, err := e.Container(ref)
	if err != nil {
		return nil, err
	}
	if c.betweenRuns() {
		return nil, errRestarting(c)
	}
	h, ok := openProc(c.State.Process)
	if !c.Running() || !ok {
		return nil, errdefs.Conflict("container %s is not running", c.Name)
	}
	defer h.Close()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.State.Process.Pid))
	if err == nil && !alive(c.State.Process) { // its PID another's by the read
		err = errors.New("it stopped")
	}
	if err != nil {
		return nil, fmt.Errorf("container %s: its PID namespace: %w", c.Name, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if other, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && other == ns {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// OpenRoot opens the root directory of container ref's filesystem, for
// knit cp: a running container's through /proc/PID/root (its own mount
// namespace, with its /etc files and mounts), a stopped one's --rootfs
// directory (the host's root for one without).
func (e *Engine) OpenRoot(ref string) (*os.Root, error) {
	c, err := e.Container(ref)
	if err != nil {
		return nil, err
	}
	switch {
	case c.betweenRuns():
		return nil, errRestarting(c)
	case !c.Running():
		return os.OpenRoot(cmp.Or(c.Spec.Rootfs, "/"))
	}
	h, ok := openProc(c.State.Process)
	if !ok {
		return nil, errdefs.Conflict("container %s is stopping", c.Name)
	}
	defer h.Close()
	r, err := os.OpenRoot(fmt.Sprintf("/proc/%d/root", c.State.Process.Pid))
	if err == nil && !alive(c.State.Process) { // its PID another's by the open
		r.Close()
		return nil, errdefs.Conflict("container %s is stopping", c.Name)
	}
	return r, err
}

// exitNoteKeep is how long the exit code of a --rm container stays for
// knit wait after its removal.
const exitNoteKeep = time.Minute

func (e *Engine) exitsDir() string { return filepath.Join(e.paths.ExecRoot, "exits") }

// noteExit keeps the exit code of detached --rm container id, removed
// now, for a minute: a knit wait that began before the removal prints it,
// as docker wait does. The notes older than that go at each new one. A
// note that cannot be written costs only that wait its code.
func (e *Engine) noteExit(id string, code int) {
	dir := e.exitsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	if f, err := os.CreateTemp(dir, ".note-*"); err == nil { // each writer its own
		_, werr := f.WriteString(strconv.Itoa(code))
		if cerr := f.Close(); werr == nil && cerr == nil {
			_ = os.Rename(f.Name(), filepath.Join(dir, id)) // whole, or not at all
		} else {
			_ = os.Remove(f.Name())
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, d := range entries {
		if fi, err := d.Info(); err == nil && time.Since(fi.ModTime()) > exitNoteKeep {
			_ = os.Remove(filepath.Join(dir, d.Name()))
		}
	}
}

// exitNote reads the exit code noteExit kept for container id.
func (e *Engine) exitNote(id string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(e.exitsDir(), id))
	if err != nil {
		return 0, false
	}
	code, err := strconv.Atoi(string(b))
	return code, err == nil
}

// waitPoll bounds each wait of Wait on a supervisor: it stays through the
// container's restarts, and a container being set up has none yet.
const waitPoll = 100 * time.Millisecond

// Wait blocks until the container has stopped, through its restarts, and
// returns its exit code, as docker wait: a detached --rm container's from
// the note its supervisor left (noteExit); one removed otherwise (rm -f)
// is an error that says so.
func (e *Engine) Wait(ref string) (int, error) {
	c, err := e.Container(ref)
	for err == nil && c.State.Status != StatusExited {
		start := time.Now()
		if sup := c.State.Supervisor; c.Running() && alive(sup) {
			runner.WaitExit(sup.Pid, waitPoll) // at once when it exits
		}
		time.Sleep(waitPoll/10 - time.Since(start)) // never a busy loop
		// Reconciled, strictly, once its supervisor or creator is gone (a
		// zombie, or its PID another process's by now): the container is
		// repaired. Else the record is all there is to read.
		if c.Running() && !alive(c.State.Supervisor) || c.State.Status == StatusCreated && !alive(c.State.Owner) {
			if err := e.ReconcileStrict(); err != nil {
				return 0, err
			}
		}
		cur, cerr := e.get(c.ID)
		if errdefs.KindOf(cerr) == errdefs.KindNotFound {
			if code, ok := e.exitNote(c.ID); ok { // --rm: as its supervisor noted it
				return code, nil
			}
			return 0, errdefs.NotFound("container %s was removed before its exit code could be read", c.Name)
		}
		c, err = cur, cerr
	}
	if err != nil {
		return 0, err
	}
	return c.State.ExitCode, nil
}

// runEnded reports whether the store shows container id's run over: its
// record gone (--rm) or no longer running.
func (e *Engine) runEnded(id string) (bool, error) {
	var cur *Container
	err := e.st.View(func(tx store.Tx) (err error) { cur, err = getContainer(tx, id); return err })
	if errors.Is(err, store.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return !cur.Running(), nil
}

// RemoveOptions tunes Remove.
type RemoveOptions struct {
	Force bool // kill a running container first, and ignore joiners
}

// Remove deletes a container: refused while it runs, or while another
// running container shares its network namespace, unless Force.
func (e *Engine) Remove(ref string, o RemoveOptions) error {
	c, err := e.Container(ref)
	if err != nil {
		return err
	}
	if c.Running() && !o.Force {
		return errdefs.Conflict("cannot remove running container %s: stop the container before removing or use -f", c.Name)
	}
	// A created container's owner is the run setting it up, or a command
	// removing it (Claimed): asked again after each wait, since a run
	// stopped may have given way to another rm -f's claim.
	for c.State.Status == StatusCreated && alive(c.State.Owner) && c.State.Owner.Pid != os.Getpid() {
		switch {
		case c.State.Claimed && !o.Force:
			return errdefs.Conflict("cannot remove container %s: knit PID %d is removing it; retry", c.Name, c.State.Owner.Pid)
		case !o.Force:
			return errdefs.Conflict("cannot remove container %s: it is still being set up (by PID %d); retry, or use -f", c.Name, c.State.Owner.Pid)
		case c.State.Claimed:
			// Another rm -f, or a repair: its work is this one's, and
			// killing it would cut that short (and kill, say, an exec
			// that met the dead run in its reconcile).
			if c, err = e.awaitClaim(c); c == nil || err != nil {
				return err
			}
		default:
			if c, err = e.stopOwner(c); c == nil || err != nil {
				return err
			}
		}
	}
	if !o.Force {
		if j, err := e.joiner(c); err != nil {
			return err
		} else if j != nil {
			return errdefs.Conflict("cannot remove container %s: container %s uses its network namespace (--network container:%s); remove %s first or use -f", c.Name, j.Name, c.Name, j.Name)
		}
	}
	for {
		if c.Running() && mayBeRestarted(c) {
			// Before each kill, for a supervisor that recorded its
			// start meanwhile too: it must not start the command again.
			cur, err := e.requestStop(c.ID)
			if errdefs.KindOf(err) == errdefs.KindNotFound {
				return nil // removed meanwhile
			} else if err != nil {
				return err
			}
			c = cur
		}
		if c.Running() {
			killProc(c.State.Process)
			if err := e.awaitSupervisor(c); err != nil {
				return err
			}
		}
		cur, err := e.claimForRemoval(c.ID)
		if errdefs.KindOf(err) == errdefs.KindNotFound {
			return nil // --rm got there first
		} else if err != nil {
			return err
		}
		// The supervisor of a `run -d` whose command was killed above may
		// have recorded its start meanwhile: its process goes first.
		if cur.Running() && !cur.State.Process.is(c.State.Process) {
			c = cur
			continue
		}
		c = cur
		break
	}
	if err := e.teardownKernel(c); err != nil {
		return err
	}
	return e.forget(c)
}

// ownerWait bounds how long rm -f waits for the run setting a container up
// to undo its setup and exit (a variable for the tests).
var ownerWait = 10 * time.Second

// stopOwner ends the run setting the created container c up: SIGTERM,
// which a run -d holds until its setup is done, then undoes it and
// reports the removal; SIGKILL if the record is still that run's after
// ownerWait (the next command repairs what it left). It returns the record
// as it is then, nil once it is gone.
func (e *Engine) stopOwner(c *Container) (*Container, error) {
	p := c.State.Owner
	// Still that run's while it is being set up; once it runs, or is gone,
	// Remove deals with what it finds.
	settingUp := func() (*Container, bool, error) {
		cur, err := e.get(c.ID)
		if errdefs.KindOf(err) == errdefs.KindNotFound {
			return nil, false, nil
		} else if err != nil {
			return nil, false, err
		}
		return cur, cur.State.Status == StatusCreated && cur.State.Owner.is(p) && !cur.State.Claimed && alive(p), nil
	}
	h, ok := openProc(p)
	if !ok {
		cur, _, err := settingUp()
		return cur, err
	}
	defer h.Close()
	// Read again before the signal: a run that has finished its setup and
	// returned (its start recorded) must not be killed by it.
	cur, still, err := settingUp()
	if err != nil || !still {
		return cur, err
	}
	if h.Signal(syscall.SIGTERM) != nil {
		return cur, nil
	}
	deadline := time.Now().Add(ownerWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 20*time.Millisecond) {
		if cur, still, err = settingUp(); err != nil || !still {
			return cur, err
		}
		if time.Now().After(deadline) {
			_ = h.Signal(syscall.SIGKILL)
			h.WaitExit(time.Second)
			cur, _, err = settingUp()
			return cur, err
		}
		time.Sleep(wait)
	}
}

// awaitClaim waits while another live knit holds the claim on the created
// container c to remove it. It returns nil once the record is gone, or the
// record once its claimer has died or let go (this command goes on with the
// removal then); after lockWait, an error naming the claimer.
func (e *Engine) awaitClaim(c *Container) (*Container, error) {
	deadline := time.Now().Add(lockWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		cur, err := e.get(c.ID)
		if errdefs.KindOf(err) == errdefs.KindNotFound {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
		if cur.State.Status != StatusCreated || !cur.State.Claimed || !alive(cur.State.Owner) {
			return cur, nil
		}
		if time.Now().After(deadline) {
			return nil, errdefs.Unavailable("container %s: knit PID %d has been removing it for over %s; retry, or look at that process", c.Name, cur.State.Owner.Pid, lockWait)
		}
		time.Sleep(wait)
	}
}

// claimForRemoval reads container id for its removal and, while it is
// still being created, makes this process its owner: a supervisor that
// has not recorded its start yet then finds the record taken, and kills
// the process it started instead of leaving it running with no record.
func (e *Engine) claimForRemoval(id string) (*Container, error) {
	var c *Container
	read := func(tx store.Tx) (err error) { c, err = getContainer(tx, id); return err }
	err := e.st.View(read) // most are not being created: no write
	if err == nil && c.State.Status == StatusCreated && !c.State.Owner.is(selfProc()) {
		err = e.st.Update(func(tx store.Tx) error {
			if err := read(tx); err != nil || c.State.Status != StatusCreated {
				return err
			}
			c.State.Owner, c.State.Claimed = selfProc(), true
			return putContainer(tx, c)
		})
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, errdefs.NotFound("no such container: %s", id)
	}
	return c, err
}

// joiner returns a container, running or being set up, that shares c's
// network namespace (or may yet enter it).
func (e *Engine) joiner(c *Container) (*Container, error) {
	var found *Container
	err := e.st.View(func(tx store.Tx) error {
		return tx.List(joinsBucket(c.ID), func(id string, _ []byte) error {
			j, err := getContainer(tx, id)
			if err == nil && j.State.Status != StatusExited {
				found = j
			}
			return nil
		})
	})
	return found, err
}

// ExecOptions is a `knit exec` request.
type ExecOptions struct {
	Args        []string
	Env         []string
	Workdir     string
	Tty         bool
	Interactive bool
	// User runs the command as NAME|UID[:GROUP|GID]; "" is the
	// container's user (run -u), root by default.
	User string
	// Detach returns once the command has started, its output discarded
	// (docker exec -d); it cannot have a terminal or input, since no
	// process stays to hold them.
	Detach bool
}

// Exec runs a command inside a running container and returns its exit
// code; with o.Detach, 0 once it has started.
func (e *Engine) Exec(ref string, o ExecOptions, io Stdio) (int, error) {
	if o.Detach && (o.Tty || o.Interactive) {
		return 0, errdefs.Invalid("conflicting options: a detached exec (-d) takes no -i or -t: no knit process stays to hold its input or terminal")
	}
	c, err := e.Container(ref)
	if err != nil {
		return 0, err
	}
	if c.betweenRuns() {
		return 0, errRestarting(c)
	}
	if !c.Running() || !alive(c.State.Process) {
		return 0, errdefs.Conflict("container %s is not running", c.Name)
	}
	if len(o.Args) == 0 {
		return 0, errdefs.Invalid("no command given: usage: knit exec [OPTIONS] CONTAINER COMMAND [ARG...]")
	}
	links, err := e.linksEnv(c)
	if err != nil {
		return 0, err
	}
	cfg := runner.ExecConfig{
		Pid:      c.State.Process.Pid,
		Start:    c.State.Process.Start,
		Args:     o.Args,
		Env:      execEnv(c, links, o),
		Cwd:      o.Workdir,
		Tty:      o.Tty,
		Detach:   o.Detach,
		User:     o.User,
		GroupAdd: c.Spec.GroupAdd,
	}
	if cfg.User == "" {
		cfg.User = c.Spec.User // the container's user, as docker exec
	}
	if o.User != "" {
		if err := runner.ValidUser(o.User); err != nil {
			return 0, errdefs.Invalid("%v", err)
		}
	}
	cfg.Stderr = io.Err // with -d, only for the reason the command did not start
	if !o.Detach {
		cfg.Stdout = io.Out
	}
	if cfg.Cwd == "" {
		cfg.Cwd = c.Spec.Workdir
	}
	if o.Interactive {
		cfg.Stdin = io.In
	}
	return runner.Exec(cfg)
}

// LogsOptions tunes Logs.
type LogsOptions struct {
	Follow bool // go on until the container stops
	Tail   int  // the last lines only; -1 for all
	// Since and Until keep the lines written in [Since, Until] (zero: no
	// bound); Timestamps starts each with its time.
	Since, Until time.Time
	Timestamps   bool
	// Details puts each line's attributes before it, as docker logs
	// --details: knit's logs carry none, so a space (Docker's form for a
	// line without attributes).
	Details bool
}

// logsPoll is how often logs -f looks for more.
const logsPoll = 100 * time.Millisecond

// Logs writes a container's log, what it wrote to stdout to stdout and
// to stderr to stderr (its last o.Tail lines); with o.Follow it goes on
// until the container stops (through its restarts).
func (e *Engine) Logs(ref string, o LogsOptions, stdout, stderr io.Writer) error {
	c, err := e.Container(ref)
	if err != nil {
		return err
	}
	legacy := c.Spec.LogFormat != logfile.Format
	if legacy && (o.Timestamps || o.Details || !o.Since.IsZero() || !o.Until.IsZero()) {
		return errdefs.Invalid("the log of container %s was written by a knit before it kept times: drop -t, --details, --since and --until", c.Name)
	}
	f, err := os.Open(e.LogPath(c))
	if errors.Is(err, os.ErrNotExist) {
		if c.Spec.Detach {
			return nil // nothing written yet
		}
		return errdefs.Invalid("container %s ran in the foreground: its output was not logged", c.Name)
	} else if err != nil {
		return err
	}
	defer f.Close()
	if o.Tail >= 0 {
		off, err := tailOffset(f, o.Tail)
		if err != nil {
			return err
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return err
		}
	}
	// The supervisor, which stays through restarts: one that was killed
	// (its container dies with it) ends it too, though the record says
	// running until the next command reconciles.
	stopped := func() bool {
		cur, err := e.get(c.ID)
		return err != nil || !cur.Running() || !alive(cur.State.Supervisor)
	}
	if legacy {
		return followRaw(f, o.Follow, stopped, stdout)
	}
	p := &logfile.Printer{Stdout: stdout, Stderr: stderr, Since: o.Since, Until: o.Until, Timestamps: o.Timestamps, Details: o.Details}
	rd := bufio.NewReader(f)
	var partial []byte // a line the supervisor is still writing
	last := !o.Follow  // at the next end of the file, stop
	for {
		chunk, err := rd.ReadBytes('\n')
		if err == nil {
			line := append(partial, chunk[:len(chunk)-1]...)
			partial = nil
			if past, err := p.Print(line); err != nil || past {
				return err
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		partial = append(partial, chunk...)
		if last || !o.Until.IsZero() && time.Now().After(o.Until) {
			return nil
		}
		// Once stopped, what was written before the exit, once more.
		last = stopped()
		if !last {
			time.Sleep(logsPoll)
		}
	}
}

// followRaw copies a log of the bytes as they came (a knit's before
// records) to w; with follow, until stopped.
func followRaw(f *os.File, follow bool, stopped func() bool, w io.Writer) error {
	for {
		if _, err := io.Copy(w, f); err != nil {
			return err
		}
		if !follow {
			return nil
		}
		if stopped() {
			_, err := io.Copy(w, f) // what was written before the exit
			return err
		}
		time.Sleep(logsPoll)
	}
}

// tailOffset returns where the last n lines of f begin (a last line without
// its newline counts), reading back from the end a block at a time.
func tailOffset(f *os.File, n int) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	end := fi.Size()
	if n == 0 {
		return end, nil
	}
	buf := make([]byte, 32<<10)
	newlines := 0
	for pos := end; pos > 0; {
		size := min(int64(len(buf)), pos)
		pos -= size
		if _, err := f.ReadAt(buf[:size], pos); err != nil {
			return 0, err
		}
		for i := size - 1; i >= 0; i-- {
			if buf[i] != '\n' || pos+i == end-1 {
				continue // the last line's own newline starts nothing
			}
			if newlines++; newlines == n {
				return pos + i + 1, nil
			}
		}
	}
	return 0, nil
}

// LogPath is where a detached container's output is kept.
func (e *Engine) LogPath(c *Container) string { return filepath.Join(e.logDir(c.ID), logFile) }

// mergeEnv overlays KEY=VALUE pairs of over onto base.
func mergeEnv(base, over []string) []string {
	out := make([]string, 0, len(base)+len(over))
	at := make(map[string]int, len(base)+len(over)) // a key's place in out
	for _, list := range [][]string{base, over} {
		for _, kv := range list {
			k := envKey(kv)
			if i, ok := at[k]; ok {
				out[i] = kv
				continue
			}
			at[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

// execEnv is an exec's environment: the container's links' (links), the
// container's, with TERM=xterm as the exec's own -t decides (not the
// run's), then the exec's -e; as docker exec.
func execEnv(c *Container, links []string, o ExecOptions) []string {
	env := mergeEnv(links, c.Spec.Env)
	if c.Spec.Tty && !o.Tty {
		env = slices.DeleteFunc(env, func(kv string) bool { return kv == "TERM=xterm" })
	}
	if o.Tty && !slices.ContainsFunc(env, func(kv string) bool { return envKey(kv) == "TERM" }) {
		env = append(env, "TERM=xterm")
	}
	return mergeEnv(env, o.Env)
}

func envKey(kv string) string {
	k, _, _ := strings.Cut(kv, "=")
	return k
}

package engine

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store"
)

// Restart policies, Docker's --restart names.
const (
	RestartNo            = "no"
	RestartAlways        = "always"
	RestartUnlessStopped = "unless-stopped"
	RestartOnFailure     = "on-failure"
)

// RestartPolicy is what a detached container's supervisor does when the
// command exits by itself (not stopped or killed through knit): start it
// again in the same namespaces, on the same network endpoints.
//
// knit has no daemon: the supervisor is the restart manager, so a host's
// reboot ends the container for good, "always" included, as Podman's
// without its systemd unit. "unless-stopped" is "always" here: the two
// differ only at a daemon's start.
type RestartPolicy struct {
	Name       string `json:"name,omitempty"`       // "" is "no"
	MaxRetries int    `json:"maxRetries,omitempty"` // on-failure's limit; 0: none
}

// ParseRestartPolicy reads --restart: no, always, unless-stopped or
// on-failure[:MAX-RETRIES].
func ParseRestartPolicy(s string) (RestartPolicy, error) {
	name, count, hasCount := strings.Cut(s, ":")
	p := RestartPolicy{Name: name}
	if hasCount {
		n, err := strconv.Atoi(count)
		if err != nil {
			return p, errdefs.Invalid("invalid restart policy %q: the maximum retry count must be an integer", s)
		}
		p.MaxRetries = n
	}
	return p, p.validate()
}

func (p RestartPolicy) validate() error {
	switch p.Name {
	case "", RestartNo, RestartAlways, RestartUnlessStopped, RestartOnFailure:
	default:
		return errdefs.Invalid("invalid restart policy %q: use one of no, always, on-failure[:MAX-RETRIES] or unless-stopped", p.Name)
	}
	switch {
	case p.MaxRetries < 0:
		return errdefs.Invalid("invalid restart policy: the maximum retry count cannot be negative")
	case p.MaxRetries > 0 && p.Name != RestartOnFailure:
		return errdefs.Invalid("invalid restart policy: a maximum retry count goes with on-failure only")
	}
	return nil
}

// Restarts reports whether the policy ever restarts.
func (p RestartPolicy) Restarts() bool { return p.Name != "" && p.Name != RestartNo }

// Mode is the policy's name, "no" when none was given.
func (p RestartPolicy) Mode() string {
	if !p.Restarts() {
		return RestartNo
	}
	return p.Name
}

// String is the policy as --restart takes it.
func (p RestartPolicy) String() string {
	if p.MaxRetries > 0 {
		return fmt.Sprintf("%s:%d", p.Mode(), p.MaxRetries)
	}
	return p.Mode()
}

// wants reports whether a command that exited with code after count
// restarts is started again.
func (p RestartPolicy) wants(code, count int) bool {
	switch p.Name {
	case RestartAlways, RestartUnlessStopped:
		return true
	case RestartOnFailure:
		return code != 0 && (p.MaxRetries == 0 || count < p.MaxRetries)
	}
	return false
}

// Docker's back-off between restarts: 100 ms, doubled each time up to a
// minute, and back to 100 ms after a run of 10 s or more.
const (
	restartFirstDelay = 100 * time.Millisecond
	restartMaxDelay   = time.Minute
	restartResetAfter = 10 * time.Second
)

// backoff is the delay before the next restart, given how long the last
// run lasted.
type backoff struct{ delay time.Duration }

func (b *backoff) next(ran time.Duration) time.Duration {
	switch {
	case ran >= restartResetAfter || b.delay == 0:
		b.delay = restartFirstDelay
	default:
		b.delay = min(2*b.delay, restartMaxDelay)
	}
	return b.delay
}

// restartPoll is how often a supervisor waiting to restart looks for a
// stop: a stop waits this long at most for it.
const restartPoll = 50 * time.Millisecond

// awaitRestart decides, for a command of container id that exited with
// code, whether its supervisor starts it again: when the policy wants it
// and nobody asked knit to stop it. It then records the container as
// restarting (the exit code, the count) and waits delay, and reports
// false if a stop came meanwhile.
func (e *Engine) awaitRestart(id string, exited Proc, code int, delay time.Duration) bool {
	again := func(cur *Container) bool {
		return cur.Running() && !cur.State.StopRequested &&
			(cur.State.restartRequested(exited) || cur.Spec.Restart.wants(code, cur.State.RestartCount))
	}
	// Most exits restart nothing: a read tells, without a write.
	if cur, err := e.get(id); err != nil || !again(cur) {
		return false
	}
	restart := false
	err := e.st.Update(func(tx store.Tx) error {
		cur, err := getContainer(tx, id)
		if err != nil || !again(cur) {
			return err
		}
		restart = true
		cur.State.Restarting = true
		if cur.State.restartRequested(exited) { // knit restart: at once, and not the policy's
			cur.State.clearRestart()
			delay = 0
		} else {
			cur.State.RestartCount++
		}
		cur.State.ExitCode = code
		cur.State.FinishedAt = time.Now().UTC()
		return putContainer(tx, cur)
	})
	if err != nil || !restart {
		return false
	}
	for end := time.Now().Add(delay); time.Now().Before(end); {
		time.Sleep(min(restartPoll, time.Until(end)))
		ok, now := e.mayRestart(id)
		if !ok {
			return false
		}
		if now {
			break
		}
	}
	return true
}

// mayRestart reports whether container id is still to be restarted: not
// stopped, and, with --network container:X, X still running; and whether
// knit restart asks for it now, which ends the back-off.
func (e *Engine) mayRestart(id string) (ok, now bool) {
	_ = e.st.View(func(tx store.Tx) error {
		cur, err := getContainer(tx, id)
		if err != nil || cur.State.StopRequested || !cur.Running() {
			return nil
		}
		ok, now = joinedTargetRuns(tx, cur), cur.State.restartRequested(cur.State.Process)
		return nil
	})
	return ok, now
}

// joinedTargetRuns reports whether the container whose network namespace
// c shares (--network container:X) still runs; true without one. X's
// namespace goes when it stops, and c started without it fails for ever.
func joinedTargetRuns(tx store.Tx, c *Container) bool {
	if c.JoinedTo == "" {
		return true
	}
	target, err := getContainer(tx, c.JoinedTo)
	return err == nil && target.Running()
}

// restart starts container c's command again, in the namespaces and with
// the network it has, unless a stop came first.
func (e *Engine) restart(c *Container, sc runner.StartConfig) (*runner.Process, error) {
	sup := c.State.Supervisor
	return e.launch(c, sc, func(tx store.Tx, cur *Container) error {
		if !cur.Running() || !cur.State.Restarting || cur.State.StopRequested || !cur.State.Supervisor.is(sup) {
			return errdefs.Conflict("container %s was stopped while restarting", cur.Name)
		}
		cur.State.clearRestart() // one that came during the back-off is this start
		if !joinedTargetRuns(tx, cur) {
			return errdefs.Conflict("container %s shares the network of a container that stopped: not restarted", cur.Name)
		}
		cur.State.Restarting = false
		return nil
	})
}

// requestStop marks container id as stopped through knit (stop, rm -f, a
// kill with SIGKILL or its stop signal), so that its supervisor does not
// restart it, and returns the record as it is then: the process to
// signal is the one it names, which a restart cannot replace any more.
func (e *Engine) requestStop(id string) (*Container, error) {
	var c *Container
	err := e.st.Update(func(tx store.Tx) (err error) {
		if c, err = getContainer(tx, id); err != nil || !c.Running() || c.State.StopRequested {
			return err
		}
		c.State.StopRequested = true
		return putContainer(tx, c)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errdefs.NotFound("no such container: %s", id)
	}
	return c, err
}

// mayBeRestarted reports whether c's supervisor may start its command
// again: a detached container's, through its policy or knit restart. A
// stop, a kill or an rm -f of such a container marks its record first.
func mayBeRestarted(c *Container) bool { return c.Spec.Detach }

// stopsRestarts reports whether sig, sent by knit kill, ends c's restarts:
// SIGKILL and c's stop signal do, as in Docker (which counts other signals,
// SIGHUP or SIGUSR1 say, as messages the command may survive).
func stopsRestarts(c *Container, sig syscall.Signal) bool {
	stop := syscall.Signal(c.Spec.StopSignal)
	if stop == 0 {
		stop = syscall.SIGTERM
	}
	return sig == syscall.SIGKILL || sig == stop
}

// errRestarting refuses what needs the command while it is between runs.
func errRestarting(c *Container) error {
	return errdefs.Conflict("container %s is restarting: wait until it is running", c.Name)
}

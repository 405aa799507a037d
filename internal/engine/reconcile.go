package engine

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store"
)

// Exit codes recorded when knit, not the command, decided the end.
const (
	exitKilled  = 137 // 128 + SIGKILL: we had to kill a process left behind
	exitUnknown = 255 // the supervisor died and took the real status with it
)

// Reconcile repairs what crashed processes left behind: a container whose
// supervisor (or, while being created, whose creator) is gone has its
// process killed and its network released, exactly as if it had exited.
// It is cheap when nothing is wrong: one read transaction and a liveness
// check per live container.
func (e *Engine) Reconcile() error {
	var stale []*Container
	err := e.st.View(func(tx store.Tx) error {
		all, err := listContainers(tx)
		for _, c := range all {
			if orphaned(c) {
				stale = append(stale, c)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	var errs []error
	for _, c := range stale {
		code := exitUnknown
		if killProc(c.State.Process) {
			code = exitKilled
		}
		if c.State.Status == StatusCreated {
			e.destroy(c) // never started: undo the half-made run
			continue
		}
		if err := e.finish(c.ID, code); err != nil {
			errs = append(errs, fmt.Errorf("repair %s: %w", c.Name, err))
		}
	}
	return errors.Join(errs...)
}

func orphaned(c *Container) bool {
	switch c.State.Status {
	case StatusRunning:
		return !alive(c.State.Supervisor)
	case StatusCreated:
		return !alive(c.State.Owner)
	}
	return false
}

func alive(p Proc) bool { return p.Pid > 0 && runner.Alive(p.Pid, p.Start) }

// killProc sends SIGKILL to p if it is still the process we started; it
// reports whether it did.
func killProc(p Proc) bool {
	if !alive(p) {
		return false
	}
	return syscall.Kill(p.Pid, syscall.SIGKILL) == nil
}

package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// StartInPID runs start, which should fork a child (exec.Cmd.Start), on a
// thread that has joined the PID namespace pidns, so that the child is born
// in it. Joining a PID namespace only places the joiner's future children in
// it, and a thread that joined can no longer start threads, which the Go
// runtime could not survive if its first thread joined. So one fresh thread
// joins and forks; it is never unlocked, so the runtime ends it with its
// goroutine instead of reusing it.
//
// Equivalent to: nsenter --pid=PIDNS COMMAND
func StartInPID(pidns *os.File, start func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		if err := unix.Setns(int(pidns.Fd()), unix.CLONE_NEWPID); err != nil {
			errc <- fmt.Errorf("join pid namespace: %w", err)
			return
		}
		errc <- start()
	}()
	return <-errc
}

// OnLockedThread runs fn on a fresh goroutine locked to its thread, then
// hands the healthy thread back to the runtime, which keeps it. A child
// started with Pdeathsig is signalled when the thread that forked it exits,
// not the process; the runtime only ends threads whose goroutine returns
// while locked, which a fresh goroutine that unlocks never is, and which
// no goroutine that may later run on that thread does (goFreshThread
// parks one whose thread it could not restore; StartInPID's goroutine,
// which returns locked, runs in knit's _exec, which starts no child with
// Pdeathsig).
func OnLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		errc <- fn()
	}()
	return <-errc
}

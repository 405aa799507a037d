package runner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// runAsInit is --init: this process stays PID 1 and runs the command as
// its child, as Docker's docker-init (tini) does. PID 1 is the namespace's
// reaper: every orphan of the container becomes its child, and a command
// that never waits for children it did not start (a server, `sleep`)
// would leave them as zombies. It forwards every signal to the command,
// reaps every child, and ends with the command's exit code (128+N when a
// signal N killed it); its own exit then kills what is left, as the
// command's would as PID 1. It only returns when the command did not
// start, with the exit code.
func runAsInit(s *Spec, u *execUser, change bool) (int, error) {
	path, err := lookPath(s.Args[0], s.Env)
	if err != nil {
		return execCode(err), err
	}
	cmd := &exec.Cmd{
		Path: path, Args: s.Args, Env: s.Env, // never nil: withHome gave it HOME
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		// A process group of its own, so that a signal to ours (^C on
		// the terminal) does not reach it twice: once from the kernel,
		// once forwarded. On a terminal its group is the foreground one,
		// so that ^C, ^Z and resizes go to it.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Foreground: s.Tty && isTerminal(os.Stdin), Ctty: 0},
	}
	if change {
		cmd.SysProcAttr.Credential = u.credential() // init stays root, to signal and reap
		cmd.Dir = filepath.Join("/", s.Cwd)         // entered as the user, who must be able to
	}
	// Notified before the start, so that no signal meant for the command
	// falls between the two.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs)
	if err := cmd.Start(); err != nil {
		return execCode(err), fmt.Errorf("exec: %q: %w", s.Args[0], err)
	}
	// The command runs: closing fd 3 tells Start, as an execve would.
	_ = unix.Close(3)
	go forwardAll(sigs, cmd.Process.Pid)
	os.Exit(reapUntil(cmd.Process.Pid))
	return 0, nil // not reached
}

// forwardAll sends every signal received to pid, except SIGCHLD (ours:
// a child ended) and SIGURG (the Go runtime's own preemption signal,
// which signal.Notify also relays).
func forwardAll(sigs <-chan os.Signal, pid int) {
	for sig := range sigs {
		if s, ok := sig.(syscall.Signal); ok && s != unix.SIGCHLD && s != unix.SIGURG {
			_ = unix.Kill(pid, s)
		}
	}
}

// reapUntil waits for every child, orphans included, until pid ends, and
// returns its exit code.
func reapUntil(pid int) int {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil: // ECHILD: nothing left to wait for, which cannot be while pid runs
			return 125
		case got != pid:
			continue // an orphan, reaped
		case ws.Signaled():
			return 128 + int(ws.Signal())
		case ws.Exited():
			return ws.ExitStatus()
		}
		// Stopped or continued: only with WUNTRACED/WCONTINUED, not asked.
	}
}

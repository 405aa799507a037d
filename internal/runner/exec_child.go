package runner

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/netns"
)

// runInContainer runs the exec'd command to its end and returns its exit
// code, or an error with the code to exit with. The signals held go to
// the command once it runs.
func runInContainer(s *Spec, pidns *os.File, held *SignalHold) (int, error) {
	dir := filepath.Join("/", s.Cwd)
	if err := checkDir(dir); err != nil {
		return 126, err // docker exec -w does not create it
	}
	u, change, err := userOf(s)
	if err != nil {
		return 125, err
	}
	s.Env = withHome(s.Env, u.Home)
	path, err := lookPath(s.Args[0], s.Env)
	if err != nil {
		return execCode(err), err
	}
	cmd := commandIn(path, dir, s)
	if change {
		cmd.SysProcAttr.Credential = u.credential()
		// knit's pipes are the user's, so that /dev/stdout opens, as
		// runc gives docker exec's.
		if err := giveStdio(u, s.OwnStdio, false); err != nil {
			return 126, err
		}
	}
	var master, slave *os.File
	if s.Tty {
		if master, slave, err = openPty(); err != nil {
			return 126, err
		}
		if change { // the terminal is knit's, made here: the user's to open
			if err := unix.Fchown(int(slave.Fd()), int(u.Uid), int(u.Gid)); err != nil {
				return 126, fmt.Errorf("give the terminal to user %d: %w", u.Uid, err)
			}
		}
		if src := sizeSource(os.Stdin, os.Stdout); src != nil {
			copyWinsize(src, master)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr.Setctty = true // Ctty 0: the slave
	}
	err = startInPIDNS(cmd, pidns)
	if slave != nil {
		slave.Close() // the command's copy is all that must keep it open
	}
	if err != nil {
		return execCode(err), fmt.Errorf("exec: %q: %w", s.Args[0], err)
	}
	if s.Detach {
		// Once we exit, the kernel hands it to the reaper of our own PID
		// namespace (the host's init, or a subreaper above knit), not to
		// the container's PID 1, as with docker exec.
		return 0, cmd.Process.Release()
	}
	var relay *ptyRelay
	if master != nil {
		relay = startRelay(master, os.Stdin, os.Stdout, nil, func() { _ = cmd.Process.Kill() })
	}
	held.to(cmd.Process, false) // never stopped: the helper exits with the command
	_ = cmd.Wait()
	if relay != nil {
		relay.wait()
	}
	if cmd.ProcessState == nil {
		return 125, fmt.Errorf("wait for %q: no exit status", s.Args[0])
	}
	return exitCode(cmd.ProcessState), nil
}

func checkDir(dir string) error {
	st, err := os.Stat(dir)
	if err == nil && !st.IsDir() {
		err = unix.ENOTDIR
	}
	if err != nil {
		return fmt.Errorf("chdir %s: %w", dir, err)
	}
	return nil
}

// commandIn prepares the exec'd command, with our stdin, stdout and stderr.
//
// No Pdeathsig: in the child, the Go runtime checks that its parent is
// still alive by comparing getppid() with our pid, and getppid() is 0 in
// a PID namespace the parent is not in, so the child would kill itself.
// If we die, the command stays with the container, as with docker exec.
func commandIn(path, dir string, s *Spec) *exec.Cmd {
	env := s.Env
	if env == nil {
		env = []string{} // nil would pass on ours
	}
	stderr := os.Stderr
	if s.Detach {
		// Ours is the caller's, for why the command did not start; the
		// command's output goes where our stdout does: /dev/null.
		stderr = os.Stdout
	}
	return &exec.Cmd{
		Path:        path,
		Args:        s.Args,
		Env:         env,
		Dir:         dir,
		Stdin:       os.Stdin,
		Stdout:      os.Stdout,
		Stderr:      stderr,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
}

// startInPIDNS starts cmd in the PID namespace pidns.
func startInPIDNS(cmd *exec.Cmd, pidns *os.File) error {
	return netns.StartInPID(pidns, cmd.Start)
}

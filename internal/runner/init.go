package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Init is the container's init: /proc/self/exe _init, started by Start as
// PID 1 of new namespaces and already in its network namespace. It sets the
// container up from the Spec on fd 3, then execs the command, which takes
// over as PID 1, or with Spec.Init stays PID 1 and runs it (runAsInit).
// It never returns; on failure it exits 125 (setup), 126 (cannot
// execute) or 127 (not found) with a "knit: " message on stderr.
func Init() {
	defaultSignals()
	// Fd 3 stays open until the execve closes it: Start waits for that.
	// (An *os.File could be garbage collected and closed before.)
	spec, err := readSpec(fdReader(3))
	if err != nil {
		initFail(125, err)
	}
	if err := CloseOnExecFrom(3); err != nil {
		initFail(125, err)
	}
	if err := setupContainer(spec); err != nil {
		initFail(125, err)
	}
	u, change, err := userOf(spec)
	if err == nil && change {
		err = giveStdio(u, spec.OwnStdio, spec.Tty)
	}
	if err != nil {
		initFail(125, err)
	}
	spec.Env = withHome(spec.Env, u.Home)
	if spec.Init {
		initFail(runAsInit(spec, u, change))
	}
	if change {
		if err := becomeUser(u); err != nil {
			initFail(125, err)
		}
		// The working directory was entered as root: the user must be
		// able to enter it too, or the command fails at once, as runc's.
		cwd := filepath.Join("/", spec.Cwd)
		if err := unix.Chdir(cwd); err != nil {
			initFail(126, fmt.Errorf("chdir %s as user %d: %w", cwd, u.Uid, err))
		}
	}
	initFail(execCommand(spec.Args, spec.Env))
}

// initFail reports why the container could not start to Start, on fd 3
// ("CODE MESSAGE"), then fails. A successful execve closes fd 3 with
// nothing written, which is how Start tells the two apart.
func initFail(code int, err error) {
	_, _ = unix.Write(3, fmt.Appendf(nil, "%d %v", code, err))
	fail(code, err)
}

// readSpec reads the Spec the parent sends on fd 3.
func readSpec(r io.Reader) (*Spec, error) {
	var s Spec
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	if len(s.Args) == 0 {
		return nil, errors.New("read spec: no command")
	}
	return &s, nil
}

// fdReader reads a file descriptor that nothing else owns or closes.
type fdReader int

func (fd fdReader) Read(b []byte) (int, error) {
	n, err := unix.Read(int(fd), b)
	for errors.Is(err, unix.EINTR) {
		n, err = unix.Read(int(fd), b)
	}
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	return max(n, 0), err
}

func fail(code int, err error) {
	fmt.Fprintf(os.Stderr, "knit: %v\n", err)
	os.Exit(code)
}

// setupContainer runs the container's setup steps in order. All of them
// act on the container's own mount namespace: the first makes sure none
// of the rest propagates to the host.
func setupContainer(s *Spec) error {
	if err := mountPrivate(); err != nil {
		return err
	}
	// Bind sources are host paths: take them before the root changes and
	// before Hide detaches the directory they live in.
	binds, err := openBinds(s.Binds)
	if err != nil {
		return err
	}
	defer closeBinds(binds)
	if err := hideMounts(s.Hide); err != nil {
		return err
	}
	if s.Rootfs != "" {
		if err := setupRootfs(s.Rootfs, s.Tty); err != nil {
			return err
		}
	}
	if err := mountProc(); err != nil {
		return err
	}
	// Targets are resolved inside the container's root, so a symlink in a
	// rootfs cannot point a mount or a created file at the host.
	if err := attachBinds(binds); err != nil {
		return err
	}
	if err := setHostname(s.Hostname); err != nil {
		return err
	}
	if s.Domainname != "" {
		// Equivalent to: domainname NAME
		if err := unix.Setdomainname([]byte(s.Domainname)); err != nil {
			return fmt.Errorf("setdomainname %s: %w", s.Domainname, err)
		}
	}
	return enterCwd(s.Cwd)
}

// setHostname sets the container's hostname in its UTS namespace.
//
// Equivalent to: hostname NAME
func setHostname(name string) error {
	if name == "" {
		return nil
	}
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname %s: %w", name, err)
	}
	return nil
}

// enterCwd makes dir the working directory, creating it if missing as
// docker run -w does.
//
// Equivalent to: mkdir -p DIR && cd DIR
func enterCwd(dir string) error {
	dir = filepath.Join("/", dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("chdir %s: %w", dir, err)
	}
	return nil
}

// CloseOnExecFrom marks every descriptor from fd up close-on-exec, so that
// the command gets only its standard streams: one inherited from whoever
// ran knit (an open directory, say) would otherwise reach a container
// behind its --rootfs, or be held by a supervisor or the DNS server for as
// long as they live (a caller reading a pipe to the end would wait for
// them). The descriptors stay usable until the exec.
//
// Equivalent to: close_range(fd, ~0U, CLOSE_RANGE_CLOEXEC)
func CloseOnExecFrom(fd int) error {
	err := unix.CloseRange(uint(fd), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Kernels before 5.11 (ENOSYS, EINVAL), or a seccomp filter that
	// refuses the call (EPERM): one at a time, those /proc lists, or every
	// number below the descriptor limit where /proc/self does not resolve
	// (the exec helper sees the container's /proc from outside its PID
	// namespace).
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("descriptor limit: %w", err)
		}
		closeOnExecBelow(fd, int(min(lim.Cur, 1<<20)))
		return nil
	}
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && n >= fd {
			unix.CloseOnExec(n)
		}
	}
	return nil
}

// closeOnExecBelow marks descriptors from up to limit close-on-exec; a
// number that is not open fails harmlessly.
func closeOnExecBelow(from, limit int) {
	for n := from; n < limit; n++ {
		unix.CloseOnExec(n)
	}
}

// defaultSignals gives the signals knit's caller ignored (nohup, a
// script's background job, a runtime that ignores SIGPIPE) a handler of
// Go's, which the execve of the command resets to the default action: a
// container starts with every signal's default, as Docker's do, whatever
// ran knit (an ignored disposition survives execve, and a shell cannot
// trap a signal ignored on entry). Blocked signals are unblocked before
// the Go runtime starts (knit_unblock in internal/netns/nsenter.c).
func defaultSignals() {
	ch := make(chan os.Signal, 1)
	for sig := syscall.Signal(1); sig < 32; sig++ {
		if sig != syscall.SIGKILL && sig != syscall.SIGSTOP && signal.Ignored(sig) {
			signal.Notify(ch, sig)
		}
	}
}

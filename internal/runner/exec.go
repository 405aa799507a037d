package runner

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/knit-dev/knit/internal/netns"
	"golang.org/x/sys/unix"
)

// ExecConfig describes a command to run in a running container.
type ExecConfig struct {
	Pid            int    // the container's PID 1, as seen from here
	Start          uint64 // its start time (StartTime): another process with Pid is refused
	Args, Env      []string
	Cwd            string   // "" = "/"; must exist, as with docker exec -w
	Tty            bool     // give the command a pty of the container's devpts
	Stdin          *os.File // nil = /dev/null (docker exec without -i)
	Stdout, Stderr *os.File // nil = /dev/null
	// Detach returns as soon as the command has started; it goes on in
	// the container's namespaces, a child of the host's init (or of a
	// subreaper above knit) once the helper is gone.
	Detach   bool
	User     string   // -u; "" is root
	GroupAdd []string // the container's --group-add
}

// execSpecFd, execPidnsFd and execProcFd are the helper's extra files:
// the Spec's socket, the container's PID namespace and its /proc/PID
// directory, through which the constructor finds the other namespaces.
const (
	execSpecFd  = 3
	execPidnsFd = 4
	execProcFd  = 5
)

// Exec runs a command in the namespaces of the container whose PID 1 is
// cfg.Pid and returns its exit code (docker's codes, see the package doc).
//
// It runs /proc/self/exe _exec (ExecMain) with the netns constructor
// joining the container's ipc, uts, net and mnt namespaces, the Spec on
// fd 3 and the container's PID namespace on fd 4.
func Exec(cfg ExecConfig) (code int, err error) {
	sp := Spec{Args: cfg.Args, Env: cfg.Env, Cwd: cfg.Cwd, Tty: cfg.Tty, Detach: cfg.Detach, User: cfg.User, GroupAdd: cfg.GroupAdd}
	if !cfg.Tty && !cfg.Detach {
		sp.OwnStdio = []int{0, 1, 2} // the relay's pipes (Relay), the user's to reopen
	}
	spec, err := json.Marshal(sp)
	if err != nil {
		return 0, fmt.Errorf("encode exec spec: %w", err)
	}
	// The container's /proc/PID, checked to be the process that started
	// at cfg.Start, names its namespaces from here on: a directory of
	// /proc opened on one process never shows another's, even one that
	// takes its PID after it exits. Opened here: once in the container's
	// mount namespace, its /proc would not know the pid.
	proc, err := openProcDir(cfg.Pid, cfg.Start)
	if err != nil {
		return 0, fmt.Errorf("exec in %d: %w", cfg.Pid, err)
	}
	defer proc.Close()
	pidnsFd, err := unix.Openat(int(proc.Fd()), "ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("exec in %d: open its PID namespace: %w", cfg.Pid, err)
	}
	pidns := os.NewFile(uintptr(pidnsFd), "pidns")
	defer pidns.Close()
	// Caught from here, relayed once the helper runs; its relay ends
	// (quit) after the copy of what the command left, deferred below.
	hold := holdSignals(append(relayed, syscall.SIGWINCH)...)
	defer hold.quit()
	ours, theirs, err := specSocket()
	if err != nil {
		return 0, err
	}
	defer ours.Close()
	defer theirs.Close()
	cmd := selfCmd(ExecArg, []string{execJoinEnv()}, theirs, pidns, proc)
	stdin, stdout, stderr := cfg.Stdin, cfg.Stdout, cfg.Stderr
	var relay *Relay
	if !cfg.Tty && !cfg.Detach {
		// As docker exec's: pipes, never the caller's own files.
		if relay, err = NewRelay(stdin, stdout, stderr); err != nil {
			return 0, fmt.Errorf("exec in %d: %w", cfg.Pid, err)
		}
		defer relay.Wait()
		stdin, stdout, stderr = relay.In, relay.Out, relay.Err
	}
	setStdio(cmd, stdin, stdout, stderr)
	if cfg.Tty && isTerminal(cfg.Stdin) {
		if restore, err := makeRaw(cfg.Stdin); err == nil {
			defer restore()
		}
	}
	err = startCmd(cmd)
	relay.Started() // the helper has its own copies of its ends
	if err != nil {
		return 0, fmt.Errorf("exec in %d: %w", cfg.Pid, err)
	}
	// The helper is in a session of its own: terminal resizes reach it
	// through us, and it resizes the command's pty.
	// Once the helper is gone, a signal that comes while the relay copies
	// what is left ends knit exec as if never caught (with -t nothing is
	// left, and the terminal must get its mode back first).
	hold.to(cmd.Process, relay != nil)
	theirs.Close()
	if err := sendSpec(ours, spec); err != nil {
		_ = cmd.Process.Kill()
	}
	if err := cmd.Wait(); cmd.ProcessState == nil {
		return 0, fmt.Errorf("exec in %d: wait: %w", cfg.Pid, err)
	}
	return exitCode(cmd.ProcessState), nil
}

// execJoinEnv names the namespaces of pid that the constructor joins. Not
// pid: a process that joined a PID namespace cannot start threads (clone
// with CLONE_THREAD fails with EINVAL), which kills the Go runtime; see
// startInPIDNS.
func execJoinEnv() string {
	var joins []netns.Join
	for _, kind := range []string{"ipc", "uts", "net", "mnt"} {
		joins = append(joins, netns.Join{Kind: kind, Path: fmt.Sprintf("/proc/self/fd/%d/ns/%s", execProcFd, kind)})
	}
	return netns.JoinEnv(joins...)
}

// openProcDir opens /proc/PID if it is the process that started at start
// (any, when start is 0), read through the opened directory itself.
func openProcDir(pid int, start uint64) (*os.File, error) {
	dir, err := os.Open(fmt.Sprintf("/proc/%d", pid))
	if err != nil {
		return nil, err
	}
	if start != 0 {
		f, err := statFieldsAt(dir)
		if err != nil || f[statState] == "Z" || f[statStartTime] != strconv.FormatUint(start, 10) {
			dir.Close()
			return nil, fmt.Errorf("the container's process %d is gone", pid)
		}
	}
	return dir, nil
}

// ExecMain is the exec helper: /proc/self/exe _exec, started by Exec and
// already in the container's namespaces but its PID namespace. It starts
// the command as its child in the container's PID namespace, on a pty
// allocated inside the container when asked, relays signals, and exits
// with the command's exit code. It never returns.
func ExecMain() {
	// The command is started by os/exec, which passes on whatever is not
	// close-on-exec: the spec and PID namespace descriptors included.
	if err := CloseOnExecFrom(3); err != nil {
		fail(125, err)
	}
	// A signal from the caller's knit exec (^C) before the command runs
	// is held for it, not left to kill us with the command about to start.
	held := holdSignals(relayed...)
	specFile := os.NewFile(execSpecFd, "spec")
	spec, err := readSpec(specFile)
	if err != nil {
		fail(125, err)
	}
	specFile.Close()
	code, err := runInContainer(spec, os.NewFile(execPidnsFd, "pidns"), held)
	if err != nil {
		fail(code, err)
	}
	os.Exit(code)
}

// Package runner starts a process in new namespaces as a container, and runs
// commands inside a running one (docker run / docker exec without a daemon).
//
// knit re-executes itself for both: Start runs `/proc/self/exe _init` (Init)
// and Exec runs `/proc/self/exe _exec` (ExecMain); each reads its Spec as
// JSON from fd 3.
//
// Invariants:
//   - Every mount a container makes happens in its own mount namespace, after
//     "/" was made rprivate there, so nothing propagates back to the host and
//     nothing needs unmounting when the container ends.
//   - The container's command is PID 1 of its PID namespace (Init execs it),
//     so when it exits the kernel kills everything else in the container;
//     with Spec.Init, Init stays PID 1 and ends when the command does.
//   - A container and an exec'd command die with the process that started
//     them (Pdeathsig), so no container outlives its supervisor.
//   - Namespaces are joined before the Go runtime starts, by the netns
//     constructor (netns.EnvJoin). The one exception is an exec's PID
//     namespace, which a Go process can only pass on to a child (startInPIDNS).
//   - Exit codes are docker's: the command's own, 128+N when killed by signal
//     N, 125 when the container could not be set up, 126 when the command
//     cannot be executed, 127 when it is not found.
package runner

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/netns"
)

// InitArg is argv[1] of /proc/self/exe when it runs as a container init.
const InitArg = "_init"

// ExecArg is argv[1] of /proc/self/exe when it runs a command in a container.
const ExecArg = "_exec"

// Bind is a file or directory bind-mounted into the container.
type Bind struct {
	Source   string `json:"source"` // a host path
	Target   string `json:"target"` // a path inside the container; created if missing
	ReadOnly bool   `json:"readonly"`
}

// Spec is everything the container init (or exec helper) needs.
type Spec struct {
	Args     []string `json:"args"`
	Env      []string `json:"env"`
	Cwd      string   `json:"cwd"` // "" = "/"; created if missing (as docker -w does)
	Hostname string   `json:"hostname"`
	// Domainname is the UTS namespace's NIS domain name (--domainname).
	Domainname string `json:"domainname,omitempty"`
	Rootfs     string `json:"rootfs"` // "" = the host's root seen through a private mount namespace
	Binds      []Bind `json:"binds"`
	// Hide lists host mount points to detach inside the container, so that
	// it does not pin other containers' namespace bind mounts.
	Hide []string `json:"hide"`
	Tty  bool     `json:"tty"`
	// Detach (exec only) makes the helper exit once the command started.
	Detach bool `json:"detach,omitempty"`
	// Init (run only, --init) keeps the init as PID 1, the command its
	// child: it reaps orphans and forwards signals.
	Init bool `json:"init,omitempty"`
	// User is who the command runs as (-u NAME|UID[:GROUP|GID]), looked
	// up in the container's /etc/passwd and /etc/group; "" is root. HOME
	// is the user's home unless Env sets it.
	User string `json:"user,omitempty"`
	// GroupAdd are further groups, names or GIDs (--group-add).
	GroupAdd []string `json:"groupAdd,omitempty"`
	// OwnStdio lists the standard streams (0-2) that are pipes knit made
	// (a detached container's, a logged foreground run's stdout and
	// stderr): the init gives them to User (giveStdio).
	OwnStdio []int `json:"ownStdio,omitempty"`
}

// StartConfig describes a container to start.
type StartConfig struct {
	Spec  Spec
	Netns string   // network namespace file to join; "" = the caller's (host mode)
	Stdin *os.File // nil = /dev/null (docker run without -i)
	// Stdout and Stderr receive the output; nil = /dev/null. With Tty the
	// terminal's output goes to Stdout only, written by this process until
	// Wait returns, so keep it open until then.
	Stdout, Stderr *os.File
	// Tty gives the container a pseudo-terminal as stdin/out/err and
	// controlling terminal, relayed to Stdin and Stdout; a terminal Stdin is
	// put in raw mode until Wait returns.
	Tty bool
	// TtyCopy, with Tty, also receives the terminal's output, as Stdout
	// does (a foreground run's log); its write errors are ignored.
	TtyCopy io.Writer
}

// Process is a started container.
type Process struct {
	Pid       int
	StartTime uint64 // field 22 of /proc/PID/stat; guards against PID reuse
	// Failed is set when the container's init could not set it up or run
	// its command: the process then exits with Failed.Code.
	Failed *StartError

	cmd     *exec.Cmd
	relay   *ptyRelay // nil without Tty
	restore func()    // returns Stdin to its mode before raw; nil if untouched
}

// Start starts a container: the Spec's command as PID 1 of new mount, UTS,
// IPC and PID namespaces, in the network namespace cfg.Netns.
func Start(cfg StartConfig) (p *Process, err error) {
	spec, err := json.Marshal(cfg.Spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	ours, theirs, err := specSocket()
	if err != nil {
		return nil, err
	}
	defer ours.Close()
	defer theirs.Close() // the child has its own copy once started
	cmd := selfCmd(InitArg, initEnv(cfg.Netns), theirs)
	cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWPID
	p = &Process{cmd: cmd}
	if cfg.Tty {
		err = p.startWithPty(cfg)
	} else {
		setStdio(cmd, cfg.Stdin, cfg.Stdout, cfg.Stderr)
		err = startCmd(cmd)
	}
	if err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	defer func() {
		if err != nil {
			_ = cmd.Process.Kill()
			_, _ = p.Wait()
		}
	}()
	theirs.Close() // so that only the child holds it open
	if err := sendSpec(ours, spec); err != nil {
		return nil, err
	}
	// Init keeps its end open until the command's execve closes it (or it
	// exits): once this read ends, the container is set up, so that an
	// Exec cannot join a half-built mount namespace. An init that fails
	// says why first.
	report, _ := io.ReadAll(ours)
	p.Failed = parseStartError(report)
	p.Pid = cmd.Process.Pid
	if p.StartTime, err = StartTime(p.Pid); err != nil {
		return nil, err
	}
	return p, nil
}

// Wait waits for the container to exit and returns its exit code (128+N
// when killed by signal N), after copying all of its terminal output.
func (p *Process) Wait() (code int, err error) {
	waitErr := p.cmd.Wait()
	if p.relay != nil {
		p.relay.wait()
	}
	if p.restore != nil {
		p.restore()
	}
	if p.cmd.ProcessState == nil {
		return 0, fmt.Errorf("wait for container: %w", waitErr)
	}
	return exitCode(p.cmd.ProcessState), nil
}

// selfCmd returns a command re-executing this binary as the hidden entry
// point arg, with env as its whole environment and spec as fd 3.
func selfCmd(arg string, env []string, extra ...*os.File) *exec.Cmd {
	return &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{"knit", arg},
		Env:        env, // never nil: nil would pass on our own environment
		ExtraFiles: extra,
		SysProcAttr: &syscall.SysProcAttr{
			// A session of its own keeps the terminal's job-control signals
			// (^C, SIGWINCH) away from it: the supervisor relays them.
			Setsid:    true,
			Pdeathsig: unix.SIGKILL,
		},
	}
}

// initEnv is the container init's environment: only the namespace to join.
// The command's environment travels in the Spec.
func initEnv(netnsPath string) []string {
	if netnsPath == "" {
		return []string{}
	}
	return []string{netns.JoinEnv(netns.Join{Kind: "net", Path: netnsPath})}
}

// setStdio hands the files to the child as they are (no copying goroutines);
// nil ones become /dev/null.
func setStdio(cmd *exec.Cmd, in, out, errOut *os.File) {
	// An *os.File nil pointer in an io.Reader would not compare equal to nil.
	if in != nil {
		cmd.Stdin = in
	}
	if out != nil {
		cmd.Stdout = out
	}
	if errOut != nil {
		cmd.Stderr = errOut
	}
}

// specSocket returns the two ends of a socket for sending a child its
// Spec on fd 3 and learning when it is done with it.
func specSocket() (ours, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("spec socket: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "spec"), os.NewFile(uintptr(fds[1]), "spec"), nil
}

// sendSpec writes spec and shuts the writing half, so the reader sees EOF.
func sendSpec(f *os.File, spec []byte) error {
	if _, err := f.Write(spec); err != nil {
		return fmt.Errorf("send spec: %w", err)
	}
	if err := unix.Shutdown(int(f.Fd()), unix.SHUT_WR); err != nil {
		return fmt.Errorf("send spec: %w", err)
	}
	return nil
}

// StartError is why a container's command did not start: the exit code
// its init ends with (125 setup, 126 cannot execute, 127 not found) and
// the message it printed.
type StartError struct {
	Code int
	Msg  string
}

func (e *StartError) Error() string { return e.Msg }

// parseStartError reads init's "CODE MESSAGE" report; nil when there is
// none (the command was executed).
func parseStartError(b []byte) *StartError {
	code, msg, ok := strings.Cut(string(b), " ")
	n, err := strconv.Atoi(code)
	if !ok || err != nil {
		return nil
	}
	return &StartError{Code: n, Msg: msg}
}

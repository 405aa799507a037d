package runner

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/netns"
)

// startCmd starts cmd from a fresh locked thread: Pdeathsig is tied to
// the thread that forks, which must outlive the child.
func startCmd(cmd *exec.Cmd) error { return netns.OnLockedThread(cmd.Start) }

// exitCode is the shell's view of a wait status: the exit code, or 128+N
// when the process was killed by signal N.
func exitCode(ps *os.ProcessState) int {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// StartTime returns the start time of process pid, in clock ticks after
// boot; with the pid it identifies a process across PID reuse.
//
// Equivalent to: awk '{print $22}' /proc/PID/stat
func StartTime(pid int) (uint64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	start, err := strconv.ParseUint(f[statStartTime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return start, nil
}

// Alive reports whether process pid exists, has not exited (a zombie has)
// and started at start, so a recycled pid is not mistaken for it.
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	f, err := statFields(pid)
	return err == nil && f[statState] != "Z" && f[statStartTime] == strconv.FormatUint(start, 10)
}

// Indexes into statFields' result: fields 3, 14, 15 and 22 of proc(5)'s
// /proc/PID/stat, counted after the command name.
const (
	statState     = 3 - 3
	statUtime     = 14 - 3
	statStime     = 15 - 3
	statStartTime = 22 - 3
)

// userHZ is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on Linux).
const userHZ = 100

// CPUTime is the CPU time, user and system, that process pid has used so
// far: every thread's, those that ended included.
func CPUTime(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	u, err1 := strconv.ParseInt(f[statUtime], 10, 64)
	s, err2 := strconv.ParseInt(f[statStime], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: CPU times %q %q", pid, f[statUtime], f[statStime])
	}
	return time.Duration(u+s) * time.Second / userHZ, nil
}

// statFields returns the fields of /proc/PID/stat that follow the command
// name, which is cut off at its last ')' since it may hold spaces and ')'.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return parseStat(pid, b)
}

// statFieldsAt is statFields for the process whose /proc directory is dir.
func statFieldsAt(dir *os.File) ([]string, error) {
	fd, err := unix.Openat(int(dir.Fd()), "stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "stat")
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	return parseStat(0, b)
}

func parseStat(pid int, b []byte) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) <= statStartTime {
		return nil, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// WaitExit waits up to timeout (for ever if negative) for process pid to
// exit and reports whether it did. It works for any process, not only
// children: a pidfd becomes readable when its process exits.
func WaitExit(pid int, timeout time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return true
	}
	deadline := time.Now().Add(timeout)
	if err != nil { // no pidfd (fd limit, old kernel): poll instead
		for unix.Kill(pid, 0) == nil {
			if timeout >= 0 && time.Now().After(deadline) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
		return true
	}
	defer unix.Close(fd)
	return pollExit(fd, time.Until(deadline))
}

// pollExit waits up to timeout (for ever if negative) for pidfd fd to
// become readable, which it does when its process exits.
func pollExit(fd int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		// ppoll, not poll: a wait under a millisecond (a caller polling
		// something else between waits) would be none with poll's.
		var ts *unix.Timespec // nil: for ever
		if timeout >= 0 {
			t := unix.NsecToTimespec(max(time.Until(deadline), 0).Nanoseconds())
			ts = &t
		}
		n, err := unix.Ppoll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ts, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0
	}
}

// Handle is a process opened through a pidfd and checked to be the one that
// started at a given time: signals and waits through it reach that process
// or none, never one that reused its PID meanwhile (a stop waits up to its
// timeout between two signals).
type Handle struct {
	fd    int // -1 without a pidfd (none left, an old kernel): checked by PID
	pid   int
	start uint64
}

// Open opens process pid if it is alive and started at start (Alive), and
// reports false otherwise. The check comes after the open: the pidfd then
// names the process that was checked.
func Open(pid int, start uint64) (*Handle, bool) {
	if pid <= 0 {
		return nil, false
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil, false
	}
	if err != nil {
		fd = -1
	}
	if !Alive(pid, start) {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, false
	}
	return &Handle{fd: fd, pid: pid, start: start}, true
}

// Signal sends sig to the process; an error if it has exited.
//
// Equivalent to: kill -SIG PID, through the pidfd
func (h *Handle) Signal(sig syscall.Signal) error {
	if h.fd < 0 {
		if !Alive(h.pid, h.start) {
			return unix.ESRCH
		}
		return unix.Kill(h.pid, sig)
	}
	return unix.PidfdSendSignal(h.fd, sig, nil, 0)
}

// WaitExit is the package's WaitExit on the opened process.
func (h *Handle) WaitExit(timeout time.Duration) bool {
	if h.fd < 0 {
		return !Alive(h.pid, h.start) || WaitExit(h.pid, timeout)
	}
	return pollExit(h.fd, timeout)
}

// Close releases the pidfd.
func (h *Handle) Close() {
	if h.fd >= 0 {
		unix.Close(h.fd)
	}
}

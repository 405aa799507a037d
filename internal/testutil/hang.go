package testutil

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A command that runs out of time is a hang, and a hang is usually one
// process waiting for another: the report names them. hangReport lists
// every process in the sandbox (what it runs, its state, where each of its
// threads waits in the kernel, the sandbox files it holds open and the
// flocks it holds or waits for); endChildren then asks a knit command for
// its goroutines (SIGABRT, which knit never catches, unlike SIGQUIT)
// before it is killed. The list is made once per sandbox: the commands of
// a stalled round all time out together.

// reportWait bounds the making of the report: reading a process's
// cmdline waits for its memory map's lock, which a process stuck in the
// kernel may hold.
const reportWait = 5 * time.Second

// hangReport describes the processes in the sandbox, the first time it is
// called; later calls say where to find it.
func (s *Sandbox) hangReport() string {
	later := true
	s.reported.Do(func() { later = false })
	if later {
		return "\ntestutil: the processes in the sandbox are listed under the first command that timed out"
	}
	done := make(chan string, 1)
	go func() { done <- s.listProcesses() }()
	select {
	case r := <-done:
		return r
	case <-time.After(reportWait):
		return fmt.Sprintf("\ntestutil: listing the sandbox's processes took over %v (one is stuck in the kernel?)", reportWait)
	}
}

func (s *Sandbox) listProcesses() string {
	locks := flocksByPID()
	var b strings.Builder
	fmt.Fprintf(&b, "\ntestutil: processes in the sandbox at %s:", time.Now().Format("15:04:05.000"))
	for _, pid := range processesIn(s.pidNS) {
		proc := fmt.Sprintf("/proc/%d", pid)
		cmdline, _ := os.ReadFile(proc + "/cmdline")
		fmt.Fprintf(&b, "\n  %d %s [%s] waits in %s", pid, shorten(strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))), 600),
			procState(pid), threadWaits(proc))
		for _, fd := range openUnder(proc, s.dir) {
			fmt.Fprintf(&b, "\n      open %s", fd)
		}
		for _, l := range locks[pid] {
			fmt.Fprintf(&b, "\n      flock %s", l)
		}
	}
	return b.String()
}

// endChildren ends the children of nsenter (the command it runs): a knit
// command gets SIGABRT first, which makes it print its goroutines and
// exit, then everything still there a second later gets SIGKILL.
func endChildren(nsenter *os.Process, dump bool) {
	procs := childProcs(nsenter)
	deadline := time.Now()
	for _, p := range procs {
		if dump && isKnit(p.Pid) {
			_ = p.Signal(syscall.SIGABRT)
			deadline = time.Now().Add(time.Second)
		}
	}
	for _, p := range procs {
		for !exited(p.Pid) && p.Signal(syscall.Signal(0)) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		_ = p.Kill()
		_ = p.Release()
	}
}

// childProcs opens the children of nsenter, our child, as pidfds: each is
// one of them if its parent is nsenter's PID while both are alive (or not
// yet reaped), so that neither PID can have been reused. Once nsenter is
// reaped its PID may be another's, and nothing is opened.
func childProcs(nsenter *os.Process) []*os.Process {
	var procs []*os.Process
	for _, c := range children(nsenter.Pid) {
		p, err := os.FindProcess(c)
		if err != nil {
			continue
		}
		if p.Signal(syscall.Signal(0)) != nil || parentPID(c) != nsenter.Pid ||
			p.Signal(syscall.Signal(0)) != nil || nsenter.Signal(syscall.Signal(0)) != nil {
			_ = p.Release()
			continue
		}
		procs = append(procs, p)
	}
	return procs
}

// parentPID reads PPid from /proc/PID/status (0 if it cannot).
func parentPID(pid int) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// isKnit reports whether the process runs a binary named knit (the one
// the tests build).
func isKnit(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && filepath.Base(exe) == "knit"
}

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// procState is the one-letter state of /proc/PID/stat (R, S, D, T, Z), or
// "?" if the process is gone.
func procState(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := bytes.LastIndexByte(data, ')'); i >= 0 && i+2 < len(data) {
		return string(data[i+2])
	}
	return "?"
}

// threadWaits summarises the kernel functions the process's threads sleep
// in, such as "futex_wait_queue×4, locks_lock_inode_wait×1".
func threadWaits(proc string) string {
	tasks, _ := os.ReadDir(proc + "/task")
	count := map[string]int{}
	for _, t := range tasks {
		w, err := os.ReadFile(filepath.Join(proc, "task", t.Name(), "wchan"))
		name := strings.TrimSpace(string(w))
		if err != nil || name == "" || name == "0" {
			name = "running"
		}
		count[name]++
	}
	var parts []string
	for name, n := range count {
		parts = append(parts, fmt.Sprintf("%s×%d", name, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// openUnder lists the process's descriptors that name files under dir.
func openUnder(proc, dir string) []string {
	fds, _ := os.ReadDir(proc + "/fd")
	var out []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(proc, "fd", fd.Name()))
		if err != nil || !strings.HasPrefix(target, dir) {
			continue
		}
		// The inode, to match the lines of /proc/locks.
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join(proc, "fd", fd.Name()), &st) == nil {
			target += fmt.Sprintf(" (inode %d)", st.Ino)
		}
		out = append(out, fd.Name()+" → "+strings.TrimPrefix(target, dir))
	}
	return out
}

// flocksByPID reads /proc/locks: for each PID, its lines, held ("FLOCK
// ADVISORY WRITE …") or waited for ("-> FLOCK …"), with the inode named.
func flocksByPID() map[int][]string {
	data, _ := os.ReadFile("/proc/locks")
	out := map[int][]string{}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		i := 1
		if len(f) > i && f[i] == "->" {
			i++
		}
		if len(f) < i+5 {
			continue
		}
		if pid, err := strconv.Atoi(f[i+3]); err == nil {
			out[pid] = append(out[pid], strings.Join(f[1:], " "))
		}
	}
	return out
}

package engine

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/knit-dev/knit/internal/runner"
)

// Usage is what a container uses at one moment, for knit stats. knit puts
// containers in no cgroup, so it is summed over the processes alive in the
// container's PID namespace, and read from its network namespace's
// interfaces, where Docker reads its cgroup's counters: the CPU time and
// the I/O of processes that ended are not in it.
type Usage struct {
	At          time.Time
	CPU         time.Duration // user + system time of the processes alive
	Memory      uint64        // their proportional set size (shared pages split), bytes
	MemoryLimit uint64        // the host's memory: knit sets no limit
	NetRx       uint64        // bytes received on the container's interfaces but lo
	NetTx       uint64
	BlockRead   uint64 // bytes the processes read from and wrote to storage
	BlockWrite  uint64
	Pids        int // their tasks (threads), as Docker's PIDS
}

// Usage samples container ref's usage.
func (e *Engine) Usage(ref string) (*Container, *Usage, error) {
	c, err := e.Container(ref)
	if err != nil {
		return nil, nil, err
	}
	pids, err := e.Processes(c.ID)
	if err != nil {
		return nil, nil, err
	}
	u := &Usage{At: time.Now(), MemoryLimit: memTotal()}
	for _, pid := range pids {
		if t, err := runner.CPUTime(pid); err == nil {
			u.CPU += t
		}
		u.Memory += procField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:") * 1024
		io := fmt.Sprintf("/proc/%d/io", pid)
		u.BlockRead += procField(io, "read_bytes:")
		u.BlockWrite += procField(io, "write_bytes:")
		if tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); err == nil {
			u.Pids += len(tasks)
		}
	}
	if c.Netns != "" && len(pids) > 0 { // not the host's, in host mode
		u.NetRx, u.NetTx = netDev(fmt.Sprintf("/proc/%d/net/dev", c.State.Process.Pid))
	}
	return c, u, nil
}

// procField reads the number after name in a /proc file of "name value"
// lines (0 if there is none).
func procField(path, name string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// memTotal is the host's memory, bytes.
func memTotal() uint64 { return procField("/proc/meminfo", "MemTotal:") * 1024 }

// netDev sums the bytes received and sent by every interface of a
// /proc/PID/net/dev but lo.
func netDev(path string) (rx, tx uint64) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, counters, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		f := strings.Fields(counters)
		if len(f) < 9 {
			continue
		}
		r, _ := strconv.ParseUint(f[0], 10, 64)
		t, _ := strconv.ParseUint(f[8], 10, 64)
		rx, tx = rx+r, tx+t
	}
	return rx, tx
}

package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/link"
)

// An attacher makes and removes the network of one container that
// publishes tcp host port 20000+i on its port 80, as a runtime would
// ask its tool to: i counts from 0 and is never reused.
type attacher interface {
	attach(i int) (any, error)
	detach(handle any) error
}

// levels returns the numbers of containers already attached when each
// window of samples is measured: the first measured container is the 1st,
// 10th, 100th (and 1000th) on the network. A Linux bridge takes at most
// 1023 ports, so the 1000th's window stays below that with up to 24
// samples.
func levels() []int {
	if *quick {
		return []int{0, 9, 99}
	}
	return []int{0, 9, 99, 499, 999}
}

// workDir is the sandbox's scratch directory: /run, with a tmpfs of the
// sandbox's own on it, so that nothing is written to the machine's disk
// and the host's /run (its xtables lock, D-Bus socket) stays out of reach.
const workDir = "/run"

// sandboxInit prepares a fresh sandbox: the private tmpfs on /run and
// loopback up.
func sandboxInit() error {
	if err := unix.Mount("bench", workDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("tmpfs on %s: %w", workDir, err)
	}
	h, err := link.Host()
	if err != nil {
		return err
	}
	defer h.Close()
	return h.SetUp("lo")
}

func attachSection(tool string) (err error) {
	if err := sandboxInit(); err != nil {
		return err
	}
	var a attacher
	switch tool {
	case "knit":
		a, err = newKnit()
	case "knit-noport":
		var k *knitTool
		if k, err = newKnit(); err == nil {
			k.noPort = true
			a = k
		}
	case "floor":
		a, err = newFloor()
	case "cni":
		a, err = newCNIChain()
	case "netavark":
		a, err = newNetavark()
	case "knit-cni":
		a, err = newKnitCNI(*knitCNI)
	case "knit-cli":
		a, err = newKnitCLI(*knitBin)
	case "docker":
		a, err = newDocker()
	default:
		err = fmt.Errorf("unknown tool %q", tool)
	}
	if err != nil {
		return err
	}
	if c, ok := a.(io.Closer); ok {
		// A tool that started a daemon stops it (the sandbox would kill it,
		// but not undo what it made outside the sandbox, like cgroups).
		defer func() { err = errors.Join(err, c.Close()) }()
	}
	return measureLevels(tool, a)
}

// measureLevels attaches containers one after the other; at each level it
// times the attach of *samples containers and then their detach, newest
// first, and prints both. Containers made between levels are attached
// without measurement and stay. If the budget runs out before a level is
// reached, it stops there and says how far it got.
func measureLevels(tool string, a attacher) error {
	deadline := time.Now().Add(*budget)
	var live []any
	next := 0
	t0 := time.Now()
	for _, level := range levels() {
		for len(live) < level {
			if time.Now().After(deadline) {
				fmt.Printf("limit-%s: stopped at %d containers after %s (budget %s); levels from the %dth on not measured\n",
					tool, len(live), time.Since(t0).Round(time.Second), *budget, level+1)
				return nil
			}
			h, err := a.attach(next)
			if err != nil {
				return fmt.Errorf("attach container %d: %w", next+1, err)
			}
			next++
			live = append(live, h)
		}
		at := make(latencies, 0, *samples)
		dt := make(latencies, 0, *samples)
		var atCPU, dtCPU time.Duration
		err := withoutGC(func() error {
			hs := make([]any, 0, *samples)
			for range *samples {
				var h any
				wall, cpu, err := timed(func() (err error) { h, err = a.attach(next); return err })
				if err != nil {
					return fmt.Errorf("attach container %d: %w", next+1, err)
				}
				at, atCPU = append(at, wall), atCPU+cpu
				next++
				hs = append(hs, h)
			}
			for i := len(hs) - 1; i >= 0; i-- {
				wall, cpu, err := timed(func() error { return a.detach(hs[i]) })
				if err != nil {
					return fmt.Errorf("detach: %w", err)
				}
				dt, dtCPU = append(dt, wall), dtCPU+cpu
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !cpuCounted[tool] {
			atCPU, dtCPU = -1, -1
		}
		at.print(fmt.Sprintf("BenchmarkAttach/tool=%s/n=%d", tool, level+1), atCPU)
		dt.print(fmt.Sprintf("BenchmarkDetach/tool=%s/n=%d", tool, level+1), dtCPU)
		fmt.Fprintf(os.Stderr, "peers: %s: level %d done at %s\n", tool, level+1, time.Since(t0).Round(time.Second))
	}
	fmt.Printf("elapsed-%s: %s\n", tool, time.Since(t0).Round(time.Second))
	return nil
}

// withoutGC runs a level's samples with the garbage collector off, after
// a collection (their garbage, a few MB, is collected at the next level):
// as in a knit command's fresh process, which never lives long enough to
// collect, where in this long-lived one an operation in ~20 would share
// its CPUs with a collection. The Go tools (knit, the floor) are measured
// alike; ./bench's withoutGC does the same for Go's harness.
func withoutGC(fn func() error) error {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	return fn()
}

// timed runs one operation and returns its wall-clock and CPU time (see
// cpuTime).
func timed(op func() error) (wall, cpu time.Duration, err error) {
	c0, s := cpuTime(), time.Now()
	err = op()
	return time.Since(s), cpuTime() - c0, err
}

// latencies are one duration per operation.
type latencies []time.Duration

// cpuCounted are the tools whose whole work is done by this process or by
// children it waits for, so that cpuTime covers it. The others leave part
// of it to processes that outlive the operation: dockerd, containerd and
// the shims; knit's container supervisors.
var cpuCounted = map[string]bool{"knit": true, "knit-noport": true, "floor": true, "cni": true, "netavark": true, "knit-cni": true}

// cpuTime is the CPU time (user and system) used so far by this process
// and by the children it has waited for. Kernel work done later by the
// kernel's own threads, such as a deleted namespace's cleanup, is not in
// it.
func cpuTime() time.Duration {
	var self, children unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &self)
	_ = unix.Getrusage(unix.RUSAGE_CHILDREN, &children)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + children.Utime.Nano() + children.Stime.Nano())
}

// print writes one benchmark line: count, mean in ns/op, and p50, p95 and
// max in ms; with cpu ≥ 0 (the CPU time of all the operations), the mean
// CPU time per operation in ms too.
func (l latencies) print(name string, cpu time.Duration) {
	s := slices.Clone(l)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	pct := func(p float64) float64 { return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1000 }
	line := fmt.Sprintf("%s\t%d\t%d ns/op\t%.3f p50-ms\t%.3f p95-ms\t%.3f max-ms",
		name, len(s), int64(sum)/int64(len(s)), pct(0.5), pct(0.95), pct(1))
	if cpu >= 0 {
		line += fmt.Sprintf("\t%.3f cpu-ms", float64(cpu.Microseconds())/1000/float64(len(s)))
	}
	fmt.Println(line)
}

// addrOf is container i's address in a /16 whose gateway is .0.1.
func addrOf(subnet netip.Prefix, i int) netip.Addr {
	b := subnet.Addr().As4()
	n := i + 2
	b[2], b[3] = byte(n>>8), byte(n)
	return netip.AddrFrom4(b)
}

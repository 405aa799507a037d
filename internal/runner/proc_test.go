package runner

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestStartTimeAliveWaitExit(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	start, err := StartTime(pid)
	if err != nil || start == 0 {
		t.Fatalf("StartTime = %d, %v", start, err)
	}
	if !Alive(pid, start) {
		t.Error("Alive = false for a running process")
	}
	if Alive(pid, start+1) {
		t.Error("Alive = true for another start time (a reused pid)")
	}
	if Alive(0, 0) || Alive(-1, start) {
		t.Error("Alive = true for pid <= 0")
	}
	if WaitExit(pid, 50*time.Millisecond) {
		t.Error("WaitExit = true while the process runs")
	}
	// A wait under a millisecond still waits (it is never early).
	t0 := time.Now()
	if WaitExit(pid, 400*time.Microsecond) {
		t.Error("WaitExit(400µs) = true while the process runs")
	}
	if d := time.Since(t0); d < 400*time.Microsecond {
		t.Errorf("WaitExit(400µs) returned after %v", d)
	}
	// WaitExit is for non-children too: wait from a goroutine with a pidfd
	// while the kill happens.
	exited := make(chan bool, 1)
	go func() { exited <- WaitExit(pid, 10*time.Second) }()
	time.Sleep(20 * time.Millisecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if !<-exited {
		t.Fatal("WaitExit = false after kill")
	}
	if Alive(pid, start) {
		t.Error("Alive = true for a zombie")
	}
	_ = cmd.Wait()
	if Alive(pid, start) {
		t.Error("Alive = true after reaping")
	}
	if !WaitExit(pid, time.Millisecond) {
		t.Error("WaitExit = false for a pid that is gone")
	}
}

func TestStartTimeSelf(t *testing.T) {
	a, err := StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := StartTime(os.Getppid())
	if a < b {
		t.Errorf("own start time %d before parent's %d", a, b)
	}
	if _, err := StartTime(1 << 30); err == nil {
		t.Error("StartTime of a missing pid: no error")
	}
}

// CPUTime counts this process's own work: it grows by about what a busy
// loop spends by the kernel's other account of it (getrusage), and a
// missing process is an error. The loop runs until it has had 300 ms of
// CPU, however long a loaded machine takes to give them.
func TestCPUTime(t *testing.T) {
	used := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start, x := used(), 0
	for deadline := time.Now().Add(time.Minute); used()-start < 300*time.Millisecond && time.Now().Before(deadline); {
		for range 10000 {
			x++
		}
	}
	spent := used() - start
	after, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Both count in clock ticks (10 ms); other goroutines add a little.
	if d := after - before; d < spent-50*time.Millisecond {
		t.Errorf("CPU time grew by %v over a busy loop that spent %v (%d turns)", d, spent, x)
	}
	if _, err := CPUTime(1 << 30); err == nil {
		t.Error("CPUTime of a missing process: no error")
	}
}

// A negative timeout waits for ever: past any short deadline, until the
// process exits.
func TestWaitExitForever(t *testing.T) {
	cmd := exec.Command("sleep", "0.3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if !WaitExit(cmd.Process.Pid, -1) {
		t.Error("WaitExit(-1) = false")
	}
	if d := time.Since(t0); d < 250*time.Millisecond {
		t.Errorf("WaitExit(-1) returned after %v, before the process exited", d)
	}
	_ = cmd.Wait()
}

// A Handle reaches the process it was opened on and no other: opened on a
// start time that is not the process's, it is refused; signals and waits
// go through it.
func TestHandle(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	start, err := StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := Open(pid, start+1); ok {
		h.Close()
		t.Fatal("Open with another start time: ok, want refused (a reused PID)")
	}
	h, ok := Open(pid, start)
	if !ok {
		t.Fatal("Open of a live process refused")
	}
	defer h.Close()
	if h.WaitExit(20 * time.Millisecond) {
		t.Fatal("WaitExit = true while it runs")
	}
	if err := h.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !h.WaitExit(5 * time.Second) {
		t.Fatal("WaitExit = false after SIGTERM")
	}
	_ = cmd.Wait()
	if err := h.Signal(syscall.SIGKILL); err == nil {
		t.Error("Signal after the exit succeeded: it must not reach whoever has the PID now")
	}
	if _, ok := Open(pid, start); ok {
		t.Error("Open of a reaped process: ok")
	}
}

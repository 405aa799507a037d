package testutil

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostLinks is the machine's own interfaces and addresses, which no sandbox
// may change.
func hostLinks(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		fmt.Fprintf(&b, "%s %v %v\n", i.Name, i.Flags, addrs)
	}
	return b.String()
}

// findProcess returns the PID of a live process in the PID namespace ns
// with the given /proc/PID/cmdline, or 0.
func findProcess(ns, cmdline string) int {
	for _, pid := range processesIn(ns) {
		if got, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); string(got) == cmdline && !exited(pid) {
			return pid
		}
	}
	return 0
}

func waitGone(t *testing.T, what string, pid int) {
	t.Helper()
	for deadline := time.Now().Add(exitTimeout); !exited(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still running", what, pid)
		}
	}
}

func TestSandboxNetwork(t *testing.T) {
	t.Parallel()
	s := NewSandbox(t)
	before := hostLinks(t)

	links := s.MustRun(t, "ip", "-o", "link")
	if !strings.Contains(links, " wan0@") || !strings.Contains(links, " lo:") {
		t.Errorf("links inside want lo and wan0:\n%s", links)
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Name != "lo" && strings.Contains(links, " "+i.Name+":") {
			t.Errorf("host interface %s visible inside:\n%s", i.Name, links)
		}
	}
	if r := s.MustRun(t, "ip", "route"); !strings.Contains(r, "default via 198.51.100.2 dev wan0") {
		t.Errorf("routes inside:\n%s", r)
	}
	s.MustRun(t, "ping", "-c1", "-W2", "198.51.100.2")
	s.MustRun(t, "ping", "-c1", "-W2", "203.0.113.1")
	if r := s.World("ping", "-c1", "-W2", "198.51.100.1"); r.Code != 0 {
		t.Errorf("world cannot reach the sandbox: %+v", r)
	}
	if r := s.World("ip", "route"); r.Code != 0 || !strings.Contains(r.Stdout, "default via 198.51.100.1 dev eth0") {
		t.Errorf("routes in world: %+v", r)
	}
	if after := hostLinks(t); after != before {
		t.Errorf("host links changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestSandboxHasItsOwnNamespaces(t *testing.T) {
	t.Parallel()
	s := NewSandbox(t)
	for _, ns := range []string{"net", "mnt", "pid"} {
		host, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		inside := strings.TrimSpace(s.MustRun(t, "readlink", "/proc/self/ns/"+ns))
		if inside == host {
			t.Errorf("%s namespace inside is the host's (%s)", ns, host)
		}
	}
	// /proc is the sandbox's: its PID 1 is the holder.
	if init := s.MustRun(t, "cat", "/proc/1/cmdline"); !strings.Contains(init, "--hold") {
		t.Errorf("PID 1 inside is %q, want the sandbox holder", init)
	}
	// /sys is the sandbox's network namespace's.
	if sys := s.MustRun(t, "ls", "/sys/class/net"); strings.Fields(sys)[0] != "lo" || !strings.Contains(sys, "wan0") {
		t.Errorf("/sys/class/net inside: %s", sys)
	}
}

func TestSandboxResolvConf(t *testing.T) {
	t.Parallel()
	host, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Skip("host has no /etc/resolv.conf to replace")
	}
	s := NewSandbox(t)
	if got := s.MustRun(t, "cat", "/etc/resolv.conf"); got != "nameserver 198.51.100.2\n" {
		t.Errorf("resolv.conf inside = %q", got)
	}
	if after, _ := os.ReadFile("/etc/resolv.conf"); string(after) != string(host) {
		t.Errorf("host resolv.conf changed: %q -> %q", host, after)
	}
}

func TestSandboxKnitDirectories(t *testing.T) {
	t.Parallel()
	s := NewSandbox(t)
	env := s.MustRun(t, "env")
	for k, v := range map[string]string{"KNIT_DATA_ROOT": s.DataRoot(), "KNIT_EXEC_ROOT": s.ExecRoot(), "KNIT_CONFIG": s.ConfigPath()} {
		if !strings.Contains(env, "\n"+k+"="+v+"\n") {
			t.Errorf("env inside lacks %s=%s", k, v)
		}
	}
	s.MustRun(t, "test", "-d", s.DataRoot())
	s.MustRun(t, "test", "-d", s.ExecRoot())
	if fs := s.MustRun(t, "stat", "-f", "-c", "%T", s.Dir()); strings.TrimSpace(fs) != "tmpfs" {
		t.Errorf("sandbox dir inside is on %s, want tmpfs", fs)
	}
	s.WriteConfig(t, `{"bip":"10.1.0.1/24"}`)
	if got := s.MustRun(t, "cat", s.ConfigPath()); got != `{"bip":"10.1.0.1/24"}` {
		t.Errorf("config inside = %q", got)
	}
	// All of it lives in the sandbox's mount namespace only.
	if entries, _ := os.ReadDir(s.Dir()); len(entries) != 0 {
		t.Errorf("sandbox dir on the host is not empty: %v", entries)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), s.Dir()) {
		t.Errorf("sandbox mount visible on the host")
	}
}

func TestSandboxRunResults(t *testing.T) {
	t.Parallel()
	s := NewSandbox(t)
	r := s.Run("sh", "-c", "echo out; echo err >&2; exit 3")
	if r != (Result{Stdout: "out\n", Stderr: "err\n", Code: 3}) {
		t.Errorf("Run = %+v", r)
	}
	if r := s.Run("sh", "-c", "kill -9 $$"); r.Code != 128+9 {
		t.Errorf("killed command: Code = %d, want 137", r.Code)
	}
	if r := s.Run("no-such-command-here"); r.Code == 0 {
		t.Errorf("missing command: %+v", r)
	}
	if r := s.Run(); r.Code != -1 {
		t.Errorf("Run(): %+v", r)
	}

	s.timeout = 300 * time.Millisecond
	start := time.Now()
	r = s.Run("sleep", "77")
	if r.Code != -1 || !strings.Contains(r.Stderr, "timed out") || time.Since(start) > exitTimeout {
		t.Errorf("hung command: %+v after %v", r, time.Since(start))
	}
	// The command itself was killed, not only nsenter.
	if pid := findProcess(s.pidNS, "sleep\x0077\x00"); pid != 0 {
		t.Errorf("timed-out command still running as pid %d", pid)
	}
	// The first timeout lists the sandbox's processes; later ones point
	// to that list.
	if !strings.Contains(r.Stderr, "processes in the sandbox") || !strings.Contains(r.Stderr, "sleep 77 [S] waits in") {
		t.Errorf("first timeout lists no processes:\n%s", r.Stderr)
	}
	if r := s.Run("sleep", "78"); r.Code != -1 || !strings.Contains(r.Stderr, "listed under the first command") {
		t.Errorf("second timeout: %+v", r)
	}
}

// TestSandboxHangNamesTheLockHolder hangs a command on a flock that another
// holds: the report shows the holder's lock and the waiter's wait.
func TestSandboxHangNamesTheLockHolder(t *testing.T) {
	s := NewSandbox(t)
	lock := filepath.Join(s.Dir(), "held.lock")
	s.Start(t, "flock", lock, "sleep", "79")
	for deadline := time.Now().Add(exitTimeout); !strings.Contains(s.MustRun(t, "cat", "/proc/locks"), "FLOCK"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the holder took no flock")
		}
	}
	s.timeout = 500 * time.Millisecond
	r := s.Run("flock", lock, "true")
	if r.Code != -1 {
		t.Fatalf("waiter did not time out: %+v", r)
	}
	for _, want := range []string{"flock " + lock + " sleep 79", "open 3 → /held.lock (inode ", "flock FLOCK ADVISORY WRITE", "flock -> FLOCK ADVISORY WRITE"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("report lacks %q:\n%s", want, r.Stderr)
		}
	}
}

// TestSandboxCleanupKillsEverything runs a sandbox in a subtest, so that
// its cleanup has run when the subtest returns.
func TestSandboxCleanupKillsEverything(t *testing.T) {
	t.Parallel()
	var holder, nsenter, bg, daemon int
	var pidNS string
	t.Run("sandbox", func(t *testing.T) {
		s := NewSandbox(t)
		holder, pidNS = s.pid, s.pidNS
		cmd := s.Start(t, "sleep", "1001")
		nsenter, bg = cmd.Process.Pid, children(cmd.Process.Pid)[0]
		// A daemon: its parent exits, so it is reparented to the holder.
		s.MustRun(t, "sh", "-c", "setsid sleep 1002 </dev/null >/dev/null 2>&1 &")
		for deadline := time.Now().Add(exitTimeout); daemon == 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("daemon not found in the sandbox")
			}
			daemon = findProcess(pidNS, "sleep\x001002\x00")
		}
	})
	for what, pid := range map[string]int{"holder": holder, "nsenter": nsenter, "background command": bg, "daemon": daemon} {
		waitGone(t, what, pid)
	}
	if left := processesIn(pidNS); len(left) != 0 {
		t.Errorf("left in the sandbox's PID namespace: %v", left)
	}
}

func TestStartedProcessDiesWithTheSandbox(t *testing.T) {
	t.Parallel()
	s := NewSandbox(t)
	cmd := s.Start(t, "sh", "-c", "echo started; exec sleep 1003")
	inside := children(cmd.Process.Pid)
	if len(inside) != 1 {
		t.Fatalf("children of nsenter: %v", inside)
	}
	if err := syscall.Kill(s.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(exitTimeout):
		t.Fatal("background command outlived its sandbox")
	}
	waitGone(t, "background command", inside[0])
}

// TestSandboxDiesWithTestBinary kills a test binary that holds a sandbox;
// Pdeathsig must take the sandbox down with it.
func TestSandboxDiesWithTestBinary(t *testing.T) {
	if os.Getenv("TESTUTIL_HOLDER_HELPER") == "1" {
		s := NewSandbox(t)
		fmt.Printf("holder %d\n", s.pid)
		time.Sleep(time.Hour) // until the parent test kills us
		return
	}
	t.Parallel()
	requireSandbox(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSandboxDiesWithTestBinary$")
	// The helper's temp dirs (its sandbox dir) land in ours, so they are
	// removed even though the helper never runs its cleanups.
	cmd.Env = append(os.Environ(), "TESTUTIL_HOLDER_HELPER=1", "TMPDIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	holder := 0
	for sc := bufio.NewScanner(out); holder == 0 && sc.Scan(); {
		if pid, ok := strings.CutPrefix(sc.Text(), "holder "); ok {
			holder, _ = strconv.Atoi(pid)
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if holder == 0 {
		t.Fatal("helper did not report its sandbox")
	}
	waitGone(t, "holder of a killed test binary", holder)
}

func TestScriptDirect(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	tmp := t.TempDir()
	script := filepath.Join(RepoRoot(t), "scripts", "sandbox")
	run := func(extraEnv []string, args ...string) (string, int) {
		cmd := exec.Command(script, args...)
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "KNIT_") || strings.HasPrefix(kv, "SANDBOX_")
		}), append(extraEnv, "TMPDIR="+tmp)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := run(nil, "sh", "-c", `ip -o link; cat /etc/resolv.conf; echo "data=$KNIT_DATA_ROOT"; exit 3`)
	if code != 3 {
		t.Errorf("exit code %d, want 3 (the command's):\n%s", code, out)
	}
	for _, want := range []string{" wan0@", "nameserver 198.51.100.2", "data=" + tmp + "/knit-sandbox."} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("the script left %v in TMPDIR", entries)
	}

	host, _ := os.ReadFile("/etc/resolv.conf")
	if out, _ := run([]string{"SANDBOX_KEEP_RESOLV=1"}, "cat", "/etc/resolv.conf"); out != string(host) {
		t.Errorf("SANDBOX_KEEP_RESOLV=1: resolv.conf inside = %q, want the host's", out)
	}
	// Honoured: a KNIT_* already set.
	if out, _ := run([]string{"KNIT_CONFIG=/x/config.json"}, "sh", "-c", "echo $KNIT_CONFIG"); out != "/x/config.json\n" {
		t.Errorf("KNIT_CONFIG inside = %q", out)
	}
	// The internal entry point refuses to run outside a fresh PID namespace.
	// It runs in throwaway net and mount namespaces all the same, so a
	// broken check could not touch the host.
	refused := exec.Command("unshare", "--net", "--mount", "--propagation", "private", script, "--inside", "true")
	if out, err := refused.CombinedOutput(); err == nil || !strings.Contains(string(out), "PID 1") {
		t.Errorf("--inside outside a sandbox: err %v, output %q", err, out)
	}
	// As PID 1 of a fresh PID namespace, but in its caller's network
	// namespace, it refuses too. The caller here is a throwaway network
	// namespace, which a broken check would change instead of the host's.
	// (A PID namespace may not read its parent's init's /proc/1/ns, so the
	// caller names its namespaces.)
	sameNet := exec.Command("unshare", "--net", "--", "sh", "-c",
		`SANDBOX_HOST_NET=$(readlink /proc/self/ns/net) SANDBOX_HOST_MNT=$(readlink /proc/self/ns/mnt) exec unshare --pid --fork --mount --propagation private "$0" --inside true`, script)
	if out, err := sameNet.CombinedOutput(); err == nil || !strings.Contains(string(out), "still in the host's net namespace") {
		t.Errorf("--inside in its caller's network namespace: err %v, output %q", err, out)
	}
	// Nor in one that has links besides lo, whatever the variables say.
	faked := exec.Command("unshare", "--net", "--", "sh", "-c",
		`ip link add kt0 type veth peer name kt1 && SANDBOX_HOST_NET='net:[1]' SANDBOX_HOST_MNT='mnt:[1]' exec unshare --pid --fork --mount --propagation private "$0" --inside true`, script)
	if out, err := faked.CombinedOutput(); err == nil || !strings.Contains(string(out), "links besides lo") {
		t.Errorf("--inside in a namespace with links, the caller's named wrongly: err %v, output %q", err, out)
	}
	noCaller := exec.Command("unshare", "--net", "--mount", "--pid", "--fork", "--propagation", "private", script, "--inside", "true")
	noCaller.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "SANDBOX_") })
	if out, err := noCaller.CombinedOutput(); err == nil || !strings.Contains(string(out), "SANDBOX_HOST_NET unset") {
		t.Errorf("--inside without the caller's namespaces: err %v, output %q", err, out)
	}
}

func TestBusybox(t *testing.T) {
	t.Parallel()
	bb := Busybox(t)
	if Busybox(t) != bb {
		t.Error("Busybox built twice")
	}
	for _, p := range []string{"bin/sh", "bin/ping", "bin/wget", "etc", "proc", "sys", "dev", "root"} {
		if _, err := os.Stat(filepath.Join(bb, p)); err != nil {
			t.Error(err)
		}
	}
	if fi, err := os.Stat(filepath.Join(bb, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("tmp: %v %v", fi.Mode(), err)
	}
	// Static: it runs with nothing but itself in the root. chroot inside a
	// sandbox, so that not even that touches the host.
	s := NewSandbox(t)
	if out := s.MustRun(t, "chroot", bb, "/bin/sh", "-c", "echo hi from $(basename $0)"); out != "hi from sh\n" {
		t.Errorf("chroot busybox: %q", out)
	}
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "scripts", "sandbox")); err != nil {
		t.Errorf("RepoRoot %s: %v", root, err)
	}
}

// A knit command that times out prints its goroutines before it is
// killed: SIGABRT, which knit never catches (a foreground run holds
// SIGQUIT and forwards it to its container).
func TestSandboxTimeoutDumpsKnitGoroutines(t *testing.T) {
	knit, bb := KnitBinary(t), Busybox(t)
	s := NewSandbox(t)
	s.timeout = 2 * time.Second
	r := s.Run(knit, "run", "--rm", "--rootfs", bb, "sleep", "60")
	if r.Code != -1 || !strings.Contains(r.Stderr, "SIGABRT") || !strings.Contains(r.Stderr, "goroutine ") {
		t.Errorf("timed-out knit run: exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
}

package testutil

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// runTimeout bounds every command run in a sandbox, so that a hung
	// command fails its test instead of stalling the whole binary until
	// go test's -timeout.
	runTimeout = 60 * time.Second
	// readyTimeout bounds the sandbox's setup (a few ip commands).
	readyTimeout = 30 * time.Second
	// exitTimeout bounds how long a cleanup waits for a killed process.
	exitTimeout = 10 * time.Second
	// sbinPath is appended to PATH: ip and friends live there, and a
	// non-login root shell may not have it.
	sbinPath = "/usr/local/sbin:/usr/sbin:/sbin"
)

// Sandbox is a throwaway network + mount + PID namespace set up by
// scripts/sandbox (see its header for the network inside). The script stays
// as PID 1 of the PID namespace (the "holder"); commands join its namespaces
// with nsenter. Killing the holder kills every process inside, and with the
// last of them go the namespaces and every mount made inside.
//
// Paths the sandbox returns are as seen inside: the knit directories live
// on a tmpfs that exists only in the sandbox's mount namespace, so reach
// them through Run or WriteConfig, not from the test process.
type Sandbox struct {
	dir     string
	holder  *os.Process   // killed through a pidfd: safe once reaped
	pid     int           // the holder's PID, in the test's PID namespace
	pidNS   string        // "pid:[inode]" of the sandbox, to find leftovers
	held    chan struct{} // closed when the holder has been reaped
	env     []string
	timeout time.Duration // per command; a field so that tests can shorten it
	// reported is done once a timed-out command has listed the sandbox's
	// processes (hang.go).
	reported sync.Once
}

// Result is what a command run in a sandbox did. Code is the exit status,
// 128+N when killed by signal N, and -1 when the command could not be
// started or ran out of time (Stderr then says which).
type Result struct {
	Stdout, Stderr string
	Code           int
}

// NewSandbox makes a sandbox for the test and returns once its network is
// up. The test's cleanup kills the sandbox and fails the test if any of its
// processes outlive it. The holder also dies if the test binary does
// (Pdeathsig). NewSandbox skips the test unless root can create namespaces.
func NewSandbox(t testing.TB) *Sandbox {
	t.Helper()
	requireSandbox(t)
	s := &Sandbox{dir: t.TempDir(), held: make(chan struct{}), timeout: runTimeout}
	s.env = sandboxEnv(s.dir)
	// The script says "ready" on stdout. A pipe of our own (an *os.File, so
	// exec starts no copying goroutine) lets us read just that line, with a
	// deadline; stderr goes to a file for the same reason.
	ready, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Close()
	stderr, err := os.CreateTemp(t.TempDir(), "sandbox-stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	holder := exec.Command(filepath.Join(RepoRoot(t), "scripts", "sandbox"), "--inside", "--hold")
	holder.Env, holder.Stdout, holder.Stderr = s.env, readyW, stderr
	holder.SysProcAttr = &syscall.SysProcAttr{
		// The script runs as PID 1 of fresh namespaces, so its PID is the
		// one to nsenter into and the one whose death ends everything.
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		// Sent when the thread that forked the holder dies. Go threads
		// outlive the test unless a goroutine exits while locked to one,
		// and such a thread runs nothing else, so it is never this one.
		Pdeathsig: syscall.SIGKILL,
	}
	err = holder.Start()
	readyW.Close()
	if err != nil {
		t.Fatalf("start sandbox: %v", err)
	}
	s.holder, s.pid = holder.Process, holder.Process.Pid
	go func() {
		_ = holder.Wait()
		close(s.held)
	}()
	// Registered before waiting for readiness, so a failed setup is killed too.
	t.Cleanup(func() { s.cleanup(t) })

	_ = ready.SetReadDeadline(time.Now().Add(readyTimeout))
	if l, err := bufio.NewReader(ready).ReadString('\n'); l != "ready\n" {
		// On EOF the script has exited, so its stderr is complete.
		data, _ := os.ReadFile(stderr.Name())
		t.Fatalf("sandbox setup failed (%v):\n%s", err, data)
	}
	if s.pidNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", s.pid)); err != nil {
		t.Fatalf("sandbox pid namespace: %v", err)
	}
	return s
}

// cleanup kills the holder (PID 1 of the sandbox, so the kernel kills every
// other process inside), reaps it and checks that nothing of the sandbox's
// PID namespace is left.
func (s *Sandbox) cleanup(t testing.TB) {
	t.Helper()
	if err := s.holder.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("kill sandbox holder %d: %v", s.pid, err)
	}
	select {
	case <-s.held:
	case <-time.After(exitTimeout):
		t.Errorf("sandbox holder %d still running %v after SIGKILL", s.pid, exitTimeout)
		return
	}
	if s.pidNS == "" {
		return
	}
	var left []int
	for deadline := time.Now().Add(exitTimeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if left = processesIn(s.pidNS); len(left) == 0 {
			return
		}
	}
	t.Errorf("processes of the sandbox outlived it: %v", left)
}

// processesIn lists the PIDs (in the test's namespace) of the processes in
// the PID namespace ns ("pid:[inode]").
func processesIn(ns string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && got == ns {
			pids = append(pids, pid)
		}
	}
	return pids
}

// sandboxEnv is the test's environment with the sandbox's knit directories.
// Any KNIT_*, _KNIT_* or SANDBOX_* the developer exported is dropped: a test
// must never reach real state (/var/lib/knit) or keep the host's resolver.
func sandboxEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PATH" || strings.HasPrefix(k, "KNIT_") || strings.HasPrefix(k, "_KNIT_") || strings.HasPrefix(k, "SANDBOX_") {
			continue
		}
		env = append(env, kv)
	}
	// The namespaces scripts/sandbox --inside must not find itself in.
	hostNet, _ := os.Readlink("/proc/self/ns/net")
	hostMnt, _ := os.Readlink("/proc/self/ns/mnt")
	return append(env,
		"PATH="+os.Getenv("PATH")+":"+sbinPath,
		"SANDBOX_DIR="+dir,
		"SANDBOX_HOST_NET="+hostNet,
		"SANDBOX_HOST_MNT="+hostMnt,
		"KNIT_DATA_ROOT="+filepath.Join(dir, "lib"),
		"KNIT_EXEC_ROOT="+filepath.Join(dir, "run"),
		"KNIT_CONFIG="+filepath.Join(dir, "config.json"),
	)
}

// Dir is the sandbox's private directory, a tmpfs inside the sandbox.
func (s *Sandbox) Dir() string { return s.dir }

// DataRoot is KNIT_DATA_ROOT inside the sandbox.
func (s *Sandbox) DataRoot() string { return filepath.Join(s.dir, "lib") }

// ExecRoot is KNIT_EXEC_ROOT inside the sandbox.
func (s *Sandbox) ExecRoot() string { return filepath.Join(s.dir, "run") }

// ConfigPath is KNIT_CONFIG inside the sandbox; it exists after WriteConfig.
func (s *Sandbox) ConfigPath() string { return filepath.Join(s.dir, "config.json") }

// WriteConfig writes knit's configuration file inside the sandbox.
func (s *Sandbox) WriteConfig(t testing.TB, json string) {
	t.Helper()
	s.WriteFile(t, "config.json", json)
}

// WriteFile writes the file at name, relative to Dir, inside the sandbox
// (.sandbox/resolv.conf is its /etc/resolv.conf). It goes through
// /proc/PID/root of the holder, which resolves paths in the sandbox's
// mount namespace, where the tmpfs is.
func (s *Sandbox) WriteFile(t testing.TB, name, data string) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/root%s", s.pid, filepath.Join(s.dir, name))
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatalf("write %s in the sandbox: %v", name, err)
	}
}

// nsenter is the command that runs args in the sandbox's namespaces. It
// forks, so that args land in the sandbox's PID namespace; its working
// directory is the sandbox's /, where setns(CLONE_NEWNS) leaves it.
// When ctx ends, *hang (if not nil) gets the sandbox's processes, listed
// before the command is ended.
func (s *Sandbox) nsenter(ctx context.Context, args []string, hang *string) *exec.Cmd {
	nsArgs := []string{"--target", strconv.Itoa(s.pid), "--net", "--mount", "--pid", "--"}
	cmd := exec.CommandContext(ctx, "nsenter", append(nsArgs, args...)...)
	cmd.Env = s.env
	// Kill the command inside, not nsenter: nsenter then reaps it and exits
	// with its status. Killing nsenter instead would leave the command
	// running, orphaned to the host's init (a dying parent's orphans go to
	// the reaper of its own PID namespace, and nsenter's is the host's).
	cmd.Cancel = func() error {
		if cmd.Process.Signal(syscall.Signal(0)) != nil {
			return nil // reaped already: its PID may be another's
		}
		if hang != nil {
			*hang = s.hangReport()
		}
		endChildren(cmd.Process, true)
		return nil
	}
	// After this, Wait kills nsenter itself (if it never forked) and stops
	// waiting for pipes held open by daemons the command left inside.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Run runs a command inside the sandbox with the sandbox's KNIT_*
// environment and no stdin. It gives up after a minute (Code -1).
func (s *Sandbox) Run(args ...string) Result {
	if len(args) == 0 {
		// nsenter alone would start a shell, never what a test means.
		return Result{Stderr: "testutil: Run without a command", Code: -1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	var hang string // read after Wait, which waits for Cancel
	cmd := s.nsenter(ctx, args, &hang)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.Code = -1
		r.Stderr += fmt.Sprintf("\ntestutil: %q timed out after %v and was killed", args, s.timeout) + hang
	case errors.As(err, &exitErr):
		r.Code = exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.Code = 128 + int(ws.Signal())
		}
	case err != nil:
		r.Code = -1
		r.Stderr += "\ntestutil: " + err.Error()
	}
	return r
}

// MustRun is Run that fails the test, showing both outputs, unless the
// command exits 0. It returns stdout.
func (s *Sandbox) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	return must(t, args, s.Run(args...))
}

// Knit runs the knit binary (see KnitBinary) inside the sandbox. If the
// binary cannot be built, the Result says so with Code -1.
func (s *Sandbox) Knit(args ...string) Result {
	bin, err := knitBinary()
	if err != nil {
		return Result{Stderr: err.Error(), Code: -1}
	}
	return s.Run(append([]string{bin}, args...)...)
}

// MustKnit is Knit that fails the test unless knit exits 0. It returns
// stdout.
func (s *Sandbox) MustKnit(t testing.TB, args ...string) string {
	t.Helper()
	return must(t, append([]string{"knit"}, args...), s.Knit(args...))
}

// World runs a command in the sandbox's "world" namespace, the far end of
// wan0: the router at 198.51.100.2 that also owns 203.0.113.1.
func (s *Sandbox) World(args ...string) Result {
	return s.Run(append([]string{"ip", "netns", "exec", "world"}, args...)...)
}

func must(t testing.TB, args []string, r Result) string {
	t.Helper()
	if r.Code != 0 {
		t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// Start starts a command inside the sandbox in the background and returns
// once it runs there. Its output goes to the test log. The test's cleanup
// kills it by PID and reaps it; Wait for it yourself only before the test
// ends. Cmd.Process is nsenter; the command itself is nsenter's only child,
// and nsenter exits with its status.
func (s *Sandbox) Start(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("testutil: Start without a command")
	}
	out := &lineLogger{t: t, prefix: filepath.Base(args[0]) + ": "}
	cmd := s.nsenter(context.Background(), args, nil)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %q in sandbox: %v", args, err)
	}
	t.Cleanup(func() {
		// As in nsenter's Cancel: the command first, nsenter only if it
		// does not follow.
		endChildren(cmd.Process, false)
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait() // an error when the test waited already
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(exitTimeout):
			_ = cmd.Process.Kill()
			<-done
		}
		out.stop()
	})
	// nsenter forks only after joining the namespaces; until then the
	// command is not inside, so a test could race it.
	for deadline := time.Now().Add(exitTimeout); len(children(cmd.Process.Pid)) == 0 && !exited(cmd.Process.Pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%q did not start in the sandbox within %v", args, exitTimeout)
		}
	}
	return cmd
}

// children lists the child PIDs of pid (a single-threaded process).
func children(pid int) []int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// exited reports whether pid, our child, has exited: it is a zombie until
// reaped.
func exited(pid int) bool {
	st := procState(pid)
	return st == "?" || st == "Z"
}

// lineLogger sends what a background command writes to the test log, and
// drops what comes after stop, since logging after a test ends panics.
type lineLogger struct {
	t       testing.TB
	prefix  string
	mu      sync.Mutex
	stopped bool
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Log(l.prefix + strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *lineLogger) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}

// sandboxSupport is probed once per test binary: whether this machine can
// make sandboxes at all, and if not, why.
var sandboxSupport struct {
	once   sync.Once
	reason string
}

// requireSandbox skips the test unless it runs as root on a machine that
// lets root create namespaces (a container without CAP_SYS_ADMIN does not)
// and has util-linux's unshare. A missing ip or nsenter is not a reason to
// skip: the sandbox's setup fails, saying which.
func requireSandbox(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	sandboxSupport.once.Do(func() {
		// Fresh namespaces, nothing done in them: this changes nothing.
		out, err := exec.Command("unshare", "--net", "--mount", "--pid", "--fork", "true").CombinedOutput()
		if err != nil {
			sandboxSupport.reason = fmt.Sprintf("cannot create namespaces (unshare --net --mount --pid: %v: %s)", err, bytes.TrimSpace(out))
		}
	})
	if sandboxSupport.reason != "" {
		t.Skip(sandboxSupport.reason)
	}
}

// RepoRoot is the root of the knit module: the nearest directory above the
// test's working directory (its package directory) that holds knit's go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/knit-dev/knit\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/knit-dev/knit above the working directory")
		}
		dir = parent
	}
}

// Artifacts are built once per test binary into its cache directory.
var (
	cacheDir      = sync.OnceValues(makeCacheDir)
	knitBinary    = sync.OnceValues(buildKnit)
	busyboxRootfs = sync.OnceValues(buildBusybox)
)

// makeCacheDir makes the test binary's own directory for artifacts, under
// the system temp dir. Nothing runs at the end of a test binary to remove
// it, so each binary holds a flock on its directory while it lives and
// removes the unlocked (dead) ones it finds. A lock, unlike a PID, means the
// same across PID namespaces (a test run inside scripts/sandbox shares /tmp).
func makeCacheDir() (string, error) {
	removeStaleCacheDirs()
	dir, err := os.MkdirTemp("", "knit-testutil-")
	if err != nil {
		return "", err
	}
	// The file stays open, and so locked, until the process exits: it is
	// kept in a package variable, or the garbage collector's finalizer
	// would close it and another binary would remove the directory.
	f, err := os.Open(dir)
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	cacheDirLocks = append(cacheDirLocks, f)
	return dir, nil
}

// cacheDirLocks holds the locked cache directories open for the life of
// the test binary.
var cacheDirLocks []*os.File

// removeStaleCacheDirs removes the cache directories of test binaries that
// have exited. A minute's grace covers a directory made but not yet locked.
func removeStaleCacheDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "knit-testutil-*"))
	for _, dir := range dirs {
		fi, err := os.Lstat(dir)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		if f, err := os.Open(dir); err == nil {
			if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
				_ = os.RemoveAll(dir)
			}
			f.Close()
		}
	}
}

// KnitBinary builds ./cmd/knit once per test binary and returns its path.
// The binary under test is built without -race (it would slow every e2e
// command several times over) unless KNIT_RACE=1.
func KnitBinary(t testing.TB) string {
	t.Helper()
	bin, err := knitBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func buildKnit() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir, err := cacheDir()
	if err != nil {
		return "", err
	}
	// go test puts its own GOROOT/bin first in the test's PATH.
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	out := filepath.Join(dir, "knit")
	args := []string{"build", "-o", out}
	if os.Getenv("KNIT_RACE") == "1" {
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool, append(args, "./cmd/knit")...)
	cmd.Dir = root
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build knit: %v\n%s", err, output)
	}
	return out, nil
}

// Busybox returns a container root filesystem made of the static busybox:
// bin/busybox, a bin/ symlink for every applet, and empty etc/, tmp/,
// proc/, sys/, dev/ and root/. It is built once per test binary and shared,
// so treat it as read-only. It skips the test unless busybox-static is
// installed (a dynamic busybox would find no libc in the rootfs).
func Busybox(t testing.TB) string {
	t.Helper()
	dir, err := busyboxRootfs()
	var skip skipError
	if errors.As(err, &skip) {
		t.Skip(skip.reason)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// skipError is a missing prerequisite: the test is skipped, not failed.
type skipError struct{ reason string }

func (e skipError) Error() string { return e.reason }

func buildBusybox() (string, error) {
	const src = "/usr/bin/busybox"
	if dynamic, err := isDynamic(src); err != nil || dynamic {
		return "", skipError{fmt.Sprintf("needs busybox-static: %s is missing or not static (%v)", src, err)}
	}
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "busybox")
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	data, err := os.ReadFile(src)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755)
	}
	if err == nil {
		err = os.Chmod(filepath.Join(dir, "tmp"), os.ModeSticky|0o777)
	}
	if err != nil {
		return "", err
	}
	list, err := exec.Command(src, "--list").Output()
	if err != nil {
		return "", fmt.Errorf("busybox --list: %w", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// isDynamic reports whether the ELF file asks for a program interpreter
// (ld.so), that is, whether it needs shared libraries.
func isDynamic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}

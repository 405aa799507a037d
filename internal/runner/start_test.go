package runner

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/testutil"
)

func TestExitCodes(t *testing.T) {
	requireSandbox(t)
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, []byte("echo no\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		spec    Spec
		code    int
		wantErr string
	}{
		{"success", Spec{Args: []string{"true"}}, 0, ""},
		{"exit 3", Spec{Args: []string{"sh", "-c", "exit 3"}}, 3, ""},
		{"not found", Spec{Args: []string{"no-such-command"}}, 127,
			`knit: exec: "no-such-command": executable file not found in $PATH`},
		{"missing path", Spec{Args: []string{"/no/such/file"}}, 127, "no such file or directory"},
		{"not executable", Spec{Args: []string{plain}}, 126, "permission denied"},
		{"setup failure", Spec{Args: []string{"true"}, Rootfs: "/no/such/rootfs"}, 125, "knit: bind rootfs /no/such/rootfs: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := run(t, tt.spec, "")
			if code != tt.code || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("code %d, stderr %q; want %d, %q", code, errOut, tt.code, tt.wantErr)
			}
		})
	}
}

func TestKilledBySignal(t *testing.T) {
	requireSandbox(t)
	p := start(t, StartConfig{Spec: Spec{Args: []string{"sleep", "30"}, Env: []string{testPath}}})
	if err := unix.Kill(p.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := waitWithin(t, p, 10*time.Second); code != 128+9 {
		t.Errorf("code = %d; want 137", code)
	}
}

func TestHostnamePidEnvCwd(t *testing.T) {
	requireSandbox(t)
	cwd := filepath.Join(t.TempDir(), "made", "by", "init")
	spec := Spec{
		Args:     []string{"sh", "-c", `echo $$; cat /proc/sys/kernel/hostname; echo "$FOO"; pwd`},
		Env:      []string{testPath, "FOO=bar baz"},
		Cwd:      cwd,
		Hostname: "ctr-host",
	}
	code, out, errOut := run(t, spec, "")
	want := fmt.Sprintf("1\nctr-host\nbar baz\n%s\n", cwd)
	if code != 0 || out != want {
		t.Errorf("code %d, out %q, err %q; want 0, %q", code, out, errOut, want)
	}
	if host, _ := os.Hostname(); host == "ctr-host" {
		t.Error("the container's hostname leaked into the test's UTS namespace")
	}
}

func TestBinds(t *testing.T) {
	requireSandbox(t)
	dir := t.TempDir()
	src, target, ro := filepath.Join(dir, "src"), filepath.Join(dir, "target"), filepath.Join(dir, "ro")
	write(t, src, "bound\n")
	write(t, target, "original\n")
	missing := filepath.Join(dir, "new", "file") // created by init
	spec := Spec{
		Args: []string{"sh", "-c", fmt.Sprintf("cat %s %s; echo x > %s || echo ro-refused", target, missing, ro)},
		Binds: []Bind{
			{Source: src, Target: target},
			{Source: src, Target: missing},
			{Source: src, Target: ro, ReadOnly: true},
		},
	}
	code, out, errOut := run(t, spec, "")
	if want := "bound\nbound\nro-refused\n"; code != 0 || out != want {
		t.Errorf("code %d, out %q, err %q; want %q", code, out, errOut, want)
	}
	if got := read(t, target); got != "original\n" {
		t.Errorf("host's target = %q; want it unchanged", got)
	}
	if got := read(t, src); got != "bound\n" {
		t.Errorf("source = %q; the read-only bind was written", got)
	}
}

func TestNetns(t *testing.T) {
	requireSandbox(t)
	path := testutil.NewNetns(t)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Args: []string{"readlink", "/proc/self/ns/net"}}
	if _, out, _ := run(t, spec, path); out != fmt.Sprintf("net:[%d]\n", st.Ino) {
		t.Errorf("joined %q; want inode %d", out, st.Ino)
	}
	own, _ := os.Readlink("/proc/self/ns/net")
	if _, out, _ := run(t, spec, ""); out != own+"\n" {
		t.Errorf("host mode: in %q; want the caller's %s", out, own)
	}
}

// TestNoMountLeak makes the sandbox's mounts shared, so a mount the
// container made before making its own "/" private would show up here, and
// checks Hide detaches a namespace directory inside the container.
func TestNoMountLeak(t *testing.T) {
	requireSandbox(t)
	nsDir := filepath.Dir(testutil.NewNetns(t))
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "") }()
	before := read(t, "/proc/self/mountinfo")

	src := filepath.Join(t.TempDir(), "hosts")
	write(t, src, "127.0.0.1 x\n")
	spec := Spec{
		Args:     []string{"cat", "/proc/self/mountinfo"},
		Hostname: "leak",
		Binds:    []Bind{{Source: src, Target: "/etc/hosts"}},
		Hide:     []string{nsDir, "/no/such/dir"},
	}
	code, out, errOut := run(t, spec, "")
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	if strings.Contains(out, nsDir) {
		t.Errorf("hidden %s still mounted in the container:\n%s", nsDir, out)
	}
	if !strings.Contains(out, " /etc/hosts ") {
		t.Errorf("no /etc/hosts bind in the container:\n%s", out)
	}
	if after := read(t, "/proc/self/mountinfo"); after != before {
		t.Errorf("mount table changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestForwardSignals sends the supervisor a SIGTERM, which reaches the
// command's trap: directly, or through knit's init (--init).
func TestForwardSignals(t *testing.T) {
	requireSandbox(t)
	for _, init := range []bool{false, true} {
		t.Run(fmt.Sprintf("init=%v", init), func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			script := `trap "exit 7" TERM; echo ready; while :; do sleep 0.1; done`
			p := start(t, StartConfig{Spec: Spec{Args: []string{"sh", "-c", script}, Env: []string{testPath}, Init: init}, Stdout: w})
			w.Close()
			// As PID 1, sh ignores SIGTERM until its trap is set.
			if line := readLine(t, bufio.NewReader(r)); line != "ready" {
				t.Fatalf("got %q", line)
			}
			stop := p.ForwardSignals()
			defer stop()
			if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := waitWithin(t, p, 10*time.Second); code != 7 {
				t.Errorf("code = %d; want 7 from the trap", code)
			}
		})
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// After the container has ended, a signal neither reaches it nor ends
// knit before knit has recorded the exit: a foreground run's hold
// (HoldRelayed, To; its stop keeps the signals caught) and a supervisor's
// relay (ForwardSignals, stopped later) alike.
func TestRelaysAfterTheEnd(t *testing.T) {
	requireSandbox(t)
	for name, relay := range map[string]func(*Process) func(){
		"foreground": func(p *Process) func() { return HoldRelayed().To(p) },
		"supervisor": (*Process).ForwardSignals,
	} {
		p := start(t, StartConfig{Spec: Spec{Args: []string{"true"}, Env: []string{testPath}}})
		stop := relay(p)
		if code := waitWithin(t, p, 10*time.Second); code != 0 {
			t.Fatalf("%s: code = %d", name, code)
		}
		if name == "foreground" {
			stop() // before the exit is recorded: caught and dropped
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // this process would be gone by now
		stop()
	}
}

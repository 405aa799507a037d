package runner

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// execIn runs cfg in p's container and returns the exit code and output.
func execIn(t *testing.T, p *Process, cfg ExecConfig) (int, string, string) {
	t.Helper()
	out, errOut := capture(t), capture(t)
	cfg.Pid, cfg.Start, cfg.Stdout, cfg.Stderr = p.Pid, p.StartTime, out.w, errOut.w
	if cfg.Env == nil {
		cfg.Env = []string{testPath}
	}
	code, err := Exec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

func TestExec(t *testing.T) {
	requireSandbox(t)
	p := start(t, StartConfig{Spec: Spec{Args: []string{"sleep", "30"}, Env: []string{testPath}, Hostname: "exec-ctr"}})
	ctrPidns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, want, wantErr string
		cfg                 ExecConfig
		code                int
	}{
		{name: "hostname", cfg: ExecConfig{Args: []string{"cat", "/proc/sys/kernel/hostname"}}, want: "exec-ctr\n"},
		{name: "container's proc", cfg: ExecConfig{Args: []string{"cat", "/proc/1/cmdline"}}, want: "sleep\x0030\x00"},
		{name: "pid namespace", cfg: ExecConfig{Args: []string{"readlink", "/proc/self/ns/pid"}}, want: ctrPidns + "\n"},
		{name: "env cwd code", code: 3, want: "v\n/tmp\n", cfg: ExecConfig{
			Args: []string{"sh", "-c", `echo "$V"; pwd; exit 3`}, Env: []string{testPath, "V=v"}, Cwd: "/tmp"}},
		{name: "not found", code: 127, wantErr: `knit: exec: "nope": executable file not found in $PATH`,
			cfg: ExecConfig{Args: []string{"nope"}}},
		{name: "missing cwd", code: 126, wantErr: "chdir /no/such/dir", cfg: ExecConfig{Args: []string{"true"}, Cwd: "/no/such/dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := execIn(t, p, tt.cfg)
			if code != tt.code || out != tt.want || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("code %d, out %q, err %q; want %d, %q, %q", code, out, errOut, tt.code, tt.want, tt.wantErr)
			}
		})
	}
	// Another process with the container's PID (one that reused it, as
	// its start time tells) is refused, not joined.
	if _, err := Exec(ExecConfig{Pid: p.Pid, Start: p.StartTime + 1, Args: []string{"true"}}); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("Exec on another start time: %v, want refused", err)
	}
	if err := unix.Kill(p.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := waitWithin(t, p, 10*time.Second); code != 137 {
		t.Errorf("container code = %d; want 137", code)
	}
}

func TestExecRootfsTty(t *testing.T) {
	requireSandbox(t)
	root := busyboxRootfs(t)
	p := start(t, StartConfig{Spec: Spec{Args: []string{"sleep", "30"}, Env: []string{"PATH=/bin"}, Rootfs: root}})
	cfg := ExecConfig{Args: []string{"sh", "-c", "test -t 0 && test -t 1 && echo tty-ok; readlink /proc/self/fd/0; exit 4"},
		Env: []string{"PATH=/bin"}, Tty: true}
	code, out, errOut := execIn(t, p, cfg)
	// The pty comes from the container's own devpts, as pts/0.
	if code != 4 || out != "tty-ok\r\n/dev/pts/0\r\n" {
		t.Errorf("code %d, out %q, err %q", code, out, errOut)
	}
}

func TestTty(t *testing.T) {
	requireSandbox(t)
	out, copied := capture(t), capture(t)
	spec := Spec{Args: []string{"sh", "-c", "test -t 0 && test -t 1 && test -t 2 && echo tty-ok"}, Env: []string{testPath}, Tty: true}
	p := start(t, StartConfig{Spec: spec, Stdout: out.w, Tty: true, TtyCopy: copied.w})
	if code := waitWithin(t, p, 10*time.Second); code != 0 {
		t.Errorf("code = %d", code)
	}
	if got := out.String(); got != "tty-ok\r\n" {
		t.Errorf("out = %q", got)
	}
	if got := copied.String(); got != "tty-ok\r\n" { // a foreground run's log
		t.Errorf("TtyCopy = %q", got)
	}
}

// TestTtyStdin types into a shell on the container's terminal.
func TestTtyStdin(t *testing.T) {
	requireSandbox(t)
	in, typing, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	defer typing.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	defer outW.Close() // written by the runner itself until Wait returns
	spec := Spec{Args: []string{"sh"}, Env: []string{testPath, "PS1=$ "}, Tty: true}
	p := start(t, StartConfig{Spec: spec, Stdin: in, Stdout: outW, Tty: true})
	fmt.Fprintln(typing, "echo typed-$((40+2))")
	r := bufio.NewReader(outR)
	for line := ""; !strings.Contains(line, "typed-42") || strings.Contains(line, "$(("); {
		line = readLine(t, r) // skips the terminal's echo of the input
	}
	fmt.Fprintln(typing, "exit 5")
	if code := waitWithin(t, p, 10*time.Second); code != 5 {
		t.Errorf("code = %d; want 5", code)
	}
}

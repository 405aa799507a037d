package runner

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// With Init, PID 1 is knit's init and the command its child; codes are the
// command's, as without it.
func TestInitExitCodes(t *testing.T) {
	requireSandbox(t)
	for _, tt := range []struct {
		name    string
		args    []string
		code    int
		out     string
		wantErr string
	}{
		{"the command is not PID 1", []string{"sh", "-c", `[ $$ != 1 ] && tr '\0' ' ' </proc/1/cmdline`}, 0, "knit _init ", ""},
		{"exit 3", []string{"sh", "-c", "exit 3"}, 3, "", ""},
		{"killed by a signal", []string{"sh", "-c", "kill -9 $$"}, 137, "", ""},
		{"not found", []string{"no-such-command"}, 127, "",
			`knit: exec: "no-such-command": executable file not found in $PATH`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, Spec{Args: tt.args, Init: true}, "")
			if code != tt.code || out != tt.out || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("code %d, stdout %q, stderr %q; want %d, %q, %q", code, out, errOut, tt.code, tt.out, tt.wantErr)
			}
		})
	}
}

// An orphan whose parent exits is handed to PID 1. A command that never
// waits (sleep) leaves it a zombie as PID 1; under Init it is reaped.
func TestInitReapsOrphans(t *testing.T) {
	requireSandbox(t)
	script := `(sleep 0.1 &); exec sleep 30`
	for _, init := range []bool{false, true} {
		t.Run(fmt.Sprintf("init=%v", init), func(t *testing.T) {
			p := start(t, StartConfig{Spec: Spec{Args: []string{"sh", "-c", script}, Env: []string{testPath}, Init: init}})
			pid1 := p.Pid
			// The orphan is a child of PID 1 from the moment its parent
			// (the subshell) exits; it ends 0.1 s later.
			time.Sleep(time.Second)
			zombies := zombieChildren(t, pid1)
			if !init && zombies == 0 {
				t.Error("no zombie under a PID 1 that never waits: the test cannot tell reaping apart")
			}
			if init && zombies > 0 {
				t.Errorf("%d zombies under knit's init", zombies)
			}
		})
	}
}

// zombieChildren counts the zombie children of pid, from the host's /proc.
func zombieChildren(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range strings.Fields(string(b)) {
		child, _ := strconv.Atoi(c)
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue // reaped meanwhile
		}
		fields := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(fields) > 0 && fields[0] == "Z" {
			n++
		}
	}
	return n
}

// On a terminal the command's process group is the foreground one, so
// that ^C reaches it from the kernel (and only once), not through init.
func TestInitTtyForeground(t *testing.T) {
	requireSandbox(t)
	out := capture(t)
	script := `set -- $(cat /proc/$$/stat); test -t 0 && [ "$5" = "$8" ] && echo fg-ok`
	p := start(t, StartConfig{Spec: Spec{Args: []string{"sh", "-c", script}, Env: []string{testPath}, Tty: true, Init: true}, Stdout: out.w, Tty: true})
	if code := waitWithin(t, p, 10*time.Second); code != 0 {
		t.Errorf("code = %d", code)
	}
	if got := out.String(); got != "fg-ok\r\n" {
		t.Errorf("out = %q, want the command's group in the foreground", got)
	}
}

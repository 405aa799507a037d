package faults

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestRole(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"run", "-d", "_x"}, ""},
		{[]string{"_init"}, "_init"},
		{[]string{"_exec", "a"}, "_exec"},
		{[]string{"--data-root", "/d", "--exec-root", "/e", "--config", "/c", "_supervise", "ID"}, "_supervise"},
		{[]string{"--data-root=/d", "_dns"}, "_dns"},
		{[]string{"--data-root", "_weird", "ps"}, ""},
	} {
		if got := role(c.args); got != c.want {
			t.Errorf("role(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}

// helperEnv marks the re-executed test binary that runs steps.
const helperEnv = "FAULTS_TEST_HELPER"

func TestHelperSteps(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("run by TestCrash")
	}
	Step("one")
	if err := After("two", func(int) error { return nil })(0); err != nil {
		t.Fatal(err)
	}
	_ = After("never", func(int) error { return errors.New("rolled back") })(0)
	Step("three")
}

// TestHelperConcurrentSteps takes steps on many goroutines at once, as a
// run does when it makes its namespace beside its links.
func TestHelperConcurrentSteps(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("run by TestTraceInOrder")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				Step("s")
			}
		})
	}
	wg.Wait()
}

// TestTraceInOrder: the trace's lines come in the order of their numbers,
// which the crash tests rely on to name the step they crash at.
func TestTraceInOrder(t *testing.T) {
	trace, _ := runHelperTest(t, "TestHelperConcurrentSteps")
	lines := strings.Split(strings.TrimSuffix(trace, "\n"), "\n")
	if len(lines) != 8*200 {
		t.Fatalf("%d lines traced, want %d", len(lines), 8*200)
	}
	for i, l := range lines {
		if want := fmt.Sprintf("%d s", i+1); l != want {
			t.Fatalf("line %d is %q, want %q", i+1, l, want)
		}
	}
}

func runHelper(t *testing.T, env ...string) (trace string, killed bool) {
	t.Helper()
	return runHelperTest(t, "TestHelperSteps", env...)
}

func runHelperTest(t *testing.T, test string, env ...string) (trace string, killed bool) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trace")
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), append(env, helperEnv+"=1", EnvTrace+"="+path)...)
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws, _ := ee.Sys().(syscall.WaitStatus)
		killed = ws.Signaled() && ws.Signal() == syscall.SIGKILL
		if !killed {
			t.Fatalf("helper: %v", err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	return string(data), killed
}

func TestCrash(t *testing.T) {
	trace, killed := runHelper(t)
	if killed || trace != "1 one\n2 two\n3 three\n" {
		t.Fatalf("trace only: killed %v, trace %q", killed, trace)
	}
	trace, killed = runHelper(t, EnvAt+"=2")
	if !killed || trace != "1 one\n2 two\n" {
		t.Fatalf("crash at 2: killed %v, trace %q", killed, trace)
	}
	// Another process's role: nothing counts, nothing crashes.
	trace, killed = runHelper(t, EnvAt+"=1", EnvProc+"=_supervise")
	if killed || trace != "" {
		t.Fatalf("other role: killed %v, trace %q", killed, trace)
	}
}

func TestOffByDefault(t *testing.T) {
	if os.Getenv(EnvAt) != "" || os.Getenv(EnvTrace) != "" {
		t.Skip("crash variables set in the environment")
	}
	if enabled {
		t.Fatal("enabled without any variable")
	}
	Step("nothing") // must return
	fn := func(int) error { return nil }
	if got := After("x", fn); got == nil {
		t.Fatal("After returned nil")
	}
}

func BenchmarkStepOff(b *testing.B) {
	for b.Loop() {
		Step("link.veth-add")
	}
}

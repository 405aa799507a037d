package runner

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// sandboxEnv marks the test binary re-run inside its sandbox.
const sandboxEnv = "KNIT_RUNNER_TEST_SANDBOX"

const testPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// TestMain dispatches the re-executed test binary to Init or ExecMain, as
// cmd/knit does, and as root re-runs the tests in a sandbox.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case InitArg:
			Init()
		case ExecArg:
			ExecMain()
		}
	}
	if os.Geteuid() == 0 && os.Getenv(sandboxEnv) == "" {
		os.Exit(runInSandbox())
	}
	os.Exit(m.Run())
}

// runInSandbox re-runs the tests in private network and mount namespaces:
// host-mode containers then share a throwaway network namespace, and no
// mount a test makes can reach the machine's own mount table.
func runInSandbox() int {
	args := append([]string{"--net", "--mount", "--propagation", "private", "--"}, os.Args...)
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), sandboxEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "unshare:", err)
		return 1
	}
	return 0
}

// requireSandbox skips the test unless it runs as root in the sandbox,
// checked against PID 1's namespaces rather than trusted from the variable.
func requireSandbox(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts containers in new namespaces")
	}
	for _, kind := range []string{"mnt", "net"} {
		self, _ := os.Readlink("/proc/self/ns/" + kind)
		host, _ := os.Readlink("/proc/1/ns/" + kind)
		if os.Getenv(sandboxEnv) == "" || self == "" || self == host {
			t.Skip("not in the test sandbox (unshare --net --mount)")
		}
	}
}

// output collects what a child writes to w.
type output struct {
	w    *os.File
	done chan struct{}
	buf  bytes.Buffer
}

func capture(t *testing.T) *output {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	o := &output{w: w, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		defer r.Close()
		_, _ = io.Copy(&o.buf, r)
	}()
	t.Cleanup(func() { o.w.Close() })
	return o
}

// String returns everything written; call it once the writers are gone.
func (o *output) String() string {
	o.w.Close()
	<-o.done
	return o.buf.String()
}

// start starts a container that is killed, by its pid, when the test ends.
func start(t *testing.T, cfg StartConfig) *Process {
	t.Helper()
	p, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if p.cmd.ProcessState == nil {
			_, _ = p.Wait()
		}
	})
	return p
}

// run runs spec in a container to its end and returns the exit code and
// output.
func run(t *testing.T, spec Spec, netnsPath string) (code int, stdout, stderr string) {
	t.Helper()
	if spec.Env == nil {
		spec.Env = []string{testPath}
	}
	out, errOut := capture(t), capture(t)
	p := start(t, StartConfig{Spec: spec, Netns: netnsPath, Stdout: out.w, Stderr: errOut.w})
	code = waitWithin(t, p, 20*time.Second)
	return code, out.String(), errOut.String()
}

// waitWithin waits for p, killing it if it takes longer than d.
func waitWithin(t *testing.T, p *Process, d time.Duration) int {
	t.Helper()
	timer := time.AfterFunc(d, func() { _ = p.cmd.Process.Kill() })
	defer timer.Stop()
	code, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// readLine reads one line from r within 10s.
func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := r.ReadString('\n')
		ch <- result{s, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatalf("read line: %v (got %q)", res.err, res.s)
		}
		return strings.TrimRight(res.s, "\r\n")
	case <-time.After(10 * time.Second):
		t.Fatal("read line: timed out")
		return ""
	}
}

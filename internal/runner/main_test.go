package runner

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/testutil"
)

const testPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The main goroutine keeps the main thread, as cmd/knit's does: Init
// sets PR_SET_PDEATHSIG, which the kernel ties to the thread, and then
// execs from the same one.
func init() { runtime.LockOSThread() }

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
	if code, reran := testutil.Sandboxed(); reran {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// requireSandbox skips the test unless it runs as root in the sandbox.
func requireSandbox(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts containers in new namespaces")
	}
	if !testutil.InSandbox() {
		t.Skip("not in the test sandbox (unshare --net --mount)")
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

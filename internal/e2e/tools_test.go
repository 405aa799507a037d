package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/knit-dev/knit/internal/testutil"
)

// The test helper programs of testdata/ (udpecho, dnstool, libcnidrive, rasend),
// each built static once per test binary and kept in memory, so that no
// build directory outlives the test binary.
var tools struct {
	mu    sync.Mutex
	built map[string][]byte
}

// tool returns the bytes of testdata/NAME built with CGO_ENABLED=0.
func tool(t *testing.T, name string) []byte {
	t.Helper()
	tools.mu.Lock()
	defer tools.mu.Unlock()
	if bin, ok := tools.built[name]; ok {
		return bin
	}
	bin, err := buildTool(testutil.RepoRoot(t), name)
	if err != nil {
		t.Fatal(err)
	}
	if tools.built == nil {
		tools.built = map[string][]byte{}
	}
	tools.built[name] = bin
	return bin
}

// buildTool builds ./internal/e2e/testdata/NAME as a static binary.
func buildTool(root, name string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "knit-"+name+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// go test puts its own GOROOT/bin first in the test's PATH.
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command(goTool, "build", "-o", out, "./internal/e2e/testdata/"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %v\n%s", name, err, output)
	}
	return os.ReadFile(out)
}

// toolRootfs returns a private copy of the busybox rootfs with testdata/NAME
// in bin/ (testutil.Busybox's is shared and read-only), and the path of that
// binary, which the sandbox's host and world can run too. Call it before
// sandbox(t): cleanups run last-in first-out, so the sandbox, and every
// container using the copy, is gone before the copy is removed.
func toolRootfs(t *testing.T, name string) (rootfs, bin string) {
	t.Helper()
	b := tool(t, name)
	rootfs = filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command("cp", "-a", testutil.Busybox(t), rootfs).CombinedOutput(); err != nil {
		t.Fatalf("copy the busybox rootfs: %v: %s", err, out)
	}
	bin = filepath.Join(rootfs, "bin", name)
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return rootfs, bin
}

package engine

import (
	"os"
	"testing"

	"github.com/knit-dev/knit/internal/testutil"
)

// TestMain runs the tests, as root, in throwaway network and mount
// namespaces: they build engines by hand over fake drivers, but a path
// that reaches the kernel anyway (the exec-root's tmpfs, which syncDNS
// mounts) must not reach the machine's own.
func TestMain(m *testing.M) {
	if code, reran := testutil.Sandboxed(); reran {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestInSandbox: as root, the package's tests run in the sandbox TestMain
// made.
func TestInSandbox(t *testing.T) {
	if os.Geteuid() == 0 && !testutil.InSandbox() {
		t.Fatal("the tests run as root outside their sandbox")
	}
}

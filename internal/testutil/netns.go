// Package testutil holds helpers for tests: throwaway namespaces and sandboxes.
//
// Root tests never change the machine's own network namespace: every link,
// address and route they make lives in a namespace from NewNetns, which is
// deleted (with everything in it) when the test ends.
package testutil

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/netns"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

// NewNetns creates a throwaway network namespace file under t.TempDir() and
// returns its path; the namespace is deleted when the test ends. It skips the
// test unless root.
func NewNetns(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "netns")
	if err := netns.PrepareDir(dir); err != nil {
		t.Fatal(err)
	}
	// Registered after TempDir, so it runs before TempDir's removal, which
	// would fail on a mount point.
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	path := filepath.Join(dir, "ns")
	if err := netns.Create(path, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(path); err != nil {
			t.Errorf("delete netns: %v", err)
		}
	})
	return path
}

// WithNetns runs fn with the path of a throwaway network namespace.
func WithNetns(t testing.TB, fn func(nsPath string)) {
	t.Helper()
	fn(NewNetns(t))
}

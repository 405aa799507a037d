package netns

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
)

// A preparer that holds the directory's lock (stopped, say) makes the
// next one give up after prepareWait with "unavailable", not wait for ever;
// once it lets go, the lock is taken at once.
func TestLockDirGivesUp(t *testing.T) {
	dir := t.TempDir()
	holder, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer func(w time.Duration) { prepareWait = w }(prepareWait)
	prepareWait = 100 * time.Millisecond

	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	err = lockDir(f, dir)
	if errdefs.KindOf(err) != errdefs.KindUnavailable || time.Since(start) < prepareWait {
		t.Fatalf("lockDir on a held lock: %v after %v, want a conflict after %v", err, time.Since(start), prepareWait)
	}
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := lockDir(f, dir); err != nil {
		t.Fatalf("lockDir on a free lock: %v", err)
	}
}

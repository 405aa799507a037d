package flock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A lock held elsewhere is ErrBusy after the wait, not a wait for ever; a
// shared one is shared; once released, the lock is taken.
func TestPoll(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	open := func() *os.File {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	holder, waiter := open(), open()
	if err := Poll(int(holder.Fd()), unix.LOCK_SH, 0); err != nil {
		t.Fatal(err)
	}
	if err := Poll(int(waiter.Fd()), unix.LOCK_SH, 0); err != nil {
		t.Errorf("a second shared lock: %v", err)
	}
	if err := unix.Flock(int(waiter.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := Poll(int(waiter.Fd()), unix.LOCK_EX, 50*time.Millisecond); !errors.Is(err, ErrBusy) || time.Since(start) < 50*time.Millisecond {
		t.Errorf("exclusive beside a shared holder: %v after %v, want ErrBusy after 50ms", err, time.Since(start))
	}
	fd, released := int(holder.Fd()), make(chan struct{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = unix.Flock(fd, unix.LOCK_UN)
		close(released)
	}()
	if err := Poll(int(waiter.Fd()), unix.LOCK_EX, 5*time.Second); err != nil {
		t.Errorf("exclusive once the holder lets go: %v", err)
	}
	<-released
}

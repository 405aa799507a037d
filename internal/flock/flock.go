// Package flock takes flocks with a bound on the wait, so that a holder
// that is stopped (^Z) or hung cannot stall every later command for ever,
// as a blocking flock would.
package flock

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// ErrBusy is Poll's answer when the lock stayed held for the whole wait.
var ErrBusy = errors.New("lock busy")

// Poll takes the flock how (unix.LOCK_SH or unix.LOCK_EX) on fd, trying
// again after 50 µs, doubling up to 2 ms, for at most wait. Polling this
// often hands the lock over within a fraction of a millisecond of its
// release, where bbolt's own 50 ms retry would lose up to 50 ms a command.
func Poll(fd, how int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for pause := 50 * time.Microsecond; ; pause = min(2*pause, 2*time.Millisecond) {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, unix.EWOULDBLOCK):
			return err
		case time.Now().After(deadline):
			return ErrBusy
		}
		time.Sleep(pause)
	}
}

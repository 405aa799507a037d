package server

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// watcher reports changes of the snapshot file: a rename onto it (Save) or
// a write closed on it. It watches the directory, not the file, because
// each Save replaces the file.
type watcher struct {
	f       *os.File
	changed chan struct{} // one pending signal stands for any number of changes
}

// watch starts watching dir. Equivalent to: `inotifywait -m -e
// moved_to,close_write DIR`.
func watch(dir string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	// A non-blocking descriptor makes a pollable File, whose Close
	// unblocks the Read in loop.
	w := &watcher{f: os.NewFile(uintptr(fd), "inotify"), changed: make(chan struct{}, 1)}
	go w.loop()
	return w, nil
}

func (w *watcher) loop() {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return // closed
		}
		if snapshotChanged(buf[:n]) {
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
	}
}

// snapshotChanged reports whether a read of inotify events names the
// snapshot file or says events were lost.
func snapshotChanged(buf []byte) bool {
	for len(buf) >= unix.SizeofInotifyEvent {
		// struct inotify_event { int wd; u32 mask, cookie, len; char name[]; }
		mask := binary.NativeEndian.Uint32(buf[4:])
		end := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[12:]))
		if end > len(buf) {
			return true // cannot happen; reloading is always safe
		}
		name := bytes.TrimRight(buf[unix.SizeofInotifyEvent:end], "\x00")
		if mask&unix.IN_Q_OVERFLOW != 0 || string(name) == SnapshotFile {
			return true
		}
		buf = buf[end:]
	}
	return false
}

// close stops watching. It does not wait: closing an inotify descriptor
// waits for the kernel to free its watches (an RCU grace period), which
// took over a second under load in tests; the descriptor closes in the
// background and loop ends when it has.
func (w *watcher) close() {
	go w.f.Close()
}

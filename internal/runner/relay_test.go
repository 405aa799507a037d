package runner

import (
	"bytes"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// slowWriter takes its time over the first write, as a terminal or a
// pager the user has paused.
type slowWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	first bool
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.first {
		w.first = true
		time.Sleep(3 * drainGrace)
	}
	return w.buf.Write(p)
}

func (w *slowWriter) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Len()
}

// Everything the command wrote reaches the caller, however slowly the
// caller takes it; a process the command left holding the pipe, and
// writing to it, does not keep wait waiting.
func TestStdioRelayDrainsAndDoesNotHang(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	slow := &slowWriter{}
	rel := &Relay{readers: []*os.File{pr}, sigpipe: make(chan os.Signal, 1)}
	rel.copies.Add(1)
	go func() {
		defer rel.copies.Done()
		rel.copy(slow, pr)
	}()
	data := bytes.Repeat([]byte("x"), 48<<10) // under a pipe's buffer: written at once
	if _, err := pw.Write(data); err != nil {
		t.Fatal(err)
	}
	// A process left behind keeps the pipe open, and keeps writing.
	holder, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(pw.Fd())), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	pw.Close() // the command is gone
	stopWriting := make(chan struct{})
	defer close(stopWriting)
	go func() {
		for {
			select {
			case <-stopWriting:
				return
			case <-time.After(drainGrace / 4):
				_, _ = holder.Write([]byte("later\n"))
			}
		}
	}()
	done := make(chan struct{})
	go func() { rel.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * drainGrace):
		t.Fatal("wait still waits for the pipe a process left open")
	}
	if got := slow.len(); got < len(data) {
		t.Errorf("the caller got %d bytes of the %d the command wrote", got, len(data))
	}
}

// wait returns at once when nothing is left, a silent process holding
// the pipe, whatever point the copy was at.
func TestStdioRelayWaitWithASilentHolder(t *testing.T) {
	for range 50 {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		rel := &Relay{readers: []*os.File{pr}, sigpipe: make(chan os.Signal, 1)}
		var out bytes.Buffer
		rel.copies.Add(1)
		go func() {
			defer rel.copies.Done()
			rel.copy(&out, pr)
		}()
		_, _ = pw.Write([]byte("last words\n")) // then the command is gone; pw stays open (the holder)
		done := make(chan struct{})
		go func() { rel.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * drainGrace):
			t.Fatal("wait hangs on a silent holder")
		}
		if out.String() != "last words\n" {
			t.Fatalf("copied %q, want the last words", out.String())
		}
		pw.Close()
		pr.Close()
	}
}

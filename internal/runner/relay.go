package runner

import (
	"errors"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Relay is pipes between a command (exec'd, or a foreground run's) and
// the caller's streams, as Docker's are (containerd's FIFOs): without -t
// the command never holds the caller's own files, a terminal it would
// take for one.
type Relay struct {
	In, Out, Err *os.File // the command's ends (nil: /dev/null)
	readers      []*os.File
	copies       sync.WaitGroup
	sigpipe      chan os.Signal
	gone         atomic.Bool
}

// drainGrace bounds each read once the command is gone. What it wrote is
// all queued in the pipes by then and is copied, however slowly the caller
// takes it; what a process it left running with the pipes open (sh -c
// 'cmd &') writes later is not waited for, where docker exec would hang
// until that process ends.
const drainGrace = 200 * time.Millisecond

// NewRelay makes the pipes: in (if any) is copied to the command's
// stdin until its end; the command's stdout and stderr to out and errOut
// (nil: discarded). A reader of ours that goes away (knit exec ... | head
// -1) closes the pipe, so that the command's next write fails as it would
// have without knit in between, and knit gets EPIPE, not SIGPIPE.
func NewRelay(in, out, errOut *os.File) (r *Relay, err error) {
	r = &Relay{sigpipe: make(chan os.Signal, 1)}
	defer func() {
		if err != nil {
			r.Started()
			r.Wait()
		}
	}()
	signal.Notify(r.sigpipe, syscall.SIGPIPE)
	if in != nil {
		pr, pw, err := os.Pipe()
		if err != nil {
			return r, err
		}
		r.In = pr
		go func() {
			_, _ = io.Copy(pw, in)
			pw.Close()
		}()
	}
	for _, s := range []struct {
		end **os.File
		dst *os.File
	}{{&r.Out, out}, {&r.Err, errOut}} {
		if s.dst == nil {
			continue
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			return r, err
		}
		*s.end = pw
		r.readers = append(r.readers, pr)
		r.copies.Add(1)
		go func() {
			defer r.copies.Done()
			r.copy(s.dst, pr)
			pr.Close() // EOF, all it left copied, or our reader gone: its writes now fail
		}()
	}
	return r, nil
}

// Started closes our copies of the command's ends once it has its own.
// Started and Wait do nothing on a nil Relay (no relay: -t or -d).
func (r *Relay) Started() {
	if r == nil {
		return
	}
	for _, f := range []*os.File{r.In, r.Out, r.Err} {
		if f != nil {
			f.Close()
		}
	}
}

// copy copies src to dst until src's end or dst's failure, or, once the
// command is gone, until it has copied the bytes left queued in src then:
// counted here, between two reads, so that no read of this copy overlaps
// the count.
func (r *Relay) copy(dst io.Writer, src *os.File) {
	buf := make([]byte, 32<<10)
	left := -1 // not counted yet
	for {
		want, gone := buf, r.gone.Load()
		if gone {
			if left < 0 {
				left = queued(src)
			}
			if left == 0 {
				return
			}
			want = buf[:min(len(buf), left)]
			_ = src.SetReadDeadline(time.Now().Add(drainGrace))
		}
		n, err := src.Read(want)
		if gone {
			left -= n
		}
		if n > 0 {
			if _, werr := dst.Write(want[:n]); werr != nil {
				return
			}
		}
		if err != nil && (gone || !errors.Is(err, os.ErrDeadlineExceeded)) {
			return // EOF; or, once gone, nothing more within drainGrace
		}
		// A deadline before gone is wait's wake-up: count, then copy.
	}
}

// Wait, once the command is gone, copies what it left in the pipes: the
// bytes queued in each (FIONREAD, alias TIOCINQ), and no more. The
// deadline first wakes a read under way, which then sees gone. (A run's
// processes are all gone with its PID 1; an exec'd command can leave one
// holding the pipes.)
func (r *Relay) Wait() {
	if r == nil {
		return
	}
	for _, pr := range r.readers {
		_ = pr.SetReadDeadline(time.Now())
	}
	r.gone.Store(true)
	r.copies.Wait()
	signal.Stop(r.sigpipe)
}

// queued is how many bytes wait to be read in the pipe f (0 if unknown).
func queued(f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	var n int
	_ = rc.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil { // FIONREAD
			n = v
		}
	})
	return n
}

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
)

// stdioRelay is pipes between an exec'd command and the caller's streams,
// as docker exec's are (containerd's FIFOs): without -t the command never
// holds the caller's own files, a terminal it would take for one.
type stdioRelay struct {
	in, out, err *os.File // the command's ends (nil: /dev/null)
	readers      []*os.File
	copies       sync.WaitGroup
	sigpipe      chan os.Signal
	gone         atomic.Bool // the command has exited: reads wait drainGrace at most
}

// drainGrace is how long, once the command is gone, a copy waits for more
// to read before it stops: a process the command left running with the
// pipes open (sh -c 'cmd &') is not waited for, where docker exec would
// hang until it ends. What is already in a pipe is always read, however
// slowly the caller takes it.
const drainGrace = 200 * time.Millisecond

// newStdioRelay makes the pipes: in (if any) is copied to the command's
// stdin until its end; the command's stdout and stderr to out and errOut
// (nil: discarded). A reader of ours that goes away (knit exec ... | head
// -1) closes the pipe, so that the command's next write fails as it would
// have without knit in between, and knit gets EPIPE, not SIGPIPE.
func newStdioRelay(in, out, errOut *os.File) (r *stdioRelay, err error) {
	r = &stdioRelay{sigpipe: make(chan os.Signal, 1)}
	defer func() {
		if err != nil {
			r.started()
			r.wait()
		}
	}()
	signal.Notify(r.sigpipe, syscall.SIGPIPE)
	if in != nil {
		pr, pw, err := os.Pipe()
		if err != nil {
			return r, err
		}
		r.in = pr
		go func() {
			_, _ = io.Copy(pw, in)
			pw.Close()
		}()
	}
	for _, s := range []struct {
		end **os.File
		dst *os.File
	}{{&r.out, out}, {&r.err, errOut}} {
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
			pr.Close() // EOF, nothing more once it is gone, or our reader gone: its writes now fail
		}()
	}
	return r, nil
}

// started closes our copies of the command's ends once it has its own.
func (r *stdioRelay) started() {
	for _, f := range []*os.File{r.in, r.out, r.err} {
		if f != nil {
			f.Close()
		}
	}
}

// copy copies src to dst until src's end, dst's failure, or, once the
// command is gone, drainGrace without anything to read.
func (r *stdioRelay) copy(dst io.Writer, src *os.File) {
	buf := make([]byte, 32<<10)
	for {
		if r.gone.Load() {
			_ = src.SetReadDeadline(time.Now().Add(drainGrace))
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil && !(errors.Is(err, os.ErrDeadlineExceeded) && !r.gone.Load()) {
			return
		}
	}
}

// wait, once the command is gone, copies what it left in the pipes.
func (r *stdioRelay) wait() {
	r.gone.Store(true)
	for _, pr := range r.readers {
		_ = pr.SetReadDeadline(time.Now().Add(drainGrace)) // wakes a read under way
	}
	r.copies.Wait()
	signal.Stop(r.sigpipe)
}

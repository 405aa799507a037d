package runner

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// openPty allocates a pseudo-terminal from the /dev/ptmx of the current
// mount namespace.
//
// Equivalent to: posix_openpt + grantpt + unlockpt + open(ptsname)
func openPty() (master, slave *os.File, err error) {
	// Raw fds, so the files stay blocking: each is used by one goroutine.
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	master = os.NewFile(uintptr(mfd), "/dev/ptmx")
	defer func() {
		if err != nil {
			master.Close()
		}
	}()
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(mfd, unix.TIOCGPTN)
	if err != nil {
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	// By name rather than TIOCGPTPEER, so the command's tty(1) names it.
	name := fmt.Sprintf("/dev/pts/%d", n)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open pty %s: %w", name, err)
	}
	return master, os.NewFile(uintptr(sfd), name), nil
}

// makeRaw puts terminal f in raw mode, so that keys (^C included) reach
// the container's terminal unchanged, and returns how to undo it. It fails
// when f is not a terminal.
//
// Equivalent to: stty raw -echo
func makeRaw(f *os.File) (restore func(), err error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old // as cfmakeraw(3)
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

func isTerminal(f *os.File) bool {
	return f != nil && isTerminalFd(int(f.Fd()))
}

func isTerminalFd(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// sizeSource is the user's terminal whose size the pty copies: in or out,
// whichever is a terminal; nil if neither.
func sizeSource(in, out *os.File) *os.File {
	for _, f := range []*os.File{in, out} {
		if isTerminal(f) {
			return f
		}
	}
	return nil
}

// copyWinsize gives pty master the window size of terminal from.
//
// Equivalent to: stty -F PTY rows R cols C
func copyWinsize(from, master *os.File) {
	ws, err := unix.IoctlGetWinsize(int(from.Fd()), unix.TIOCGWINSZ)
	if err == nil {
		_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, ws)
	}
}

// ptyRelay copies between the user's files and a pty master.
type ptyRelay struct {
	master    *os.File
	drained   chan struct{} // closed when the output copy has ended
	stopWinch func()
	stopPipe  func()
}

// hangupGrace is how long a command whose terminal was hung up (nobody
// reads its output any more) has to end before it is killed: as PID 1 of
// its namespace it ignores SIGHUP unless it handles it.
const hangupGrace = time.Second

// startRelay copies in to master (if in is set) and master to out (or
// discards it), and keeps master's window size equal to the user's
// terminal's on SIGWINCH. When writing to out fails (a pipe whose reader
// left), it hangs up the terminal and, hangupGrace later, calls kill.
func startRelay(master, in, out *os.File, also io.Writer, kill func()) *ptyRelay {
	r := &ptyRelay{master: master, drained: make(chan struct{}), stopWinch: func() {}, stopPipe: func() {}}
	if in != nil {
		// Not waited for: it may sit in a read of in for ever, as a
		// blocked read cannot be cancelled; it ends at the next input.
		go func() { _, _ = io.Copy(master, in) }()
	}
	if out != nil {
		// A closed pipe on out (knit run -t ... | head -1) fails the write
		// with EPIPE instead of killing knit before it restores the
		// terminal and records the exit.
		pipe := make(chan os.Signal, 1)
		signal.Notify(pipe, syscall.SIGPIPE)
		r.stopPipe = func() { signal.Stop(pipe) }
	}
	go func() {
		defer close(r.drained)
		var w io.Writer = io.Discard
		if out != nil {
			w = out
		}
		// Ends with EIO once every slave is closed and the buffered
		// output has been read.
		buf := make([]byte, 32<<10)
		for {
			n, rerr := master.Read(buf)
			if n > 0 {
				if _, err := w.Write(buf[:n]); err != nil {
					// Nobody reads the output any more: hang up, as
					// closing a terminal does (the session gets SIGHUP),
					// then end the command as a closed pipe would have.
					_ = master.Close()
					time.AfterFunc(hangupGrace, kill)
					return
				}
				if also != nil {
					if _, err := also.Write(buf[:n]); err != nil {
						also = nil // a copy, never a reason to stop
					}
				}
			}
			if rerr != nil {
				return
			}
		}
	}()
	if src := sizeSource(in, out); src != nil {
		r.stopWinch = resizeOnWinch(src, master)
	}
	return r
}

// wait waits for the output copy to end; call it after the process exited.
func (r *ptyRelay) wait() {
	<-r.drained
	r.stopWinch()
	r.stopPipe()
	r.master.Close()
}

func resizeOnWinch(src, master *os.File) (stop func()) {
	ch := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(ch, syscall.SIGWINCH)
	go func() {
		for {
			select {
			case <-ch:
				copyWinsize(src, master)
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// startWithPty starts p's command with a new pty as its stdin, stdout,
// stderr and controlling terminal, and relays it to cfg's files.
func (p *Process) startWithPty(cfg StartConfig) error {
	master, slave, err := openPty()
	if err != nil {
		return err
	}
	defer slave.Close() // the child's copy is all that must keep it open
	if src := sizeSource(cfg.Stdin, cfg.Stdout); src != nil {
		copyWinsize(src, master) // before the command starts and asks
	}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = slave, slave, slave
	p.cmd.SysProcAttr.Setctty = true
	p.cmd.SysProcAttr.Ctty = 0 // the child's fd 0: the slave
	if err := startCmd(p.cmd); err != nil {
		master.Close()
		return err
	}
	if isTerminal(cfg.Stdin) {
		p.restore, _ = makeRaw(cfg.Stdin)
	}
	p.relay = startRelay(master, cfg.Stdin, cfg.Stdout, cfg.TtyCopy, func() { _ = p.cmd.Process.Kill() })
	return nil
}

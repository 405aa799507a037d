package runner

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// relayed are the signals a supervisor passes on to its container, as
// docker run does. SIGWINCH is not among them: it resizes the terminal.
var relayed = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP,
	syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2,
}

// Signal sends sig to the container's init (through a pidfd: never to a
// recycled pid).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// ForwardSignals relays SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
// SIGUSR2 received by this process to the container until stop is called;
// meanwhile they no longer have their default effect here. Like any PID 1,
// the container's command only receives signals it has a handler for.
func (p *Process) ForwardSignals() (stop func()) {
	return forwardSignals(p.cmd.Process, relayed...)
}

// forwardSignals relays sigs to proc until stop is called. os.Process
// signals through a pidfd, so a relay racing with the exit cannot hit a
// recycled pid.
func forwardSignals(proc *os.Process, sigs ...os.Signal) (stop func()) {
	ch := make(chan os.Signal, 8)
	done := make(chan struct{})
	signal.Notify(ch, sigs...)
	go func() {
		for {
			select {
			case s := <-ch:
				_ = proc.Signal(s)
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(ch)
			close(done)
		})
	}
}

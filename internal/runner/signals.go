package runner

import (
	"errors"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
)

// relayed are the signals knit passes on to the container it waits for,
// as docker run's proxy does (and knit exec too): every standard one (the
// real-time ones are left out: catching them costs the Go runtime ~2 ms,
// a tenth of a whole knit run, against 0.25 ms for these) but those about
// knit's own process (SIGCHLD, SIGPIPE, SIGURG, with which the Go runtime
// preempts, SIGWINCH, which resizes the terminal, and SIGTTIN and SIGTTOU:
// caught, they would make a terminal call of knit's in the background
// restart for ever, and SIGABRT, which makes knit print its goroutines
// and die, the container with it: how a hung knit is looked into), and
// SIGKILL and SIGSTOP, which no process can catch. A SIGTSTP or SIGPWR
// goes to the container instead of stopping or ending knit while the
// container goes on.
var relayed = func() []os.Signal {
	var sigs []os.Signal
	for n := syscall.Signal(1); n < 32; n++ {
		switch n {
		case syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGCHLD, syscall.SIGPIPE, syscall.SIGURG, syscall.SIGWINCH,
			syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGABRT:
			continue
		}
		sigs = append(sigs, n)
	}
	return slices.Clip(sigs) // callers append to it
}()

// Signal sends sig to the container's init (through a pidfd: never to a
// recycled pid).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// ForwardSignals relays the signals this process receives (see relayed)
// to the container until stop is called; meanwhile they no longer have
// their default effect here. Like any PID 1, the container's command only
// receives signals it has a handler for.
func (p *Process) ForwardSignals() (stop func()) {
	return forwardSignals(p.cmd.Process, relayed...)
}

// forwardSignals relays sigs to proc until stop is called.
func forwardSignals(proc *os.Process, sigs ...os.Signal) (stop func()) {
	return holdSignals(sigs...).to(proc)
}

// signalHold catches signals before there is a process to give them to.
type signalHold struct{ ch chan os.Signal }

// holdSignals starts catching sigs: they no longer have their default
// effect, and wait for to.
func holdSignals(sigs ...os.Signal) *signalHold {
	h := &signalHold{ch: make(chan os.Signal, 8)}
	signal.Notify(h.ch, sigs...)
	return h
}

// to relays the signals held, and every later one, to proc until stop is
// called. os.Process signals through a pidfd, so a relay racing with the
// exit cannot hit a recycled pid.
func (h *signalHold) to(proc *os.Process) (stop func()) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-h.ch:
				if err := proc.Signal(s); errors.Is(err, os.ErrProcessDone) {
					// Its process is gone and this one finishing up
					// (exec's copy of the output left): the signal has
					// its default effect here, as if never caught.
					signal.Reset(s)
					_ = syscall.Kill(os.Getpid(), s.(syscall.Signal))
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(h.ch)
			close(done)
		})
	}
}

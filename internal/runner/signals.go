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
	return holdSignals(relayed...).to(p.cmd.Process, false)
}

// SignalHold catches signals before there is a process to give them to.
type SignalHold struct {
	ch    chan os.Signal
	early []os.Signal   // taken from ch by Stopping, for to
	done  chan struct{} // closed: relaying is over (the signals stay caught)
	once  sync.Once
}

// HoldRelayed starts catching the signals a foreground run relays (see
// relayed) but those the caller ignores (nohup, a script's background
// job), before the container exists: none is lost or kills knit while
// it is set up.
func HoldRelayed() *SignalHold {
	var sigs []os.Signal
	for _, s := range relayed {
		if !signal.Ignored(s) {
			sigs = append(sigs, s)
		}
	}
	return holdSignals(sigs...)
}

// Stopping returns a signal that asks knit to stop (INT, TERM, HUP, QUIT),
// if one came: the caller cancels the start. The others that came stay
// held, for To.
func (h *SignalHold) Stopping() (os.Signal, bool) {
	for {
		select {
		case s := <-h.ch:
			switch s {
			case syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT:
				return s, true
			}
			h.early = append(h.early, s)
		default:
			return nil, false
		}
	}
}

// To relays the signals held, and every later one, to the container's
// init until stop is called. After stop the signals stay caught, and are
// dropped: a late one must not kill knit while it records the exit.
func (h *SignalHold) To(p *Process) (stop func()) {
	h.to(p.cmd.Process, false)
	return h.quit
}

// holdSignals starts catching sigs: they no longer have their default
// effect, and wait for to.
func holdSignals(sigs ...os.Signal) *SignalHold {
	h := &SignalHold{ch: make(chan os.Signal, 8), done: make(chan struct{})}
	signal.Notify(h.ch, sigs...)
	return h
}

// quit ends the relay without giving the signals back to the runtime
// (signal.Stop costs as much as the catch did): they are caught and
// dropped, for a process about to exit.
func (h *SignalHold) quit() { h.once.Do(func() { close(h.done) }) }

// to relays the signals held, and every later one, to proc until stop is
// called; with endWith, those that come once proc has been waited for end
// this process as if never caught. os.Process signals through a pidfd, so
// a relay racing with the exit cannot hit a recycled pid.
func (h *SignalHold) to(proc *os.Process, endWith bool) (stop func()) {
	go func() {
		for _, s := range h.early { // held before the process existed
			_ = proc.Signal(s)
		}
		for {
			select {
			case s := <-h.ch:
				if err := proc.Signal(s); endWith && errors.Is(err, os.ErrProcessDone) {
					signal.Reset(s)
					_ = syscall.Kill(os.Getpid(), s.(syscall.Signal))
				}
			case <-h.done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(h.ch)
		h.quit()
	}
}

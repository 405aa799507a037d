package link

import (
	"sync"

	"golang.org/x/sys/unix"
)

// Pool keeps idle handles on the process's own network namespace for
// reuse: opening one costs a socket, a bind and a lookup of its address
// (~40 µs), which a run that ensures its network and then joins it would
// pay twice. A thread in another namespace (inside netns.Do) gets a handle
// of its own each time, never kept: a kept socket would keep its namespace
// alive. Idle handles stay open for the life of the process (at most
// poolIdle). The zero Pool is ready; it is safe for concurrent use.
type Pool struct {
	mu   sync.Mutex
	idle []*Handle
}

// poolIdle is how many idle handles a Pool keeps.
const poolIdle = 4

// Host is like the package's Host: a handle on the calling thread's
// namespace, one put back earlier when there is one.
func (p *Pool) Host() (*Handle, error) {
	if !inProcessNetns() {
		return Host()
	}
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		h := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return h, nil
	}
	p.mu.Unlock()
	h, err := Host()
	if err == nil {
		h.pooled = true
	}
	return h, err
}

// Put gives back a handle from p.Host, or closes it when p holds enough.
func (p *Pool) Put(h *Handle) {
	p.mu.Lock()
	if h.pooled && len(p.idle) < poolIdle {
		p.idle = append(p.idle, h)
		h = nil
	}
	p.mu.Unlock()
	if h != nil {
		h.Close()
	}
}

// homeNetns is the namespace the process's threads were in when the
// package was initialised, before any could enter another: the main thread
// is no marker, since Go may lock it into another namespace (netns.Do runs
// its function on whichever thread its goroutine lands on).
var homeNetns = func() (st unix.Stat_t) {
	if unix.Stat("/proc/thread-self/ns/net", &st) != nil {
		return unix.Stat_t{}
	}
	return st
}()

// inProcessNetns reports whether the calling thread is in the process's
// own namespace (false when that cannot be told).
func inProcessNetns() bool {
	var thread unix.Stat_t
	if homeNetns.Ino == 0 || unix.Stat("/proc/thread-self/ns/net", &thread) != nil {
		return false
	}
	return homeNetns.Dev == thread.Dev && homeNetns.Ino == thread.Ino
}

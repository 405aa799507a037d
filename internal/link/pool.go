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
// alive. The zero Pool is ready; it is safe for concurrent use.
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

// inProcessNetns reports whether the calling thread is in the namespace of
// the process's main thread (false when that cannot be told).
func inProcessNetns() bool {
	var self, thread unix.Stat_t
	if unix.Stat("/proc/self/ns/net", &self) != nil || unix.Stat("/proc/thread-self/ns/net", &thread) != nil {
		return false
	}
	return self.Dev == thread.Dev && self.Ino == thread.Ino
}

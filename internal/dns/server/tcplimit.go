package server

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// What one listener's TCP clients may hold: containers are not trusted, and
// a client that opens connections and never reads its answers would
// otherwise keep a goroutine, a socket and its send buffer each for ever.
const (
	maxTCPConns          = 256 // per listener
	maxTCPConnsPerClient = 16  // per client address on one listener
)

// tcpWriteTimeout bounds how long an answer waits for a client to read it.
var tcpWriteTimeout = 5 * time.Second

// limitListener hands miekg/dns's TCP server only the connections within
// the limits (the others are closed as they come), gives each a write
// deadline, and closes them all when it is closed, so that closing a
// listener also ends the answers blocked in a write.
type limitListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[*limitConn]struct{}
	per    map[netip.Addr]int
	closed bool
}

func newLimitListener(l net.Listener) *limitListener {
	return &limitListener{Listener: l, conns: make(map[*limitConn]struct{}), per: make(map[netip.Addr]int)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// Out of descriptors, say: miekg/dns retries a temporary error
			// at once, which would spin.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
				time.Sleep(50 * time.Millisecond)
			}
			return nil, err
		}
		client := addrOf(c.RemoteAddr())
		l.mu.Lock()
		if l.closed || len(l.conns) >= maxTCPConns || l.per[client] >= maxTCPConnsPerClient {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		lc := &limitConn{Conn: c, l: l, client: client}
		l.conns[lc] = struct{}{}
		l.per[client]++
		l.mu.Unlock()
		return lc, nil
	}
}

// Close stops accepting and closes every connection handed out.
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	conns := make([]*limitConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return err
}

// SyscallConn is the socket's, for its options.
func (l *limitListener) SyscallConn() (syscall.RawConn, error) {
	return l.Listener.(syscall.Conn).SyscallConn()
}

// limitConn is one connection within the limits.
type limitConn struct {
	net.Conn
	l      *limitListener
	client netip.Addr
	once   sync.Once
}

func (c *limitConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(tcpWriteTimeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *limitConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		if c.l.per[c.client]--; c.l.per[c.client] <= 0 {
			delete(c.l.per, c.client)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/netns"
)

// upstreamSockets is how many UDP sockets a forwarder keeps per upstream.
const upstreamSockets = 4

// rotateAfter is how many queries a pooled socket sends before it is
// replaced by one on a new source port.
const rotateAfter = 256

// idleAfter is how long an upstream's pool stays without queries before
// it is closed: upstreams come and go with the containers that name them
// (--dns), and a server lives as long as its networks.
const idleAfter = 2 * time.Minute

// netnsIdleAfter is idleAfter for a pool in a container's namespace,
// which holds one socket: a socket keeps its namespace alive, and with it
// a removed container's veth on its bridge (keep closes the pool as soon
// as the container leaves the snapshot; this bounds the time when that
// fails).
const netnsIdleAfter = 5 * time.Second

// forwarder sends queries upstream. Over UDP it keeps a few connected
// sockets per upstream, each with one reader that hands replies to the
// queries waiting for them by ID and question. Against forged replies
// (RFC 5452) each query goes out with a random ID of its own, free on its
// socket, and each socket is replaced after rotateAfter queries, so that
// an off-path attacker must guess the ID and a source port that keeps
// changing; the client's ID is put back on the reply. Over TCP, each query
// has a connection of its own. A query from a container's namespace
// (route.netns) goes through sockets opened there, pooled per namespace
// and upstream.
type forwarder struct {
	timeout     time.Duration
	log         *slog.Logger
	tcp         *dns.Client
	udp         *dns.Client // a query that finds no pooled socket free, or has other than one question
	rotateAfter uint32
	idleAfter   time.Duration
	now         func() time.Time

	mu      sync.Mutex
	pools   map[route]*upstreamPool
	inNetns map[string]map[net.Conn]bool // exchangeOnce's connections in containers' namespaces
	wanted  func(netns string) bool      // the last keep's; nil: every namespace
	sweeper *time.Timer                  // runs sweep while there are pools
	sweepAt time.Time                    // when it is due
	closed  bool
}

func newForwarder(timeout time.Duration, log *slog.Logger) *forwarder {
	return &forwarder{
		timeout: timeout,
		log:     log,
		// A reply to a query without EDNS may still exceed 512 bytes from
		// a sloppy upstream; reading it whole lets answer truncate it
		// properly.
		udp:         &dns.Client{Net: "udp", Timeout: timeout, UDPSize: dns.MaxMsgSize},
		tcp:         &dns.Client{Net: "tcp", Timeout: timeout},
		pools:       make(map[route]*upstreamPool),
		inNetns:     make(map[string]map[net.Conn]bool),
		rotateAfter: rotateAfter,
		idleAfter:   idleAfter,
		now:         time.Now,
	}
}

// exchange is the forwarder's exchangeFunc. A query over TCP, or with
// other than one question, has a connection of its own; others share the
// pool of their upstream and namespace.
func (f *forwarder) exchange(ctx context.Context, q *dns.Msg, to route, overTCP bool) (*dns.Msg, error) {
	var m *dns.Msg
	var err error
	switch {
	case overTCP:
		m, err = f.exchangeOnce(ctx, f.tcp, q, to)
	case len(q.Question) != 1:
		m, err = f.exchangeOnce(ctx, f.udp, q, to)
	default:
		m, err = f.exchangeUDP(ctx, q, to)
	}
	if err != nil {
		f.log.Debug("dns forward", "upstream", to.addr, "netns", to.netns, "tcp", overTCP, "err", err)
		return nil, fmt.Errorf("forward to %s: %w", to.addr, err)
	}
	return m, nil
}

// exchangeOnce sends q to its upstream over a connection of its own, with
// a random ID (over UDP from a random port too), and takes only a reply
// that repeats q's question (or may go without: answersQuestion). One in
// a container's namespace is closed by keep once the container is gone.
func (f *forwarder) exchangeOnce(ctx context.Context, c *dns.Client, q *dns.Msg, to route) (*dns.Msg, error) {
	if err := f.mayOpen(to.netns); err != nil {
		return nil, err
	}
	conn, err := dial(ctx, c.Net, to, f.timeout)
	if err != nil {
		return nil, err
	}
	co := &dns.Conn{Conn: conn}
	defer co.Close()
	// The exchange heeds ctx's deadline only: a listener closing cancels
	// its queries, which must return at once.
	defer context.AfterFunc(ctx, func() { _ = conn.Close() })()
	if to.netns != "" {
		if !f.track(to.netns, conn) {
			return nil, errNotWanted
		}
		defer f.untrack(to.netns, conn)
	}
	out := *q // shallow: only the ID differs
	out.Id = dns.Id()
	m, _, err := c.ExchangeWithConnContext(ctx, &out, co)
	if err != nil {
		return nil, err
	}
	if len(q.Question) == 1 && !answersQuestion(m, q.Question[0]) {
		return nil, errors.New("the reply is for another question")
	}
	m.Id = q.Id
	return m, nil
}

// dial connects to the upstream of to, from its namespace.
//
// Equivalent to: ip netns exec NS dig @UPSTREAM ...
func dial(ctx context.Context, network string, to route, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	open := func() (err error) {
		c, err = (&net.Dialer{Timeout: timeout}).DialContext(ctx, network, to.addr.String())
		return err
	}
	var err error
	if to.netns == "" {
		err = open()
	} else {
		err = netns.Do(to.netns, open)
	}
	if err != nil && c != nil { // opened, but the thread's namespace was not restored
		_ = c.Close()
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// mayOpen says whether a socket may be opened in netns ("": the host's):
// not once the forwarder is closed (errClosed), nor in a namespace keep
// let go (errNotWanted: a query that chose its route before).
func (f *forwarder) mayOpen(netns string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return errClosed
	case !f.mayOpenLocked(netns):
		return errNotWanted
	}
	return nil
}

func (f *forwarder) mayOpenLocked(netns string) bool {
	return !f.closed && (netns == "" || f.wanted == nil || f.wanted(netns))
}

// track records c, a connection in namespace netns, until untrack; false
// if the forwarder is closed or netns is no longer wanted (keep ran while
// c was dialled).
func (f *forwarder) track(netns string, c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || !f.mayOpenLocked(netns) {
		return false
	}
	if f.inNetns[netns] == nil {
		f.inNetns[netns] = make(map[net.Conn]bool)
	}
	f.inNetns[netns][c] = true
	return true
}

func (f *forwarder) untrack(netns string, c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.inNetns[netns], c)
	if len(f.inNetns[netns]) == 0 {
		delete(f.inNetns, netns)
	}
}

// keep closes the pools and connections of the namespaces that are not
// wanted any more (their containers gone), failing their queries, so that
// no socket keeps a dead namespace alive (a socket holds its namespace,
// whose end is what takes a removed container's veth off its bridge), and
// the pools of a path that names another namespace now (reused). From
// then on, no socket is opened in a namespace not wanted.
func (f *forwarder) keep(wanted func(netns string) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wanted = wanted
	for to, p := range f.pools {
		if to.netns != "" && (!wanted(to.netns) || fileID(to.netns) != p.netnsID) {
			p.close()
			delete(f.pools, to)
		}
	}
	for netns, conns := range f.inNetns {
		if wanted(netns) {
			continue
		}
		for c := range conns {
			_ = c.Close()
		}
		delete(f.inNetns, netns)
	}
}

var (
	errClosed    = errors.New("forwarder closed")
	errNotWanted = errors.New("the container is gone")

	errPoolClosed = errors.New("upstream's sockets closed")
)

func (f *forwarder) pool(to route) (*upstreamPool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errClosed
	}
	p := f.pools[to]
	if p == nil {
		if !f.mayOpenLocked(to.netns) {
			return nil, errNotWanted
		}
		p = &upstreamPool{to: to, timeout: f.timeout, rotateAfter: f.rotateAfter, size: upstreamSockets, idle: f.idleAfter}
		if to.netns != "" {
			p.size, p.idle, p.netnsID = 1, min(f.idleAfter, netnsIdleAfter), fileID(to.netns)
		}
		f.pools[to] = p
		f.sweepWithin(p.idle)
	}
	p.used = f.now()
	return p, nil
}

// sweepWithin has sweep run within d, sooner than it was due if need be
// (a namespace's pool idles out sooner than the host's).
func (f *forwarder) sweepWithin(d time.Duration) {
	due := f.now().Add(d)
	switch {
	case f.sweeper == nil:
		f.sweeper = time.AfterFunc(d, f.sweep)
	case due.Before(f.sweepAt):
		f.sweeper.Reset(d)
	default:
		return
	}
	f.sweepAt = due
}

// sweep closes the pools that have had no query for their idle time, and
// comes back when the next of the others would have had none.
func (f *forwarder) sweep() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	now, next := f.now(), f.idleAfter
	for to, p := range f.pools {
		if idle := now.Sub(p.used); idle >= p.idle {
			p.close()
			delete(f.pools, to)
		} else {
			next = min(next, p.idle-idle)
		}
	}
	if len(f.pools) == 0 {
		f.sweeper = nil // the next pool arms another
		return
	}
	f.sweeper.Reset(next)
	f.sweepAt = now.Add(next)
}

// close closes the pooled sockets and the connections in namespaces;
// queries waiting on them fail.
func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.sweeper != nil {
		f.sweeper.Stop()
	}
	for _, p := range f.pools {
		p.close()
	}
	for _, conns := range f.inNetns {
		for c := range conns {
			_ = c.Close()
		}
	}
}

// upstreamPool is the UDP sockets to one upstream from one namespace,
// dialled when first needed.
type upstreamPool struct {
	to          route
	netnsID     [2]uint64 // the namespace's file's, when the pool was made
	timeout     time.Duration
	size        int           // sockets used, up to upstreamSockets
	idle        time.Duration // closed after so long without a query
	rotateAfter uint32
	used        time.Time // the last query's, under forwarder.mu
	next        atomic.Uint32
	dial        sync.Mutex
	closed      bool // under dial: no socket is dialled any more
	// retired are the sockets replaced that may still have queries
	// waiting (under dial): close closes them too.
	retired []*upstreamSocket
	socks   [upstreamSockets]atomic.Pointer[upstreamSocket]
}

// close closes p's sockets, which ends their readers and fails the
// queries waiting on them, and keeps p from dialling new ones.
func (p *upstreamPool) close() {
	p.dial.Lock()
	defer p.dial.Unlock()
	p.closed = true
	for i := range p.socks {
		if s := p.socks[i].Load(); s != nil {
			_ = s.conn.Close()
		}
	}
	for _, s := range p.retired { // their queries fail at once too
		_ = s.conn.Close()
	}
	p.retired = nil
}

// upstreamSocket is one connected UDP socket to an upstream and the
// queries waiting for a reply on it.
type upstreamSocket struct {
	conn    *net.UDPConn
	sent    atomic.Uint32 // queries sent; at rotateAfter the pool replaces it
	mu      sync.Mutex
	pending map[uint16]*waiter
	dead    bool // the reader has stopped
	retired bool // replaced: closed once no query waits on it
}

// waiter is a query waiting for its reply.
type waiter struct {
	q     dns.Question
	reply chan result // buffered: the reader never blocks
}

type result struct {
	m   *dns.Msg
	err error
}

func (f *forwarder) exchangeUDP(ctx context.Context, q *dns.Msg, to route) (*dns.Msg, error) {
	p, err := f.pool(to)
	if err != nil {
		return nil, err
	}
	w := &waiter{q: q.Question[0], reply: make(chan result, 1)}
	first, size := p.next.Add(1), uint32(p.size)
	for i := range size {
		s, err := p.socket(int((first + i) % size))
		if errors.Is(err, errPoolClosed) {
			break // swept or let go by keep while this query waited: a socket of its own, if allowed
		}
		if err != nil {
			return nil, err
		}
		id, ok := s.addRandom(w)
		if !ok {
			continue
		}
		defer s.remove(id, w)
		out := *q // shallow: only the ID differs
		out.Id = id
		packed, err := out.Pack()
		if err != nil {
			return nil, err
		}
		s.sent.Add(1)
		if _, err := s.conn.Write(packed); err != nil {
			s.retire() // the next query dials again (a namespace's routes changed)
			return nil, err
		}
		timer := time.NewTimer(f.timeout)
		defer timer.Stop()
		select {
		case r := <-w.reply:
			if r.m != nil {
				r.m.Id = q.Id
			}
			return r.m, r.err
		case <-timer.C:
			return nil, fmt.Errorf("no reply within %v", f.timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// Every socket is dead or full, or the pool was swept: a socket of its
	// own (a random port).
	return f.exchangeOnce(ctx, f.udp, q, to)
}

// socket returns the pool's socket i, dialling it (and starting its
// reader) if it has none, its reader stopped or it has sent rotateAfter
// queries; a socket replaced so is closed once its last query is answered.
func (p *upstreamPool) socket(i int) (*upstreamSocket, error) {
	usable := func(s *upstreamSocket) bool { return s != nil && s.sent.Load() < p.rotateAfter && s.open() }
	if s := p.socks[i].Load(); usable(s) {
		return s, nil
	}
	p.dial.Lock()
	defer p.dial.Unlock()
	if p.closed {
		return nil, errPoolClosed
	}
	old := p.socks[i].Load()
	if usable(old) {
		return old, nil
	}
	if old != nil {
		old.retire()
		// old may be there already: a dial after its retirement failed.
		p.retired = slices.DeleteFunc(p.retired, func(s *upstreamSocket) bool { return !s.readerRunning() || s == old })
		p.retired = append(p.retired, old)
	}
	c, err := dial(context.Background(), "udp", p.to, p.timeout)
	if err != nil {
		return nil, err
	}
	s := &upstreamSocket{conn: c.(*net.UDPConn), pending: make(map[uint16]*waiter)}
	p.socks[i].Store(s)
	go s.read()
	return s, nil
}

// open reports whether s takes queries: neither dead nor retired.
func (s *upstreamSocket) open() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.dead && !s.retired
}

// readerRunning reports whether s's reader still runs (until s closes).
func (s *upstreamSocket) readerRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.dead
}

// addRandom registers w for replies under a random ID that no other query
// waits with on s, and returns it; false if s is dead or retired, or (with
// thousands of queries in flight) a few draws found no free ID.
func (s *upstreamSocket) addRandom(w *waiter) (uint16, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead || s.retired {
		return 0, false
	}
	for range 8 {
		id := uint16(rand.Uint32())
		if s.pending[id] == nil {
			s.pending[id] = w
			return id, true
		}
	}
	return 0, false
}

func (s *upstreamSocket) remove(id uint16, w *waiter) {
	s.mu.Lock()
	if s.pending[id] == w {
		delete(s.pending, id)
	}
	s.closeIfDrainedLocked()
	s.mu.Unlock()
}

// deliver hands r to the query waiting with ID id, if any.
func (s *upstreamSocket) deliver(id uint16, w *waiter, r result) {
	s.mu.Lock()
	if s.pending[id] == w {
		delete(s.pending, id)
		w.reply <- r
	}
	s.closeIfDrainedLocked()
	s.mu.Unlock()
}

// retire takes s out of use: no query is added any more, and it is closed
// (which ends its reader) once no query waits on it.
func (s *upstreamSocket) retire() {
	s.mu.Lock()
	s.retired = true
	s.closeIfDrainedLocked()
	s.mu.Unlock()
}

func (s *upstreamSocket) closeIfDrainedLocked() {
	if s.retired && len(s.pending) == 0 {
		_ = s.conn.Close()
	}
}

// read hands the replies arriving on s to their queries until s is
// closed. A connected socket only receives from its upstream. A reply
// must carry the query's ID and question; one that does not parse fails
// the query, as dns.Client would.
func (s *upstreamSocket) read() {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				// Nothing listens upstream: fail the queries waiting
				// rather than let them time out.
				s.failAll(err)
				continue
			}
			s.mu.Lock()
			s.dead = true
			s.mu.Unlock()
			s.failAll(err)
			_ = s.conn.Close()
			return
		}
		if n < 12 {
			continue
		}
		id := uint16(buf[0])<<8 | uint16(buf[1])
		s.mu.Lock()
		w := s.pending[id]
		s.mu.Unlock()
		if w == nil {
			continue // late, or not ours
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			s.deliver(id, w, result{err: fmt.Errorf("reply: %w", err)})
			continue
		}
		if !m.Response || !answersQuestion(m, w.q) {
			continue
		}
		s.deliver(id, w, result{m: m})
	}
}

func (s *upstreamSocket) failAll(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, w := range s.pending {
		delete(s.pending, id)
		w.reply <- result{err: err}
	}
}

// answersQuestion reports whether reply m is for question q: it repeats
// it (so a forger must know the question, not only guess the ID and the
// port), or it is a FORMERR, NOTIMP, REFUSED or SERVFAIL, which servers
// may send without one (none of them answers the name: a forger gains
// nothing but the next upstream's turn, as a timeout would give).
func answersQuestion(m *dns.Msg, q dns.Question) bool {
	if len(m.Question) == 0 {
		switch m.Rcode {
		case dns.RcodeFormatError, dns.RcodeNotImplemented, dns.RcodeRefused, dns.RcodeServerFailure:
			return true
		}
		return false
	}
	return len(m.Question) == 1 && sameQuestion(m.Question[0], q)
}

func sameQuestion(a, b dns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

// fileID identifies the file at path (a namespace's, when it is one): its
// device and inode; zero if there is none.
func fileID(path string) [2]uint64 {
	var st unix.Stat_t
	if path == "" || unix.Stat(path, &st) != nil {
		return [2]uint64{}
	}
	return [2]uint64{st.Dev, st.Ino}
}

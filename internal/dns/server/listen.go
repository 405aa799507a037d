package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// shutdownWait bounds how long closing a listener waits for the queries in
// flight, which closing has cancelled already.
const shutdownWait = 3 * time.Second

// handler answers the queries arriving on one socket.
type handler struct {
	ctx      context.Context // cancelled when the listener closes
	local    netip.Addr
	tcp      bool
	tables   *atomic.Pointer[tables]
	exchange exchangeFunc
	log      *slog.Logger
}

func (h *handler) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	r := request{local: h.local, client: addrOf(w.RemoteAddr()), tcp: h.tcp, msg: q}
	m := h.tables.Load().answer(h.ctx, r, h.exchange)
	if m == nil {
		return
	}
	b, err := packReply(m, q)
	if err == nil {
		_, err = w.Write(b)
	}
	if err != nil {
		h.log.Debug("dns reply", "client", w.RemoteAddr(), "err", err)
	}
}

// addrOf returns the IP address of a UDP or TCP socket address.
func addrOf(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.AddrPort().Addr()
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	}
	return ip.Unmap().WithZone("")
}

// listener is the UDP and the TCP server on one address. UDP, nearly all
// queries, is served by readers of its own (udp.go); TCP is miekg/dns's
// server.
type listener struct {
	cancel context.CancelFunc
	udp    *udpSocket
	tcp    *dns.Server
	h      *handler       // the UDP handler
	wg     sync.WaitGroup // UDP readers and forwarded queries
	// forwarding counts the forwarded UDP queries in flight; perClient
	// the same by client address.
	forwarding  atomic.Int32
	perClientMu sync.Mutex
	perClient   map[netip.Addr]int
}

// listen opens UDP and TCP sockets on addr and serves them with h's tables
// and exchange. Equivalent to a resolver's `bind ADDR:PORT` with
// IP_FREEBIND, so the address need not be configured yet.
func listen(addr netip.AddrPort, tabs *atomic.Pointer[tables], exchange exchangeFunc, log *slog.Logger) (_ *listener, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{cancel: cancel}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	family := "4"
	if addr.Addr().Is6() {
		family = "6"
	}
	lc := net.ListenConfig{Control: freebind}
	if l.udp, err = openUDP(addr); err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	l.h = &handler{ctx: ctx, local: addr.Addr().Unmap(), tables: tabs, exchange: exchange, log: log}
	// One reader a socket (its cache and its poll state are its own): it
	// answers a cached name in well under the time the kernel takes to
	// deliver the datagram, and a second one, blocked in recvmmsg as well,
	// measured no faster.
	l.wg.Add(1)
	go l.readUDP()
	ln, err := lc.Listen(ctx, "tcp"+family, addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	l.tcp = &dns.Server{Listener: newLimitListener(ln),
		Handler: &handler{ctx: ctx, local: addr.Addr(), tcp: true, tables: tabs, exchange: exchange, log: log}}
	if err := start(l.tcp); err != nil {
		l.tcp = nil
		return nil, fmt.Errorf("serve tcp %s: %w", addr, errors.Join(err, ln.Close()))
	}
	return l, nil
}

// start runs srv in a goroutine and returns once it serves, so that a
// later Shutdown finds it started.
func start(srv *dns.Server) error {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	failed := make(chan error, 1)
	go func() { failed <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-failed:
		return err
	}
}

// close cancels the queries in flight, stops the UDP readers and the TCP
// server and closes their sockets.
func (l *listener) close() {
	l.cancel()
	if l.udp != nil {
		l.udp.shutdown()
		l.wg.Wait() // forwarded queries return at once: their context is done
		_ = l.udp.close()
	}
	if l.tcp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
		defer cancel()
		_ = l.tcp.ShutdownContext(ctx) // it closes the socket whatever it returns
	}
}

// freebind sets SO_REUSEADDR and IP_FREEBIND (IPV6_FREEBIND) on a socket
// before it is bound: the gateway address may appear on its bridge only
// after the server started, and a restarted server must not wait for old
// TCP connections to leave TIME_WAIT.
func freebind(network, _ string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		err = setFreebind(int(fd), network[len(network)-1] == '6')
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// setFreebind is freebind on a socket of our own.
func setFreebind(fd int, v6 bool) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err == nil && v6 {
		err = unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
	} else if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1)
	}
	if err != nil {
		return fmt.Errorf("set socket options: %w", err)
	}
	return nil
}

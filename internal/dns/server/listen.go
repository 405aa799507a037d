package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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
	if err := w.WriteMsg(m); err != nil {
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

// listener is the UDP and the TCP server on one address.
type listener struct {
	cancel   context.CancelFunc
	udp, tcp *dns.Server
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
	pc, err := lc.ListenPacket(ctx, "udp"+family, addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	l.udp = &dns.Server{PacketConn: pc, UDPSize: dns.DefaultMsgSize,
		Handler: &handler{ctx: ctx, local: addr.Addr(), tables: tabs, exchange: exchange, log: log}}
	if err := start(l.udp); err != nil {
		l.udp = nil
		return nil, fmt.Errorf("serve udp %s: %w", addr, errors.Join(err, pc.Close()))
	}
	ln, err := lc.Listen(ctx, "tcp"+family, addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	l.tcp = &dns.Server{Listener: ln,
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

// close cancels the queries in flight, stops both servers and closes their
// sockets.
func (l *listener) close() {
	l.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	for _, srv := range []*dns.Server{l.udp, l.tcp} {
		if srv != nil {
			_ = srv.ShutdownContext(ctx) // it closes the socket whatever it returns
		}
	}
}

// freebind sets SO_REUSEADDR and IP_FREEBIND (IPV6_FREEBIND) on a socket
// before it is bound: the gateway address may appear on its bridge only
// after the server started, and a restarted server must not wait for old
// TCP connections to leave TIME_WAIT.
func freebind(network, _ string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err != nil {
			return
		}
		if network[len(network)-1] == '6' {
			err = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			err = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
	})
	if cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("set socket options: %w", err)
	}
	return nil
}

// newExchange returns the exchangeFunc that forwards over the network,
// each attempt bounded by timeout.
func newExchange(timeout time.Duration, log *slog.Logger) exchangeFunc {
	// A reply to a query without EDNS may still exceed 512 bytes from a
	// sloppy upstream; reading it whole lets answer truncate it properly.
	udp := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: dns.DefaultMsgSize}
	tcp := &dns.Client{Net: "tcp", Timeout: timeout}
	return func(ctx context.Context, q *dns.Msg, upstream netip.AddrPort, overTCP bool) (*dns.Msg, error) {
		c := udp
		if overTCP {
			c = tcp
		}
		m, _, err := c.ExchangeContext(ctx, q, upstream.String())
		if err != nil {
			log.Debug("dns forward", "upstream", upstream, "tcp", overTCP, "err", err)
			return nil, fmt.Errorf("forward to %s: %w", upstream, err)
		}
		return m, nil
	}
}

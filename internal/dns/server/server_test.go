package server

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/testutil"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The socket tests run on loopback only: the server listens on 127.0.0.1
// (network a) and 127.0.0.2 (network b) on a free port, a fake upstream
// on 127.0.0.1, and clients query from 127.0.0.1 (the container "client"
// on network a), 127.0.0.3 (no container) and 127.0.0.4 (the container
// "lost", whose upstream never answers).
var (
	gatewayA, gatewayB = ip("127.0.0.1"), ip("127.0.0.2")
	fromClient         = ip("127.0.0.1")
	fromStranger       = ip("127.0.0.3")
	fromLost           = ip("127.0.0.4")
)

func socketSnapshot(port uint16, upstream, dead netip.AddrPort) *Snapshot {
	return &Snapshot{
		Port:      port,
		Upstreams: []netip.AddrPort{upstream},
		Networks: []Network{
			{Name: "a", Listen: []netip.Addr{gatewayA}, Endpoints: []Endpoint{
				{Container: "c-client", Name: "client", Addrs: []netip.Addr{fromClient}, Upstreams: []netip.AddrPort{upstream}},
				{Container: "c-web", Name: "web", Aliases: []string{"www"}, Addrs: []netip.Addr{ip("10.0.0.2")}},
				{Container: "c-lost", Name: "lost", Addrs: []netip.Addr{fromLost}, Upstreams: []netip.AddrPort{dead}},
			}},
			{Name: "b", Listen: []netip.Addr{gatewayB}, Endpoints: []Endpoint{
				{Container: "c-db", Name: "db", Addrs: []netip.Addr{ip("10.1.0.2")}},
			}},
		},
	}
}

// freePort returns a port free for UDP and TCP on 127.0.0.1 and 127.0.0.2,
// below the kernel's ephemeral range: a port the kernel chose for a socket
// of ours and we closed could be given to any other process's socket (a
// client in another package's tests) before the server binds it.
func freePort(t testing.TB) uint16 {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	for range 50 {
		port := uint16(10000 + rand.IntN(low-10000))
		free := true
		for _, a := range []string{"127.0.0.1", "127.0.0.2"} {
			addr := net.JoinHostPort(a, strconv.Itoa(int(port)))
			if l, err := net.Listen("tcp4", addr); err != nil {
				free = false
			} else {
				l.Close()
			}
			if pc, err := net.ListenPacket("udp4", addr); err != nil {
				free = false
			} else {
				pc.Close()
			}
		}
		if free {
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// fakeUpstream is a DNS server on 127.0.0.1 that answers A 192.0.2.1 over
// UDP and 192.0.2.2 over TCP, except "tc.example." over UDP: an empty
// truncated reply. It records the IDs and source ports of the UDP queries
// it gets.
type fakeUpstream struct {
	addr  netip.AddrPort
	mu    sync.Mutex
	ids   map[uint16]bool
	ports map[uint16]bool
}

func startUpstream(t testing.TB) *fakeUpstream { return startUpstreamIn(t, "") }

// startUpstreamIn is startUpstream with its sockets in the network
// namespace at ns ("": the test's own).
func startUpstreamIn(t testing.TB, ns string) *fakeUpstream {
	t.Helper()
	port := freePort(t)
	u := &fakeUpstream{addr: netip.AddrPortFrom(ip("127.0.0.1"), port), ids: make(map[uint16]bool), ports: make(map[uint16]bool)}
	var pc net.PacketConn
	var ln net.Listener
	open := func() (err error) {
		if pc, err = net.ListenPacket("udp4", u.addr.String()); err == nil {
			ln, err = net.Listen("tcp4", u.addr.String())
		}
		return err
	}
	var err error
	if ns == "" {
		err = open()
	} else {
		err = netns.Do(ns, open)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: u}, {Listener: ln, Handler: u}} {
		if err := start(srv); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return u
}

func (u *fakeUpstream) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	if !tcp {
		u.mu.Lock()
		u.ids[q.Id] = true
		u.ports[uint16(w.RemoteAddr().(*net.UDPAddr).Port)] = true
		u.mu.Unlock()
	}
	m := new(dns.Msg).SetReply(q)
	switch {
	case q.Question[0].Name == "tc.example." && !tcp:
		m.Truncated = true
	case tcp:
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.IPv4(192, 0, 2, 2)}}
	default:
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.IPv4(192, 0, 2, 1)}}
	}
	_ = w.WriteMsg(m)
}

// seen returns how many distinct IDs and source ports the UDP queries
// had.
func (u *fakeUpstream) seen() (ids, ports int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.ids), len(u.ports)
}

// deadUpstream returns an address with a socket bound that never answers:
// UDP queries and TCP reads time out.
func deadUpstream(t testing.TB) netip.AddrPort {
	t.Helper()
	port := freePort(t)
	addr := netip.AddrPortFrom(ip("127.0.0.1"), port)
	pc, err := net.ListenPacket("udp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	return addr
}

// running is a server started by startServer.
type running struct {
	dir    string
	cancel context.CancelFunc
	exited chan struct{}
	err    error
}

// testTimeout is the upstream timeout of the servers in tests.
const testTimeout = 300 * time.Millisecond

// serveDir runs a server on dir in a goroutine, with testTimeout for
// upstreams; the test's cleanup stops it and waits.
func serveDir(t *testing.T, dir string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{dir: dir, cancel: cancel, exited: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newForwarder(testTimeout, log)
	t.Cleanup(f.close) // after the server stopped
	srv := &server{dir: dir, log: log, exchange: f.exchange}
	go func() {
		r.err = srv.serve(ctx)
		close(r.exited)
	}()
	t.Cleanup(func() {
		cancel()
		r.wait(t, 5*time.Second)
	})
	return r
}

// startServer saves s in a new directory, runs a server on it and returns
// once the server wrote its PID file.
func startServer(t *testing.T, s *Snapshot) *running {
	t.Helper()
	dir := t.TempDir()
	if err := Save(dir, s); err != nil {
		t.Fatal(err)
	}
	r := serveDir(t, dir)
	eventually(t, 2*time.Second, "the PID file", func() bool {
		_, err := os.Stat(filepath.Join(dir, PIDFile))
		return err == nil
	})
	return r
}

// wait returns the server's result, failing the test if it runs on.
func (r *running) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-r.exited:
		return r.err
	case <-time.After(within):
		t.Fatalf("Serve still running after %v", within)
		return nil
	}
}

func eventually(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
	}
}

// ask sends one query from address from to server:port over proto and
// returns the reply with its summary.
func ask(server netip.Addr, port uint16, from netip.Addr, proto, name string, qtype uint16) (*dns.Msg, *dns.Msg, error) {
	d := &net.Dialer{LocalAddr: &net.UDPAddr{IP: from.AsSlice()}}
	if proto == "tcp" {
		d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
	}
	c := &dns.Client{Net: proto, Timeout: 2 * time.Second, Dialer: d}
	q := new(dns.Msg).SetQuestion(name, qtype) // with a random ID
	m, _, err := c.Exchange(q, netip.AddrPortFrom(server, port).String())
	return q, m, err
}

func TestServe(t *testing.T) {
	port := freePort(t)
	up := startUpstream(t)
	startServer(t, socketSnapshot(port, up.addr, deadUpstream(t)))
	tests := []struct {
		name             string
		server, from     netip.Addr
		qname            string
		qtype            uint16
		wantUDP, wantTCP string // wantTCP "" means wantUDP
		forwarded        bool
	}{
		{name: "name", server: gatewayA, from: fromClient, qname: "web.", qtype: dns.TypeA, wantUDP: "NOERROR aa 10.0.0.2"},
		{name: "alias", server: gatewayA, from: fromClient, qname: "www.", qtype: dns.TypeA, wantUDP: "NOERROR aa 10.0.0.2"},
		{name: "name.network", server: gatewayA, from: fromClient, qname: "WEB.a.", qtype: dns.TypeA, wantUDP: "NOERROR aa 10.0.0.2"},
		{name: "PTR", server: gatewayA, from: fromClient, qname: "2.0.0.10.in-addr.arpa.", qtype: dns.TypePTR, wantUDP: "NOERROR aa web.a."},
		{name: "AAAA of a v4-only name", server: gatewayA, from: fromClient, qname: "web.", qtype: dns.TypeAAAA, wantUDP: "NOERROR aa"},
		{name: "single label", server: gatewayA, from: fromClient, qname: "nosuch.", qtype: dns.TypeA,
			wantUDP: "NOERROR 192.0.2.1", wantTCP: "NOERROR 192.0.2.2", forwarded: true},
		{name: "name on another network", server: gatewayA, from: fromClient, qname: "db.", qtype: dns.TypeA,
			wantUDP: "NOERROR 192.0.2.1", wantTCP: "NOERROR 192.0.2.2", forwarded: true},
		{name: "unknown client, its gateway's network", server: gatewayB, from: fromClient, qname: "db.", qtype: dns.TypeA, wantUDP: "NOERROR aa 10.1.0.2"},
		{name: "unknown client, another network", server: gatewayB, from: fromClient, qname: "web.", qtype: dns.TypeA,
			wantUDP: "NOERROR 192.0.2.1", wantTCP: "NOERROR 192.0.2.2", forwarded: true},
		{name: "forwarded", server: gatewayA, from: fromClient, qname: "example.com.", qtype: dns.TypeA,
			wantUDP: "NOERROR 192.0.2.1", wantTCP: "NOERROR 192.0.2.2", forwarded: true},
		{name: "forwarded for an unknown client", server: gatewayA, from: fromStranger, qname: "example.com.", qtype: dns.TypeA,
			wantUDP: "NOERROR 192.0.2.1", wantTCP: "NOERROR 192.0.2.2", forwarded: true},
		{name: "truncated upstream reply", server: gatewayA, from: fromClient, qname: "tc.example.", qtype: dns.TypeA,
			wantUDP: "NOERROR tc", wantTCP: "NOERROR 192.0.2.2", forwarded: true},
		{name: "dead upstream", server: gatewayA, from: fromLost, qname: "example.com.", qtype: dns.TypeA, wantUDP: "SERVFAIL"},
	}
	for _, tc := range tests {
		for _, proto := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+proto, func(t *testing.T) {
				t.Parallel()
				want := tc.wantUDP
				if proto == "tcp" && tc.wantTCP != "" {
					want = tc.wantTCP
				}
				t0 := time.Now()
				q, m, err := ask(tc.server, port, tc.from, proto, tc.qname, tc.qtype)
				if err != nil {
					t.Fatal(err)
				}
				if got := summary(m); got != want {
					t.Errorf("reply %q, want %q", got, want)
				}
				if m.Id != q.Id {
					t.Errorf("reply ID %d, want the query's %d", m.Id, q.Id)
				}
				// Local answers, NXDOMAIN included, never wait for anything.
				if elapsed := time.Since(t0); !tc.forwarded && want != "SERVFAIL" && elapsed > testTimeout/2 {
					t.Errorf("answered in %v", elapsed)
				}
			})
		}
	}
}

func TestServeMalformed(t *testing.T) {
	port := freePort(t)
	startServer(t, socketSnapshot(port, deadUpstream(t), deadUpstream(t)))
	conn, err := net.Dial("udp4", netip.AddrPortFrom(gatewayA, port).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		name  string
		query string
		want  string // "" for no reply
	}{
		{"short", "\x12\x34\x01", ""},
		{"no question", "\x12\x34\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00", "FORMERR"},
		{"cut in the question", "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web", "FORMERR"},
		{"inverse query", "\x12\x34\x09\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01", "NOTIMP"},
	} {
		if _, err := conn.Write([]byte(tc.query)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		got := ""
		if err == nil {
			m := new(dns.Msg)
			if err := m.Unpack(buf[:n]); err != nil {
				t.Fatalf("%s: reply: %v", tc.name, err)
			}
			got = dns.RcodeToString[m.Rcode]
			if m.Id != 0x1234 {
				t.Errorf("%s: reply ID %#x", tc.name, m.Id)
			}
		}
		if got != tc.want {
			t.Errorf("%s: reply %q, want %q", tc.name, got, tc.want)
		}
	}
	// And it still answers.
	if _, m, err := ask(gatewayA, port, fromClient, "udp", "web.", dns.TypeA); err != nil || summary(m) != "NOERROR aa 10.0.0.2" {
		t.Errorf("after malformed queries: %v, %v", summary(m), err)
	}
}

func TestServeReload(t *testing.T) {
	port := freePort(t)
	up, dead := startUpstream(t).addr, deadUpstream(t)
	s := socketSnapshot(port, up, dead)
	r := startServer(t, s)
	resolves := func(server netip.Addr, name, want string) func() bool {
		return func() bool {
			_, m, err := ask(server, port, fromClient, "udp", name, dns.TypeA)
			return err == nil && summary(m) == want
		}
	}

	// A new container resolves within a second.
	s.Networks[0].Endpoints = append(s.Networks[0].Endpoints, Endpoint{Container: "c-new", Name: "new", Addrs: []netip.Addr{ip("10.0.0.9")}})
	if err := Save(r.dir, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "the new container", resolves(gatewayA, "new.", "NOERROR aa 10.0.0.9"))

	// A gateway address removed: its listener closes.
	s.Networks[1].Listen = nil
	if err := Save(r.dir, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "closing 127.0.0.2's listener", func() bool {
		c, err := net.Dial("tcp4", netip.AddrPortFrom(gatewayB, port).String())
		if err == nil {
			c.Close()
		}
		return errors.Is(err, unix.ECONNREFUSED)
	})

	// A snapshot that does not parse is ignored.
	if err := os.WriteFile(filepath.Join(r.dir, SnapshotFile), []byte(`{"networks": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if !resolves(gatewayA, "new.", "NOERROR aa 10.0.0.9")() {
		t.Error("a broken snapshot replaced the tables")
	}

	// The address back: a listener opens again.
	s.Networks[1].Listen = []netip.Addr{gatewayB}
	if err := Save(r.dir, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "reopening 127.0.0.2's listener", resolves(gatewayB, "db.", "NOERROR aa 10.1.0.2"))
}

func TestServeLifecycle(t *testing.T) {
	port := freePort(t)
	r := startServer(t, socketSnapshot(port, deadUpstream(t), deadUpstream(t)))
	if !Running(r.dir) {
		t.Error("Running = false while serving")
	}
	if pid, err := os.ReadFile(filepath.Join(r.dir, PIDFile)); err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("PID file: %q, %v", pid, err)
	}

	// A second server returns at once and leaves the first alone.
	if err := serveDir(t, r.dir).wait(t, time.Second); err != nil {
		t.Errorf("second Serve: %v", err)
	}
	if _, m, err := ask(gatewayA, port, fromClient, "udp", "web.", dns.TypeA); err != nil || summary(m) != "NOERROR aa 10.0.0.2" {
		t.Errorf("after a second Serve: %v, %v", summary(m), err)
	}

	// No networks: the server stops, closes its listeners, removes its
	// PID file and releases the lock.
	if err := Save(r.dir, &Snapshot{Port: port}); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t, time.Second); err != nil {
		t.Errorf("Serve = %v", err)
	}
	if Running(r.dir) {
		t.Error("Running = true after Serve returned")
	}
	if _, err := os.Stat(filepath.Join(r.dir, PIDFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PID file after Serve returned: %v", err)
	}
	if c, err := net.Dial("tcp4", netip.AddrPortFrom(gatewayA, port).String()); err == nil {
		c.Close()
		t.Error("the listener is still open")
	}

	// A server started on a snapshot without networks returns at once.
	if err := serveDir(t, r.dir).wait(t, time.Second); err != nil {
		t.Errorf("Serve with no networks: %v", err)
	}
}

// TestServeProtocol plays the engine's side of the start-stop protocol
// against servers that keep stopping: it saves a snapshot without networks
// and at once one with networks, then starts a server only if Running says
// none holds the lock. Whichever way each race goes, one server must end up
// serving.
func TestServeProtocol(t *testing.T) {
	port := freePort(t)
	full := socketSnapshot(port, deadUpstream(t), deadUpstream(t))
	r := startServer(t, full)
	servers := []*running{r}
	for i := range 20 {
		if err := Save(r.dir, &Snapshot{Port: port}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i%4) * time.Millisecond)
		if err := Save(r.dir, full); err != nil {
			t.Fatal(err)
		}
		if !Running(r.dir) {
			servers = append(servers, serveDir(t, r.dir))
		}
	}
	time.Sleep(200 * time.Millisecond) // let the last stops and starts settle
	eventually(t, 5*time.Second, "an answer", func() bool {
		_, m, err := ask(gatewayA, port, fromClient, "udp", "web.", dns.TypeA)
		return err == nil && summary(m) == "NOERROR aa 10.0.0.2"
	})
	live := 0
	for _, s := range servers {
		select {
		case <-s.exited:
			if s.err != nil {
				t.Errorf("Serve = %v", s.err)
			}
		default:
			live++
		}
	}
	if live != 1 || !Running(r.dir) {
		t.Errorf("%d of %d servers still serve, Running %v; want 1, true", live, len(servers), Running(r.dir))
	}
}

func TestRunning(t *testing.T) {
	dir := t.TempDir()
	if Running(filepath.Join(dir, "missing")) || Running(dir) {
		t.Error("Running = true without a lock file")
	}
	lock, err := tryLock(dir)
	if err != nil || lock == nil {
		t.Fatalf("tryLock = %v, %v", lock, err)
	}
	if !Running(dir) {
		t.Error("Running = false while the lock is held")
	}
	if again, err := tryLock(dir); again != nil || err != nil {
		t.Errorf("second tryLock = %v, %v; want nil, nil", again, err)
	}
	lock.Close()
	if Running(dir) {
		t.Error("Running = true after the lock was released")
	}
}

// A starting server whose lock Running's probe holds at that moment (any
// knit command probes) still takes it, rather than leaving as if another
// server held it.
func TestTryLockRidesOutAProbe(t *testing.T) {
	dir := t.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_SH); err != nil { // a probe under way
		t.Fatal(err)
	}
	released := make(chan struct{})
	time.AfterFunc(5*time.Millisecond, func() { _ = unix.Flock(fd, unix.LOCK_UN); close(released) })
	defer func() { <-released }()
	lock, err := tryLock(dir)
	if err != nil || lock == nil {
		t.Fatalf("tryLock during a probe = %v, %v; want the lock", lock, err)
	}
	lock.Close()
}

// TestListenOptions checks the socket options that let a listener open
// before its address is configured.
func TestListenOptions(t *testing.T) {
	var tabs atomic.Pointer[tables]
	tabs.Store(newTables(&Snapshot{}))
	addrs := []netip.AddrPort{netip.AddrPortFrom(ip("127.0.0.1"), freePort(t))}
	if pc, err := net.ListenPacket("udp6", "[::1]:0"); err == nil {
		addrs = append(addrs, pc.LocalAddr().(*net.UDPAddr).AddrPort())
		pc.Close()
	}
	for _, addr := range addrs {
		l, err := listen(addr, &tabs, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		level, opt := unix.SOL_IP, unix.IP_FREEBIND
		if addr.Addr().Is6() {
			level, opt = unix.SOL_IPV6, unix.IPV6_FREEBIND
		}
		raw, err := l.tcp.Listener.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		fds := map[string]int{"udp": l.udp.fd}
		_ = raw.Control(func(fd uintptr) { fds["tcp"] = int(fd) })
		for proto, fd := range fds {
			free, _ := unix.GetsockoptInt(fd, level, opt)
			reuse, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR)
			if free != 1 || reuse != 1 {
				t.Errorf("%v %s: freebind %d, reuseaddr %d; want 1, 1", addr, proto, free, reuse)
			}
		}
		l.close()
	}
}

// TestServeConcurrent puts many concurrent UDP queries, local and
// forwarded, on the readers and the upstream sockets: each must get its
// own answer with its own ID.
func TestServeConcurrent(t *testing.T) {
	port := freePort(t)
	up := startUpstream(t)
	startServer(t, socketSnapshot(port, up.addr, deadUpstream(t)))
	const workers, queries = 16, 2000
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			c := &dns.Client{Timeout: 2 * time.Second}
			conn, err := c.Dial(netip.AddrPortFrom(gatewayA, port).String())
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			for k := next.Add(1); k <= queries; k = next.Add(1) {
				name, want := "web.", "NOERROR aa 10.0.0.2"
				switch k % 3 {
				case 1:
					name, want = "www.", "NOERROR aa 10.0.0.2"
				case 2:
					name, want = "host"+strconv.Itoa(int(k))+".example.", "NOERROR 192.0.2.1"
				}
				q := new(dns.Msg).SetQuestion(name, dns.TypeA)
				m, _, err := c.ExchangeWithConn(q, conn)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				if m.Id != q.Id || summary(m) != want || !strings.EqualFold(m.Question[0].Name, name) {
					t.Errorf("%s ID %d: reply ID %d %q for %s, want %q", name, q.Id, m.Id, summary(m), m.Question[0].Name, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestForwarderSameID forwards concurrent queries that share one ID, more
// than the pool has sockets: each still gets the reply to its question.
func TestForwarderSameID(t *testing.T) {
	up := startUpstream(t)
	f := newForwarder(testTimeout, slog.New(slog.DiscardHandler))
	defer f.close()
	var wg sync.WaitGroup
	for i := range 3 * upstreamSockets {
		wg.Go(func() {
			name := "q" + strconv.Itoa(i) + ".example."
			q := new(dns.Msg).SetQuestion(name, dns.TypeA)
			q.Id = 7
			m, err := f.exchange(context.Background(), q, route{addr: up.addr}, false)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			if m.Id != 7 || m.Question[0].Name != name || summary(m) != "NOERROR 192.0.2.1" {
				t.Errorf("%s: reply %d %s %q", name, m.Id, m.Question[0].Name, summary(m))
			}
		})
	}
	wg.Wait()
}

// Forwarded queries leave with random IDs, not their clients' (which may
// all be the same), from source ports that change every rotateAfter
// queries; each client gets its own ID back.
func TestForwarderRandomizes(t *testing.T) {
	up := startUpstream(t)
	f := newForwarder(testTimeout, slog.New(slog.DiscardHandler))
	f.rotateAfter = 5
	defer f.close()
	fds := func() int { e, _ := os.ReadDir("/proc/self/fd"); return len(e) }
	before := fds()
	const n = 80
	for i := range n {
		q := new(dns.Msg).SetQuestion("q"+strconv.Itoa(i)+".example.", dns.TypeA)
		q.Id = 7
		m, err := f.exchange(context.Background(), q, route{addr: up.addr}, false)
		if err != nil {
			t.Fatal(err)
		}
		if m.Id != 7 || summary(m) != "NOERROR 192.0.2.1" {
			t.Fatalf("reply %d %q", m.Id, summary(m))
		}
	}
	ids, ports := up.seen()
	// 80 draws from 65536 IDs repeat with probability ~5%; 75 distinct
	// would take several repeats.
	if ids < 75 {
		t.Errorf("the upstream saw %d distinct IDs in %d queries", ids, n)
	}
	if want := n / 5; ports < want {
		t.Errorf("the upstream saw %d source ports in %d queries, want at least %d", ports, n, want)
	}
	// The replaced sockets are closed.
	if after := fds(); after > before+upstreamSockets {
		t.Errorf("%d descriptors open after %d queries, %d before", after, n, before)
	}
}

// An upstream's pool that has had no query for idleAfter is closed by the
// sweep; a pool in use stays, with its sockets; a query after the sweep
// gets a new pool; with no pools left, no sweep is due.
func TestForwarderClosesIdlePools(t *testing.T) {
	a, b := startUpstream(t), startUpstream(t)
	f := newForwarder(testTimeout, slog.New(slog.DiscardHandler))
	defer f.close()
	clock := time.Now()
	f.now = func() time.Time { return clock }
	ask := func(up netip.AddrPort) {
		t.Helper()
		q := new(dns.Msg).SetQuestion("q.example.", dns.TypeA)
		if m, err := f.exchange(context.Background(), q, route{addr: up}, false); err != nil || summary(m) != "NOERROR 192.0.2.1" {
			t.Fatalf("query to %s: %v", up, err)
		}
	}
	socketOf := func(p *upstreamPool) *upstreamSocket {
		t.Helper()
		s := p.socks[p.next.Load()%upstreamSockets].Load()
		if s == nil {
			t.Fatal("no socket in the pool after a query")
		}
		return s
	}
	ask(a.addr)
	ask(b.addr)
	pa, pb := f.pools[route{addr: a.addr}], f.pools[route{addr: b.addr}]
	sa, sb := socketOf(pa), socketOf(pb)
	if f.sweeper == nil {
		t.Fatal("pools but no sweep due")
	}
	clock = clock.Add(idleAfter / 2)
	ask(b.addr) // b stays in use; a does not
	clock = clock.Add(idleAfter/2 + time.Second)
	f.sweep()
	if _, kept := f.pools[route{addr: a.addr}]; kept || f.pools[route{addr: b.addr}] != pb {
		t.Errorf("pools after a was idle for %v: a kept %v, b's the same %v; want only b's", idleAfter, kept, f.pools[route{addr: b.addr}] == pb)
	}
	if _, err := sa.conn.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("a's socket after its pool closed: write = %v, want it closed", err)
	}
	if _, err := sb.conn.Write([]byte{0}); err != nil {
		t.Errorf("b's socket, in use: write = %v", err)
	}
	ask(a.addr) // a comes back: a new pool
	if f.pools[route{addr: a.addr}] == nil || f.pools[route{addr: a.addr}] == pa {
		t.Error("a query to a after its pool closed did not get a new one")
	}
	clock = clock.Add(idleAfter)
	f.sweep()
	if len(f.pools) != 0 || f.sweeper != nil {
		t.Errorf("after both were idle: %d pools, sweep due %v; want none", len(f.pools), f.sweeper != nil)
	}
	// A query that got its pool just before a sweep closed it still gets
	// an answer, from a socket of its own.
	ask(a.addr)
	pa = f.pools[route{addr: a.addr}]
	pa.close()
	q := new(dns.Msg).SetQuestion("late.example.", dns.TypeA)
	if m, err := f.exchangeUDP(context.Background(), q, route{addr: a.addr}); err != nil || summary(m) != "NOERROR 192.0.2.1" {
		t.Errorf("a query on a pool closed under it: %v", err)
	}
}

// A namespace's pool idles out after netnsIdleAfter, the host's after
// idleAfter: a namespace's pool brings the sweep forward, a host's does
// not put it back.
func TestForwarderSweepsNamespacePoolsSooner(t *testing.T) {
	f := newForwarder(testTimeout, slog.New(slog.DiscardHandler))
	defer f.close()
	up := netip.MustParseAddrPort("127.0.0.1:53")
	due := func() time.Duration { f.mu.Lock(); defer f.mu.Unlock(); return time.Until(f.sweepAt) }
	if _, err := f.pool(route{addr: up}); err != nil {
		t.Fatal(err)
	}
	if d := due(); d < idleAfter-time.Minute {
		t.Fatalf("a host pool's sweep due in %v, want about %v", d, idleAfter)
	}
	if _, err := f.pool(route{netns: "/nonexistent/ns", addr: up}); err != nil { // no socket yet: nothing is entered
		t.Fatal(err)
	}
	if d := due(); d > netnsIdleAfter {
		t.Fatalf("with a namespace's pool, the sweep is due in %v, want within %v", d, netnsIdleAfter)
	}
	if _, err := f.pool(route{addr: netip.MustParseAddrPort("127.0.0.2:53")}); err != nil {
		t.Fatal(err)
	}
	if d := due(); d > netnsIdleAfter {
		t.Errorf("another host pool put the sweep back to %v", d)
	}
	// At netnsIdleAfter without a query the namespace's pool goes, the
	// host's stay.
	clock := time.Now().Add(netnsIdleAfter + time.Second)
	f.now = func() time.Time { return clock }
	f.sweep()
	f.mu.Lock()
	defer f.mu.Unlock()
	for to := range f.pools {
		if to.netns != "" {
			t.Errorf("the namespace's pool is still there after %v idle", netnsIdleAfter)
		}
	}
	if len(f.pools) != 2 {
		t.Errorf("%d pools after the sweep, want the host's two", len(f.pools))
	}
}

// A flood of queries to forward does not pile up without bound: beyond
// maxForwarding in flight, a query gets SERVFAIL at once instead of
// waiting for an upstream that does not answer.
func TestForwardingFloodIsBounded(t *testing.T) {
	// A low bound, so that the flood fits the server's receive buffer.
	// Restored in a cleanup that runs after the server's has stopped it.
	old := maxForwarding
	t.Cleanup(func() { maxForwarding = old })
	maxForwarding = 16
	port := freePort(t)
	startServer(t, socketSnapshot(port, startUpstream(t).addr, deadUpstream(t)))
	n := int(maxForwarding) + 100
	servfail := floodSilentUpstream(t, port, n, nil)
	if servfail < 50 {
		t.Errorf("%d immediate SERVFAILs for %d queries to a silent upstream, want about %d", servfail, n, n-int(maxForwarding))
	}
}

// One client's flood of names to forward to a silent upstream fills only
// its own share: beyond it, its queries get SERVFAIL at once, and another
// client's names still go upstream.
func TestForwardingFloodOfOneClient(t *testing.T) {
	old := maxForwardingPerClient
	t.Cleanup(func() { maxForwardingPerClient = old })
	maxForwardingPerClient = 16
	port := freePort(t)
	startServer(t, socketSnapshot(port, startUpstream(t).addr, deadUpstream(t)))
	n := maxForwardingPerClient + 100
	servfail := floodSilentUpstream(t, port, n, func() {
		if _, m, err := ask(gatewayA, port, fromClient, "udp", "example.com.", dns.TypeA); err != nil || m.Rcode != dns.RcodeSuccess {
			t.Errorf("another client's forwarded name during the flood: %v, %v", m, err)
		}
	})
	if servfail < 50 {
		t.Errorf("%d immediate SERVFAILs for %d queries of one client to a silent upstream, want about %d", servfail, n, n-maxForwardingPerClient)
	}
}

// A client with as many forwarded queries in flight as it may have sends
// the next as a reply comes: it is never refused, however long the reply's
// goroutine takes to end (dnsperf's load, on a busy CPU, had SERVFAILs).
func TestForwardingAtTheClientsLimit(t *testing.T) {
	old, oldHook := maxForwardingPerClient, afterForwardReply
	t.Cleanup(func() { maxForwardingPerClient, afterForwardReply = old, oldHook })
	maxForwardingPerClient = 1
	afterForwardReply = func() { time.Sleep(50 * time.Millisecond) }
	port := freePort(t)
	startServer(t, socketSnapshot(port, startUpstream(t).addr, deadUpstream(t)))
	for i := range 10 {
		_, m, err := ask(gatewayA, port, fromClient, "udp", "q"+strconv.Itoa(i)+".example.", dns.TypeA)
		if err != nil || m.Rcode != dns.RcodeSuccess {
			t.Fatalf("forwarded query %d, one in flight at a time: %v, %v", i, m, err)
		}
	}
}

// floodSilentUpstream sends n distinct names from fromLost, whose upstream
// never answers, runs during (if any) while they are in flight, and counts
// the SERVFAILs that come back before the upstream's timeout: only those
// refused at once can.
func floodSilentUpstream(t *testing.T, port uint16, n int, during func()) (servfail int) {
	t.Helper()
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: fromLost.AsSlice()}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gatewayA, port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	for i := range n {
		q := new(dns.Msg).SetQuestion("q"+strconv.Itoa(i)+".example.", dns.TypeA)
		q.SetEdns0(1232, false)
		b, _ := q.Pack()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if during != nil {
		during()
	}
	buf := make([]byte, 512)
	_ = c.SetReadDeadline(t0.Add(testTimeout * 2 / 3))
	for {
		k, err := c.Read(buf)
		if err != nil {
			return servfail
		}
		m := new(dns.Msg)
		if m.Unpack(buf[:k]) == nil && m.Rcode == dns.RcodeServerFailure {
			if servfail == 0 && m.IsEdns0() == nil {
				t.Errorf("a SERVFAIL to an EDNS query without an OPT record:\n%v", m)
			}
			servfail++
		}
	}
}

// A route with a namespace asks the upstream from inside it: a server on
// that namespace's loopback answers, over UDP and TCP, where the host's
// loopback has none. A query still waiting there fails at once when its
// namespace is no longer wanted (keep), which closes the namespace's
// sockets, and no socket is opened there after; a path that names
// another namespace now has its pool closed too.
func TestForwarderAsksFromNamespace(t *testing.T) {
	ns := testutil.NewNetns(t)
	loUp := func() {
		t.Helper()
		if err := netns.Do(ns, func() error {
			lo, err := netlink.LinkByName("lo")
			if err == nil {
				err = netlink.LinkSetUp(lo)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	loUp()
	up := startUpstreamIn(t, ns)
	f := newForwarder(testTimeout, slog.New(slog.DiscardHandler))
	defer f.close()
	// open counts f's pools and connections in the namespace.
	open := func(f *forwarder) int {
		f.mu.Lock()
		defer f.mu.Unlock()
		n := len(f.inNetns[ns])
		for to := range f.pools {
			if to.netns == ns {
				n++
			}
		}
		return n
	}
	to := route{netns: ns, addr: up.addr}
	for _, tcp := range []bool{false, true} {
		q := new(dns.Msg).SetQuestion("inside.example.", dns.TypeA)
		q.Id = 99
		m, err := f.exchange(context.Background(), q, to, tcp)
		if want := map[bool]string{false: "NOERROR 192.0.2.1", true: "NOERROR 192.0.2.2"}[tcp]; err != nil || summary(m) != want || m.Id != 99 {
			t.Fatalf("tcp %v: %v %q, want %q with the client's ID", tcp, err, summary(m), want)
		}
	}
	if n := open(f); n != 1 {
		t.Errorf("%d pools and connections in the namespace after the queries, want its UDP pool", n)
	}
	q := new(dns.Msg).SetQuestion("outside.example.", dns.TypeA)
	if m, err := f.exchange(context.Background(), q, route{addr: up.addr}, false); err == nil {
		t.Fatalf("the host's loopback answered %q: the test cannot tell the namespaces apart", summary(m))
	}
	// The path now names another namespace: the pool goes.
	if err := netns.Delete(ns); err != nil {
		t.Fatal(err)
	}
	if err := netns.Create(ns, nil); err != nil {
		t.Fatal(err)
	}
	f.keep(func(string) bool { return true })
	if n := open(f); n != 0 {
		t.Errorf("%d pools and connections in the namespace after its path was reused", n)
	}
	loUp()
	var silent net.PacketConn // bound, never answers; its TCP twin never reads
	var silentTCP net.Listener
	if err := netns.Do(ns, func() (err error) {
		if silent, err = net.ListenPacket("udp4", "127.0.0.1:0"); err == nil {
			silentTCP, err = net.Listen("tcp4", silent.LocalAddr().String())
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	defer silentTCP.Close()
	quiet := route{ns, netip.MustParseAddrPort(silent.LocalAddr().String())}
	slow := newForwarder(time.Minute, slog.New(slog.DiscardHandler)) // only keep ends its wait
	defer slow.close()
	for _, tcp := range []bool{false, true} {
		done := make(chan error, 1)
		go func() {
			_, err := slow.exchange(context.Background(), q, quiet, tcp)
			done <- err
		}()
		for deadline := time.Now().Add(5 * time.Second); open(slow) == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("tcp %v: the query opened nothing in the namespace", tcp)
			}
		}
		slow.keep(func(string) bool { return true })
		select {
		case err := <-done:
			t.Fatalf("tcp %v: the query ended (%v) though its namespace is wanted", tcp, err)
		case <-time.After(50 * time.Millisecond):
		}
		slow.keep(func(string) bool { return false })
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("tcp %v: the query whose socket keep closed got an answer", tcp)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("tcp %v: a query in a namespace no longer wanted still waits", tcp)
		}
		// A query that chose its route before keep opens nothing there.
		if _, err := slow.exchange(context.Background(), q, quiet, tcp); !errors.Is(err, errNotWanted) {
			t.Errorf("tcp %v: a query in a namespace keep let go: %v, want %v", tcp, err, errNotWanted)
		}
		if n := open(slow); n != 0 {
			t.Errorf("tcp %v: %d pools and connections in a namespace keep let go", tcp, n)
		}
		slow.keep(func(string) bool { return true })
	}
	// A socket replaced (after rotateAfter queries) while a query waits
	// on it is closed by keep too.
	slow.rotateAfter = 1
	waiting := func() (retired, pending int) {
		slow.mu.Lock()
		p := slow.pools[quiet]
		slow.mu.Unlock()
		if p == nil {
			return 0, 0
		}
		p.dial.Lock()
		defer p.dial.Unlock()
		for _, s := range append([]*upstreamSocket{p.socks[0].Load()}, p.retired...) {
			if s != nil {
				s.mu.Lock()
				pending += len(s.pending)
				s.mu.Unlock()
			}
		}
		return len(p.retired), pending
	}
	rotated := make(chan error, 2)
	for i := range 2 {
		go func() {
			_, err := slow.exchange(context.Background(), q, quiet, false)
			rotated <- err
		}()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if r, n := waiting(); r == i && n == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("query %d: never waiting as it should", i)
			}
		}
	}
	slow.keep(func(string) bool { return false })
	for range 2 {
		select {
		case <-rotated:
		case <-time.After(5 * time.Second):
			t.Fatal("a query on a replaced socket in a namespace keep let go still waits")
		}
	}
	slow.keep(func(string) bool { return true })
	// A query whose listener closes returns at once.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := slow.exchange(ctx, q, quiet, true)
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); open(slow) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the query opened nothing in the namespace")
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled query in a namespace still waits")
	}
}

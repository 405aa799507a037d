package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/knit-dev/knit/bench/loadgen"
	"github.com/knit-dev/knit/internal/dns/server"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/testutil"
)

// The DNS benchmarks need no root: the embedded server, a fake upstream
// and the clients all use loopback, in the sandbox's namespace when
// TestMain made one and in the machine's otherwise.
const (
	dnsEndpoints = 100 // containers on the network besides the client
	dnsClients   = 8   // concurrent clients, each with its own socket
)

// BenchmarkDNSLocal measures the embedded DNS server answering A queries
// for a container's name from several concurrent UDP clients: queries/s
// over the whole run and the percentiles of one query's round trip.
func BenchmarkDNSLocal(b *testing.B) {
	benchmarkDNS(b, fmt.Sprintf("c%d.", dnsEndpoints/2), "10.0.0.52", "")
}

// BenchmarkDNSForwarded is BenchmarkDNSLocal for a name the server
// forwards to an upstream (a fake on loopback that answers at once), so
// it adds the server's upstream exchange to each query: through the
// sockets it pools in the host's namespace, as for a known client whose
// namespace the records do not give, or an unknown one.
func BenchmarkDNSForwarded(b *testing.B) {
	benchmarkDNS(b, "example.com.", "192.0.2.1", "")
}

// BenchmarkDNSForwardedFromNamespace is BenchmarkDNSForwarded for a
// container's query, which goes upstream from its own namespace, through
// a socket opened there (here the benchmark's own namespace, entered as a
// container's would be).
func BenchmarkDNSForwardedFromNamespace(b *testing.B) {
	benchmarkDNS(b, "example.com.", "192.0.2.1", fmt.Sprintf("/proc/%d/ns/net", os.Getpid()))
}

func benchmarkDNS(b *testing.B, name, want, netns string) {
	loopbackUp(b)
	addr := startDNSServer(b, startUpstream(b), netns)
	b.ResetTimer()
	all, elapsed, err := loadgen.DNS(addr, dnsClients, b.N, func(int) (string, string) { return name, want })
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "queries/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// loopbackUp raises lo in the sandbox's fresh namespace, where it starts
// down; outside the sandbox it leaves the machine's network alone.
func loopbackUp(b *testing.B) {
	b.Helper()
	if !testutil.InSandbox() {
		return
	}
	h, err := link.Host() // the benchmark's private namespace
	must(b, err)
	defer h.Close()
	must(b, h.SetUp("lo"))
}

// freeLoopbackPort returns a port free for UDP and TCP on 127.0.0.1.
func freeLoopbackPort(b *testing.B) uint16 {
	b.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		must(b, err)
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		if l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			l.Close()
			return uint16(port)
		}
	}
	b.Fatal("no free port on 127.0.0.1")
	return 0
}

// startUpstream runs a UDP DNS server on 127.0.0.1 that answers every
// query with A 192.0.2.1, and returns its address.
func startUpstream(b *testing.B) netip.AddrPort {
	b.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	must(b, err)
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			m := new(dns.Msg).SetReply(q)
			m.Answer = []dns.RR{&dns.A{A: net.IPv4(192, 0, 2, 1),
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}}}
			_ = w.WriteMsg(m)
		})}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	b.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// startDNSServer runs server.Serve for one network listening on 127.0.0.1
// with dnsEndpoints containers c0, c1, ... at 10.0.0.2, 10.0.0.3, ... and
// the client, 127.0.0.1, whose upstream is upstream, asked from netns
// ("": the host's). It returns the server's address once it listens.
func startDNSServer(b *testing.B, upstream netip.AddrPort, netns string) string {
	b.Helper()
	gw := netip.MustParseAddr("127.0.0.1")
	n := server.Network{Name: "bench", Listen: []netip.Addr{gw}, Endpoints: []server.Endpoint{
		{Container: "client", Name: "client", Addrs: []netip.Addr{gw}, Upstreams: []netip.AddrPort{upstream}, Netns: netns},
	}}
	for i := range dnsEndpoints {
		n.Endpoints = append(n.Endpoints, server.Endpoint{Container: fmt.Sprint("id", i), Name: fmt.Sprint("c", i),
			Aliases: []string{fmt.Sprint("alias", i)}, Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte((i + 2) / 256), byte(i + 2)})}})
	}
	port := freeLoopbackPort(b)
	dir := b.TempDir()
	must(b, server.Save(dir, &server.Snapshot{Port: port, Networks: []server.Network{n}}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Serve(ctx, dir, nil) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, server.PIDFile)); err == nil {
			return netip.AddrPortFrom(gw, port).String()
		}
		select {
		case err := <-done:
			b.Fatalf("the DNS server exited at start: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatal("the DNS server did not start within 5s")
		}
	}
}

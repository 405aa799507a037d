package bench

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/bench/loadgen"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/nftables"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/testutil"
)

// The published ports' network, as the benchmarks' topology builds it:
//
//	container eth0 10.99.0.2/24 ── br0 10.99.0.1/24  bench  kbwan0 198.51.100.1/24 ── eth0 198.51.100.2/24 client
//
// "bench" is the benchmark process's own namespace, private thanks to
// TestMain; container and client are namespaces made for each run.
var (
	pubNetwork = firewall.Network{Name: "n1", Bridge: "br0",
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}}
	containerAddr = netip.MustParseAddr("10.99.0.2")
)

// fillerPort is the first host port of the mappings that only fill the
// maps; they go up from here, clear of the ports that are measured.
const fillerPort = 10000

// newFirewall returns an nftables firewall in the benchmark's private
// namespace, starting from an empty table and leaving none behind.
func newFirewall(b *testing.B) *nftables.Firewall {
	b.Helper()
	if !testutil.InSandbox() {
		b.Skip("needs root: the benchmark writes nftables rules in a private namespace")
	}
	fw := nftables.New()
	// Other benchmarks of this process may have left their table.
	if err := fw.RemoveAll(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = fw.RemoveAll() })
	if err := fw.EnsureNetwork(pubNetwork); err != nil {
		b.Fatal(err)
	}
	return fw
}

// publishFiller publishes n tcp mappings on host ports fillerPort,
// fillerPort+1, ... to addresses of pubNetwork, in AddPorts calls of up to
// 200 mappings, each call with its own owner. (Not more: one AddPorts call
// of 300 or more mappings fails here with "netlink receive: recvmsg: no
// buffer space available", the kernel's replies to the batch overflowing
// the socket's receive buffer.)
func publishFiller(b *testing.B, fw *nftables.Firewall, n int) {
	b.Helper()
	const batch = 200
	if fillerPort+n > 1<<16 {
		b.Fatalf("%d filler mappings do not fit above port %d", n, fillerPort)
	}
	for start := 0; start < n; start += batch {
		ports := make([]firewall.PortMapping, 0, batch)
		for i := start; i < min(start+batch, n); i++ {
			ports = append(ports, firewall.PortMapping{Network: pubNetwork.Name,
				HostPort: uint16(fillerPort + i), Proto: "tcp",
				ContainerIP: netip.AddrFrom4([4]byte{10, 99, 0, byte(3 + i%250)}), ContainerPort: 80})
		}
		if err := fw.AddPorts(fmt.Sprintf("filler-%d", start/batch), ports); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublish times publishing one container's one port (AddPorts)
// when `existing` mappings of other owners are in place; each iteration
// then unpublishes it with the timer stopped, so every iteration adds to
// the same table. The percentiles need many samples: -benchtime 1x gives
// one, so compare them with e.g. -benchtime 200x.
func BenchmarkPublish(b *testing.B) {
	benchElems(b, publishFiller, func(fw *nftables.Firewall) error { return fw.AddPorts("bench", benchPorts) },
		func(fw *nftables.Firewall) error { return fw.RemovePorts("bench", benchPorts) }, false)
}

// BenchmarkUnpublish times unpublishing one container's one port
// (RemovePorts) when `existing` mappings of other owners stay in place;
// each iteration publishes it first with the timer stopped.
func BenchmarkUnpublish(b *testing.B) {
	benchElems(b, publishFiller, func(fw *nftables.Firewall) error { return fw.RemovePorts("bench", benchPorts) },
		func(fw *nftables.Firewall) error { return fw.AddPorts("bench", benchPorts) }, true)
}

// BenchmarkLink times allowing one link (AddLinks) when `existing` links
// of other owners are in place; each iteration then removes it with the
// timer stopped.
func BenchmarkLink(b *testing.B) {
	benchElems(b, linkFiller, func(fw *nftables.Firewall) error { return fw.AddLinks("bench", benchLinks) },
		func(fw *nftables.Firewall) error { return fw.RemoveLinks("bench", benchLinks) }, false)
}

var (
	benchPorts = []firewall.PortMapping{{Network: pubNetwork.Name, HostPort: 8080, Proto: "tcp",
		ContainerIP: containerAddr, ContainerPort: 80}}
	benchLinks = []firewall.Link{{Network: pubNetwork.Name, From: netip.MustParseAddr("10.99.0.3"),
		To: containerAddr, Proto: "tcp", Port: 80}}
)

// benchElems times op with 10 and with 10,000 other owners' elements put
// in place by fill; undo, untimed, restores the table after each op (or,
// with undoFirst, prepares it before each op), so every iteration starts
// from the same table.
func benchElems(b *testing.B, fill func(*testing.B, *nftables.Firewall, int), op, undo func(*nftables.Firewall) error, undoFirst bool) {
	for _, existing := range []int{10, 10000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			fw := newFirewall(b)
			fill(b, fw, existing)
			untimed := func() {
				b.StopTimer()
				if err := undo(fw); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			lat := make(latencies, 0, b.N)
			b.ResetTimer()
			for range b.N {
				if undoFirst {
					untimed()
				}
				t0 := time.Now()
				if err := op(fw); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
				if !undoFirst {
					untimed()
				}
			}
			lat.report(b)
		})
	}
}

// linkFiller adds n tcp links to port 80 of pubNetwork's containers, from
// addresses of 10.100.0.0/16, in AddLinks calls of up to 200 links, each
// call with its own owner.
func linkFiller(b *testing.B, fw *nftables.Firewall, n int) {
	b.Helper()
	const batch = 200
	if n > 250*250 {
		b.Fatalf("%d filler links do not fit in 10.100.0.0/16", n)
	}
	for start := 0; start < n; start += batch {
		links := make([]firewall.Link, 0, batch)
		for i := start; i < min(start+batch, n); i++ {
			links = append(links, firewall.Link{Network: pubNetwork.Name,
				From: netip.AddrFrom4([4]byte{10, 100, byte(1 + i/250), byte(1 + i%250)}),
				To:   containerAddr, Proto: "tcp", Port: 80})
		}
		if err := fw.AddLinks(fmt.Sprintf("filler-%d", start/batch), links); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishedPortThroughput measures TCP throughput from a client
// namespace through a published port (host port 5201 DNATed to the
// container's 5201) with `existing` other mappings in the same maps: one
// 3-second iperf3 run per sub-benchmark, whatever b.N is (run it with
// -benchtime 1x; ns/op is suppressed because it would be meaningless).
//
// Only a connection's first packet is looked up in the port maps;
// conntrack translates the rest. So the figure shows that the published
// path carries traffic at all and what the DNAT, forward and conntrack path
// costs per byte, not the lookup's cost, which BenchmarkPublish's table
// sizes do not change per packet either (the maps are hashed).
func BenchmarkPublishedPortThroughput(b *testing.B) {
	for _, existing := range []int{10, 10000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			fw := newFirewall(b)
			container, client := portTopology(b)
			publishFiller(b, fw, existing)
			ports := []firewall.PortMapping{{Network: pubNetwork.Name, HostPort: 5201, Proto: "tcp",
				ContainerIP: containerAddr, ContainerPort: 5201}}
			if err := fw.AddPorts("bench", ports); err != nil {
				b.Fatal(err)
			}
			startIperfServer(b, container)
			b.ResetTimer()
			gbps := iperfClient(b, client, "198.51.100.1", 5201)
			b.StopTimer()
			b.ReportMetric(gbps, "Gbit/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// portTopology builds br0 and the veths of the container and client
// namespaces shown at the top of this file, turns on forwarding in the
// benchmark's namespace, and returns the two namespaces' files. Everything
// is removed at cleanup.
func portTopology(b *testing.B) (container, client string) {
	b.Helper()
	container, client = testutil.NewNetns(b), testutil.NewNetns(b)
	h, err := link.Host() // the benchmark's private namespace
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	br, _, err := h.BridgeEnsure(pubNetwork.Bridge, 1500)
	must(b, err)
	// Cleanups run last-in first-out: the links go before the namespaces
	// holding their peers, and the bridge after its port.
	b.Cleanup(func() { _ = h.LinkDel(pubNetwork.Bridge) })
	must(b, h.AddrEnsure(br, netip.MustParsePrefix("10.99.0.1/24")))
	_, err = h.VethAdd(link.Veth{Name: "kbctr0", MasterIndex: br, PeerName: "eth0", PeerNetns: container})
	must(b, err)
	b.Cleanup(func() { _ = h.LinkDel("kbctr0") })
	wan, err := h.VethAdd(link.Veth{Name: "kbwan0", PeerName: "eth0", PeerNetns: client})
	must(b, err)
	b.Cleanup(func() { _ = h.LinkDel("kbwan0") })
	must(b, h.AddrEnsure(wan, netip.MustParsePrefix("198.51.100.1/24")))
	peerUp(b, container, "10.99.0.2/24", "10.99.0.1")
	peerUp(b, client, "198.51.100.2/24", "198.51.100.1")
	// The process's namespace is private, so this changes nothing outside.
	must(b, link.SetForwarding(false))
	return container, client
}

// peerUp addresses and raises the eth0 of the namespace at ns and routes
// everything via gateway.
func peerUp(b *testing.B, ns, addr, gateway string) {
	b.Helper()
	h, err := link.At(ns)
	must(b, err)
	defer h.Close()
	must(b, h.SetUp("lo"))
	eth, err := h.LinkGet("eth0")
	must(b, err)
	must(b, h.AddrEnsure(eth.Index, netip.MustParsePrefix(addr)))
	must(b, h.LinkSetUp(eth.Index))
	must(b, h.RouteAddDefault(eth.Index, netip.MustParseAddr(gateway)))
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// startIperfServer runs a one-test iperf3 server in the namespace at ns
// and returns once it listens on 5201. The cleanup kills it by PID if it
// is still running (nsenter execs iperf3, so the PID is iperf3's).
func startIperfServer(b *testing.B, ns string) {
	b.Helper()
	var out strings.Builder
	srv := exec.Command("nsenter", "--net="+ns, "iperf3", "-s", "-1", "-p", "5201")
	srv.Stdout, srv.Stderr = &out, &out
	must(b, srv.Start())
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	b.Cleanup(func() {
		_ = srv.Process.Kill() // an error means it has exited already
		<-done
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		ss, err := exec.Command("nsenter", "--net="+ns, "ss", "-Hltn", "sport = :5201").Output()
		if err == nil && len(strings.TrimSpace(string(ss))) > 0 {
			return
		}
		select {
		case err := <-done:
			done <- err // for the cleanup
			b.Fatalf("iperf3 server exited: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("iperf3 server not listening after 5s\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// iperfClient runs a 3-second iperf3 test from the namespace at ns to
// addr:port and returns the receiver's throughput in Gbit/s. A run that
// hangs is killed after 30 seconds.
func iperfClient(b *testing.B, ns, addr string, port int) float64 {
	b.Helper()
	gbps, err := loadgen.IperfGbps([]string{"nsenter", "--net=" + ns, "iperf3", "-c", addr, "-p", fmt.Sprint(port),
		"-t", "3", "-J", "--connect-timeout", "2000"})
	if err != nil {
		b.Fatal(err)
	}
	return gbps
}

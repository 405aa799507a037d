package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/knit-dev/knit/bench/loadgen"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
)

// The data-path section, one TCP stream of iperf3 for 3 seconds per run,
// in one sandbox (its own namespace plays the host):
//
//	bridge     knit container c1 -> knit container c2, over knit's bridge
//	veth       namespace A -> namespace B over a veth pair made by hand
//	direct     host -> c2's address
//	published  host -> 198.51.100.1:5201, published by knit to c2:5201
//	           (DNAT in knit's output chain)
//	outside    client namespace -> 198.51.100.1:5201 over a veth to the host
//	           (DNAT in prerouting, then forwarded to the bridge)
//
// Each path runs *repeats* times, the paths in turn; the median is printed.
const iperfPort = 5201

var (
	wanHost   = netip.MustParsePrefix("198.51.100.1/24")
	wanClient = netip.MustParsePrefix("198.51.100.2/24")
)

func datapathSection() error {
	if err := sandboxInit(); err != nil {
		return err
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		return err
	}
	e, err := newKnitEngine(filepath.Join(workDir, "knit"))
	if err != nil {
		return err
	}
	c1, err := e.Create(knitRunOptions(30001, 80))
	if err != nil {
		return err
	}
	c2, err := e.Create(knitRunOptions(iperfPort, iperfPort))
	if err != nil {
		return err
	}
	c2Addr := c2.Endpoints[0].Addrs[0].Addr()

	h, err := link.Host()
	if err != nil {
		return err
	}
	defer h.Close()
	// The hand-made pair: A's end "v0" 10.77.0.1/30, B's "eth0" .2/30.
	nsA, nsB, client := filepath.Join(workDir, "nsA"), filepath.Join(workDir, "nsB"), filepath.Join(workDir, "client")
	for _, p := range []string{nsA, nsB, client} {
		if err := netns.Create(p, nil); err != nil {
			return err
		}
	}
	if err := vethPair(nsA, nsB); err != nil {
		return err
	}
	// The outside client: host "kbwan0" 198.51.100.1/24, client "eth0" .2.
	wan, err := h.VethAdd(link.Veth{Name: "kbwan0", PeerName: "eth0", PeerNetns: client})
	if err != nil {
		return err
	}
	if err := h.AddrEnsure(wan, wanHost); err != nil {
		return err
	}
	if err := nsUp(client, wanClient, wanHost.Addr()); err != nil {
		return err
	}

	type path struct {
		name, serverNs, clientNs, addr string
		port                           int
	}
	paths := []path{
		{"bridge", c2.Netns, c1.Netns, c2Addr.String(), iperfPort},
		{"veth", nsB, nsA, "10.77.0.2", iperfPort},
		{"direct", c2.Netns, "", c2Addr.String(), iperfPort},
		{"published", c2.Netns, "", wanHost.Addr().String(), iperfPort},
		{"outside", c2.Netns, client, wanHost.Addr().String(), iperfPort},
	}
	repeats := 3
	if *quick {
		repeats = 1
	}
	got := map[string][]float64{}
	for range repeats {
		for _, p := range paths {
			g, err := iperf(p.serverNs, p.clientNs, p.addr, p.port)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			got[p.name] = append(got[p.name], g)
		}
	}
	fmt.Printf("iperf3: %d run(s) per path, the paths in turn; the median of each path\n", repeats)
	for _, p := range paths {
		g := slices.Sorted(slices.Values(got[p.name]))
		fmt.Printf("BenchmarkIperf/path=%s\t%d\t0 ns/op\t%.2f Gbit/s\n", p.name, len(g), g[len(g)/2])
	}
	return nil
}

// vethPair joins the namespaces a and b with a veth pair, 10.77.0.1/30 in
// a and 10.77.0.2/30 in b, both up.
func vethPair(a, b string) error {
	ha, err := link.At(a)
	if err != nil {
		return err
	}
	defer ha.Close()
	if err := ha.SetUp("lo"); err != nil {
		return err
	}
	v, err := ha.VethAdd(link.Veth{Name: "v0", PeerName: "eth0", PeerNetns: b})
	if err != nil {
		return err
	}
	if err := ha.AddrEnsure(v, netip.MustParsePrefix("10.77.0.1/30")); err != nil {
		return err
	}
	return nsUp(b, netip.MustParsePrefix("10.77.0.2/30"), netip.Addr{})
}

// nsUp raises lo and eth0 in the namespace ns, addresses eth0 and, if gw
// is valid, routes everything via gw.
func nsUp(ns string, addr netip.Prefix, gw netip.Addr) error {
	h, err := link.At(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.SetUp("lo"); err != nil {
		return err
	}
	eth, err := h.LinkGet("eth0")
	if err != nil {
		return err
	}
	if err := h.AddrEnsure(eth.Index, addr); err != nil {
		return err
	}
	if err := h.LinkSetUp(eth.Index); err != nil {
		return err
	}
	if gw.IsValid() {
		return h.RouteAddDefault(eth.Index, gw)
	}
	return nil
}

// inNs prefixes a command with nsenter into ns; "" is the sandbox's own
// namespace.
func inNs(ns string, args ...string) []string {
	if ns == "" {
		return args
	}
	return append([]string{"nsenter", "--net=" + ns}, args...)
}

// iperf runs a one-test iperf3 server in serverNs and a 3-second client in
// clientNs to addr:port, and returns the receiver's Gbit/s. Both are
// killed if the test takes more than 30 seconds.
func iperf(serverNs, clientNs, addr string, port int) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sa := inNs(serverNs, "iperf3", "-s", "-1", "-p", fmt.Sprint(port))
	srv := exec.CommandContext(ctx, sa[0], sa[1:]...)
	var srvOut strings.Builder
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() { cancel(); _ = srv.Wait() }()
	// Wait for the listener.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		sa := inNs(serverNs, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port))
		if out, err := exec.Command(sa[0], sa[1:]...).Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("iperf3 server not listening after 5s: %s", srvOut.String())
		}
	}
	return loadgen.IperfGbps(inNs(clientNs, "iperf3", "-c", addr, "-p", fmt.Sprint(port), "-t", "3", "-J", "--connect-timeout", "2000"))
}

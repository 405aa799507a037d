package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/bench/loadgen"
	"github.com/knit-dev/knit/internal/dns/server"
	"github.com/knit-dev/knit/internal/runner"
)

// The DNS section: knit's embedded server and aardvark-dns, each a process
// of its own listening on 127.0.0.1 in the same sandbox, serve the same
// network: dnsNames containers c0..c99 (alias a0..a99) at 10.0.0.2... and
// the client, 127.0.0.1. The same client load is put on each in turn:
// dnsClients concurrent UDP clients, each with its own socket, asking A
// questions for c0, c1, ... c99 in turn until dnsQueries have been asked.
// Forwarded names (example.com) go to a fake upstream on 127.0.0.53:53,
// which answers at once: knit's endpoint names it, and aardvark-dns reads
// it from /etc/resolv.conf, which the sandbox replaces with a file of its own.
const (
	dnsNames     = 100
	dnsClients   = 8
	dnsServerArg = "_knit-dns" // argv[1] that makes this program knit's DNS server
	knitDNSPort  = 5353
	aardvarkPort = 5354
)

var upstream = netip.MustParseAddrPort("127.0.0.53:53")

func dnsSection() error {
	if err := sandboxInit(); err != nil {
		return err
	}
	if err := startUpstream(); err != nil {
		return err
	}
	// aardvark-dns reads its upstreams from /etc/resolv.conf.
	resolv := filepath.Join(workDir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+upstream.Addr().String()+"\n"), 0o644); err != nil {
		return err
	}
	if err := unix.Mount(resolv, "/etc/resolv.conf", "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind resolv.conf: %w", err)
	}
	if *dnsPin {
		if err := pinLoad(); err != nil {
			return err
		}
	}
	knit, stopKnit, err := startKnitDNS()
	if err != nil {
		return fmt.Errorf("knit's DNS server: %w", err)
	}
	defer stopKnit()
	aard, stopAard, err := startAardvark()
	if err != nil {
		return fmt.Errorf("aardvark-dns: %w", err)
	}
	defer stopAard()
	servers := []dnsServer{knit, aard}

	queries, rounds := 50000, 3
	if *quick {
		queries, rounds = 20000, 2
	}
	fmt.Printf("dns-load: %d concurrent UDP clients, %d queries per round, %d rounds per server alternating, names c0..c%d\n",
		dnsClients, queries, rounds, dnsNames-1)
	for _, kind := range []string{"local", "forwarded"} {
		res := map[string]*dnsResult{}
		for _, s := range servers {
			res[s.tool] = &dnsResult{}
		}
		for range rounds {
			for _, s := range servers {
				if err := dnsLoad(res[s.tool], s, kind, queries); err != nil {
					return fmt.Errorf("%s, %s names: %w", s.tool, kind, err)
				}
			}
		}
		for _, s := range servers {
			res[s.tool].print(fmt.Sprintf("BenchmarkDNS/kind=%s/tool=%s", kind, s.tool))
		}
	}
	if err := dnsperfSection(servers, rounds); err != nil {
		return err
	}
	return batchSection(servers, rounds)
}

// dnsServer is a DNS server under test: its name in the figures, where it
// listens, and its process, whose CPU time each round reads.
type dnsServer struct {
	tool, addr string
	pid        int
}

// serverCPU runs fn and returns the CPU time the server used meanwhile.
func (s dnsServer) serverCPU(fn func() error) (time.Duration, error) {
	before, err := runner.CPUTime(s.pid)
	if err != nil {
		return 0, fmt.Errorf("%s's CPU time: %w", s.tool, err)
	}
	if err := fn(); err != nil {
		return 0, err
	}
	after, err := runner.CPUTime(s.pid)
	if err != nil {
		return 0, fmt.Errorf("%s's CPU time: %w", s.tool, err)
	}
	return after - before, nil
}

// dnsperfSection measures each server's throughput open-loop with
// dnsperf (Debian's dnsperf, the usual DNS load tool; written in C, it
// spends far less CPU per query than the Go clients above, which share
// the machine's CPUs with the server under test): dnsperfClients sockets,
// up to dnsperfOutstanding queries in flight, dnsperfSeconds per round,
// rounds alternating between the servers; the median round is reported.
func dnsperfSection(servers []dnsServer, rounds int) error {
	if _, err := exec.LookPath("dnsperf"); err != nil {
		fmt.Printf("note-dnsperf: dnsperf is not installed (apt-get install dnsperf): the open-loop DNS figures are missing\n")
		return nil
	}
	threads := ""
	if *dnsperfT != 1 {
		threads = fmt.Sprintf(" -T %d", *dnsperfT)
	}
	fmt.Printf("dnsperf-load: dnsperf -c %d -q %d -l %d%s (%d rounds per server, alternating; the median round)\n",
		dnsperfClients, dnsperfOutstanding, dnsperfSeconds, threads, rounds)
	for _, kind := range []string{"local", "forwarded"} {
		file := filepath.Join(workDir, "dnsperf-"+kind)
		var lines []string
		if kind == "local" {
			for j := range dnsNames {
				lines = append(lines, fmt.Sprintf("c%d A", j))
			}
		} else {
			lines = []string{"example.com A"}
		}
		if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			return err
		}
		res := map[string][]dnsperfResult{}
		for range rounds {
			for _, s := range servers {
				r, err := dnsperf(s, file)
				if err != nil {
					return fmt.Errorf("dnsperf, %s, %s names: %w", s.tool, kind, err)
				}
				res[s.tool] = append(res[s.tool], r)
			}
		}
		for _, s := range servers {
			tool, rs := s.tool, res[s.tool]
			slices.SortFunc(rs, func(a, b dnsperfResult) int { return cmp.Compare(a.qps, b.qps) })
			m := rs[len(rs)/2]
			fmt.Printf("BenchmarkDNSPerf/kind=%s/tool=%s\t%d\t%.0f queries/s\t%.1f avg-µs\t%d lost\t%s\n",
				kind, tool, m.completed, m.qps, m.avgMicros, m.lost, m.cpu.metrics(m.completed))
		}
	}
	return nil
}

const (
	dnsperfClients     = 8
	dnsperfOutstanding = 100
	dnsperfSeconds     = 5
)

type dnsperfResult struct {
	completed, lost int
	qps, avgMicros  float64
	cpu             cpuShare
}

// cpuShare is what the server and the load used of the CPUs over a
// measurement of the given wall time. When the load uses a whole CPU and
// the server does not, the queries/s are the load's limit, not the
// server's: the queries per CPU-second of the server are its capacity.
type cpuShare struct {
	wall, server, load time.Duration
}

func (c *cpuShare) add(o cpuShare) {
	c.wall += o.wall
	c.server += o.server
	c.load += o.load
}

// metrics are c's benchmark metrics for n queries answered.
func (c cpuShare) metrics(n int) string {
	return fmt.Sprintf("%.1f server-cpu-%%\t%.1f load-cpu-%%\t%.0f queries/server-cpu-s",
		100*c.server.Seconds()/c.wall.Seconds(), 100*c.load.Seconds()/c.wall.Seconds(), float64(n)/c.server.Seconds())
}

// dnsperf runs one round against addr with the queries in file, and
// refuses a round with any answer but NOERROR.
func dnsperf(srv dnsServer, file string) (dnsperfResult, error) {
	host, port, err := net.SplitHostPort(srv.addr)
	if err != nil {
		return dnsperfResult{}, err
	}
	cmd := exec.Command("dnsperf", "-s", host, "-p", port, "-d", file, "-c", fmt.Sprint(dnsperfClients),
		"-q", fmt.Sprint(dnsperfOutstanding), "-l", fmt.Sprint(dnsperfSeconds), "-t", "2", "-T", fmt.Sprint(*dnsperfT))
	var out []byte
	var r dnsperfResult
	start := time.Now()
	r.cpu.server, err = srv.serverCPU(func() (err error) { out, err = cmd.CombinedOutput(); return err })
	r.cpu.wall = time.Since(start)
	if err != nil {
		return dnsperfResult{}, fmt.Errorf("%w\n%s", err, out)
	}
	r.cpu.load = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	var avgSec float64
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case strings.HasPrefix(l, "  Queries completed:") && len(f) >= 3:
			r.completed, _ = strconv.Atoi(f[2])
		case strings.HasPrefix(l, "  Queries lost:") && len(f) >= 3:
			r.lost, _ = strconv.Atoi(f[2])
		case strings.HasPrefix(l, "  Queries per second:") && len(f) >= 4:
			r.qps, _ = strconv.ParseFloat(f[3], 64)
		case strings.HasPrefix(l, "  Average Latency (s):") && len(f) >= 4:
			avgSec, _ = strconv.ParseFloat(f[3], 64)
		case strings.HasPrefix(l, "  Response codes:") && (!strings.Contains(l, "NOERROR") || strings.Contains(l, ",")):
			return r, fmt.Errorf("answers other than NOERROR: %s", strings.TrimSpace(l))
		}
	}
	if r.completed == 0 || r.qps == 0 {
		return r, fmt.Errorf("no result in dnsperf's output:\n%s", out)
	}
	r.avgMicros = avgSec * 1e6
	return r, nil
}

type dnsResult struct {
	lat     []time.Duration
	elapsed time.Duration
	n       int
	cpu     cpuShare
}

func (r *dnsResult) print(name string) {
	slices.Sort(r.lat)
	fmt.Printf("%s\t%d\t%d ns/op\t%.0f queries/s\t%.1f p50-µs\t%.1f p99-µs\t%s\n",
		name, r.n, int64(r.elapsed)/int64(r.n), float64(r.n)/r.elapsed.Seconds(), micros(r.lat, 0.5), micros(r.lat, 0.99), r.cpu.metrics(r.n))
}

// dnsLoad asks n questions of the server at addr and adds the round trips
// and the wall time to r.
func dnsLoad(r *dnsResult, srv dnsServer, kind string, n int) error {
	var lat []time.Duration
	var elapsed time.Duration
	var self0, self1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &self0) // the load: this process's clients
	server, err := srv.serverCPU(func() (err error) {
		lat, elapsed, err = loadgen.DNS(srv.addr, dnsClients, n, func(k int) (string, string) {
			if kind == "local" {
				j := k % dnsNames
				return fmt.Sprintf("c%d.", j), endpointAddr(j).String()
			}
			return "example.com.", "192.0.2.1"
		})
		return err
	})
	if err != nil {
		return err
	}
	_ = unix.Getrusage(unix.RUSAGE_SELF, &self1)
	r.lat = append(r.lat, lat...)
	r.n += len(lat)
	r.elapsed += elapsed
	r.cpu.add(cpuShare{wall: elapsed, server: server, load: rusageCPU(self1) - rusageCPU(self0)})
	return nil
}

func rusageCPU(r unix.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

func endpointAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 0, byte((i + 2) >> 8), byte(i + 2)})
}

// startUpstream answers every query on 127.0.0.53:53 with A 192.0.2.1.
func startUpstream() error {
	pc, err := net.ListenPacket("udp4", upstream.String())
	if err != nil {
		return err
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			m := new(dns.Msg).SetReply(q)
			m.RecursionAvailable = true
			m.Answer = []dns.RR{&dns.A{A: net.IPv4(192, 0, 2, 1),
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}}}
			_ = w.WriteMsg(m)
		})}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	return nil
}

// startKnitDNS writes the snapshot knit's engine would write for the
// network and runs knit's server (server.Serve, what `knit _dns` runs) as
// a process of its own: this program again, with dnsServerArg.
func startKnitDNS() (dnsServer, func(), error) {
	gw := netip.MustParseAddr("127.0.0.1")
	n := server.Network{Name: "bench", Listen: []netip.Addr{gw}, Endpoints: []server.Endpoint{
		{Container: "client", Name: "client", Addrs: []netip.Addr{gw}, Upstreams: []netip.AddrPort{upstream}},
	}}
	for i := range dnsNames {
		n.Endpoints = append(n.Endpoints, server.Endpoint{Container: fmt.Sprint("id", i), Name: fmt.Sprint("c", i),
			Aliases: []string{fmt.Sprint("a", i)}, Addrs: []netip.Addr{endpointAddr(i)}})
	}
	dir := filepath.Join(workDir, "knit-dns")
	if err := server.Save(dir, &server.Snapshot{Port: knitDNSPort, Networks: []server.Network{n}}); err != nil {
		return dnsServer{}, nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return dnsServer{}, nil, err
	}
	cmd := serverCommand(self, dnsServerArg, dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return dnsServer{}, nil, err
	}
	stop := func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }
	addr := netip.AddrPortFrom(gw, knitDNSPort).String()
	if err := waitDNS(addr); err != nil {
		stop()
		return dnsServer{}, nil, err
	}
	return dnsServer{tool: "knit", addr: addr, pid: cmd.Process.Pid}, stop, nil
}

// serveKnitDNS is the knit DNS server process: server.Serve on the
// directory in args[0] until SIGTERM.
func serveKnitDNS(args []string) {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	if err := server.Serve(ctx, args[0], nil); err != nil {
		fmt.Fprintln(os.Stderr, "knit dns:", err)
		os.Exit(1)
	}
}

// startAardvark writes aardvark-dns's configuration for the same network
// (a file named after the network: the gateway line, then "ID IPv4 IPv6
// NAME,ALIASES" per container, as netavark writes it) and starts
// `aardvark-dns --config DIR -p PORT run`, which forks into the background
// once it listens and leaves its PID in DIR/aardvark.pid.
func startAardvark() (dnsServer, func(), error) {
	dir := filepath.Join(workDir, "aardvark")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return dnsServer{}, nil, err
	}
	var b strings.Builder
	b.WriteString("127.0.0.1\n")
	b.WriteString("client 127.0.0.1  client\n")
	for i := range dnsNames {
		fmt.Fprintf(&b, "id%d %s  c%d,a%d\n", i, endpointAddr(i), i, i)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench"), []byte(b.String()), 0o644); err != nil {
		return dnsServer{}, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	aard := serverCommand(aardvarkBin, "--config", dir, "-p", fmt.Sprint(aardvarkPort), "run")
	out, err := exec.CommandContext(ctx, aard.Path, aard.Args[1:]...).CombinedOutput()
	if err != nil {
		return dnsServer{}, nil, fmt.Errorf("%w: %s", err, oneLine(string(out)))
	}
	// It forks into the background, leaving its PID in the file.
	readPID := func() int {
		pid := 0
		if b, err := os.ReadFile(filepath.Join(dir, "aardvark.pid")); err == nil {
			_, _ = fmt.Sscan(string(b), &pid)
		}
		return pid
	}
	stop := func() {
		if pid := readPID(); pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGTERM) // the server we started; the sandbox's end kills it anyway
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", aardvarkPort)
	if err := waitDNS(addr); err != nil {
		stop()
		return dnsServer{}, nil, err
	}
	pid := readPID()
	if pid <= 1 {
		return dnsServer{}, nil, fmt.Errorf("no PID in %s", filepath.Join(dir, "aardvark.pid"))
	}
	return dnsServer{tool: "aardvark", addr: addr, pid: pid}, stop, nil
}

// cpuSplit is the CPU list a DNS server runs on with -dns-pin, the last
// one this process could use at first, and the loads', the others: read
// once, before pinLoad narrows this process's own.
var cpuSplit = sync.OnceValues(func() (server, load string) {
	cpus := allowedCPUs()
	list := make([]string, len(cpus)-1)
	for i, c := range cpus[:len(cpus)-1] {
		list[i] = fmt.Sprint(c)
	}
	return fmt.Sprint(cpus[len(cpus)-1]), strings.Join(list, ",")
})

func serverCPUs() string { server, _ := cpuSplit(); return server }
func loadCPUs() string   { _, load := cpuSplit(); return load }

// allowedCPUs are the numbers of the CPUs this process may run on.
func allowedCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return []int{0}
	}
	var cpus []int
	for c := range 1024 {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// serverCommand is the command that starts a DNS server: name with args,
// under taskset on serverCPUs with -dns-pin (a server that forks keeps it).
func serverCommand(name string, args ...string) *exec.Cmd {
	if !*dnsPin {
		return exec.Command(name, args...)
	}
	return exec.Command("taskset", append([]string{"-c", serverCPUs(), name}, args...)...)
}

// pinLoad puts this process's threads, and so the loads it runs (its own
// clients, dnsperf), on loadCPUs.
//
// Equivalent to: taskset -a -c -p CPUS PID
func pinLoad() error {
	if len(allowedCPUs()) < 2 {
		return fmt.Errorf("-dns-pin needs two CPUs at least")
	}
	out, err := exec.Command("taskset", "-a", "-c", "-p", loadCPUs(), fmt.Sprint(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset: %w: %s", err, out)
	}
	fmt.Printf("dns-pin: servers on CPU %s, the loads on CPU %s\n", serverCPUs(), loadCPUs())
	return nil
}

// waitDNS returns once the server at addr answers c0.
func waitDNS(addr string) error {
	cl := &dns.Client{Timeout: 200 * time.Millisecond}
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var m *dns.Msg
		if m, _, err = cl.Exchange(new(dns.Msg).SetQuestion("c0.", dns.TypeA), addr); err == nil {
			if _, ok := loadgen.FirstA(m); ok {
				return nil
			}
			err = fmt.Errorf("no answer for c0: %v", m)
		}
	}
	return fmt.Errorf("%s did not answer within 10s: %w", addr, err)
}

// batchSection loads each server from one socket of loadgen.DNSBatch,
// which sends and reads questions batch at a time and costs less CPU per
// query than either load above; rounds alternate between the servers and
// the median round is reported. Local names only: a forwarded name is
// answered by the fake upstream, a Go server in this process, which a
// load this deep overruns (it drops queries and the servers answer
// SERVFAIL once their upstream timeout passes); the loads above measure
// forwarded names.
func batchSection(servers []dnsServer, rounds int) error {
	fmt.Printf("batch-load: one UDP socket, up to %d questions in flight, sent and read %d at a time (sendmmsg, recvmmsg), local names c0..c%d, %s per round (%d rounds per server, alternating; the median round)\n",
		batchWindow, loadgen.BatchLen, dnsNames-1, batchSeconds, rounds)
	var qs []loadgen.Question
	for j := range dnsNames {
		qs = append(qs, loadgen.Question{Name: fmt.Sprintf("c%d.", j), Want: endpointAddr(j)})
	}
	res := map[string][]batchRound{}
	for range rounds {
		for _, s := range servers {
			var r batchRound
			var self0, self1 unix.Rusage
			_ = unix.Getrusage(unix.RUSAGE_SELF, &self0) // the load: this process
			start := time.Now()
			server, err := s.serverCPU(func() (err error) {
				r.BatchResult, err = loadgen.DNSBatch(s.addr, batchWindow, batchSeconds, qs)
				return err
			})
			if err != nil {
				return fmt.Errorf("batch load, %s: %w", s.tool, err)
			}
			_ = unix.Getrusage(unix.RUSAGE_SELF, &self1)
			r.cpu = cpuShare{wall: time.Since(start), server: server, load: rusageCPU(self1) - rusageCPU(self0)}
			res[s.tool] = append(res[s.tool], r)
		}
	}
	for _, s := range servers {
		rs := res[s.tool]
		slices.SortFunc(rs, func(a, b batchRound) int { return cmp.Compare(a.qps(), b.qps()) })
		m := rs[len(rs)/2]
		slices.Sort(m.Lat)
		fmt.Printf("BenchmarkDNSBatch/kind=local/tool=%s\t%d\t%.0f queries/s\t%.1f p50-µs\t%.1f p99-µs\t%d lost\t%s\n",
			s.tool, m.Answered, m.qps(), micros(m.Lat, 0.5), micros(m.Lat, 0.99), m.Lost, m.cpu.metrics(m.Answered))
	}
	return nil
}

// batchWindow is deeper than the servers' batch reads and well under the
// ~190 small datagrams their sockets' default receive buffers (208 KiB)
// hold: a deeper window's first burst overflows them and loses queries.
const (
	batchWindow  = 128
	batchSeconds = 5 * time.Second
)

type batchRound struct {
	loadgen.BatchResult
	cpu cpuShare
}

func (r batchRound) qps() float64 { return float64(r.Answered) / r.Elapsed.Seconds() }

// micros is the p-th quantile of sorted durations, in µs.
func micros(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(p*float64(len(sorted)-1))].Nanoseconds()) / 1e3
}

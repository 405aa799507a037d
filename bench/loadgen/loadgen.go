// Package loadgen is the load the benchmarks put on knit and its peers,
// shared by the Go benchmarks in bench/ and the side-by-side runs of
// bench/peers, so that both measure the same way.
package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// DNS asks n A questions of the UDP server at addr from clients concurrent
// clients, each with a socket of its own and one question in flight.
// question(k), k from 1 to n, is the k-th name and the address its answer
// must hold; any other answer fails the run. It returns every round trip
// and the wall time of the whole run.
func DNS(addr string, clients, n int, question func(k int) (name, want string)) ([]time.Duration, time.Duration, error) {
	lat := make([][]time.Duration, clients)
	var next atomic.Int64
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			cl := &dns.Client{Timeout: 2 * time.Second}
			conn, err := cl.Dial(addr)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			for {
				k := next.Add(1)
				if k > int64(n) {
					return
				}
				name, want := question(int(k))
				q := new(dns.Msg).SetQuestion(name, dns.TypeA)
				q.RecursionDesired = true
				t0 := time.Now()
				m, _, err := cl.ExchangeWithConn(q, conn)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
				if a, ok := FirstA(m); !ok || a != want {
					errs <- fmt.Errorf("%s: answer %v (rcode %s), want %s", name, m.Answer, dns.RcodeToString[m.Rcode], want)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return nil, 0, err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	return all, elapsed, nil
}

// FirstA returns the address of m's first A record.
func FirstA(m *dns.Msg) (string, bool) {
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String(), true
		}
	}
	return "", false
}

// IperfGbps runs an iperf3 client, argv (with -J), and returns the
// receiver's throughput in Gbit/s. It is killed after 30 seconds.
func IperfGbps(argv []string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &res); err != nil || jerr != nil || res.Error != "" {
		return 0, fmt.Errorf("iperf3 client: %v %v %s\n%s", err, jerr, res.Error, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

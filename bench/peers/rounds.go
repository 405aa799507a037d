package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// repeated are the attach tools that reach the 1000th container in
// seconds: they run *rounds times, in turn, so that a slow spell of the
// shared machine lands on every tool alike, and each figure is the median
// of the rounds'. The others take minutes and run once.
var repeated = map[string]bool{"knit": true, "knit-noport": true, "floor": true}

// attachTools runs the attach section for each tool in a sandbox of its
// own, after the kernel has finished destroying the previous sandbox's
// namespaces, and returns the number of runs that failed.
func attachTools(ts []string) (failed int) {
	limit := *budget + 5*time.Minute
	run := func(t string, w io.Writer) bool {
		settle("attach " + t)
		err := sandboxed("attach", t, limit, w)
		if err != nil {
			failed++
			fmt.Printf("error-attach-%s: %s\n", t, oneLine(err.Error()))
		}
		return err == nil
	}
	var rep []string
	for _, t := range ts {
		if repeated[t] {
			rep = append(rep, t)
		}
	}
	if len(rep) > 0 {
		fmt.Printf("attach-rounds: %s: %d rounds in turn, each figure the median of the rounds' (max: the largest)\n",
			strings.Join(rep, ", "), *rounds)
		outs := map[string][]*bytes.Buffer{}
		for r := range *rounds {
			for i := range rep {
				t := rep[(i+r)%len(rep)] // each tool takes each place in the order
				b := new(bytes.Buffer)
				if !run(t, b) {
					return failed
				}
				outs[t] = append(outs[t], b)
			}
		}
		for _, t := range rep {
			printRounds(outs[t])
		}
	}
	for _, t := range ts {
		if !repeated[t] {
			run(t, os.Stdout)
		}
	}
	return failed
}

// printRounds prints one tool's benchmark lines from several rounds as one:
// the iterations summed, every metric the median of the rounds' but max-ms,
// the largest. Other lines are printed from the first round.
func printRounds(rounds []*bytes.Buffer) {
	type bench struct {
		n      int
		units  []string
		values map[string][]float64
	}
	benches := map[string]*bench{}
	var order []string
	for r, b := range rounds {
		sc := bufio.NewScanner(b)
		for sc.Scan() {
			line := sc.Text()
			f := strings.Split(line, "\t")
			if !strings.HasPrefix(line, "Benchmark") || len(f) < 2 {
				if r == 0 {
					fmt.Println(line)
				}
				continue
			}
			be := benches[f[0]]
			if be == nil {
				be = &bench{values: map[string][]float64{}}
				benches[f[0]] = be
				order = append(order, f[0])
			}
			n, _ := strconv.Atoi(strings.TrimSpace(f[1]))
			be.n += n
			for _, m := range f[2:] {
				v, unit, ok := strings.Cut(strings.TrimSpace(m), " ")
				x, err := strconv.ParseFloat(v, 64)
				if !ok || err != nil {
					continue
				}
				if _, ok := be.values[unit]; !ok {
					be.units = append(be.units, unit)
				}
				be.values[unit] = append(be.values[unit], x)
			}
		}
	}
	for _, name := range order {
		be := benches[name]
		line := fmt.Sprintf("%s\t%d", name, be.n)
		for _, u := range be.units {
			vs := be.values[u]
			slices.Sort(vs)
			x := vs[len(vs)/2]
			if u == "max-ms" {
				x = vs[len(vs)-1]
			}
			line += "\t" + strconv.FormatFloat(x, 'f', -1, 64) + " " + u
		}
		fmt.Println(line)
	}
}

// settle waits, before a sandbox starts (what names it), until the kernel
// has destroyed the namespaces of the sandbox before it: it does so in
// the background, under locks the next tool's attach needs, for seconds
// after a sandbox with a thousand containers ends, and the DNS section
// run meanwhile saw an upstream too slow to answer in time. The count of live network
// namespace objects (/proc/slabinfo) must hold still for a second; at
// most a minute is spent.
func settle(what string) {
	count := func() int {
		b, err := os.ReadFile("/proc/slabinfo")
		if err != nil {
			return -1
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "net_namespace" {
				n, _ := strconv.Atoi(f[1])
				return n
			}
		}
		return -1
	}
	t0 := time.Now()
	last, still := count(), time.Now()
	if last < 0 {
		time.Sleep(3 * time.Second) // no slab figures: a fixed pause instead
		return
	}
	for time.Since(still) < time.Second && time.Since(t0) < time.Minute {
		time.Sleep(100 * time.Millisecond)
		if n := count(); n != last {
			last, still = n, time.Now()
		}
	}
	fmt.Fprintf(os.Stderr, "peers: %s: the kernel settled in %s\n", what, time.Since(t0).Round(100*time.Millisecond))
}

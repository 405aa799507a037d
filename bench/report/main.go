// Command report turns the benchmark output of scripts/bench (bench/peers'
// lines and `go test -bench` lines of ./bench, in Go's benchmark format)
// into a Markdown report and a PNG chart of attach and detach p50 per tool.
//
//	go run ./bench/report -md REPORT.md -png chart.png -command 'scripts/bench' raw.txt...
//
// Every figure it prints as a comparison is a ratio of two figures of the
// same input, that is of the same run.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// result is one benchmark line: Name "Attach", Params {"tool": "knit",
// "n": "1000"}, N iterations and Metrics by unit.
type result struct {
	Name    string
	Params  map[string]string
	N       int
	Metrics map[string]float64
}

type data struct {
	config  map[string]string
	keys    []string // config keys in input order
	results []result
}

var procSuffix = regexp.MustCompile(`-\d+$`)

func parse(r io.Reader, d *data) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Benchmark") {
			f := strings.Fields(line)
			if len(f) < 4 || len(f)%2 != 0 {
				continue
			}
			n, err := strconv.Atoi(f[1])
			if err != nil {
				continue
			}
			res := result{Params: map[string]string{}, N: n, Metrics: map[string]float64{}}
			parts := strings.Split(procSuffix.ReplaceAllString(f[0], ""), "/")
			res.Name = strings.TrimPrefix(parts[0], "Benchmark")
			for _, p := range parts[1:] {
				if k, v, ok := strings.Cut(p, "="); ok {
					res.Params[k] = v
				}
			}
			for i := 2; i+1 < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err == nil {
					res.Metrics[f[i+1]] = v
				}
			}
			d.results = append(d.results, res)
			continue
		}
		// key: value configuration lines; the first of a key wins (go
		// test's own "cpu:" comes after bench/peers' fuller one).
		if k, v, ok := strings.Cut(line, ": "); ok && k != "" && !strings.ContainsAny(k, " \t") {
			if _, seen := d.config[k]; !seen {
				d.config[k] = strings.TrimSpace(v)
				d.keys = append(d.keys, k)
			}
		}
	}
	return sc.Err()
}

// find returns the first result of name whose params include want.
func (d *data) find(name string, want map[string]string) (result, bool) {
	for _, r := range d.results {
		if r.Name != name {
			continue
		}
		ok := true
		for k, v := range want {
			if r.Params[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return r, true
		}
	}
	return result{}, false
}

func main() {
	md := flag.String("md", "REPORT.md", "Markdown report to write")
	png := flag.String("png", "chart.png", "PNG chart to write")
	command := flag.String("command", "scripts/bench", "the command that produced the input, for the report")
	flag.Parse()
	d := &data{config: map[string]string{}}
	if flag.NArg() == 0 {
		if err := parse(os.Stdin, d); err != nil {
			fatal(err)
		}
	}
	for _, p := range flag.Args() {
		f, err := os.Open(p)
		if err != nil {
			fatal(err)
		}
		err = parse(f, d)
		f.Close()
		if err != nil {
			fatal(err)
		}
	}
	if len(d.results) == 0 {
		fatal(fmt.Errorf("no benchmark lines in the input"))
	}
	if err := os.WriteFile(*md, []byte(markdown(d, *command, *png)), 0o644); err != nil {
		fatal(err)
	}
	if err := writeChart(d, *png); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "report:", err)
	os.Exit(1)
}

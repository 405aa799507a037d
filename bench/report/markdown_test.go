package main

import (
	"regexp"
	"strings"
	"testing"
)

const attachLines = `cpu: AMD EPYC, 2 vCPU
BenchmarkAttach/tool=knit/n=1	20	1500000 ns/op	1.400 p50-ms	2.000 p95-ms	3.000 max-ms	2.100 cpu-ms
BenchmarkDetach/tool=knit/n=1	20	600000 ns/op	0.600 p50-ms	0.900 p95-ms	1.000 max-ms	0.700 cpu-ms
BenchmarkAttach/tool=floor/n=1	20	1000000 ns/op	1.000 p50-ms	1.100 p95-ms	1.200 max-ms	1.050 cpu-ms
BenchmarkDetach/tool=floor/n=1	20	60000 ns/op	0.060 p50-ms	0.100 p95-ms	0.200 max-ms	0.050 cpu-ms
BenchmarkAttach/tool=docker/n=1	20	190000000 ns/op	190 p50-ms	200 p95-ms	210 max-ms
BenchmarkDetach/tool=docker/n=1	20	130000000 ns/op	130 p50-ms	140 p95-ms	150 max-ms
`

func report(t *testing.T, input string) string {
	t.Helper()
	d := &data{config: map[string]string{}}
	if err := parse(strings.NewReader(input), d); err != nil {
		t.Fatal(err)
	}
	return markdown(d, "test", "")
}

// cpuSection returns the CPU table's section of md, "" if there is none.
func cpuSection(md string) string {
	i := strings.Index(md, "### CPU time per operation")
	if i < 0 {
		return ""
	}
	s := md[i+1:]
	if j := strings.Index(s, "\n#"); j >= 0 {
		s = s[:j]
	}
	return s
}

func TestCPUTable(t *testing.T) {
	table := cpuSection(report(t, attachLines))
	if table == "" {
		t.Fatal("no CPU table")
	}
	for _, want := range []string{
		"The machine has 2 vCPU",
		"| knit (engine API) | 2.10 / 0.70 |",
		"| floor (bare netlink + 1 nft element) | 1.05 / 0.05 |",
		"| knit ÷ floor, attach | 2.00× |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("CPU table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "| docker") {
		t.Errorf("docker has no cpu-ms but is in the CPU table:\n%s", table)
	}
}

func TestNoCPUTableWithoutCPU(t *testing.T) {
	in := regexp.MustCompile(`\t[0-9.]+ cpu-ms`).ReplaceAllString(attachLines, "")
	if table := cpuSection(report(t, in)); table != "" {
		t.Errorf("a CPU table without cpu-ms lines:\n%s", table)
	}
}

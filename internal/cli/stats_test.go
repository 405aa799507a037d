package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/engine"
)

func TestHumanSizes(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{binarySize(0), "0B"},
		{binarySize(1536 * 1024), "1.5MiB"},
		{binarySize(24 << 30), "24GiB"},
		{decimalSize(1234), "1.234kB"},
		{decimalSize(999), "999B"},
		{decimalSize(3_000_000), "3MB"},
	} {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
}

// CPU % is the CPU time used over the wall time between two samples, 100%
// a whole CPU, as Docker's; --format takes docker stats' fields, and json
// one object per line.
func TestWriteStats(t *testing.T) {
	c := &engine.Container{ID: strings.Repeat("ab", 32), Name: "web"}
	t0 := time.Now()
	prev := map[string]usageSample{"web": {c, &engine.Usage{At: t0, CPU: time.Second}}}
	cur := map[string]usageSample{"web": {c, &engine.Usage{At: t0.Add(time.Second), CPU: 1500 * time.Millisecond,
		Memory: 2 << 20, MemoryLimit: 1 << 30, NetRx: 1500, NetTx: 20, BlockRead: 0, BlockWrite: 4096, Pids: 3}}}
	render := func(format string, named bool) string {
		t.Helper()
		tmpl, table, err := parseFormat(format)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := writeRows(&b, tmpl, table, statsHeader, statsRows([]string{"web"}, prev, cur, false, named)); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	out := render(statsDefaultFormat, true)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "CONTAINER ID") {
		t.Fatalf("table:\n%s", out)
	}
	want := []string{"abababababab", "web", "50.00%", "2MiB", "/", "1GiB", "0.20%", "1.5kB", "/", "20B", "0B", "/", "4.096kB", "3"}
	if got := strings.Fields(lines[1]); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("row %q, want %q", got, want)
	}
	if got := render("table {{.Container}}\t{{.CPUPerc}}", true); !strings.HasPrefix(got, "CONTAINER") || !strings.Contains(got, "web ") {
		t.Errorf("--format table with .Container, named:\n%s", got)
	}
	if got := render("{{.Container}} {{.MemPerc}}", false); got != "abababababab 0.20%\n" {
		t.Errorf("--format, all containers: %q", got)
	}
	wantJSON := `{"BlockIO":"0B / 4.096kB","CPUPerc":"50.00%","Container":"web","ID":"abababababab","MemPerc":"0.20%",` +
		`"MemUsage":"2MiB / 1GiB","Name":"web","NetIO":"1.5kB / 20B","PIDs":"3"}` + "\n"
	if got := render("{{json .}}", true); got != wantJSON {
		t.Errorf("json:\n%s\nwant\n%s", got, wantJSON)
	}
}

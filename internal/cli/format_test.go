package cli

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
)

func TestHumanDuration(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-time.Hour, "Less than a second"},
		{0, "Less than a second"},
		{999 * time.Millisecond, "Less than a second"},
		{time.Second, "1 second"},
		{1999 * time.Millisecond, "1 second"},
		{2 * time.Second, "2 seconds"},
		{59*time.Second + 999*time.Millisecond, "59 seconds"},
		{time.Minute, "About a minute"},
		{119 * time.Second, "About a minute"},
		{2 * time.Minute, "2 minutes"},
		{59*time.Minute + 59*time.Second, "59 minutes"},
		{time.Hour, "About an hour"},
		{2 * time.Hour, "2 hours"},
		{47*time.Hour + 59*time.Minute, "47 hours"},
		{48 * time.Hour, "2 days"},
		{14*day - time.Second, "13 days"},
		{14 * day, "2 weeks"},
		{60*day - time.Second, "8 weeks"},
		{60 * day, "2 months"},
		{2*365*day - time.Second, "24 months"},
		{2 * 365 * day, "2 years"},
		{10 * 365 * day, "10 years"},
	}
	for _, tt := range tests {
		if got := humanDuration(tt.d); got != tt.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestParseFormat(t *testing.T) {
	row := psRow{ID: "0123456789ab", Names: "web", Status: "Up 2 seconds", State: "running", Ports: "0.0.0.0:8080->80/tcp"}
	tests := []struct {
		name       string
		format     string
		wantHeader string // "" when the format is not a table
		wantOut    string
	}{
		{"plain", "{{.ID}}", "", "0123456789ab\n"},
		{"trailing newline kept single", "{{.ID}}\n", "", "0123456789ab\n"},
		{"escaped tab", `{{.ID}}\t{{.Names}}`, "", "0123456789ab\tweb\n"},
		{"table", "table {{.ID}}\t{{.Names}}", "CONTAINER ID\tNAMES\n", "0123456789ab\tweb\n"},
		{"table escaped tab", `table {{.ID}}\t{{.Status}}`, "CONTAINER ID\tSTATUS\n", "0123456789ab\tUp 2 seconds\n"},
		{"table literal text kept", "table id={{.ID}} ({{.State}})", "id=CONTAINER ID (STATE)\n", "id=0123456789ab (running)\n"},
		{"table spaced actions", "table {{ .ID }} {{lower .Names}}", "CONTAINER ID names\n", "0123456789ab web\n"},
		{"no prefix without space", "table{{.ID}}", "", "table0123456789ab\n"},
		{"json as Docker's, no HTML escapes", "{{json .Ports}}", "", "\"0.0.0.0:8080->80/tcp\"\n"},
		{"funcs", `{{upper .Names}} {{title .State}} {{truncate .ID 4}} {{json .Names}} {{join (split .Status " ") "_"}}`,
			"", "WEB Running 0123 \"web\" Up_2_seconds\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, table, err := parseFormat(tt.format)
			if err != nil {
				t.Fatalf("parseFormat(%q): %v", tt.format, err)
			}
			if table != (tt.wantHeader != "") {
				t.Fatalf("table = %v, want %v", table, tt.wantHeader != "")
			}
			if table {
				var h strings.Builder
				if err := tmpl.Execute(&h, psHeader); err != nil {
					t.Fatal(err)
				}
				if h.String() != tt.wantHeader {
					t.Errorf("header = %q, want %q", h.String(), tt.wantHeader)
				}
			}
			var b strings.Builder
			if err := tmpl.Execute(&b, row); err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if b.String() != tt.wantOut {
				t.Errorf("output = %q, want %q", b.String(), tt.wantOut)
			}
		})
	}
}

func TestParseFormatInvalid(t *testing.T) {
	for _, f := range []string{"{{.ID", "{{.ID}", "table {{.ID", "{{nosuchfunc .ID}}", "{{end}}", "{{if .ID}}"} {
		_, _, err := parseFormat(f)
		if err == nil {
			t.Errorf("parseFormat(%q) succeeded, want an error", f)
			continue
		}
		if errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("parseFormat(%q) error kind = %v, want KindInvalid", f, errdefs.KindOf(err))
		}
	}
}

func TestParseFormatUnknownField(t *testing.T) {
	tmpl, _, err := parseFormat("{{.Nope}}")
	if err != nil {
		t.Fatalf("parseFormat: %v", err)
	}
	if err := tmpl.Execute(&strings.Builder{}, psRow{}); err == nil {
		t.Error("executing {{.Nope}} on a psRow succeeded, want an error")
	}
}

const testID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestNewPSRow(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	base := func() *engine.Container {
		return &engine.Container{
			ID: testID, Name: "web", Created: now.Add(-5 * time.Minute),
			Spec:      engine.Spec{Args: []string{"sleep", "100"}, NetworkMode: "bridge"},
			State:     engine.State{Status: engine.StatusRunning, StartedAt: now.Add(-3 * time.Second)},
			Endpoints: []engine.Endpoint{{Network: "bridge"}},
		}
	}
	tests := []struct {
		name    string
		edit    func(*engine.Container)
		noTrunc bool
		want    psRow
	}{
		{"running", nil, false, psRow{ID: "0123456789ab", Command: `"sleep 100"`, Status: "Up 3 seconds",
			State: "running", Networks: "bridge", Image: "/"}},
		{"running no-trunc", nil, true, psRow{ID: testID, Command: `"sleep 100"`, Status: "Up 3 seconds",
			State: "running", Networks: "bridge", Image: "/"}},
		{"exited", func(c *engine.Container) {
			c.State = engine.State{Status: engine.StatusExited, ExitCode: 137, FinishedAt: now.Add(-2 * time.Hour)}
		}, false, psRow{ID: "0123456789ab", Command: `"sleep 100"`, Status: "Exited (137) 2 hours ago",
			State: "exited", Networks: "bridge", Image: "/"}},
		{"exited zero", func(c *engine.Container) {
			c.State = engine.State{Status: engine.StatusExited, FinishedAt: now.Add(-time.Second)}
		}, false, psRow{ID: "0123456789ab", Command: `"sleep 100"`, Status: "Exited (0) 1 second ago",
			State: "exited", Networks: "bridge", Image: "/"}},
		{"created", func(c *engine.Container) { c.State = engine.State{Status: engine.StatusCreated} },
			false, psRow{ID: "0123456789ab", Command: `"sleep 100"`, Status: "Created",
				State: "created", Networks: "bridge", Image: "/"}},
		{"command of 20 kept", func(c *engine.Container) { c.Spec.Args = []string{"echo", "123456789012345"} },
			false, psRow{ID: "0123456789ab", Command: `"echo 123456789012345"`, Status: "Up 3 seconds",
				State: "running", Networks: "bridge", Image: "/"}},
		{"command of 21 truncated", func(c *engine.Container) { c.Spec.Args = []string{"echo", "1234567890123456"} },
			false, psRow{ID: "0123456789ab", Command: `"echo 12345678901234…"`, Status: "Up 3 seconds",
				State: "running", Networks: "bridge", Image: "/"}},
		{"long command no-trunc", func(c *engine.Container) { c.Spec.Args = []string{"echo", "1234567890123456"} },
			true, psRow{ID: testID, Command: `"echo 1234567890123456"`, Status: "Up 3 seconds",
				State: "running", Networks: "bridge", Image: "/"}},
		{"command quoted", func(c *engine.Container) { c.Spec.Args = []string{"sh", "-c", `echo "a"`} },
			false, psRow{ID: "0123456789ab", Command: `"sh -c echo \"a\""`, Status: "Up 3 seconds",
				State: "running", Networks: "bridge", Image: "/"}},
		{"rootfs and networks", func(c *engine.Container) {
			c.Spec.Rootfs = "/srv/busybox"
			c.Endpoints = []engine.Endpoint{{Network: "bridge"}, {Network: "backend"}}
		}, false, psRow{ID: "0123456789ab", Command: `"sleep 100"`, Status: "Up 3 seconds",
			State: "running", Networks: "bridge,backend", Image: "/srv/busybox"}},
		{"no endpoints shows mode", func(c *engine.Container) {
			c.Spec.NetworkMode, c.Endpoints = "host", nil
		}, false, psRow{ID: "0123456789ab", Command: `"sleep 100"`, Status: "Up 3 seconds",
			State: "running", Networks: "host", Image: "/"}},
		{"restarting", func(c *engine.Container) {
			c.State.Restarting, c.State.ExitCode, c.State.FinishedAt = true, 1, now.Add(-2*time.Second)
		}, false, psRow{ID: "0123456789ab", Command: `"sleep 100"`, Status: "Restarting (1) 2 seconds ago",
			State: "restarting", Networks: "bridge", Image: "/"}},
		{"labels by key", func(c *engine.Container) {
			c.Spec.Labels = map[string]string{"tier": "front", "team": ""}
		}, false, psRow{ID: "0123456789ab", Command: `"sleep 100"`, Status: "Up 3 seconds",
			State: "running", Networks: "bridge", Image: "/", Labels: "team=,tier=front",
			labels: map[string]string{"tier": "front", "team": ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			if tt.edit != nil {
				tt.edit(c)
			}
			got := newPSRow(c, now, tt.noTrunc)
			want := tt.want
			want.Names = "web"
			want.RunningFor = "5 minutes ago"
			want.CreatedAt = c.Created.Local().Format("2006-01-02 15:04:05 -0700 MST")
			if !reflect.DeepEqual(got, want) {
				t.Errorf("newPSRow =\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

// wantErrorCode is the exit code Docker gives an error of the command line
// args that printed stderr: 125 for the syntax of a flag (pflag's messages)
// and for run, 1 for any other command.
func wantErrorCode(args []string, stderr string) int {
	for _, flagErr := range []string{"unknown flag", "unknown shorthand flag", "invalid argument", "flag needs an argument", "bad flag syntax"} {
		if strings.Contains(stderr, flagErr) {
			return ExitInternal
		}
	}
	if strings.Contains(stderr, "template parsing error") && !strings.Contains(stderr, "executing") {
		return 64 // inspect's, as Docker's CLI
	}
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			if a == "run" {
				return ExitInternal
			}
			break
		}
	}
	return ExitFailure
}

// Docker's template function pad (println is text/template's own), and a missing map key
// printed as "<no value>" (no error), as Docker's templates do.
func TestFormatFunctionsAndMissingKeys(t *testing.T) {
	tmpl, _, err := parseFormat(`[{{pad .Name 2 1}}]{{println "x"}}{{.Labels.owner}}`)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, map[string]any{"Name": "net", "Labels": map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "[  net ]x\n<no value>\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

// Inspect's output as Docker's CLI prints it: "json" is one compact line, a
// template that does not parse exits 64 before anything is looked up, and
// one that fails on an object still prints the others.
func TestInspectFormats(t *testing.T) {
	views := []any{map[string]any{"Name": "a", "N": 1}, map[string]any{"Name": "b"}}
	var b strings.Builder
	if err := writeInspect(&b, views, "json", nil, nil); err != nil || b.String() != `[{"N":1,"Name":"a"},{"Name":"b"}]`+"\n" {
		t.Errorf("json: %q, %v", b.String(), err)
	}
	b.Reset()
	if err := writeInspect(&b, views[:1], "", nil, nil); err != nil || !strings.Contains(b.String(), "\n        \"N\": 1,\n") {
		t.Errorf("default: %q, %v", b.String(), err)
	}
	b.Reset()
	tmpl, err := parseInspectFormat(`{{.Name}}{{if .N}} {{len .N}}{{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	notFound := errors.New("no such object: c")
	err = writeInspect(&b, views, "x", tmpl, []error{notFound})
	if b.String() != "b\n" || !errors.Is(err, notFound) || !strings.Contains(fmt.Sprint(err), "template parsing error") {
		t.Errorf("failing template: %q, %v", b.String(), err)
	}
	tmpl, _ = parseInspectFormat(`{{.Name}}`)
	b.Reset()
	if err := writeInspect(&b, views, "x", tmpl, nil); err != nil || b.String() != "a\nb\n" {
		t.Errorf("template: %q, %v", b.String(), err)
	}
	b.Reset()
	if err := writeInspect(&b, nil, "x", tmpl, []error{notFound}); !errors.Is(err, notFound) || b.String() != "\n" {
		t.Errorf("nothing found: %q, %v", b.String(), err)
	}

	for _, args := range [][]string{{"inspect", "-f", "{{.Name", "x"}, {"network", "inspect", "--format", "{{end}}", "n"}} {
		code, _, stderr, engines := runCLI(t, args...)
		if code != 64 || engines != 0 || !strings.Contains(stderr, "template parsing error") {
			t.Errorf("knit %q: exit %d, %d engines, stderr %q; want 64, 0, a template parsing error", args, code, engines, stderr)
		}
	}
}

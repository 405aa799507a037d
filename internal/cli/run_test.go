package cli

import (
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
)

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal // 0: invalid
	}{
		{"KILL", syscall.SIGKILL},
		{"kill", syscall.SIGKILL},
		{"SIGKILL", syscall.SIGKILL},
		{"sigterm", syscall.SIGTERM},
		{"SigHup", syscall.SIGHUP},
		{"USR1", syscall.SIGUSR1},
		{"9", syscall.SIGKILL},
		{"15", syscall.SIGTERM},
		{"1", syscall.SIGHUP},
		{"64", syscall.Signal(64)},
		{"0", 0},
		{"-1", 0},
		{"65", 0},
		{"NOPE", 0},
		{"SIG", 0},
		{"", 0},
		{" KILL", 0},
		{"9x", 0},
		{"IOT", syscall.SIGABRT},
		{"SIGPOLL", syscall.SIGIO},
		{"CLD", syscall.SIGCHLD},
		{"RTMIN", syscall.Signal(34)},
		{"RTMIN+3", syscall.Signal(37)},
		{"SIGRTMAX-2", syscall.Signal(62)},
		{"rtmax", syscall.Signal(64)},
		{"RTMIN+30", syscall.Signal(64)},
		{"RTMIN+31", 0},
		{"RTMIN-1", 0},
		{"RTMAX+1", 0},
		{"RTMIN+", 0},
		{"RTMINX", 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSignal(tt.in)
			if tt.want == 0 {
				if err == nil {
					t.Fatalf("parseSignal(%q) = %v, want error", tt.in, got)
				}
				if errdefs.KindOf(err) != errdefs.KindInvalid {
					t.Errorf("parseSignal(%q) error kind = %v, want KindInvalid", tt.in, errdefs.KindOf(err))
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSignal(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestOptionsValid(t *testing.T) {
	t.Setenv("KNIT_TEST_SET", "from-env")
	t.Setenv("KNIT_TEST_EMPTY", "")
	os.Unsetenv("KNIT_TEST_UNSET")
	f := runFlags{
		name: "web", hostname: "h", networks: []string{"bridge"}, ip: "172.17.0.9", mac: "92:d0:c6:0a:29:33",
		workdir: "/srv", rootfs: "/tmp", detach: true, rm: true, interactive: true, tty: true,
		env: []string{"A=1", "KNIT_TEST_SET", "KNIT_TEST_UNSET", "KNIT_TEST_EMPTY", "B=", "C=x=y"},
		dns: []string{"1.1.1.1", "2001:db8::53"}, dnsSearch: []string{"example.com", "."},
		dnsOptions: []string{"ndots:2", "rotate"},
		addHosts:   []string{"db:10.0.0.5", "gw:host-gateway", "v6=[2001:db8::1]"},
	}
	args := []string{"sh", "-c", "echo hi"}
	o, err := f.options(args)
	if err != nil {
		t.Fatalf("options: %v", err)
	}
	if o.Name != "web" || o.Hostname != "h" || o.Network != "bridge" || o.Workdir != "/srv" || o.Rootfs != "/tmp" {
		t.Errorf("strings not copied: %+v", o)
	}
	if !o.Detach || !o.AutoRemove || !o.Interactive || !o.Tty {
		t.Errorf("booleans not copied: %+v", o)
	}
	if !slices.Equal(o.Args, args) {
		t.Errorf("Args = %q, want %q", o.Args, args)
	}
	if o.IP != netip.MustParseAddr("172.17.0.9") {
		t.Errorf("IP = %v", o.IP)
	}
	if o.MAC.String() != "92:d0:c6:0a:29:33" {
		t.Errorf("MAC = %v", o.MAC)
	}
	wantEnv := []string{"A=1", "KNIT_TEST_SET=from-env", "KNIT_TEST_EMPTY=", "B=", "C=x=y"}
	if !slices.Equal(o.Env, wantEnv) {
		t.Errorf("Env = %q, want %q", o.Env, wantEnv)
	}
	wantDNS := []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2001:db8::53")}
	if !slices.Equal(o.DNS, wantDNS) {
		t.Errorf("DNS = %v, want %v", o.DNS, wantDNS)
	}
	if !slices.Equal(o.DNSSearch, f.dnsSearch) || !slices.Equal(o.DNSOptions, f.dnsOptions) {
		t.Errorf("DNSSearch = %q, DNSOptions = %q", o.DNSSearch, o.DNSOptions)
	}
	if len(o.AddHosts) != 3 {
		t.Fatalf("AddHosts = %+v, want 3 entries", o.AddHosts)
	}
	if h := o.AddHosts[0]; h.IP != netip.MustParseAddr("10.0.0.5") || h.HostGateway || !slices.Equal(h.Names, []string{"db"}) {
		t.Errorf("AddHosts[0] = %+v", h)
	}
	if h := o.AddHosts[1]; h.IP.IsValid() || !h.HostGateway || !slices.Equal(h.Names, []string{"gw"}) {
		t.Errorf("AddHosts[1] = %+v, want host-gateway entry for gw", h)
	}
	if h := o.AddHosts[2]; h.IP != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("AddHosts[2] = %+v", h)
	}
}

func TestOptionsEmpty(t *testing.T) {
	o, err := (&runFlags{}).options(nil)
	if err != nil {
		t.Fatalf("options: %v", err)
	}
	if o.IP.IsValid() || o.MAC != nil || o.Env != nil || o.DNS != nil || o.AddHosts != nil {
		t.Errorf("zero flags gave non-zero options: %+v", o)
	}
}

func TestOptionsInvalid(t *testing.T) {
	os.Unsetenv("KNIT_TEST_UNSET")
	tests := []struct {
		name string
		f    runFlags
	}{
		{"ip garbage", runFlags{ip: "nope"}},
		{"ip with prefix", runFlags{ip: "10.0.0.1/24"}},
		{"ip out of range", runFlags{ip: "10.0.0.256"}},
		{"mac garbage", runFlags{mac: "zz"}},
		{"mac too short", runFlags{mac: "92:d0:c6:0a:29"}},
		{"workdir relative", runFlags{workdir: "srv"}},
		{"workdir dot", runFlags{workdir: "./srv"}},
		{"env empty key", runFlags{env: []string{"=x"}}},
		{"env only =", runFlags{env: []string{"="}}},
		{"env empty string", runFlags{env: []string{""}}},
		{"env bad after good", runFlags{env: []string{"A=1", "KNIT_TEST_UNSET", "=x"}}},
		{"dns garbage", runFlags{dns: []string{"dns.example"}}},
		{"dns second bad", runFlags{dns: []string{"1.1.1.1", "1.1.1"}}},
		{"dns-search bad label", runFlags{dnsSearch: []string{"-bad.example"}}},
		{"dns-search empty", runFlags{dnsSearch: []string{""}}},
		{"dns-search double dot", runFlags{dnsSearch: []string{"a..b"}}},
		{"dns-option unknown", runFlags{dnsOptions: []string{"bogus"}}},
		{"dns-option missing number", runFlags{dnsOptions: []string{"ndots"}}},
		{"dns-option not a number", runFlags{dnsOptions: []string{"ndots:x"}}},
		{"dns-option value on flag", runFlags{dnsOptions: []string{"rotate:1"}}},
		{"add-host no separator", runFlags{addHosts: []string{"db"}}},
		{"add-host bad ip", runFlags{addHosts: []string{"db:nope"}}},
		{"add-host bad name", runFlags{addHosts: []string{"d b:10.0.0.1"}}},
		{"add-host empty ip", runFlags{addHosts: []string{"db:"}}},
		{"add-host gateway typo", runFlags{addHosts: []string{"db:host_gateway"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.f.options([]string{"true"})
			if err == nil {
				t.Fatalf("options(%+v) = %+v, want error", tt.f, o)
			}
			if errdefs.KindOf(err) != errdefs.KindInvalid {
				t.Errorf("error kind = %v, want KindInvalid: %v", errdefs.KindOf(err), err)
			}
		})
	}
}

func TestResolveEnv(t *testing.T) {
	t.Setenv("KNIT_TEST_SET", "v=1")
	os.Unsetenv("KNIT_TEST_UNSET")
	tests := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{nil, nil, false},
		{[]string{"A=1"}, []string{"A=1"}, false},
		{[]string{"KNIT_TEST_SET"}, []string{"KNIT_TEST_SET=v=1"}, false},
		{[]string{"KNIT_TEST_UNSET"}, nil, false},
		{[]string{"KNIT_TEST_UNSET", "A=1"}, []string{"A=1"}, false},
		{[]string{"KNIT_TEST_SET=override"}, []string{"KNIT_TEST_SET=override"}, false},
		{[]string{"=x"}, nil, true},
		{[]string{"A=1", "="}, nil, true},
	}
	for _, tt := range tests {
		got, err := resolveEnv(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("resolveEnv(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil && errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("resolveEnv(%q) error kind = %v, want KindInvalid", tt.in, errdefs.KindOf(err))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("resolveEnv(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// runCLI is runCLIStdin with an empty stdin.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string, engines int) {
	t.Helper()
	return runCLIStdin(t, "", args...)
}

// runCLIStdin runs the CLI with stdin and an engine that cannot be built, so
// nothing touches the system, and returns the exit code, the output, and how
// many times the engine was asked for.
func runCLIStdin(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string, engines int) {
	t.Helper()
	dir := t.TempDir()
	open := func(name, content string) *os.File {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	in, outF, errF := open("in", stdin), open("out", ""), open("err", "")
	env := Env{
		NewEngine: func(engine.Paths) (*engine.Engine, error) {
			engines++
			return nil, errors.New("no engine in unit tests")
		},
		In: in, Out: outF, Err: errF, Version: "0.0.0-test",
	}
	code = Run(args, env)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	return code, read("out"), read("err"), engines
}

func TestRunBadFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string // in stderr, after "knit: "
	}{
		{"unknown flag", []string{"run", "--bogus", "true"}, "unknown flag: --bogus"},
		{"unknown global flag", []string{"--bogus", "ps"}, "unknown flag: --bogus"},
		{"bad --ip", []string{"run", "--ip", "nope", "true"}, `invalid --ip "nope"`},
		{"bad --mac-address", []string{"run", "--mac-address", "zz", "true"}, `invalid --mac-address "zz"`},
		{"relative -w", []string{"run", "-w", "srv", "true"}, `the working directory "srv" is invalid`},
		{"bad -e", []string{"run", "-e", "=x", "true"}, `invalid environment variable "=x"`},
		{"bad --dns", []string{"run", "--dns", "x", "true"}, `invalid --dns "x"`},
		{"bad --add-host", []string{"run", "--add-host", "nohost", "true"}, `invalid --add-host "nohost"`},
		{"bad exec -e", []string{"exec", "-e", "=x", "c", "true"}, `invalid environment variable "=x"`},
		{"bad signal", []string{"kill", "-s", "NOPE", "c"}, `invalid signal "NOPE"`},
		{"signal out of range", []string{"kill", "--signal", "65", "c"}, `invalid signal "65"`},
		{"negative stop time", []string{"stop", "-t", "-2", "c"}, "invalid --timeout -2"},
		{"negative stop time, old name", []string{"stop", "--time", "-2", "c"}, "invalid --timeout -2"},
		{"stop signal", []string{"stop", "-s", "NOSUCH", "c"}, "invalid signal \"NOSUCH\""},
		{"run user without a name", []string{"run", "-u", ":100", "true"}, `invalid user ":100"`},
		{"exec user with two groups", []string{"exec", "-u", "1000:1:2", "c", "true"}, `invalid user "1000:1:2"`},
		{"env file missing", []string{"run", "--env-file", "/nonexistent/env", "true"}, "--env-file: open /nonexistent/env"},
		{"logs tail", []string{"logs", "--tail", "ten", "c"}, "invalid --tail \"ten\""},
		{"run stop signal", []string{"run", "--stop-signal", "NOPE", "true"}, "--stop-signal: invalid signal \"NOPE\""},
		{"run stop timeout", []string{"run", "--stop-timeout", "-5", "true"}, "invalid --stop-timeout -5"},
		{"non-numeric stop time", []string{"stop", "-t", "soon", "c"}, `invalid argument "soon"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr, engines := runCLI(t, tt.args...)
			if want := wantErrorCode(tt.args, stderr); code != want {
				t.Errorf("exit code = %d, want %d", code, want)
			}
			if !strings.HasPrefix(stderr, "knit: ") || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr = %q, want \"knit: ...%s...\"", stderr, tt.wantErr)
			}
			if !strings.HasSuffix(stderr, "See 'knit --help'.\n") {
				t.Errorf("stderr = %q, want the help hint of an invalid-input error", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			if engines != 0 {
				t.Errorf("engine built %d times for a rejected command line, want 0", engines)
			}
		})
	}
}

func TestRunEngineError(t *testing.T) {
	code, stdout, stderr, engines := runCLI(t, "ps")
	if code != ExitFailure {
		t.Errorf("exit code = %d, want %d (Docker's for another command than run)", code, ExitFailure)
	}
	if stderr != "knit: no engine in unit tests\n" {
		t.Errorf("stderr = %q, want the engine's error and no help hint", stderr)
	}
	if stdout != "" || engines != 1 {
		t.Errorf("stdout = %q, engines = %d; want nothing, 1", stdout, engines)
	}
}

func TestRunNeedsNoEngine(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"--help"}, {"run", "--help"}} {
		code, stdout, stderr, engines := runCLI(t, args...)
		if code != 0 || engines != 0 || stderr != "" || stdout == "" {
			t.Errorf("knit %q: code %d, engines %d, stderr %q, stdout %d bytes; want 0, 0, empty, some",
				args, code, engines, stderr, len(stdout))
		}
	}
	if _, stdout, _, _ := runCLI(t, "--version"); !strings.Contains(stdout, "0.0.0-test") {
		t.Errorf("--version printed %q, want the version", stdout)
	}
}

// Docker's second flag names (--net, --dns-opt) are the same flags: mixed
// with the first names, every value is kept.
func TestFlagAliasesMerge(t *testing.T) {
	c := (&app{}).runCommand()
	if err := c.Flags().Parse([]string{"--network", "a", "--net", "b", "--dns-option", "ndots:1", "--dns-opt", "timeout:2", "true"}); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string][]string{"network": {"a", "b"}, "dns-option": {"ndots:1", "timeout:2"}} {
		if got, err := c.Flags().GetStringArray(flag); err != nil || !slices.Equal(got, want) {
			t.Errorf("--%s = %v, %v; want %v", flag, got, err, want)
		}
	}
}

// --env-file lines come first and -e overrides them; KEY alone is copied
// from knit's environment (dropped if unset); comments, blank lines, a
// byte order mark and CRLF line ends are Docker's format too.
func TestEnvFile(t *testing.T) {
	t.Setenv("KNIT_TEST_COPIED", "from-env")
	path := filepath.Join(t.TempDir(), "env")
	content := "\xef\xbb\xbf# a comment\r\nA=1\r\n\n  B=two words\nQ=\"quoted\"\nKNIT_TEST_COPIED\nKNIT_TEST_UNSET_VARIABLE\nA=3\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := envFromFlags([]string{path}, []string{"A=4"})
	want := []string{"A=1", "B=two words", `Q="quoted"`, "KNIT_TEST_COPIED=from-env", "A=3", "A=4"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("envFromFlags = %q, %v; want %q", got, err, want)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("OK=1\nNOT OK=2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := envFromFlags([]string{bad}, nil); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a name with a space: %v, want an error naming line 2", err)
	}
}

// --label-file lines come first and --label overrides them; KEY alone is
// an empty label (not copied from the environment, as -e KEY is).
func TestLabels(t *testing.T) {
	t.Setenv("KNIT_TEST_COPIED", "from-env")
	path := filepath.Join(t.TempDir(), "labels")
	content := "# owners\ntier=front\nKNIT_TEST_COPIED\nowner=ann=b\nkeep=1\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f := runFlags{labelFiles: []string{path}, labels: []string{"tier=back", "team"}}
	o, err := f.options([]string{"true"})
	want := map[string]string{"tier": "back", "KNIT_TEST_COPIED": "", "owner": "ann=b", "keep": "1", "team": ""}
	if err != nil || !maps.Equal(o.Labels, want) {
		t.Errorf("Labels = %v, %v; want %v", o.Labels, err, want)
	}
	for _, bad := range []runFlags{{labels: []string{"=x"}}, {labelFiles: []string{"/nonexistent/labels"}}} {
		if _, err := bad.options([]string{"true"}); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("%+v: %v, want an invalid-input error", bad, err)
		}
	}
}

// --entrypoint is one program (not split) that the arguments follow; an
// empty one with no command has nothing to run.
func TestEntrypoint(t *testing.T) {
	f := runFlags{entrypoint: "/bin/echo -n"}
	o, err := f.options([]string{"a", "b"})
	if err != nil || !slices.Equal(o.Entrypoint, []string{"/bin/echo -n"}) || !slices.Equal(o.Args, []string{"a", "b"}) {
		t.Errorf("options = %q %q, %v", o.Entrypoint, o.Args, err)
	}
	f = runFlags{entrypointSet: true}
	if o, err := f.options([]string{"true"}); err != nil || o.Entrypoint != nil {
		t.Errorf(`--entrypoint "" true = %q, %v; want the command alone`, o.Entrypoint, err)
	}
	if _, err := f.options(nil); err == nil || !strings.Contains(err.Error(), "--entrypoint") {
		t.Errorf(`--entrypoint "" alone: %v, want an error`, err)
	}
}

// --network's long form: per-network settings, the first network's being
// those of --ip and friends, which it must not repeat.
func TestNetworkLongForm(t *testing.T) {
	f := &runFlags{networks: []string{"name=a,ip=10.1.0.5,alias=x,alias=y", `"name=b","ip6=fd00::5","mac-address=02:42:0a:02:00:05"`, "c"}}
	o, err := f.options([]string{"true"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Network != "a" || o.IP != netip.MustParseAddr("10.1.0.5") || !slices.Equal(o.Aliases, []string{"x", "y"}) {
		t.Errorf("first network: %s %s %q", o.Network, o.IP, o.Aliases)
	}
	if !slices.Equal(o.ExtraNetworks, []string{"b", "c"}) || len(o.ExtraEndpoints) != 2 ||
		o.ExtraEndpoints[0].IP6 != netip.MustParseAddr("fd00::5") || o.ExtraEndpoints[0].MAC.String() != "02:42:0a:02:00:05" ||
		o.ExtraEndpoints[1].IP.IsValid() {
		t.Errorf("further networks: %q %+v", o.ExtraNetworks, o.ExtraEndpoints)
	}
	if o, err := (&runFlags{networks: []string{"a", "b"}}).options([]string{"true"}); err != nil ||
		len(o.ExtraEndpoints) != 1 || o.ExtraEndpoints[0].IP.IsValid() || o.ExtraEndpoints[0].Aliases != nil {
		t.Errorf("names only: %+v, %v; want empty endpoint settings", o, err)
	}
	for _, bad := range [][]string{
		{"name=a,ip=nope"},
		{"ip=10.1.0.5"},
		{"name=a,color=red"},
		{"name=a,driver-opt=x=y"},
		{"name=a,ip"},
	} {
		if _, err := (&runFlags{networks: bad}).options([]string{"true"}); errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("--network %q: %v, want invalid", bad, err)
		}
	}
	if _, err := (&runFlags{networks: []string{"name=a,ip=10.1.0.5"}, ip: "10.1.0.6"}).options([]string{"true"}); err == nil || !strings.Contains(err.Error(), "conflicting options") {
		t.Errorf("--network name=a,ip=… with --ip: %v, want a conflict", err)
	}
}

// Docker's exit codes for knit's own errors: 125 for a flag's syntax and
// for run, 1 for other commands' errors.
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"ps", "--bogus"}, ExitInternal},
		{[]string{"stop", "-t", "soon", "c"}, ExitInternal},
		{[]string{"run", "--ip", "nope", "true"}, ExitInternal},
		{[]string{"run", "true"}, ExitInternal}, // the engine's error
		{[]string{"stop", "-t", "-2", "c"}, ExitFailure},
		{[]string{"ps"}, ExitFailure}, // the engine's error
		{[]string{"network", "bogus"}, ExitFailure},
		{[]string{"ps", "-f", "noequals"}, ExitInternal}, // a filter's form, checked as Docker parses the flag
		{[]string{"network", "ls", "-f", "noequals"}, ExitInternal},
		{[]string{"ps", "-f", "color=red"}, ExitFailure},
		{[]string{"--data-root", "/x", "ps"}, ExitFailure},
		{[]string{"--data-root", "/x", "run", "true"}, ExitInternal},
		// Docker's CLI checks the terminal itself: 1 (stdin is no TTY here)
		{[]string{"run", "-it", "true"}, ExitFailure},
		{[]string{"exec", "-it", "c", "true"}, ExitFailure},
		// Docker's flags that change nothing here are accepted, not
		// refused as unknown (125): the engine's error
		{[]string{"network", "inspect", "-v", "x"}, ExitFailure},
		{[]string{"cp", "-q", "c:/a", "/tmp/b"}, ExitFailure},
	} {
		code, _, stderr, _ := runCLI(t, tc.args...)
		if code != tc.want {
			t.Errorf("knit %s: exit %d (%q), want %d", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
		if slices.Contains(tc.args, "-it") && !strings.Contains(stderr, "not a TTY") {
			t.Errorf("knit %s: %q, want the terminal refused", strings.Join(tc.args, " "), stderr)
		}
	}
}

package engine

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/errdefs"
)

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatalf("ParseMAC(%q): %v", s, err)
	}
	return m
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("172.17.0.5")
	mac := mustMAC(t, "92:d0:c6:0a:29:33")
	cmd := []string{"true"}
	hostGW := []files.HostEntry{{Names: []string{"h"}, HostGateway: true}}

	tests := []struct {
		name    string
		o       RunOptions
		wantErr bool
	}{
		{"minimal", RunOptions{Args: cmd}, false},
		{"zero mac", RunOptions{Args: cmd, MAC: mustMAC(t, "00:00:00:00:00:00")}, true},
		{"64-character hostname", RunOptions{Args: cmd, Hostname: strings.Repeat("a", 30) + "." + strings.Repeat("b", 33)}, false},
		{"65-character hostname", RunOptions{Args: cmd, Hostname: strings.Repeat("a", 30) + "." + strings.Repeat("b", 34)}, true},
		{"65-character domainname", RunOptions{Args: cmd, Domainname: strings.Repeat("a", 30) + "." + strings.Repeat("b", 34)}, true},
		{"domainname with container mode", RunOptions{Args: cmd, Network: "container:x", Domainname: "corp.example"}, true},
		{"further network's mac", RunOptions{Args: cmd, Network: "a", ExtraNetworks: []string{"b"},
			ExtraEndpoints: []EndpointOptions{{MAC: mac}}}, false},
		{"further network's multicast mac", RunOptions{Args: cmd, Network: "a", ExtraNetworks: []string{"b"},
			ExtraEndpoints: []EndpointOptions{{MAC: mustMAC(t, "01:00:5e:00:00:01")}}}, true},
		{"further network's ip6 as ip", RunOptions{Args: cmd, Network: "a", ExtraNetworks: []string{"b"},
			ExtraEndpoints: []EndpointOptions{{IP: netip.MustParseAddr("fd00::5")}}}, true},
		{"further network's bad alias", RunOptions{Args: cmd, Network: "a", ExtraNetworks: []string{"b"},
			ExtraEndpoints: []EndpointOptions{{Aliases: []string{"a!b"}}}}, true},
		{"further network's alias with underscore", RunOptions{Args: cmd, Network: "a", ExtraNetworks: []string{"b"},
			ExtraEndpoints: []EndpointOptions{{Aliases: []string{"a_b"}}}}, false},
		{"endpoint settings not one per network", RunOptions{Args: cmd, Network: "a", ExtraNetworks: []string{"b", "c"},
			ExtraEndpoints: []EndpointOptions{{}}}, true},
		{"missing command", RunOptions{}, true},
		{"empty command slice", RunOptions{Args: []string{}}, true},
		{"entrypoint alone", RunOptions{Entrypoint: []string{"/bin/date"}}, false},
		{"empty entrypoint", RunOptions{Entrypoint: []string{""}, Args: cmd}, true},
		{"labels", RunOptions{Args: cmd, Labels: map[string]string{"a": "", "b": "c"}}, false},
		{"label without key", RunOptions{Args: cmd, Labels: map[string]string{"": "c"}}, true},
		{"restart detached", RunOptions{Args: cmd, Detach: true, Restart: RestartPolicy{Name: RestartAlways}}, false},
		{"restart in the foreground", RunOptions{Args: cmd, Restart: RestartPolicy{Name: RestartAlways}}, true},
		{"restart with --rm", RunOptions{Args: cmd, Detach: true, AutoRemove: true, Restart: RestartPolicy{Name: RestartOnFailure}}, true},
		{"restart no with --rm", RunOptions{Args: cmd, AutoRemove: true, Restart: RestartPolicy{Name: RestartNo}}, false},
		{"unknown restart policy", RunOptions{Args: cmd, Detach: true, Restart: RestartPolicy{Name: "x"}}, true},
		{"good name", RunOptions{Args: cmd, Name: "web.1_a-b"}, false},
		{"two-char name", RunOptions{Args: cmd, Name: "ab"}, false},
		{"one-char name", RunOptions{Args: cmd, Name: "a"}, true},
		{"name leading dash", RunOptions{Args: cmd, Name: "-web"}, true},
		{"name leading underscore", RunOptions{Args: cmd, Name: "_web"}, true},
		{"name with slash", RunOptions{Args: cmd, Name: "a/b"}, true},
		{"name with space", RunOptions{Args: cmd, Name: "a b"}, true},
		{"good hostname", RunOptions{Args: cmd, Hostname: "web.example"}, false},
		{"hostname underscore", RunOptions{Args: cmd, Hostname: "a_b"}, false}, // Docker's since 1.13
		{"hostname bang", RunOptions{Args: cmd, Hostname: "a!b"}, true},
		{"hostname leading dash", RunOptions{Args: cmd, Hostname: "-web"}, true},
		{"hostname empty label", RunOptions{Args: cmd, Hostname: "a..b"}, true},
		{"rootfs dir", RunOptions{Args: cmd, Rootfs: dir}, false},
		{"rootfs missing", RunOptions{Args: cmd, Rootfs: filepath.Join(dir, "nope")}, true},
		{"rootfs is a file", RunOptions{Args: cmd, Rootfs: file}, true},
		{"ip on bridge", RunOptions{Args: cmd, IP: ip}, false},
		{"ip on user network", RunOptions{Args: cmd, Network: "mynet", IP: ip}, false},
		{"ip with none", RunOptions{Args: cmd, Network: ModeNone, IP: ip}, true},
		{"ip with host", RunOptions{Args: cmd, Network: ModeHost, IP: ip}, true},
		{"ip with container", RunOptions{Args: cmd, Network: "container:web", IP: ip}, true},
		{"mac on bridge", RunOptions{Args: cmd, MAC: mac}, false},
		{"mac with none", RunOptions{Args: cmd, Network: ModeNone, MAC: mac}, true},
		{"mac with host", RunOptions{Args: cmd, Network: ModeHost, MAC: mac}, true},
		{"mac with container", RunOptions{Args: cmd, Network: "container:web", MAC: mac}, true},
		{"multicast mac", RunOptions{Args: cmd, MAC: mustMAC(t, "01:00:5e:00:00:01")}, true},
		{"eui-64 mac", RunOptions{Args: cmd, MAC: mustMAC(t, "02:00:00:00:00:00:00:01")}, true},
		{"container without target", RunOptions{Args: cmd, Network: "container:"}, true},
		{"container ok", RunOptions{Args: cmd, Network: "container:web"}, false},
		{"container with hostname", RunOptions{Args: cmd, Network: "container:web", Hostname: "h"}, true},
		{"container with dns", RunOptions{Args: cmd, Network: "container:web", DNS: []netip.Addr{ip}}, true},
		{"container with dns-search (ignored, as by Docker)", RunOptions{Args: cmd, Network: "container:web", DNSSearch: []string{"example"}}, false},
		{"container with dns-option (ignored)", RunOptions{Args: cmd, Network: "container:web", DNSOptions: []string{"ndots:1"}}, false},
		{"container with add-host", RunOptions{Args: cmd, Network: "container:web", AddHosts: hostGW}, true},
		{"host with dns", RunOptions{Args: cmd, Network: ModeHost, DNS: []netip.Addr{ip}}, false},
		{"none with add-host", RunOptions{Args: cmd, Network: ModeNone, AddHosts: hostGW}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			err := o.validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("validate() = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && errdefs.KindOf(err) != errdefs.KindInvalid {
				t.Errorf("validate() error kind = %v, want KindInvalid: %v", errdefs.KindOf(err), err)
			}
		})
	}
}

func TestValidateDefaultsNetwork(t *testing.T) {
	o := RunOptions{Args: []string{"true"}}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if o.Network != ModeBridge {
		t.Errorf("Network = %q, want %q", o.Network, ModeBridge)
	}
	o = RunOptions{Args: []string{"true"}, Network: ModeHost}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if o.Network != ModeHost {
		t.Errorf("Network = %q, want %q (kept)", o.Network, ModeHost)
	}
}

// A relative --rootfs is taken from the caller's directory and kept
// absolute: a detached container's supervisor runs from /.
func TestValidateMakesRootfsAbsolute(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "rfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	o := RunOptions{Args: []string{"true"}, Rootfs: "rfs"}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "rfs"); o.Rootfs != want {
		t.Errorf("Rootfs = %q, want %q", o.Rootfs, want)
	}
}

func TestValidName(t *testing.T) {
	tests := map[string]bool{
		"web": true, "Web1": true, "a.b": true, "a_b": true, "a-b": true, "0x": true, "ab": true,
		"": false, "a": false, "-ab": false, ".ab": false, "_ab": false, "a/b": false,
		"a b": false, "a:b": false, "café": false, "ab\n": false,
	}
	for in, want := range tests {
		if got := validName(in); got != want {
			t.Errorf("validName(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestEnvKey(t *testing.T) {
	tests := map[string]string{
		"A=b": "A", "A=b=c": "A", "A=": "A", "A": "A", "=x": "", "": "", "PATH=/bin:/usr/bin": "PATH",
	}
	for in, want := range tests {
		if got := envKey(in); got != want {
			t.Errorf("envKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	tests := []struct {
		name       string
		base, over []string
		want       []string
	}{
		{"both empty", nil, nil, nil},
		{"base only", []string{"A=1"}, nil, []string{"A=1"}},
		{"over only", nil, []string{"A=1"}, []string{"A=1"}},
		{"override keeps position", []string{"A=1", "B=2", "C=3"}, []string{"B=x"}, []string{"A=1", "B=x", "C=3"}},
		{"append new", []string{"A=1"}, []string{"B=2"}, []string{"A=1", "B=2"}},
		{"empty value overrides", []string{"A=1"}, []string{"A="}, []string{"A="}},
		{"later over wins", []string{"A=1"}, []string{"A=2", "A=3"}, []string{"A=3"}},
		{"duplicate over appended once", nil, []string{"A=2", "A=3"}, []string{"A=3"}},
		{"prefix keys differ", []string{"AB=1"}, []string{"A=2"}, []string{"AB=1", "A=2"}},
		{"value with =", []string{"A=1"}, []string{"A=x=y"}, []string{"A=x=y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := slices.Clone(tt.base)
			got := mergeEnv(base, tt.over)
			if !slices.Equal(got, tt.want) {
				t.Errorf("mergeEnv(%q, %q) = %q, want %q", tt.base, tt.over, got, tt.want)
			}
			if !slices.Equal(base, tt.base) {
				t.Errorf("mergeEnv modified base: %q, was %q", base, tt.base)
			}
		})
	}
}

func TestContainerEnv(t *testing.T) {
	const path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	tests := []struct {
		name string
		tty  bool
		user []string
		want []string
	}{
		{"defaults", false, nil, []string{path, "HOSTNAME=h"}},
		{"tty adds TERM", true, nil, []string{path, "HOSTNAME=h", "TERM=xterm"}},
		{"user TERM without tty", false, []string{"TERM=dumb"}, []string{path, "HOSTNAME=h", "TERM=dumb"}},
		{"user TERM overrides tty's", true, []string{"TERM=dumb"}, []string{path, "HOSTNAME=h", "TERM=dumb"}},
		{"user overrides PATH and HOME", false, []string{"HOME=/home/u", "PATH=/bin", "X=1"},
			[]string{"PATH=/bin", "HOSTNAME=h", "HOME=/home/u", "X=1"}},
		{"user overrides HOSTNAME", false, []string{"HOSTNAME=other"}, []string{path, "HOSTNAME=other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := containerEnv("h", tt.tty, tt.user)
			if !slices.Equal(got, tt.want) {
				t.Errorf("containerEnv(h, %v, %q) =\n %q\nwant\n %q", tt.tty, tt.user, got, tt.want)
			}
		})
	}
}

// An exec gets TERM=xterm from its own -t, not from the run's, as docker
// exec does; a TERM of the user's stays.
func TestExecEnv(t *testing.T) {
	base := []string{"PATH=/bin", "HOSTNAME=h"}
	for _, tc := range []struct {
		name       string
		runTty     bool
		env        []string
		execTty    bool
		execEnv    []string
		wantTERM   string
		wantAbsent bool
	}{
		{"exec -t in a run without -t", false, base, true, nil, "xterm", false},
		{"exec without -t in a run -t", true, append(slices.Clone(base), "TERM=xterm"), false, nil, "", true},
		{"exec -t in a run -t", true, append(slices.Clone(base), "TERM=xterm"), true, nil, "xterm", false},
		{"the user's TERM stays", false, append(slices.Clone(base), "TERM=dumb"), true, nil, "dumb", false},
		{"exec -e TERM wins", false, base, true, []string{"TERM=vt100"}, "vt100", false},
	} {
		c := &Container{Spec: Spec{Tty: tc.runTty, Env: tc.env}}
		got := execEnv(c, nil, ExecOptions{Tty: tc.execTty, Env: tc.execEnv})
		var term string
		found := false
		for _, kv := range got {
			if k, v, _ := strings.Cut(kv, "="); k == "TERM" {
				term, found = v, true
			}
		}
		if tc.wantAbsent && found || !tc.wantAbsent && term != tc.wantTERM {
			t.Errorf("%s: env %v", tc.name, got)
		}
	}
}

// A start goes ahead only for a record still created, still its owner's,
// and an owner alive: a repair that failed gives the record back to the
// dead owner, whose supervisor must not then start a half-torn-down run.
func TestStartable(t *testing.T) {
	self := selfProc()
	gone := Proc{Pid: self.Pid, Start: self.Start + 1}
	for _, tc := range []struct {
		name  string
		state State
		owner Proc
		ok    bool
	}{
		{"created, owner alive", State{Status: StatusCreated, Owner: self}, self, true},
		{"taken by a repair", State{Status: StatusCreated, Owner: Proc{Pid: 1, Start: 1}}, self, false},
		{"given back to a dead owner", State{Status: StatusCreated, Owner: gone}, gone, false},
		{"exited", State{Status: StatusExited, Owner: self}, self, false},
	} {
		err := startable(&Container{Name: "x", State: tc.state}, tc.owner)
		if (err == nil) != tc.ok {
			t.Errorf("%s: startable = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

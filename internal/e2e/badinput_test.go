package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/testutil"
)

// snapshot captures the state a refused command must not change: the
// store's content (not its bytes: a command that wrote and then undid
// its change leaves the same records in a file that differs), the links,
// the namespace mounts and the firewall tables.
func snapshot(t *testing.T, s *testutil.Sandbox) string {
	t.Helper()
	var b strings.Builder
	buckets, _ := storeBuckets(t, s)
	for _, name := range slices.Sorted(maps.Keys(buckets)) {
		for _, k := range slices.Sorted(maps.Keys(buckets[name])) {
			fmt.Fprintf(&b, "%s/%s = %s\n", name, k, buckets[name][k])
		}
	}
	return b.String() + s.MustRun(t, "sh", "-c",
		"ip -o link | sed 's/ state .*//'; "+
			// knit's namespace mounts only: the sandbox also holds copies of
			// other tests' mounts, which come and go.
			"grep nsfs /proc/self/mountinfo | grep -cF "+s.ExecRoot()+"; ls "+s.ExecRoot()+"/netns; "+
			"nft list table inet knit 2>/dev/null; nft list table bridge knit 2>/dev/null || true")
}

func TestBadInputLeavesStateUnchanged(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "taken", "--ip", "172.17.0.9", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "network", "create", "unused") // no bridge until its first use
	cases := []struct {
		args []string
		msg  string // a fragment of the one-line error
	}{
		{[]string{"run", "--network", "nosuch", "true"}, "network nosuch not found"},
		{[]string{"run", "--name", "taken", "true"}, "already in use"},
		{[]string{"run", "--ip", "172.17.0.9", "true"}, "already in use"},
		{[]string{"run", "--ip", "10.9.9.9", "true"}, "outside"},
		{[]string{"run", "--ip", "172.17.0.300", "true"}, "not an IP address"},
		{[]string{"run", "--ip", "172.17.0.1", "true"}, "172.17.0.1"},
		{[]string{"run", "--network", "none", "--ip", "172.17.0.5", "true"}, "conflicting options"},
		{[]string{"run", "--network", "host", "--mac-address", "02:42:00:00:00:01", "true"}, "conflicting options"},
		{[]string{"run", "--network", "container:nosuch", "true"}, "no such container"},
		{[]string{"run", "--network", "container:taken", "-h", "x", "true"}, "conflicting options"},
		{[]string{"run", "--network", "container:taken", "--dns", "192.0.2.53", "true"}, "conflicting options: dns"},
		{[]string{"run", "--mac-address", "zz:zz", "true"}, "mac-address"},
		{[]string{"run", "--dns", "not-an-ip", "true"}, "--dns"},
		{[]string{"run", "-p", "[::1]:8080:80", "true"}, "cannot publish on [::1]"},
		{[]string{"run", "--dns-option", "bogus-option", "true"}, "--dns-option"},
		{[]string{"run", "--add-host", "nocolon", "true"}, "--add-host"},
		{[]string{"run", "--name", "bad/name", "true"}, "invalid container name"},
		{[]string{"run", "-h", "bad_host!", "true"}, "hostname"},
		{[]string{"run", "-w", "relative", "true"}, "absolute"},
		{[]string{"run", "--rootfs", "/no/such/dir", "true"}, "rootfs"},
		{[]string{"run"}, "no command"},
		{[]string{"run", "--no-such-flag", "true"}, "unknown flag"},
		{[]string{"exec", "nosuch", "true"}, "no such container"},
		{[]string{"rm", "nosuch"}, "no such container"},
		{[]string{"rm", "taken"}, "running"},
		{[]string{"stop", "nosuch"}, "no such container"},
		{[]string{"kill", "-s", "NOPE", "taken"}, "invalid signal"},
		{[]string{"inspect", "nosuch"}, "no such object"},
		{[]string{"logs", "nosuch"}, "no such container"},
		{[]string{"logs", "--until", "tomorrow", "taken"}, "--until"},
		{[]string{"rename", "taken", "bad/name"}, "invalid container name"},
		{[]string{"cp", "taken:/etc/hosts", "taken:/tmp/hosts"}, "between containers"},
		// Publishing.
		{[]string{"run", "-p", "99999:80", "true"}, "invalid"},
		{[]string{"run", "-p", "80:0", "true"}, "invalid"},
		{[]string{"run", "-p", "8080:80/icmp", "true"}, "icmp"},
		{[]string{"run", "-p", "8000-8010:80-85", "true"}, "range"},
		{[]string{"run", "-p", "300.1.1.1:8080:80", "true"}, "invalid"},
		{[]string{"run", "-p", "[::1:8080:80", "true"}, "invalid"},
		{[]string{"run", "-p", "a:b:c:d", "true"}, "invalid"},
		{[]string{"run", "-p", "", "true"}, "invalid"},
		{[]string{"run", "--expose", "80-", "true"}, "invalid"},
		{[]string{"run", "--expose", "abc", "true"}, "invalid"},
		{[]string{"run", "--network", "none", "-p", "8080:80", "true"}, "conflicting options"},
		{[]string{"run", "--network", "none", "-P", "--expose", "80", "true"}, "conflicting options"},
		// Links and names.
		{[]string{"run", "--link", "nosuch", "true"}, "nosuch"},
		{[]string{"run", "--link", "taken:bad alias!", "true"}, "alias"},
		{[]string{"run", "--network", "host", "--link", "taken", "true"}, "conflicting options"},
		{[]string{"run", "--name", "x", "true"}, "invalid container name"},
		{[]string{"run", "--name", "-dash", "true"}, "invalid container name"},
		// Addresses and networks.
		{[]string{"run", "--ip6", "10.0.0.1", "true"}, "--ip6"},
		{[]string{"run", "--ip", "fd00::1", "true"}, "--ip"},
		{[]string{"run", "--ip6", "zz::1::2", "true"}, "--ip6"},
		{[]string{"run", "--network-alias", "web", "true"}, "user-defined networks"},
		{[]string{"run", "--network", "host", "--network", "bridge", "true"}, "conflicting options"},
		{[]string{"run", "--network", "container:", "true"}, "container"},
		{[]string{"run", "--mac-address", "01:00:5e:00:00:01", "true"}, "unicast"},
		{[]string{"run", "--dns-search", "bad..domain", "true"}, "--dns-search"},
		{[]string{"run", "--add-host", "host:not-an-ip", "true"}, "--add-host"},
		{[]string{"run", "-e", "=novalue", "true"}, "invalid"},
		// Other commands.
		{[]string{"port", "nosuch"}, "no such container"},
		{[]string{"port", "taken", "80/bogus"}, "no public port '80/bogus' published for taken"},
		{[]string{"port", "taken", "http"}, "invalid port (http)"},
		{[]string{"kill", "nosuch"}, "no such container"},
		{[]string{"stop", "-t", "x", "taken"}, "invalid"},
		{[]string{"exec", "taken"}, `"knit exec" requires at least 2 arguments.`},
		{[]string{"stop"}, `"knit stop" requires at least 1 argument.`},
		{[]string{"port", "a", "b", "c"}, `"knit port" requires at least 1 and at most 2 arguments.`},
		{[]string{"ps", "extra"}, `"knit ps" accepts no arguments.`},
		{[]string{"ps", "--format", "{{.Nope"}, "template"},
		{[]string{"inspect", "-f", "{{.Nope}}", "taken"}, "template"},
		{[]string{"inspect", "-f", "{{.Name", "taken"}, "template parsing error"},
		{[]string{"network", "inspect", "-f", "{{end}}", "bridge"}, "template parsing error"},
		{[]string{"network", "create"}, "requires exactly 1 argument"},
		{[]string{"network", "create", "--ip-range", "10.9.0.0/24", "r"}, "--ip-range"},
		{[]string{"network", "create", "--subnet", "10.9.0.0/24", "--gateway", "10.10.0.1", "g"}, "--gateway"},
		{[]string{"network", "create", "-o", "mtu=12", "m"}, "mtu"},
		{[]string{"network", "create", "--ipv4=false", "v"}, "IPv4 or IPv6 must be enabled"},
		{[]string{"network", "create", "--ipv4=false", "--ipv6", "--subnet", "10.9.0.0/24", "v"}, "IPv4 disabled"},
		{[]string{"network", "create", "--ipv4=false", "--ipv6", "-o", "com.docker.network.enable_ipv4=true", "v"}, "conflicting options"},
		{[]string{"network", "create", "--ipv6", "-o", "mtu=1200", "m6"}, "IPv6 needs at least 1280"},
		{[]string{"network", "create", "-o", "icc=maybe", "i"}, "icc"},
		{[]string{"network", "create", "-o", "gateway-mode=bogus", "gm"}, "gateway-mode"},
		{[]string{"network", "create", "-o", "noequals", "ne"}, "="},
		{[]string{"network", "create", "--label", "=value", "ln"}, "KEY=VALUE or KEY"},
		{[]string{"run", "-l", "=value", "true"}, "KEY=VALUE or KEY"},
		{[]string{"run", "--label-file", "/nonexistent/labels", "true"}, "--label-file"},
		{[]string{"run", "--entrypoint", "", "-d"}, "--entrypoint"},
		{[]string{"network", "inspect", "nosuch"}, "nosuch"},
		{[]string{"network", "ls", "--filter", "bogus=1"}, "invalid filter"},
		{[]string{"network", "connect", "nosuch", "taken"}, "not found"},
		{[]string{"network", "connect", "bridge", "nosuch"}, "no such container"},
		{[]string{"network", "connect", "unused", "nosuch"}, "no such container"},
		{[]string{"network", "connect", "bridge", "taken"}, "already exists in network"},
		{[]string{"network", "connect", "--alias", "bad_alias!", "unused", "taken"}, "invalid --alias"},
		{[]string{"network", "connect", "--alias", "web", "bridge", "taken"}, "user-defined networks"},
		{[]string{"network", "disconnect", "bridge", "nosuch"}, "no such container"},
		{[]string{"network", "rm", "host"}, "pre-defined"},
		{[]string{"network", "create", "-o", "bridge=lo", "notabridge"}, "cannot use lo as the network's bridge"},
		{[]string{"system", "prune", "extra"}, "accepts no arguments"},
	}
	before := snapshot(t, s)
	for _, c := range cases {
		r := s.Knit(c.args...)
		if want := errorCode(c.args, r.Stderr); r.Code != want {
			t.Errorf("knit %s: exit %d, want %d (stderr %q)", strings.Join(c.args, " "), r.Code, want, r.Stderr)
		}
		if !strings.Contains(r.Stderr, c.msg) {
			t.Errorf("knit %s: stderr %q lacks %q", strings.Join(c.args, " "), r.Stderr, c.msg)
		}
		if first := strings.SplitN(r.Stderr, "\n", 2)[0]; !strings.HasPrefix(first, "knit: ") {
			t.Errorf("knit %s: error line %q should start with \"knit: \"", strings.Join(c.args, " "), first)
		}
	}
	if after := snapshot(t, s); after != before {
		t.Errorf("refused commands changed the state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// A run that fails after its network was made (here: the init cannot create
// the working directory) releases everything it took.
func TestFailedStartReleasesEverything(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	r := s.Knit("run", "--name", "broken", "-w", "/bin/busybox/sub", "--rootfs", bb, "true")
	if r.Code != 125 || !strings.Contains(r.Stderr, "knit: ") {
		t.Fatalf("run with an impossible workdir: exit %d, stderr %q", r.Code, r.Stderr)
	}
	waitBridgeEmpty(t, s)
	if ns := s.MustRun(t, "ls", s.ExecRoot()+"/netns"); ns != "" {
		t.Errorf("namespace mounts remain: %s", ns)
	}
	// The address is free again.
	s.MustKnit(t, "rm", "broken")
	s.MustKnit(t, "run", "-d", "--name", "next", "--rootfs", bb, "sleep", "300")
	if ip := ipOf(t, s, "next"); ip != "172.17.0.2" {
		t.Errorf("next got %s, want the released 172.17.0.2", ip)
	}
}

// When the subnet is full, the refused run changes nothing.
func TestExhaustedSubnetIsRefusedCleanly(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.WriteConfig(t, `{"bip": "10.88.0.1/30"}`) // one usable address: 10.88.0.2
	s.MustKnit(t, "run", "-d", "--name", "only", "--rootfs", bb, "sleep", "300")
	before := snapshot(t, s)
	r := s.Knit("run", "--rm", "--rootfs", bb, "true")
	if r.Code != 125 || !strings.Contains(r.Stderr, "no free address") {
		t.Errorf("run on a full subnet: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if after := snapshot(t, s); after != before {
		t.Errorf("refused run changed the state:\n%s\n---\n%s", before, after)
	}
}

// errorCode is the exit code Docker gives an error of the command line
// args that printed stderr: 125 for the syntax of a flag (pflag's
// messages) and for run, 1 for any other command.
func errorCode(args []string, stderr string) int {
	for _, flagErr := range []string{"unknown flag", "unknown shorthand flag", "invalid argument", "flag needs an argument", "bad flag syntax"} {
		if strings.Contains(stderr, flagErr) {
			return 125
		}
	}
	if len(args) > 0 && args[0] == "run" {
		return 125
	}
	if strings.Contains(stderr, "template parsing error") && !strings.Contains(stderr, "executing") {
		return 64 // inspect's template that does not parse, as Docker's CLI
	}
	return 1
}

// failedCleanly reports whether code is one of knit's own errors' (125 or
// 1, as Docker's).
func failedCleanly(code int) bool { return code == 125 || code == 1 }

package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/testutil"
)

var world = []string{"ip", "netns", "exec", "world"}

// serve starts a web server container whose /hostname is its name, with
// extra run flags (e.g. "-p", "8080:80").
func serve(t *testing.T, s *testutil.Sandbox, bb, name string, flags ...string) {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name, "-h", name}, flags...)
	s.MustKnit(t, append(args, "--rootfs", bb, "httpd", "-f", "-p", "80", "-h", "/etc")...)
}

// reaches asserts that a GET through via to addr:port answers with want.
func reaches(t *testing.T, s *testutil.Sandbox, via []string, addr string, port int, want string) {
	t.Helper()
	eventually(t, func() (string, error) {
		body, err := httpGetVia(s, via, addr, port, "/hostname")
		if err == nil && strings.TrimSpace(body) != want {
			err = fmt.Errorf("body %q, want %q", body, want)
		}
		return body, err
	})
}

// blocked asserts that a GET through via to addr:port gets no answer.
func blocked(t *testing.T, s *testutil.Sandbox, via []string, addr string, port int) {
	t.Helper()
	if body, err := httpGetVia(s, via, addr, port, "/hostname"); err == nil {
		t.Errorf("%v reached %s:%d (%q), want no answer", via, addr, port, body)
	}
}

func TestPublishedPortIsReachableEverywhere(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	serve(t, s, bb, "web", "-p", "8080:80")
	s.MustKnit(t, "run", "-d", "--name", "client", "--rootfs", bb, "sleep", "300")
	reaches(t, s, world, "198.51.100.1", 8080, "web")                            // another host
	reaches(t, s, nil, "198.51.100.1", 8080, "web")                              // the host, its own address
	reaches(t, s, nil, "127.0.0.1", 8080, "web")                                 // the host, localhost
	reaches(t, s, []string{knit, "exec", "client"}, "198.51.100.1", 8080, "web") // hairpin
	reaches(t, s, []string{knit, "exec", "web"}, "198.51.100.1", 8080, "web")    // hairpin to itself
	if p := strings.TrimSpace(s.MustKnit(t, "port", "web")); p != "80/tcp -> 0.0.0.0:8080" {
		t.Errorf("knit port web = %q", p)
	}
	if p := strings.TrimSpace(s.MustKnit(t, "port", "web", "80")); p != "0.0.0.0:8080" {
		t.Errorf("knit port web 80 = %q", p)
	}
	// Docker's inspect fields that scripts read for ports.
	if got := strings.TrimSpace(s.MustKnit(t, "inspect", "-f",
		`{{json .HostConfig.PortBindings}} {{json .Config.ExposedPorts}} {{.HostConfig.PublishAllPorts}}`, "web")); got != `{"80/tcp":[{"HostIp":"","HostPort":"8080"}]} {"80/tcp":{}} false` {
		t.Errorf("inspect web's port fields = %s", got)
	}
	if ps := s.MustKnit(t, "ps", "--format", "{{.Names}} {{.Ports}}"); !strings.Contains(ps, "web 0.0.0.0:8080->80/tcp") {
		t.Errorf("ps ports:\n%s", ps)
	}
	// A format that is not a table is written as it is: its tabs stay.
	if ps := s.MustKnit(t, "ps", "--format", `{{.Names}}\t{{.Ports}}`); !strings.Contains(ps, "web\t0.0.0.0:8080->80/tcp") {
		t.Errorf("ps --format with a tab:\n%q", ps)
	}
	// Container addresses are not reachable from outside except through
	// published ports, even for a host that routes to them.
	s.World("ip", "route", "add", "172.17.0.0/16", "via", "198.51.100.1")
	blocked(t, s, world, ipOf(t, s, "web"), 80)
}

func TestLocalhostBindingStaysLocal(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	serve(t, s, bb, "private", "-p", "127.0.0.1:8081:80")
	reaches(t, s, nil, "127.0.0.1", 8081, "private")
	blocked(t, s, world, "198.51.100.1", 8081)
	s.World("ip", "route", "add", "172.17.0.0/16", "via", "198.51.100.1")
	blocked(t, s, world, ipOf(t, s, "private"), 80)
}

func TestRandomAndRangePorts(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	// Random host ports come from the kernel's ephemeral range, as with
	// Docker: the sandbox's own.
	s.MustRun(t, "sh", "-c", "echo '41000 41999' >/proc/sys/net/ipv4/ip_local_port_range")
	serve(t, s, bb, "rnd", "-p", "80")
	out := strings.TrimSpace(s.MustKnit(t, "port", "rnd", "80/tcp"))
	port, err := strconv.Atoi(strings.TrimPrefix(out, "0.0.0.0:"))
	if err != nil || port < 41000 || port > 41999 {
		t.Fatalf("random host port %q, want one in the sandbox's ephemeral range 41000-41999", out)
	}
	reaches(t, s, world, "198.51.100.1", port, "rnd")
	// One free port from a range.
	serve(t, s, bb, "ranged", "-p", "9000-9010:80")
	if p := strings.TrimSpace(s.MustKnit(t, "port", "ranged", "80")); p != "0.0.0.0:9000" {
		t.Errorf("range: %q, want the first free port 9000", p)
	}
	serve(t, s, bb, "ranged2", "-p", "9000-9010:80")
	if p := strings.TrimSpace(s.MustKnit(t, "port", "ranged2", "80")); p != "0.0.0.0:9001" {
		t.Errorf("range: %q, want the next free port 9001", p)
	}
	reaches(t, s, world, "198.51.100.1", 9001, "ranged2")
	// -P publishes every --expose'd port on a random port.
	serve(t, s, bb, "exposed", "--expose", "80", "-P")
	if p := s.MustKnit(t, "port", "exposed"); !strings.HasPrefix(p, "80/tcp -> 0.0.0.0:") {
		t.Errorf("-P: %q", p)
	}
}

func TestHostPortConflicts(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	serve(t, s, bb, "first", "-p", "8080:80")
	r := s.Knit("run", "-d", "-p", "8080:80", "--rootfs", bb, "sleep", "300")
	if r.Code != 125 || !strings.Contains(r.Stderr, "first") {
		t.Errorf("duplicate host port: exit %d, %q (want 125 naming container first)", r.Code, r.Stderr)
	}
	// A socket already listening on the host is a holder too.
	s.Start(t, "busybox", "nc", "-ll", "-p", "7777", "-e", "true")
	eventually(t, func() (string, error) {
		if out := s.MustRun(t, "sh", "-c", "cat /proc/net/tcp /proc/net/tcp6"); !strings.Contains(strings.ToUpper(out), ":1E61") {
			return "", fmt.Errorf("listener not up yet")
		}
		return "", nil
	})
	r = s.Knit("run", "-d", "-p", "7777:80", "--rootfs", bb, "sleep", "300")
	if r.Code != 125 || !strings.Contains(r.Stderr, "listening") {
		t.Errorf("port held by a host socket: exit %d, %q", r.Code, r.Stderr)
	}
	// As Docker: with --network host, -p is dropped with a warning.
	r = s.Knit("run", "--rm", "--network", "host", "-p", "80:80", "--rootfs", bb, "true")
	if r.Code != 0 || !strings.Contains(r.Stderr, "Published ports are discarded when using host network mode") {
		t.Errorf("-p with --network host: exit %d, %q", r.Code, r.Stderr)
	}
}

func TestRemovalLeavesNoElement(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	serve(t, s, bb, "gone", "-p", "8080:80", "-p", "127.0.0.1:8081:80")
	ip := ipOf(t, s, "gone")
	if rules := s.MustRun(t, "nft", "list", "table", "inet", "knit"); !strings.Contains(rules, ip) {
		t.Fatalf("no element for %s while it runs:\n%s", ip, rules)
	}
	s.MustKnit(t, "rm", "-f", "gone")
	if rules := s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, ip) || strings.Contains(rules, "8080") {
		t.Errorf("elements of the removed container remain:\n%s", rules)
	}
	// The host port is free again.
	serve(t, s, bb, "again", "-p", "8080:80")
	reaches(t, s, world, "198.51.100.1", 8080, "again")
}

// config.json's "ip" is the host address of ports published without one.
func TestDefaultHostIP(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.WriteConfig(t, `{"ip": "127.0.0.1"}`)
	serve(t, s, bb, "local", "-p", "8085:80")
	if p := strings.TrimSpace(s.MustKnit(t, "port", "local")); p != "80/tcp -> 127.0.0.1:8085" {
		t.Errorf("knit port = %q", p)
	}
	reaches(t, s, nil, "127.0.0.1", 8085, "local")
	blocked(t, s, world, "198.51.100.1", 8085)
	// It is the default network's, as dockerd's --ip: a user-defined
	// network's ports go on every address unless its -o host-ip says.
	s.MustKnit(t, "network", "create", "anyaddr")
	s.MustKnit(t, "run", "-d", "--name", "everywhere", "--network", "anyaddr", "-p", "8086:80", "--rootfs", bb, "sleep", "300")
	if p := strings.TrimSpace(s.MustKnit(t, "port", "everywhere")); p != "80/tcp -> 0.0.0.0:8086" {
		t.Errorf("knit port on a user-defined network with config ip 127.0.0.1 = %q, want 0.0.0.0:8086", p)
	}
}

// An exited container shows no published ports (its host ports went to
// the pool when it stopped), in ps, port and inspect, as in Docker.
func TestExitedShowsNoPorts(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "brief", "-p", "8093:80", "--rootfs", bb, "sleep", "0.2")
	eventually(t, func() (string, error) {
		if st := strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{.State.Status}}", "brief")); st != "exited" {
			return "", fmt.Errorf("brief: %s", st)
		}
		return "", nil
	})
	if ps := strings.TrimSpace(s.MustKnit(t, "ps", "-a", "--format", "{{.Names}}:{{.Ports}}")); ps != "brief:" {
		t.Errorf("ps -a of the exited container: %q, want no ports", ps)
	}
	if r := s.Knit("port", "brief"); r.Code != 0 || strings.TrimSpace(r.Stdout) != "" {
		t.Errorf("knit port of the exited container: exit %d, %q%s", r.Code, r.Stdout, r.Stderr)
	}
}

// A TCP range maps port to port, and IP::PORT picks a free host port on
// that address; both answer.
func TestPublishedTCPRangeAndIPRandom(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "rng", "-h", "rng", "-p", "9100-9101:80-81", "-p", "127.0.0.1::80", "--rootfs", bb,
		"sh", "-c", "httpd -p 81 -h /etc; exec httpd -f -p 80 -h /etc")
	reaches(t, s, world, "198.51.100.1", 9100, "rng")
	reaches(t, s, world, "198.51.100.1", 9101, "rng")
	out := strings.TrimSpace(s.MustKnit(t, "port", "rng", "80"))
	var local int
	for _, line := range strings.Split(out, "\n") {
		if p, ok := strings.CutPrefix(line, "127.0.0.1:"); ok {
			local, _ = strconv.Atoi(p)
		}
	}
	if local == 0 {
		t.Fatalf("knit port rng 80: %q, want a 127.0.0.1 mapping", out)
	}
	reaches(t, s, nil, "127.0.0.1", local, "rng")
	blocked(t, s, world, "198.51.100.1", local)
}

// `nft flush ruleset` (what a firewall service's restart does) takes
// knit's table with it; the next command that ensures a network puts back
// what the table held for the others: another network's isolation, and the
// published ports and links of the containers still running.
func TestFirewallRestoredAfterFlush(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	s.WriteConfig(t, `{"icc": false}`) // on the default network, links are the way in
	// As after a boot: no exec-root yet, and no table, which the first
	// command (here a network create) notes as a loss.
	s.MustRun(t, "rm", "-rf", s.ExecRoot())
	s.MustKnit(t, "network", "create", "--subnet", "10.85.0.0/24", "other")
	serve(t, s, bb, "web", "--network", "other", "-p", "8080:80")
	serve(t, s, bb, "db", "--expose", "80")
	s.MustKnit(t, "run", "-d", "--name", "app", "--link", "db", "--rootfs", bb, "sleep", "300")
	web, db := ipOn(t, s, "web", "other"), ipOf(t, s, "db")
	check := func() {
		t.Helper()
		reaches(t, s, world, "198.51.100.1", 8080, "web")
		reaches(t, s, []string{knit, "exec", "app"}, db, 80, "db")
		blocked(t, s, []string{knit, "exec", "app"}, web, 80)
	}
	check()

	s.MustRun(t, "nft", "flush", "ruleset")
	s.MustKnit(t, "run", "--rm", "--rootfs", bb, "true") // ensures the default network
	check()
	if rules := s.MustRun(t, "nft", "list", "table", "inet", "knit"); !strings.Contains(rules, "10.85.0.0/24") {
		t.Errorf("network other's rules are not back:\n%s", rules)
	}
	// and the running containers' claims on their addresses (the check
	// wants exactly each one's)
	assertConsistent(t, s, "restored")
}

// As Docker's, published ports belong to the container: disconnected from
// the network they went through, they follow its default route to the
// network that took it, on the same host port; with no network left to
// take them, they go.
func TestPortsFollowTheDefaultRoute(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.94.0.0/24", "first")
	s.MustKnit(t, "network", "create", "--subnet", "10.95.0.0/24", "second")
	serve(t, s, bb, "mover", "--network", "first", "-p", "8085:80")
	reaches(t, s, world, "198.51.100.1", 8085, "mover")
	s.MustKnit(t, "network", "connect", "second", "mover")
	s.MustKnit(t, "network", "disconnect", "first", "mover")
	if p := strings.TrimSpace(s.MustKnit(t, "port", "mover")); p != "80/tcp -> 0.0.0.0:8085" {
		t.Errorf("knit port mover after leaving its first network: %q", p)
	}
	reaches(t, s, world, "198.51.100.1", 8085, "mover")
	if m := s.MustRun(t, "nft", "list", "map", "inet", "knit", "pub4any"); !strings.Contains(m, ": 10.95.0.") {
		t.Errorf("the port's element does not lead to the second network:\n%s", m)
	}
	// Its host port is still its own.
	if r := s.Knit("run", "--rm", "-p", "8085:80", "--rootfs", bb, "true"); r.Code != 125 || !strings.Contains(r.Stderr, "mover") {
		t.Errorf("another run on the port mover kept: exit %d, %q", r.Code, r.Stderr)
	}
	// An internal network takes no default route, nor the ports.
	s.MustKnit(t, "network", "create", "--internal", "shut")
	s.MustKnit(t, "network", "connect", "shut", "mover")
	s.MustKnit(t, "network", "disconnect", "second", "mover")
	if p := s.MustKnit(t, "port", "mover"); p != "" {
		t.Errorf("knit port mover on an internal network only: %q, want none", p)
	}
	blocked(t, s, world, "198.51.100.1", 8085)
	s.MustKnit(t, "run", "--rm", "-p", "8085:80", "--rootfs", bb, "true") // released
	// A port published on 0.0.0.0 and on [::] holds a record for each,
	// through an IPv4-only and an IPv6-only network: leaving the first
	// (no network takes its IPv4 route) releases the IPv4 one alone.
	s.MustKnit(t, "network", "create", "--ipv4=false", "--ipv6", "--subnet", "fd00:db8:96::/64", "six")
	s.MustKnit(t, "run", "-d", "--name", "pair", "--network", "first", "--network", "six",
		"-p", "0.0.0.0:8086:80", "-p", "[::]:8086:80", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "network", "disconnect", "first", "pair")
	if p := strings.TrimSpace(s.MustKnit(t, "port", "pair")); p != "80/tcp -> [::]:8086" {
		t.Errorf("knit port pair after leaving its IPv4 network: %q", p)
	}
	s.MustKnit(t, "run", "--rm", "-p", "0.0.0.0:8086:80", "--rootfs", bb, "true")
	if r := s.Knit("run", "--rm", "-p", "[::]:8086:80", "--rootfs", bb, "true"); r.Code != 125 || !strings.Contains(r.Stderr, "pair") {
		t.Errorf("another run on [::]:8086, which pair kept: exit %d, %q", r.Code, r.Stderr)
	}
	s.MustKnit(t, "rm", "-f", "pair")
	assertConsistent(t, s, "pair removed")
}

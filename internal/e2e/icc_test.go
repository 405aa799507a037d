package e2e

import (
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/testutil"
)

// With icc false containers of the default network cannot reach each
// other, except a container linked with --link, which reaches exactly the
// linked container's exposed and published ports, by alias and by name.
func TestICCOffAndLinks(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	s.WriteConfig(t, `{"icc": false}`)
	// db serves on 80 (exposed) and 81 (not exposed).
	s.MustKnit(t, "run", "-d", "--name", "db", "-h", "db", "--expose", "80", "-e", "DB_USER=admin", "--rootfs", bb,
		"sh", "-c", "httpd -p 81 -h /etc; exec httpd -f -p 80 -h /etc")
	s.MustKnit(t, "run", "-d", "--name", "app", "--link", "db:database", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "other", "--rootfs", bb, "sleep", "300")
	db := ipOf(t, s, "db")

	// Docker's link variables, in the command's environment and exec's.
	env := s.MustKnit(t, "exec", "app", "env") + s.MustKnit(t, "exec", "app", "sh", "-c", `tr '\0' '\n' < /proc/1/environ`)
	for _, want := range []string{"DATABASE_PORT=tcp://" + db + ":80", "DATABASE_PORT_80_TCP_ADDR=" + db,
		"DATABASE_PORT_80_TCP_PORT=80", "DATABASE_NAME=/app/database", "DATABASE_ENV_DB_USER=admin"} {
		if strings.Count(env, want+"\n") != 2 {
			t.Errorf("%s is not once in exec's environment and once in the command's:\n%s", want, env)
		}
	}

	hosts := s.MustKnit(t, "exec", "app", "cat", "/etc/hosts")
	if !strings.Contains(hosts, db+"\tdatabase db") {
		t.Errorf("app's /etc/hosts lacks the link entry %q:\n%s", db+"\tdatabase db", hosts)
	}
	reaches(t, s, []string{knit, "exec", "app"}, db, 80, "db")
	blocked(t, s, []string{knit, "exec", "app"}, db, 81)
	blocked(t, s, []string{knit, "exec", "other"}, db, 80)
	// The host still reaches every container.
	reaches(t, s, nil, db, 81, "db")
	// Removing the linking container removes its accept pairs.
	s.MustKnit(t, "rm", "-f", "app")
	if rules := s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, db+" . tcp . 80") {
		t.Errorf("link elements remain after rm:\n%s", rules)
	}
}

// With icc on (the default) containers of one network reach each other.
func TestICCOnByDefault(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	serve(t, s, bb, "srv")
	s.MustKnit(t, "run", "-d", "--name", "cli", "--rootfs", bb, "sleep", "300")
	reaches(t, s, []string{knit, "exec", "cli"}, ipOf(t, s, "srv"), 80, "srv")
}

// A link goes with the linking container's endpoint: once it leaves the
// network, the container that gets its address does not inherit its
// access.
func TestLinksFollowDisconnect(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	s.WriteConfig(t, `{"icc": false}`)
	s.MustKnit(t, "run", "-d", "--name", "db", "-h", "db", "--expose", "80", "--rootfs", bb, "httpd", "-f", "-p", "80", "-h", "/etc")
	s.MustKnit(t, "run", "-d", "--name", "app", "--link", "db", "--rootfs", bb, "sleep", "300")
	db, app := ipOf(t, s, "db"), ipOf(t, s, "app")
	reaches(t, s, []string{knit, "exec", "app"}, db, 80, "db")

	s.MustKnit(t, "network", "disconnect", "bridge", "app")
	if rules := s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, app+" . "+db) {
		t.Errorf("link elements of the old address remain after disconnect:\n%s", rules)
	}
	s.MustKnit(t, "run", "-d", "--name", "newcomer", "--ip", app, "--rootfs", bb, "sleep", "300")
	if got := ipOf(t, s, "newcomer"); got != app {
		t.Fatalf("newcomer has %s, want app's old address %s", got, app)
	}
	blocked(t, s, []string{knit, "exec", "newcomer"}, db, 80)
}

// An administrator's notrack rule leaves packets without conntrack state,
// which the ct status matches of knit's rules then fail to match: icc=false
// and the isolation between networks must hold all the same, and a link
// still works, in both directions, as Docker's stateless link rules do.
func TestICCAndIsolationHoldUnderNotrack(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	serveThreeNetworks(t, s, bb)
	for _, c := range [][]string{
		{"--name", "clia", "--network", "neta"},
		{"--name", "cliq", "--network", "netq"},
		{"--name", "linked", "--network", "netq", "--link", "srvq"},
	} {
		s.MustKnit(t, append(append([]string{"run", "-d"}, c...), "--rootfs", bb, "sleep", "300")...)
	}
	srva, srvb, srvq := ipOn(t, s, "srva", "neta"), ipOn(t, s, "srvb", "netb"), ipOn(t, s, "srvq", "netq")
	for addr, name := range map[string]string{srva: "srva", srvb: "srvb", srvq: "srvq"} {
		reaches(t, s, nil, addr, 80, name) // the servers are up
	}

	s.MustRun(t, "nft", "add table ip adminraw")
	s.MustRun(t, "nft", "add chain ip adminraw pre { type filter hook prerouting priority raw; }")
	s.MustRun(t, "nft", "add rule ip adminraw pre counter notrack")

	reaches(t, s, []string{knit, "exec", "clia"}, srva, 80, "srva") // icc on: untracked, and let through
	reaches(t, s, []string{knit, "exec", "linked"}, srvq, 80, "srvq")
	blocked(t, s, []string{knit, "exec", "cliq"}, srvq, 80)
	blocked(t, s, []string{knit, "exec", "clia"}, srvb, 80)
	// The probes above went through the notrack rule.
	if out := s.MustRun(t, "nft", "list", "chain", "ip", "adminraw", "pre"); strings.Contains(out, "counter packets 0 ") {
		t.Fatalf("the notrack rule saw no packet:\n%s", out)
	}
	// Not even one way: an untracked datagram from neta never reaches
	// netb's container (the reply's drop above does not show that),
	// whichever network's rules come first in the chain.
	nsb := netnsOf(t, s, "srvb")
	s.MustRun(t, "nsenter", "--net="+nsb, "nft", "add table ip probe")
	s.MustRun(t, "nsenter", "--net="+nsb, "nft", "add chain ip probe in { type filter hook input priority 0; }")
	s.MustRun(t, "nsenter", "--net="+nsb, "nft", "add rule ip probe in udp dport 53 counter")
	// busybox nslookup asks srvb over UDP (busybox nc has no -u); no one
	// answers there.
	s.MustKnit(t, "exec", "clia", "sh", "-c", "timeout 2 nslookup probe.example "+srvb+" >/dev/null 2>&1; true")
	if out := s.MustRun(t, "nsenter", "--net="+nsb, "nft", "list", "chain", "ip", "probe", "in"); !strings.Contains(out, "counter packets 0 ") {
		t.Errorf("untracked datagrams from neta reached srvb on netb:\n%s", out)
	}
}

// On a dual-stack icc=false network a link works over IPv6 too: neighbour
// discovery between the containers (ICMPv6 that conntrack never tracks)
// passes the network's drops, and only the link's port is reachable.
func TestICCOffLinkOverIPv6(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	s.MustKnit(t, "network", "create", "--ipv6", "--subnet", "fd00:db8:93::/64", "-o", "icc=false", "netq6")
	serve(t, s, bb, "srv6", "--network", "netq6", "--expose", "80")
	s.MustKnit(t, "run", "-d", "--name", "linked6", "--network", "netq6", "--link", "srv6", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--name", "other6", "--network", "netq6", "--rootfs", bb, "sleep", "300")
	srv := strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}{{end}}", "srv6"))
	if !strings.HasPrefix(srv, "fd00:db8:93::") {
		t.Fatalf("srv6's IPv6 address: %q", srv)
	}
	reaches(t, s, []string{knit, "exec", "linked6"}, srv, 80, "srv6")
	blocked(t, s, []string{knit, "exec", "other6"}, srv, 80)
}

// A generated name (adjective_surname) is a valid link target and, by
// default, alias, as the seeds' `--link=CONTAINER_NAME:ALIAS` has it ("the
// name Docker assigned, or the one --name gave"); underscores are valid in
// a hostname too, as in Docker since 1.13.
func TestLinkToAGeneratedName(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	id := strings.TrimSpace(s.MustKnit(t, "run", "-d", "--rootfs", bb, "httpd", "-f", "-p", "80", "-h", "/etc"))
	name := strings.TrimPrefix(inspectField(t, s, id, "{{.Name}}"), "/")
	if !strings.Contains(name, "_") {
		t.Fatalf("generated name %q has no underscore", name)
	}
	s.MustKnit(t, "run", "-d", "--name", "app", "-h", "app_host", "--link", name, "--rootfs", bb, "sleep", "300")
	db := ipOf(t, s, name)
	if hosts := s.MustKnit(t, "exec", "app", "cat", "/etc/hosts"); !strings.Contains(hosts, db+"\t"+name) {
		t.Errorf("app's /etc/hosts lacks the link entry %q:\n%s", db+"\t"+name, hosts)
	}
	if got := strings.TrimSpace(s.MustKnit(t, "exec", "app", "hostname")); got != "app_host" {
		t.Errorf("hostname = %q, want app_host", got)
	}
}

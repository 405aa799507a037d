package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/testutil"
)

// TestIsolationMatrix sends real traffic between every pair of places a
// packet can come from and go to, and checks each against the intended
// verdict: nothing reachable that should not be, and everything reachable
// that should be.
//
// Places: the host, the world (another host that routes every container
// subnet to this one), containers on user networks A and B, on an icc=false
// network Q (one plain, one --link'ed to Q's server), and two containers on
// the default network, one publishing on 127.0.0.1 and one on 0.0.0.0.
func TestIsolationMatrix(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	serveThreeNetworks(t, s, bb)
	serve(t, s, bb, "plocal", "-p", "127.0.0.1:8101:80")
	serve(t, s, bb, "pany", "-p", "8102:80")
	for _, c := range [][]string{
		{"--name", "clia", "--network", "neta"},
		{"--name", "cliq", "--network", "netq"},
		{"--name", "linked", "--network", "netq", "--link", "srvq"},
	} {
		s.MustKnit(t, append(append([]string{"run", "-d"}, c...), "--rootfs", bb, "sleep", "300")...)
	}
	for _, subnet := range []string{"10.91.0.0/24", "10.92.0.0/24", "10.93.0.0/24", "172.17.0.0/16"} {
		s.World("ip", "route", "add", subnet, "via", "198.51.100.1")
	}

	type target struct {
		name, addr string
		port       int
		answer     string // the body that proves the right server answered
	}
	targets := []target{
		{"A direct", ipOn(t, s, "srva", "neta"), 80, "srva"},
		{"B direct", ipOn(t, s, "srvb", "netb"), 80, "srvb"},
		{"Q direct", ipOn(t, s, "srvq", "netq"), 80, "srvq"},
		{"127.0.0.1-published via 127.0.0.1", "127.0.0.1", 8101, "plocal"},
		{"127.0.0.1-published via the host address", "198.51.100.1", 8101, "plocal"},
		{"127.0.0.1-published direct", ipOf(t, s, "plocal"), 80, "plocal"},
		{"0.0.0.0-published via the host address", "198.51.100.1", 8102, "pany"},
		{"0.0.0.0-published direct", ipOf(t, s, "pany"), 80, "pany"},
	}
	execIn := func(c string) []string { return []string{knit, "exec", c} }
	sources := []struct {
		name  string
		via   []string
		reach map[string]bool // by target name; missing means blocked, "-" rows are skipped
		skip  []string
	}{
		{"host", nil, set("A direct", "B direct", "Q direct", "127.0.0.1-published via 127.0.0.1",
			"127.0.0.1-published direct", "0.0.0.0-published via the host address", "0.0.0.0-published direct"), nil},
		{"world", world, set("0.0.0.0-published via the host address"), []string{"127.0.0.1-published via 127.0.0.1"}},
		{"network A", execIn("clia"), set("A direct", "0.0.0.0-published via the host address"), []string{"127.0.0.1-published via 127.0.0.1"}},
		{"network B", execIn("srvb"), set("B direct", "0.0.0.0-published via the host address"), []string{"127.0.0.1-published via 127.0.0.1"}},
		{"icc=false network", execIn("cliq"), set("0.0.0.0-published via the host address"), []string{"127.0.0.1-published via 127.0.0.1"}},
		{"linked", execIn("linked"), set("Q direct", "0.0.0.0-published via the host address"), []string{"127.0.0.1-published via 127.0.0.1"}},
		{"published on 127.0.0.1", execIn("plocal"), set("127.0.0.1-published direct", "0.0.0.0-published via the host address", "0.0.0.0-published direct"), []string{"127.0.0.1-published via 127.0.0.1"}},
		{"published on 0.0.0.0", execIn("pany"), set("127.0.0.1-published direct", "0.0.0.0-published via the host address", "0.0.0.0-published direct"), []string{"127.0.0.1-published via 127.0.0.1"}},
	}
	// Let every server come up before judging anything blocked.
	reaches(t, s, nil, "198.51.100.1", 8102, "pany")
	for _, tg := range targets[:3] {
		reaches(t, s, nil, tg.addr, tg.port, tg.answer)
	}
	reaches(t, s, nil, "127.0.0.1", 8101, "plocal")

	var mu sync.Mutex
	var wrong []string
	probes := 0
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, src := range sources {
		for _, tg := range targets {
			if contains(src.skip, tg.name) {
				continue // 127.0.0.1 is the source's own loopback there
			}
			probes++
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				want := src.reach[tg.name]
				body, err := httpGetVia(s, src.via, tg.addr, tg.port, "/hostname")
				if want && err != nil { // one retry: a first packet may be lost
					body, err = httpGetVia(s, src.via, tg.addr, tg.port, "/hostname")
				}
				got := err == nil && strings.TrimSpace(body) == tg.answer
				if got != want {
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%s → %s (%s:%d): reached=%v, want %v (%v)", src.name, tg.name, tg.addr, tg.port, got, want, err))
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("%d probes of %d sources × %d targets", probes, len(sources), len(targets))
	for _, w := range wrong {
		t.Error(w)
	}
}

// serveThreeNetworks makes networks neta (10.91.0.0/24), netb
// (10.92.0.0/24) and netq (10.93.0.0/24, icc=false), with a web server on
// each: srva, srvb and srvq (which exposes port 80, for links).
func serveThreeNetworks(t *testing.T, s *testutil.Sandbox, bb string) {
	s.MustKnit(t, "network", "create", "--subnet", "10.91.0.0/24", "neta")
	s.MustKnit(t, "network", "create", "--subnet", "10.92.0.0/24", "netb")
	s.MustKnit(t, "network", "create", "--subnet", "10.93.0.0/24", "-o", "icc=false", "netq")
	serve(t, s, bb, "srva", "--network", "neta")
	serve(t, s, bb, "srvb", "--network", "netb")
	serve(t, s, bb, "srvq", "--network", "netq", "--expose", "80")
}

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A container that turns route_localnet on for its own eth0 can send with
// a loopback source; the bridge's route_localnet (which the host's
// connections to ports published on 127.0.0.1 need) would let such
// packets in. Neither the host nor, through forwarding, the world gets
// them.
func TestLoopbackSourceFromContainerDropped(t *testing.T) {
	rootfs, _ := udpRootfs(t)
	s := sandbox(t)
	// Where the packets arrive, before any filter, and what the host's
	// and the world's services would be handed.
	// (On the bridge, before knit's source guard, which drops them there
	// since; the host's input and the world count what gets past it.)
	s.MustRun(t, "nft", "add table bridge probe")
	s.MustRun(t, "nft", "add chain bridge probe raw { type filter hook prerouting priority -300; }")
	s.MustRun(t, "nft", "add rule bridge probe raw ip saddr 127.0.0.0/8 udp dport 9999 counter")
	s.MustRun(t, "nft", "add table ip probe")
	s.MustRun(t, "nft", "add chain ip probe in { type filter hook input priority 10; }")
	s.MustRun(t, "nft", "add rule ip probe in ip saddr 127.0.0.0/8 udp dport 9999 counter")
	// In the world, before routing, which drops a loopback source there
	// as a martian whatever knit does.
	for _, cmd := range []string{"add table ip probe", "add chain ip probe in { type filter hook prerouting priority raw; }",
		"add rule ip probe in ip saddr 127.0.0.0/8 udp dport 9999 counter"} {
		if r := s.World("nft", cmd); r.Code != 0 {
			t.Fatalf("world: nft %s: %s", cmd, r.Stderr)
		}
	}
	script := `echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet || exit 1
gw=$(ip route | awk '/default/ {print $3}')
ping -c1 -W1 $gw >/dev/null # its MAC: an ARP request from 127.0.0.5 goes no further than the datagrams
for to in $gw:9999 198.51.100.2:9999; do udpecho -send $to -from 127.0.0.5:0 -timeout 200ms; done
exit 0`
	s.MustKnit(t, "run", "--rm", "--rootfs", rootfs, "sh", "-c", script)

	counted := func(out string) string { return nftCounter(t, out) }
	if n := counted(s.MustRun(t, "nft", "list", "chain", "bridge", "probe", "raw")); n != "2" {
		t.Fatalf("%s loopback-sourced packets left the container, want 2 (the test sends none)", n)
	}
	if n := counted(s.MustRun(t, "nft", "list", "chain", "ip", "probe", "in")); n != "0" {
		t.Errorf("the host's services got %s packets from 127.0.0.5", n)
	}
	if n := counted(s.World("nft", "list", "chain", "ip", "probe", "in").Stdout); n != "0" {
		t.Errorf("the world got %s packets from 127.0.0.5", n)
	}
}

// What a container sends to a neighbour from a loopback address never
// arrives, in either form it could: as it is, which a namespace with
// route_localnet on (a container on a DNS network, for its 127.0.0.11)
// takes for a local source, where services trust it; nor, through
// br_netfilter, masqueraded to the gateway's address, where the
// neighbour would answer "the host". The forger is on the default
// network, which has no redirect to masquerade its source in its own
// namespace; its ordinary datagram arrives.
func TestLoopbackSourceToNeighbourDropped(t *testing.T) {
	rootfs, _ := udpRootfs(t)
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "dnsnet")
	s.MustKnit(t, "run", "-d", "--name", "victim", "--network", "dnsnet", "--rootfs", rootfs, "sleep", "300")
	s.MustKnit(t, "network", "connect", "bridge", "victim")
	ns := netnsOf(t, s, "victim")
	for _, cmd := range []string{"add table ip probe",
		"add chain ip probe raw { type filter hook prerouting priority raw; }",
		"add rule ip probe raw udp dport 9998 counter",
		"add rule ip probe raw udp dport 9999 counter"} {
		s.MustRun(t, "nsenter", "--net="+ns, "nft", cmd)
	}
	script := `echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet || exit 1
ping -c1 -W1 $1 >/dev/null
udpecho -send $1:9998 -timeout 200ms
udpecho -send $1:9999 -from 127.0.0.5:0 -timeout 200ms
exit 0`
	s.MustKnit(t, "run", "--rm", "--rootfs", rootfs, "sh", "-c", script, "sh", ipOn(t, s, "victim", "bridge"))
	counters := nftCounters(t, s.MustRun(t, "nsenter", "--net="+ns, "nft", "list", "chain", "ip", "probe", "raw"))
	if len(counters) != 2 || counters[0] == "0" {
		t.Fatalf("the ordinary datagram did not reach victim (counters %v): the probe means nothing", counters)
	}
	if counters[1] != "0" {
		t.Errorf("victim got %s datagrams sent from 127.0.0.5, as they were or masqueraded", counters[1])
	}
	// Its own queries to 127.0.0.11 still get their answers.
	s.MustKnit(t, "run", "-d", "--name", "peer", "--network", "dnsnet", "--rootfs", rootfs, "sleep", "300")
	if out := s.MustKnit(t, "exec", "victim", "nslookup", "peer", "127.0.0.11"); !strings.Contains(out, ipOn(t, s, "peer", "dnsnet")) {
		t.Errorf("victim's query to 127.0.0.11: %q", out)
	}
}

// knit turns the host's forwarding on for its containers; the host, which
// forwarded nothing until then, does not become a router between its
// other interfaces (here a LAN namespace behind it reaching the world), as
// with Docker. config.json's ip-forward-no-drop lets it, as dockerd's.
func TestForwardingIsOnlyKnits(t *testing.T) {
	bb := testutil.Busybox(t)
	for _, noDrop := range []bool{false, true} {
		s := sandbox(t)
		if noDrop {
			s.WriteConfig(t, `{"ip-forward-no-drop": true}`)
		}
		if fwd := s.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(fwd) != "0" {
			t.Fatalf("the sandbox forwards already: ip_forward = %s", fwd)
		}
		s.MustRun(t, "ip", "netns", "add", "lan")
		s.MustRun(t, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", "lan")
		s.MustRun(t, "ip", "addr", "add", "203.0.113.129/25", "dev", "lan0")
		s.MustRun(t, "ip", "link", "set", "lan0", "up")
		for _, args := range [][]string{
			{"addr", "add", "203.0.113.130/25", "dev", "eth0"}, {"link", "set", "eth0", "up"}, {"link", "set", "lo", "up"},
			{"route", "add", "default", "via", "203.0.113.129"},
		} {
			s.MustRun(t, append([]string{"ip", "-n", "lan"}, args...)...)
		}
		// Two "virtual machines" on another program's bridge (libvirt's
		// virbr0, say): its frames between them, which br_netfilter
		// shows to the forward hook, and its routed traffic out are that
		// program's to judge, and pass.
		s.MustRun(t, "ip", "link", "add", "vmbr", "type", "bridge")
		s.MustRun(t, "ip", "addr", "add", "203.0.113.30/28", "dev", "vmbr")
		s.MustRun(t, "ip", "link", "set", "vmbr", "up")
		for i, vm := range []string{"vm1", "vm2"} {
			s.MustRun(t, "ip", "netns", "add", vm)
			s.MustRun(t, "ip", "link", "add", vm+"p", "master", "vmbr", "type", "veth", "peer", "name", "eth0", "netns", vm)
			s.MustRun(t, "ip", "link", "set", vm+"p", "up")
			s.MustRun(t, "ip", "-n", vm, "addr", "add", fmt.Sprintf("203.0.113.%d/28", 17+i), "dev", "eth0")
			s.MustRun(t, "ip", "-n", vm, "link", "set", "eth0", "up")
			s.MustRun(t, "ip", "-n", vm, "route", "add", "default", "via", "203.0.113.30")
		}
		s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ping", "-c1", "-W2", "198.51.100.2") // forwarding on, for knit
		for _, to := range []string{"203.0.113.18", "198.51.100.2"} {
			if r := s.Run("ip", "netns", "exec", "vm1", "ping", "-c1", "-W1", to); r.Code != 0 {
				t.Errorf("a namespace on another program's bridge no longer reaches %s once knit turned forwarding on: %s%s", to, r.Stdout, r.Stderr)
			}
		}
		r := s.Run("ip", "netns", "exec", "lan", "ping", "-c1", "-W1", "198.51.100.2")
		if noDrop && r.Code != 0 {
			t.Errorf("ip-forward-no-drop: the LAN does not reach the world through the host: %s%s", r.Stdout, r.Stderr)
		}
		if !noDrop && r.Code == 0 {
			t.Errorf("the LAN reaches the world through the host once knit turned forwarding on:\n%s", r.Stdout)
		}
		// And after a flush, the next command puts the drop back.
		if !noDrop {
			s.MustRun(t, "nft", "flush", "ruleset")
			s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ping", "-c1", "-W2", "198.51.100.2")
			if r := s.Run("ip", "netns", "exec", "lan", "ping", "-c1", "-W1", "198.51.100.2"); r.Code == 0 {
				t.Errorf("the LAN reaches the world through the host after a flush and a run:\n%s", r.Stdout)
			}
			// ip-forward-no-drop set since: the next command takes the drop back.
			s.WriteConfig(t, `{"ip-forward-no-drop": true}`)
			s.MustKnit(t, "run", "--rm", "--rootfs", bb, "true")
			if r := s.Run("ip", "netns", "exec", "lan", "ping", "-c1", "-W1", "198.51.100.2"); r.Code != 0 {
				t.Errorf("ip-forward-no-drop set after the drop was added: the LAN still does not reach the world: %s%s", r.Stdout, r.Stderr)
			}
		}
	}
	// A host that forwards on some interface of its own (ip_forward off,
	// the LAN's link on: a per-link setting) routes already: knit adds no
	// drop, and the LAN still reaches the world.
	s := sandbox(t)
	s.MustRun(t, "ip", "netns", "add", "lan")
	s.MustRun(t, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", "lan")
	s.MustRun(t, "ip", "addr", "add", "203.0.113.129/25", "dev", "lan0")
	s.MustRun(t, "ip", "link", "set", "lan0", "up")
	for _, args := range [][]string{
		{"addr", "add", "203.0.113.130/25", "dev", "eth0"}, {"link", "set", "eth0", "up"}, {"route", "add", "default", "via", "203.0.113.129"},
	} {
		s.MustRun(t, append([]string{"ip", "-n", "lan"}, args...)...)
	}
	s.MustRun(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/lan0/forwarding")
	s.MustKnit(t, "run", "--rm", "--rootfs", bb, "true")
	if r := s.Run("ip", "netns", "exec", "lan", "ping", "-c1", "-W1", "198.51.100.2"); r.Code != 0 {
		t.Errorf("a LAN its host routed (lan0's forwarding on) is cut off once knit turned forwarding on: %s%s", r.Stdout, r.Stderr)
	}
}

// A container is not its neighbours' IPv6 router (CVE-2020-13401's class):
// the router advertisements it sends on its bridge are dropped, so a
// neighbour gets neither a default route through it nor an address in its
// prefix, on a network without IPv6 (whose containers would otherwise
// gain IPv6 through it) as on one with.
func TestContainersCannotAdvertiseRoutes(t *testing.T) {
	rootfs, _ := toolRootfs(t, "rasend")
	s := sandbox(t)
	// The advertisements do reach the bridges: counted before knit's
	// chain (priority filter, -200) sees them.
	for _, cmd := range []string{"add table bridge probe", "add chain bridge probe pre { type filter hook prerouting priority -300; }",
		"add rule bridge probe pre icmpv6 type nd-router-advert counter"} {
		s.MustRun(t, "nft", cmd)
	}
	s.MustKnit(t, "network", "create", "--ipv6", "--subnet", "fd00:db8:78::/64", "six")
	for i, network := range []string{"bridge", "six"} {
		victim, rogue := "victim-"+network, "rogue-"+network
		s.MustKnit(t, "run", "-d", "--name", victim, "--network", network, "--rootfs", rootfs, "sleep", "600")
		s.MustKnit(t, "run", "-d", "--name", rogue, "--network", network, "--rootfs", rootfs, "sleep", "600")
		// Both host ends carry the group the guard matches.
		if ports := s.MustRun(t, "ip", "-o", "link", "show", "group", "1802398068"); strings.Count(ports, "\n") != 2*(i+1) {
			t.Fatalf("%s: host ends in the containers' group:\n%s", network, ports)
		}
		s.MustKnit(t, "exec", rogue, "rasend", "-i", "eth0", "-prefix", "2001:db8:1::/64", "-count", "3")
		if sent := nftCounter(t, s.MustRun(t, "nft", "list", "chain", "bridge", "probe", "pre")); sent != strconv.Itoa(3*(i+1)) {
			t.Fatalf("%s: %s advertisements reached the bridges, want %d", network, sent, 3*(i+1))
		}
		time.Sleep(300 * time.Millisecond) // the kernel acts on one at once; leave it time
		if routes := s.MustKnit(t, "exec", victim, "ip", "-6", "route", "show", "default"); strings.Contains(routes, "fe80:") {
			t.Errorf("%s: the neighbour's default route goes through the rogue container:\n%s", network, routes)
		}
		if addrs := s.MustKnit(t, "exec", victim, "ip", "-6", "addr", "show", "dev", "eth0"); strings.Contains(addrs, "2001:db8:1:") {
			t.Errorf("%s: the neighbour took an address in the rogue prefix:\n%s", network, addrs)
		}
	}
	// The control: without the guard's rules the same advertisements
	// give the neighbour the rogue's route (so the checks above can fail).
	s.MustRun(t, "nft", "flush", "chain", "bridge", "knit", "ra-guard")
	s.MustKnit(t, "exec", "rogue-bridge", "rasend", "-i", "eth0", "-prefix", "2001:db8:1::/64", "-count", "3")
	eventually(t, func() (string, error) {
		routes := s.MustKnit(t, "exec", "victim-bridge", "ip", "-6", "route", "show", "default")
		if !strings.Contains(routes, "fe80:") {
			return routes, fmt.Errorf("without the guard, the neighbour took no route from the rogue:\n%s", routes)
		}
		return routes, nil
	})
}

// nftCounter reads the packets of the first counter in an nft listing.
// nftCounters returns the packet counts of every counter in out, in order.
func nftCounters(t *testing.T, out string) []string {
	t.Helper()
	var n []string
	for _, part := range strings.Split(out, "counter packets ")[1:] {
		n = append(n, strings.Fields(part)[0])
	}
	return n
}

func nftCounter(t *testing.T, out string) string {
	t.Helper()
	i := strings.Index(out, "counter packets ")
	if i < 0 {
		t.Fatalf("no counter in:\n%s", out)
	}
	return strings.Fields(out[i+len("counter packets "):])[0]
}

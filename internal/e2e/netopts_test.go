package e2e

import (
	"errors"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/testutil"
)

// -o ip-masq=false on a user-defined network: its containers reach the
// world with their own address, and no masquerade rule names its subnet.
func TestNetworkWithoutMasquerade(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.81.0.0/24", "-o", "ip-masq=false", "plain")
	s.World("ip", "route", "add", "10.81.0.0/24", "via", "198.51.100.1")
	s.MustKnit(t, "run", "--rm", "--network", "plain", "--ip", "10.81.0.7", "--rootfs", bb, "ping", "-c1", "-W2", "203.0.113.1")
	if ct := s.MustRun(t, "conntrack", "-L", "-p", "icmp", "-d", "203.0.113.1"); !strings.Contains(ct, "dst=10.81.0.7") {
		t.Errorf("with ip-masq=false the world should answer 10.81.0.7:\n%s", ct)
	}
	if rules := s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, "ip saddr 10.81.0.0/24 oifname != ") {
		t.Errorf("masquerade rule for a network with ip-masq=false:\n%s", rules)
	}
}

// -o gateway-mode=routed, as Docker's gateway mode "routed": a host that
// routes the subnet to this one reaches the published ports of its
// containers on their own addresses, and no other port; a nat network,
// and the IPv4 side of one routed for IPv6 only, stay closed.
func TestRoutedNetwork(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.82.0.0/24", "-o", "gateway-mode=routed", "routed")
	s.MustKnit(t, "network", "create", "--subnet", "10.83.0.0/24", "natted")
	s.MustKnit(t, "network", "create", "--subnet", "10.84.0.0/24", "-o", "com.docker.network.bridge.gateway_mode_ipv6=routed", "v6routed")
	serve(t, s, bb, "open", "--network", "routed", "--ip", "10.82.0.5", "-p", "8085:80")
	serve(t, s, bb, "unpublished", "--network", "routed", "--ip", "10.82.0.6")
	serve(t, s, bb, "loopback", "--network", "routed", "--ip", "10.82.0.7", "-p", "127.0.0.1:8087:80")
	serve(t, s, bb, "closed", "--network", "natted", "--ip", "10.83.0.5")
	serve(t, s, bb, "v4nat", "--network", "v6routed", "--ip", "10.84.0.5")
	for _, subnet := range []string{"10.82.0.0/24", "10.83.0.0/24", "10.84.0.0/24"} {
		s.World("ip", "route", "add", subnet, "via", "198.51.100.1")
	}
	// Every server answers the host on its address (--ip was followed).
	for addr, name := range map[string]string{"10.82.0.6": "unpublished", "10.82.0.7": "loopback", "10.83.0.5": "closed", "10.84.0.5": "v4nat"} {
		reaches(t, s, nil, addr, 80, name)
	}
	reaches(t, s, world, "10.82.0.5", 80, "open")
	reaches(t, s, world, "198.51.100.1", 8085, "open") // the host port too
	blocked(t, s, world, "10.82.0.6", 80)
	// A port published on loopback is the host's only, routed or not.
	blocked(t, s, world, "10.82.0.7", 80)
	reaches(t, s, nil, "127.0.0.1", 8087, "loopback")
	blocked(t, s, world, "10.83.0.5", 80)
	blocked(t, s, world, "10.84.0.5", 80)
	// A ping gets in to a routed network, as with Docker, not to the others.
	if r := s.World("ping", "-c1", "-W2", "10.82.0.6"); r.Code != 0 {
		t.Errorf("the world's ping of a container on a routed network: %s%s", r.Stdout, r.Stderr)
	}
	for _, addr := range []string{"10.83.0.5", "10.84.0.5"} {
		if r := s.World("ping", "-c1", "-W1", addr); r.Code == 0 {
			t.Errorf("the world pings %s, on a network not routed for IPv4:\n%s", addr, r.Stdout)
		}
	}
	// Routed containers leave with their own address.
	s.MustKnit(t, "exec", "open", "ping", "-c1", "-W2", "203.0.113.1")
	if ct := s.MustRun(t, "conntrack", "-L", "-p", "icmp", "-d", "203.0.113.1"); !strings.Contains(ct, "dst=10.82.0.5") {
		t.Errorf("a routed container is masqueraded:\n%s", ct)
	}
}

// -o icc=false on a user-defined network isolates its containers from
// each other but not from the host's published ports.
func TestNetworkICCOff(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	// An administrator who keeps bridged frames away from the firewall
	// (virtual machines' bridges): knit leaves that as it is, and asks
	// br_netfilter of its own icc=false bridge only.
	for _, p := range []string{"/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"} {
		s.MustRun(t, "sh", "-c", "echo 0 > "+p)
	}
	defer func() {
		if v := s.MustRun(t, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"); strings.TrimSpace(v) != "0" {
			t.Errorf("net.bridge.bridge-nf-call-iptables = %s after knit, want the administrator's 0", v)
		}
	}()
	s.MustKnit(t, "network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "quiet")
	serve(t, s, bb, "srv", "--network", "quiet", "-p", "8090:80")
	s.MustKnit(t, "run", "-d", "--name", "peer", "--network", "quiet", "--rootfs", bb, "sleep", "300")
	reaches(t, s, nil, ipOn(t, s, "srv", "quiet"), 80, "srv") // up, at that address
	blocked(t, s, []string{knit, "exec", "peer"}, ipOn(t, s, "srv", "quiet"), 80)
	reaches(t, s, world, "198.51.100.1", 8090, "srv")
}

// A port published on an IPv6 host address of a dual-stack network is
// reached over IPv6 from another host; -p without an address publishes
// on both families.
func TestIPv6PublishedPort(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	// Give the sandbox and the world IPv6 addresses (documentation range).
	s.MustRun(t, "ip", "addr", "add", "2001:db8:51::1/64", "dev", "wan0", "nodad")
	s.World("ip", "addr", "add", "2001:db8:51::2/64", "dev", "eth0", "nodad")
	s.MustKnit(t, "network", "create", "--ipv6", "--subnet", "fd00:db8:2::/64", "dual6")
	serve(t, s, bb, "web6", "--network", "dual6", "-p", "[2001:db8:51::1]:8086:80", "-p", "8087:80")
	reaches(t, s, world, "2001:db8:51::1", 8086, "web6")
	reaches(t, s, world, "2001:db8:51::1", 8087, "web6")
	reaches(t, s, world, "198.51.100.1", 8087, "web6")
	blocked(t, s, world, "198.51.100.1", 8086)
	// In natural order, as docker port's, not in the order of the -p.
	if ports, want := s.MustKnit(t, "port", "web6"), "80/tcp -> 0.0.0.0:8087\n80/tcp -> [2001:db8:51::1]:8086\n80/tcp -> [::]:8087\n"; ports != want {
		t.Errorf("knit port web6:\n%s\nwant\n%s", ports, want)
	}
	// From the host, [::1]:8087 cannot be forwarded (no ::1 source leaves
	// the host): it is refused at once, so that a client trying localhost
	// moves on to 127.0.0.1, which answers.
	if r := s.Run("timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/::1/8087"); r.Code != 1 {
		t.Errorf("connect to [::1]:8087 from the host: exit %d (124: it hung), want refused at once\n%s", r.Code, r.Stderr)
	}
	reaches(t, s, nil, "127.0.0.1", 8087, "web6")
	// A default host address of 0.0.0.0 (config "ip", -o host-ip) is
	// every address, [::] included, as moby has it.
	s.MustKnit(t, "network", "create", "--ipv6", "--subnet", "fd00:db8:3::/64", "-o", "host-ip=0.0.0.0", "dual0")
	s.MustKnit(t, "run", "-d", "--name", "any0", "--network", "dual0", "-p", "8088:80", "--rootfs", bb, "sleep", "300")
	if ports, want := s.MustKnit(t, "port", "any0"), "80/tcp -> 0.0.0.0:8088\n80/tcp -> [::]:8088\n"; ports != want {
		t.Errorf("knit port any0 (host-ip 0.0.0.0):\n%s\nwant\n%s", ports, want)
	}
}

// An IPv6-only network (--ipv4=false, as Docker 28's): its containers get
// an IPv6 address only, with a MAC that follows it, and names through the
// embedded server on the IPv6 gateway, whose other names go to the host's
// IPv4 server from the host; -p without an address publishes on [::]
// only; IPv4 forwarding is not turned on for it.
func TestIPv6OnlyNetwork(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	_, bin := dnsRootfs(t)
	s.MustRun(t, "ip", "addr", "add", "2001:db8:52::1/64", "dev", "wan0", "nodad")
	s.World("ip", "addr", "add", "2001:db8:52::2/64", "dev", "eth0", "nodad")
	s.Start(t, "ip", "netns", "exec", "world", bin, "serve", "-listen", "198.51.100.2:53", "ext.test=203.0.113.7")
	s.MustKnit(t, "network", "create", "--ipv4=false", "--ipv6", "--subnet", "fd00:db8:6::/64", "six")
	if got := s.MustKnit(t, "network", "inspect", "-f", `{{.EnableIPv4}} {{.EnableIPv6}} {{range .IPAM.Config}}{{.Subnet}}{{end}}`, "six"); got != "false true fd00:db8:6::/64\n" {
		t.Errorf("inspect six: %q", got)
	}
	if got := s.MustKnit(t, "network", "ls", "-f", "name=six", "--format", "{{.Name}} {{.IPv4}} {{.IPv6}}"); got != "six false true\n" {
		t.Errorf("network ls: %q", got)
	}
	serve(t, s, bb, "web", "--network", "six", "-p", "8089:80")
	s.MustKnit(t, "run", "-d", "--name", "cli", "--network", "six", "--ip6", "fd00:db8:6::99", "--rootfs", bb, "sleep", "300")
	addrs := s.MustKnit(t, "exec", "cli", "ip", "-o", "addr", "show", "dev", "eth0")
	if strings.Contains(addrs, "inet ") || !strings.Contains(addrs, "inet6 fd00:db8:6::99/64") {
		t.Errorf("cli's addresses on an IPv6-only network:\n%s", addrs)
	}
	mac := inspectField(t, s, "cli", "{{.NetworkSettings.Networks.six.MacAddress}}")
	reaches(t, s, world, "2001:db8:52::1", 8089, "web")
	blocked(t, s, world, "198.51.100.1", 8089)
	if ports := s.MustKnit(t, "port", "web"); ports != "80/tcp -> [::]:8089\n" {
		t.Errorf("knit port web: %q, want [::] only", ports)
	}
	eventually(t, func() (string, error) {
		out := s.Knit("exec", "cli", "nslookup", "web")
		if !strings.Contains(out.Stdout, "fd00:db8:6::") {
			return out.Stdout + out.Stderr, errors.New("web not resolved to its IPv6 address")
		}
		return out.Stdout, nil
	})
	if out := s.Knit("exec", "cli", "nslookup", "ext.test"); !strings.Contains(out.Stdout, "203.0.113.7") {
		t.Errorf("an outside name through the host's IPv4 server:\n%s%s", out.Stdout, out.Stderr)
	}
	if resolv := s.MustKnit(t, "exec", "cli", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "nameserver fd00:db8:6::1\n") || !strings.Contains(resolv, "# ExtServers: [host(198.51.100.2)]") {
		t.Errorf("cli's resolv.conf:\n%s", resolv)
	}
	s.MustKnit(t, "exec", "cli", "ping", "-c", "1", "-W", "2", "2001:db8:52::2") // out, masqueraded
	if v := strings.TrimSpace(s.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward")); v != "0" {
		t.Errorf("net.ipv4.ip_forward = %s after an IPv6-only network", v)
	}
	// On the IPv6-only network first and an IPv4 one second, each family's
	// ports go through the network of its default route, as Docker 28's;
	// once the IPv4 network is left, the port is the container's on [::]
	// only, and free on IPv4.
	s.MustKnit(t, "network", "create", "--subnet", "10.96.0.0/24", "four")
	serve(t, s, bb, "both", "--network", "six", "--network", "four", "-p", "8091:80")
	if ports := s.MustKnit(t, "port", "both"); ports != "80/tcp -> 0.0.0.0:8091\n80/tcp -> [::]:8091\n" {
		t.Errorf("knit port both: %q", ports)
	}
	reaches(t, s, world, "198.51.100.1", 8091, "both")
	reaches(t, s, world, "2001:db8:52::1", 8091, "both")
	s.MustKnit(t, "network", "disconnect", "four", "both")
	if ports := s.MustKnit(t, "port", "both"); ports != "80/tcp -> [::]:8091\n" {
		t.Errorf("knit port both after leaving its IPv4 network: %q", ports)
	}
	blocked(t, s, world, "198.51.100.1", 8091)
	reaches(t, s, world, "2001:db8:52::1", 8091, "both")
	if r := s.Knit("run", "--rm", "--network", "six", "-p", "[::]:8091:80", "--rootfs", bb, "true"); r.Code == 0 || !strings.Contains(r.Stderr, "both") {
		t.Errorf("[::]:8091, still both's, given to another: exit %d, %s", r.Code, r.Stderr)
	}
	serve(t, s, bb, "next", "-p", "0.0.0.0:8091:80")
	reaches(t, s, world, "198.51.100.1", 8091, "next")
	// The same address, the same MAC, so that neighbours' caches hold.
	s.MustKnit(t, "rm", "-f", "cli")
	s.MustKnit(t, "run", "-d", "--name", "cli2", "--network", "six", "--ip6", "fd00:db8:6::99", "--rootfs", bb, "sleep", "300")
	if again := inspectField(t, s, "cli2", "{{.NetworkSettings.Networks.six.MacAddress}}"); again != mac {
		t.Errorf("the address given again got MAC %s, was %s", again, mac)
	}
	// Refused: an IPv4 address or port (the network's own refusals are
	// TestBadInputLeavesStateUnchanged's).
	for _, bad := range [][]string{
		{"run", "--rm", "--network", "six", "--ip", "10.99.0.5", "--rootfs", bb, "true"},
		{"run", "--rm", "--network", "six", "-p", "127.0.0.1:8090:80", "--rootfs", bb, "true"},
	} {
		if r := s.Knit(bad...); r.Code == 0 {
			t.Errorf("%q: exit 0", bad)
		}
	}
}

// -o host-ip: ports of the network's containers are published on that
// host address when -p names none.
func TestNetworkHostIP(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "-o", "host-ip=127.0.0.1", "local")
	serve(t, s, bb, "lweb", "--network", "local", "-p", "8096:80")
	if p := strings.TrimSpace(s.MustKnit(t, "port", "lweb")); p != "80/tcp -> 127.0.0.1:8096" {
		t.Errorf("knit port lweb = %q, want 80/tcp -> 127.0.0.1:8096", p)
	}
	reaches(t, s, nil, "127.0.0.1", 8096, "lweb")
	blocked(t, s, world, "198.51.100.1", 8096)
}

// An MTU below IPv6's 1280 has no IPv6 on the links (the kernel refuses
// to set up its address generation): an IPv4-only network works anyway,
// as Docker's does, and a ping across the bridge gets through.
func TestSmallMTU(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "-o", "mtu=1200", "small")
	serve(t, s, bb, "srv", "--network", "small")
	if out := s.MustKnit(t, "run", "--rm", "--network", "small", "--rootfs", bb, "sh", "-c", "ip -o link show eth0; ping -c1 -W2 srv >/dev/null && echo reached"); !strings.Contains(out, "mtu 1200") || !strings.Contains(out, "reached") {
		t.Errorf("a container on an MTU 1200 network: %q", out)
	}
}

// IPv6 on knit's bridges, as Docker sets it: the host takes no router
// advertisement from a bridge of containers (any of them could make
// itself the host's IPv6 router: CVE-2020-13401), and an IPv6 network
// works on a host whose all.disable_ipv6=1 keeps IPv6 off new links.
func TestBridgeIPv6Settings(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustRun(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6")
	s.MustKnit(t, "network", "create", "--ipv6", "--subnet", "fd00:db8:77::/64", "-o", "bridge=brsix", "six")
	out := s.MustKnit(t, "run", "--rm", "--network", "six", "--rootfs", bb, "sh", "-c", "ping -c1 -W2 fd00:db8:77::1 >/dev/null && echo reached")
	if !strings.Contains(out, "reached") {
		t.Errorf("a container on an IPv6 network, the host's IPv6 off on new links: %q", out)
	}
	s.MustKnit(t, "run", "--rm", "--rootfs", bb, "true") // knit0 too
	for _, br := range []string{"knit0", "brsix"} {
		if v := strings.TrimSpace(s.MustRun(t, "cat", "/proc/sys/net/ipv6/conf/"+br+"/accept_ra")); v != "0" {
			t.Errorf("%s accept_ra = %s, want 0", br, v)
		}
	}
}

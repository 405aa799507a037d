package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/testutil"
)

// cniVersions are the spec versions knit advertises.
var cniVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// cniHost is a sandbox set up for CNI clients: knit installed as the
// plugin "knit" by `knit cni install`, a directory of network
// configurations, and Debian's reference plugins on the plugin path.
type cniHost struct {
	s       *testutil.Sandbox
	confDir string // NETCONFPATH
	path    string // CNI_PATH
}

// cniSandbox skips the test unless cnitool is installed (.ci/run builds it).
func cniSandbox(t *testing.T) *cniHost {
	t.Helper()
	if _, err := exec.LookPath("cnitool"); err != nil {
		t.Skip("needs cnitool: GOBIN=/usr/local/bin go install github.com/containernetworking/cni/cnitool@v1.3.1 (as .ci/run does)")
	}
	s := sandbox(t)
	h := &cniHost{s: s, confDir: filepath.Join(s.Dir(), "net.d")}
	bin := filepath.Join(s.Dir(), "cni-bin")
	h.path = bin + ":/usr/lib/cni"
	// cnitool keeps libcni's result cache in /var/lib/cni and cannot be
	// told otherwise: a tmpfs there, in the sandbox's mount namespace,
	// keeps it off the host. (mkdir may leave the empty directory on the
	// host, as scripts/sandbox does with /run/netns.)
	s.MustRun(t, "sh", "-c", "mkdir -p "+h.confDir+" /var/lib/cni && mount -t tmpfs knit-cni-cache /var/lib/cni")
	if got := strings.TrimSpace(s.MustKnit(t, "cni", "install", "--dir", bin)); got != bin+"/knit" {
		t.Fatalf("knit cni install printed %q", got)
	}
	return h
}

// needPlugins skips the test unless Debian's reference plugins are there.
func needPlugins(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := os.Stat("/usr/lib/cni/" + n); err != nil {
			t.Skipf("needs /usr/lib/cni/%s: apt-get install containernetworking-plugins", n)
		}
	}
}

// conflist writes a network configuration list NAME with the given
// cniVersion and plugins (JSON objects).
func (h *cniHost) conflist(t *testing.T, name, version string, plugins ...string) {
	t.Helper()
	conf := fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[%s]}`, version, name, strings.Join(plugins, ","))
	h.s.MustRun(t, "sh", "-c", `printf '%s' "$1" > "$2"`, "sh", conf, filepath.Join(h.confDir, name+".conflist"))
}

// netns makes a network namespace inside the sandbox and returns its path.
func (h *cniHost) netns(t *testing.T, name string) string {
	t.Helper()
	h.s.MustRun(t, "ip", "netns", "add", name)
	return "/run/netns/" + name
}

// cnitool runs `cnitool OP NET NETNS` with extra environment (CAP_ARGS=,
// CNI_ARGS=).
func (h *cniHost) cnitool(op, net, netns string, env ...string) testutil.Result {
	args := append([]string{"env", "NETCONFPATH=" + h.confDir, "CNI_PATH=" + h.path}, env...)
	return h.s.Run(append(args, "cnitool", op, net, netns)...)
}

func (h *cniHost) mustCnitool(t *testing.T, op, net, netns string, env ...string) string {
	t.Helper()
	r := h.cnitool(op, net, netns, env...)
	if r.Code != 0 {
		t.Fatalf("cnitool %s %s %s: exit %d\n%s%s", op, net, netns, r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// cniResult is an ADD result of any version.
type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	Interfaces []struct {
		Name, Mac, Sandbox string
	} `json:"interfaces"`
	IPs []struct {
		Version   string `json:"version"`
		Interface *int   `json:"interface"`
		Address   string `json:"address"`
		Gateway   string `json:"gateway"`
	} `json:"ips"`
	Routes []struct{ Dst, GW string } `json:"routes"`
	DNS    struct {
		Nameservers []string `json:"nameservers"`
	} `json:"dns"`
}

func parseResult(t *testing.T, out string) cniResult {
	t.Helper()
	var r cniResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("result is not JSON: %v\n%s", err, out)
	}
	return r
}

// ifaceIndex returns the index of interface name in sandbox netns.
func (r cniResult) ifaceIndex(name, netns string) int {
	return slices.IndexFunc(r.Interfaces, func(i struct{ Name, Mac, Sandbox string }) bool {
		return i.Name == name && i.Sandbox == netns
	})
}

// hostIf is the result's host-side interface (the one without sandbox).
func (r cniResult) hostIf(t *testing.T) string {
	t.Helper()
	for _, i := range r.Interfaces {
		if i.Sandbox == "" && strings.HasPrefix(i.Name, "veth") {
			return i.Name
		}
	}
	t.Fatalf("no host veth in the result: %+v", r.Interfaces)
	return ""
}

// attached asserts that netns has eth0 with addr (CIDR) and a default route
// via gw, and that the bridge has a port.
func (h *cniHost) attached(t *testing.T, netns, addr, gw, bridge string) {
	t.Helper()
	name := filepath.Base(netns)
	if out := h.s.MustRun(t, "ip", "-n", name, "-o", "addr", "show", "eth0"); !strings.Contains(out, "inet "+addr+" ") {
		t.Errorf("%s: eth0 lacks %s:\n%s", name, addr, out)
	}
	if out := h.s.MustRun(t, "ip", "-n", name, "route", "show", "default"); !strings.Contains(out, "default via "+gw+" dev eth0") {
		t.Errorf("%s: no default route via %s:\n%s", name, gw, out)
	}
	if out := h.s.MustRun(t, "ip", "-o", "link", "show", "master", bridge); out == "" {
		t.Errorf("bridge %s has no port", bridge)
	}
}

// detached asserts that nothing of addr's attachment is left on bridge:
// no port, no firewall element, no attachment record.
func (h *cniHost) detached(t *testing.T, bridge, addr string) {
	t.Helper()
	eventually(t, func() (string, error) {
		if l := h.s.MustRun(t, "ip", "-o", "link", "show", "master", bridge); l != "" {
			return "", fmt.Errorf("veths remain on %s:\n%s", bridge, l)
		}
		return "", nil
	})
	if rules := h.s.Run("nft", "list", "table", "inet", "knit"); rules.Code != 0 && !strings.Contains(rules.Stderr, "No such file") {
		t.Errorf("nft list table inet knit: exit %d: %s", rules.Code, rules.Stderr)
	} else if strings.Contains(rules.Stdout, addr+" ") || strings.Contains(rules.Stdout, addr+",") {
		t.Errorf("firewall elements of %s remain:\n%s", addr, rules.Stdout)
	}
	if ls := h.s.MustKnit(t, "cni", "ls"); strings.Contains(ls, addr+"/") {
		t.Errorf("knit cni ls still lists %s:\n%s", addr, ls)
	}
}

// Every advertised version through cnitool: ADD gives an address of the
// knit network and a default route, CHECK passes (0.4.0 on) and notices
// damage, STATUS answers (1.1.0), DEL leaves nothing and is repeatable,
// and the released address is the next ADD's.
func TestCNIToolEveryVersion(t *testing.T) {
	h := cniSandbox(t)
	for i, v := range cniVersions {
		t.Run(v, func(t *testing.T) {
			name, bridge := "v"+strings.ReplaceAll(v, ".", ""), "kv"+strings.ReplaceAll(v, ".", "")
			subnet, addr, gw := fmt.Sprintf("10.80.%d.0/24", i), fmt.Sprintf("10.80.%d.2", i), fmt.Sprintf("10.80.%d.1", i)
			h.conflist(t, name, v, fmt.Sprintf(`{"type":"knit","subnet":%q,"bridge":%q}`, subnet, bridge))
			ns := h.netns(t, name)
			r := parseResult(t, h.mustCnitool(t, "add", name, ns))
			if r.CNIVersion != v {
				t.Errorf("result cniVersion %q, want %q", r.CNIVersion, v)
			}
			idx := r.ifaceIndex("eth0", ns)
			if idx < 0 || len(r.IPs) != 1 || r.IPs[0].Address != addr+"/24" || r.IPs[0].Gateway != gw ||
				r.IPs[0].Interface == nil || *r.IPs[0].Interface != idx {
				t.Errorf("result interfaces %+v ips %+v: want %s/24 via %s on eth0 in %s", r.Interfaces, r.IPs, addr, gw, ns)
			}
			if wantVersionField := v < "1.0.0"; (r.IPs[0].Version == "4") != wantVersionField {
				t.Errorf("ips[0].version = %q in a %s result", r.IPs[0].Version, v)
			}
			if len(r.Routes) != 1 || r.Routes[0].Dst != "0.0.0.0/0" || r.Routes[0].GW != gw || !slices.Equal(r.DNS.Nameservers, []string{gw}) {
				t.Errorf("routes %+v dns %+v", r.Routes, r.DNS)
			}
			h.attached(t, ns, addr+"/24", gw, bridge)
			if ls := h.s.MustKnit(t, "network", "ls", "--format", "{{.Name}}"); !slices.Contains(strings.Fields(ls), name) {
				t.Errorf("knit network ls lacks %s:\n%s", name, ls)
			}
			if v >= "0.4.0" {
				h.mustCnitool(t, "check", name, ns)
				h.s.MustRun(t, "ip", "-n", name, "link", "set", "eth0", "down")
				if c := h.cnitool("check", name, ns); c.Code == 0 || !strings.Contains(c.Stderr, "interface eth0 is down") {
					t.Errorf("check of a downed eth0: exit %d, %s", c.Code, c.Stderr)
				}
			} else if c := h.cnitool("check", name, ns); c.Code == 0 {
				t.Errorf("check at %s succeeded; libcni should refuse it", v)
			}
			if v == "1.1.0" {
				h.mustCnitool(t, "status", name, ns)
			}
			h.mustCnitool(t, "del", name, ns)
			h.detached(t, bridge, addr)
			h.mustCnitool(t, "del", name, ns)
			r = parseResult(t, h.mustCnitool(t, "add", name, ns))
			if len(r.IPs) != 1 || r.IPs[0].Address != addr+"/24" {
				t.Errorf("ADD after DEL got %+v, want the released %s", r.IPs, addr)
			}
			h.mustCnitool(t, "del", name, ns)
		})
	}
}

// A CNI attachment and a `knit run` container share the network: one
// IPAM, traffic between them, and the embedded DNS answering the
// attachment's K8S_POD_NAME.
func TestCNISharesTheNetworkWithKnitRun(t *testing.T) {
	h := cniSandbox(t)
	bb := testutil.Busybox(t)
	h.conflist(t, "shared", "1.1.0", `{"type":"knit","subnet":"10.81.0.0/24"}`)
	ns := h.netns(t, "pod")
	h.mustCnitool(t, "add", "shared", ns, "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=cnipod")
	h.s.MustRun(t, "ip", "-n", "pod", "link", "set", "lo", "up")
	h.s.MustKnit(t, "run", "-d", "--name", "peer", "--network", "shared", "--rootfs", bb, "sleep", "300")
	if ip := ipOn(t, h.s, "peer", "shared"); ip != "10.81.0.3" {
		t.Errorf("knit run on the CNI network got %s, want 10.81.0.3 after the attachment's .2", ip)
	}
	h.s.MustKnit(t, "exec", "peer", "ping", "-c", "1", "-W", "2", "10.81.0.2")
	h.s.MustRun(t, "ip", "netns", "exec", "pod", "ping", "-c", "1", "-W", "2", "10.81.0.3")
	eventually(t, func() (string, error) {
		r := h.s.Knit("exec", "peer", "nslookup", "cnipod", "10.81.0.1")
		if r.Code != 0 || !strings.Contains(r.Stdout, "10.81.0.2") {
			return "", fmt.Errorf("nslookup cnipod: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
		}
		return r.Stdout, nil
	})
	// An outside name the pod asks goes upstream from the pod's own
	// namespace (its address, before the masquerade), as a knit
	// container's.
	_, bin := dnsRootfs(t)
	h.s.Start(t, "ip", "netns", "exec", "world", bin, "serve", "-listen", "198.51.100.2:53", "outside.test=203.0.113.7")
	for _, cmd := range []string{"add table ip probe", "add chain ip probe out { type filter hook postrouting priority 0; }",
		"add rule ip probe out ip saddr 10.81.0.2 ip daddr 198.51.100.2 udp dport 53 counter"} {
		h.s.MustRun(t, "nft", cmd)
	}
	if out := h.s.MustRun(t, "ip", "netns", "exec", "pod", bin, "query", "-server", "10.81.0.1:53", "outside.test"); !strings.Contains(out, "A 203.0.113.7") {
		t.Errorf("the pod asks an outside name: %q", out)
	}
	if n := nftCounter(t, h.s.MustRun(t, "nft", "list", "chain", "ip", "probe", "out")); n == "0" {
		t.Error("the pod's outside name did not go upstream from the pod's namespace")
	}
	h.mustCnitool(t, "del", "shared", ns)
	// The server still answers, for a name it no longer knows, from
	// upstream (the world's server does not know it: NXDOMAIN).
	if r := h.s.Knit("exec", "peer", "nslookup", "cnipod", "10.81.0.1"); strings.Contains(r.Stdout, "10.81.0.2") || !strings.Contains(r.Stdout+r.Stderr, "NXDOMAIN") {
		t.Errorf("cnipod after DEL (want NXDOMAIN, from the upstream):\n%s%s", r.Stdout, r.Stderr)
	}
}

// webRoot is a directory in the sandbox whose /hostname reads name, for
// busybox httpd.
func webRoot(t *testing.T, h *cniHost, name string) string {
	t.Helper()
	dir := filepath.Join(h.s.Dir(), "www-"+name)
	h.s.MustRun(t, "sh", "-c", `mkdir -p "$1" && echo "$2" > "$1/hostname"`, "sh", dir, name)
	return dir
}

// Ports published through the portMappings capability are reachable from
// the world, from the host on 127.0.0.1 and by hairpin, like knit run -p;
// a DEL whose configuration no longer sends portMappings still removes
// them.
func TestCNIPublishedPorts(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "pub", "1.1.0", `{"type":"knit","subnet":"10.82.0.0/24","bridge":"kpub","capabilities":{"portMappings":true}}`)
	ns := h.netns(t, "web")
	client := h.netns(t, "client")
	caps := `CAP_ARGS={"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}`
	h.mustCnitool(t, "add", "pub", ns, caps)
	h.mustCnitool(t, "add", "pub", client)
	h.s.Start(t, "ip", "netns", "exec", "web", "busybox", "httpd", "-f", "-p", "80", "-h", webRoot(t, h, "cniweb"))
	reaches(t, h.s, world, "198.51.100.1", 8080, "cniweb")
	reaches(t, h.s, nil, "198.51.100.1", 8080, "cniweb")
	reaches(t, h.s, nil, "127.0.0.1", 8080, "cniweb")
	reaches(t, h.s, []string{"ip", "netns", "exec", "client"}, "198.51.100.1", 8080, "cniweb") // hairpin
	reaches(t, h.s, []string{"ip", "netns", "exec", "web"}, "198.51.100.1", 8080, "cniweb")    // hairpin to itself
	h.mustCnitool(t, "check", "pub", ns, caps)

	// The runtime lost the capability arguments (and its cache): knit's
	// record is enough.
	h.conflist(t, "pub", "1.1.0", `{"type":"knit","subnet":"10.82.0.0/24","bridge":"kpub"}`)
	h.s.MustRun(t, "sh", "-c", "rm -rf /var/lib/cni/*")
	h.mustCnitool(t, "del", "pub", ns)
	blocked(t, h.s, world, "198.51.100.1", 8080)
	if rules := h.s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, "8080") || strings.Contains(rules, "10.82.0.2 ") {
		t.Errorf("port elements remain after DEL:\n%s", rules)
	}
	// The host port is free for the next ADD.
	h.conflist(t, "pub", "1.1.0", `{"type":"knit","subnet":"10.82.0.0/24","bridge":"kpub","capabilities":{"portMappings":true}}`)
	h.mustCnitool(t, "add", "pub", ns, caps)
	reaches(t, h.s, world, "198.51.100.1", 8080, "cniweb")
}

// DEL needs nothing but knit's record: it works after the namespace is
// gone and when repeated, and frees the address.
func TestCNIDelAfterNamespaceIsGone(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "gone", "1.0.0", `{"type":"knit","subnet":"10.83.0.0/24","bridge":"kgone","capabilities":{"portMappings":true}}`)
	ns := h.netns(t, "a")
	h.mustCnitool(t, "add", "gone", ns, `CAP_ARGS={"portMappings":[{"hostPort":8081,"containerPort":80}]}`)
	h.s.MustRun(t, "ip", "netns", "del", "a")
	h.mustCnitool(t, "del", "gone", ns)
	h.detached(t, "kgone", "10.83.0.2")
	if rules := h.s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, "8081") {
		t.Errorf("port elements remain:\n%s", rules)
	}
	h.mustCnitool(t, "del", "gone", ns)
	ns = h.netns(t, "b")
	if r := parseResult(t, h.mustCnitool(t, "add", "gone", ns)); len(r.IPs) != 1 || r.IPs[0].Address != "10.83.0.2/24" {
		t.Errorf("the next ADD got %+v, want the freed 10.83.0.2", r.IPs)
	}
}

// ADD of a container whose host veth vanished repairs instead of failing.
func TestCNIAddRepairs(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "fix", "1.1.0", `{"type":"knit","subnet":"10.84.0.0/24","bridge":"kfix"}`)
	ns := h.netns(t, "a")
	r := parseResult(t, h.mustCnitool(t, "add", "fix", ns))
	h.s.MustRun(t, "ip", "link", "del", r.hostIf(t))
	h.mustCnitool(t, "add", "fix", ns)
	h.attached(t, ns, "10.84.0.2/24", "10.84.0.1", "kfix")
	h.mustCnitool(t, "check", "fix", ns)
	if ls := h.s.MustKnit(t, "cni", "ls"); strings.Count(ls, "10.84.0.") != 1 {
		t.Errorf("one attachment expected:\n%s", ls)
	}
	h.mustCnitool(t, "del", "fix", ns)

}

// ADD of an interface that exists in the namespace fails, as the spec
// says it MUST: an ADD repeated leaves the live attachment as it was (the
// same link, the same address, CHECK passes, one record), and an
// interface knit did not make is left alone, with nothing recorded or
// attached. After a DEL the ADD works again.
func TestCNIAddRefusesAnInterfaceThatExists(t *testing.T) {
	h := cniSandbox(t)
	conf := `{"type":"knit","subnet":"10.71.0.0/24","bridge":"kexist"}`
	h.conflist(t, "exist", "1.1.0", conf)
	ns := h.netns(t, "a")
	h.mustCnitool(t, "add", "exist", ns)
	index := func() string {
		return strings.Fields(h.s.MustRun(t, "ip", "-n", "a", "-o", "link", "show", "eth0"))[0]
	}
	before := index()
	if c := h.cnitool("add", "exist", ns); c.Code == 0 || !strings.Contains(c.Stderr, "interface eth0 of container") ||
		!strings.Contains(c.Stderr, "already exists") || !strings.Contains(c.Stderr, "DEL it first") {
		t.Errorf("ADD repeated: exit %d\n%s", c.Code, c.Stderr)
	}
	if after := index(); after != before {
		t.Errorf("ADD repeated made eth0 again: index %s, was %s", after, before)
	}
	h.attached(t, ns, "10.71.0.2/24", "10.71.0.1", "kexist")
	h.mustCnitool(t, "check", "exist", ns)
	if ls := h.s.MustKnit(t, "cni", "ls"); strings.Count(ls, "10.71.0.") != 1 {
		t.Errorf("one attachment expected:\n%s", ls)
	}
	h.mustCnitool(t, "del", "exist", ns)
	h.mustCnitool(t, "add", "exist", ns)
	h.attached(t, ns, "10.71.0.2/24", "10.71.0.1", "kexist")

	// Someone else's eth0: the code is knit's conflict, and nothing moves.
	h.netns(t, "b")
	h.s.MustRun(t, "ip", "-n", "b", "link", "add", "eth0", "type", "veth", "peer", "name", "theirs")
	status := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"exist",%s`, strings.TrimPrefix(conf, "{"))
	code, out := h.plugin(t, status, "CNI_COMMAND=ADD", "CNI_CONTAINERID=other", "CNI_IFNAME=eth0", "CNI_NETNS=/run/netns/b")
	if code != 101 || !strings.Contains(out, "is not this container's") {
		t.Errorf("ADD over a foreign eth0: code %d, want 101\n%s", code, out)
	}
	if ls := h.s.MustKnit(t, "cni", "ls"); strings.Count(ls, "10.71.0.") != 1 {
		t.Errorf("the refused ADD left a record:\n%s", ls)
	}
	if ports := h.s.MustRun(t, "ip", "-o", "link", "show", "master", "kexist"); strings.Count(ports, "\n") != 1 {
		t.Errorf("the refused ADD left a bridge port:\n%s", ports)
	}
	if out := h.s.MustRun(t, "ip", "-n", "b", "-o", "link", "show", "eth0"); !strings.Contains(out, "eth0@theirs") {
		t.Errorf("the foreign eth0 changed:\n%s", out)
	}

	// The same namespace through another path (a bind mount of it) is the
	// same namespace: the repeated ADD is refused there too.
	env := func(id, netns string) []string {
		return []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + id, "CNI_IFNAME=eth0", "CNI_NETNS=" + netns}
	}
	h.netns(t, "c")
	if code, out := h.plugin(t, status, env("moved", "/run/netns/c")...); code != 0 {
		t.Fatalf("ADD into c: code %d\n%s", code, out)
	}
	alias := filepath.Join(h.s.Dir(), "c-again")
	h.s.MustRun(t, "sh", "-c", `touch "$1" && mount --bind /run/netns/c "$1"`, "sh", alias)
	inC := h.s.MustRun(t, "ip", "-n", "c", "-o", "link", "show", "eth0")
	if code, out := h.plugin(t, status, env("moved", alias)...); code != 101 || !strings.Contains(out, "of container moved already exists") {
		t.Errorf("ADD repeated through another path of the namespace: code %d, want 101\n%s", code, out)
	}
	// The container ID reused for another namespace that has an eth0 of
	// someone else's: refused, and the attachment in c is left whole.
	h.netns(t, "d")
	h.s.MustRun(t, "ip", "-n", "d", "link", "add", "eth0", "type", "veth", "peer", "name", "theirs")
	if code, out := h.plugin(t, status, env("moved", "/run/netns/d")...); code != 101 || !strings.Contains(out, "is not this container's") {
		t.Errorf("ADD of a reused container ID over a foreign eth0: code %d, want 101\n%s", code, out)
	}
	if after := h.s.MustRun(t, "ip", "-n", "c", "-o", "link", "show", "eth0"); after != inC {
		t.Errorf("the attachment in c changed:\n%s\nwas\n%s", after, inC)
	}
	if ls := h.s.MustKnit(t, "cni", "ls"); strings.Count(ls, "10.71.0.") != 2 {
		t.Errorf("two attachments expected (a's and c's):\n%s", ls)
	}
	// An ADD killed before its veth (its record half-made), in a namespace
	// where someone has since made an eth0: the next ADD of that container
	// removes its own half-made record and refuses, naming the eth0 as
	// not this container's.
	h.netns(t, "f")
	trace := filepath.Join(h.s.Dir(), "trace-cut")
	if code, out := h.plugin(t, status, append(env("probe", "/run/netns/f"), "KNIT_CRASH_TRACE="+trace)...); code != 0 {
		t.Fatalf("ADD of probe: code %d\n%s", code, out)
	}
	del := append(env("probe", "/run/netns/f"), "CNI_COMMAND=DEL")
	if code, out := h.plugin(t, status, del...); code != 0 {
		t.Fatalf("DEL of probe: code %d\n%s", code, out)
	}
	step := slices.Index(traceSteps(t, h.s, trace), "link.veth-add")
	if step < 0 {
		t.Fatalf("no link.veth-add step traced")
	}
	if r := h.runPlugin(t, status, append(env("cut", "/run/netns/f"), "KNIT_CRASH_AT="+strconv.Itoa(step+1))...); r.Code != 137 {
		t.Fatalf("the ADD meant to be killed before its veth: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	h.s.MustRun(t, "ip", "-n", "f", "link", "add", "eth0", "type", "veth", "peer", "name", "theirs")
	if code, out := h.plugin(t, status, env("cut", "/run/netns/f")...); code != 101 || !strings.Contains(out, "is not this container's") {
		t.Errorf("ADD after a cut-short ADD, over someone's eth0: code %d, want 101\n%s", code, out)
	}
	if ls := h.s.MustKnit(t, "cni", "ls"); strings.Count(ls, "10.71.0.") != 2 {
		t.Errorf("the half-made attachment was not removed:\n%s", ls)
	}

	// A file that is no namespace is the runtime's error: code 4.
	file := filepath.Join(h.s.Dir(), "not-a-netns")
	h.s.MustRun(t, "touch", file)
	for _, path := range []string{file, "/proc/self/ns/uts"} {
		if code, out := h.plugin(t, status, env("file", path)...); code != 4 || !strings.Contains(out, "is not a network namespace") {
			t.Errorf("ADD into %s: code %d, want 4\n%s", path, code, out)
		}
	}
}

// The plugin SIGKILLed before each kernel or store change of an ADD
// (faults' KNIT_CRASH_AT): until the ADD has recorded its attachment
// complete, the next ADD of the same container and interface repairs what
// it left; after, the attachment is live and the next ADD is refused (the
// interface exists), so the runtime's DEL comes first, as a runtime sends
// one after a failed ADD. CHECK then passes and DEL leaves nothing. Killed
// before each change of a DEL: the next DEL finishes the job. The pod is
// on a second network throughout: each of its attachments claims its
// address for both ports, and what a DEL leaves is the second's claim
// for its own port alone.
func TestCNICrashAtEveryStep(t *testing.T) {
	h := cniSandbox(t)
	h.netns(t, "a")
	knit := testutil.KnitBinary(t)
	conf := `{"cniVersion":"1.1.0","name":"crash","subnet":"10.78.0.0/24","bridge":"kcrash","runtimeConfig":{"portMappings":[{"hostPort":8085,"containerPort":80}]}}`
	trace := filepath.Join(h.s.Dir(), "trace")
	// The first ADD makes the network; count the steps of a later one.
	second := `{"cniVersion":"1.1.0","name":"crash2","subnet":"10.79.0.0/24","bridge":"kcrash2"}`
	script := `conf=$1; knit=$2; trace=$3; second=$4
		export CNI_CONTAINERID=crash CNI_IFNAME=eth0 CNI_NETNS=/run/netns/a CNI_PATH=/none
		run() { echo "$conf" | CNI_COMMAND=$1 "$knit"; }
		pairs() { [ "$(nft list set bridge knit senders4 | grep -o " $1 " | wc -l)" -eq $2 ]; }
		clean() { [ -z "$(ip -o link show master kcrash)" ] && ! nft list table inet knit | grep -q 8085 && ! "$knit" cni ls | grep -q 10.78.0 &&
			! nft list table bridge knit | grep -q 10.78.0 && pairs 10.79.0.2 1; }
		echo "$second" | CNI_IFNAME=net1 CNI_COMMAND=ADD "$knit" >/dev/null || exit 1
		run ADD >/dev/null && run DEL || exit 1
		echo "$conf" | KNIT_CRASH_TRACE=$trace.add CNI_COMMAND=ADD "$knit" >/dev/null || exit 1
		echo "$conf" | KNIT_CRASH_TRACE=$trace.del CNI_COMMAND=DEL "$knit" || exit 1
		fail=0
		[ -s $trace.add ] && [ -s $trace.del ] || { echo "no steps traced"; exit 1; }
		complete=$(grep ' store.commit$' $trace.add | tail -n 1 | cut -d' ' -f1)
		[ -n "$complete" ] || { echo "no store.commit traced"; exit 1; }
		while read -r k step; do
			(echo "$conf" | KNIT_CRASH_AT=$k CNI_COMMAND=ADD "$knit" >/dev/null 2>&1) 2>/dev/null
			[ $? -eq 137 ] || { echo "the ADD meant to crash at step $k ($step) was not killed"; fail=1; }
			if [ $k -gt $complete ]; then
				out=$(run ADD 2>&1) && { echo "ADD over the live attachment after a crash at ADD step $k ($step) succeeded"; fail=1; }
				echo "$out" | grep -q "already exists" || { echo "ADD after a crash at ADD step $k ($step): $out"; fail=1; }
				run DEL || { echo "DEL after a crash at ADD step $k ($step) failed"; fail=1; }
			fi
			if ! run ADD >/dev/null 2>&1; then echo "ADD after a crash at ADD step $k ($step) failed"; fail=1
			elif ! run CHECK; then echo "CHECK after a crash at ADD step $k ($step) failed"; fail=1
			elif ! pairs 10.78.0.2 2 || ! pairs 10.79.0.2 2; then echo "the pod's claims after a crash at ADD step $k ($step): $(nft list set bridge knit senders4)"; fail=1; fi
			run DEL || { echo "DEL after a crash at ADD step $k ($step) failed"; fail=1; }
			clean || { echo "leftovers after a crash at ADD step $k ($step)"; fail=1; }
			ip -n a link del eth0 2>/dev/null
		done < $trace.add
		while read -r k step; do
			run ADD >/dev/null || exit 1
			(echo "$conf" | KNIT_CRASH_AT=$k CNI_COMMAND=DEL "$knit" 2>/dev/null) 2>/dev/null
			[ $? -eq 137 ] || { echo "the DEL meant to crash at step $k ($step) was not killed"; fail=1; }
			run DEL || { echo "DEL after a crash at DEL step $k ($step) failed"; fail=1; }
			clean || { echo "leftovers after a crash at DEL step $k ($step)"; fail=1; }
		done < $trace.del
		echo "$second" | CNI_IFNAME=net1 CNI_COMMAND=DEL "$knit" || exit 1
		nft list table bridge knit | grep -q knit:owner && { echo "claims left: $(nft list table bridge knit)"; fail=1; }
		echo "$(wc -l < $trace.add) ADD steps, $(wc -l < $trace.del) DEL steps"
		exit $fail`
	r := h.s.Run("sh", "-c", script, "sh", conf, knit, trace, second)
	if r.Code != 0 {
		t.Errorf("exit %d:\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	t.Log(strings.TrimSpace(r.Stdout))
}

// CHECK compares the live state with knit's record and says what differs.
func TestCNICheckReportsDamage(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "chk", "1.1.0", `{"type":"knit","subnet":"10.85.0.0/24","bridge":"kchk","capabilities":{"portMappings":true}}`)
	ns := h.netns(t, "a")
	caps := `CAP_ARGS={"portMappings":[{"hostPort":8083,"containerPort":80}]}`
	r := parseResult(t, h.mustCnitool(t, "add", "chk", ns, caps))
	h.mustCnitool(t, "check", "chk", ns, caps)
	// A later plugin (sbr) may move the routes to a table of their own:
	// the spec has CHECK allow that.
	h.s.MustRun(t, "ip", "-n", "a", "route", "del", "default")
	h.s.MustRun(t, "ip", "-n", "a", "route", "add", "default", "via", "10.85.0.1", "dev", "eth0", "table", "100")
	h.s.MustRun(t, "ip", "-n", "a", "rule", "add", "from", "10.85.0.2", "table", "100")
	h.mustCnitool(t, "check", "chk", ns, caps)
	h.s.MustRun(t, "ip", "-n", "a", "addr", "flush", "dev", "eth0")
	c := h.cnitool("check", "chk", ns, caps)
	for _, want := range []string{"address 10.85.0.2/24 is missing from eth0", "default route via 10.85.0.1 is missing"} {
		if c.Code == 0 || !strings.Contains(c.Stderr, want) {
			t.Errorf("check after flushing eth0: exit %d, want %q in\n%s", c.Code, want, c.Stderr)
		}
	}
	h.s.MustRun(t, "ip", "link", "set", r.hostIf(t), "nomaster")
	if c := h.cnitool("check", "chk", ns, caps); c.Code == 0 || !strings.Contains(c.Stderr, "is not on bridge kchk") {
		t.Errorf("check of a veth off the bridge: exit %d\n%s", c.Code, c.Stderr)
	}
	h.mustCnitool(t, "del", "chk", ns, caps)
	h.detached(t, "kchk", "10.85.0.2")
}

// GC removes every attachment not in the valid list, including leftovers
// from before a reboot that took the namespaces, the links, the firewall
// table, the runtime directories and the runtime's own cache.
func TestCNIGCAfterReboot(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "boot", "1.1.0", `{"type":"knit","subnet":"10.86.0.0/24","bridge":"kboot","capabilities":{"portMappings":true}}`)
	for i, name := range []string{"a", "b"} {
		h.mustCnitool(t, "add", "boot", h.netns(t, name), fmt.Sprintf(`CAP_ARGS={"portMappings":[{"hostPort":%d,"containerPort":80}]}`, 8090+i))
	}
	// The "reboot".
	exec := h.s.ExecRoot()
	h.s.MustRun(t, "sh", "-c", `
		pid=$(cat "$1/dns/server.pid" 2>/dev/null) && kill -9 "$pid"
		ip netns del a; ip netns del b; ip link del kboot
		nft delete table inet knit
		rm -rf /var/lib/cni/* "$1"/*`, "sh", exec)
	h.mustCnitool(t, "gc", "boot", "/run/netns/none")
	if ls := h.s.MustKnit(t, "cni", "ls"); strings.Contains(ls, "10.86.0.") {
		t.Errorf("attachments survive GC:\n%s", ls)
	}
	// Nothing is held: the addresses and host ports are free again.
	ns := h.netns(t, "c")
	r := parseResult(t, h.mustCnitool(t, "add", "boot", ns, `CAP_ARGS={"portMappings":[{"hostPort":8090,"containerPort":80}]}`))
	if len(r.IPs) != 1 || r.IPs[0].Address != "10.86.0.2/24" {
		t.Errorf("ADD after GC got %+v, want 10.86.0.2", r.IPs)
	}
	h.attached(t, ns, "10.86.0.2/24", "10.86.0.1", "kboot")
	if out := h.s.MustRun(t, "ip", "-o", "link", "show", "master", "kboot"); strings.Count(out, "\n") != 1 {
		t.Errorf("want only the new veth on kboot:\n%s", out)
	}
	if rules := h.s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, "8091") || strings.Contains(rules, "10.86.0.3") {
		t.Errorf("elements of collected attachments:\n%s", rules)
	}
}

// A configuration knit refuses fails with the spec's error and changes
// nothing, among them one that disagrees with the existing network it
// names, one whose name is only another network's ID prefix, and one that
// fails after creating its network.
func TestCNIRefusedConfigChangesNothing(t *testing.T) {
	h := cniSandbox(t)
	ns := h.netns(t, "a")
	h.s.MustKnit(t, "network", "create", "--subnet", "10.71.0.0/24", "exists")
	prefix := strings.TrimSpace(h.s.MustKnit(t, "network", "inspect", "-f", "{{.Id}}", "exists"))[:6]
	before := snapshot(t, h.s)
	for _, tc := range []struct{ name, conf, want string }{
		{"bad", `{"type":"knit","ipam":{"type":"host-local"}}`, "unsupported field ipam"},
		{"bad", `{"type":"knit","subnet":"10.90.0.0/33"}`, "subnet"},
		{"bad", `{"type":"knit","subnet":"10.90.0.1/24"}`, "host bits set"},
		{"bad", `{"type":"knit","bridge":"a-bridge-name-too-long"}`, "invalid bridge name"},
		{"bad", `{"type":"knit","network":"bad name"}`, "invalid network name"},
		{"bad", `{"type":"knit","runtimeConfig":{"mac":"not-a-mac"}}`, "mac"},
		{"bad", `{"type":"knit","subnet":"10.90.0.0/24","mtu":"1400"}`, "cannot decode"},
		{"bad", `{"type":"knit","subnet":"10.90.0.0/24","gateway":"1.2"}`, "gateway"},
		{"exists", `{"type":"knit","subnet":"10.72.0.0/24"}`, "network exists exists with subnets 10.71.0.0/24"},
		{"p" + prefix, `{"type":"knit","network":"` + prefix + `"}`, "ID prefix of network exists"},
		// Refused after the first ADD made the network: it goes too.
		{"fresh", `{"type":"knit","subnet":"10.73.0.0/24","args":{"cni":{"ips":["10.99.0.5"]}}}`, "10.99.0.5"},
	} {
		h.conflist(t, tc.name, "1.1.0", tc.conf)
		if r := h.cnitool("add", tc.name, ns); r.Code == 0 || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%s: exit %d, want an error mentioning %q:\n%s", tc.conf, r.Code, tc.want, r.Stderr)
		}
	}
	if after := snapshot(t, h.s); after != before {
		t.Errorf("a refused ADD changed the state:\n%s\nwas\n%s", after, before)
	}
}

// plugin runs knit as the runtime would, with the CNI_* environment and
// the configuration on stdin, and returns the spec error code it printed
// (0 for success) and its output.
func (h *cniHost) plugin(t *testing.T, conf string, env ...string) (uint, string) {
	t.Helper()
	r := h.runPlugin(t, conf, env...)
	if r.Code == 0 {
		return 0, r.Stdout
	}
	var e struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &e); err != nil || e.Code == 0 || e.Msg == "" {
		t.Fatalf("exit %d without an error JSON on stdout: %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	return e.Code, r.Stdout
}

// runPlugin runs knit as the runtime would (see plugin) and returns what
// came of it, whatever that is (a crash included).
func (h *cniHost) runPlugin(t *testing.T, conf string, env ...string) testutil.Result {
	t.Helper()
	args := append([]string{"env", "CNI_PATH=" + h.path}, env...)
	cmd := append([]string{"sh", "-c", `c=$1; shift; printf '%s' "$c" | "$@"`, "sh", conf}, args...)
	return h.s.Run(append(cmd, testutil.KnitBinary(t))...)
}

// The spec's error codes from the binary itself, as runtimes read them.
func TestCNIErrorCodes(t *testing.T) {
	h := cniSandbox(t)
	ns := h.netns(t, "a")
	add := []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=c1", "CNI_IFNAME=eth0", "CNI_NETNS=" + ns}
	for _, tc := range []struct {
		conf string
		env  []string
		code uint
	}{
		{`{"cniVersion":"1.1.0","name":"e"}`, []string{"CNI_COMMAND=ADD"}, 4},
		{`{"cniVersion":"1.1.0","name":"e"}`, []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=c1", "CNI_IFNAME=eth0", "CNI_NETNS=/proc/self/ns/net"}, 4},
		{`{"cniVersion":"0.2.0","name":"e"}`, add, 1},
		{`{"cniVersion":"0.3.1","name":"e"}`, []string{"CNI_COMMAND=CHECK", "CNI_CONTAINERID=c1", "CNI_IFNAME=eth0", "CNI_NETNS=" + ns}, 1},
		{`{"cniVersion":"1.0.0","name":"e"}`, []string{"CNI_COMMAND=GC"}, 1},
		{`{"cniVersion":"1.1.0","name":"e"`, add, 6},
		{`{"cniVersion":"1.1.0","name":"e","subnet":"10.75.0.0/33"}`, add, 7},
		{`{"cniVersion":"1.1.0","name":"e","ipam":{"type":"host-local"}}`, add, 2},
		{`{"cniVersion":"1.1.0","name":"e"}`, append(add, "CNI_ARGS=FOO=bar"), 2},
		{`{"cniVersion":"1.1.0","name":"e"}`, []string{"CNI_COMMAND=CHECK", "CNI_CONTAINERID=nosuch", "CNI_IFNAME=eth0", "CNI_NETNS=" + ns}, 3},
	} {
		if code, out := h.plugin(t, tc.conf, tc.env...); code != tc.code {
			t.Errorf("%s with %v: code %d, want %d\n%s", tc.conf, tc.env, code, tc.code, out)
		}
	}
	if code, out := h.plugin(t, `{"cniVersion":"1.0.0"}`, "CNI_COMMAND=VERSION"); code != 0 || out != `{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}` {
		t.Errorf("VERSION: code %d, %s", code, out)
	}
}

// The bandwidth capability shapes the host end (tc), CHECK verifies it and
// DEL removes it; STATUS says 50 when the network has no free address,
// and ADD then fails, until a DEL frees one.
func TestCNIBandwidthAndStatus(t *testing.T) {
	h := cniSandbox(t)
	conf := `{"type":"knit","subnet":"10.76.0.0/30","bridge":"kbw","capabilities":{"bandwidth":true}}`
	h.conflist(t, "bw", "1.1.0", conf)
	nsA, nsB := h.netns(t, "a"), h.netns(t, "b")
	caps := `CAP_ARGS={"bandwidth":{"ingressRate":1000000,"ingressBurst":100000,"egressRate":2000000,"egressBurst":200000}}`
	r := parseResult(t, h.mustCnitool(t, "add", "bw", nsA, caps))
	if q := h.s.MustRun(t, "tc", "qdisc", "show", "dev", r.hostIf(t)); !strings.Contains(q, "tbf") || !strings.Contains(q, "rate 1Mbit") {
		t.Errorf("no 1 Mbit/s TBF on the host end:\n%s", q)
	}
	h.mustCnitool(t, "check", "bw", nsA, caps)
	if c := h.cnitool("status", "bw", nsA); c.Code == 0 || !strings.Contains(c.Stderr, "no free address") {
		t.Errorf("status of a full network: exit %d\n%s", c.Code, c.Stderr)
	}
	status := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"bw",%s`, strings.TrimPrefix(conf, "{"))
	if code, out := h.plugin(t, status, "CNI_COMMAND=STATUS"); code != 50 {
		t.Errorf("STATUS of a full network: code %d, want 50\n%s", code, out)
	}
	if c := h.cnitool("add", "bw", nsB); c.Code == 0 || !strings.Contains(c.Stderr, "no free address") {
		t.Errorf("ADD to a full network: exit %d\n%s", c.Code, c.Stderr)
	}
	h.mustCnitool(t, "del", "bw", nsA, caps)
	h.detached(t, "kbw", "10.76.0.2")
	if l := h.s.MustRun(t, "ip", "-o", "link", "show", "type", "ifb"); l != "" {
		t.Errorf("ifb devices left after DEL:\n%s", l)
	}
	h.mustCnitool(t, "status", "bw", nsA)
	h.mustCnitool(t, "add", "bw", nsB)
	// With its bridge gone, the network's attached containers are cut off
	// too: 51; the next ADD recreates the bridge.
	h.s.MustRun(t, "ip", "link", "del", "kbw")
	if code, out := h.plugin(t, status, "CNI_COMMAND=STATUS"); code != 51 {
		t.Errorf("STATUS without the network's bridge: code %d, want 51\n%s", code, out)
	}
	// As after a reboot: the bridge is gone and so is every attached
	// container (its namespace), so nothing lost connectivity. What STATUS
	// reports then is that b's stale attachment still holds the /30's one
	// address; once the runtime's DEL of it frees it, the network is ready,
	// and the next ADD makes the bridge again.
	h.s.MustRun(t, "ip", "netns", "del", "b")
	if code, out := h.plugin(t, status, "CNI_COMMAND=STATUS"); code != 50 || !strings.Contains(out, "no free address") {
		t.Errorf("STATUS with neither the bridge nor a live container, the address held: code %d, want 50 for the address\n%s", code, out)
	}
	h.mustCnitool(t, "del", "bw", nsB)
	if code, out := h.plugin(t, status, "CNI_COMMAND=STATUS"); code != 0 {
		t.Errorf("STATUS with neither the bridge nor an attachment: code %d, want 0 (ready)\n%s", code, out)
	}
	h.mustCnitool(t, "add", "bw", h.netns(t, "c"))
	h.s.MustRun(t, "ip", "link", "show", "kbw")
}

// A network on the administrator's bridge cannot take containers once that
// bridge is gone, since knit never makes it: STATUS says 50, not ready.
func TestCNIStatusAdministratorsBridge(t *testing.T) {
	h := cniSandbox(t)
	adminBridge(t, h.s, "kadm", "10.77.0.1/24")
	conf := `{"type":"knit","subnet":"10.77.0.0/24","gateway":"10.77.0.1","bridge":"kadm"}`
	h.conflist(t, "adm", "1.1.0", conf)
	h.mustCnitool(t, "add", "adm", h.netns(t, "a"))
	status := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"adm",%s`, strings.TrimPrefix(conf, "{"))
	h.mustCnitool(t, "del", "adm", "/run/netns/a")
	h.s.MustRun(t, "ip", "link", "del", "kadm")
	if code, out := h.plugin(t, status, "CNI_COMMAND=STATUS"); code != 50 || !strings.Contains(out, "administrator") {
		t.Errorf("STATUS without the administrator's bridge: code %d, want 50\n%s", code, out)
	}
}

// ADD of the interface another configuration made in the same namespace
// is refused (the spec: the interface exists), and that configuration's
// DEL leaves it; after the owner's DEL the other may ADD.
func TestCNIAddOverAnotherConfigurationsInterface(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "na", "1.1.0", `{"type":"knit","network":"na","subnet":"10.73.0.0/24"}`)
	h.conflist(t, "nb", "1.1.0", `{"type":"knit","network":"nb","subnet":"10.72.0.0/24"}`)
	ns := h.netns(t, "a")
	h.mustCnitool(t, "add", "na", ns)
	if c := h.cnitool("add", "nb", ns); c.Code == 0 || !strings.Contains(c.Stderr, "already exists") {
		t.Errorf("ADD of nb over na's eth0: exit %d\n%s", c.Code, c.Stderr)
	}
	if out := h.s.MustRun(t, "ip", "-n", "a", "-4", "addr", "show", "eth0"); !strings.Contains(out, "10.73.0.") {
		t.Errorf("na's eth0 after the refused ADD:\n%s", out)
	}
	// nb's DEL finds nothing of nb's: success, and na's attachment stays.
	h.mustCnitool(t, "del", "nb", ns)
	if out := h.s.MustRun(t, "ip", "-n", "a", "-4", "addr", "show", "eth0"); !strings.Contains(out, "10.73.0.") {
		t.Errorf("na's eth0 after nb's DEL:\n%s", out)
	}
	h.mustCnitool(t, "del", "na", ns)
	h.mustCnitool(t, "add", "nb", ns)
	if out := h.s.MustRun(t, "ip", "-n", "a", "-4", "addr", "show", "eth0"); !strings.Contains(out, "10.72.0.") {
		t.Errorf("eth0 after nb's ADD:\n%s", out)
	}
}

// Two CNI configurations (two runtimes, say) may share one knit network;
// the GC of one names only its own attachments as valid, so it must not
// collect the other's.
func TestCNIGCIsScopedToItsConfiguration(t *testing.T) {
	h := cniSandbox(t)
	for _, name := range []string{"c1", "c2"} {
		h.conflist(t, name, "1.1.0", `{"type":"knit","network":"shared","subnet":"10.74.0.0/24"}`)
	}
	h.mustCnitool(t, "add", "c1", h.netns(t, "a"))
	h.mustCnitool(t, "add", "c2", h.netns(t, "b"))
	// c1's runtime still has everything it added.
	gc := `{"cniVersion":"1.1.0","name":"c1","type":"knit","network":"shared","cni.dev/valid-attachments":[]}`
	var id string
	for _, l := range strings.Split(h.s.MustKnit(t, "cni", "ls", "--no-trunc"), "\n") {
		if strings.Contains(l, "/run/netns/a") {
			id = strings.Fields(l)[0]
		}
	}
	gc = strings.Replace(gc, "[]", `[{"containerID":"`+id+`","ifname":"eth0"}]`, 1)
	if code, out := h.plugin(t, gc, "CNI_COMMAND=GC"); code != 0 {
		t.Fatalf("GC: code %d\n%s", code, out)
	}
	if ls := h.s.MustKnit(t, "cni", "ls"); !strings.Contains(ls, "10.74.0.2/24") || !strings.Contains(ls, "10.74.0.3/24") {
		t.Errorf("c1's GC collected c2's attachment:\n%s", ls)
	}
}

// An ADD that found its network, which goes before the ADD is recorded on
// it (a `network rm`, or the rollback of a failed ADD that made it, the
// first of several at once), makes the network again, as the first ADD of
// a network does, instead of failing with "being removed". The test holds
// the network's lock, so that the ADD waits with the network found and
// `network rm` marks it for removal meanwhile; then lets both go.
func TestCNIAddOutlivesItsNetworksRemoval(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "gone2", "1.1.0", `{"type":"knit","subnet":"10.86.0.0/24","bridge":"kgone2"}`)
	// The network made by a first ADD, which leaves it when DELeted.
	a := h.netns(t, "a")
	h.mustCnitool(t, "add", "gone2", a)
	h.mustCnitool(t, "del", "gone2", a)
	lock := filepath.Join(h.s.DataRoot(), "locks", "network-gone2.lock")
	release := filepath.Join(h.s.Dir(), "release")
	h.s.Start(t, "flock", "-x", lock, "sh", "-c", `while [ ! -e "$1" ]; do sleep 0.05; done`, "sh", release)
	eventually(t, func() (string, error) {
		if r := h.s.Run("flock", "-n", "-s", lock, "true"); r.Code == 0 {
			return "", fmt.Errorf("the network's lock is not held yet")
		}
		return "", nil
	})
	// waiting counts the knit processes that have the lock file open.
	waiting := func(want int) bool {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			r := h.s.MustRun(t, "sh", "-c", `for p in /proc/[0-9]*; do
				[ "$(cat $p/comm 2>/dev/null)" = knit ] && ls -l $p/fd 2>/dev/null | grep -q "$1" && echo $p
			done; true`, "sh", "network-gone2.lock")
			if len(strings.Fields(r)) == want {
				return true
			}
		}
		return false
	}
	b := h.netns(t, "b")
	out := filepath.Join(h.s.Dir(), "add.out")
	add := h.s.Start(t, "sh", "-c", `env NETCONFPATH="$1" CNI_PATH="$2" cnitool add gone2 "$3" > "$4" 2>&1`,
		"sh", h.confDir, h.path, b, out)
	if !waiting(1) { // the ADD, with the network found
		t.Fatal("the ADD does not wait for the network's lock")
	}
	rmOut := filepath.Join(h.s.Dir(), "rm.out")
	rm := h.s.Start(t, "sh", "-c", `"$1" network rm gone2 > "$2" 2>&1`, "sh", testutil.KnitBinary(t), rmOut)
	if !waiting(2) { // and network rm, with the network marked for removal
		t.Fatalf("network rm does not wait for the lock:\n%s", h.s.Run("cat", rmOut).Stdout)
	}
	h.s.MustRun(t, "touch", release)
	addErr, rmErr := add.Wait(), rm.Wait()
	if addErr != nil {
		t.Fatalf("ADD racing network rm: %v\n%s", addErr, h.s.Run("cat", out).Stdout)
	}
	if rmErr != nil {
		t.Errorf("network rm racing an ADD: %v\n%s", rmErr, h.s.Run("cat", rmOut).Stdout)
	}
	h.attached(t, b, "10.86.0.2/24", "10.86.0.1", "kgone2")
	if ls := h.s.MustKnit(t, "network", "ls"); !strings.Contains(ls, "gone2") {
		t.Errorf("network ls lacks gone2, which the ADD made again:\n%s", ls)
	}
	h.mustCnitool(t, "check", "gone2", b)
	h.mustCnitool(t, "del", "gone2", b)
	h.detached(t, "kgone2", "10.86.0.2")
}

// A namespace on two knit networks (a pod's eth0 and net1, Podman's
// --network a,b, Multus): the second ADD finds the first's default route
// and keeps it, as the reference plugins do ("the first one wins"),
// instead of failing on it; its result names no route, CHECK passes on
// both, and each network is reached through its own interface.
func TestCNISecondNetworkKeepsTheDefaultRoute(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "first", "1.1.0", `{"type":"knit","subnet":"10.87.0.0/24","bridge":"kfirst"}`)
	h.conflist(t, "second", "1.1.0", `{"type":"knit","subnet":"10.88.0.0/24","bridge":"ksecond"}`)
	ns := h.netns(t, "pod")
	h.mustCnitool(t, "add", "first", ns)
	r := parseResult(t, h.mustCnitool(t, "add", "second", ns, "CNI_IFNAME=net1"))
	if len(r.Routes) != 0 {
		t.Errorf("the second network's result has routes %+v, want none: the namespace has its default route", r.Routes)
	}
	if len(r.IPs) != 1 || r.IPs[0].Address != "10.88.0.2/24" {
		t.Errorf("the second network's addresses: %+v, want 10.88.0.2/24", r.IPs)
	}
	if out := h.s.MustRun(t, "ip", "-n", "pod", "route", "show", "default"); strings.TrimSpace(out) != "default via 10.87.0.1 dev eth0" {
		t.Errorf("default routes:\n%s\nwant only the first network's", out)
	}
	h.mustCnitool(t, "check", "first", ns)
	h.mustCnitool(t, "check", "second", ns, "CNI_IFNAME=net1")
	h.s.MustRun(t, "ip", "netns", "exec", "pod", "ping", "-c1", "-w5", "-I", "net1", "10.88.0.1")
	h.s.MustRun(t, "ip", "netns", "exec", "pod", "ping", "-c1", "-w5", "-I", "eth0", "10.87.0.1")
	h.mustCnitool(t, "del", "second", ns, "CNI_IFNAME=net1")
	h.mustCnitool(t, "del", "first", ns)
	h.detached(t, "ksecond", "10.88.0.2")
	h.detached(t, "kfirst", "10.87.0.2")
}

// A pod on two knit networks sends from either address out of either
// port, as a knit container on two networks does: here from its second
// network's address to the world through the first's default route (the
// way a reply to a connection made to that address leaves). Another pod
// cannot send from it, and each DEL leaves exactly the rest's claims.
func TestCNIPodSendsFromEitherAddress(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "first", "1.1.0", `{"type":"knit","subnet":"10.87.0.0/24","bridge":"kfirst"}`)
	h.conflist(t, "second", "1.1.0", `{"type":"knit","subnet":"10.88.0.0/24","bridge":"ksecond"}`)
	ns, other := h.netns(t, "pod"), h.netns(t, "other")
	h.mustCnitool(t, "add", "first", ns)
	h.mustCnitool(t, "add", "second", ns, "CNI_IFNAME=net1")
	h.mustCnitool(t, "add", "first", other)
	h.s.MustRun(t, "ip", "netns", "exec", "pod", "ping", "-c1", "-w5", "-I", "10.88.0.2", "198.51.100.2")
	assertConsistent(t, h.s, "a pod on two networks")
	// What another pod sends from that address never reaches the host
	// (whose replies would go to the pod: conntrack tells), while the
	// pod's own does.
	_, dnstool := dnsRootfs(t)
	h.s.MustRun(t, "ip", "-n", "other", "addr", "add", "10.88.0.2/32", "dev", "eth0")
	for _, c := range []struct {
		ns, sport string
		arrives   bool
	}{{"pod", "53536", true}, {"other", "53537", false}} {
		h.s.Run("ip", "netns", "exec", c.ns, dnstool, "query", "-server", "198.51.100.2:53", "-from", "10.88.0.2:"+c.sport, "-timeout", "1s", "x.test")
		got := h.s.Run("conntrack", "-L", "-p", "udp", "--orig-src", "10.88.0.2", "--sport", c.sport).Stdout
		if strings.Contains(got, "dport=53") != c.arrives {
			t.Errorf("%s's query from the pod's address reached the host: %v, want %v\n%s", c.ns, !c.arrives, c.arrives, got)
		}
	}
	h.mustCnitool(t, "del", "second", ns, "CNI_IFNAME=net1")
	assertConsistent(t, h.s, "the pod's second network gone")
	h.mustCnitool(t, "del", "first", ns)
	h.mustCnitool(t, "del", "first", other)
	if st := assertConsistent(t, h.s, "both pods gone"); strings.Contains(st.nft, "knit:owner=") {
		t.Errorf("claims outlived the pods:\n%s", st.nft)
	}
}

// An IPv6 address given again to another pod under another MAC (the MAC
// follows the IPv4 address): the host forgets its entry at the ADD, and a
// pod on the bridge reaches the new holder within seconds, told by the
// process the plugin leaves behind to announce it once its port forwards.
func TestCNIReusedAddressReached(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "dual", "1.1.0", `{"type":"knit","subnet":"10.86.0.0/24","ipv6":true,"subnet6":"fd00:db8:86::/64","bridge":"kdual","capabilities":{"ips":true}}`)
	stay, first, again := h.netns(t, "stay"), h.netns(t, "first"), h.netns(t, "again")
	h.mustCnitool(t, "add", "dual", stay)
	const addr = "fd00:db8:86::10"
	h.mustCnitool(t, "add", "dual", first, `CAP_ARGS={"ips":["10.86.0.10/24","`+addr+`/64"]}`)
	h.s.MustRun(t, "ip", "netns", "exec", "stay", "ping", "-6", "-c1", "-w5", addr)
	h.mustCnitool(t, "del", "dual", first)
	h.mustCnitool(t, "add", "dual", again, `CAP_ARGS={"ips":["10.86.0.11/24","`+addr+`/64"]}`)
	if neigh := h.s.MustRun(t, "ip", "neigh", "show", addr); neigh != "" && !strings.Contains(neigh, "lladdr 02:42:0a:56:00:0b") {
		t.Errorf("the host's neighbour entry for %s once its new holder was added: %q", addr, neigh)
	}
	reached := false
	for deadline := time.Now().Add(4 * time.Second); !reached && time.Now().Before(deadline); {
		reached = h.s.Run("ip", "netns", "exec", "stay", "ping", "-6", "-c1", "-W1", addr).Code == 0
	}
	if !reached {
		t.Errorf("a pod on the bridge did not reach %s at its new holder within 4 s: its entry %q", addr,
			h.s.Run("ip", "-n", "stay", "neigh", "show", addr).Stdout)
	}
	h.mustCnitool(t, "del", "dual", again)
	h.mustCnitool(t, "del", "dual", stay)
	assertConsistent(t, h.s, "the pods gone")
}

// Two networks' ADDs into one namespace at the same moment, as containerd
// attaches a pod's networks in parallel: both succeed, whichever adds the
// default route first keeps it, each record names only the routes its
// ADD added (CHECK, which compares them with the namespace, passes on
// both), and each port may send from both addresses.
func TestCNIParallelNetworksShareTheDefaultRoute(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "pa", "1.1.0", `{"type":"knit","subnet":"10.89.0.0/24","bridge":"kpa"}`)
	h.conflist(t, "pb", "1.1.0", `{"type":"knit","subnet":"10.90.0.0/24","bridge":"kpb"}`)
	for round := range 20 {
		name := fmt.Sprintf("par%d", round)
		ns := h.netns(t, name)
		add := func(net, ifname string) *exec.Cmd {
			return h.s.Start(t, "sh", "-c", `env NETCONFPATH="$1" CNI_PATH="$2" CNI_IFNAME="$3" cnitool add "$4" "$5" > /dev/null`,
				"sh", h.confDir, h.path, ifname, net, ns)
		}
		a, b := add("pa", "eth0"), add("pb", "net1")
		if errA, errB := a.Wait(), b.Wait(); errA != nil || errB != nil {
			t.Fatalf("round %d: parallel ADDs: %v, %v", round, errA, errB)
		}
		routes := strings.TrimSpace(h.s.MustRun(t, "ip", "-n", name, "route", "show", "default"))
		if routes != "default via 10.89.0.1 dev eth0" && routes != "default via 10.90.0.1 dev net1" {
			t.Errorf("round %d: default routes:\n%s\nwant one, either network's", round, routes)
		}
		h.mustCnitool(t, "check", "pa", ns)
		h.mustCnitool(t, "check", "pb", ns, "CNI_IFNAME=net1")
		// Whichever recorded its port later claimed for both ports.
		assertConsistent(t, h.s, fmt.Sprintf("round %d", round))
		h.mustCnitool(t, "del", "pb", ns, "CNI_IFNAME=net1")
		h.mustCnitool(t, "del", "pa", ns)
	}
	h.detached(t, "kpa", "10.89.0.2")
	h.detached(t, "kpb", "10.90.0.2")
}

// A default route another plugin of the chain added before knit, at
// another metric, is kept too: knit adds none of that family.
func TestCNIKeepsAnotherPluginsDefaultRoute(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "after", "1.1.0", `{"type":"knit","subnet":"10.91.0.0/24","bridge":"kafter"}`)
	ns := h.netns(t, "pod")
	for _, cmd := range [][]string{
		{"ip", "-n", "pod", "link", "add", "up0", "type", "veth", "peer", "name", "up1"},
		{"ip", "-n", "pod", "addr", "add", "192.0.2.2/24", "dev", "up0"},
		{"ip", "-n", "pod", "link", "set", "up0", "up"},
		{"ip", "-n", "pod", "link", "set", "up1", "up"},
		{"ip", "-n", "pod", "route", "add", "default", "via", "192.0.2.1", "metric", "100"},
	} {
		h.s.MustRun(t, cmd...)
	}
	r := parseResult(t, h.mustCnitool(t, "add", "after", ns))
	if len(r.Routes) != 0 {
		t.Errorf("result routes %+v, want none: the namespace had its default route", r.Routes)
	}
	if out := strings.TrimSpace(h.s.MustRun(t, "ip", "-n", "pod", "route", "show", "default")); out != "default via 192.0.2.1 dev up0 metric 100" {
		t.Errorf("default routes:\n%s\nwant only the earlier plugin's", out)
	}
	h.mustCnitool(t, "check", "after", ns)
	h.mustCnitool(t, "del", "after", ns)
}

// STATUS of a network ADD would create answers as ADD would: 50 for a
// configuration it would refuse (a subnet another network has, an MTU
// out of range), ready for one whose removal a crash cut short (ADD
// finishes that removal, and STATUS does too).
func TestCNIStatusOfANetworkToCreate(t *testing.T) {
	h := cniSandbox(t)
	// On a fresh host, as ADD, it counts the default network, which ADD
	// records first.
	if code, out := h.plugin(t, `{"cniVersion":"1.1.0","name":"n0","type":"knit","subnet":"172.17.5.0/24"}`, "CNI_COMMAND=STATUS"); code != 50 || !strings.Contains(out, "of network bridge") {
		t.Errorf("STATUS of a subnet in the default network's, on a fresh host: code %d, want 50\n%s", code, out)
	}
	h.s.MustKnit(t, "network", "create", "--subnet", "10.88.0.0/16", "n1")
	for conf, want := range map[string]string{
		`{"cniVersion":"1.1.0","name":"n2","type":"knit","subnet":"10.88.0.0/24"}`: "overlaps with subnet 10.88.0.0/16 of network n1",
		`{"cniVersion":"1.1.0","name":"n3","type":"knit","mtu":50}`:                "invalid mtu",
		`{"cniVersion":"1.1.0","name":"n4","type":"knit","bridge":"br-taken"}`:     "bridge br-taken is already used",
	} {
		if strings.Contains(conf, "br-taken") {
			h.s.MustKnit(t, "network", "create", "-o", "bridge=br-taken", "owner")
		}
		if code, out := h.plugin(t, conf, "CNI_COMMAND=STATUS"); code != 50 || !strings.Contains(out, want) {
			t.Errorf("STATUS of %s: code %d, want 50 saying %q\n%s", conf, code, want, out)
		}
	}
	// A network rm killed after marking the network: STATUS finishes it.
	conf := `{"cniVersion":"1.1.0","name":"half","type":"knit","subnet":"10.89.0.0/24"}`
	h.s.MustKnit(t, "network", "create", "--subnet", "10.89.0.0/24", "half")
	if r := h.s.Run("env", "KNIT_CRASH_AT=4", testutil.KnitBinary(t), "network", "rm", "half"); r.Code != 137 { // at nft.batch, once marked
		t.Fatalf("network rm killed at its fourth step: exit %d, %s", r.Code, r.Stderr)
	}
	if code, out := h.plugin(t, conf, "CNI_COMMAND=STATUS"); code != 0 {
		t.Errorf("STATUS of a network whose removal was cut short: code %d, want 0 (ready)\n%s", code, out)
	}
	if r := h.s.Knit("network", "inspect", "half"); r.Code == 0 {
		t.Errorf("the network half removed is still there after STATUS")
	}
}

// The embedded DNS server the ADD result names as the nameserver, killed,
// is started again by CHECK and by STATUS (which a runtime sends
// periodically), as by any knit command.
func TestCNICheckAndStatusRestartTheDNSServer(t *testing.T) {
	h := cniSandbox(t)
	h.conflist(t, "dnsnet", "1.1.0", `{"type":"knit","subnet":"10.71.0.0/24","bridge":"kdns"}`)
	ns := h.netns(t, "a")
	h.mustCnitool(t, "add", "dnsnet", ns)
	pidFile, lock := h.s.ExecRoot()+"/dns/server.pid", h.s.ExecRoot()+"/dns/server.lock"
	for _, cmd := range []string{"check", "status"} {
		pid := strings.TrimSpace(h.s.MustRun(t, "cat", pidFile))
		h.s.MustRun(t, "kill", "-9", pid)
		eventually(t, func() (string, error) { // gone once its lock is free
			if r := h.s.Run("flock", "-n", "-s", lock, "true"); r.Code != 0 {
				return "", errors.New("the killed server still holds its lock")
			}
			return "", nil
		})
		h.mustCnitool(t, cmd, "dnsnet", ns)
		if r := h.s.Run("flock", "-n", "-s", lock, "true"); r.Code == 0 {
			t.Errorf("no DNS server runs after cnitool %s", cmd)
		}
		if now := strings.TrimSpace(h.s.MustRun(t, "cat", pidFile)); now == pid {
			t.Errorf("server.pid still names the killed server %s after cnitool %s", pid, cmd)
		}
	}
	h.mustCnitool(t, "del", "dnsnet", ns)
}

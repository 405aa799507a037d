package e2e

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/testutil"
)

// networkNames lists the NAME column of `network ls` (after the header).
func networkNames(t *testing.T, s *testutil.Sandbox, args ...string) []string {
	t.Helper()
	out := s.MustKnit(t, append([]string{"network", "ls", "--format", "{{.Name}}"}, args...)...)
	return strings.Fields(out)
}

// TestNetworkCLI drives create, ls, inspect, rm and prune through the
// binary and checks the kernel objects they make and remove.
func TestNetworkCLI(t *testing.T) {
	s := sandbox(t)

	// create prints the full ID and makes br-<ID[:12]> with the gateway.
	id := strings.TrimSpace(s.MustKnit(t, "network", "create", "--subnet", "192.168.100.0/24", "mynetwork"))
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(id) {
		t.Fatalf("network create printed %q, want a 64-hex-digit ID", id)
	}
	br := "br-" + id[:12]
	if addr := s.MustRun(t, "ip", "-br", "addr", "show", "dev", br); !strings.Contains(addr, "192.168.100.1/24") {
		t.Errorf("%s: %q, want 192.168.100.1/24 on it", br, addr)
	}
	if links := s.MustRun(t, "ip", "-br", "link"); !strings.Contains(links, br) {
		t.Errorf("ip -br link lacks %s:\n%s", br, links)
	}

	// ls: Docker's table with the predefined networks and the new one.
	ls := s.MustKnit(t, "network", "ls")
	lines := strings.Split(strings.TrimSuffix(ls, "\n"), "\n")
	if len(lines) != 5 || !regexp.MustCompile(`^NETWORK ID +NAME +DRIVER +SCOPE$`).MatchString(lines[0]) {
		t.Fatalf("network ls:\n%s", ls)
	}
	wantRow := regexp.MustCompile(`(?m)^` + id[:12] + ` +mynetwork +bridge +local$`)
	if !wantRow.MatchString(ls) {
		t.Errorf("network ls lacks a row for mynetwork:\n%s", ls)
	}
	for _, row := range []string{`bridge +bridge +local`, `host +host +local`, `none +null +local`} {
		if !regexp.MustCompile(`(?m)^[0-9a-f]{12} +` + row + `$`).MatchString(ls) {
			t.Errorf("network ls lacks %q:\n%s", row, ls)
		}
	}
	if got := s.MustKnit(t, "network", "ls", "-q", "--filter", "name=mynet"); got != id[:12]+"\n" {
		t.Errorf("ls -q --filter name=mynet = %q, want %q", got, id[:12]+"\n")
	}
	if got := s.MustKnit(t, "network", "ls", "-q", "--no-trunc", "-f", "id="+id[:8]); got != id+"\n" {
		t.Errorf("ls -q --no-trunc -f id= = %q, want %q", got, id+"\n")
	}
	if got := networkNames(t, s, "--filter", "type=builtin"); !slices.Equal(got, []string{"bridge", "host", "none"}) {
		t.Errorf("type=builtin: %q", got)
	}
	if got := networkNames(t, s, "--filter", "type=custom"); !slices.Equal(got, []string{"mynetwork"}) {
		t.Errorf("type=custom: %q", got)
	}
	if r := s.Knit("network", "ls", "--filter", "color=red"); r.Code != 1 || !strings.Contains(r.Stderr, "invalid filter 'color'") {
		t.Errorf("ls with an unknown filter: exit %d, stderr %q", r.Code, r.Stderr)
	}

	// inspect: Docker-shaped JSON and templates, by name or ID prefix.
	f := s.MustKnit(t, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}", "mynetwork")
	if f != "192.168.100.0/24 192.168.100.1\n" {
		t.Errorf("inspect -f IPAM = %q", f)
	}
	if f := s.MustKnit(t, "network", "inspect", "--format", "{{.Name}} {{.Driver}} {{.Scope}} {{.Internal}}", id[:12]); f != "mynetwork bridge local false\n" {
		t.Errorf("inspect by ID prefix = %q", f)
	}
	var views []struct {
		Name, Id, Created, Scope, Driver string //nolint:revive // Docker's names
		EnableIPv4, EnableIPv6           bool
		IPAM                             struct {
			Driver string
			Config []map[string]string
		}
		Containers map[string]any
		Options    map[string]string
		Labels     map[string]string
	}
	raw := s.MustKnit(t, "network", "inspect", "mynetwork", "bridge")
	if err := json.Unmarshal([]byte(raw), &views); err != nil || len(views) != 2 {
		t.Fatalf("inspect JSON (%v, %d views):\n%s", err, len(views), raw)
	}
	v := views[0]
	if v.Name != "mynetwork" || v.Id != id || v.Scope != "local" || v.Driver != "bridge" || !v.EnableIPv4 || v.EnableIPv6 ||
		v.IPAM.Driver != "default" || len(v.IPAM.Config) != 1 || v.IPAM.Config[0]["Subnet"] != "192.168.100.0/24" ||
		v.Containers == nil || len(v.Containers) != 0 || v.Options == nil || v.Labels == nil {
		t.Errorf("inspect mynetwork = %+v", v)
	}
	if _, err := time.Parse(time.RFC3339Nano, v.Created); err != nil || time.Since(mustTime(t, v.Created)) > time.Hour {
		t.Errorf("Created = %q (%v)", v.Created, err)
	}
	if views[1].Name != "bridge" || views[1].IPAM.Config[0]["Subnet"] != "172.17.0.0/16" {
		t.Errorf("inspect bridge = %+v", views[1])
	}
	r := s.Knit("network", "inspect", "mynetwork", "nosuch")
	if r.Code != 1 || !strings.Contains(r.Stderr, "network nosuch not found") || !strings.Contains(r.Stdout, `"Name": "mynetwork"`) {
		t.Errorf("inspect with a missing network: exit %d, stdout %q, stderr %q; want the found one printed, then the error", r.Code, r.Stdout, r.Stderr)
	}
	if r := s.Knit("network", "inspect", "nosuch"); r.Code != 1 || r.Stdout != "[]\n" {
		t.Errorf("inspect nosuch: exit %d, stdout %q", r.Code, r.Stdout)
	}

	// A second network on an overlapping subnet is refused and leaves nothing.
	r = s.Knit("network", "create", "--subnet", "192.168.100.128/25", "clash")
	if r.Code != 1 || !strings.Contains(r.Stderr, "invalid pool request: Pool overlaps with other one on this address space") || slices.Contains(networkNames(t, s), "clash") {
		t.Errorf("overlapping create: exit %d, stderr %q; want 1 and Docker's \"invalid pool request\"", r.Code, r.Stderr)
		if r.Code == 0 { // keep the rest of the test meaningful
			s.MustKnit(t, "network", "rm", "clash")
		}
	}
	if r := s.Knit("network", "create", "mynetwork"); r.Code != 1 || !strings.Contains(r.Stderr, "already exists") {
		t.Errorf("duplicate name: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if r := s.Knit("network", "create", "--subnet", "10.0.0.0/33", "bad"); r.Code != 1 || !strings.Contains(r.Stderr, "invalid --subnet 10.0.0.0/33") {
		t.Errorf("bad subnet: exit %d, stderr %q", r.Code, r.Stderr)
	}

	// Labels, and an automatically chosen subnet that avoids the others.
	s.MustKnit(t, "network", "create", "--label", "env=test", "--internal", "labeled")
	if got := networkNames(t, s, "--filter", "label=env=test"); !slices.Equal(got, []string{"labeled"}) {
		t.Errorf("label=env=test: %q", got)
	}
	if got := s.MustKnit(t, "network", "ls", "--filter", "name=labeled", "--format", `{{.Label "env"}} {{.Internal}}`); got != "test true\n" {
		t.Errorf(".Label/.Internal = %q", got)
	}
	sub := strings.TrimSpace(s.MustKnit(t, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "labeled"))
	if sub == "" || sub == "172.17.0.0/16" || sub == "192.168.100.0/24" {
		t.Errorf("labeled got subnet %q, want a free one", sub)
	}

	// rm: predefined networks stay; others go with their bridge.
	if r := s.Knit("network", "rm", "bridge"); r.Code != 1 || !strings.Contains(r.Stderr, "pre-defined") {
		t.Errorf("rm bridge: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if out := s.MustKnit(t, "network", "rm", "mynetwork"); out != "mynetwork\n" {
		t.Errorf("rm printed %q", out)
	}
	if r := s.Run("ip", "link", "show", br); r.Code == 0 {
		t.Errorf("%s survived network rm", br)
	}
	if got := networkNames(t, s); slices.Contains(got, "mynetwork") {
		t.Errorf("removed network still listed: %q", got)
	}
	// The subnet is free again.
	id2 := strings.TrimSpace(s.MustKnit(t, "network", "create", "--subnet", "192.168.100.0/24", "again"))
	// One failure does not stop the others.
	r = s.Knit("network", "rm", "none", "again")
	if r.Code != 1 || r.Stdout != "again\n" || !strings.Contains(r.Stderr, "none") {
		t.Errorf("rm none again: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := s.Run("ip", "link", "show", "br-"+id2[:12]); r.Code == 0 {
		t.Errorf("br-%s survived network rm", id2[:12])
	}
	if r := s.Knit("network", "rm", "nosuch"); r.Code != 1 || !strings.Contains(r.Stderr, "nosuch") {
		t.Errorf("rm nosuch: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if r := s.Knit("network", "rm", "-f", "nosuch"); r.Code != 0 || r.Stdout != "" {
		t.Errorf("rm -f nosuch: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}

	// prune asks first; only y goes ahead. -f does not ask.
	knit := testutil.KnitBinary(t)
	s.MustKnit(t, "network", "create", "spare")
	if out := s.MustRun(t, "sh", "-c", "echo n | "+knit+" network prune"); !strings.HasPrefix(out, "WARNING!") || strings.Contains(out, "Deleted") {
		t.Errorf("prune answered n: %q", out)
	}
	if got := networkNames(t, s); !slices.Equal(got, []string{"bridge", "host", "labeled", "none", "spare"}) {
		t.Errorf("after a refused prune: %q", got)
	}
	out := s.MustKnit(t, "network", "prune", "-f")
	if out != "Deleted Networks:\nlabeled\nspare\n\n" {
		t.Errorf("prune -f printed %q", out)
	}
	if got := networkNames(t, s); !slices.Equal(got, []string{"bridge", "host", "none"}) {
		t.Errorf("after prune: %q", got)
	}
	if out := s.MustKnit(t, "network", "prune", "-f"); out != "" {
		t.Errorf("prune with nothing to prune printed %q", out)
	}
	if links := s.MustRun(t, "ip", "-br", "link"); strings.Contains(links, "br-") {
		t.Errorf("bridges left after prune:\n%s", links)
	}
}

// TestNetworkInUse checks what a container on a user-defined network
// changes: inspect lists it, rm refuses the network and prune keeps it.
func TestNetworkInUse(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.77.0.0/24", "used")
	s.MustKnit(t, "network", "create", "unused")
	cid := strings.TrimSpace(s.MustKnit(t, "run", "-d", "--name", "c1", "--network", "used", "--rootfs", bb, "sleep", "300"))
	hid := strings.TrimSpace(s.MustKnit(t, "run", "-d", "--name", "h1", "--network", "host", "--rootfs", bb, "sleep", "300"))

	var eps map[string]map[string]string
	raw := s.MustKnit(t, "network", "inspect", "-f", "{{json .Containers}}", "used")
	if err := json.Unmarshal([]byte(raw), &eps); err != nil {
		t.Fatalf("Containers JSON: %v\n%s", err, raw)
	}
	ep := eps[cid]
	if len(eps) != 1 || ep["Name"] != "c1" || ep["IPv4Address"] != "10.77.0.2/24" ||
		!regexp.MustCompile(`^02:42:0a:4d:00:02$`).MatchString(ep["MacAddress"]) ||
		!regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(ep["EndpointID"]) {
		t.Errorf("inspect used .Containers = %s", raw)
	}
	if got := s.MustKnit(t, "network", "inspect", "-f", "{{range $id, $c := .Containers}}{{$id}} {{$c.Name}}{{end}}", "host"); got != hid+" h1\n" {
		t.Errorf("inspect host .Containers = %q, want %q", got, hid+" h1\n")
	}
	if got := networkNames(t, s, "--filter", "dangling=true"); !slices.Equal(got, []string{"unused"}) {
		t.Errorf("dangling=true: %q", got)
	}
	if r := s.Knit("network", "rm", "used"); r.Code != 1 || !strings.Contains(r.Stderr, "c1") {
		t.Errorf("rm of a network in use: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if out := s.MustKnit(t, "network", "prune", "-f"); out != "Deleted Networks:\nunused\n\n" {
		t.Errorf("prune -f printed %q", out)
	}
	if got := networkNames(t, s, "--filter", "type=custom"); !slices.Equal(got, []string{"used"}) {
		t.Errorf("after prune: %q", got)
	}
	s.MustKnit(t, "rm", "-f", "c1")
	if out := s.MustKnit(t, "network", "rm", "used"); out != "used\n" {
		t.Errorf("rm after the container went: %q", out)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// A `network rm` killed once it has marked the network as being removed
// leaves its bridge, rules and record. The next `network create` of the
// name finishes that removal and makes the network again, instead of
// answering "already exists" until a prune; so does a CNI ADD on it.
func TestNetworkCreateFinishesAnInterruptedRemoval(t *testing.T) {
	s := sandbox(t)
	// The steps of an ordinary rm: the kill comes right after its first
	// commit, the mark.
	s.MustKnit(t, "network", "create", "probe")
	trace := filepath.Join(s.Dir(), "trace")
	knitEnv(t, s, []string{"KNIT_CRASH_TRACE=" + trace}, "network", "rm", "probe")
	steps := traceSteps(t, s, trace)
	at := slices.Index(steps, "store.commit") + 2
	if at < 2 || at > len(steps) {
		t.Fatalf("network rm's steps %v: no commit followed by another step", steps)
	}
	for _, next := range []struct {
		name string
		do   func() testutil.Result
	}{
		{"network create", func() testutil.Result { return s.Knit("network", "create", "--subnet", "10.91.0.0/24", "scratch") }},
		{"CNI ADD", func() testutil.Result {
			conf := `{"cniVersion":"1.1.0","name":"scratch","type":"knit","subnet":"10.91.0.0/24"}`
			return s.Run("sh", "-c", `printf '%s' "$1" | env CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_IFNAME=eth0 CNI_NETNS=/run/netns/cni1 CNI_PATH=/usr/lib/cni "$2"`,
				"sh", conf, testutil.KnitBinary(t))
		}},
	} {
		id := strings.TrimSpace(s.MustKnit(t, "network", "create", "--subnet", "10.91.0.0/24", "scratch"))
		old := "br-" + id[:12]
		if r := knitEnv(t, s, []string{"KNIT_CRASH_AT=" + strconv.Itoa(at)}, "network", "rm", "scratch"); r.Code != 137 {
			t.Fatalf("network rm with KNIT_CRASH_AT=%d: exit %d, want 137 (killed)\n%s%s", at, r.Code, r.Stdout, r.Stderr)
		}
		s.MustRun(t, "ip", "link", "show", old) // the kill left the bridge
		if next.name == "CNI ADD" {
			s.MustRun(t, "ip", "netns", "add", "cni1")
		}
		if r := next.do(); r.Code != 0 {
			t.Fatalf("%s after an interrupted network rm: exit %d\n%s%s", next.name, r.Code, r.Stdout, r.Stderr)
		}
		if r := s.Run("ip", "link", "show", old); r.Code == 0 {
			t.Errorf("%s: the interrupted removal's bridge %s is still there", next.name, old)
		}
		if next.name == "CNI ADD" {
			s.MustRun(t, "sh", "-c", `printf '%s' '{"cniVersion":"1.1.0","name":"scratch","type":"knit"}' | env CNI_COMMAND=DEL CNI_CONTAINERID=c1 CNI_IFNAME=eth0 CNI_NETNS=/run/netns/cni1 CNI_PATH=/usr/lib/cni "$1"`,
				"sh", testutil.KnitBinary(t))
			s.MustRun(t, "ip", "netns", "del", "cni1")
		}
		s.MustKnit(t, "network", "rm", "scratch")
	}
}

// A network's lock file goes with the network, and system prune deletes
// those that older knits left for every network name ever used; a live
// network's stays.
func TestNetworkLockFilesGo(t *testing.T) {
	s := sandbox(t)
	locks := filepath.Join(s.DataRoot(), "locks")
	s.MustKnit(t, "network", "create", "gone")
	s.MustKnit(t, "network", "create", "kept")
	s.MustKnit(t, "run", "-d", "--network", "kept", "--rootfs", testutil.Busybox(t), "sleep", "300") // not pruned
	s.MustKnit(t, "network", "rm", "gone")
	s.MustRun(t, "touch", filepath.Join(locks, "network-old.lock"), filepath.Join(locks, "network-kept.lock"))
	if ls := s.MustRun(t, "ls", locks); strings.Contains(ls, "network-gone.lock") {
		t.Errorf("network rm left its lock file:\n%s", ls)
	}
	s.MustKnit(t, "system", "prune", "-f")
	ls := s.MustRun(t, "ls", locks)
	if strings.Contains(ls, "network-old.lock") || !strings.Contains(ls, "network-kept.lock") {
		t.Errorf("lock files after system prune (want network-kept.lock only of the networks'):\n%s", ls)
	}
}

// network ls lists names in natural order, as Docker's (net2 before
// net10), and an inspect template naming a label the network lacks prints
// Docker's "<no value>" instead of failing.
func TestNetworkLsOrderAndMissingLabel(t *testing.T) {
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "net10")
	s.MustKnit(t, "network", "create", "net2")
	if got, want := networkNames(t, s), []string{"bridge", "host", "net2", "net10", "none"}; !slices.Equal(got, want) {
		t.Errorf("network ls names %q, want %q", got, want)
	}
	if got := s.MustKnit(t, "network", "inspect", "-f", "{{.Labels.owner}}", "net2"); got != "<no value>\n" {
		t.Errorf("inspect -f {{.Labels.owner}} = %q, want <no value>", got)
	}
}

// network prune --filter removes only the unused networks it selects.
func TestNetworkPruneFilter(t *testing.T) {
	s := sandbox(t)
	s.MustKnit(t, "network", "create", "--label", "tmp", "scratch")
	s.MustKnit(t, "network", "create", "keep")
	if out := s.MustKnit(t, "network", "prune", "-f", "--filter", "until=1h"); out != "" {
		t.Errorf("prune --filter until=1h removed networks made just now:\n%s", out)
	}
	if out := s.MustKnit(t, "network", "prune", "-f", "--filter", "label=tmp"); out != "Deleted Networks:\nscratch\n\n" {
		t.Errorf("prune --filter label=tmp printed %q", out)
	}
	if got, want := networkNames(t, s), []string{"bridge", "host", "keep", "none"}; !slices.Equal(got, want) {
		t.Errorf("networks after the prune: %q, want %q", got, want)
	}
	if r := s.Knit("network", "prune", "-f", "--filter", "driver=bridge"); r.Code == 0 || !strings.Contains(r.Stderr, "invalid filter 'driver'") {
		t.Errorf("prune --filter driver=bridge: exit %d, %q", r.Code, r.Stderr)
	}
}

// --aux-address reserves an address of the subnet, which no container
// gets, asked for or not, and inspect shows under AuxiliaryAddresses.
func TestNetworkAuxAddress(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "--subnet", "10.60.0.0/29", "--aux-address", "router=10.60.0.2", "auxnet")
	if got := strings.TrimSpace(s.MustKnit(t, "network", "inspect", "-f", "{{json (index .IPAM.Config 0).AuxiliaryAddresses}}", "auxnet")); got != `{"router":"10.60.0.2"}` {
		t.Errorf("AuxiliaryAddresses = %s", got)
	}
	s.MustKnit(t, "run", "-d", "--name", "a1", "--network", "auxnet", "--rootfs", bb, "sleep", "300")
	if ip := ipOn(t, s, "a1", "auxnet"); ip != "10.60.0.3" {
		t.Errorf("the first container got %s, want 10.60.0.3 (10.60.0.2 is reserved)", ip)
	}
	if r := s.Knit("run", "--rm", "--network", "auxnet", "--ip", "10.60.0.2", "--rootfs", bb, "true"); r.Code != 125 || !strings.Contains(r.Stderr, "reserved") {
		t.Errorf("run --ip of the aux address: exit %d, %q", r.Code, r.Stderr)
	}
	for _, bad := range [][]string{
		{"--subnet", "10.61.0.0/24", "--aux-address", "x=10.62.0.1", "bad1"},
		{"--aux-address", "x=10.62.0.1", "bad2"},
		{"--subnet", "10.61.0.0/24", "--aux-address", "x=nonsense", "bad3"},
		{"--subnet", "10.61.0.0/24", "--aux-address", "x=10.61.0.1", "bad4"},
	} {
		if r := s.Knit(append([]string{"network", "create"}, bad...)...); r.Code == 0 || !strings.Contains(r.Stderr, "aux-address") {
			t.Errorf("network create %q: exit %d, %q", bad, r.Code, r.Stderr)
		}
	}
}

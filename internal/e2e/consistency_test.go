package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/knit-dev/knit/internal/testutil"
)

// The consistency check shared by the crash, concurrency and soak tests:
// between two commands, everything knit holds in the kernel and in its
// store is held by something live, and everything a live container or
// CNI attachment needs is there. It reads knit's store (a copy, taken under
// the store's own lock) with bbolt, and the kernel with ip, nft and /proc.

// storedContainer is the part of knit's container record the checks read.
type storedContainer struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	State struct {
		Status     string `json:"status"`
		Process    proc   `json:"process"`
		Supervisor proc   `json:"supervisor"`
		Owner      proc   `json:"owner"`
	} `json:"state"`
	OwnsNetns bool             `json:"ownsNetns"`
	Endpoints []storedEndpoint `json:"endpoints"`
	Ports     []storedPort     `json:"ports"`
}

// storedAttachment is the part of knit's record of a CNI ADD the checks read.
type storedAttachment struct {
	ContainerID string         `json:"containerId"`
	Netns       string         `json:"netns"`
	Network     string         `json:"network"`
	Endpoint    storedEndpoint `json:"endpoint"`
	Ports       []storedPort   `json:"ports"`
	Owner       proc           `json:"owner"` // zero once the ADD completed
}

type storedEndpoint struct {
	Network string         `json:"network"`
	HostIf  string         `json:"hostIf"` // "" until recorded
	Addrs   []netip.Prefix `json:"addrs"`
}

// storedPort is a published port as records keep it (firewall.PortMapping).
type storedPort struct {
	HostIP   netip.Addr
	HostPort uint16
	Proto    string
}

type proc struct {
	Pid int `json:"pid"`
}

type storedNetwork struct {
	Name     string `json:"name"`
	Bridge   string `json:"bridge"`
	Removing bool   `json:"removing"`
}

// hostLink is one link of the sandbox's host namespace (ip -j link).
type hostLink struct {
	Name   string `json:"ifname"`
	Master string `json:"master"`
	Alias  string `json:"ifalias"`
}

// sandboxProc is one process of the sandbox.
type sandboxProc struct {
	pid, ppid int
	pidNS     string
	state     string // R, S, D, Z, ...
	args      string
}

// knitState is everything knit keeps, as the store and the kernel show it
// between two commands.
type knitState struct {
	containers  map[string]*storedContainer
	attachments map[string]*storedAttachment
	networks    map[string]*storedNetwork
	buckets     map[string]map[string]string // every bucket of the store
	storeSize   int
	veths       []hostLink
	bridges     []hostLink
	mounts      []string // IDs of knit's namespace mounts
	netnsFiles  []string // entries of the exec-root's netns directory
	nft         string   // nft list table inet knit, then bridge knit
	procs       []sandboxProc
	records     []string // IDs in the DNS server's snapshot
}

// readState reads the store and the kernel state of the sandbox.
func readState(t *testing.T, s *testutil.Sandbox) *knitState {
	t.Helper()
	st := &knitState{
		containers: map[string]*storedContainer{}, attachments: map[string]*storedAttachment{},
		networks: map[string]*storedNetwork{}, buckets: map[string]map[string]string{},
	}
	st.readStore(t, s)
	decodeBucket(t, st.buckets["containers"], st.containers)
	decodeBucket(t, st.buckets["cni"], st.attachments)
	decodeBucket(t, st.buckets["networks"], st.networks)
	ipJSON := func(args ...string) []hostLink {
		var links []hostLink
		if err := json.Unmarshal([]byte(s.MustRun(t, append([]string{"ip", "-j"}, args...)...)), &links); err != nil {
			t.Fatalf("ip -j %v: %v", args, err)
		}
		return links
	}
	st.veths = ipJSON("link", "show", "type", "veth")
	st.bridges = ipJSON("link", "show", "type", "bridge")
	netnsDir := filepath.Join(s.ExecRoot(), "netns") + "/"
	for _, line := range strings.Split(s.MustRun(t, "cat", "/proc/self/mountinfo"), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.Contains(line, " - nsfs ") && strings.HasPrefix(f[4], netnsDir) {
			st.mounts = append(st.mounts, strings.TrimPrefix(f[4], netnsDir))
		}
	}
	st.netnsFiles = strings.Fields(s.Run("ls", netnsDir).Stdout)
	st.nft = s.Run("nft", "list", "table", "inet", "knit").Stdout + s.Run("nft", "list", "table", "bridge", "knit").Stdout
	// PID, PID namespace, state and parent (fields 3 and 4 of stat), command.
	ps := s.MustRun(t, "sh", "-c", `for p in /proc/[0-9]*; do printf '%s %s %s %s\n' "${p#/proc/}" "$(readlink $p/ns/pid)" "$(sed 's/.*) //' $p/stat | cut -d' ' -f1,2)" "$(tr '\0' ' ' < $p/cmdline)"; done 2>/dev/null`)
	for _, line := range strings.Split(ps, "\n") {
		if f := strings.SplitN(line, " ", 5); len(f) == 5 && f[1] != "" {
			pid, _ := strconv.Atoi(f[0])
			ppid, _ := strconv.Atoi(f[3])
			st.procs = append(st.procs, sandboxProc{pid: pid, pidNS: f[1], state: f[2], ppid: ppid, args: strings.TrimSpace(f[4])})
		}
	}
	if data := s.Run("cat", filepath.Join(s.ExecRoot(), "dns", "records.json")).Stdout; data != "" {
		var snap struct {
			Networks []struct {
				Endpoints []struct {
					Container string `json:"container"`
				} `json:"endpoints"`
			} `json:"networks"`
		}
		if err := json.Unmarshal([]byte(data), &snap); err != nil {
			t.Fatalf("records.json: %v\n%s", err, data)
		}
		for _, n := range snap.Networks {
			for _, ep := range n.Endpoints {
				st.records = append(st.records, ep.Container)
			}
		}
	}
	return st
}

// readStore reads every bucket of the store.
func (st *knitState) readStore(t *testing.T, s *testutil.Sandbox) {
	t.Helper()
	st.buckets, st.storeSize = storeBuckets(t, s)
}

// storeBuckets copies the store file out of the sandbox under a shared
// lock on knit's own lock file, so that no transaction is half-written in
// the copy, and returns every bucket of it and the file's size.
func storeBuckets(t *testing.T, s *testutil.Sandbox) (map[string]map[string]string, int) {
	t.Helper()
	buckets := map[string]map[string]string{}
	db := filepath.Join(s.DataRoot(), "knit.db")
	r := s.Run("sh", "-c", `test ! -e "$1" || flock -s "$1.lock" cat "$1"`, "sh", db)
	if r.Code != 0 {
		t.Fatalf("copy the store: %s", r.Stderr)
	}
	if r.Stdout == "" {
		return buckets, 0
	}
	path := filepath.Join(t.TempDir(), "knit.db")
	if err := os.WriteFile(path, []byte(r.Stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	bdb, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("open the store copy: %v", err)
	}
	defer bdb.Close()
	err = bdb.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			m := map[string]string{}
			buckets[string(name)] = m
			return b.ForEach(func(k, v []byte) error { m[string(k)] = string(v); return nil })
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return buckets, len(r.Stdout)
}

func decodeBucket[T any](t *testing.T, bucket map[string]string, into map[string]*T) {
	t.Helper()
	for k, v := range bucket {
		var rec T
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			t.Fatalf("record %s: %v", k, err)
		}
		into[k] = &rec
	}
}

var (
	nftOwnerRE = regexp.MustCompile(`knit:owner=([0-9a-z-]+)`)
	nftNetRE   = regexp.MustCompile(`knit:net=([^"]+)`)
	nftPortRE  = regexp.MustCompile(`(tcp|udp|sctp) \. (\d+) comment "knit:owner=([0-9a-z-]+)"`)
	// a port's leave to send from an address: "PORT" . ADDR in senders4
	// or senders6
	nftSenderRE = regexp.MustCompile(`"([^"]+)" \. ([0-9a-f.:]+) comment "knit:owner=([0-9a-z-]+)"`)
	// the sets of claimed addresses, and a claim in them
	nftGuardedRE = regexp.MustCompile(`set guarded[46] \{[^}]*\}`)
	nftClaimRE   = regexp.MustCompile(`([0-9a-f.:]+) comment "knit:owner=([0-9a-z-]+)"`)
)

// holder is what holds addresses, host ports, links and nft elements: a
// running container or a complete CNI attachment.
type holder struct {
	name      string
	endpoints []storedEndpoint
	ports     []storedPort
	netns     bool     // a namespace mount of knit's own
	pod       []string // the ports of a CNI attachment's pod's other attachments
}

// checker collects the problems of one state.
type checker struct {
	*knitState
	holders map[string]*holder // by ID
	byPid   map[int]sandboxProc
	out     []string
}

func (c *checker) bad(format string, args ...any) {
	c.out = append(c.out, fmt.Sprintf(format, args...))
}

// settingUp reports whether id is a container or CNI attachment whose
// command is still setting it up: it may hold things, not yet all.
func (c *checker) settingUp(id string) bool {
	if ct := c.containers[id]; ct != nil && ct.State.Status == "created" {
		return true
	}
	a := c.attachments[id]
	return a != nil && a.Owner.Pid != 0
}

// may reports whether id may hold an address, a port, a link or a rule.
func (c *checker) may(id string) bool { return c.holders[id] != nil || c.settingUp(id) }

// problems lists every inconsistency between the store, the kernel and the
// processes of the sandbox: none, when no knit command runs, is the
// invariant that the crash, concurrency and soak tests check.
func (st *knitState) problems() []string {
	c := &checker{knitState: st, holders: map[string]*holder{}, byPid: map[int]sandboxProc{}}
	for _, p := range st.procs {
		c.byPid[p.pid] = p
	}
	for id, ct := range st.containers {
		if ct.State.Status == "running" {
			c.holders[id] = &holder{name: "container " + ct.Name, endpoints: ct.Endpoints, ports: ct.Ports, netns: ct.OwnsNetns}
		}
	}
	for id, a := range st.attachments {
		if a.Owner.Pid == 0 {
			h := &holder{name: "CNI attachment " + id, endpoints: []storedEndpoint{a.Endpoint}, ports: a.Ports}
			for sid, s := range st.attachments {
				if sid != id && s.ContainerID == a.ContainerID && s.Netns == a.Netns && s.Endpoint.HostIf != "" {
					h.pod = append(h.pod, s.Endpoint.HostIf)
				}
			}
			c.holders[id] = h
		}
	}
	c.records()
	c.allocations()
	c.firewall()
	for id, h := range c.holders {
		c.holder(id, h)
	}
	c.links()
	c.processes()
	sort.Strings(c.out)
	return c.out
}

// records checks the records and their indexes against each other, and
// that a container or attachment being set up has a live setter-up.
func (c *checker) records() {
	for id, ct := range c.containers {
		switch ct.State.Status {
		case "running":
			if _, ok := c.byPid[ct.State.Supervisor.Pid]; !ok {
				c.bad("container %s runs without its supervisor %d", ct.Name, ct.State.Supervisor.Pid)
			}
			if _, ok := c.byPid[ct.State.Process.Pid]; !ok {
				c.bad("container %s is recorded running, but its process %d is gone", ct.Name, ct.State.Process.Pid)
			}
		case "created":
			if _, ok := c.byPid[ct.State.Owner.Pid]; !ok {
				c.bad("container %s is being created by %d, which is gone", ct.Name, ct.State.Owner.Pid)
			}
		case "exited":
		default:
			c.bad("container %s has status %q", ct.Name, ct.State.Status)
		}
		if owner := c.buckets["names"][ct.Name]; owner != id {
			c.bad("name %s maps to %q, not to its container %s", ct.Name, owner, id)
		}
	}
	for id, a := range c.attachments {
		if _, ok := c.byPid[a.Owner.Pid]; a.Owner.Pid != 0 && !ok {
			c.bad("CNI attachment %s is being added by %d, which is gone", id, a.Owner.Pid)
		}
	}
	for name, id := range c.buckets["names"] {
		if ct := c.containers[id]; ct == nil || ct.Name != name {
			c.bad("name %s maps to %s, which has no such record", name, id)
		}
	}
	for id := range c.buckets["live"] {
		if ct := c.containers[id]; ct == nil || ct.State.Status == "exited" {
			c.bad("live index holds %s, which is not live", id)
		}
	}
	for id := range c.buckets["dns"] {
		if !c.may(id) {
			c.bad("dns index holds %s, which is not live", id)
		}
	}
	for _, id := range c.knitState.records {
		if _, ok := c.buckets["dns"][id]; !ok {
			c.bad("the DNS server's records name %s, which the store's dns index lacks", id)
		}
	}
	for _, n := range c.networks {
		if n.Removing {
			c.bad("network %s is left half removed", n.Name)
		}
	}
}

// allocations checks that addresses and host ports are held by live
// holders only, and that none is given to two.
func (c *checker) allocations() {
	for bucket, m := range c.buckets {
		net, isIPAM := strings.CutPrefix(bucket, "ipam/")
		if !isIPAM && !strings.HasPrefix(bucket, "ports/") {
			continue
		}
		if isIPAM && c.networks[net] == nil && len(m) > 0 {
			c.bad("addresses of a network that does not exist: %s %v", bucket, m)
		}
		for k, owner := range m {
			if !c.may(owner) {
				c.bad("%s %s is held by %s, which is not live", bucket, k, owner)
			}
		}
	}
	addrs := map[string]string{} // network/address → holder
	ports := map[string]string{} // proto/port/host address → holder
	for _, h := range c.holders {
		for _, ep := range h.endpoints {
			for _, a := range ep.Addrs {
				key := ep.Network + "/" + a.Addr().String()
				if other, dup := addrs[key]; dup {
					c.bad("%s is the address of both %s and %s", key, other, h.name)
				}
				addrs[key] = h.name
			}
		}
		for _, p := range h.ports {
			key := fmt.Sprintf("%s/%d/%s", p.Proto, p.HostPort, hostKey(p))
			wild := fmt.Sprintf("%s/%d/*", p.Proto, p.HostPort)
			for _, k := range []string{key, wild} {
				if other, dup := ports[k]; dup && other != h.name {
					c.bad("host port %s is published by both %s and %s", k, other, h.name)
				}
			}
			ports[key] = h.name
		}
	}
}

// hostKey is how the store's ports buckets name a host address.
func hostKey(p storedPort) string {
	if p.HostIP.IsValid() {
		return p.HostIP.Unmap().String()
	}
	return "*"
}

// firewall checks that every element and rule of knit's table belongs to
// something that exists.
func (c *checker) firewall() {
	for _, m := range nftOwnerRE.FindAllStringSubmatch(c.nft, -1) {
		if !c.may(m[1]) {
			c.bad("nft element owned by %s, which is not live", m[1])
		}
	}
	for _, m := range nftNetRE.FindAllStringSubmatch(c.nft, -1) {
		if c.networks[m[1]] == nil {
			c.bad("nft rules of network %s, which does not exist", m[1])
		}
	}
}

// holder checks that what h needs is there and its own: addresses, host
// ports and their elements, its links and its namespace.
func (c *checker) holder(id string, h *holder) {
	ports := map[string]bool{}
	for _, m := range nftPortRE.FindAllStringSubmatch(c.nft, -1) {
		ports[m[1]+"/"+m[2]+"/"+m[3]] = true
	}
	for _, ep := range h.endpoints {
		for _, a := range ep.Addrs {
			if owner := c.buckets["ipam/"+ep.Network][a.Addr().String()]; owner != id {
				c.bad("%s's address %s/%s is held by %q", h.name, ep.Network, a.Addr(), owner)
			}
		}
		n := c.networks[ep.Network]
		if n == nil {
			c.bad("%s is on network %s, which does not exist", h.name, ep.Network)
			continue
		}
		// A record from before the supervisor recorded the start's link
		// names has no HostIf: the veth is found by its alias.
		if !slices.ContainsFunc(c.veths, func(l hostLink) bool {
			return l.Alias == "knit:"+id && l.Master == n.Bridge && (ep.HostIf == "" || ep.HostIf == l.Name)
		}) {
			c.bad("%s's link on %s (%q) is gone", h.name, n.Bridge, ep.HostIf)
		}

	}
	for _, p := range h.ports {
		key := fmt.Sprintf("%s/%d", p.Proto, p.HostPort)
		owner := c.buckets["ports/"+key][hostKey(p)]
		if owner != id && p.HostIP.IsUnspecified() {
			owner = c.buckets["ports/"+key]["*"] // the [::] twin of a port published on every address
		}
		if owner != id {
			c.bad("%s's host port %s %s is held by %q", h.name, hostKey(p), key, owner)
		}
		if !ports[key+"/"+id] {
			c.bad("%s's published port %s has no nft element", h.name, key)
		}
	}
	if h.netns && !slices.Contains(c.mounts, id) {
		c.bad("%s's namespace mount is gone", h.name)
	}
	c.claims(id, h)
}

// claims checks that h claims exactly its addresses, for exactly its
// ports (and its pod's): each port may send from each of its addresses
// (once every port is recorded; a record from before the supervisor
// recorded them may have none).
func (c *checker) claims(id string, h *holder) {
	wantSenders, wantClaims := map[string]bool{}, map[string]bool{}
	ports := slices.Clone(h.pod)
	for _, p := range h.endpoints {
		if p.HostIf == "" {
			return
		}
		ports = append(ports, p.HostIf)
	}
	for _, p := range ports {
		for _, ep := range h.endpoints {
			for _, a := range ep.Addrs {
				wantSenders[p+" "+a.Addr().String()] = true
				wantClaims[a.Addr().String()] = true
			}
		}
	}
	haveSenders, haveClaims := map[string]bool{}, map[string]bool{}
	for _, m := range nftSenderRE.FindAllStringSubmatch(c.nft, -1) {
		if m[3] == id {
			haveSenders[m[1]+" "+m[2]] = true
		}
	}
	for _, set := range nftGuardedRE.FindAllString(c.nft, -1) {
		for _, m := range nftClaimRE.FindAllStringSubmatch(set, -1) {
			if m[2] == id {
				haveClaims[m[1]] = true
			}
		}
	}
	for _, d := range []struct {
		what       string
		want, have map[string]bool
	}{{"port's leave to send from", wantSenders, haveSenders}, {"claim on", wantClaims, haveClaims}} {
		for k := range d.want {
			if !d.have[k] {
				c.bad("%s lacks its %s %s", h.name, d.what, k)
			}
		}
		for k := range d.have {
			if !d.want[k] {
				c.bad("%s has a %s %s that is not its own", h.name, d.what, k)
			}
		}
	}
}

// links checks that every bridge belongs to a network, every veth to a
// holder with an endpoint on its bridge, and every namespace of the
// exec-root to a live container.
func (c *checker) links() {
	bridges := map[string]bool{}
	for _, n := range c.networks {
		bridges[n.Bridge] = true
	}
	for _, b := range c.bridges {
		// admin-*: a test's own, made as an administrator would.
		if !bridges[b.Name] && !strings.HasPrefix(b.Name, "admin-") {
			c.bad("bridge %s belongs to no network", b.Name)
		}
	}
	for _, l := range c.veths {
		id, tagged := strings.CutPrefix(l.Alias, "knit:")
		if !tagged && !bridges[l.Master] {
			if l.Name != "wan0" { // the sandbox's own
				c.bad("veth %s (master %q) names no owner: a half-made veth nothing will remove", l.Name, l.Master)
			}
			continue
		}
		var eps []storedEndpoint
		switch {
		case c.holders[id] != nil:
			eps = c.holders[id].endpoints
		case c.settingUp(id):
			continue
		default:
			c.bad("veth %s (alias %q, on %s) belongs to nothing live", l.Name, l.Alias, l.Master)
			continue
		}
		if !slices.ContainsFunc(eps, func(ep storedEndpoint) bool {
			n := c.networks[ep.Network]
			return n != nil && n.Bridge == l.Master && (ep.HostIf == "" || ep.HostIf == l.Name)
		}) {
			c.bad("veth %s (alias %q) is on %s, where its owner has no endpoint", l.Name, l.Alias, l.Master)
		}
	}
	for _, id := range append(slices.Clone(c.mounts), c.netnsFiles...) {
		if !c.may(id) {
			c.bad("namespace %s of the exec-root belongs to no live container", id)
		}
	}
}

// processes checks that supervisors and container processes (in PID
// namespaces of their own) belong to running containers only.
func (c *checker) processes() {
	sandboxNS := c.byPid[1].pidNS
	containerNS := map[string]bool{}
	for _, ct := range c.containers {
		if p, ok := c.byPid[ct.State.Process.Pid]; ok && ct.State.Status == "running" {
			containerNS[p.pidNS] = true
		}
	}
	for _, p := range c.procs {
		f := strings.Fields(p.args)
		if i := slices.Index(f, "_supervise"); i >= 0 && i+1 < len(f) {
			if ct := c.containers[f[i+1]]; ct == nil || ct.State.Status == "exited" {
				c.bad("supervisor %d of %s outlives its container", p.pid, f[i+1])
			}
		}
		if p.pidNS != sandboxNS && !containerNS[p.pidNS] {
			c.bad("process %d (%s, state %s, parent %d) runs in a PID namespace of no running container", p.pid, p.args, p.state, p.ppid)
		}
	}
}

// assertConsistent fails the test with every problem found, after giving
// the kernel a few seconds to finish destroying namespaces (their veths go
// asynchronously), and returns the state.
func assertConsistent(t *testing.T, s *testutil.Sandbox, label string) *knitState {
	t.Helper()
	var st *knitState
	var probs []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st = readState(t, s)
		if probs = st.problems(); len(probs) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(probs) > 0 {
		var links, nets []string
		for _, l := range st.veths {
			links = append(links, fmt.Sprintf("%s master=%s alias=%s", l.Name, l.Master, l.Alias))
		}
		for _, n := range st.networks {
			nets = append(nets, fmt.Sprintf("%s bridge=%s removing=%v", n.Name, n.Bridge, n.Removing))
		}
		t.Fatalf("%s: inconsistent state:\n  %s\nnetworks:\n  %s\nveths:\n  %s\nnft:\n%s", label, strings.Join(probs, "\n  "),
			strings.Join(nets, "\n  "), strings.Join(links, "\n  "), st.nft)
	}
	return st
}

// assertEmpty checks that knit holds nothing: no container, attachment,
// address, host port, veth, namespace or nft element, and no network but
// the default one.
func assertEmpty(t *testing.T, s *testutil.Sandbox, label string) *knitState {
	t.Helper()
	st := assertConsistent(t, s, label)
	var left []string
	if len(st.containers)+len(st.attachments) > 0 {
		left = append(left, fmt.Sprintf("%d containers, %d CNI attachments", len(st.containers), len(st.attachments)))
	}
	for bucket, m := range st.buckets {
		if (strings.HasPrefix(bucket, "ipam/") || strings.HasPrefix(bucket, "ports/") || bucket == "live" ||
			bucket == "names" || bucket == "dns" || strings.HasPrefix(bucket, "joins/") || strings.HasPrefix(bucket, "linkedby/")) && len(m) > 0 {
			left = append(left, fmt.Sprintf("%s: %v", bucket, m))
		}
	}
	for _, l := range st.veths {
		if l.Name != "wan0" {
			left = append(left, "veth "+l.Name)
		}
	}
	if len(st.mounts)+len(st.netnsFiles) > 0 {
		left = append(left, fmt.Sprintf("namespaces %v %v", st.mounts, st.netnsFiles))
	}
	if m := nftOwnerRE.FindAllString(st.nft, -1); len(m) > 0 {
		left = append(left, fmt.Sprintf("nft elements %v", m))
	}
	for name := range st.networks {
		if name != "bridge" {
			left = append(left, "network "+name)
		}
	}
	if len(left) > 0 {
		t.Errorf("%s: left behind:\n  %s", label, strings.Join(left, "\n  "))
	}
	return st
}

// The check must see what it looks for: strays of every kind are reported,
// and so is what a running container lost.
func TestConsistencyCheckSeesStrays(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	serve(t, s, bb, "keeper", "-p", "8090:80")
	assertConsistent(t, s, "one container")
	netns := s.ExecRoot() + "/netns/"
	s.MustRun(t, "touch", netns+"deadbeef")
	s.MustRun(t, "unshare", "--net="+netns+"deadbeef", "true")
	s.MustRun(t, "ip", "link", "add", "vethdead000", "type", "veth", "peer", "name", "vethdead001")
	s.MustRun(t, "ip", "link", "set", "vethdead000", "master", "knit0", "alias", "knit:cafe0000")
	s.MustRun(t, "ip", "link", "add", "vethhalf000", "type", "veth", "peer", "name", "vethhalf001")
	s.MustRun(t, "nft", "add", "element", "inet", "knit", "pub4any",
		`{ tcp . 7070 comment "knit:owner=cafe0000" : 172.17.0.9 . 80 }`)
	s.MustRun(t, "ip", "link", "add", "br-0123456789ab", "type", "bridge")
	st := readState(t, s)
	got := strings.Join(st.problems(), "\n")
	for _, want := range []string{"namespace deadbeef", "veth vethdead000", "veth vethhalf000", "owned by cafe0000", "bridge br-0123456789ab"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	// The keeper's own objects, taken away, are missed.
	var hostIf string
	for _, l := range st.veths {
		if l.Master == "knit0" && l.Name != "vethdead000" {
			hostIf = l.Name
		}
	}
	s.MustRun(t, "ip", "link", "set", hostIf, "nomaster")
	s.MustRun(t, "nft", "flush", "map", "inet", "knit", "pub4any")
	got = strings.Join(readState(t, s).problems(), "\n")
	for _, want := range []string{"keeper's link on knit0", "keeper's published port tcp/8090 has no nft element"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
}

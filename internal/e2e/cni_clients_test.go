package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/testutil"
)

// The CNI clients other than cnitool (libcni's API, Podman) and chains
// with Debian's reference plugins. The helpers are in cni_test.go.

// knit followed by Debian's tuning plugin: tuning changes the MAC and a
// sysctl of knit's interface, knit's CHECK accepts the change.
func TestCNIChainTuning(t *testing.T) {
	needPlugins(t, "tuning")
	h := cniSandbox(t)
	// Debian's plugins (1.1.1) speak up to 1.0.0.
	h.conflist(t, "tun", "1.0.0", `{"type":"knit","subnet":"10.87.0.0/24","bridge":"ktun"}`,
		`{"type":"tuning","mac":"c2:11:22:33:44:55","sysctl":{"net.ipv4.conf.eth0.arp_announce":"2"}}`)
	ns := h.netns(t, "a")
	r := parseResult(t, h.mustCnitool(t, "add", "tun", ns))
	if i := r.ifaceIndex("eth0", ns); i < 0 || r.Interfaces[i].Mac != "c2:11:22:33:44:55" {
		t.Errorf("result interfaces %+v: want tuning's MAC on eth0", r.Interfaces)
	}
	if out := h.s.MustRun(t, "ip", "-n", "a", "link", "show", "eth0"); !strings.Contains(out, "c2:11:22:33:44:55") {
		t.Errorf("eth0:\n%s", out)
	}
	if v := h.s.MustRun(t, "ip", "netns", "exec", "a", "cat", "/proc/sys/net/ipv4/conf/eth0/arp_announce"); strings.TrimSpace(v) != "2" {
		t.Errorf("arp_announce = %q", v)
	}
	h.attached(t, ns, "10.87.0.2/24", "10.87.0.1", "ktun")
	h.mustCnitool(t, "check", "tun", ns)
	h.mustCnitool(t, "del", "tun", ns)
	h.detached(t, "ktun", "10.87.0.2")
}

// knit followed by Debian's portmap plugin: portmap's iptables DNAT reaches
// the address knit gave.
func TestCNIChainPortmap(t *testing.T) {
	needPlugins(t, "portmap")
	h := cniSandbox(t)
	h.conflist(t, "pm", "1.0.0", `{"type":"knit","subnet":"10.88.0.0/24","bridge":"kpm"}`,
		`{"type":"portmap","capabilities":{"portMappings":true},"snat":true}`)
	ns := h.netns(t, "web")
	caps := `CAP_ARGS={"portMappings":[{"hostPort":8084,"containerPort":80,"protocol":"tcp"}]}`
	h.mustCnitool(t, "add", "pm", ns, caps)
	h.s.Start(t, "ip", "netns", "exec", "web", "busybox", "httpd", "-f", "-p", "80", "-h", webRoot(t, h, "pmweb"))
	reaches(t, h.s, world, "198.51.100.1", 8084, "pmweb")
	reaches(t, h.s, nil, "127.0.0.1", 8084, "pmweb")
	// (portmap 1.1.1's own CHECK fails without IPv6 NAT chains, so the
	// chain is not CHECKed here.)
	h.mustCnitool(t, "del", "pm", ns, caps)
	blocked(t, h.s, world, "198.51.100.1", 8084)
	h.detached(t, "kpm", "10.88.0.2")
}

// knit placed second after a plugin that returns a result (loopback)
// keeps that result and appends its own.
func TestCNIKnitSecondInChain(t *testing.T) {
	needPlugins(t, "loopback")
	h := cniSandbox(t)
	h.conflist(t, "second", "1.0.0", `{"type":"loopback"}`, `{"type":"knit","subnet":"10.89.0.0/24","bridge":"ksec"}`)
	ns := h.netns(t, "a")
	r := parseResult(t, h.mustCnitool(t, "add", "second", ns))
	lo, eth0 := r.ifaceIndex("lo", ns), r.ifaceIndex("eth0", ns)
	if lo != 0 || eth0 != 2 || len(r.Interfaces) != 3 {
		t.Fatalf("interfaces %+v: want lo first, then knit's veth and eth0", r.Interfaces)
	}
	var got []string
	for _, ip := range r.IPs {
		got = append(got, fmt.Sprintf("%s@%d", ip.Address, *ip.Interface))
	}
	if want := []string{"127.0.0.1/8@0", "::1/128@0", "10.89.0.2/24@2"}; !slices.Equal(got, want) {
		t.Errorf("ips %v, want %v", got, want)
	}
	h.attached(t, ns, "10.89.0.2/24", "10.89.0.1", "ksec")
	h.mustCnitool(t, "check", "second", ns)
	h.mustCnitool(t, "del", "second", ns)
	h.detached(t, "ksec", "10.89.0.2")
}

// libcniDriver installs testdata/libcnidrive (libcni's API as a runtime
// links it) in the sandbox and returns a function running it with the
// network configurations, plugin path and a result cache of the sandbox.
func libcniDriver(t *testing.T, h *cniHost, cacheDir string) func(args ...string) testutil.Result {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "libcnidrive")
	if err := os.WriteFile(bin, tool(t, "libcnidrive"), 0o755); err != nil {
		t.Fatal(err)
	}
	return func(args ...string) testutil.Result {
		flags := []string{bin, "-confdir", h.confDir, "-path", h.path, "-cachedir", cacheDir}
		return h.s.Run(append(flags, args...)...)
	}
}

// libcni's API drives knit as containerd and CRI-O do: AddNetworkList,
// CheckNetworkList, GetStatusNetworkList, GCNetworkList (knit's own GC,
// since the second cache knows no attachment) and DelNetworkList.
func TestCNILibcni(t *testing.T) {
	h := cniSandbox(t)
	drive := libcniDriver(t, h, filepath.Join(h.s.Dir(), "cache"))
	forgetful := libcniDriver(t, h, filepath.Join(h.s.Dir(), "empty-cache"))
	must := func(r testutil.Result) string {
		t.Helper()
		if r.Code != 0 {
			t.Fatalf("libcnidrive: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
		}
		return r.Stdout
	}
	h.conflist(t, "lib", "1.1.0", `{"type":"knit","subnet":"10.79.0.0/24","bridge":"klib","capabilities":{"aliases":true}}`)
	nsA, nsB := h.netns(t, "a"), h.netns(t, "b")
	ra := parseResult(t, must(drive("-net", "lib", "-id", "ctr-a", "-netns", nsA, "-caps", `{"aliases":{"lib":["alpha"]}}`, "add")))
	must(drive("-net", "lib", "-id", "ctr-b", "-netns", nsB, "add"))
	if len(ra.IPs) != 1 || ra.IPs[0].Address != "10.79.0.2/24" {
		t.Errorf("ADD a: %+v", ra.IPs)
	}
	h.attached(t, nsA, "10.79.0.2/24", "10.79.0.1", "klib")
	h.attached(t, nsB, "10.79.0.3/24", "10.79.0.1", "klib")
	must(drive("-net", "lib", "-id", "ctr-a", "-netns", nsA, "check"))
	must(drive("-net", "lib", "status"))
	if v := strings.TrimSpace(must(drive("-net", "lib", "version"))); v != strings.Join(cniVersions, " ") {
		t.Errorf("VERSION through libcni: %q, want %v", v, cniVersions)
	}
	if ls := h.s.MustKnit(t, "cni", "ls", "--network", "lib"); !strings.Contains(ls, "alpha") {
		t.Errorf("the alias is not the attachment's name:\n%s", ls)
	}
	must(forgetful("-net", "lib", "-valid", "ctr-a/eth0", "gc"))
	ls := h.s.MustKnit(t, "cni", "ls")
	if !strings.Contains(ls, "10.79.0.2/24") || strings.Contains(ls, "10.79.0.3/24") {
		t.Errorf("GC keeping ctr-a/eth0:\n%s", ls)
	}
	if l := h.s.MustRun(t, "ip", "-o", "link", "show", "master", "klib"); strings.Count(l, "\n") != 1 {
		t.Errorf("GC left ctr-b's veth:\n%s", l)
	}
	must(drive("-net", "lib", "-id", "ctr-a", "-netns", nsA, "del"))
	must(drive("-net", "lib", "-id", "ctr-b", "-netns", nsB, "del")) // already collected: DEL still succeeds
	h.detached(t, "klib", "10.79.0.2")
}

// podman runs Podman (Debian 12's 4.3.1) inside the sandbox with its CNI
// backend pointed at the sandbox's configurations and plugin path, and all
// its state (vfs storage, run and tmp directories, events) in the
// sandbox's directory. The sandbox's fresh /sys has no cgroup file system,
// which crun insists on even with --cgroups=disabled: the host's cgroup2
// hierarchy is mounted read-only there, so nothing can change it.
func podman(t *testing.T, h *cniHost) func(args ...string) testutil.Result {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("needs podman (apt-get install podman, as .ci/run does)")
	}
	dir := filepath.Join(h.s.Dir(), "podman")
	conf := fmt.Sprintf(`[network]
network_backend = "cni"
cni_plugin_dirs = [%q, "/usr/lib/cni"]
network_config_dir = %q
[engine]
tmp_dir = %q
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
`, filepath.Join(h.s.Dir(), "cni-bin"), h.confDir, dir+"/tmp", dir+"/events.log")
	storage := fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", dir+"/root", dir+"/run")
	h.s.MustRun(t, "sh", "-c", `mkdir -p "$1/tmp" && printf '%s' "$2" > "$1/containers.conf" && printf '%s' "$3" > "$1/storage.conf" &&
		mount -t cgroup2 -o ro,nosuid,nodev,noexec cgroup2 /sys/fs/cgroup`, "sh", dir, conf, storage)
	return func(args ...string) testutil.Result {
		env := []string{"env", "CONTAINERS_CONF=" + dir + "/containers.conf", "CONTAINERS_STORAGE_CONF=" + dir + "/storage.conf", "podman"}
		return h.s.Run(append(env, args...)...)
	}
}

// Podman's CNI backend with a knit conflist: the container gets knit's
// address, its published port is knit's, a `knit run` container resolves
// it by name, and podman rm takes everything away.
func TestCNIPodman(t *testing.T) {
	h := cniSandbox(t)
	run := podman(t, h)
	bb := testutil.Busybox(t)
	// Podman's cleanup after a container exits runs in conmon's exit
	// command, whose environment has no KNIT_* variables: the knit state
	// must be named in the configuration, else that DEL goes to the
	// default /var/lib/knit and the sandbox's attachment leaks.
	h.conflist(t, "knitpod", "1.0.0", fmt.Sprintf(`{"type":"knit","subnet":"10.77.0.0/24","bridge":"kpod",
		"dataRoot":%q,"execRoot":%q,"capabilities":{"portMappings":true,"aliases":true}}`, h.s.DataRoot(), h.s.ExecRoot()))
	r := run("run", "-d", "--name", "web", "--cgroups=disabled", "--network", "knitpod", "-p", "8086:80",
		"--rootfs", bb, "httpd", "-f", "-p", "80", "-h", "/etc")
	if r.Code != 0 {
		t.Fatalf("podman run: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	id := strings.TrimSpace(r.Stdout)[:12] // also the container's hostname
	if ls := h.s.MustKnit(t, "cni", "ls", "--network", "knitpod"); !strings.Contains(ls, id+"   eth0") || !strings.Contains(ls, "web") || !strings.Contains(ls, "10.77.0.2/24") {
		t.Errorf("knit cni ls:\n%s", ls)
	}
	if r := run("exec", "web", "ip", "-o", "-4", "addr", "show", "eth0"); !strings.Contains(r.Stdout, "10.77.0.2/24") {
		t.Errorf("podman exec ip addr: %s%s", r.Stdout, r.Stderr)
	}
	reaches(t, h.s, world, "198.51.100.1", 8086, id)
	reaches(t, h.s, nil, "127.0.0.1", 8086, id)
	if out := h.s.MustKnit(t, "run", "--rm", "--network", "knitpod", "--rootfs", bb, "nslookup", "web", "10.77.0.1"); !strings.Contains(out, "10.77.0.2") {
		t.Errorf("a knit run container does not resolve Podman's web:\n%s", out)
	}
	if r := run("rm", "-f", "-t", "0", "web"); r.Code != 0 {
		t.Fatalf("podman rm: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	h.detached(t, "kpod", "10.77.0.2")
	blocked(t, h.s, world, "198.51.100.1", 8086)
}

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/bench/peers/floor"
	"github.com/knit-dev/knit/internal/config"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/driver/bridge"
	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/firewall/nftables"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/store/bolt"
)

const (
	hostPortBase = 20000 // container i publishes hostPortBase+i
	ctrPort      = 80
	execLimit    = time.Minute // one exec of a peer's binary
)

var (
	cniBin       = "/usr/lib/cni"
	netavarkBin  = "/usr/lib/podman/netavark"
	aardvarkBin  = "/usr/lib/podman/aardvark-dns"
	cniSubnet    = netip.MustParsePrefix("10.88.0.0/16")
	nvSubnet     = netip.MustParsePrefix("10.89.0.0/16")
	floorSubnet  = netip.MustParsePrefix("10.90.0.0/16")
	floorGateway = netip.MustParsePrefix("10.90.0.1/16")
)

// ---- knit, through the engine API as bench/attach_test.go drives it ----

type knitTool struct {
	e      *engine.Engine
	noPort bool // "knit-noport": the same container without -p, to show what publishing costs
}

// newKnitEngine returns an engine whose state lives under dir; its
// firewall works in the calling process's (the sandbox's) namespace.
func newKnitEngine(dir string) (*engine.Engine, error) {
	p := engine.Paths{
		DataRoot:   filepath.Join(dir, "lib"),
		ExecRoot:   filepath.Join(dir, "run"),
		Config:     filepath.Join(dir, "config.json"),
		NetnsLinks: filepath.Join(dir, "netns-links"),
	}
	cfg, err := config.Load(p.Config)
	if err != nil {
		return nil, err
	}
	fw := nftables.New(nftables.WithStamp(p.FirewallStamp())) // as cmd/knit
	return engine.New(engine.Options{
		Paths: p, Config: cfg, Store: bolt.Open(filepath.Join(p.DataRoot, "knit.db")),
		Drivers:  map[string]driver.Driver{"bridge": bridge.New()},
		Firewall: fw,
	})
}

func newKnit() (*knitTool, error) {
	e, err := newKnitEngine(filepath.Join(workDir, "knit"))
	if err != nil {
		return nil, err
	}
	return &knitTool{e: e}, nil
}

// knitRunOptions is `knit run -p HOSTPORT:80 IMAGE true` on the default
// network, up to the start of the process.
func knitRunOptions(hostPort, port uint16) engine.RunOptions {
	return engine.RunOptions{Args: []string{"true"}, Publish: []portmap.Spec{{
		HostPortFirst: hostPort, HostPortLast: hostPort,
		ContainerFirst: port, ContainerLast: port, Proto: portmap.TCP}}}
}

func (k *knitTool) attach(i int) (any, error) {
	o := knitRunOptions(uint16(hostPortBase+i), ctrPort)
	if k.noPort {
		o.Publish = nil
	}
	c, err := k.e.Create(o)
	if err != nil {
		return nil, err
	}
	return c.ID, nil
}

func (k *knitTool) detach(h any) error { return k.e.Remove(h.(string), engine.RemoveOptions{}) }

// ---- the floor: only the kernel calls ----

type floorTool struct{ f *floor.Floor }

func newFloor() (*floorTool, error) {
	f, err := floor.New(filepath.Join(workDir, "floor"), "floor0", floorGateway)
	if err != nil {
		return nil, err
	}
	return &floorTool{f: f}, nil
}

func (t *floorTool) attach(i int) (any, error) {
	return t.f.Attach(i, addrOf(floorSubnet, i), uint16(hostPortBase+i), ctrPort)
}

func (t *floorTool) detach(h any) error { return t.f.Detach(h.(*floor.Endpoint)) }

// ---- runtimes that exec a tool per operation ----

// nsDir holds the namespaces a runtime makes for the peers. Making and
// deleting the namespace is the runtime's part of attach and detach, and
// is timed with the peer's exec (it costs well under a millisecond).
var nsDir = filepath.Join(workDir, "netns")

func newNs(i int) (string, error) {
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(nsDir, fmt.Sprint("c", i))
	return path, netns.Create(path, nil)
}

// run executes a peer's binary, bounded in time, with stdin and extra
// environment, and returns its error with its output.
func run(stdin []byte, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), execLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, oneLine(out.String()))
	}
	return nil
}

// ---- the CNI reference chain, as a runtime drives it through libcni ----

type cniTool struct {
	name string // of the network in the conflist
	env  []string
}

type cniHandle struct{ netns, capArgs string }

// newCNIChain writes the conflist of the reference chain: bridge with
// host-local addresses and a gateway that masquerades, then portmap.
// cnitool keeps its result cache in /var/lib/cni and host-local its
// leases below it: both go on a tmpfs of the sandbox's own.
func newCNIChain() (*cniTool, error) {
	if err := privateVarLibCNI(); err != nil {
		return nil, err
	}
	conf := map[string]any{
		"cniVersion": "1.0.0", "name": "bench",
		"plugins": []any{
			map[string]any{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
				"ipam": map[string]any{"type": "host-local",
					"ranges": [][]map[string]string{{{"subnet": cniSubnet.String()}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}}}},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
		},
	}
	return newCNITool("bench", conf, cniBin)
}

// newKnitCNI is the HOOK for the column "knit via cnitool": knit's own CNI
// plugin, executed by cnitool exactly as the reference chain is, so the
// two columns differ only in the plugin. knitBin is a knit binary; it is
// installed in a private plugin directory as "knit" (what `knit cni
// install --dir` does). The plugin configuration below follows
// internal/cni/config.go (type "knit", "network", "dataRoot", "execRoot",
// the portMappings capability); adjust it here if the plugin's keys change.
func newKnitCNI(knitBin string) (*cniTool, error) {
	if knitBin == "" {
		return nil, fmt.Errorf("no knit binary given (-knit-cni)")
	}
	if err := privateVarLibCNI(); err != nil {
		return nil, err
	}
	dir := filepath.Join(workDir, "knit-cni")
	plugins := filepath.Join(dir, "bin")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		return nil, err
	}
	if err := run(nil, nil, knitBin, "cni", "install", "--dir", plugins); err != nil {
		return nil, err
	}
	conf := map[string]any{
		"cniVersion": "1.1.0", "name": "knit-bench",
		"plugins": []any{map[string]any{"type": "knit", "network": "bridge",
			"dataRoot": filepath.Join(dir, "lib"), "execRoot": filepath.Join(dir, "run"),
			"capabilities": map[string]bool{"portMappings": true}}},
	}
	t, err := newCNITool("knit-bench", conf, plugins)
	if err != nil {
		return nil, err
	}
	t.env = append(t.env, "KNIT_DATA_ROOT="+filepath.Join(dir, "lib"), "KNIT_EXEC_ROOT="+filepath.Join(dir, "run"),
		"KNIT_CONFIG="+filepath.Join(dir, "config.json"))
	return t, nil
}

// privateVarLibCNI puts a tmpfs of the sandbox's own on /var/lib, with an
// empty cni directory in it (nothing else in the sandbox reads /var/lib).
func privateVarLibCNI() error {
	if err := unix.Mount("bench", "/var/lib", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("tmpfs on /var/lib: %w", err)
	}
	return os.MkdirAll("/var/lib/cni", 0o755)
}

func newCNITool(name string, conf map[string]any, pluginDir string) (*cniTool, error) {
	dir := filepath.Join(workDir, "cni-conf-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".conflist"), b, 0o644); err != nil {
		return nil, err
	}
	return &cniTool{name: name, env: []string{"CNI_PATH=" + pluginDir, "NETCONFPATH=" + dir}}, nil
}

func (t *cniTool) attach(i int) (any, error) {
	ns, err := newNs(i)
	if err != nil {
		return nil, err
	}
	capArgs := fmt.Sprintf(`{"portMappings":[{"hostPort":%d,"containerPort":%d,"protocol":"tcp"}]}`, hostPortBase+i, ctrPort)
	if err := run(nil, append(t.env, "CAP_ARGS="+capArgs), "cnitool", "add", t.name, ns); err != nil {
		return nil, err
	}
	return cniHandle{ns, capArgs}, nil
}

func (t *cniTool) detach(h any) error {
	c := h.(cniHandle)
	if err := run(nil, append(t.env, "CAP_ARGS="+c.capArgs), "cnitool", "del", t.name, c.netns); err != nil {
		return err
	}
	return netns.Delete(c.netns)
}

// ---- netavark, as Podman drives it: its own IPAM, then setup/teardown ----

type netavarkTool struct{ config string }

type nvHandle struct {
	netns string
	opts  []byte
}

func newNetavark() (*netavarkTool, error) {
	dir := filepath.Join(workDir, "netavark")
	return &netavarkTool{config: dir}, os.MkdirAll(dir, 0o755)
}

// netavarkOptions is the JSON Podman pipes to `netavark setup` and
// `teardown` for one container on its default network (as in netavark's
// test/testfiles/*.json): the address is Podman's choice, here i's.
func netavarkOptions(i int) ([]byte, error) {
	id := fmt.Sprintf("%x", sha256.Sum256([]byte(fmt.Sprint("container", i))))
	gw := nvSubnet.Addr().Next()
	return json.Marshal(map[string]any{
		"container_id": id, "container_name": fmt.Sprint("c", i),
		"port_mappings": []map[string]any{{"host_ip": "", "container_port": ctrPort, "host_port": hostPortBase + i,
			"range": 1, "protocol": "tcp"}},
		"networks": map[string]any{"podman": map[string]any{
			"static_ips": []string{addrOf(nvSubnet, i).String()}, "aliases": []string{id[:12]}, "interface_name": "eth0"}},
		"network_info": map[string]any{"podman": map[string]any{
			"name": "podman", "id": "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9",
			"driver": "bridge", "network_interface": "podman0",
			"subnets":      []map[string]string{{"subnet": nvSubnet.String(), "gateway": gw.String()}},
			"ipv6_enabled": false, "internal": false, "dns_enabled": false,
			"ipam_options": map[string]string{"driver": "host-local"}}},
	})
}

func (t *netavarkTool) attach(i int) (any, error) {
	opts, err := netavarkOptions(i)
	if err != nil {
		return nil, err
	}
	ns, err := newNs(i)
	if err != nil {
		return nil, err
	}
	if err := run(opts, nil, netavarkBin, "--config", t.config, "setup", ns); err != nil {
		return nil, err
	}
	return nvHandle{ns, opts}, nil
}

func (t *netavarkTool) detach(h any) error {
	c := h.(nvHandle)
	if err := run(c.opts, nil, netavarkBin, "--config", t.config, "teardown", c.netns); err != nil {
		return err
	}
	return netns.Delete(c.netns)
}

package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/netns"
)

// fakeEngine records the calls and answers with a fixed attachment.
type fakeEngine struct {
	calls   []string
	paths   engine.Paths
	req     engine.CNIRequest
	keep    func(string, string) bool
	err     error // returned by every call
	getErr  error
	att     *engine.CNIAttachment
	network *engine.Network
	// existing is what NetworkByRef finds; nil: no such network.
	existing *engine.Network
}

func (f *fakeEngine) NetworkByRef(ref string) (*engine.Network, error) {
	if f.existing == nil {
		return nil, errdefs.NotFound("network %s not found", ref)
	}
	return f.existing, nil
}

func (f *fakeEngine) CNIAdd(req engine.CNIRequest) (*engine.CNIAttachment, *engine.Network, error) {
	f.calls, f.req = append(f.calls, "add"), req
	if f.err != nil {
		return nil, nil, f.err
	}
	if req.Accept != nil && f.network != nil {
		if err := req.Accept(f.network); err != nil {
			return nil, nil, err
		}
	}
	a := *f.att
	a.ContainerID, a.IfName, a.Netns = req.ContainerID, req.IfName, req.Netns
	return &a, f.network, nil
}

func (f *fakeEngine) CNIDel(_, containerID, ifname string) error {
	f.calls = append(f.calls, "del "+containerID+" "+ifname)
	return f.err
}

func (f *fakeEngine) CNIGet(containerID, ifname string) (*engine.CNIAttachment, error) {
	f.calls = append(f.calls, "get "+containerID+" "+ifname)
	if f.getErr != nil {
		return nil, f.getErr
	}
	return f.att, nil
}

func (f *fakeEngine) CNICheck(containerID, ifname, netns string) error {
	f.calls = append(f.calls, "check "+containerID+" "+ifname+" "+netns)
	return f.err
}

func (f *fakeEngine) CNIGC(network, config string, keep func(string, string) bool) ([]string, error) {
	f.calls, f.keep = append(f.calls, "gc "+network), keep
	return nil, f.err
}

func (f *fakeEngine) CNIStatus(o engine.NetworkCreateOptions) error {
	f.calls = append(f.calls, "status "+o.Name)
	return f.err
}

// testAttachment is a dual-stack attachment of /run/netns/x on knet.
func testAttachment() (*engine.CNIAttachment, *engine.Network) {
	a := &engine.CNIAttachment{
		ContainerID: "ctr1", IfName: "eth0", Netns: "/run/netns/x", Network: "knet",
		Endpoint: engine.Endpoint{Network: "knet", Endpoint: driver.Endpoint{
			HostIf: "veth1234567", MAC: net.HardwareAddr{2, 0x42, 10, 88, 0, 2},
			Addrs:        []netip.Prefix{netip.MustParsePrefix("10.88.0.2/24"), netip.MustParsePrefix("fd00:88::2/64")},
			Gateways:     []netip.Addr{netip.MustParseAddr("10.88.0.1"), netip.MustParseAddr("fd00:88::1")},
			DefaultRoute: true,
		}},
	}
	n := &engine.Network{DNS: true, Network: driver.Network{Name: "knet", Subnets: []driver.Subnet{
		{Prefix: netip.MustParsePrefix("10.88.0.0/24"), Gateway: netip.MustParseAddr("10.88.0.1")},
		{Prefix: netip.MustParsePrefix("fd00:88::/64"), Gateway: netip.MustParseAddr("fd00:88::1")},
	}}}
	return a, n
}

type invocation struct {
	env   map[string]string
	stdin string
}

// call runs Main against f with the given environment and stdin, and
// returns the exit status and stdout.
func call(t *testing.T, f *fakeEngine, inv invocation) (int, string) {
	t.Helper()
	var stdout bytes.Buffer
	code := Main(Env{
		NewEngine: func(p engine.Paths) (Engine, error) {
			f.paths = p
			return f, nil
		},
		Getenv: func(k string) string { return inv.env[k] },
		Stdin:  strings.NewReader(inv.stdin),
		Stdout: &stdout,
		HostMAC: func(string) (net.HardwareAddr, error) {
			return net.HardwareAddr{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}, nil
		},
		IsNetns: func(p string) bool { return p == standInNetns || netns.IsNet(p) },
	})
	return code, stdout.String()
}

// standInNetns stands in for a network namespace other than the plugin's
// (which a test cannot make without root): it exists, and call's IsNetns
// takes it for one; the fake engine enters nothing. A plain file is
// refused (TestErrorCodes), and the kernel's check is netns's test.
const standInNetns = "/proc/self/ns/uts"

func plainFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ns")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func addEnv(netns string) map[string]string {
	return map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr1", "CNI_IFNAME": "eth0", "CNI_NETNS": netns, "CNI_PATH": "/opt/cni/bin"}
}

func compact(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	return b.String()
}

// The ADD result of every advertised version, exactly.
func TestAddResultPerVersion(t *testing.T) {
	const (
		ifaces   = `"interfaces":[{"mac":"aa:bb:cc:dd:ee:ff","name":"veth1234567"},{"mac":"02:42:0a:58:00:02","name":"eth0","sandbox":"NS"}]`
		ifaces04 = `"interfaces":[{"name":"veth1234567","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"02:42:0a:58:00:02","sandbox":"NS"}]`
		ips      = `"ips":[{"address":"10.88.0.2/24","gateway":"10.88.0.1","interface":1},{"address":"fd00:88::2/64","gateway":"fd00:88::1","interface":1}]`
		ips04    = `"ips":[{"version":"4","interface":1,"address":"10.88.0.2/24","gateway":"10.88.0.1"},{"version":"6","interface":1,"address":"fd00:88::2/64","gateway":"fd00:88::1"}]`
		routes   = `"routes":[{"dst":"0.0.0.0/0","gw":"10.88.0.1"},{"dst":"::/0","gw":"fd00:88::1"}]`
		dns      = `"dns":{"nameservers":["10.88.0.1"],"search":["svc.test"],"options":["ndots:5"]}`
		dns1     = `"dns":{"nameservers":["10.88.0.1"],"options":["ndots:5"],"search":["svc.test"]}`
	)
	want := map[string]string{
		"0.3.0": `{"cniVersion":"0.3.0",` + ifaces04 + `,` + ips04 + `,` + routes + `,` + dns + `}`,
		"0.3.1": `{"cniVersion":"0.3.1",` + ifaces04 + `,` + ips04 + `,` + routes + `,` + dns + `}`,
		"0.4.0": `{"cniVersion":"0.4.0",` + ifaces04 + `,` + ips04 + `,` + routes + `,` + dns + `}`,
		"1.0.0": `{"cniVersion":"1.0.0",` + dns1 + `,` + ifaces + `,` + ips + `,` + routes + `}`,
		"1.1.0": `{"cniVersion":"1.1.0",` + dns1 + `,` + ifaces + `,` + ips + `,` + routes + `}`,
	}
	for _, v := range Versions {
		t.Run(v, func(t *testing.T) {
			a, n := testAttachment()
			f := &fakeEngine{att: a, network: n}
			ns := standInNetns
			conf := fmt.Sprintf(`{"cniVersion":%q,"name":"knet","type":"knit","runtimeConfig":{"dns":{"searches":["svc.test"],"options":["ndots:5"]}}}`, v)
			code, out := call(t, f, invocation{addEnv(ns), conf})
			if code != 0 {
				t.Fatalf("exit %d: %s", code, out)
			}
			if got, w := compact(t, out), strings.ReplaceAll(want[v], "NS", ns); got != w {
				t.Errorf("result\n got %s\nwant %s", got, w)
			}
		})
	}
}

// knit second in a chain keeps the previous plugin's result and appends
// its own, with interface indexes shifted past the previous interfaces.
func TestAddMergesPrevResult(t *testing.T) {
	a, n := testAttachment()
	a.Endpoint.Addrs, a.Endpoint.Gateways = a.Endpoint.Addrs[:1], a.Endpoint.Gateways[:1]
	f := &fakeEngine{att: a, network: n}
	ns := standInNetns
	conf := `{"cniVersion":"1.0.0","name":"knet","type":"knit","prevResult":{"cniVersion":"1.0.0",
		"interfaces":[{"name":"lo","mac":"00:00:00:00:00:00","sandbox":"` + ns + `"}],
		"ips":[{"interface":0,"address":"127.0.0.1/8"}],"dns":{"nameservers":["10.88.0.1","8.8.8.8"]}}}`
	code, out := call(t, f, invocation{addEnv(ns), conf})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	want := `{"cniVersion":"1.0.0","dns":{"nameservers":["10.88.0.1","8.8.8.8"]},"interfaces":[` +
		`{"mac":"00:00:00:00:00:00","name":"lo","sandbox":"NS"},{"mac":"aa:bb:cc:dd:ee:ff","name":"veth1234567"},{"mac":"02:42:0a:58:00:02","name":"eth0","sandbox":"NS"}],` +
		`"ips":[{"address":"127.0.0.1/8","interface":0},{"address":"10.88.0.2/24","gateway":"10.88.0.1","interface":2}],` +
		`"routes":[{"dst":"0.0.0.0/0","gw":"10.88.0.1"}]}`
	if got, w := compact(t, out), strings.ReplaceAll(want, "NS", ns); got != w {
		t.Errorf("merged result\n got %s\nwant %s", got, w)
	}
	// A pre-1.0 prevResult without cniVersion is read as the config's version.
	conf = `{"cniVersion":"0.4.0","name":"knet","prevResult":{"interfaces":[{"name":"lo","sandbox":"` + ns + `"}],"ips":[{"version":"4","interface":0,"address":"127.0.0.1/8"}]}}`
	if code, out := call(t, f, invocation{addEnv(ns), conf}); code != 0 || !strings.Contains(out, `"interface": 2`) {
		t.Errorf("0.4.0 prevResult without cniVersion: exit %d\n%s", code, out)
	}
	// A prevResult that is not a result, or has null entries, is code 6.
	for _, prev := range []string{
		`{"cniVersion":"1.0.0","ips":"x"}`,
		`{"cniVersion":"1.0.0","interfaces":[null]}`,
		`{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"},null]}`,
		`{"cniVersion":"1.0.0","routes":[null]}`,
		`{"cniVersion":"0.4.0","ips":[null]}`,
		`{"interfaces":[{"name":"lo"}, null]}`,
	} {
		conf = `{"cniVersion":"1.0.0","name":"knet","prevResult":` + prev + `}`
		if code, out := call(t, f, invocation{addEnv(ns), conf}); code != 1 || !strings.Contains(out, `"code": 6`) {
			t.Errorf("prevResult %s: exit %d\n%s", prev, code, out)
		}
	}
}

func TestAddPassesTheRequest(t *testing.T) {
	a, n := testAttachment()
	f := &fakeEngine{att: a, network: n}
	env := addEnv(standInNetns)
	env["CNI_ARGS"] = "IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=default"
	env["KNIT_DATA_ROOT"], env["KNIT_EXEC_ROOT"] = "/env/lib", "/env/run"
	conf := `{"cniVersion":"1.1.0","name":"knet","execRoot":"/conf/run","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80}]}}`
	if code, out := call(t, f, invocation{env, conf}); code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if f.req.Name != "web-0" || len(f.req.Ports) != 1 || f.req.Ports[0].Proto != "tcp" || f.req.Network.Name != "knet" {
		t.Errorf("request %+v", f.req)
	}
	if f.paths.DataRoot != "/env/lib" || f.paths.ExecRoot != "/conf/run" || f.paths.Config != engine.DefaultPaths().Config {
		t.Errorf("paths %+v: want the config's execRoot over the environment's, the environment's dataRoot", f.paths)
	}
}

// Each kind of engine error has its code.
func TestAddEngineErrors(t *testing.T) {
	a, n := testAttachment()
	for err, code := range map[error]int{
		errdefs.Invalid("invalid subnet"):            CodeInvalidConfig,
		errdefs.Conflict("address in use"):           CodeConflict,
		errdefs.NotFound("network x not found"):      CodeNotFound,
		fmt.Errorf("add veth: %w", errors.New("no")): CodeKnitFailed,
	} {
		f := &fakeEngine{att: a, network: n, err: err}
		status, out := call(t, f, invocation{addEnv(standInNetns), `{"cniVersion":"0.4.0","name":"knet"}`})
		var e Error
		if status != 1 || json.Unmarshal([]byte(out), &e) != nil || int(e.Code) != code || e.CNIVersion != "0.4.0" ||
			e.Msg != "ADD failed" || e.Details != err.Error() {
			t.Errorf("%v: exit %d, %s; want code %d in version 0.4.0", err, status, out, code)
		}
	}
}

func TestErrorJSON(t *testing.T) {
	f := &fakeEngine{}
	_, out := call(t, f, invocation{map[string]string{"CNI_COMMAND": "ADD"}, `{"cniVersion":"1.0.0","name":"n"}`})
	want := `{
    "cniVersion": "1.1.0",
    "code": 4,
    "msg": "missing environment variables",
    "details": "CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS required by ADD"
}
`
	if out != want {
		t.Errorf("error JSON\n%s\nwant\n%s", out, want)
	}
}

// Refusals before the engine is reached: the spec's code, nothing called.
func TestRefusals(t *testing.T) {
	ns := standInNetns
	env := func(cmd string, extra ...string) map[string]string {
		m := map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": "ctr1", "CNI_IFNAME": "eth0", "CNI_NETNS": ns}
		for i := 0; i < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name  string
		env   map[string]string
		stdin string
		code  uint
	}{
		{"unknown command", env("FROB"), `{"cniVersion":"1.1.0","name":"n"}`, CodeInvalidEnv},
		{"bad container ID", env("ADD", "CNI_CONTAINERID", "-x"), `{"cniVersion":"1.1.0","name":"n"}`, CodeInvalidEnv},
		{"bad ifname", env("DEL", "CNI_IFNAME", "a/b"), `{"cniVersion":"1.1.0","name":"n"}`, CodeInvalidEnv},
		{"missing netns", env("ADD", "CNI_NETNS", "/nonexistent/ns"), `{"cniVersion":"1.1.0","name":"n"}`, CodeInvalidEnv},
		{"netns a plain file", env("ADD", "CNI_NETNS", plainFile(t)), `{"cniVersion":"1.1.0","name":"n"}`, CodeInvalidEnv},
		{"own netns", env("ADD", "CNI_NETNS", "/proc/self/ns/net"), `{"cniVersion":"1.1.0","name":"n"}`, CodeInvalidEnv},
		{"bad CNI_ARGS", env("ADD", "CNI_ARGS", "X=1"), `{"cniVersion":"1.1.0","name":"n"}`, CodeUnsupportedField},
		{"bad JSON", env("ADD"), `{`, CodeDecodingFailure},
		{"unknown version", env("DEL"), `{"cniVersion":"9.9.9","name":"n"}`, CodeIncompatibleVersion},
		{"CHECK before 0.4.0", env("CHECK"), `{"cniVersion":"0.3.1","name":"n"}`, CodeIncompatibleVersion},
		{"GC before 1.1.0", env("GC"), `{"cniVersion":"1.0.0","name":"n"}`, CodeIncompatibleVersion},
		{"STATUS before 1.1.0", env("STATUS"), `{"cniVersion":"0.4.0","name":"n"}`, CodeIncompatibleVersion},
		{"ipam section", env("ADD"), `{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local"}}`, CodeUnsupportedField},
		{"bad status config", env("STATUS"), `{"cniVersion":"1.1.0","name":"n","subnet":"x"}`, CodeInvalidConfig},
	} {
		f := &fakeEngine{}
		status, out := call(t, f, invocation{tc.env, tc.stdin})
		var e Error
		if status != 1 || json.Unmarshal([]byte(out), &e) != nil || e.Code != tc.code {
			t.Errorf("%s: exit %d, %s; want code %d", tc.name, status, out, tc.code)
		}
		if len(f.calls) > 0 {
			t.Errorf("%s: the engine was called: %v", tc.name, f.calls)
		}
	}
}

func TestVersion(t *testing.T) {
	for stdin, want := range map[string]string{
		`{"cniVersion":"0.4.0"}`: `{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`,
		``:                       `{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`,
	} {
		code, out := call(t, &fakeEngine{}, invocation{map[string]string{"CNI_COMMAND": "VERSION"}, stdin})
		if code != 0 || out != want {
			t.Errorf("VERSION with %q: exit %d, %s", stdin, code, out)
		}
	}
}

// DEL works from the container ID and interface alone: no netns, no
// prevResult, no usable runtimeConfig.
func TestDelNeedsOnlyTheRecord(t *testing.T) {
	f := &fakeEngine{}
	env := map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "ctr1", "CNI_IFNAME": "eth0", "CNI_ARGS": "garbage"}
	code, out := call(t, f, invocation{env, `{"cniVersion":"0.3.0","name":"knet","runtimeConfig":{"portMappings":7}}`})
	if code != 0 || out != "" || len(f.calls) != 1 || f.calls[0] != "del ctr1 eth0" {
		t.Errorf("DEL: exit %d, %q, calls %v", code, out, f.calls)
	}
	f.err = errdefs.Conflict("store busy")
	if code, out := call(t, f, invocation{env, `{"cniVersion":"0.3.0","name":"knet"}`}); code != 1 || !strings.Contains(out, `"code": 101`) {
		t.Errorf("failed DEL: exit %d, %s", code, out)
	}
}

func TestCheck(t *testing.T) {
	a, n := testAttachment()
	env := map[string]string{"CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "ctr1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/x"}
	prev := `"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"veth1234567"},{"name":"eth0","sandbox":"/run/netns/x"}],
		"ips":[{"interface":1,"address":"10.88.0.2/24"},{"interface":1,"address":"fd00:88::2/64"}]}`
	conf := `{"cniVersion":"1.1.0","name":"knet",` + prev + `}`

	f := &fakeEngine{att: a, network: n}
	if code, out := call(t, f, invocation{env, conf}); code != 0 || out != "" {
		t.Errorf("CHECK: exit %d, %s", code, out)
	}
	if want := "check ctr1 eth0 /run/netns/x"; len(f.calls) != 2 || f.calls[1] != want {
		t.Errorf("calls %v, want %q", f.calls, want)
	}
	// Without prevResult the engine's comparison alone decides.
	if code, out := call(t, f, invocation{env, `{"cniVersion":"0.4.0","name":"knet"}`}); code != 0 {
		t.Errorf("CHECK without prevResult: exit %d, %s", code, out)
	}
	// A bridge-plugin key ADD refuses now (an attachment made before it
	// did) does not fail CHECK, nor DEL.
	old := `{"cniVersion":"1.1.0","name":"knet","vlan":100,"isGateway":false}`
	if code, out := call(t, f, invocation{env, old}); code != 0 {
		t.Errorf("CHECK with vlan and isGateway false: exit %d, %s", code, out)
	}
	del := map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "ctr1", "CNI_IFNAME": "eth0"}
	if code, out := call(t, f, invocation{del, old}); code != 0 {
		t.Errorf("DEL with vlan and isGateway false: exit %d, %s", code, out)
	}
	add := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr2", "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/y"}
	if code, out := call(t, f, invocation{add, old}); code != 1 || !strings.Contains(out, `"code": 2`) {
		t.Errorf("ADD with vlan: exit %d, %s; want code 2", code, out)
	}
	for name, tc := range map[string]struct {
		f    *fakeEngine
		conf string
		code string
		msg  string
	}{
		"unknown":         {&fakeEngine{getErr: errdefs.NotFound("no attachment")}, conf, `"code": 3`, "no attachment"},
		"differs":         {&fakeEngine{att: a, err: errdefs.Conflict("interface eth0 is down")}, conf, `"code": 103`, "eth0 is down"},
		"kernel failure":  {&fakeEngine{att: a, err: errors.New("netlink: boom")}, conf, `"code": 100`, "boom"},
		"address missing": {&fakeEngine{att: a}, strings.Replace(conf, "10.88.0.2/24", "10.88.0.3/24", 1), `"code": 103`, "lacks address 10.88.0.2/24"},
		"wrong index":     {&fakeEngine{att: a}, strings.Replace(conf, `"interface":1,"address":"fd00`, `"interface":0,"address":"fd00`, 1), `"code": 103`, "fd00:88::2/64"},
		"no interface":    {&fakeEngine{att: a}, strings.Replace(conf, `"sandbox":"/run/netns/x"`, `"sandbox":"/run/netns/y"`, 1), `"code": 103`, "no interface eth0"},
	} {
		code, out := call(t, tc.f, invocation{env, tc.conf})
		if code != 1 || !strings.Contains(out, tc.code) || !strings.Contains(out, tc.msg) {
			t.Errorf("%s: exit %d, %s; want %s mentioning %q", name, code, out, tc.code, tc.msg)
		}
	}
}

func TestGC(t *testing.T) {
	f := &fakeEngine{}
	conf := `{"cniVersion":"1.1.0","name":"cfg","network":"knet","runtimeConfig":"ignored",
		"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"net1"}]}`
	code, out := call(t, f, invocation{map[string]string{"CNI_COMMAND": "GC"}, conf})
	if code != 0 || out != "" || len(f.calls) != 1 || f.calls[0] != "gc knet" {
		t.Fatalf("GC: exit %d, %q, calls %v", code, out, f.calls)
	}
	for _, tc := range []struct {
		id, ifname string
		keep       bool
	}{{"a", "eth0", true}, {"b", "net1", true}, {"a", "net1", false}, {"c", "eth0", false}} {
		if got := f.keep(tc.id, tc.ifname); got != tc.keep {
			t.Errorf("keep(%s, %s) = %v", tc.id, tc.ifname, got)
		}
	}
	f.err = errors.Join(errors.New("unpublish ports: x"), errors.New("leave: y"))
	if code, out := call(t, f, invocation{map[string]string{"CNI_COMMAND": "GC"}, conf}); code != 1 || !strings.Contains(out, `"code": 100`) {
		t.Errorf("failed GC: exit %d, %s", code, out)
	}

	// The list under the spec's first name is read too; with no list at
	// all (libcni's GC without valid attachments), nothing is kept.
	f = &fakeEngine{}
	old := strings.Replace(conf, "cni.dev/valid-attachments", "cni.dev/attachments", 1)
	if code, out := call(t, f, invocation{map[string]string{"CNI_COMMAND": "GC"}, old}); code != 0 || !f.keep("b", "net1") || f.keep("c", "eth0") {
		t.Errorf("GC with cni.dev/attachments: exit %d, %q, keep(b, net1) %v", code, out, f.keep("b", "net1"))
	}
	f = &fakeEngine{}
	none := `{"cniVersion":"1.1.0","name":"cfg","network":"knet"}`
	if code, out := call(t, f, invocation{map[string]string{"CNI_COMMAND": "GC"}, none}); code != 0 || f.keep("a", "eth0") {
		t.Errorf("GC without a list: exit %d, %s; want every attachment removed", code, out)
	}
}

func TestStatus(t *testing.T) {
	env := map[string]string{"CNI_COMMAND": "STATUS"}
	conf := `{"cniVersion":"1.1.0","name":"knet","subnet":"10.88.0.0/24"}`
	f := &fakeEngine{}
	if code, out := call(t, f, invocation{env, conf}); code != 0 || out != "" || f.calls[0] != "status knet" {
		t.Errorf("STATUS: exit %d, %s, %v", code, out, f.calls)
	}
	f.err = errdefs.Conflict("network knet has no free address in 10.88.0.0/24")
	if code, out := call(t, f, invocation{env, conf}); code != 1 || !strings.Contains(out, `"code": 50`) || !strings.Contains(out, "no free address") {
		t.Errorf("exhausted: exit %d, %s", code, out)
	}
	// A configuration that disagrees with the existing network, which ADD
	// would refuse, is not ready either.
	f = &fakeEngine{existing: &engine.Network{Network: driver.Network{Name: "knet", Bridge: "knet0",
		Subnets: []driver.Subnet{{Prefix: netip.MustParsePrefix("10.99.0.0/24")}}}}}
	if code, out := call(t, f, invocation{env, conf}); code != 1 || !strings.Contains(out, `"code": 50`) || !strings.Contains(out, "10.99.0.0/24") {
		t.Errorf("mismatched network: exit %d, %s", code, out)
	}
	f = &fakeEngine{}
	// A firewall that cannot be used fails existing attachments too.
	f.err = fmt.Errorf("%w: nftables: list tables: protocol not supported", engine.ErrFirewallUnusable)
	if code, out := call(t, f, invocation{env, conf}); code != 1 || !strings.Contains(out, `"code": 51`) || !strings.Contains(out, "firewall") {
		t.Errorf("unusable firewall: exit %d, %s", code, out)
	}
	// An engine that cannot start fails existing attachments too; a
	// configuration knit refuses only new ones.
	for err, code := range map[error]string{
		errors.New("nftables: not supported"): `"code": 51`,
		errdefs.Invalid("config: bad bip"):    `"code": 50`,
	} {
		var stdout bytes.Buffer
		status := Main(Env{
			NewEngine: func(engine.Paths) (Engine, error) { return nil, err },
			Getenv:    func(k string) string { return env[k] },
			Stdin:     strings.NewReader(conf), Stdout: &stdout,
		})
		if status != 1 || !strings.Contains(stdout.String(), code) {
			t.Errorf("engine error %v: exit %d, %s; want %s", err, status, stdout.String(), code)
		}
	}
}

func TestInvoked(t *testing.T) {
	set := func(string) string { return "ADD" }
	unset := func(string) string { return "" }
	if !Invoked(nil, set) || Invoked([]string{"_dns"}, set) || Invoked(nil, unset) {
		t.Error("Invoked: want true only with CNI_COMMAND set and no arguments")
	}
}

// panicEngine fails the way a nil dereference in the engine does.
type panicEngine struct{ fakeEngine }

func (*panicEngine) CNIDel(string, string, string) error { panic("boom") }

// A panic still gives the runtime an error JSON and a failed exit.
func TestPanicIsAnError(t *testing.T) {
	var stdout, stderr bytes.Buffer
	status := Main(Env{
		NewEngine: func(engine.Paths) (Engine, error) { return &panicEngine{}, nil },
		Getenv: func(k string) string {
			return map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"}[k]
		},
		Stdin: strings.NewReader(`{"cniVersion":"0.4.0","name":"n"}`), Stdout: &stdout, Stderr: &stderr,
	})
	var e Error
	if status != 1 || json.Unmarshal(stdout.Bytes(), &e) != nil || e.Code != CodeKnitFailed || e.Details != "panic: boom" || e.CNIVersion != "0.4.0" {
		t.Errorf("exit %d, %s", status, stdout.String())
	}
	if !strings.Contains(stderr.String(), "goroutine") {
		t.Errorf("no stack on stderr: %q", stderr.String())
	}
}

// ADD refuses a configuration that disagrees with the existing network it
// names (subnet, gateway, range, bridge, IPv6, MTU, ICC, masquerade), or a
// name knit would take as another network's ID prefix.
func TestAddChecksTheExistingNetwork(t *testing.T) {
	a, n := testAttachment()
	ns := standInNetns
	for conf, want := range map[string]string{
		`{"cniVersion":"1.1.0","name":"knet"}`:                                                   "",
		`{"cniVersion":"1.1.0","name":"knet","subnet":"10.88.0.0/24","gateway":"10.88.0.1"}`:     "",
		`{"cniVersion":"1.1.0","name":"knet","subnet":"fd00:88::/64","bridge":"kbr"}`:            "",
		`{"cniVersion":"1.1.0","name":"knet","subnet":"10.99.0.0/24"}`:                           "exists with subnets 10.88.0.0/24, fd00:88::/64, but the configuration asks for subnet 10.99.0.0/24",
		`{"cniVersion":"1.1.0","name":"knet","gateway":"10.88.0.254"}`:                           "gateway 10.88.0.254",
		`{"cniVersion":"1.1.0","name":"knet","bridge":"other"}`:                                  "exists with bridge kbr",
		`{"cniVersion":"1.1.0","name":"k","network":"knet","subnet":"10.88.0.0/24","mtu":1500}`:  "",
		`{"cniVersion":"1.1.0","name":"k","network":"knet","subnet":"10.88.0.0/24","mtu":9000}`:  "exists with mtu 1500, but the configuration asks for mtu 9000",
		`{"cniVersion":"1.1.0","name":"knet","ipv6":true,"ipMasq":false}`:                        "",
		`{"cniVersion":"1.1.0","name":"knet","ipRange":"10.88.0.128/25"}`:                        "ipRange 10.88.0.128/25",
		`{"cniVersion":"1.1.0","name":"knet","icc":true}`:                                        "exists with icc false",
		`{"cniVersion":"1.1.0","name":"knet","ipMasq":true}`:                                     "exists with ip-masq false",
		`{"cniVersion":"1.1.0","name":"d","network":"dc10","subnet":"10.88.0.0/24","ipv6":true}`: "ID prefix of network knet",
	} {
		n.Bridge = "kbr"
		f := &fakeEngine{att: a, network: n, existing: n}
		code, out := call(t, f, invocation{addEnv(ns), conf})
		if want == "" && code != 0 || want != "" && (code != 1 || !strings.Contains(out, `"code": 7`) || !strings.Contains(out, want)) {
			t.Errorf("%s: exit %d\n%s\nwant %q", conf, code, out, want)
		}
		if want != "" && slices.Contains(f.calls, "add") {
			t.Errorf("%s: refused, but CNIAdd was called", conf)
		}
	}
}

// When the network did not exist at the check but another configuration's
// concurrent ADD made it first, with other settings, the ADD is refused as
// if the network had existed: the engine asks again before it attaches
// anything, so there is nothing to undo (a DEL after the ADD, outside the
// attachment's lock, could take another ADD's attachment).
func TestAddRecheckAfterAConcurrentCreate(t *testing.T) {
	a, n := testAttachment() // the winner's network: 10.88.0.0/24
	f := &fakeEngine{att: a, network: n}
	code, out := call(t, f, invocation{addEnv(standInNetns), `{"cniVersion":"1.1.0","name":"knet","subnet":"10.99.0.0/24"}`})
	if code != 1 || !strings.Contains(out, `"code": 7`) || !strings.Contains(out, "asks for subnet 10.99.0.0/24") {
		t.Errorf("exit %d\n%s", code, out)
	}
	if want := []string{"add"}; !slices.Equal(f.calls, want) {
		t.Errorf("calls %v, want %v", f.calls, want)
	}
}

// An internal network never masquerades, whatever its record's flag, nor
// does a routed family: a configuration with ipMasq false fits them.
func TestNetworkMismatchInternalMasquerade(t *testing.T) {
	_, n := testAttachment()
	n.Internal, n.Masquerade = true, true // as network create --internal records it
	noMasq := engine.NetworkCreateOptions{Name: "knet", Options: map[string]string{"ip-masq": "false"}}
	if err := networkMismatch(n, noMasq); err != nil {
		t.Errorf("internal: networkMismatch = %v, want none", err)
	}
	// Nor does a network routed in all its families.
	n.Internal, n.Routed, n.Routed6 = false, true, true
	if err := networkMismatch(n, noMasq); err != nil {
		t.Errorf("routed: networkMismatch = %v, want none", err)
	}
	n.Routed6 = false // its IPv6 subnet is masqueraded
	if err := networkMismatch(n, noMasq); err == nil {
		t.Error("half routed: networkMismatch = nil, want ip-masq true")
	}
}

// A configuration asking for IPv6 does not fit a network without an IPv6
// subnet: ADD would give its containers IPv4 only, silently.
func TestNetworkMismatchIPv6(t *testing.T) {
	_, n := testAttachment()
	n.Subnets = n.Subnets[:1] // IPv4 only
	if err := networkMismatch(n, engine.NetworkCreateOptions{Name: "knet", IPv6: true}); err == nil || !strings.Contains(err.Details, "no IPv6 subnet") {
		t.Errorf("networkMismatch = %v, want no IPv6 subnet", err)
	}
}

// "ipv4": false asks for an IPv6-only network, and only that fits it;
// "ipv4": true only a network with IPv4; a configuration without the key
// fits either, as one without "ipv6" does.
func TestNetworkMismatchIPv4(t *testing.T) {
	_, dual := testAttachment()
	_, v6only := testAttachment()
	v6only.Subnets = slices.DeleteFunc(v6only.Subnets, func(s driver.Subnet) bool { return s.Prefix.Addr().Is4() })
	for _, tc := range []struct {
		n    *engine.Network
		ipv4 string // the configuration's, "" for none
		want string // "" for a fit
	}{
		{dual, "", ""}, {dual, "true", ""}, {dual, "false", "an IPv4 subnet"},
		{v6only, "", ""}, {v6only, "false", ""}, {v6only, "true", "no IPv4 subnet"},
	} {
		o := engine.NetworkCreateOptions{Name: "knet", Options: map[string]string{}}
		if tc.ipv4 != "" {
			o.Options["ipv4"] = tc.ipv4
		}
		err := networkMismatch(tc.n, o)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Details, tc.want)) {
			t.Errorf("IPv4 subnet %v, ipv4 %q: networkMismatch = %v, want %q", tc.n.HasIPv4(), tc.ipv4, err, tc.want)
		}
	}
	var c NetConf
	if err := json.Unmarshal([]byte(`{"ipv6":true,"ipv4":false}`), &c); err != nil {
		t.Fatal(err)
	}
	if o, err := c.NetworkOptions(); err != nil || o.Options["ipv4"] != "false" {
		t.Errorf(`"ipv4": false: options %v, %v`, o.Options, err)
	}
}

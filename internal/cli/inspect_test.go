package cli

import (
	"encoding/json"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/store"
	"github.com/knit-dev/knit/internal/store/bolt"
)

// testEngine returns an engine over a private store that records the
// "bridge" network with the given ID.
func testEngine(t *testing.T, bridgeID string) *engine.Engine {
	t.Helper()
	st := bolt.Open(filepath.Join(t.TempDir(), "knit.db"))
	n := engine.Network{Network: driver.Network{ID: bridgeID, Name: "bridge", Driver: "bridge", Subnets: []driver.Subnet{
		{Prefix: netip.MustParsePrefix("172.17.0.0/16"), Gateway: netip.MustParseAddr("172.17.0.1")},
		{Prefix: netip.MustParsePrefix("fd00::/64"), Gateway: netip.MustParseAddr("fd00::1")},
	}}}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	// "networks" is the engine's bucket of network records (state.go).
	if err := st.Update(func(tx store.Tx) error { return tx.Put("networks", "bridge", b) }); err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Options{Paths: engine.DefaultPaths(), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func inspectContainer() *engine.Container {
	created := time.Date(2025, 3, 1, 12, 0, 0, 123, time.UTC)
	mac, _ := net.ParseMAC("02:42:ac:11:00:02")
	return &engine.Container{
		ID: testID, Name: "web", Created: created,
		Spec: engine.Spec{
			Args: []string{"sh", "-c", "sleep 1"}, Env: []string{"A=1"}, Workdir: "/srv", Hostname: "h1",
			NetworkMode: "bridge", DNS: []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2001:db8::53")},
			DNSSearch: []string{"example.com"}, DNSOptions: []string{"ndots:2"}, ExtraHosts: []string{"db:10.0.0.5"},
			Tty: true, Interactive: true, AutoRemove: true,
		},
		State: engine.State{
			Status: engine.StatusRunning, Process: engine.Proc{Pid: 4242, Start: 7},
			StartedAt: created.Add(time.Second),
		},
		Netns: "/run/knit/netns/" + testID, OwnsNetns: true,
		Endpoints: []engine.Endpoint{{Network: "bridge", Endpoint: driver.Endpoint{
			MAC:      mac,
			Addrs:    []netip.Prefix{netip.MustParsePrefix("172.17.0.2/16"), netip.MustParsePrefix("fd00::2/64")},
			Gateways: []netip.Addr{netip.MustParseAddr("172.17.0.1"), netip.MustParseAddr("fd00::1")},
		}}},
		Dir: "/var/lib/knit/containers/" + testID,
	}
}

func TestNewInspectViewRunning(t *testing.T) {
	e := testEngine(t, "netid")
	c := inspectContainer()
	got := (&app{}).newInspectView(e, c)

	dir := c.Dir
	ep := endpointView{
		Gateway: "172.17.0.1", IPAddress: "172.17.0.2", IPPrefixLen: 16,
		IPv6Gateway: "fd00::1", GlobalIPv6Address: "fd00::2", GlobalIPv6PrefixLen: 64,
		MacAddress: "02:42:ac:11:00:02",
	}
	inNet := ep
	inNet.NetworkID, inNet.EndpointID = "netid", endpointID(testID, "bridge")
	want := &inspectView{
		Id:             testID,
		Created:        "2025-03-01T12:00:00.000000123Z",
		Path:           "sh",
		Args:           []string{"-c", "sleep 1"},
		Name:           "/web",
		HostnamePath:   dir + "/hostname",
		HostsPath:      dir + "/hosts",
		ResolvConfPath: dir + "/resolv.conf",
		State: stateView{
			Status: "running", Running: true, Pid: 4242,
			StartedAt: "2025-03-01T12:00:01.000000123Z", FinishedAt: "0001-01-01T00:00:00Z",
		},
		Config: configView{
			Hostname: "h1", Env: []string{"A=1"}, Cmd: []string{"sh", "-c", "sleep 1"}, WorkingDir: "/srv",
			Tty: true, OpenStdin: true, AttachStdout: true, Labels: map[string]string{},
		},
		HostConfig: hostConfigView{
			NetworkMode: "bridge", Dns: []string{"1.1.1.1", "2001:db8::53"}, DnsSearch: []string{"example.com"},
			DnsOptions: []string{"ndots:2"}, ExtraHosts: []string{"db:10.0.0.5"}, AutoRemove: true,
			RestartPolicy: restartPolicyView{Name: "no"}, PortBindings: map[string][]portBinding{},
		},
		NetworkSettings: networkSettings{
			Ports:        map[string][]portBinding{},
			SandboxKey:   c.Netns,
			endpointView: ep,
			Networks:     map[string]endpointView{"bridge": inNet},
		},
	}
	if !reflect.DeepEqual(got, want) {
		gb, _ := json.MarshalIndent(got, "", "  ")
		wb, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("newInspectView =\n%s\nwant\n%s", gb, wb)
	}
}

// --entrypoint and --label show as Docker's Config.Entrypoint, Cmd (what
// follows the entrypoint; null when nothing does) and Labels.
func TestNewInspectViewEntrypointLabels(t *testing.T) {
	e := testEngine(t, "netid")
	c := inspectContainer()
	c.Spec.Args, c.Spec.Entrypoint = []string{"/bin/date", "-u"}, []string{"/bin/date"}
	c.Spec.Labels = map[string]string{"tier": "front"}
	v := (&app{}).newInspectView(e, c)
	if v.Path != "/bin/date" || !slices.Equal(v.Args, []string{"-u"}) ||
		!slices.Equal(v.Config.Entrypoint, []string{"/bin/date"}) || !slices.Equal(v.Config.Cmd, []string{"-u"}) {
		t.Errorf("Path %q Args %q Entrypoint %q Cmd %q", v.Path, v.Args, v.Config.Entrypoint, v.Config.Cmd)
	}
	if !maps.Equal(v.Config.Labels, c.Spec.Labels) {
		t.Errorf("Labels = %v", v.Config.Labels)
	}
	c.Spec.Args = []string{"/bin/date"}
	if v := (&app{}).newInspectView(e, c); v.Config.Cmd != nil {
		t.Errorf("Cmd = %q, want null with only an entrypoint", v.Config.Cmd)
	}
}

func TestNewInspectViewExited(t *testing.T) {
	e := testEngine(t, "netid")
	c := inspectContainer()
	finished := c.Created.Add(time.Minute)
	c.State = engine.State{Status: engine.StatusExited, ExitCode: 3, Error: "boom",
		Process: engine.Proc{Pid: 4242}, StartedAt: c.State.StartedAt, FinishedAt: finished}
	c.Spec.Detach = true
	v := (&app{}).newInspectView(e, c)

	s := v.State
	if s.Status != "exited" || s.Running || s.Pid != 0 || s.ExitCode != 3 || s.Error != "boom" ||
		s.FinishedAt != finished.Format(time.RFC3339Nano) {
		t.Errorf("State = %+v", s)
	}
	if v.NetworkSettings.SandboxKey != "" {
		t.Errorf("SandboxKey = %q, want empty for a stopped container", v.NetworkSettings.SandboxKey)
	}
	if top := v.NetworkSettings.endpointView; !reflect.DeepEqual(top, endpointView{}) {
		t.Errorf("top-level endpoint = %+v, want empty for a stopped container", top)
	}
	want := endpointView{NetworkID: "netid", EndpointID: endpointID(testID, "bridge")}
	if got := v.NetworkSettings.Networks["bridge"]; !reflect.DeepEqual(got, want) {
		t.Errorf("Networks[bridge] = %+v, want %+v (no addresses)", got, want)
	}
	if v.LogPath != c.Dir+"/container.log" || v.Config.AttachStdout {
		t.Errorf("detached: LogPath = %q, AttachStdout = %v", v.LogPath, v.Config.AttachStdout)
	}
}

func TestNewInspectViewNetworks(t *testing.T) {
	e := testEngine(t, "netid")
	tests := []struct {
		name    string
		mode    string
		eps     []string
		wantTop bool // the address appears at the top level
		wantNet []string
	}{
		{"user network not mirrored", "backend", []string{"backend"}, false, []string{"backend"}},
		{"bridge and user network", "bridge", []string{"backend", "bridge"}, true, []string{"backend", "bridge"}},
		{"host", engine.ModeHost, nil, false, []string{"host"}},
		{"none", engine.ModeNone, nil, false, []string{"none"}},
		{"container", "container:db", nil, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := inspectContainer()
			c.Spec.NetworkMode = tt.mode
			proto := c.Endpoints[0]
			c.Endpoints = nil
			for _, n := range tt.eps {
				ep := proto
				ep.Network = n
				c.Endpoints = append(c.Endpoints, ep)
			}
			v := (&app{}).newInspectView(e, c)
			top := v.NetworkSettings.endpointView
			if got := top.IPAddress != ""; got != tt.wantTop {
				t.Errorf("top-level IPAddress = %q, want set: %v", top.IPAddress, tt.wantTop)
			}
			if top.NetworkID != "" || top.EndpointID != "" {
				t.Errorf("top-level NetworkID/EndpointID = %q/%q, want empty", top.NetworkID, top.EndpointID)
			}
			if len(v.NetworkSettings.Networks) != len(tt.wantNet) {
				t.Errorf("Networks = %+v, want keys %q", v.NetworkSettings.Networks, tt.wantNet)
			}
			for _, n := range tt.wantNet {
				ev, ok := v.NetworkSettings.Networks[n]
				if !ok {
					t.Errorf("Networks lacks %q: %+v", n, v.NetworkSettings.Networks)
					continue
				}
				isEndpoint := n != engine.ModeHost && n != engine.ModeNone
				if isEndpoint && (ev.IPAddress != "172.17.0.2" || ev.EndpointID != endpointID(testID, n)) {
					t.Errorf("Networks[%s] = %+v", n, ev)
				}
				if !isEndpoint && !reflect.DeepEqual(ev, endpointView{}) {
					t.Errorf("Networks[%s] = %+v, want empty", n, ev)
				}
			}
			// Only the recorded "bridge" network has an ID; others are unknown.
			if ev, ok := v.NetworkSettings.Networks["backend"]; ok && ev.NetworkID != "" {
				t.Errorf("Networks[backend].NetworkID = %q, want empty for an unrecorded network", ev.NetworkID)
			}
		})
	}
}

// Ports show as Docker's: Config.ExposedPorts has --expose's and -p's
// container ports, HostConfig.PortBindings the -p values as asked ("" for
// a random host port, a range as given), PublishAllPorts -P, Links
// "/TARGET:/NAME/ALIAS"; a running container's NetworkSettings.Ports has
// every exposed port, null when nothing publishes it, and ps's PORTS
// names that one alone.
func TestNewInspectViewPorts(t *testing.T) {
	e := testEngine(t, "netid")
	c := inspectContainer()
	tcp := func(first, last uint16) portmap.Spec {
		return portmap.Spec{ContainerFirst: first, ContainerLast: last, Proto: portmap.TCP}
	}
	c.Spec.Exposed = []portmap.Spec{tcp(80, 81)}
	asked, dns, ranged := tcp(81, 81), portmap.Spec{HostIP: netip.MustParseAddr("127.0.0.1"), ContainerFirst: 53, ContainerLast: 53, Proto: portmap.UDP}, tcp(90, 90)
	asked.HostPortFirst, asked.HostPortLast = 8080, 8080
	ranged.HostPortFirst, ranged.HostPortLast = 8000, 8010
	c.Spec.Publish, c.Spec.PublishAll = []portmap.Spec{asked, dns, ranged}, true
	c.Links = []engine.Link{{TargetID: "x", Name: "db", Alias: "database"}}
	c.Ports = []firewall.PortMapping{
		{Network: "bridge", HostPort: 8080, Proto: "tcp", ContainerPort: 81},
		{Network: "bridge", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 32768, Proto: "udp", ContainerPort: 53},
		{Network: "bridge", HostPort: 8003, Proto: "tcp", ContainerPort: 90},
	}
	v := (&app{}).newInspectView(e, c)
	exposed := map[string]struct{}{"80/tcp": {}, "81/tcp": {}, "53/udp": {}, "90/tcp": {}}
	if !reflect.DeepEqual(v.Config.ExposedPorts, exposed) {
		t.Errorf("ExposedPorts = %v, want %v", v.Config.ExposedPorts, exposed)
	}
	bindings := map[string][]portBinding{
		"81/tcp": {{HostPort: "8080"}}, "53/udp": {{HostIp: "127.0.0.1"}}, "90/tcp": {{HostPort: "8000-8010"}},
	}
	if !reflect.DeepEqual(v.HostConfig.PortBindings, bindings) || !v.HostConfig.PublishAllPorts {
		t.Errorf("PortBindings = %v, PublishAllPorts %v; want %v, true", v.HostConfig.PortBindings, v.HostConfig.PublishAllPorts, bindings)
	}
	if want := []string{"/db:/web/database"}; !slices.Equal(v.HostConfig.Links, want) {
		t.Errorf("Links = %q, want %q", v.HostConfig.Links, want)
	}
	ports := map[string][]portBinding{
		"80/tcp": nil, "81/tcp": {{HostIp: "0.0.0.0", HostPort: "8080"}},
		"53/udp": {{HostIp: "127.0.0.1", HostPort: "32768"}}, "90/tcp": {{HostIp: "0.0.0.0", HostPort: "8003"}},
	}
	if !reflect.DeepEqual(v.NetworkSettings.Ports, ports) {
		t.Errorf("NetworkSettings.Ports = %v, want %v", v.NetworkSettings.Ports, ports)
	}
	if got, want := portsColumn(c), "80/tcp, 127.0.0.1:32768->53/udp, 0.0.0.0:8080->81/tcp, 0.0.0.0:8003->90/tcp"; got != want { // Docker's order
		t.Errorf("ps PORTS = %q, want %q", got, want)
	}
	if b, _ := json.Marshal(v.NetworkSettings.Ports); !strings.Contains(string(b), `"80/tcp":null`) {
		t.Errorf("an exposed port nothing publishes is not null: %s", b)
	}
}

// A record of a knit that did not keep the -p values shows what it
// published as its bindings; a container without a network of its own
// (host, none) lists no exposed port as unpublished.
func TestNewInspectViewPortsOfOlderRecords(t *testing.T) {
	e := testEngine(t, "netid")
	c := inspectContainer()
	c.Ports = []firewall.PortMapping{{Network: "bridge", HostPort: 8080, Proto: "tcp", ContainerPort: 80},
		{Network: "bridge", HostIP: netip.IPv6Unspecified(), HostPort: 8080, Proto: "tcp", ContainerPort: 80}} // its [::] twin
	v := (&app{}).newInspectView(e, c)
	if want := map[string][]portBinding{"80/tcp": {{HostPort: "8080"}}}; !reflect.DeepEqual(v.HostConfig.PortBindings, want) {
		t.Errorf("PortBindings = %v, want %v", v.HostConfig.PortBindings, want)
	}
	if _, ok := v.Config.ExposedPorts["80/tcp"]; !ok {
		t.Errorf("ExposedPorts = %v, want 80/tcp", v.Config.ExposedPorts)
	}
	host := inspectContainer()
	host.Spec.NetworkMode, host.Endpoints, host.Netns = "host", nil, ""
	host.Spec.Exposed = []portmap.Spec{{ContainerFirst: 80, ContainerLast: 80, Proto: portmap.TCP}}
	if v := (&app{}).newInspectView(e, host); len(v.NetworkSettings.Ports) != 0 || portsColumn(host) != "" {
		t.Errorf("host networking: Ports %v, ps %q; want none", v.NetworkSettings.Ports, portsColumn(host))
	}
}

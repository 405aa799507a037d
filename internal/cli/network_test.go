package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
)

func TestNetworkCreateOptions(t *testing.T) {
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	tests := []struct {
		name    string
		f       networkCreateFlags
		want    engine.NetworkCreateOptions
		wantErr string // a fragment; "" means success
	}{
		{"defaults", networkCreateFlags{driver: "bridge"},
			engine.NetworkCreateOptions{Name: "n", Driver: "bridge"}, ""},
		{"everything", networkCreateFlags{
			driver: "bridge", subnets: []string{"10.1.0.0/16", "fd00:1::/64"}, gateways: []string{"10.1.0.254"},
			ipRanges: []string{"10.1.2.0/24"}, ipv6: true, internal: true, attachable: true,
			labels: []string{"a=1", "b=", "c=x=y", "a=2"}, opts: []string{"com.docker.network.driver.mtu=1400"},
		}, engine.NetworkCreateOptions{
			Name: "n", Driver: "bridge", Subnets: []netip.Prefix{pfx("10.1.0.0/16"), pfx("fd00:1::/64")},
			Gateways: []netip.Addr{addr("10.1.0.254")}, IPRanges: []netip.Prefix{pfx("10.1.2.0/24")},
			IPv6: true, Internal: true, Attachable: true,
			Labels:  map[string]string{"a": "2", "b": "", "c": "x=y"},
			Options: map[string]string{"com.docker.network.driver.mtu": "1400"},
		}, ""},
		{"host bits kept for the engine", networkCreateFlags{subnets: []string{"10.1.2.3/16"}},
			engine.NetworkCreateOptions{Name: "n", Subnets: []netip.Prefix{pfx("10.1.2.3/16")}}, ""},
		{"other driver passed on", networkCreateFlags{driver: "macvlan"},
			engine.NetworkCreateOptions{Name: "n", Driver: "macvlan"}, ""},
		{"subnet too long", networkCreateFlags{subnets: []string{"10.0.0.0/33"}}, engine.NetworkCreateOptions{},
			"invalid --subnet 10.0.0.0/33: prefix length out of range"},
		{"subnet without length", networkCreateFlags{subnets: []string{"10.0.0.0"}}, engine.NetworkCreateOptions{},
			"invalid --subnet 10.0.0.0: "},
		{"subnet with zone", networkCreateFlags{subnets: []string{"fe80::%eth0/64"}}, engine.NetworkCreateOptions{},
			"invalid --subnet fe80::%eth0/64"},
		{"bad gateway", networkCreateFlags{subnets: []string{"10.0.0.0/24"}, gateways: []string{"10.0.0.300"}},
			engine.NetworkCreateOptions{}, "invalid --gateway 10.0.0.300: "},
		{"bad ip-range", networkCreateFlags{subnets: []string{"10.0.0.0/24"}, ipRanges: []string{"x"}},
			engine.NetworkCreateOptions{}, "invalid --ip-range x: "},
		{"gateway without subnet", networkCreateFlags{gateways: []string{"10.0.0.1"}}, engine.NetworkCreateOptions{},
			"corresponding --subnet"},
		{"ip-range without subnet", networkCreateFlags{ipRanges: []string{"10.0.0.0/25"}}, engine.NetworkCreateOptions{},
			"corresponding --subnet"},
		{"label without =", networkCreateFlags{labels: []string{"novalue"}},
			engine.NetworkCreateOptions{Name: "n", Labels: map[string]string{"novalue": ""}}, ""}, // as Docker: an empty value
		{"label without key", networkCreateFlags{labels: []string{"=v"}}, engine.NetworkCreateOptions{},
			`invalid --label "=v"`},
		{"opt without =", networkCreateFlags{opts: []string{"mtu"}}, engine.NetworkCreateOptions{},
			`invalid --opt "mtu": want KEY=VALUE`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.ipv4 = true // the flag's default
			got, err := tt.f.options("n")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("options() error = %v, want one containing %q", err, tt.wantErr)
				}
				if errdefs.KindOf(err) != errdefs.KindInvalid {
					t.Errorf("error kind = %v, want KindInvalid", errdefs.KindOf(err))
				}
				return
			}
			if err != nil {
				t.Fatalf("options() = %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("options() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestConnectOptions(t *testing.T) {
	tests := []struct {
		ip, ip6 string
		aliases []string
		wantErr string
	}{
		{"", "", nil, ""},
		{"172.20.0.5", "2001:db8::5", []string{"db", "cache"}, ""},
		{"2001:db8::5", "", nil, "invalid --ip 2001:db8::5: not an IPv4 address"},
		{"172.20.0.300", "", nil, "invalid --ip 172.20.0.300"},
		{"", "172.20.0.5", nil, "invalid --ip6 172.20.0.5: not an IPv6 address"},
		{"", "::ffff:172.20.0.5", nil, "not an IPv6 address"},
		{"", "", []string{""}, "invalid --alias"},
		{"", "", []string{"a b"}, "invalid --alias"},
	}
	for _, tt := range tests {
		o, err := connectOptions(tt.ip, tt.ip6, tt.aliases)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("connectOptions(%q, %q, %q) error = %v, want %q", tt.ip, tt.ip6, tt.aliases, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("connectOptions(%q, %q, %q) = %v", tt.ip, tt.ip6, tt.aliases, err)
			continue
		}
		if (tt.ip != "" && o.IP.String() != tt.ip) || (tt.ip == "" && o.IP.IsValid()) ||
			(tt.ip6 != "" && o.IP6.String() != tt.ip6) || !slices.Equal(o.Aliases, tt.aliases) {
			t.Errorf("connectOptions(%q, %q, %q) = %+v", tt.ip, tt.ip6, tt.aliases, o)
		}
	}
}

// testNetworks are bridge, host, none and three user networks, by name.
func testNetworks() []*engine.Network {
	created := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	mk := func(id, name, drv string, labels map[string]string) *engine.Network {
		return &engine.Network{Network: driver.Network{ID: id, Name: name, Driver: drv}, Created: created, Labels: labels}
	}
	backend := mk("bbbb000000000000000000000000000000000000000000000000000000000001", "backend", "bridge",
		map[string]string{"env": "prod", "team": "db"})
	backend.Internal = true
	return []*engine.Network{
		backend,
		mk("aaaa000000000000000000000000000000000000000000000000000000000000", "bridge", "bridge", nil),
		mk("cccc000000000000000000000000000000000000000000000000000000000002", "frontend", "bridge",
			map[string]string{"env": "dev"}),
		mk("dddd000000000000000000000000000000000000000000000000000000000003", "host", "host", nil),
		mk("eeee000000000000000000000000000000000000000000000000000000000004", "none", "null", nil),
		mk("ffff000000000000000000000000000000000000000000000000000000000005", "scratch", "bridge", nil),
	}
}

func networkNames(nets []*engine.Network) []string {
	var out []string
	for _, n := range nets {
		out = append(out, n.Name)
	}
	return out
}

func TestFilterNetworks(t *testing.T) {
	inUse := map[string]bool{"backend": true}
	tests := []struct {
		filters []string
		want    []string
	}{
		{nil, []string{"backend", "bridge", "frontend", "host", "none", "scratch"}},
		{[]string{"driver=bridge"}, []string{"backend", "bridge", "frontend", "scratch"}},
		{[]string{"driver=null", "driver=host"}, []string{"host", "none"}},
		{[]string{"driver=bri"}, nil}, // exact
		{[]string{"name=end"}, []string{"backend", "frontend"}},
		{[]string{"name=^b"}, []string{"backend", "bridge"}}, // dockerd matches a regular expression
		{[]string{"name=host", "name=none"}, []string{"host", "none"}},
		{[]string{"name=["}, nil}, // an invalid pattern matches only exactly
		{[]string{"id=cccc"}, []string{"frontend"}},
		{[]string{"id=ffff000000000000000000000000000000000000000000000000000000000005"}, []string{"scratch"}},
		{[]string{"id=0005"}, []string{"scratch"}}, // any part, as in dockerd
		{[]string{"label=env"}, []string{"backend", "frontend"}},
		{[]string{"label=env=prod"}, []string{"backend"}},
		{[]string{"label=env="}, nil},
		{[]string{"label=env", "label=team"}, []string{"backend"}}, // labels: all must match
		{[]string{"scope=local"}, []string{"backend", "bridge", "frontend", "host", "none", "scratch"}},
		{[]string{"scope=swarm"}, nil},
		{[]string{"type=builtin"}, []string{"bridge", "host", "none"}},
		{[]string{"type=custom"}, []string{"backend", "frontend", "scratch"}},
		{[]string{"type=custom", "type=builtin"}, []string{"backend", "bridge", "frontend", "host", "none", "scratch"}},
		{[]string{"type=custom", "driver=bridge", "name=end"}, []string{"backend", "frontend"}}, // keys AND
		{[]string{"type=builtin", "name=end"}, nil},
		{[]string{"dangling=true"}, []string{"frontend", "scratch"}},
		{[]string{"dangling=1"}, []string{"frontend", "scratch"}},
		{[]string{"dangling=false"}, []string{"backend", "bridge", "host", "none"}},
		{[]string{"DRIVER=host"}, []string{"host"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.filters, ","), func(t *testing.T) {
			f, err := parseNetworkFilters(tt.filters)
			if err != nil {
				t.Fatalf("parseNetworkFilters(%q) = %v", tt.filters, err)
			}
			if got := networkNames(filterNetworks(testNetworks(), f, inUse)); !slices.Equal(got, tt.want) {
				t.Errorf("filter %q = %q, want %q", tt.filters, got, tt.want)
			}
		})
	}
}

func TestParseNetworkFiltersInvalid(t *testing.T) {
	tests := []struct {
		filters []string
		wantErr string
	}{
		{[]string{"x=1"}, "invalid filter 'x'"},
		{[]string{"driver=bridge", "until=1h"}, "invalid filter 'until'"},
		{[]string{"noequals"}, "bad format of filter (expected name=value)"},
		{[]string{"type=other"}, "invalid filter 'type=other'"},
		{[]string{"dangling=maybe"}, "invalid value for filter 'dangling'"},
		{[]string{"dangling=true", "dangling=false"}, `more than one value for filter key "dangling"`},
	}
	for _, tt := range tests {
		_, err := parseNetworkFilters(tt.filters)
		if err == nil || err.Error() != tt.wantErr && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("parseNetworkFilters(%q) = %v, want %q", tt.filters, err, tt.wantErr)
		}
		if errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("parseNetworkFilters(%q) error kind = %v, want KindInvalid", tt.filters, errdefs.KindOf(err))
		}
	}
}

// renderNetworkList is network ls's output for nets.
func renderNetworkList(nets []*engine.Network, format string, quiet, noTrunc bool) (*bytes.Buffer, error) {
	var b bytes.Buffer
	tmpl, table, err := networkListFormat(format, quiet)
	if err != nil {
		return &b, err
	}
	return &b, writeNetworkList(&b, nets, tmpl, table, noTrunc)
}

func TestWriteNetworkList(t *testing.T) {
	nets := testNetworks()[:3] // backend, bridge, frontend
	tests := []struct {
		name           string
		format         string
		quiet, noTrunc bool
		want           string
	}{
		{"default table", "", false, false,
			"NETWORK ID     NAME       DRIVER    SCOPE\n" +
				"bbbb00000000   backend    bridge    local\n" +
				"aaaa00000000   bridge     bridge    local\n" +
				"cccc00000000   frontend   bridge    local\n"},
		{"bare table is the default", "table", false, false,
			"NETWORK ID     NAME       DRIVER    SCOPE\n" +
				"bbbb00000000   backend    bridge    local\n" +
				"aaaa00000000   bridge     bridge    local\n" +
				"cccc00000000   frontend   bridge    local\n"},
		{"no-trunc", "{{.ID}}", false, true,
			nets[0].ID + "\n" + nets[1].ID + "\n" + nets[2].ID + "\n"},
		{"quiet", "", true, false, "bbbb00000000\naaaa00000000\ncccc00000000\n"},
		{"quiet no-trunc", "", true, true, nets[0].ID + "\n" + nets[1].ID + "\n" + nets[2].ID + "\n"},
		{"quiet yields to a template", "{{.Name}}", true, false, "backend\nbridge\nfrontend\n"},
		{"template", "{{.Name}}: {{.Driver}} {{.Scope}} {{.IPv6}} {{.Internal}} [{{.Labels}}]", false, false,
			"backend: bridge local false true [env=prod,team=db]\nbridge: bridge local false false []\nfrontend: bridge local false false [env=dev]\n"},
		{"label", `{{.Name}}={{.Label "env"}}`, false, false, "backend=prod\nbridge=\nfrontend=dev\n"},
		{"created at", "{{.CreatedAt}}", false, false, strings.Repeat("2025-03-01 12:00:00 +0000 UTC\n", 3)},
		{"table template", `table {{.Name}}\t{{.Internal}}\t{{.Label "team"}}`, false, false,
			"NAME       INTERNAL   LABEL\n" +
				"backend    true       db\n" +
				"bridge     false      \n" +
				"frontend   false      \n"},
		{"narrow columns are 10 wide", `table {{.Scope}}\t{{.IPv6}}\t{{.Name}}`, false, false,
			"SCOPE     IPV6      NAME\n" +
				"local     false     backend\n" +
				"local     false     bridge\n" +
				"local     false     frontend\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := renderNetworkList(nets, tt.format, tt.quiet, tt.noTrunc)
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("output =\n%q\nwant\n%q", b.String(), tt.want)
			}
		})
	}
}

// --ipv4=false asks for an IPv6-only network (the engine checks the rest).
func TestNetworkCreateIPv4Flag(t *testing.T) {
	for _, on := range []bool{true, false} {
		o, err := (&networkCreateFlags{ipv4: on, ipv6: true}).options("n")
		if err != nil || o.NoIPv4 == on {
			t.Errorf("--ipv4=%v: NoIPv4 %v, err %v", on, o.NoIPv4, err)
		}
	}
}

// An IPv6-only network says EnableIPv4 false in inspect and ls, as
// Docker 28's; host and none (no subnets) keep true.
func TestIPv6OnlyNetworkViews(t *testing.T) {
	v6only := &engine.Network{Network: driver.Network{Name: "six", Subnets: []driver.Subnet{{Prefix: netip.MustParsePrefix("fd00:6::/64")}}}, IPv6: true}
	host := testNetworks()[3]
	for _, tc := range []struct {
		n    *engine.Network
		want bool
	}{{v6only, false}, {host, true}} {
		if got := newNetworkView(tc.n, nil).EnableIPv4; got != tc.want {
			t.Errorf("%s: inspect EnableIPv4 %v, want %v", tc.n.Name, got, tc.want)
		}
		if got := newNetworkRow(tc.n, false).IPv4; got != fmt.Sprint(tc.want) {
			t.Errorf("%s: ls IPv4 %q, want %v", tc.n.Name, got, tc.want)
		}
	}
}

func TestWriteNetworkListJSON(t *testing.T) {
	b, err := renderNetworkList(testNetworks()[:1], "json", false, false)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"CreatedAt":"2025-03-01 12:00:00 +0000 UTC","Driver":"bridge","ID":"bbbb00000000","IPv4":"true",` +
		`"IPv6":"false","Internal":"true","Labels":"env=prod,team=db","Name":"backend","Scope":"local"}` + "\n"
	if b.String() != want {
		t.Errorf("json =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestWriteNetworkListBadTemplate(t *testing.T) {
	for _, format := range []string{"{{.Nope}}", "{{.Name"} {
		if b, err := renderNetworkList(testNetworks(), format, false, false); err == nil {
			t.Errorf("format %q: no error; output %q", format, b.String())
		}
	}
}

func TestNewNetworkView(t *testing.T) {
	created := time.Date(2025, 3, 1, 12, 0, 0, 123, time.UTC)
	n := &engine.Network{
		Network: driver.Network{
			ID: testID, Name: "backend", Driver: "bridge", Bridge: "br-0123456789ab", MTU: 1500,
			Subnets: []driver.Subnet{
				{Prefix: netip.MustParsePrefix("192.168.100.0/24"), Gateway: netip.MustParseAddr("192.168.100.1"),
					IPRange: netip.MustParsePrefix("192.168.100.128/25")},
				{Prefix: netip.MustParsePrefix("fd00:1::/64"), Gateway: netip.MustParseAddr("fd00:1::1")},
			},
			Internal: true, Options: map[string]string{"com.docker.network.driver.mtu": "1500"},
		},
		Created: created, Labels: map[string]string{"env": "prod"}, IPv6: true, Attachable: true,
	}
	mac, _ := net.ParseMAC("02:42:c0:a8:64:02")
	web := &engine.Container{ID: strings.Repeat("1", 64), Name: "web", Endpoints: []engine.Endpoint{
		{Network: "bridge", Endpoint: driver.Endpoint{Addrs: []netip.Prefix{netip.MustParsePrefix("172.17.0.2/16")}}},
		{Network: "backend", Endpoint: driver.Endpoint{MAC: mac, Addrs: []netip.Prefix{
			netip.MustParsePrefix("192.168.100.2/24"), netip.MustParsePrefix("fd00:1::2/64")}}},
	}}
	bare := &engine.Container{ID: strings.Repeat("2", 64), Name: "bare"} // e.g. host mode: no endpoint
	got := newNetworkView(n, []*engine.Container{web, bare})
	want := &networkView{
		Name: "backend", Id: testID, Created: "2025-03-01T12:00:00.000000123Z", Scope: "local", Driver: "bridge",
		EnableIPv4: true, EnableIPv6: true,
		IPAM: ipamView{Driver: "default", Options: map[string]string{}, Config: []ipamConfigView{
			{Subnet: "192.168.100.0/24", Gateway: "192.168.100.1", IPRange: "192.168.100.128/25"},
			{Subnet: "fd00:1::/64", Gateway: "fd00:1::1"},
		}},
		Internal: true, Attachable: true,
		Containers: map[string]networkContainerView{
			web.ID: {Name: "web", EndpointID: endpointID(web.ID, "backend"), MacAddress: "02:42:c0:a8:64:02",
				IPv4Address: "192.168.100.2/24", IPv6Address: "fd00:1::2/64"},
			bare.ID: {Name: "bare", EndpointID: endpointID(bare.ID, "backend")},
		},
		Options: map[string]string{"com.docker.network.driver.mtu": "1500"},
		Labels:  map[string]string{"env": "prod"},
	}
	if !reflect.DeepEqual(got, want) {
		gb, _ := json.MarshalIndent(got, "", "  ")
		wb, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("newNetworkView =\n%s\nwant\n%s", gb, wb)
	}
	// The view owns its maps.
	got.Labels["x"] = "y"
	if _, ok := n.Labels["x"]; ok {
		t.Error("the view shares the network's Labels map")
	}
}

func TestNewNetworkViewJSON(t *testing.T) {
	n := testNetworks()[3] // host: no subnets, options or labels
	n.Created = time.Time{}
	b, err := json.Marshal(newNetworkView(n, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"Name":"host","Id":"` + n.ID + `","Created":"0001-01-01T00:00:00Z","Scope":"local","Driver":"host",` +
		`"EnableIPv4":true,"EnableIPv6":false,"IPAM":{"Driver":"default","Options":{},"Config":[]},` +
		`"Internal":false,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,` +
		`"Containers":{},"Options":{},"Labels":{}}`
	if string(b) != want {
		t.Errorf("JSON =\n%s\nwant\n%s", b, want)
	}
	// A template addresses the view as docker network inspect -f does.
	tmpl, _, err := parseFormat(`{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}|{{.Name}} {{json .Containers}}`)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, newNetworkView(testNetworks()[0], nil)); err != nil {
		t.Fatal(err)
	}
	if out.String() != "|backend {}\n" {
		t.Errorf("template = %q", out.String())
	}
}

func TestEndpointID(t *testing.T) {
	a, b := endpointID(testID, "backend"), endpointID(testID, "frontend")
	if len(a) != 64 || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("endpointID = %q, want 64 hex digits", a)
	}
	if a == b || a != endpointID(testID, "backend") {
		t.Errorf("endpointID not deterministic per container and network: %s %s", a, b)
	}
}

func TestWritePruned(t *testing.T) {
	var b bytes.Buffer
	writePruned(&b, "Deleted Networks:", nil)
	if b.String() != "" {
		t.Errorf("nothing pruned: %q", b.String())
	}
	writePruned(&b, "Deleted Networks:", []string{"a", "b"})
	if b.String() != "Deleted Networks:\na\nb\n\n" {
		t.Errorf("pruned: %q", b.String())
	}
}

func TestNetworkCommandLine(t *testing.T) {
	const reached = "knit: no engine in unit tests\n" // the command line was accepted
	tests := []struct {
		args      []string
		wantErr   string // stderr after "knit: ", or reached
		wantHelp  bool   // an invalid-input error ends with the help hint
		noEngines bool
	}{
		{[]string{"network", "create"}, `"knit network create" requires exactly 1 argument.`, true, true},
		{[]string{"network", "create", "a", "b"}, `"knit network create" requires exactly 1 argument.`, true, true},
		{[]string{"network", "create", "--subnet", "10.0.0.0/33", "n"}, "invalid --subnet 10.0.0.0/33: prefix length out of range", true, true},
		{[]string{"network", "create", "--label", "=x", "n"}, `invalid --label "=x"`, true, true},
		{[]string{"network", "create", "-o", "mtu", "n"}, `invalid --opt "mtu"`, true, true},
		{[]string{"network", "create", "--bogus", "n"}, "unknown flag: --bogus", true, true},
		{[]string{"network", "create", "-d", "bridge", "--subnet", "10.5.0.0/24,fd00:5::/64", "--gateway", "10.5.0.9",
			"--ip-range", "10.5.0.128/25", "--ipv6", "--internal", "--attachable", "--label", "a=b", "-o", "mtu=1400", "n"}, reached, false, false},
		{[]string{"network", "create", "n", "--subnet", "10.5.0.0/24"}, reached, false, false}, // flags after NAME
		{[]string{"network", "ls", "extra"}, `"knit network ls" accepts no arguments.`, true, true},
		{[]string{"network", "ls", "-f", "bogus=1"}, "invalid filter 'bogus'", true, true},
		{[]string{"network", "ls", "--filter", "type=x"}, "invalid filter 'type=x'", true, true},
		{[]string{"network", "ls", "--format", "{{.Name"}, "invalid --format template", true, true},
		{[]string{"network", "inspect", "-f", "{{.Name", "n"}, "template parsing error", false, true},
		{[]string{"network", "ls", "-q", "--no-trunc", "-f", "name=a", "--filter", "driver=bridge", "--format", "{{.ID}}"}, reached, false, false},
		{[]string{"network", "list"}, reached, false, false},
		{[]string{"network", "inspect"}, `"knit network inspect" requires at least 1 argument.`, true, true},
		{[]string{"network", "inspect", "-f", "{{.Name}}", "a", "b"}, reached, false, false},
		{[]string{"network", "inspect", "--format", "json", "a"}, reached, false, false},
		{[]string{"network", "rm"}, `"knit network rm" requires at least 1 argument.`, true, true},
		{[]string{"network", "remove", "-f", "a", "b"}, reached, false, false},
		{[]string{"network", "prune", "x"}, `"knit network prune" accepts no arguments.`, true, true},
		{[]string{"network", "prune", "--force"}, reached, false, false},
		{[]string{"network", "connect", "n"}, `"knit network connect" requires exactly 2 arguments.`, true, true},
		{[]string{"network", "connect", "--ip", "nope", "n", "c"}, "invalid --ip nope", true, true},
		{[]string{"network", "connect", "--ip6", "10.0.0.1", "n", "c"}, "invalid --ip6 10.0.0.1: not an IPv6 address", true, true},
		{[]string{"network", "connect", "--ip", "10.0.0.9", "--ip6", "fd00::9", "--alias", "a,b", "--alias", "c", "n", "c"}, reached, false, false},
		{[]string{"network", "disconnect", "n"}, `"knit network disconnect" requires exactly 2 arguments.`, true, true},
		{[]string{"network", "disconnect", "-f", "n", "c"}, reached, false, false},
		{[]string{"network", "disconnect", "--force", "n", "c"}, reached, false, false},
		{[]string{"network", "bogus"}, "unknown command: knit network bogus", true, true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr, engines := runCLIStdin(t, "", tt.args...)
			if want := wantErrorCode(tt.args, stderr); code != want {
				t.Errorf("exit code = %d, want %d", code, want)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			switch {
			case tt.wantErr == reached:
				if stderr != reached || engines != 1 {
					t.Errorf("stderr = %q, engines = %d; want the engine reached once", stderr, engines)
				}
				return
			case tt.wantErr == "":
				if !strings.HasPrefix(stderr, "knit: ") || engines != 0 {
					t.Errorf("stderr = %q, engines = %d; want an error before the engine", stderr, engines)
				}
			case !strings.HasPrefix(stderr, "knit: "+tt.wantErr):
				t.Errorf("stderr = %q, want \"knit: %s...\"", stderr, tt.wantErr)
			}
			if tt.wantHelp != strings.HasSuffix(stderr, "See 'knit --help'.\n") {
				t.Errorf("stderr = %q, help hint wanted: %v", stderr, tt.wantHelp)
			}
			if tt.noEngines && engines != 0 {
				t.Errorf("engine built %d times for a rejected command line, want 0", engines)
			}
		})
	}
}

func TestNetworkHelpNeedsNoEngine(t *testing.T) {
	for _, args := range [][]string{{"network"}, {"network", "--help"}, {"network", "create", "--help"}, {"network", "ls", "-h"}} {
		code, stdout, stderr, engines := runCLIStdin(t, "", args...)
		if code != 0 || engines != 0 || stderr != "" || !strings.Contains(stdout, "Usage:") {
			t.Errorf("knit %q: code %d, engines %d, stderr %q, stdout %q", args, code, engines, stderr, stdout)
		}
	}
	_, stdout, _, _ := runCLIStdin(t, "", "--help")
	if !strings.Contains(stdout, "network") {
		t.Errorf("knit --help does not list network:\n%s", stdout)
	}
}

func TestNetworkPruneConfirmation(t *testing.T) {
	tests := []struct {
		stdin  string
		proved bool // the prune went ahead (here: reached the engine)
	}{
		{"", false},
		{"\n", false},
		{"n\n", false},
		{"N\n", false},
		{"yes\n", false},
		{"y\n", true},
		{"Y\n", true},
		{" y \n", true},
		{"y", true}, // EOF without a newline
	}
	for _, tt := range tests {
		code, stdout, stderr, engines := runCLIStdin(t, tt.stdin, "network", "prune")
		if stdout != networkPrunePrompt {
			t.Errorf("stdin %q: stdout = %q, want the prompt", tt.stdin, stdout)
		}
		if tt.proved {
			if code != ExitFailure || engines != 1 || stderr != "knit: no engine in unit tests\n" {
				t.Errorf("stdin %q: code %d, engines %d, stderr %q; want the prune to go ahead", tt.stdin, code, engines, stderr)
			}
		} else if code != 0 || engines != 0 || stderr != "" {
			t.Errorf("stdin %q: code %d, engines %d, stderr %q; want a quiet refusal", tt.stdin, code, engines, stderr)
		}
	}
}

// The default network shows dockerd's docker0 options, from its record.
func TestNewNetworkViewDefaultOptions(t *testing.T) {
	n := &engine.Network{Network: driver.Network{Name: "bridge", ID: "b", Driver: "bridge", Bridge: "knit0"}, ICC: true, Masquerade: true}
	want := map[string]string{
		"com.docker.network.bridge.default_bridge":       "true",
		"com.docker.network.bridge.enable_icc":           "true",
		"com.docker.network.bridge.enable_ip_masquerade": "true",
		"com.docker.network.bridge.host_binding_ipv4":    "0.0.0.0",
		"com.docker.network.bridge.name":                 "knit0",
		"com.docker.network.driver.mtu":                  "1500",
	}
	if got := newNetworkView(n, nil).Options; !maps.Equal(got, want) {
		t.Errorf("Options = %v, want %v", got, want)
	}
}

// network prune's --filter, as Docker's: until, label, label!.
func TestPruneFilter(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	old := &engine.Network{Created: now.Add(-48 * time.Hour), Labels: map[string]string{"env": "ci", "tmp": ""}}
	fresh := &engine.Network{Created: now.Add(-time.Minute), Labels: map[string]string{"env": "prod"}}
	for _, tc := range []struct {
		filters    []string
		old, fresh bool
	}{
		{nil, true, true},
		{[]string{"until=24h"}, true, false},
		{[]string{"until=2026-11-29T12:00:00Z"}, true, false},
		{[]string{"label=tmp"}, true, false},
		{[]string{"label=env=prod"}, false, true},
		{[]string{"label!=tmp"}, false, true},
		{[]string{"until=1m", "label=env"}, true, false},
	} {
		match, err := pruneFilter(tc.filters, now)
		if err != nil {
			t.Fatalf("%q: %v", tc.filters, err)
		}
		got := func(n *engine.Network) bool { return match == nil || match(n) }
		if got(old) != tc.old || got(fresh) != tc.fresh {
			t.Errorf("%q: old %v fresh %v, want %v %v", tc.filters, got(old), got(fresh), tc.old, tc.fresh)
		}
	}
	for _, bad := range [][]string{{"until=1h", "until=2h"}, {"until=soon"}, {"driver=bridge"}, {"label"}} {
		if _, err := pruneFilter(bad, now); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

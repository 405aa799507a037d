package cni

import (
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/engine"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"knet","type":"knit"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NetworkName() != "knet" {
		t.Errorf("network = %q, want the config's name", c.NetworkName())
	}
	req, err := c.Request(Invocation{ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/x"}, &Args{})
	if err != nil {
		t.Fatal(err)
	}
	want := engine.CNIRequest{
		Config: "knet", ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/x", DefaultRoute: true,
		Network: engine.NetworkCreateOptions{Name: "knet", Options: map[string]string{}},
	}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("request =\n%+v, want\n%+v", req, want)
	}
}

func TestParseConfigEveryField(t *testing.T) {
	conf := `{
		"cniVersion": "1.0.0", "name": "cfg", "type": "knit", "network": "knet",
		"subnet": "10.88.0.0/16", "gateway": "10.88.0.254", "ipRange": "10.88.1.0/24",
		"ipv6": true, "subnet6": "fd00:88::/64", "gateway6": "fd00:88::1", "ipRange6": "fd00:88::/80",
		"bridge": "kbr0", "mtu": 1400, "ipMasq": false, "icc": false, "isDefaultGateway": false, "hairpinMode": true, "isGateway": true,
		"dataRoot": "/d", "execRoot": "/e",
		"capabilities": {"portMappings": true, "ips": true, "mac": true, "dns": true, "aliases": true, "bandwidth": true},
		"ipam": {},
		"dns": {"nameservers": ["9.9.9.9"], "domain": "conf.test", "search": ["conf.test"], "options": ["ndots:1"]},
		"args": {"cni": {"ips": ["10.88.1.9"]}, "other": 1},
		"runtimeConfig": {
			"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
				{"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}],
			"ips": ["10.88.1.5/16", "fd00:88::5"],
			"mac": "02:00:00:aa:bb:cc",
			"dns": {"servers": ["1.1.1.1"], "searches": ["rt.test"], "options": ["ndots:2"]},
			"aliases": {"cfg": ["web", "www"], "other": ["no"]},
			"bandwidth": {"ingressRate": 1000000, "ingressBurst": 10000, "egressRate": 2000000, "egressBurst": 20000}
		}
	}`
	c, err := ParseConfig([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataRoot != "/d" || c.ExecRoot != "/e" || c.HairpinMode == nil || !*c.HairpinMode {
		t.Errorf("roots or hairpin: %+v", c.BaseConf)
	}
	req, err := c.Request(Invocation{ContainerID: "c1", IfName: "net1", Netns: "/ns"}, &Args{PodName: "pod", IPs: []string{"10.88.1.7"}, MAC: "02:00:00:00:00:01"})
	if err != nil {
		t.Fatal(err)
	}
	want := engine.CNIRequest{
		Config: "cfg", ContainerID: "c1", IfName: "net1", Netns: "/ns",
		Network: engine.NetworkCreateOptions{
			Name:     "knet",
			Subnets:  []netip.Prefix{netip.MustParsePrefix("10.88.0.0/16"), netip.MustParsePrefix("fd00:88::/64")},
			Gateways: []netip.Addr{netip.MustParseAddr("10.88.0.254"), netip.MustParseAddr("fd00:88::1")},
			IPRanges: []netip.Prefix{netip.MustParsePrefix("10.88.1.0/24"), netip.MustParsePrefix("fd00:88::/80")},
			IPv6:     true,
			Options:  map[string]string{"bridge": "kbr0", "mtu": "1400", "icc": "false", "ip-masq": "false"},
		},
		DefaultRoute: false,
		IPs:          []netip.Addr{netip.MustParseAddr("10.88.1.5"), netip.MustParseAddr("fd00:88::5")},
		MAC:          net.HardwareAddr{2, 0, 0, 0xaa, 0xbb, 0xcc},
		Ports: []engine.CNIPort{
			{HostPort: 8080, ContainerPort: 80, Proto: "tcp"},
			{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 5353, ContainerPort: 53, Proto: "udp"},
		},
		Name:      "pod",
		Aliases:   []string{"web", "www"},
		Bandwidth: &engine.Bandwidth{IngressRate: 1000000, IngressBurst: 10000, EgressRate: 2000000, EgressBurst: 20000},
	}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("request =\n%+v\nwant\n%+v", req, want)
	}
	n := &engine.Network{DNS: false}
	if d := c.ResultDNS(n); !reflect.DeepEqual(d.Nameservers, []string{"1.1.1.1"}) || d.Search[0] != "rt.test" || d.Options[0] != "ndots:2" || d.Domain != "conf.test" {
		t.Errorf("dns without knit's server = %+v", d)
	}
}

// Addresses and the MAC come from the first source that has them:
// runtimeConfig, then args.cni, then CNI_ARGS.
func TestRequestSourcesInOrder(t *testing.T) {
	inv := Invocation{ContainerID: "c", IfName: "eth0", Netns: "/ns"}
	args := &Args{IPs: []string{"10.0.0.7"}, MAC: "02:00:00:00:00:07"}
	for _, tc := range []struct {
		conf, ip, mac string
	}{
		{`{"cniVersion":"1.1.0","name":"n"}`, "10.0.0.7", "02:00:00:00:00:07"},
		{`{"cniVersion":"1.1.0","name":"n","args":{"cni":{"ips":["10.0.0.8/24"]}}}`, "10.0.0.8", "02:00:00:00:00:07"},
		{`{"cniVersion":"1.1.0","name":"n","args":"anything","runtimeConfig":{"ips":["10.0.0.9"],"mac":"02:00:00:00:00:09"}}`, "10.0.0.9", "02:00:00:00:00:09"},
	} {
		c, err := ParseConfig([]byte(tc.conf))
		if err != nil {
			t.Fatal(err)
		}
		req, err := c.Request(inv, args)
		if err != nil {
			t.Fatal(err)
		}
		if len(req.IPs) != 1 || req.IPs[0].String() != tc.ip || req.MAC.String() != tc.mac {
			t.Errorf("%s: ips %v mac %v, want %s %s", tc.conf, req.IPs, req.MAC, tc.ip, tc.mac)
		}
	}
}

func TestAliasesForms(t *testing.T) {
	for conf, want := range map[string][]string{
		`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"aliases":["a","b"]}}`:                           {"a", "b"},
		`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"aliases":{"n":["a"],"m":["x"]}}}`:               {"a"},
		`{"cniVersion":"1.1.0","name":"n","network":"k","runtimeConfig":{"aliases":{"k":["b"]}}}`:           {"b"},
		`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"aliases":{"m":["x"]}}}`:                         nil,
		`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"aliases":null}}`:                                nil,
		`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"aliases":{"n":["a"]},"portMappings":null}}`:     {"a"},
		`{"cniVersion":"1.1.0","name":"n","network":"k","runtimeConfig":{"aliases":{"n":["a"],"k":["b"]}}}`: {"a"},
	} {
		c, err := ParseConfig([]byte(conf))
		if err != nil {
			t.Fatal(err)
		}
		req, err := c.Request(Invocation{}, &Args{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(req.Aliases, want) {
			t.Errorf("%s: aliases %q, want %q", conf, req.Aliases, want)
		}
	}
}

// Every refusal has the spec's code and names the offending value.
func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		conf string
		code uint
		msg  string
	}{
		{`{"cniVersion":"1.1.0","name":"n"`, CodeDecodingFailure, "unexpected end"},
		{`not json`, CodeDecodingFailure, "invalid character"},
		{`{"cniVersion":"1.1.0","name":"n","mtu":"1400"}`, CodeDecodingFailure, "mtu"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"aliases":7}}`, CodeDecodingFailure, "aliases"},
		{`{"cniVersion":"2.0.0","name":"n"}`, CodeIncompatibleVersion, `"2.0.0"`},
		{`{"cniVersion":"0.2.0","name":"n"}`, CodeIncompatibleVersion, "0.2.0"},
		{`{"name":"n"}`, CodeIncompatibleVersion, `""`},
		{`{"cniVersion":"1.1.0"}`, CodeInvalidConfig, "name"},
		{`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local"}}`, CodeUnsupportedField, "host-local"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"mac":"01:00:5e:00:00:01"}}`, CodeInvalidConfig, "unicast"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"mac":"00:00:00:00:00:00"}}`, CodeInvalidConfig, "unicast"},
		{`{"cniVersion":"1.1.0","name":"n","subnet":"10.0.0.0"}`, CodeInvalidConfig, "subnet"},
		{`{"cniVersion":"1.1.0","name":"n","gateway6":"x"}`, CodeInvalidConfig, "gateway6"},
		{`{"cniVersion":"1.1.0","name":"n","ipRange":"10.0.0.1/33"}`, CodeInvalidConfig, "ipRange"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["10.0.0.1","10.0.0.2"]}}`, CodeInvalidConfig, "one address per family"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["10.0.0.1","::ffff:10.0.0.2"]}}`, CodeInvalidConfig, "one address per family"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["nope"]}}`, CodeInvalidConfig, "nope"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"mac":"02:00"}}`, CodeInvalidConfig, "02:00"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}`, CodeInvalidConfig, "hostPort 0"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":70000}]}}`, CodeInvalidConfig, "70000"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}}`, CodeInvalidConfig, "icmp"},
		{`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"x"}]}}`, CodeInvalidConfig, "hostIP"},
	} {
		c, err := ParseConfig([]byte(tc.conf))
		if err == nil {
			_, err = c.Request(Invocation{}, &Args{})
		}
		if err == nil || err.Code != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v (code %v), want code %d mentioning %q", tc.conf, err, codeOf(err), tc.code, tc.msg)
		}
	}
}

func codeOf(err *Error) any {
	if err == nil {
		return nil
	}
	return err.Code
}

// The bridge plugin's keys asking for what knit's bridges never do are
// refused (by ADD and STATUS); asking for what they always do, or nothing,
// is accepted.
func TestUnsupported(t *testing.T) {
	for conf, want := range map[string]string{
		`{"hairpinMode":false}`:          "hairpinMode false",
		`{"isGateway":false}`:            "isGateway false",
		`{"vlan":100}`:                   "vlan 100",
		`{"vlanTrunk":[{"id":101}]}`:     "vlanTrunk",
		`{"promiscMode":true}`:           "promiscMode true",
		`{"hairpinMode":true}`:           "",
		`{"isGateway":true}`:             "",
		`{"vlanTrunk":[]}`:               "",
		`{"vlan":0,"promiscMode":false}`: "",
	} {
		full := `{"cniVersion":"1.1.0","name":"n",` + strings.TrimPrefix(conf, "{")
		c, perr := ParseConfig([]byte(full))
		if perr != nil {
			t.Fatalf("%s: %v", conf, perr)
		}
		err := c.Unsupported()
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v, want accepted", conf, err)
		case want != "" && (err == nil || err.Code != CodeUnsupportedField || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: %v, want code 2 mentioning %q", conf, err, want)
		}
	}
}

// DEL decodes only what it needs: a runtimeConfig it could not use does
// not stop it.
func TestParseBaseIgnoresTheRest(t *testing.T) {
	c, err := ParseBase([]byte(`{"cniVersion":"0.3.1","name":"n","network":"k","runtimeConfig":{"portMappings":"garbage"},"ipam":{"type":"x"}}`))
	if err != nil || c.NetworkName() != "k" {
		t.Fatalf("ParseBase: %+v, %v", c, err)
	}
}

func TestParseArgs(t *testing.T) {
	a, err := ParseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;IP=10.0.0.5/24,fd00::5;MAC=02:00:00:00:00:05;FOO=bar")
	if err != nil {
		t.Fatal(err)
	}
	if want := (&Args{PodName: "web-0", IPs: []string{"10.0.0.5/24", "fd00::5"}, MAC: "02:00:00:00:00:05"}); !reflect.DeepEqual(a, want) {
		t.Errorf("ParseArgs = %+v, want %+v", a, want)
	}
	if a, err := ParseArgs(""); err != nil || !reflect.DeepEqual(a, &Args{}) {
		t.Errorf("empty CNI_ARGS: %+v, %v", a, err)
	}
	if _, err := ParseArgs("IgnoreUnknown=true;X=1"); err != nil {
		t.Errorf("IgnoreUnknown=true: %v", err)
	}
	for s, code := range map[string]uint{
		"FOO=bar":             CodeUnsupportedField,
		"IgnoreUnknown=0;X=1": CodeUnsupportedField,
		"K8S_POD_NAME":        CodeInvalidEnv,
		"A=1;;B=2":            CodeInvalidEnv,
		"=x":                  CodeInvalidEnv,
	} {
		if _, err := ParseArgs(s); err == nil || err.Code != code {
			t.Errorf("ParseArgs(%q) = %v, want code %d", s, err, code)
		}
	}
}

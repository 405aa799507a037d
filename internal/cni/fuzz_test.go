package cni

import (
	"slices"
	"testing"

	"github.com/knit-dev/knit/internal/engine"
)

// codes are the error codes the package doc lists.
var codes = []uint{
	CodeIncompatibleVersion, CodeUnsupportedField, CodeUnknownContainer, CodeInvalidEnv, CodeIOFailure,
	CodeDecodingFailure, CodeInvalidConfig, CodeNotAvailable, CodeLimitedConnectivity,
	CodeKnitFailed, CodeConflict, CodeNotFound, CodeCheckFailed,
}

// FuzzParseConfig checks that any configuration and CNI_ARGS either fail
// with a documented code or give an ADD request the engine can take, and
// that DEL accepts every configuration ADD accepts.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []struct{ conf, args string }{
		{`{"cniVersion":"1.1.0","name":"knet","type":"knit"}`, ""},
		{`{"cniVersion":"0.3.1","name":"n","subnet":"10.1.0.0/24","runtimeConfig":{"ips":["10.1.0.5/24"],"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"udp"}]}}`, "IP=10.1.0.6"},
		{`{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"aliases":{"n":["a"]},"mac":"02:00:00:00:00:01"}}`, "K8S_POD_NAME=p;IgnoreUnknown=1;X=y"},
		{`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local"}}`, "MAC=zz"},
		{`{"cniVersion":"1.1.0","name":"n","prevResult":{"cniVersion":"1.1.0"},"args":{"cni":{"ips":["fd00::1"]}}}`, ";"},
		{`[`, "="},
	} {
		f.Add([]byte(s.conf), s.args)
	}
	f.Fuzz(func(t *testing.T, conf []byte, cniArgs string) {
		c, err := ParseConfig(conf)
		if err == nil {
			if _, berr := ParseBase(conf); berr != nil {
				t.Fatalf("ADD's config refused by DEL: %v", berr)
			}
			var args *Args
			if args, err = ParseArgs(cniArgs); err == nil {
				req, rerr := c.Request(Invocation{ContainerID: "c", IfName: "eth0", Netns: "/ns"}, args)
				if err = rerr; err == nil {
					checkRequest(t, c, req)
				}
			}
		}
		if err != nil && (!slices.Contains(codes, err.Code) || err.Msg == "") {
			t.Fatalf("error %+v: undocumented code or no message", err)
		}
	})
}

// checkRequest asserts what the engine relies on in an accepted request.
func checkRequest(t *testing.T, c *NetConf, req engine.CNIRequest) {
	t.Helper()
	network, ips, mac := req.Network.Name, req.IPs, req.MAC
	if network != c.NetworkName() || network == "" {
		t.Fatalf("network %q for config name %q network %q", network, c.Name, c.Network)
	}
	if len(ips) > 2 || len(ips) == 2 && ips[0].Is4() == ips[1].Is4() {
		t.Fatalf("ips %v: at most one per family", ips)
	}
	if mac != nil && len(mac) != 6 {
		t.Fatalf("mac %v", mac)
	}
	for _, p := range req.Ports {
		if p.HostPort == 0 || p.ContainerPort == 0 || (p.Proto != "tcp" && p.Proto != "udp" && p.Proto != "sctp") {
			t.Fatalf("port %+v", p)
		}
	}
}

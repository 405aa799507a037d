package cni

import (
	"strings"
)

// Args are the CNI_ARGS knit understands.
type Args struct {
	PodName string   // K8S_POD_NAME: the attachment's DNS name
	IPs     []string // IP=, comma-separated: requested addresses
	MAC     string   // MAC=
}

// knownArgs are the CNI_ARGS keys knit accepts; those it does not use are
// the ones Kubernetes runtimes always send.
var knownArgs = map[string]bool{
	"IgnoreUnknown": true, "K8S_POD_NAME": true, "K8S_POD_NAMESPACE": true,
	"K8S_POD_INFRA_CONTAINER_ID": true, "K8S_POD_UID": true, "IP": true, "MAC": true,
}

// ParseArgs parses CNI_ARGS ("K=V;K2=V2"). A pair without "=" is an invalid
// environment (code 4); an unknown key is an unsupported field (code 2)
// unless IgnoreUnknown is 1 or true, as in the reference plugins.
func ParseArgs(s string) (*Args, *Error) {
	a := &Args{}
	if s == "" {
		return a, nil
	}
	pairs := map[string]string{}
	var order []string
	for _, pair := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, newError(CodeInvalidEnv, "invalid CNI_ARGS", "pair %q is not KEY=VALUE", pair)
		}
		pairs[k] = v
		order = append(order, k)
	}
	ignore := strings.EqualFold(pairs["IgnoreUnknown"], "true") || pairs["IgnoreUnknown"] == "1"
	for _, k := range order {
		if !knownArgs[k] && !ignore {
			return nil, newError(CodeUnsupportedField, "unsupported CNI_ARGS key", "%s=%s (set IgnoreUnknown=1 to pass keys knit does not use)", k, pairs[k])
		}
	}
	a.PodName, a.MAC = pairs["K8S_POD_NAME"], pairs["MAC"]
	if ips := pairs["IP"]; ips != "" {
		a.IPs = strings.Split(ips, ",")
	}
	return a, nil
}

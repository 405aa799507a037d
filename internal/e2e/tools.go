//go:build tools

// This file is never built. It names the modules that the test helper
// programs under testdata/ import (go mod tidy skips testdata directories),
// so that tidying keeps their requirements and go.sum entries.
package e2e

import (
	_ "github.com/containernetworking/cni/libcni"
	_ "github.com/miekg/dns"
)

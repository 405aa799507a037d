package link

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/knit-dev/knit/internal/faults"
)

// forwardingPath is the switch of IPv4 (v6: IPv6) forwarding, in the
// calling thread's network namespace (the kernel picks /proc/sys/net's
// namespace from the thread that opens it).
func forwardingPath(v6 bool) string {
	if v6 {
		return "/proc/sys/net/ipv6/conf/all/forwarding"
	}
	return "/proc/sys/net/ipv4/ip_forward"
}

// SetForwarding turns IPv4 (v6: IPv6) forwarding on. It writes only when
// it is off, because a write, even of the same value, resets every
// interface's forwarding setting. (A host that forwards IPv6 ignores
// router advertisements unless accept_ra=2 on its uplink, as with Docker.)
//
// Equivalent to: sysctl -w net.ipv4.ip_forward=1 (net.ipv6.conf.all.forwarding=1)
func SetForwarding(v6 bool) error { return sysctlEnsure(forwardingPath(v6), "1") }

// ForwardingOn reports whether the calling thread's network namespace
// forwards IPv4 (v6: IPv6).
//
// Equivalent to: sysctl net.ipv4.ip_forward (net.ipv6.conf.all.forwarding)
func ForwardingOn(v6 bool) (bool, error) {
	path := forwardingPath(v6)
	cur, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return string(bytes.TrimSpace(cur)) == "1", nil
}

// AnyForwarding reports whether some interface of the calling thread's
// namespace forwards IPv4 (v6: IPv6) though the global switch is off (a
// per-link setting, as systemd-networkd's IPv4Forwarding= writes): the
// host routes already.
//
// Equivalent to: sysctl net.ipv4.conf.*.forwarding
func AnyForwarding(v6 bool) (bool, error) {
	dir := "/proc/sys/net/ipv4/conf"
	if v6 {
		dir = "/proc/sys/net/ipv6/conf"
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if e.Name() == "all" || e.Name() == "default" || e.Name() == "lo" {
			continue
		}
		if cur, err := os.ReadFile(dir + "/" + e.Name() + "/forwarding"); err == nil && string(bytes.TrimSpace(cur)) == "1" {
			return true, nil
		}
	}
	return false, nil
}

// EnableIPv6 turns IPv6 on for dev, in the calling thread's namespace,
// unless it is: for a link added to a namespace whose new links start
// without IPv6 (network connect; knit made such namespaces before it used
// LinkSetNoIPv6Addrs), and for a bridge on a host whose
// net.ipv6.conf.all.disable_ipv6=1 turns it off on every new link (its
// IPv6 gateway could not be added).
//
// Equivalent to: sysctl -w net.ipv6.conf.DEV.disable_ipv6=0
func EnableIPv6(dev string) error {
	if err := sysctlEnsure("/proc/sys/net/ipv6/conf/"+dev+"/disable_ipv6", "0"); err != nil {
		return fmt.Errorf("enable IPv6 on %s: %w", dev, err)
	}
	return nil
}

// NoRouterAdverts keeps the host from taking router advertisements that
// arrive on dev (a bridge of containers, any of which could send one and
// become the host's IPv6 default router: CVE-2020-13401; Docker sets the
// same on its bridges). A host without IPv6 has nothing to set.
//
// Equivalent to: sysctl -w net.ipv6.conf.DEV.accept_ra=0
func NoRouterAdverts(dev string) error {
	err := sysctlEnsure("/proc/sys/net/ipv6/conf/"+dev+"/accept_ra", "0")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// SetRouteLocalnet lets packets addressed to 127.0.0.0/8 be routed out of
// dev, which publishing a port on 127.0.0.1 needs: the host's own connection
// to 127.0.0.1:PORT is rewritten to the container's address and leaves
// through the bridge with its loopback source (then masqueraded).
//
// Equivalent to: sysctl -w net.ipv4.conf.DEV.route_localnet=1
func SetRouteLocalnet(dev string) error { return RouteLocalnet(dev, true) }

// RouteLocalnet sets route_localnet on dev ("all": every interface) to on.
//
// Equivalent to: sysctl -w net.ipv4.conf.DEV.route_localnet=1 (or 0)
func RouteLocalnet(dev string, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	return sysctlEnsure("/proc/sys/net/ipv4/conf/"+dev+"/route_localnet", v)
}

// PromoteSecondaries makes the kernel keep dev's secondary IPv4 addresses
// when their subnet's primary address is deleted (by default it deletes
// them with it), unless dev or "all" does so already. restore undoes the
// change; it is nil when there was nothing to change. A crash in between
// leaves the setting on, which many distributions make the default anyway.
//
// Equivalent to: sysctl -w net.ipv4.conf.DEV.promote_secondaries=1
func PromoteSecondaries(dev string) (restore func() error, err error) {
	const all = "/proc/sys/net/ipv4/conf/all/promote_secondaries"
	path := "/proc/sys/net/ipv4/conf/" + dev + "/promote_secondaries"
	for _, p := range []string{all, path} {
		cur, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		if string(bytes.TrimSpace(cur)) != "0" {
			return nil, nil
		}
	}
	faults.Step("link.sysctl")
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return func() error {
		faults.Step("link.sysctl")
		if err := os.WriteFile(path, []byte("0\n"), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	}, nil
}

// BridgeNetfilterLoaded reports whether the br_netfilter module is
// loaded: without it no bridge's traffic between its ports reaches the
// forward hook, whatever the bridges ask (SetBridgeNetfilter).
func BridgeNetfilterLoaded() bool {
	_, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables")
	return err == nil
}

// sysctlEnsure writes value to path unless it already holds it.
func sysctlEnsure(path, value string) error {
	cur, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if string(bytes.TrimSpace(cur)) == value {
		return nil
	}
	faults.Step("link.sysctl")
	if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

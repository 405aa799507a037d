package link

import (
	"bytes"
	"fmt"
	"os"
)

// SetIPForward turns on IPv4 forwarding in the calling thread's network
// namespace (the kernel picks /proc/sys/net's namespace from the thread that
// opens it). It writes only when forwarding is off, because a write, even of
// the same value, resets every interface's forwarding setting.
//
// Equivalent to: sysctl -w net.ipv4.ip_forward=1
func SetIPForward() error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	cur, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if string(bytes.TrimSpace(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable %s: %w", path, err)
	}
	return nil
}

// DisableIPv6ForNewLinks makes links created from now on in the calling
// thread's network namespace start without IPv6: no link-local address, no
// duplicate address detection, no multicast listener reports. A container on
// an IPv4-only network needs none of it, and on a bridge every such packet is
// flooded to every other port, a cost that grows with the number of
// containers. (Docker 27 does the same for IPv4-only networks.)
//
// Equivalent to: sysctl -w net.ipv6.conf.default.disable_ipv6=1
func DisableIPv6ForNewLinks() error {
	const path = "/proc/sys/net/ipv6/conf/default/disable_ipv6"
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("disable IPv6 for new links: %w", err)
	}
	return nil
}

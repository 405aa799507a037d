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

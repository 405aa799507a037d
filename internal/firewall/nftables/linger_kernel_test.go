package nftables_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/nftables"
)

// socketsOf returns the socket inodes ("socket:[N]") that process pid has
// open.
func socketsOf(pid string) map[string]bool {
	out := map[string]bool{}
	fds, _ := filepath.Glob("/proc/" + pid + "/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:") {
			out[l] = true
		}
	}
	return out
}

// holders returns the processes other than this one that have socket s
// open, and their commands.
func holders(s string) []string {
	var out []string
	self := strconv.Itoa(os.Getpid())
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		pid := filepath.Base(p)
		if pid != self && socketsOf(pid)[s] {
			cmd, _ := os.ReadFile(p + "/cmdline")
			out = append(out, strings.ReplaceAll(string(cmd), "\x00", " "))
		}
	}
	return out
}

// Linger closes the firewall's sockets here and, after a batch that
// deleted something, leaves them to a holder (sleep, named knit-linger)
// that closes them a moment later: the process that deleted elements
// (or added chains in place again) then exits without waiting for the
// kernel to free them. Without a batch, or after batches that only
// added (whose release waits for nothing), nothing holds them.
func TestLingerHandsSocketsOver(t *testing.T) {
	port := portMapping("", 8080, "tcp", "10.99.0.2", 80)
	for _, c := range []struct {
		name  string
		calls func(fw *nftables.Firewall)
		held  bool
	}{
		{"no batch", func(*nftables.Firewall) {}, false},
		{"additions", func(fw *nftables.Firewall) {
			check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")))
			check(t, fw.AddPorts("c1", []firewall.PortMapping{port}))
		}, false},
		{"a second network", func(fw *nftables.Firewall) {
			// its batch adds the base chains in place again, whose old
			// state the kernel frees after a grace period
			check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")))
			check(t, fw.EnsureNetwork(network("n2", "br1", "10.98.0.0/24")))
		}, true},
		{"a deletion", func(fw *nftables.Firewall) {
			check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")))
			check(t, fw.AddPorts("c1", []firewall.PortMapping{port}))
			check(t, fw.RemovePorts("c1", []firewall.PortMapping{port}))
		}, true},
	} {
		fw, _ := newFirewall(t)
		c.calls(fw)
		before := socketsOf("self")
		fw.Linger()
		after := socketsOf("self")
		var closed []string
		for s := range before {
			if !after[s] {
				closed = append(closed, s)
			}
		}
		if len(closed) == 0 {
			t.Fatalf("%s: Linger closed no socket here", c.name)
		}
		for _, s := range closed {
			h := holders(s)
			switch {
			case c.held && (len(h) != 1 || !strings.HasPrefix(h[0], nftables.LingerName+" ")):
				t.Errorf("after %s, %s is held by %q, want one %s", c.name, s, h, nftables.LingerName)
			case !c.held && len(h) != 0:
				t.Errorf("after %s, %s is held by %q", c.name, s, h)
			}
		}
	}
	time.Sleep(300 * time.Millisecond) // the holders end by themselves
}

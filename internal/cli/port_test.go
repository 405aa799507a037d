package cli

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/portmap"
)

// knit port lists its lines in natural order, as docker port does.
func TestNaturalCompare(t *testing.T) {
	lines := []string{"8080/tcp -> 0.0.0.0:1", "443/tcp -> 0.0.0.0:8443", "80/udp -> 0.0.0.0:80", "80/tcp -> 10.0.0.10:80", "80/tcp -> 10.0.0.9:80"}
	slices.SortFunc(lines, naturalCompare)
	want := []string{"80/tcp -> 10.0.0.9:80", "80/tcp -> 10.0.0.10:80", "80/udp -> 0.0.0.0:80", "443/tcp -> 0.0.0.0:8443", "8080/tcp -> 0.0.0.0:1"}
	if !slices.Equal(lines, want) {
		t.Errorf("sorted:\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{{"a", "a", 0}, {"a1", "a01", -1}, {"a", "ab", -1}, {"a2", "a10", -1}, {"b", "a9", 1},
		{"net1", "net-a", -1}, {"a1c", "a01b", -1}, {"x", "x", 0}} {
		if got := naturalCompare(tc.a, tc.b); got != tc.want {
			t.Errorf("naturalCompare(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// ps's PORTS as Docker's DisplayablePorts: runs of ports published on the
// same numbers fold into a range, per address family, and so do exposed
// ones; a mapping to another number comes last.
func TestPortsColumnRanges(t *testing.T) {
	c := inspectContainer()
	c.Spec.Exposed = []portmap.Spec{{ContainerFirst: 7000, ContainerLast: 7002, Proto: portmap.UDP}}
	c.Ports = nil
	for p := uint16(8000); p <= 8002; p++ {
		c.Ports = append(c.Ports,
			firewall.PortMapping{Network: "bridge", HostPort: p, Proto: "tcp", ContainerPort: p},
			firewall.PortMapping{Network: "bridge", HostIP: netip.IPv6Unspecified(), HostPort: p, Proto: "tcp", ContainerPort: p})
	}
	c.Ports = append(c.Ports, firewall.PortMapping{Network: "bridge", HostPort: 9090, Proto: "tcp", ContainerPort: 80})
	want := "7000-7002/udp, 0.0.0.0:8000-8002->8000-8002/tcp, [::]:8000-8002->8000-8002/tcp, 0.0.0.0:9090->80/tcp"
	if got := portsColumn(c); got != want {
		t.Errorf("ps PORTS = %q, want %q", got, want)
	}
}

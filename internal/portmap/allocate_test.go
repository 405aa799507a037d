package portmap

import (
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
)

// held is a Taken over a fixed list of published mappings, owner by index.
type held map[Mapping]string

func (h held) taken(ip netip.Addr, proto Proto, port uint16) (string, bool) {
	for m, owner := range h {
		if m.Proto == proto && m.HostPort == port && Overlaps(m.HostIP, ip) {
			return owner, true
		}
	}
	return "", false
}

func mustPublish(t *testing.T, flags ...string) []Spec {
	t.Helper()
	var specs []Spec
	for _, f := range flags {
		s, err := ParsePublish(f)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, s...)
	}
	return specs
}

func TestOverlaps(t *testing.T) {
	var zero netip.Addr
	ip := netip.MustParseAddr
	tests := []struct {
		a, b netip.Addr
		want bool
	}{
		{zero, zero, true},
		{zero, ip("127.0.0.1"), true},
		{zero, ip("::1"), true},
		{ip("0.0.0.0"), ip("127.0.0.1"), true},
		{ip("0.0.0.0"), ip("0.0.0.0"), true},
		{ip("0.0.0.0"), ip("::1"), false},
		{ip("0.0.0.0"), ip("::"), false},
		{ip("::"), ip("::1"), true},
		{ip("::"), ip("127.0.0.1"), false},
		{ip("127.0.0.1"), ip("127.0.0.1"), true},
		{ip("127.0.0.1"), ip("127.0.0.2"), false},
		{ip("127.0.0.1"), ip("::1"), false},
		{ip("::ffff:127.0.0.1"), ip("127.0.0.1"), true},
		{ip("2001:db8::1"), ip("2001:db8::2"), false},
	}
	for _, tt := range tests {
		if got := Overlaps(tt.a, tt.b); got != tt.want {
			t.Errorf("Overlaps(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := Overlaps(tt.b, tt.a); got != tt.want {
			t.Errorf("Overlaps(%v, %v) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestMappingString(t *testing.T) {
	tests := []struct {
		m    Mapping
		want string
	}{
		{Mapping{HostPort: 8080, Proto: TCP, ContainerPort: 80}, "80/tcp -> 0.0.0.0:8080"},
		{Mapping{HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 8080, Proto: TCP, ContainerPort: 80}, "80/tcp -> 0.0.0.0:8080"},
		{Mapping{HostIP: netip.MustParseAddr("::"), HostPort: 8080, Proto: TCP, ContainerPort: 80}, "80/tcp -> [::]:8080"},
		{Mapping{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 5353, Proto: UDP, ContainerPort: 53}, "53/udp -> 127.0.0.1:5353"},
		{Mapping{HostIP: netip.MustParseAddr("2001:db8::1"), HostPort: 9, Proto: SCTP, ContainerPort: 9}, "9/sctp -> [2001:db8::1]:9"},
	}
	for _, tt := range tests {
		if got := tt.m.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.m, got, tt.want)
		}
	}
}

func TestAllocateFixed(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name  string
		flags []string
		held  held
		want  []string // Mapping.String of each result
	}{
		{"single", []string{"8080:80"}, nil, []string{"80/tcp -> 0.0.0.0:8080"}},
		{"range pairs", []string{"8000-8002:80-82/udp"}, nil,
			[]string{"80/udp -> 0.0.0.0:8000", "81/udp -> 0.0.0.0:8001", "82/udp -> 0.0.0.0:8002"}},
		{"other proto free", []string{"8080:80/udp"}, held{{HostPort: 8080, Proto: TCP}: "container web"},
			[]string{"80/udp -> 0.0.0.0:8080"}},
		{"other specific IP free", []string{"127.0.0.2:8080:80"}, held{{HostIP: lo, HostPort: 8080, Proto: TCP}: "container web"},
			[]string{"80/tcp -> 127.0.0.2:8080"}},
		{"v4 and v6 specific", []string{"[::1]:8080:80"}, held{{HostIP: lo, HostPort: 8080, Proto: TCP}: "container web"},
			[]string{"80/tcp -> [::1]:8080"}},
		{"same port two IPs in one call", []string{"127.0.0.1:8080:80", "127.0.0.2:8080:80"}, nil,
			[]string{"80/tcp -> 127.0.0.1:8080", "80/tcp -> 127.0.0.2:8080"}},
		{"range first free", []string{"8000-8010:80"}, held{{HostPort: 8000, Proto: TCP}: "x", {HostPort: 8001, Proto: TCP}: "y"},
			[]string{"80/tcp -> 0.0.0.0:8002"}},
		{"fixed placed before range", []string{"8000-8001:80", "8000:81"}, nil,
			[]string{"80/tcp -> 0.0.0.0:8001", "81/tcp -> 0.0.0.0:8000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Allocate(mustPublish(t, tt.flags...), tt.held.taken)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i].String() != tt.want[i] {
					t.Errorf("mapping %d = %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestAllocateErrors(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	first, last := EphemeralRange()
	ephemeral := func(_ netip.Addr, _ Proto, p uint16) (string, bool) {
		return "", p >= first && p <= last
	}
	tests := []struct {
		name  string
		specs []Spec
		taken Taken
		kind  errdefs.Kind
		want  string
	}{
		{"container", mustPublish(t, "8080:80"), held{{HostPort: 8080, Proto: TCP}: "container web"}.taken,
			errdefs.KindConflict, "Bind for 0.0.0.0:8080 failed: port is already allocated (8080/tcp, held by container web)"},
		{"host process", mustPublish(t, "8080:80"), (&Listeners{addrs: map[listenKey][]netip.Addr{{TCP, 8080}: {lo}}}).Taken,
			errdefs.KindConflict, "Bind for 0.0.0.0:8080 failed: address already in use (8080/tcp, held by a process listening on the host)"},
		{"no owner", mustPublish(t, "127.0.0.1:8080:80"), held{{HostPort: 8080, Proto: TCP}: ""}.taken,
			errdefs.KindConflict, "Bind for 127.0.0.1:8080 failed: port is already allocated (8080/tcp)"},
		{"specific vs wildcard", mustPublish(t, "127.0.0.1:8080:80"), held{{HostIP: netip.IPv4Unspecified(), HostPort: 8080, Proto: TCP}: "container a"}.taken,
			errdefs.KindConflict, "Bind for 127.0.0.1:8080 failed: port is already allocated (8080/tcp, held by container a)"},
		{"wildcard vs specific", mustPublish(t, "[::]:8080:80"), held{{HostIP: netip.IPv6Loopback(), HostPort: 8080, Proto: TCP}: "container b"}.taken,
			errdefs.KindConflict, "Bind for [::]:8080 failed: port is already allocated (8080/tcp, held by container b)"},
		{"range pair taken", mustPublish(t, "8000-8002:80-82"), held{{HostPort: 8002, Proto: TCP}: "container c"}.taken,
			errdefs.KindConflict, "Bind for 0.0.0.0:8002 failed: port is already allocated (8002/tcp, held by container c)"},
		{"twice", mustPublish(t, "8080:80", "8080:81"), nil,
			errdefs.KindInvalid, "host port 8080/tcp is published more than once"},
		{"twice wildcard", mustPublish(t, "127.0.0.1:8080:80", "8080:81"), nil,
			errdefs.KindInvalid, "host port 8080/tcp is published more than once"},
		{"range full", mustPublish(t, "8000-8001:80"), held{{HostPort: 8000, Proto: TCP}: "a", {HostPort: 8001, Proto: TCP}: "b"}.taken,
			errdefs.KindConflict, "no free host port in 8000-8001/tcp"},
		{"range used up by own specs", mustPublish(t, "8000-8001:80", "8000-8001:81", "8000-8001:82"), nil,
			errdefs.KindConflict, "no free host port in 8000-8001/tcp"},
		{"ephemeral full", mustPublish(t, "80/udp"), ephemeral,
			errdefs.KindConflict, fmt.Sprintf("no free host port in %d-%d/udp", first, last)},
		{"bad proto", []Spec{{ContainerFirst: 80, ContainerLast: 80}}, nil,
			errdefs.KindInvalid, `invalid port spec 80/: unknown protocol "" (want tcp, udp or sctp)`},
		{"no container port", []Spec{{Proto: TCP}}, nil,
			errdefs.KindInvalid, `invalid port spec 0/tcp: bad container port range 0-0`},
		{"reversed host", []Spec{{HostPortFirst: 9, HostPortLast: 8, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}}, nil,
			errdefs.KindInvalid, `invalid port spec 9-8:80/tcp: bad host port range 9-8`},
		{"unequal", []Spec{{HostPortFirst: 1, HostPortLast: 2, ContainerFirst: 80, ContainerLast: 90, Proto: TCP}}, nil,
			errdefs.KindInvalid, `invalid port spec 1-2:80-90/tcp: host range 1-2 and container range 80-90 differ in length`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Allocate(tt.specs, tt.taken)
			if err == nil {
				t.Fatalf("Allocate = %v, want error %q", got, tt.want)
			}
			if got != nil {
				t.Errorf("Allocate returned %v with its error; want nothing", got)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
			if k := errdefs.KindOf(err); k != tt.kind {
				t.Errorf("kind = %v, want %v", k, tt.kind)
			}
		})
	}
}

// TestAllocateRandomNeverCollides publishes 1000 random ports, some in one
// call and some one call at a time against what earlier calls took, on
// overlapping addresses, and checks that no two overlap.
func TestAllocateRandomNeverCollides(t *testing.T) {
	h := held{}
	ips := []netip.Addr{{}, netip.IPv4Unspecified(), netip.MustParseAddr("127.0.0.1"), netip.IPv6Unspecified()}
	first, last := EphemeralRange()
	record := func(ms []Mapping) {
		for _, m := range ms {
			if m.HostPort < first || m.HostPort > last {
				t.Fatalf("%v: host port outside the ephemeral range", m)
			}
			if owner, ok := h.taken(m.HostIP, m.Proto, m.HostPort); ok {
				t.Fatalf("%v collides with %s", m, owner)
			}
			h[m] = "earlier"
		}
	}
	// One call with 500 ports.
	batch, err := Allocate([]Spec{{ContainerFirst: 1, ContainerLast: 500, Proto: TCP}}, h.taken)
	if err != nil {
		t.Fatal(err)
	}
	record(batch)
	// 500 calls of one port each.
	for i := range 500 {
		ms, err := Allocate([]Spec{{HostIP: ips[i%len(ips)], ContainerFirst: 80, ContainerLast: 80, Proto: TCP}}, h.taken)
		if err != nil {
			t.Fatal(err)
		}
		record(ms)
	}
	if len(h) != 1000 {
		t.Fatalf("recorded %d mappings, want 1000", len(h))
	}
}

// TestAllocateFillsEphemeralRange checks that random allocation finds the
// last free port instead of giving up after some tries.
func TestAllocateFillsEphemeralRange(t *testing.T) {
	first, last := EphemeralRange()
	free := first + (last-first)/2
	taken := func(_ netip.Addr, _ Proto, p uint16) (string, bool) { return "x", p != free }
	got, err := Allocate(mustPublish(t, "80"), taken)
	if err != nil || got[0].HostPort != free {
		t.Fatalf("Allocate = %v, %v; want port %d", got, err, free)
	}
}

func TestParsePortRange(t *testing.T) {
	for _, tt := range []struct {
		in          string
		first, last uint16
		ok          bool
	}{
		{"32768\t60999\n", 32768, 60999, true},
		{"40000 40000", 40000, 40000, true},
		{"1024\t65535\n", 1024, 65535, true},
		{"", 0, 0, false},
		{"32768", 0, 0, false},
		{"60999\t32768\n", 0, 0, false}, // reversed
		{"0\t100\n", 0, 0, false},
		{"32768\t70000\n", 0, 0, false},
		{"a b", 0, 0, false},
		{"1 2 3", 0, 0, false},
	} {
		first, last, ok := parsePortRange(tt.in)
		if first != tt.first || last != tt.last || ok != tt.ok {
			t.Errorf("parsePortRange(%q) = %d, %d, %v; want %d, %d, %v", tt.in, first, last, ok, tt.first, tt.last, tt.ok)
		}
	}
}

// The range is the kernel's, read where knit runs.
func TestEphemeralRangeIsTheKernels(t *testing.T) {
	b, err := os.ReadFile(portRangeFile)
	if err != nil {
		t.Skipf("no %s: %v", portRangeFile, err)
	}
	// Read here without parsePortRange, which a wrong EphemeralRange
	// would share: the file's two numbers, as they are.
	var want, wantLast uint16
	if _, err := fmt.Sscan(string(b), &want, &wantLast); err != nil {
		t.Fatalf("%s: %q: %v", portRangeFile, b, err)
	}
	if first, last := EphemeralRange(); first != want || last != wantLast {
		t.Fatalf("EphemeralRange = %d-%d, the kernel's %q", first, last, b)
	}
}

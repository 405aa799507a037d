package portmap

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/knit-dev/knit/internal/errdefs"
)

// The range random host ports come from when the kernel's cannot be read:
// Docker's.
const (
	DefaultEphemeralFirst uint16 = 49153
	DefaultEphemeralLast  uint16 = 60999
)

// portRangeFile holds the kernel's range of ephemeral ports, in the
// namespace of the thread that reads it.
const portRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// EphemeralRange returns the range random host ports come from: as with
// Docker, the kernel's ephemeral ports (net.ipv4.ip_local_port_range,
// 32768-60999 unless the administrator changed it), or
// DefaultEphemeralFirst-DefaultEphemeralLast if that cannot be read.
func EphemeralRange() (first, last uint16) {
	if b, err := os.ReadFile(portRangeFile); err == nil {
		if first, last, ok := parsePortRange(string(b)); ok {
			return first, last
		}
	}
	return DefaultEphemeralFirst, DefaultEphemeralLast
}

// parsePortRange reads ip_local_port_range's "FIRST\tLAST\n".
func parsePortRange(s string) (first, last uint16, ok bool) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(f[0], 10, 16)
	b, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || a == 0 || a > b {
		return 0, 0, false
	}
	return uint16(a), uint16(b), true
}

// Mapping is one concrete published port.
type Mapping struct {
	HostIP        netip.Addr // zero: all host addresses
	HostPort      uint16
	Proto         Proto
	ContainerPort uint16
}

// String returns the line `docker port` prints, "80/tcp -> 0.0.0.0:8080" or
// "80/tcp -> [::]:8080"; the zero HostIP prints as 0.0.0.0.
func (m Mapping) String() string {
	ip := m.HostIP
	if !ip.IsValid() {
		ip = netip.IPv4Unspecified()
	}
	return strconv.Itoa(int(m.ContainerPort)) + "/" + string(m.Proto) + " -> " +
		netip.AddrPortFrom(ip, m.HostPort).String()
}

// Taken reports whether a host port is already published or bound, and by
// whom: owner completes "already in use by ...", as in "container web" or
// "a process listening on the host". An implementation must apply Overlaps:
// a query for the zero Addr or 0.0.0.0 is taken by a holder on 127.0.0.1.
type Taken func(hostIP netip.Addr, proto Proto, port uint16) (owner string, taken bool)

// slot is one mapping to be made: a container port and the host ports it
// may take.
type slot struct {
	ip          netip.Addr
	proto       Proto
	ctr         uint16
	first, last uint16 // candidate host ports; 0, 0 means the ephemeral range
}

func (s slot) fixed() bool  { return s.first != 0 && s.first == s.last }
func (s slot) random() bool { return s.first == 0 }

// pass is when a slot is placed: fixed ports first, then host ranges, then
// random ports, so a flexible slot never takes a port a fixed one needs.
func (s slot) pass() int {
	switch {
	case s.fixed():
		return 0
	case s.random():
		return 2
	}
	return 1
}

// Allocate turns specs into mappings, one per container port, in spec order.
// Fixed host ports fail with errdefs.Conflict if taken reports them, and with
// errdefs.Invalid if two specs ask for overlapping ones. A host range with a
// single container port takes the first free port of the range; a missing
// host port becomes a random free port of the ephemeral range. Fixed ports
// are placed first, then ranges, then random ports, so that a flexible spec
// never takes a port a fixed one needs. A nil taken means nothing is taken.
func Allocate(specs []Spec, taken Taken) ([]Mapping, error) {
	if taken == nil {
		taken = func(netip.Addr, Proto, uint16) (string, bool) { return "", false }
	}
	slots, err := expand(specs)
	if err != nil {
		return nil, err
	}
	a := allocator{taken: taken, out: make([]Mapping, len(slots)), done: make([]bool, len(slots))}
	if slices.ContainsFunc(slots, slot.random) {
		a.first, a.last = EphemeralRange()
	}
	for pass := range 3 {
		for i, s := range slots {
			if s.pass() != pass {
				continue
			}
			if err := a.place(i, s); err != nil {
				return nil, err
			}
		}
	}
	return a.out, nil
}

// expand splits specs into slots after validating them.
func expand(specs []Spec) ([]slot, error) {
	var slots []slot
	for _, sp := range specs {
		if err := sp.validate(); err != nil {
			return nil, errdefs.Invalid("invalid port spec %s: %w", sp, err)
		}
		for c := range sp.ContainerPorts() {
			s := slot{ip: sp.HostIP, proto: sp.Proto, ctr: c, first: sp.HostPortFirst, last: sp.HostPortLast}
			if sp.HostPortFirst != 0 && sp.ContainerFirst != sp.ContainerLast {
				// Equal-length ranges map port to port.
				s.first = sp.HostPortFirst + (c - sp.ContainerFirst)
				s.last = s.first
			}
			slots = append(slots, s)
		}
	}
	return slots, nil
}

type allocator struct {
	taken       Taken
	out         []Mapping
	done        []bool
	first, last uint16 // EphemeralRange, when a slot is random
}

// place chooses the host port of slots[i] and records it in out[i].
func (a *allocator) place(i int, s slot) error {
	if s.fixed() {
		if a.ours(s.ip, s.proto, s.first) {
			return errdefs.Invalid("host port %s is published more than once", hostPort(s.ip, s.proto, s.first))
		}
		if owner, ok := a.taken(s.ip, s.proto, s.first); ok {
			return inUse(s.ip, s.proto, s.first, owner)
		}
		a.set(i, s, s.first)
		return nil
	}
	first, last, start := s.first, s.last, s.first
	if s.random() {
		first, last = a.first, a.last
		start = first + uint16(rand.IntN(int(last-first)+1))
	}
	n := int(last-first) + 1
	for k := range n {
		p := first + uint16((int(start-first)+k)%n)
		if a.ours(s.ip, s.proto, p) {
			continue
		}
		if _, ok := a.taken(s.ip, s.proto, p); ok {
			continue
		}
		a.set(i, s, p)
		return nil
	}
	return errdefs.Conflict("no free host port in %s/%s", portRange(first, last), s.proto)
}

func (a *allocator) set(i int, s slot, port uint16) {
	a.out[i] = Mapping{HostIP: s.ip, HostPort: port, Proto: s.proto, ContainerPort: s.ctr}
	a.done[i] = true
}

// ours reports whether a mapping already chosen in this call overlaps.
func (a *allocator) ours(ip netip.Addr, proto Proto, port uint16) bool {
	for i, m := range a.out {
		if a.done[i] && m.Proto == proto && m.HostPort == port && Overlaps(m.HostIP, ip) {
			return true
		}
	}
	return false
}

// inUse is the error of a host port owner holds, in dockerd's words
// ("Bind for 0.0.0.0:8080 failed: port is already allocated", which
// scripts look for; "address already in use" for a host's socket), then
// knit's: the protocol and the owner.
func inUse(ip netip.Addr, proto Proto, port uint16, owner string) error {
	bind := netip.AddrPortFrom(netip.IPv4Unspecified(), port).String()
	if ip.IsValid() {
		bind = netip.AddrPortFrom(ip, port).String()
	}
	why := "port is already allocated"
	if owner == OwnerHost {
		why = "address already in use"
	}
	detail := fmt.Sprintf("%d/%s", port, proto)
	if owner != "" {
		detail += ", held by " + owner
	}
	return errdefs.Conflict("Bind for %s failed: %s (%s)", bind, why, detail)
}

// hostPort names a host port for messages: "8080/tcp" or "127.0.0.1:8080/tcp".
func hostPort(ip netip.Addr, proto Proto, port uint16) string {
	if !ip.IsValid() {
		return strconv.Itoa(int(port)) + "/" + string(proto)
	}
	return netip.AddrPortFrom(ip, port).String() + "/" + string(proto)
}

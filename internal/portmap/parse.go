package portmap

import (
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"strconv"
	"strings"

	"github.com/knit-dev/knit/internal/errdefs"
)

// Spec is one parsed -p or --expose value, before host ports are chosen.
type Spec struct {
	HostIP netip.Addr // zero: all host addresses, IPv4 and IPv6

	// HostPortFirst and HostPortLast are 0, 0 to pick a random free port for
	// each container port. A range as long as the container range maps port
	// to port; a range with a single container port means "the first free
	// port of the range".
	HostPortFirst, HostPortLast uint16

	ContainerFirst, ContainerLast uint16
	Proto                         Proto
}

// ContainerPorts yields each container port of s, first to last.
func (s Spec) ContainerPorts() iter.Seq[uint16] {
	return func(yield func(uint16) bool) {
		for p := int(s.ContainerFirst); p <= int(s.ContainerLast); p++ {
			if !yield(uint16(p)) {
				return
			}
		}
	}
}

// ParsePublish parses one `docker run -p` value:
//
//	[[IP:][HOSTPORT]:]CONTAINERPORT[/PROTO]
//
// where ports may be ranges (8000-8010), an IPv6 IP may go in brackets
// ([2001:db8::1]:8080:80) or not, an empty (or, for one container port,
// zero) HOSTPORT is a random port, an empty IP every address, and PROTO is
// tcp (the default, also when empty), udp or sctp, as Docker reads them.
// It returns one Spec; ranges stay ranges and Allocate expands them.
//
// The long form of docker run -p, published=8080,target=80,protocol=udp,
// is read as docker's CLI does: as PUBLISHED:TARGET/PROTOCOL (tcp unless
// given), other keys ignored.
func ParsePublish(s string) ([]Spec, error) {
	short, err := standardNotation(s)
	if err != nil {
		return nil, errdefs.Invalid("invalid publish spec %q: %w", s, err)
	}
	sp, err := parsePublish(short)
	if err != nil {
		return nil, errdefs.Invalid("invalid publish spec %q: %w", s, err)
	}
	return []Spec{sp}, nil
}

// standardNotation turns the long form of -p into the short one.
func standardNotation(s string) (string, error) {
	if !strings.Contains(s, "=") {
		return s, nil
	}
	params := map[string]string{"protocol": "tcp"}
	for param := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(param, "=")
		if !ok || k == "" {
			return "", fmt.Errorf("want name=value, got %q", param)
		}
		params[k] = v
	}
	return params["published"] + ":" + params["target"] + "/" + params["protocol"], nil
}

// ParseExpose parses one `docker run --expose` value, PORT[-PORT][/PROTO].
// The Specs it returns have no host ports; -P publishes them on random ones.
func ParseExpose(s string) ([]Spec, error) {
	sp, err := parseExpose(s)
	if err != nil {
		return nil, errdefs.Invalid("invalid expose spec %q: %w", s, err)
	}
	return []Spec{sp}, nil
}

func parsePublish(s string) (Spec, error) {
	rest, proto, err := splitProto(s)
	if err != nil {
		return Spec{}, err
	}
	ip, host, ctr, err := splitPublish(rest)
	if err != nil {
		return Spec{}, err
	}
	sp := Spec{Proto: proto}
	if ip != "" {
		if sp.HostIP, err = parseHostIP(ip); err != nil {
			return Spec{}, err
		}
	}
	if host == "0" && strings.Contains(ctr, "-") {
		return Spec{}, errors.New("host port 0 with a container range: the ranges differ in length")
	}
	if host != "" && host != "0" { // 0, as empty: a random port
		if sp.HostPortFirst, sp.HostPortLast, err = parseRange(host); err != nil {
			return Spec{}, err
		}
	}
	if sp.ContainerFirst, sp.ContainerLast, err = parseRange(ctr); err != nil {
		return Spec{}, err
	}
	return sp, sp.validate()
}

func parseExpose(s string) (Spec, error) {
	rest, proto, err := splitProto(s)
	if err != nil {
		return Spec{}, err
	}
	if strings.Contains(rest, ":") {
		return Spec{}, errors.New("expose takes container ports only; use -p to choose a host port or IP")
	}
	sp := Spec{Proto: proto}
	if sp.ContainerFirst, sp.ContainerLast, err = parseRange(rest); err != nil {
		return Spec{}, err
	}
	return sp, sp.validate()
}

// splitProto splits "PORTS/PROTO"; without a slash the protocol is tcp.
func splitProto(s string) (string, Proto, error) {
	if s == "" {
		return "", "", errors.New("empty value")
	}
	rest, ps, ok := strings.Cut(s, "/")
	if !ok {
		return s, TCP, nil
	}
	if ps == "" {
		return rest, TCP, nil // "80/", as Docker reads it
	}
	p, ok := parseProto(ps)
	if !ok {
		return "", "", fmt.Errorf("unknown protocol %q (want tcp, udp or sctp)", ps)
	}
	return rest, p, nil
}

// splitPublish splits "[IP:][HOST:]CTR" into its parts; ip and host may be
// empty, ctr is whatever follows the last separator.
func splitPublish(s string) (ip, host, ctr string, err error) {
	const form = "[IP:][HOSTPORT:]CONTAINERPORT"
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", "", errors.New("missing ] after IPv6 address")
		}
		ip, rest := s[1:end], s[end+1:]
		if ip == "" {
			return "", "", "", errors.New("empty host IP in brackets")
		}
		host, ctr, ok := strings.Cut(strings.TrimPrefix(rest, ":"), ":")
		if !strings.HasPrefix(rest, ":") || !ok || strings.Contains(ctr, ":") {
			return "", "", "", errors.New("want [IPv6]:HOSTPORT:CONTAINERPORT (HOSTPORT may be empty)")
		}
		return ip, host, ctr, nil
	}
	// As Docker: the last part is the container port, the one before it
	// the host port (empty: a random one), and what comes before that the
	// host IP (empty: every address), an IPv6 one with or without brackets.
	parts := strings.Split(s, ":")
	n := len(parts)
	switch n {
	case 1:
		return "", "", parts[0], nil
	case 2:
		return "", parts[0], parts[1], nil
	}
	ip = strings.Join(parts[:n-2], ":")
	if n > 3 && !strings.Contains(ip, "::") && strings.Count(ip, ":") != 7 {
		return "", "", "", fmt.Errorf("too many colons; want %s", form)
	}
	return ip, parts[n-2], parts[n-1], nil
}

// parseHostIP parses the IP of a publish spec. IPv4-mapped IPv6 addresses
// become IPv4, so each socket address has one spelling.
func parseHostIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("bad host IP %q", s)
	}
	if ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("host IP %q: zones are not supported", s)
	}
	return ip.Unmap(), nil
}

// parseRange parses "PORT" or "FIRST-LAST".
func parseRange(s string) (first, last uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if first, err = parsePort(a); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return first, first, nil
	}
	if last, err = parsePort(b); err != nil {
		return 0, 0, err
	}
	if last < first {
		return 0, 0, fmt.Errorf("reversed port range %d-%d", first, last)
	}
	return first, last, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("bad port %q", s)
	}
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %s out of range 1-65535", s)
	}
	return uint16(n), nil
}

// validate checks what the parsers guarantee, for Specs built in code too.
func (s Spec) validate() error {
	if !s.Proto.valid() {
		return fmt.Errorf("unknown protocol %q (want tcp, udp or sctp)", s.Proto)
	}
	if s.ContainerFirst == 0 || s.ContainerLast < s.ContainerFirst {
		return fmt.Errorf("bad container port range %d-%d", s.ContainerFirst, s.ContainerLast)
	}
	if s.HostIP.Zone() != "" {
		return fmt.Errorf("host IP %s: zones are not supported", s.HostIP)
	}
	if s.HostPortFirst == 0 && s.HostPortLast == 0 {
		return nil
	}
	if s.HostPortFirst == 0 || s.HostPortLast < s.HostPortFirst {
		return fmt.Errorf("bad host port range %d-%d", s.HostPortFirst, s.HostPortLast)
	}
	hostLen := s.HostPortLast - s.HostPortFirst
	ctrLen := s.ContainerLast - s.ContainerFirst
	if ctrLen != 0 && hostLen != ctrLen {
		return fmt.Errorf("host range %s and container range %s differ in length",
			portRange(s.HostPortFirst, s.HostPortLast), portRange(s.ContainerFirst, s.ContainerLast))
	}
	return nil
}

// String returns s in canonical -p syntax; ParsePublish(s.String()) gives s
// back.
func (s Spec) String() string {
	var b strings.Builder
	if s.HostIP.IsValid() {
		if s.HostIP.Is6() {
			b.WriteString("[" + s.HostIP.String() + "]:")
		} else {
			b.WriteString(s.HostIP.String() + ":")
		}
	}
	if s.HostPortFirst != 0 {
		b.WriteString(portRange(s.HostPortFirst, s.HostPortLast) + ":")
	} else if s.HostIP.IsValid() {
		b.WriteString(":")
	}
	b.WriteString(portRange(s.ContainerFirst, s.ContainerLast) + "/" + string(s.Proto))
	return b.String()
}

func portRange(first, last uint16) string {
	if first == last {
		return strconv.Itoa(int(first))
	}
	return strconv.Itoa(int(first)) + "-" + strconv.Itoa(int(last))
}

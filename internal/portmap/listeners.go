package portmap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// procNet is where the kernel lists the sockets of the caller's network
// namespace.
const procNet = "/proc/net"

// OwnerHost is the owner Listeners.Taken reports.
const OwnerHost = "a process listening on the host"

// Listeners is a snapshot of the sockets bound in the caller's network
// namespace: listening TCP sockets and every bound UDP and SCTP socket.
// Read it once per batch of checks with ReadListeners.
type Listeners struct {
	addrs map[listenKey][]netip.Addr // zero Addr: every address
}

type listenKey struct {
	proto Proto
	port  uint16
}

// ReadListeners reads the listening TCP and bound UDP sockets through
// sock_diag (falling back to /proc/net/{tcp,tcp6,udp,udp6}) and, where the
// sctp module is loaded, /proc/net/sctp/eps, each once.
//
// Equivalent to: `ss -ltnuH` (plus `cat /proc/net/sctp/eps`).
func ReadListeners() (*Listeners, error) {
	l := &Listeners{addrs: map[listenKey][]netip.Addr{}}
	if err := readListenersDiag(l); err == nil {
		return l, nil
	}
	// A kernel without inet_diag: /proc, which is slower.
	l = &Listeners{addrs: map[listenKey][]netip.Addr{}}
	return l, readListenersProc(l)
}

// readListenersDiag reads TCP listeners and UDP sockets through sock_diag,
// and SCTP endpoints from /proc (sock_diag's SCTP dump is a module of its
// own, and the file is short).
func readListenersDiag(l *Listeners) error {
	c, err := openDiag()
	if err != nil {
		return err
	}
	defer c.close()
	for _, q := range []struct {
		family, proto uint8
		states        uint32
		p             Proto
	}{
		{unix.AF_INET, unix.IPPROTO_TCP, diagListen, TCP},
		{unix.AF_INET6, unix.IPPROTO_TCP, diagListen, TCP},
		{unix.AF_INET, unix.IPPROTO_UDP, diagAll, UDP},
		{unix.AF_INET6, unix.IPPROTO_UDP, diagAll, UDP},
	} {
		if err := c.read(l, q.family, q.proto, q.states, q.p); err != nil {
			return err
		}
	}
	r, err := os.Open(procNet + "/sctp/eps")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer r.Close()
	return parseSCTP(r, l, SCTP)
}

// readListenersProc reads the same from /proc/net.
func readListenersProc(l *Listeners) error {
	files := []struct {
		name     string
		parse    func(io.Reader, *Listeners, Proto) error
		proto    Proto
		optional bool // IPv6 can be disabled, sctp is a module
	}{
		{"tcp", parseInet, TCP, false},
		{"tcp6", parseInet, TCP, true},
		{"udp", parseInet, UDP, false},
		{"udp6", parseInet, UDP, true},
		{"sctp/eps", parseSCTP, SCTP, true},
	}
	for _, f := range files {
		path := procNet + "/" + f.name
		r, err := os.Open(path)
		if f.optional && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read listening sockets: %w", err)
		}
		err = f.parse(r, l, f.proto)
		r.Close()
		if err != nil {
			return fmt.Errorf("read listening sockets: %s: %w", path, err)
		}
	}
	return nil
}

// HostListening reports whether a socket in the caller's network namespace
// listens on (tcp) or is bound to (udp, sctp) port at ip, at an address that
// overlaps it (see Overlaps). It reads /proc each call; to check many ports,
// use ReadListeners once and Listeners.Has.
func HostListening(ip netip.Addr, proto Proto, port uint16) (bool, error) {
	l, err := ReadListeners()
	if err != nil {
		return false, err
	}
	return l.Has(ip, proto, port), nil
}

// Has reports whether a socket of the snapshot holds proto port at an address
// that overlaps ip.
func (l *Listeners) Has(ip netip.Addr, proto Proto, port uint16) bool {
	return l.held(ip, proto, port, nil)
}

// held is Has with the sockets bound to the addresses of except left out.
func (l *Listeners) held(ip netip.Addr, proto Proto, port uint16, except map[netip.Addr]bool) bool {
	for _, a := range l.addrs[listenKey{proto, port}] {
		if !except[a] && Overlaps(a, ip) {
			return true
		}
	}
	return false
}

// Taken has the signature of the Taken type, so that l.Taken can be passed to
// Allocate, alone or combined with the caller's own records.
func (l *Listeners) Taken(ip netip.Addr, proto Proto, port uint16) (string, bool) {
	return OwnerHost, l.Has(ip, proto, port)
}

// TakenExcept is Taken with the sockets bound to the addresses of except
// left out: knit's own (the embedded DNS server's on the gateways), which
// a port 53 published on every address does not take.
func (l *Listeners) TakenExcept(ip netip.Addr, proto Proto, port uint16, except map[netip.Addr]bool) (string, bool) {
	return OwnerHost, l.held(ip, proto, port, except)
}

func (l *Listeners) add(proto Proto, port uint16, ip netip.Addr) {
	k := listenKey{proto, port}
	l.addrs[k] = append(l.addrs[k], ip)
}

// tcpListen is TCP_LISTEN as /proc/net/tcp prints it.
const tcpListen = "0A"

// parseInet reads the table of /proc/net/{tcp,tcp6,udp,udp6}:
//
//	sl  local_address rem_address   st ...
//	 0: 0100007F:1F90 00000000:0000 0A ...
//
// A local address of [::] is recorded as every address: /proc does not show
// IPV6_V6ONLY, and a dual-stack socket also holds the IPv4 port.
func parseInet(r io.Reader, l *Listeners, proto Proto) error {
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		if proto == TCP && fields[3] != tcpListen {
			continue
		}
		hexIP, hexPort, ok := strings.Cut(fields[1], ":")
		if !ok {
			return fmt.Errorf("bad local address %q", fields[1])
		}
		ip, err := parseHexIP(hexIP)
		if err != nil {
			return err
		}
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			return fmt.Errorf("bad local port %q", hexPort)
		}
		if ip.Is6() && ip.IsUnspecified() {
			ip = netip.Addr{}
		}
		l.add(proto, uint16(port), ip)
	}
	return sc.Err()
}

// parseHexIP decodes an address as /proc/net prints it: the in-memory
// (network-order) address read as 32-bit words in host byte order, each
// printed as %08X.
func parseHexIP(s string) (netip.Addr, error) {
	if len(s) != 8 && len(s) != 32 {
		return netip.Addr{}, fmt.Errorf("bad local address %q", s)
	}
	b := make([]byte, len(s)/2)
	for i := 0; i < len(s); i += 8 {
		w, err := strconv.ParseUint(s[i:i+8], 16, 32)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("bad local address %q", s)
		}
		binary.NativeEndian.PutUint32(b[i/2:], uint32(w))
	}
	ip, _ := netip.AddrFromSlice(b)
	return ip.Unmap(), nil
}

// parseSCTP reads /proc/net/sctp/eps, one endpoint a line after a header:
//
//	ENDPT SOCK STY SST HBKT LPORT UID INODE LADDRS...
//
// with the local addresses in text form. An endpoint whose address list is
// empty or unspecified holds every address.
func parseSCTP(r io.Reader, l *Listeners, _ Proto) error {
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		port, err := strconv.ParseUint(fields[5], 10, 16)
		if err != nil {
			return fmt.Errorf("bad local port %q", fields[5])
		}
		addrs := fields[8:]
		if len(addrs) == 0 {
			l.add(SCTP, uint16(port), netip.Addr{})
		}
		for _, a := range addrs {
			ip, err := netip.ParseAddr(strings.TrimPrefix(a, "*"))
			if err != nil {
				return fmt.Errorf("bad local address %q", a)
			}
			ip = ip.Unmap()
			if ip.Is6() && ip.IsUnspecified() {
				ip = netip.Addr{}
			}
			l.add(SCTP, uint16(port), ip)
		}
	}
	return sc.Err()
}

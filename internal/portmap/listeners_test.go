package portmap

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// The first lines of real files, from a little-endian host: a TCP listener
// on 127.0.0.1:8080, an established connection from port 8081, and listeners
// on [::]:22 and [::1]:631; UDP sockets on 0.0.0.0:5353 and 10.0.0.7:53.
const (
	procTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 577 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F91 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 578 1 0000000000000000 20 4 30 10 -1
`
	procTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23 1 0000000000000000 100 0 0 10 0
`
	procUDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   104        0 9 2 0000000000000000 0
  101: 0700000A:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 10 2 0000000000000000 0
`
	procSCTP = ` ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS
       0        0 2   10  29   9000      0 31 10.0.0.1 *2001:db8::1 
       0        0 1   10  30   9001      0 32 :: 
`
)

func TestParseListeners(t *testing.T) {
	if !littleEndian() {
		t.Skip("fixtures are from a little-endian host")
	}
	l := &Listeners{addrs: map[listenKey][]netip.Addr{}}
	for _, f := range []struct {
		text  string
		proto Proto
		parse func(io.Reader, *Listeners, Proto) error
	}{
		{procTCP, TCP, parseInet}, {procTCP6, TCP, parseInet}, {procUDP, UDP, parseInet}, {procSCTP, SCTP, parseSCTP},
	} {
		if err := f.parse(strings.NewReader(f.text), l, f.proto); err != nil {
			t.Fatal(err)
		}
	}
	ip := netip.MustParseAddr
	var zero netip.Addr
	tests := []struct {
		ip    netip.Addr
		proto Proto
		port  uint16
		want  bool
	}{
		{ip("127.0.0.1"), TCP, 8080, true},
		{zero, TCP, 8080, true},
		{ip("0.0.0.0"), TCP, 8080, true},
		{ip("127.0.0.2"), TCP, 8080, false},
		{ip("::1"), TCP, 8080, false},
		{ip("127.0.0.1"), UDP, 8080, false},
		{ip("127.0.0.1"), TCP, 8081, false}, // established, not listening
		{ip("10.1.2.3"), TCP, 22, true},     // [::] may be dual-stack
		{ip("::1"), TCP, 631, true},
		{ip("::2"), TCP, 631, false},
		{ip("127.0.0.1"), TCP, 631, false},
		{ip("192.168.1.1"), UDP, 5353, true},
		{ip("::1"), UDP, 5353, false},
		{ip("10.0.0.7"), UDP, 53, true},
		{ip("10.0.0.8"), UDP, 53, false},
		{ip("10.0.0.1"), SCTP, 9000, true},
		{ip("2001:db8::1"), SCTP, 9000, true},
		{ip("10.0.0.2"), SCTP, 9000, false},
		{ip("10.0.0.2"), SCTP, 9001, true},
	}
	for _, tt := range tests {
		if got := l.Has(tt.ip, tt.proto, tt.port); got != tt.want {
			t.Errorf("Has(%v, %s, %d) = %v, want %v", tt.ip, tt.proto, tt.port, got, tt.want)
		}
	}
}

func TestParseListenersErrors(t *testing.T) {
	header := "sl local rem st\n"
	for _, line := range []string{
		"0: 0100007F1F90 00000000:0000 0A",
		"0: 0100007:1F90 00000000:0000 0A",
		"0: 0100007G:1F90 00000000:0000 0A",
		"0: 0100007F:11F90 00000000:0000 0A",
	} {
		l := &Listeners{addrs: map[listenKey][]netip.Addr{}}
		if err := parseInet(strings.NewReader(header+line), l, TCP); err == nil {
			t.Errorf("parseInet(%q) succeeded", line)
		}
	}
	for _, line := range []string{"0 0 2 10 29 x 0 31 ::", "0 0 2 10 29 80 0 31 nope"} {
		l := &Listeners{addrs: map[listenKey][]netip.Addr{}}
		if err := parseSCTP(strings.NewReader(header+line), l, SCTP); err == nil {
			t.Errorf("parseSCTP(%q) succeeded", line)
		}
	}
}

func littleEndian() bool {
	ip, err := parseHexIP("0100007F")
	return err == nil && ip == netip.MustParseAddr("127.0.0.1")
}

// TestHostListening opens real sockets on loopback and finds them in /proc.
func TestHostListening(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	uport := uint16(pc.LocalAddr().(*net.UDPAddr).Port)

	for _, tt := range []struct {
		ip    netip.Addr
		proto Proto
		port  uint16
		want  bool
	}{
		{lo, TCP, port, true},
		{netip.Addr{}, TCP, port, true},
		{netip.IPv4Unspecified(), TCP, port, true},
		{lo, UDP, uport, true},
		{netip.Addr{}, UDP, uport, true},
	} {
		got, err := HostListening(tt.ip, tt.proto, tt.port)
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("HostListening(%v, %s, %d) = %v, want %v", tt.ip, tt.proto, tt.port, got, tt.want)
		}
	}

	l, err := ReadListeners()
	if err != nil {
		t.Fatal(err)
	}
	if owner, ok := l.Taken(lo, TCP, port); !ok || owner != OwnerHost {
		t.Errorf("Taken(%v, tcp, %d) = %q, %v; want %q, true", lo, port, owner, ok, OwnerHost)
	}
	_, err = Allocate([]Spec{{HostPortFirst: port, HostPortLast: port, ContainerFirst: 80, ContainerLast: 80, Proto: TCP}}, l.Taken)
	if err == nil || !strings.Contains(err.Error(), "by a process listening on the host") {
		t.Errorf("Allocate over a listening port: %v", err)
	}

	ln.Close()
	if got, err := HostListening(lo, TCP, port); err != nil || got {
		t.Errorf("after Close: HostListening = %v, %v; want false", got, err)
	}
}

func TestHostListeningIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	if got, err := HostListening(netip.IPv6Loopback(), TCP, port); err != nil || !got {
		t.Errorf("HostListening([::1], tcp, %d) = %v, %v; want true", port, got, err)
	}
	if got, err := HostListening(netip.IPv6Unspecified(), TCP, port); err != nil || !got {
		t.Errorf("HostListening([::], tcp, %d) = %v, %v; want true", port, got, err)
	}
}

// sock_diag and /proc see the same sockets.
func TestListenersDiagMatchesProc(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	diag := &Listeners{addrs: map[listenKey][]netip.Addr{}}
	if err := readListenersDiag(diag); err != nil {
		t.Skipf("no sock_diag here: %v", err)
	}
	proc := &Listeners{addrs: map[listenKey][]netip.Addr{}}
	if err := readListenersProc(proc); err != nil {
		t.Fatal(err)
	}
	tport := uint16(ln.Addr().(*net.TCPAddr).Port)
	uport := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	lo := netip.MustParseAddr("127.0.0.1")
	if !diag.Has(lo, TCP, tport) || !diag.Has(lo, UDP, uport) {
		t.Errorf("sock_diag missed tcp %d or udp %d", tport, uport)
	}
	// Other processes' sockets come and go between the two reads: only
	// ours are compared.
	if !proc.Has(lo, TCP, tport) || !proc.Has(lo, UDP, uport) {
		t.Errorf("/proc missed tcp %d or udp %d", tport, uport)
	}
	if diag.Has(lo, TCP, uport) && !proc.Has(lo, TCP, uport) {
		t.Errorf("sock_diag reports a tcp listener on the udp port %d", uport)
	}
}

// TakenExcept leaves out exactly the sockets of the addresses given: the
// embedded DNS server's, which a port 53 published on every address does
// not conflict with.
func TestListenersTakenExcept(t *testing.T) {
	l := &Listeners{addrs: map[listenKey][]netip.Addr{}}
	gw, other := netip.MustParseAddr("172.18.0.1"), netip.MustParseAddr("10.0.0.1")
	l.add(UDP, 53, gw)
	except := map[netip.Addr]bool{gw: true}
	if _, taken := l.TakenExcept(netip.Addr{}, UDP, 53, except); taken {
		t.Error("udp/53 on every address taken by the gateway's own socket")
	}
	if _, taken := l.Taken(netip.Addr{}, UDP, 53); !taken {
		t.Error("Taken does not see the gateway's socket")
	}
	l.add(UDP, 53, other)
	if owner, taken := l.TakenExcept(netip.Addr{}, UDP, 53, except); !taken || owner != OwnerHost {
		t.Errorf("udp/53 held on %s too: TakenExcept = %q, %v", other, owner, taken)
	}
}

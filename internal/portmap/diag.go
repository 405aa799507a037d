package portmap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reading /proc/net/tcp walks every bucket of the kernel's connection hash
// table (9–13 ms here, whatever the number of sockets); a sock_diag dump of
// listening sockets walks only the listening hash (well under 1 ms).

// diagStates selects sockets by TCP state for a sock_diag dump.
const (
	diagListen = 1 << 10 // TCP_LISTEN
	diagAll    = 0xffffffff
)

// diagConn is one NETLINK_SOCK_DIAG socket and receive buffer, used for
// the dumps of one ReadListeners in turn.
type diagConn struct {
	fd  int
	seq uint32
	buf *[]byte // from diagBufs
}

func openDiag() (*diagConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag: %w", err)
	}
	return &diagConn{fd: fd, buf: diagBufs.Get().(*[]byte)}, nil
}

// diagBufs keeps the 64 KiB receive buffers between reads: a process that
// runs many containers (an embedder, the benchmarks) would otherwise
// allocate one per run.
var diagBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

func (c *diagConn) close() {
	unix.Close(c.fd)
	diagBufs.Put(c.buf)
	c.buf = nil
}

// read adds the sockets of proto (unix.IPPROTO_TCP or IPPROTO_UDP) and
// family in states to l, from one dump. A wildcard IPv6 address is
// recorded as every address, as parseInet does.
//
// Equivalent to: ss -H -ltn (TCP) or ss -H -uan (UDP), per family.
func (c *diagConn) read(l *Listeners, family, proto uint8, states uint32, p Proto) error {
	fd, buf := c.fd, *c.buf
	c.seq++
	// nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes).
	req := make([]byte, 72)
	binary.NativeEndian.PutUint32(req[0:], 72)
	binary.NativeEndian.PutUint16(req[4:], 20) // SOCK_DIAG_BY_FAMILY
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], c.seq)
	req[16], req[17] = family, proto
	binary.NativeEndian.PutUint32(req[20:], states)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag dump: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag dump: %w", err)
		}
		if n < unix.NLMSG_HDRLEN { // no message, no end: never read on
			return fmt.Errorf("sock_diag dump: a %d-byte read", n)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag dump: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return fmt.Errorf("sock_diag dump: %w", unix.Errno(errno))
					}
				}
				return nil
			}
			// inet_diag_msg: family, state, timer, retrans, then
			// inet_diag_sockid: sport (big endian), dport, src[16], ...
			d := m.Data
			if len(d) < 24 {
				continue
			}
			port := binary.BigEndian.Uint16(d[4:])
			var ip netip.Addr
			if d[0] == unix.AF_INET {
				ip = netip.AddrFrom4([4]byte(d[8:12]))
			} else {
				ip = netip.AddrFrom16([16]byte(d[8:24])).Unmap()
				if ip.Is6() && ip.IsUnspecified() {
					ip = netip.Addr{}
				}
			}
			l.add(p, port, ip)
		}
	}
}

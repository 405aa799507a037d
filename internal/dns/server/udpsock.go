package server

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpSocket is a blocking UDP socket, read and written a batch of
// datagrams at a time. Its reader waits for queries in one of two ways.
// Blocked in recvmmsg: the kernel wakes the reader's thread when a query
// arrives, with no epoll wakeup and no goroutine handoff in between, which
// on loopback and veths costs more than answering a cached name does. Or
// parked in Go's poller, which leaves the thread to other goroutines: the
// better way while forwarded queries, each a goroutine, are in flight.
// The socket is never in Go's poller itself, or every datagram would wake
// it: an epoll instance of its own is, and holds the socket only while the
// reader parks. Any goroutine may call sendTo.
type udpSocket struct {
	fd     int
	ep     *os.File        // the epoll instance, in Go's poller
	epRaw  syscall.RawConn // ep's
	polled bool            // the socket is in ep: the reader's to change
}

// openUDP opens a UDP socket bound to addr, with SO_REUSEADDR and
// IP_FREEBIND (see freebind). Equivalent to: `bind ADDR:PORT`.
func openUDP(addr netip.AddrPort) (*udpSocket, error) {
	family := unix.AF_INET
	if addr.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	sa, err := sockaddr(addr)
	if err == nil {
		err = setFreebind(fd, family == unix.AF_INET6)
	}
	if err == nil && family == unix.AF_INET6 {
		// As Go's "udp6": the socket is not also an IPv4 one.
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	if err == nil {
		err = unix.Bind(fd, sa)
	}
	s := &udpSocket{fd: fd}
	if err == nil {
		err = s.openEpoll()
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return s, nil
}

// openEpoll makes s's epoll instance and puts it in Go's poller, which
// takes only descriptors in non-blocking mode. Equivalent to:
// epoll_create1(2).
func (s *udpSocket) openEpoll() error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return fmt.Errorf("epoll: %w", err)
	}
	s.ep = os.NewFile(uintptr(ep), "epoll")
	if s.epRaw, err = s.ep.SyscallConn(); err != nil {
		s.ep.Close()
		return fmt.Errorf("epoll: %w", err)
	}
	return nil
}

// setPolled adds the socket to s's epoll instance, or removes it.
// Equivalent to: epoll_ctl(2) EPOLL_CTL_ADD, EPOLL_CTL_DEL.
func (s *udpSocket) setPolled(polled bool) error {
	if s.polled == polled {
		return nil
	}
	var err error
	cerr := s.epRaw.Control(func(ep uintptr) {
		if polled {
			err = unix.EpollCtl(int(ep), unix.EPOLL_CTL_ADD, s.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.fd)})
		} else {
			err = unix.EpollCtl(int(ep), unix.EPOLL_CTL_DEL, s.fd, nil)
		}
	})
	if err = errors.Join(cerr, err); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	s.polled = polled
	return nil
}

// sockaddr returns addr as a socket address; a zone names an interface.
func sockaddr(addr netip.AddrPort) (unix.Sockaddr, error) {
	a := addr.Addr()
	if a.Is4() {
		return &unix.SockaddrInet4{Port: int(addr.Port()), Addr: a.As4()}, nil
	}
	sa := &unix.SockaddrInet6{Port: int(addr.Port()), Addr: a.As16()}
	if z := a.Zone(); z != "" {
		if i, err := strconv.ParseUint(z, 10, 32); err == nil {
			sa.ZoneId = uint32(i)
			return sa, nil
		}
		ifi, err := net.InterfaceByName(z)
		if err != nil {
			return nil, fmt.Errorf("zone of %s: %w", a, err)
		}
		sa.ZoneId = uint32(ifi.Index)
	}
	return sa, nil
}

// shutdown wakes the reader: blocked in recvmmsg, it reads empty
// datagrams at once; parked in Go's poller, it returns an error. Equivalent
// to: shutdown(2) SHUT_RDWR, and closing the epoll instance. On a socket
// that is not connected the kernel reports ENOTCONN but shuts it down all
// the same.
func (s *udpSocket) shutdown() {
	_ = unix.Shutdown(s.fd, unix.SHUT_RDWR)
	_ = s.ep.Close()
}

// close closes the socket, once no goroutine uses it any more.
func (s *udpSocket) close() error {
	return unix.Close(s.fd)
}

// sendTo sends one datagram, b, to to. Equivalent to: sendto(2).
func (s *udpSocket) sendTo(b []byte, to netip.AddrPort) error {
	sa, err := sockaddr(to)
	if err != nil {
		return err
	}
	return unix.Sendto(s.fd, b, 0, sa)
}

// batch is one reader's datagrams: those recv read, and the replies queued
// with reply for send. Its memory stays put while the kernel uses it: the
// headers point into buffers the batch holds.
type batch struct {
	in    []unix.Mmsghdr
	inIov []unix.Iovec
	bufs  [][]byte
	addrs []unix.RawSockaddrInet6 // holds an IPv4 or IPv6 sender

	out    []unix.Mmsghdr // replies queued
	outIov []unix.Iovec
}

// newBatch returns a batch of up to n datagrams of up to size bytes each.
func newBatch(n, size int) *batch {
	b := &batch{
		in:     make([]unix.Mmsghdr, n),
		inIov:  make([]unix.Iovec, n),
		bufs:   make([][]byte, n),
		addrs:  make([]unix.RawSockaddrInet6, n),
		out:    make([]unix.Mmsghdr, 0, n),
		outIov: make([]unix.Iovec, n),
	}
	for i := range n {
		b.bufs[i] = make([]byte, size)
		b.inIov[i].Base = &b.bufs[i][0]
		b.inIov[i].SetLen(size)
	}
	return b
}

// recv reads at least one datagram, waiting for the first blocked in
// recvmmsg (inKernel) or parked in Go's poller (see udpSocket), and then as
// many more as are queued and fit b. It returns how many it read; they are
// b.datagram(0) to b.datagram(n-1). It clears the replies queued. Only one
// goroutine may call it. Equivalent to: recvmmsg(2) with MSG_WAITFORONE.
func (s *udpSocket) recv(b *batch, inKernel bool) (int, error) {
	b.out = b.out[:0]
	for i := range b.in {
		h := &b.in[i].Hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&b.addrs[i])), Namelen: unix.SizeofSockaddrInet6, Iov: &b.inIov[i]}
		h.SetIovlen(1)
	}
	if err := s.setPolled(!inKernel); err != nil {
		return 0, err
	}
	flags := uintptr(unix.MSG_WAITFORONE)
	if !inKernel {
		flags |= unix.MSG_DONTWAIT
	}
	var n uintptr
	var errno syscall.Errno
	read := func(uintptr) bool {
		for {
			n, _, errno = unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&b.in[0])),
				uintptr(len(b.in)), flags, 0, 0)
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	}
	if inKernel {
		read(0)
	} else if err := s.epRaw.Read(read); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, fmt.Errorf("recvmmsg: %w", errno)
	}
	return int(n), nil
}

// datagram returns the i-th datagram recv read and its sender; the sender
// is invalid if it was not an IP address.
func (b *batch) datagram(i int) ([]byte, netip.AddrPort) {
	h := &b.in[i]
	data := b.bufs[i][:min(int(h.Len), len(b.bufs[i]))]
	sa := &b.addrs[i]
	switch {
	case sa.Family == unix.AF_INET && h.Hdr.Namelen >= unix.SizeofSockaddrInet4:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return data, netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(sa4.Port))
	case sa.Family == unix.AF_INET6 && h.Hdr.Namelen >= unix.SizeofSockaddrInet6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 { // a link-local sender: its interface, for sendTo
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return data, netip.AddrPortFrom(a, port(sa.Port))
	}
	return data, netip.AddrPort{}
}

// port converts a port in network byte order as the kernel stores it.
func port(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// reply queues data (not empty) for send, to the sender of datagram i.
// data must stay unchanged until send returns.
func (b *batch) reply(i int, data []byte) {
	j := len(b.out)
	b.outIov[j] = unix.Iovec{Base: &data[0]}
	b.outIov[j].SetLen(len(data))
	h := unix.Msghdr{Name: b.in[i].Hdr.Name, Namelen: b.in[i].Hdr.Namelen, Iov: &b.outIov[j]}
	h.SetIovlen(1)
	b.out = append(b.out, unix.Mmsghdr{Hdr: h})
}

// send sends the replies queued. A reply the kernel refuses is skipped and
// the others still go; the error returned is the first such refusal.
// Equivalent to: sendmmsg(2).
func (s *udpSocket) send(b *batch) error {
	var first error
	for out := b.out; len(out) > 0; {
		n, _, errno := uintptr(1), uintptr(0), syscall.Errno(0)
		if h := &out[0].Hdr; len(out) == 1 {
			// sendto(2) costs the kernel less: no headers to copy in.
			_, _, errno = unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(unsafe.Pointer(h.Iov.Base)),
				uintptr(h.Iov.Len), 0, uintptr(unsafe.Pointer(h.Name)), uintptr(h.Namelen))
		} else {
			n, _, errno = unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&out[0])),
				uintptr(len(out)), 0, 0, 0)
		}
		switch errno {
		case 0:
			out = out[n:]
			continue
		case unix.EINTR:
			continue
		}
		if first == nil {
			first = fmt.Errorf("sendmmsg: %w", errno)
		}
		if errno == unix.EPIPE {
			return first // shut down
		}
		out = out[1:] // the first one failed
	}
	return first
}

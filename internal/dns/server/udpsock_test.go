package server

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A batch reads the datagrams queued from several clients, with their
// senders, and sends replies to each its own, whichever way the reader
// waits; shutdown wakes a reader waiting for more.
func TestUDPSocketBatch(t *testing.T) {
	for _, tc := range []struct {
		lo       string
		inKernel bool
	}{{"127.0.0.1", true}, {"127.0.0.1", false}, {"::1", true}, {"::1", false}} {
		lo := tc.lo
		s, err := openUDP(netip.AddrPortFrom(ip(lo), 0))
		if err != nil && lo == "::1" {
			t.Logf("%s: %v (no IPv6 loopback here)", lo, err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", lo, err)
		}
		sa, err := unix.Getsockname(s.fd)
		if err != nil {
			t.Fatal(err)
		}
		var port int
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			port = sa.Port
		case *unix.SockaddrInet6:
			port = sa.Port
		}
		server := &net.UDPAddr{IP: net.ParseIP(lo), Port: port}
		var clients []*net.UDPConn
		for i := range 3 {
			c, err := net.DialUDP("udp", nil, server)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
		}
		b := newBatch(4, 512)
		for got := 0; got < len(clients); {
			n, err := s.recv(b, tc.inKernel)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				data, from := b.datagram(i)
				if len(data) != 1 || from.Port() != uint16(clients[data[0]].LocalAddr().(*net.UDPAddr).Port) {
					t.Fatalf("datagram %x from %v", data, from)
				}
				b.reply(i, []byte{data[0] + 100})
			}
			if err := s.send(b); err != nil {
				t.Fatal(err)
			}
			got += n
		}
		for i, c := range clients {
			buf := make([]byte, 8)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			if n, err := c.Read(buf); err != nil || n != 1 || buf[0] != byte(i+100) {
				t.Errorf("%s client %d: reply %x, %v", lo, i, buf[:n], err)
			}
		}
		// One datagram alone: its reply goes by sendto.
		if _, err := clients[0].Write([]byte{9}); err != nil {
			t.Fatal(err)
		}
		if n, err := s.recv(b, tc.inKernel); err != nil || n != 1 {
			t.Fatalf("%s: read %d datagrams, %v", lo, n, err)
		}
		b.reply(0, []byte{109})
		if err := s.send(b); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		if n, err := clients[0].Read(buf); err != nil || n != 1 || buf[0] != 109 {
			t.Errorf("%s: reply %x, %v", lo, buf[:n], err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = s.recv(b, tc.inKernel)
		}()
		time.Sleep(10 * time.Millisecond)
		s.shutdown()
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatalf("%s: shutdown did not wake the reader", lo)
		}
		_ = s.close()
	}
}

// A link-local sender keeps its interface, so that a forwarded query's
// reply, sent on its own, finds the way back.
func TestDatagramZone(t *testing.T) {
	b := newBatch(1, 16)
	b.addrs[0] = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: 0x3500, Scope_id: 7,
		Addr: netip.MustParseAddr("fe80::1").As16()}
	b.in[0].Hdr.Namelen = unix.SizeofSockaddrInet6
	_, from := b.datagram(0)
	if want := netip.MustParseAddrPort("[fe80::1%7]:53"); from != want {
		t.Fatalf("sender %v, want %v", from, want)
	}
	sa, err := sockaddr(from)
	if sa6, ok := sa.(*unix.SockaddrInet6); err != nil || !ok || sa6.ZoneId != 7 || sa6.Port != 53 {
		t.Errorf("sockaddr %+v, %v", sa, err)
	}
}

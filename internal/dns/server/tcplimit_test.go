package server

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// acceptAll hands l's connections to the returned channel (of capacity n)
// until l is closed.
func acceptAll(l net.Listener, n int) <-chan net.Conn {
	accepted := make(chan net.Conn, n)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	return accepted
}

// One client address gets maxTCPConnsPerClient connections at a time: the
// next is closed at once, and a slot freed is taken again. Closing the
// listener closes the connections it handed out.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newLimitListener(inner)
	accepted := acceptAll(l, maxTCPConnsPerClient+1)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var served []net.Conn
	for range maxTCPConnsPerClient {
		dial()
		select {
		case c := <-accepted:
			served = append(served, c)
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d of one client not handed out", len(served)+1)
		}
	}
	extra := dial()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("connection %d of one client: read = %v, want EOF (closed by the server)", maxTCPConnsPerClient+1, err)
	}
	select {
	case <-accepted:
		t.Errorf("connection %d of one client was handed out", maxTCPConnsPerClient+1)
	default:
	}
	served[0].Close()
	dial()
	select {
	case c := <-accepted:
		served = append(served, c)
	case <-time.After(5 * time.Second):
		t.Fatal("a freed slot was not taken again")
	}
	l.Close()
	for i, c := range served[1:] {
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("connection %d still open after the listener closed", i+1)
		}
	}
}

// A client that does not read its answers holds a write for
// tcpWriteTimeout at most.
func TestLimitConnWriteDeadline(t *testing.T) {
	defer func(d time.Duration) { tcpWriteTimeout = d }(tcpWriteTimeout)
	tcpWriteTimeout = 100 * time.Millisecond
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newLimitListener(inner)
	defer l.Close()
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close() // never read
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := 0; ; i++ {
		if _, err = c.Write(buf); err != nil {
			break
		}
		if i == 1000 {
			t.Fatal("1 GB written to a client that never reads")
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("write to a client that never reads: %v, want a deadline exceeded", err)
	}
}

// The listener hands out maxTCPConns connections in all, whichever the
// client addresses: the next is closed at once.
func TestLimitListenerTotal(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newLimitListener(inner)
	defer l.Close()
	accepted := acceptAll(l, maxTCPConns+1)
	// Client i dials from 127.0.1.(i/per+1), per connections each.
	dial := func(i int) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i/maxTCPConnsPerClient+1))}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for i := range maxTCPConns {
		dial(i)
		select {
		case <-accepted:
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d (of %d allowed) not handed out", i+1, maxTCPConns)
		}
	}
	extra := dial(maxTCPConns) // a client address with none yet
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("connection %d: read = %v, want EOF (closed by the server)", maxTCPConns+1, err)
	}
	select {
	case <-accepted:
		t.Errorf("connection %d was handed out", maxTCPConns+1)
	default:
	}
}

// emfileListener fails every Accept as a process out of descriptors does.
type emfileListener struct{ net.Listener }

func (emfileListener) Accept() (net.Conn, error) {
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

// Out of descriptors, Accept waits before it returns the error: miekg/dns
// retries a temporary error at once, and would spin on a CPU.
func TestLimitListenerBacksOffOnEMFILE(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	l := newLimitListener(emfileListener{inner})
	start := time.Now()
	_, err = l.Accept()
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("Accept = %v, want EMFILE", err)
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("Accept returned EMFILE after %v, want a back-off of at least 50ms", took)
	}
}

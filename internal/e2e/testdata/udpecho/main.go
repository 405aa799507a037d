// Command udpecho is the UDP peer of the e2e tests (Debian's busybox nc has
// no UDP mode). It is built static by the tests and copied into a container
// root filesystem.
//
//	udpecho -listen :5353 [-prefix P]
//	    answer every datagram with P followed by its payload; P defaults
//	    to the hostname and a colon ("web:ping")
//	udpecho -send 198.51.100.1:5353 -payload ping [-from :40000] [-timeout 1s]
//	    send one datagram (from the local address -from, if given), print
//	    the first reply and exit 0; exit 1 on an error or when no reply
//	    came within the timeout
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", "", "serve on this UDP address")
	prefix := flag.String("prefix", "", "reply prefix (default: hostname + \":\")")
	send := flag.String("send", "", "send one datagram to this UDP address")
	from := flag.String("from", "", "local address to send from (default: any)")
	payload := flag.String("payload", "ping", "payload to send")
	timeout := flag.Duration("timeout", time.Second, "how long to wait for the reply")
	flag.Parse()
	var err error
	switch {
	case *listen != "" && *send == "":
		if *prefix == "" {
			h, _ := os.Hostname()
			*prefix = h + ":"
		}
		err = serve(*listen, *prefix)
	case *send != "" && *listen == "":
		err = ask(*send, *from, *payload, *timeout)
	default:
		err = fmt.Errorf("want exactly one of -listen and -send")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "udpecho:", err)
		os.Exit(1)
	}
}

func serve(addr, prefix string) error {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	buf := make([]byte, 65536)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := conn.WriteTo(append([]byte(prefix), buf[:n]...), peer); err != nil {
			fmt.Fprintln(os.Stderr, "udpecho: reply to", peer, err)
		}
	}
}

func ask(addr, from, payload string, timeout time.Duration) error {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	var laddr *net.UDPAddr
	if from != "" {
		if laddr, err = net.ResolveUDPAddr("udp", from); err != nil {
			return err
		}
	}
	// A connected socket: only a reply from addr itself is read (after any
	// NAT has been undone), and an ICMP port unreachable is an error.
	conn, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(payload)); err != nil {
		return err
	}
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, 65536)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", buf[:n])
	return nil
}

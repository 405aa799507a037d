// dnstool is the e2e tests' DNS probe and fake upstream, built statically
// into a container rootfs and run in the sandbox's namespaces.
//
//	dnstool query -server ADDR:PORT [-tcp] [-type A|AAAA|PTR] [-from IP] [-timeout D] NAME
//	    prints "RCODE ms=ELAPSED" and one answer per line ("A 10.0.0.2"),
//	    asking from the local address IP when given
//	dnstool serve -listen ADDR:PORT NAME=IP...
//	    answers A/AAAA for the given names, NXDOMAIN otherwise, UDP and TCP
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dnstool query|serve ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "query":
		query(os.Args[2:])
	case "serve":
		serve(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func query(args []string) {
	fs := flag.NewFlagSet("query", flag.ExitOnError)
	server := fs.String("server", "", "server ADDR:PORT")
	useTCP := fs.Bool("tcp", false, "query over TCP")
	qtype := fs.String("type", "A", "A, AAAA or PTR")
	from := fs.String("from", "", "local address (IP or IP:PORT) to ask from")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	fs.Parse(args)
	if fs.NArg() != 1 || *server == "" {
		fmt.Fprintln(os.Stderr, "usage: dnstool query -server ADDR:PORT [-tcp] [-type T] [-from IP[:PORT]] [-timeout D] NAME")
		os.Exit(2)
	}
	name := fs.Arg(0)
	t := dns.StringToType[*qtype]
	if t == dns.TypePTR && net.ParseIP(name) != nil {
		name, _ = dns.ReverseAddr(name)
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), t)
	c := &dns.Client{Timeout: *timeout}
	if *useTCP {
		c.Net = "tcp"
	}
	if *from != "" {
		host, port := *from, 0
		if h, p, err := net.SplitHostPort(*from); err == nil {
			host, port = h, atoi(p)
		}
		ip := net.ParseIP(host)
		if ip == nil || port < 0 {
			fmt.Fprintln(os.Stderr, "bad -from", *from)
			os.Exit(2)
		}
		c.Dialer = &net.Dialer{Timeout: *timeout, LocalAddr: &net.UDPAddr{IP: ip, Port: port}}
		if *useTCP {
			c.Dialer.LocalAddr = &net.TCPAddr{IP: ip, Port: port}
		}
	}
	start := time.Now()
	r, _, err := c.Exchange(m, *server)
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Printf("%s ms=%d\n", dns.RcodeToString[r.Rcode], time.Since(start).Milliseconds())
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			fmt.Println("A", v.A)
		case *dns.AAAA:
			fmt.Println("AAAA", v.AAAA)
		case *dns.PTR:
			fmt.Println("PTR", v.Ptr)
		}
	}
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", ":53", "address to listen on")
	fs.Parse(args)
	records := map[string]net.IP{}
	for _, a := range fs.Args() {
		name, ip, _ := strings.Cut(a, "=")
		records[dns.Fqdn(strings.ToLower(name))] = net.ParseIP(ip)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		qn := q.Question[0]
		ip, ok := records[strings.ToLower(qn.Name)]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case qn.Qtype == dns.TypeA && ip.To4() != nil:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qn.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: ip})
		case qn.Qtype == dns.TypeAAAA && ip.To4() == nil:
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: qn.Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: ip})
		}
		w.WriteMsg(m)
	})
	errs := make(chan error, 2)
	for _, n := range []string{"udp", "tcp"} {
		s := &dns.Server{Addr: *listen, Net: n, Handler: h}
		go func() { errs <- s.ListenAndServe() }()
	}
	fmt.Fprintln(os.Stderr, <-errs)
	os.Exit(1)
}

// atoi is strconv.Atoi, -1 for what is not a port.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 65535 {
		return -1
	}
	return n
}

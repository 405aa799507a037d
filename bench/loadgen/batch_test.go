package loadgen

import (
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// serve answers A questions on a loopback UDP socket with answer(name,
// n), n counting the questions from 1; a nil answer drops the question.
func serve(t *testing.T, answer func(name string, n int64) *dns.Msg) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			m := answer(q.Question[0].Name, n.Add(1))
			if m == nil {
				return
			}
			rcode := m.Rcode
			m.SetReply(q)
			m.Rcode = rcode
			_ = w.WriteMsg(m)
		})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	<-started
	return pc.LocalAddr().String()
}

func withA(addr string) *dns.Msg {
	m := new(dns.Msg)
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
		A: net.ParseIP(addr)}}
	return m
}

var questions = []Question{
	{Name: "c0.", Want: netip.MustParseAddr("10.0.0.2")},
	{Name: "c1.", Want: netip.MustParseAddr("10.0.0.3")},
}

func right(name string) *dns.Msg {
	if name == "c0." {
		return withA("10.0.0.2")
	}
	return withA("10.0.0.3")
}

func TestDNSBatch(t *testing.T) {
	addr := serve(t, func(name string, _ int64) *dns.Msg { return right(name) })
	r, err := DNSBatch(addr, 16, 200*time.Millisecond, questions)
	if err != nil {
		t.Fatal(err)
	}
	if r.Answered == 0 || r.Lost != 0 || len(r.Lat) != r.Answered || r.Elapsed < 200*time.Millisecond {
		t.Fatalf("answered %d, lost %d, %d round trips in %v", r.Answered, r.Lost, len(r.Lat), r.Elapsed)
	}
}

func TestDNSBatchRefusesWrongAnswers(t *testing.T) {
	for _, tc := range []struct {
		what   string
		answer func(string, int64) *dns.Msg
		want   string
	}{
		{"another address", func(name string, n int64) *dns.Msg {
			if n == 100 {
				return withA("10.9.9.9")
			}
			return right(name)
		}, "answer without 10.0.0"},
		{"SERVFAIL", func(name string, n int64) *dns.Msg {
			if n == 100 {
				return &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeServerFailure}}
			}
			return right(name)
		}, "rcode SERVFAIL"},
		{"no answer record", func(name string, n int64) *dns.Msg {
			if n == 100 {
				return new(dns.Msg)
			}
			return right(name)
		}, "answer without"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			addr := serve(t, tc.answer)
			_, err := DNSBatch(addr, 16, time.Second, questions)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one with %q", err, tc.want)
			}
		})
	}
}

func TestDNSBatchCountsLost(t *testing.T) {
	addr := serve(t, func(name string, n int64) *dns.Msg {
		if n == 10 || n == 20 {
			return nil
		}
		return right(name)
	})
	r, err := DNSBatch(addr, 16, 100*time.Millisecond, questions)
	if err != nil {
		t.Fatal(err)
	}
	if r.Lost != 2 || r.Answered == 0 {
		t.Fatalf("answered %d, lost %d; want 2 lost", r.Answered, r.Lost)
	}
}

package server

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

// FuzzAnswer feeds any message that parses to answer, as the dns.Server
// does (it answers FORMERR itself to one that does not), over UDP and TCP.
// A reply must exist unless the message is a response, keep the query's
// ID, pack, and fit the client's UDP buffer. The seeds in
// testdata/fuzz/FuzzAnswer cover local names, PTR, forwarding and
// malformed queries.
func FuzzAnswer(f *testing.F) {
	tabs := newTables(testSnapshot())
	f.Fuzz(func(t *testing.T, data []byte) {
		q := new(dns.Msg)
		if err := q.Unpack(data); err != nil {
			return
		}
		for _, tcp := range []bool{false, true} {
			fake := &fakeUpstreams{}
			// 10.0.0.3 is api, on both networks.
			m := tabs.answer(context.Background(), request{local: ip("10.0.0.1"), client: ip("10.0.0.3"), tcp: tcp, msg: q}, fake.exchange)
			if m == nil {
				if !q.Response {
					t.Fatalf("no reply to\n%v", q)
				}
				continue
			}
			if m.Id != q.Id || !m.Response {
				t.Fatalf("reply ID %d response %v to ID %d", m.Id, m.Response, q.Id)
			}
			packed, err := m.Pack()
			if err != nil {
				t.Fatalf("pack reply %v: %v", m, err)
			}
			limit := dns.MaxMsgSize
			if !tcp {
				limit = dns.MinMsgSize
				if opt := q.IsEdns0(); opt != nil {
					limit = max(limit, int(opt.UDPSize()))
				}
			}
			if len(packed) > limit {
				t.Fatalf("reply of %d bytes, the client takes %d", len(packed), limit)
			}
		}
	})
}

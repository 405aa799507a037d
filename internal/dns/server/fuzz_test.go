package server

import (
	"bytes"
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

// FuzzCache compares the cache with the general path on any datagram: from
// each of cacheClients, the reply to data must be byte for byte the
// general path's (but for the order of a shared name's addresses), both when the cache was filled by data itself and when
// it was filled by a variant of data with another ID, other RD and CD bits
// and letters of another case (mask's bits pick them). A miss there is
// fine; a different reply is not.
func FuzzCache(f *testing.F) {
	tabs := newTables(cacheSnapshot())
	for _, name := range []string{"web.", "WeB.fRoNt.", "nope.", "example.com.", "2.0.0.10.in-addr.arpa."} {
		for _, edns := range []uint16{0, 512, 4096} {
			f.Add(packQuery(f, name, dns.TypeA, dns.ClassINET, 42, true, false, edns), uint64(0x5a5a))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, mask uint64) {
		variant := vary(data, mask)
		for _, cl := range cacheClients {
			want, wantFwd := general(tabs, cl.local, cl.client, data)
			for _, fill := range [][]byte{data, variant} {
				c := new(answerCache)
				answerUDP(tabs, c, cl.local, cl.client, fill, nil)
				got, fwd, _ := answerUDP(tabs, c, cl.local, cl.client, data, nil)
				sortAddrs(got) // a shared name's addresses come shuffled
				sortAddrs(want)
				if !bytes.Equal(got, want) || (fwd != nil) != wantFwd {
					t.Fatalf("from %s, cache filled by %x: reply\n%x (forward %v), want\n%x (forward %v)",
						cl.client, fill, got, fwd != nil, want, wantFwd)
				}
			}
		}
	})
}

// vary returns a copy of query b with the ID, RD and CD bits and the case
// of the question's letters changed as mask says.
func vary(b []byte, mask uint64) []byte {
	v := append([]byte(nil), b...)
	if len(v) < headerLen {
		return v
	}
	v[0] ^= byte(mask)
	v[1] ^= byte(mask >> 8)
	v[2] ^= byte(mask>>16) & rdBit
	v[3] ^= byte(mask>>17) & cdBit
	for i, bit := headerLen, 24; i < len(v) && v[i] != 0 && v[i] < 64; i += int(v[i]) + 1 {
		for j := i + 1; j <= i+int(v[i]) && j < len(v); j++ {
			c := v[j] | 0x20
			if 'a' <= c && c <= 'z' && mask>>(bit%64)&1 != 0 {
				v[j] ^= 0x20
			}
			bit++
		}
	}
	return v
}

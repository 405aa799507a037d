package server

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// cacheSnapshot is testSnapshot with subnets on back, so that a client
// outside them is refused there.
func cacheSnapshot() *Snapshot {
	s := testSnapshot()
	s.Networks[1].Subnets = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	return s
}

// cacheClients are the listeners and clients the cache tests ask from:
// known containers, an unknown client, an outsider (refused on back) and
// an IPv6 client.
var cacheClients = []struct{ local, client netip.Addr }{
	{ip("10.0.0.1"), ip("10.0.0.2")},   // web, on front
	{ip("10.0.0.1"), ip("10.0.0.3")},   // api, on front and back
	{ip("10.1.0.1"), ip("10.1.0.4")},   // db, on back
	{ip("10.0.0.1"), ip("10.0.0.99")},  // no container
	{ip("10.1.0.1"), ip("192.0.2.77")}, // outside back's subnets
	{ip("fd00::1"), ip("fd00::2")},     // web over IPv6
}

// general answers b as if the cache were not there: a fresh cache never
// hits.
func general(t *tables, local, client netip.Addr, b []byte) ([]byte, bool) {
	r, fwd, _ := answerUDP(t, new(answerCache), local, client, b, nil)
	return r, fwd != nil
}

// packQuery packs a query for name with the header bits and EDNS size
// given (0: no OPT record).
func packQuery(t testing.TB, name string, qtype, class uint16, id uint16, rd, cd bool, edns uint16) []byte {
	t.Helper()
	q := new(dns.Msg)
	q.Id, q.RecursionDesired, q.CheckingDisabled = id, rd, cd
	q.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: class}}
	if edns != 0 {
		q.SetEdns0(edns, false)
	}
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The cache answers byte for byte as the general path does, for a second
// query that differs from the first in ID, RD, CD and the case of its
// name, and it does serve that second query itself where it should.
func TestCacheMatchesGeneral(t *testing.T) {
	tabs := newTables(cacheSnapshot())
	for _, tc := range []struct {
		name  string
		qtype uint16
		class uint16
		edns  uint16
	}{
		{"web.", dns.TypeA, dns.ClassINET, 0},
		{"site.front.", dns.TypeA, dns.ClassINET, 0}, // two answers
		{"web.", dns.TypeAAAA, dns.ClassINET, 4096},
		{"webhost.", dns.TypeA, dns.ClassINET, 512},
		{"api.", dns.TypeA, dns.ClassINET, 1232}, // one address per network
		{"web.", dns.TypeMX, dns.ClassINET, 0},   // known name, no record
		{"nope.", dns.TypeA, dns.ClassINET, 0},   // forwarded
		{"web.", dns.TypeA, dns.ClassCHAOS, 0},
		{"2.0.0.10.in-addr.arpa.", dns.TypePTR, dns.ClassINET, 0},
		{"example.com.", dns.TypeA, dns.ClassINET, 0}, // forwarded
		{".", dns.TypeNS, dns.ClassINET, 0},           // forwarded
	} {
		for _, cl := range cacheClients {
			first := packQuery(t, tc.name, tc.qtype, tc.class, 1, true, false, tc.edns)
			second := packQuery(t, mixCase(tc.name), tc.qtype, tc.class, 0xbeef, false, true, tc.edns)
			c := new(answerCache)
			var wantFwd bool
			for i, b := range [][]byte{first, second} {
				var want []byte
				want, wantFwd = general(tabs, cl.local, cl.client, b)
				got, fwd, err := answerUDP(tabs, c, cl.local, cl.client, b, nil)
				// The addresses of a shared name come in any order.
				sortAddrs(got)
				sortAddrs(want)
				if err != nil || !bytes.Equal(got, want) || (fwd != nil) != wantFwd {
					t.Fatalf("%s %s from %s, query %d: reply\n%x (forward %v, %v), want\n%x (forward %v)",
						tc.name, dns.TypeToString[tc.qtype], cl.client, i, got, fwd != nil, err, want, wantFwd)
				}
			}
			q, _ := parseQuery(second, nil)
			// Every reply here but a forwarded one is small enough to keep.
			if hit := c.get(tabs, cl.client, second, q, nil) != nil; hit == wantFwd {
				t.Errorf("%s from %s: cached %v, forwarded %v", tc.name, cl.client, hit, wantFwd)
			}
		}
	}
}

// sortAddrs puts the addresses of a reply's answers in order, so that two
// replies compare whatever their shuffle. A reply of another shape than
// the cache's (see ownerNames) is left as it is.
func sortAddrs(r []byte) {
	n := headerLen
	for n < len(r) && r[n] != 0 && r[n] < 64 {
		n += int(r[n]) + 1
	}
	if n >= len(r) {
		return
	}
	n = n + 1 - headerLen // the question's name, its final zero included
	offs, ok := ownerNames(r, n)
	if !ok || len(offs) < 3 {
		return
	}
	var blocks []string
	size := int(binary.BigEndian.Uint16(r[offs[1]+n+8:]))
	for _, o := range offs[1:] {
		if int(binary.BigEndian.Uint16(r[o+n+8:])) != size || o+n+10+size > len(r) {
			return
		}
		blocks = append(blocks, string(r[o+n+10:][:size]))
	}
	slices.Sort(blocks)
	for i, o := range offs[1:] {
		copy(r[o+n+10:], blocks[i])
	}
}

// The addresses of a name several containers share come in a new order,
// from the general path and from the cache alike.
func TestSharedNameShuffled(t *testing.T) {
	tabs := newTables(cacheSnapshot())
	c := new(answerCache)
	firsts := map[string]int{}
	for i := range 200 {
		b := packQuery(t, "site.front.", dns.TypeA, dns.ClassINET, uint16(i), true, false, 0)
		r, _, err := answerUDP(tabs, c, ip("10.0.0.1"), ip("10.0.0.2"), b, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(r); err != nil || len(m.Answer) != 2 {
			t.Fatalf("reply %d: %v, %v", i, m, err)
		}
		firsts[m.Answer[0].(*dns.A).A.String()]++
	}
	if len(firsts) != 2 || firsts["10.0.0.2"] < 50 || firsts["10.0.0.3"] < 50 {
		t.Errorf("first address of 200 replies: %v, want each of the two about half the time", firsts)
	}
}

// mixCase upper-cases every other letter of name.
func mixCase(name string) string {
	b := []byte(name)
	for i := 0; i < len(b); i += 2 {
		if 'a' <= b[i] && b[i] <= 'z' {
			b[i] -= 'a' - 'A'
		}
	}
	return string(b)
}

// A truncated reply is not kept: the general path truncates again.
func TestCacheSkipsTruncated(t *testing.T) {
	s := cacheSnapshot()
	for i := range 40 {
		s.Networks[0].Endpoints = append(s.Networks[0].Endpoints, Endpoint{Name: "many",
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 1, byte(i)})}})
	}
	tabs := newTables(s)
	c := new(answerCache)
	b := packQuery(t, "many.", dns.TypeA, dns.ClassINET, 7, true, false, 0)
	want, _ := general(tabs, ip("10.0.0.1"), ip("10.0.0.2"), b)
	for range 2 {
		got, _, _ := answerUDP(tabs, c, ip("10.0.0.1"), ip("10.0.0.2"), b, nil)
		// The same length and header: which addresses are kept is the
		// shuffle's.
		if len(got) != len(want) || !bytes.Equal(got[:headerLen], want[:headerLen]) || got[2]&0x02 == 0 {
			t.Fatalf("reply %x, want one like the truncated %x", got, want)
		}
	}
	if len(c.byClient) != 0 {
		t.Errorf("truncated reply cached")
	}
}

// New tables empty the cache: an address changed by a reload is answered
// at once.
func TestCacheReload(t *testing.T) {
	old := newTables(cacheSnapshot())
	s := cacheSnapshot()
	s.Networks[0].Endpoints[0].Addrs = []netip.Addr{ip("10.0.0.42")}
	reloaded := newTables(s)
	c := new(answerCache)
	b := packQuery(t, "web.", dns.TypeA, dns.ClassINET, 7, true, false, 0)
	for _, tabs := range []*tables{old, old, reloaded, reloaded} {
		want, _ := general(tabs, ip("10.0.0.1"), ip("10.0.0.3"), b)
		got, _, _ := answerUDP(tabs, c, ip("10.0.0.1"), ip("10.0.0.3"), b, nil)
		if !bytes.Equal(got, want) {
			t.Fatalf("reply %x, want %x", got, want)
		}
	}
	m := new(dns.Msg)
	got, _, _ := answerUDP(reloaded, c, ip("10.0.0.1"), ip("10.0.0.3"), b, nil)
	if err := m.Unpack(got); err != nil || len(m.Answer) != 1 || !strings.Contains(m.Answer[0].String(), "10.0.0.42") {
		t.Errorf("after reload: %v (%v)", m, err)
	}
}

// The cache grows to cacheBytes at most.
func TestCacheBound(t *testing.T) {
	tabs := newTables(cacheSnapshot())
	c := new(answerCache)
	for i := range 20000 {
		b := packQuery(t, "n"+strings.Repeat("x", 40)+strconv.Itoa(i)+".", dns.TypeA, dns.ClassINET, 1, true, false, 0)
		answerUDP(tabs, c, ip("10.0.0.1"), ip("10.0.0.2"), b, nil)
		if c.size > cacheBytes {
			t.Fatalf("cache of %d bytes", c.size)
		}
	}
}

// parseQuery leaves every query outside the common form to the general
// path.
func TestParseQueryRejects(t *testing.T) {
	ok := packQuery(t, "web.", dns.TypeA, dns.ClassINET, 1, true, false, 0)
	if _, fast := parseQuery(ok, nil); !fast {
		t.Fatal("common query not parsed")
	}
	withCookie := new(dns.Msg).SetQuestion("web.", dns.TypeA)
	withCookie.SetEdns0(1232, false)
	opt := withCookie.IsEdns0()
	opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
	cookie, _ := withCookie.Pack()
	notify := packQuery(t, "web.", dns.TypeA, dns.ClassINET, 1, true, false, 0)
	notify[2] |= dns.OpcodeNotify << 3
	response := packQuery(t, "web.", dns.TypeA, dns.ClassINET, 1, true, false, 0)
	response[2] |= 0x80
	twoQ := new(dns.Msg)
	twoQ.Question = []dns.Question{{Name: "web.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, {Name: "db.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	two, _ := twoQ.Pack()
	for name, b := range map[string][]byte{
		"escaped":        packQuery(t, `w\.eb.`, dns.TypeA, dns.ClassINET, 1, true, false, 0),
		"space":          packQuery(t, `w\032eb.`, dns.TypeA, dns.ClassINET, 1, true, false, 0),
		"edns option":    cookie,
		"notify":         notify,
		"response":       response,
		"two questions":  two,
		"trailing bytes": append(append([]byte(nil), ok...), 0),
		"short":          ok[:len(ok)-1],
		"pointer":        append(append(append([]byte(nil), ok[:12]...), 0xc0, 12), ok[len(ok)-4:]...),
		"long name":      longName(ok),
	} {
		if _, fast := parseQuery(b, nil); fast {
			t.Errorf("%s: parsed as a common query", name)
		}
	}
}

// A hit allocates nothing.
func TestCacheHitAllocs(t *testing.T) {
	tabs := newTables(cacheSnapshot())
	c := new(answerCache)
	b := packQuery(t, "web.", dns.TypeA, dns.ClassINET, 1, true, false, 0)
	out := make([]byte, dns.MaxMsgSize)
	answerUDP(tabs, c, ip("10.0.0.1"), ip("10.0.0.2"), b, out)
	if n := testing.AllocsPerRun(100, func() {
		answerUDP(tabs, c, ip("10.0.0.1"), ip("10.0.0.2"), b, out)
	}); n != 0 {
		t.Errorf("%v allocations per hit", n)
	}
}

// longName is query ok with a name of 255 bytes in wire form, labels of
// 63, 63, 63 and 62 bytes: one more than miekg/dns takes.
func longName(ok []byte) []byte {
	b := append([]byte(nil), ok[:12]...)
	for _, n := range []int{63, 63, 63, 62} {
		b = append(b, byte(n))
		b = append(b, bytes.Repeat([]byte("a"), n)...)
	}
	b = append(b, 0)
	return append(b, ok[len(ok)-4:]...)
}

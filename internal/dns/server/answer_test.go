package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

var (
	ip = netip.MustParseAddr
	ap = netip.MustParseAddrPort

	webUpstream  = ap("192.0.2.53:53")
	hostUpstream = ap("198.51.100.53:53")
)

// testSnapshot has two networks: web is only on front, db only on back,
// api on both, and web and api share the alias "site" on front.
func testSnapshot() *Snapshot {
	return &Snapshot{
		Upstreams: []netip.AddrPort{hostUpstream},
		Networks: []Network{
			{Name: "front", Listen: []netip.Addr{ip("10.0.0.1"), ip("fd00::1")}, Endpoints: []Endpoint{
				{Container: "c-web", Name: "web", Hostname: "webhost", Aliases: []string{"www", "site"},
					Addrs: []netip.Addr{ip("10.0.0.2"), ip("fd00::2")}, Upstreams: []netip.AddrPort{webUpstream}},
				{Container: "c-api", Name: "api", Aliases: []string{"site"}, Addrs: []netip.Addr{ip("10.0.0.3")}},
			}},
			{Name: "back", Listen: []netip.Addr{ip("10.1.0.1")}, Endpoints: []Endpoint{
				{Container: "c-api", Name: "api", Addrs: []netip.Addr{ip("10.1.0.3")}},
				{Container: "c-db", Name: "db", Addrs: []netip.Addr{ip("::ffff:10.1.0.4")}},
			}},
		},
	}
}

// fakeUpstreams answers every forwarded query with one A record naming
// the upstream (192.0.2.N for an upstream on port N) and records the calls.
type fakeUpstreams struct {
	calls []string                  // "upstream udp|tcp"
	fail  map[netip.AddrPort]bool   // upstreams that do not answer
	rcode map[netip.AddrPort]int    // upstreams that answer with this rcode
	tc    map[netip.AddrPort]bool   // upstreams whose replies are truncated
	ids   map[netip.AddrPort]uint16 // the query ID each upstream saw
}

func (f *fakeUpstreams) exchange(_ context.Context, q *dns.Msg, to route, tcp bool) (*dns.Msg, error) {
	u := to.addr
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	from := ""
	if to.netns != "" {
		from = to.netns + ":"
	}
	f.calls = append(f.calls, from+u.String()+" "+proto)
	if f.ids == nil {
		f.ids = make(map[netip.AddrPort]uint16)
	}
	f.ids[u] = q.Id
	if f.fail[u] {
		return nil, errors.New("timeout")
	}
	m := new(dns.Msg).SetRcode(q, f.rcode[u])
	m.Truncated = f.tc[u]
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
		A: netip.AddrFrom4([4]byte{192, 0, 2, byte(u.Port())}).AsSlice()}}
	return m, nil
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg).SetQuestion(name, qtype)
	m.Id = 4242
	return m
}

// summary renders a reply as "RCODE answer..." with flags aa and tc, e.g.
// "NOERROR aa 10.0.0.2".
func summary(m *dns.Msg) string {
	if m == nil {
		return "no reply"
	}
	parts := []string{dns.RcodeToString[m.Rcode]}
	if m.Authoritative {
		parts = append(parts, "aa")
	}
	if m.Truncated {
		parts = append(parts, "tc")
	}
	var answers []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			answers = append(answers, rr.A.String())
		case *dns.AAAA:
			answers = append(answers, rr.AAAA.String())
		case *dns.PTR:
			answers = append(answers, rr.Ptr)
		default:
			answers = append(answers, rr.String())
		}
	}
	slices.Sort(answers) // shared names come shuffled
	parts = append(parts, answers...)
	return strings.Join(parts, " ")
}

func TestAnswer(t *testing.T) {
	tabs := newTables(testSnapshot())
	var (
		web      = ip("10.0.0.2")
		web6     = ip("fd00::2")
		api      = ip("10.0.0.3")
		stranger = ip("10.0.0.99")
		front    = ip("10.0.0.1")
		front6   = ip("fd00::1")
		back     = ip("10.1.0.1")
	)
	tests := []struct {
		name          string
		local, client netip.Addr
		qname         string
		qtype         uint16
		want          string
		forwardedTo   string // the fake's calls, space-separated
	}{
		{"container name", front, web, "api.", dns.TypeA, "NOERROR aa 10.0.0.3", ""},
		{"own name", front, web, "web.", dns.TypeA, "NOERROR aa 10.0.0.2", ""},
		{"hostname", front, web, "webhost.", dns.TypeA, "NOERROR aa 10.0.0.2", ""},
		{"alias", front, web, "www.", dns.TypeA, "NOERROR aa 10.0.0.2", ""},
		{"shared alias", front, api, "site.", dns.TypeA, "NOERROR aa 10.0.0.2 10.0.0.3", ""},
		{"case and no dot", front, web, "WwW", dns.TypeA, "NOERROR aa 10.0.0.2", ""},
		{"name.network", front, web, "web.front.", dns.TypeA, "NOERROR aa 10.0.0.2", ""},
		{"hostname.network", front, web, "webhost.front.", dns.TypeA, "NOERROR aa 10.0.0.2", ""},
		{"alias.network", front, web, "Site.Front.", dns.TypeA, "NOERROR aa 10.0.0.2 10.0.0.3", ""},
		{"AAAA", front, web, "web.", dns.TypeAAAA, "NOERROR aa fd00::2", ""},
		{"AAAA over v6", front6, web6, "www.", dns.TypeAAAA, "NOERROR aa fd00::2", ""},
		{"AAAA of a v4-only name", front, web, "api.", dns.TypeAAAA, "NOERROR aa", ""},
		{"other type of a known name", front, web, "web.", dns.TypeMX, "NOERROR aa", ""},
		{"mapped address unmapped", back, ip("10.1.0.3"), "db.", dns.TypeA, "NOERROR aa 10.1.0.4", ""},

		// Scope.
		{"name only on another network", front, web, "db.", dns.TypeA, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		{"name.network of another network", front, web, "db.back.", dns.TypeA, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		{"client on both networks", front, api, "db.", dns.TypeA, "NOERROR aa 10.1.0.4", ""},
		{"client on both networks asks a gateway", back, ip("10.1.0.3"), "web.", dns.TypeA, "NOERROR aa 10.0.0.2", ""},
		{"name on both networks", front, api, "api.", dns.TypeA, "NOERROR aa 10.0.0.3 10.1.0.3", ""},
		{"unknown client sees the listener's network", front, stranger, "web.", dns.TypeA, "NOERROR aa 10.0.0.2", ""},
		{"unknown client, other network", back, stranger, "web.", dns.TypeA, "NOERROR 192.0.2.53", "198.51.100.53:53 udp"},
		{"a listener that serves no network (being closed)", ip("10.9.0.1"), web, "web.", dns.TypeA, "REFUSED", ""},
		{"a listener that serves no network, outside name", ip("10.9.0.1"), web, "example.com.", dns.TypeA, "REFUSED", ""},

		// PTR.
		{"PTR", front, api, "2.0.0.10.in-addr.arpa.", dns.TypePTR, "NOERROR aa web.front.", ""},
		{"PTR v6", front, api, "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR, "NOERROR aa web.front.", ""},
		{"PTR on another network", back, ip("10.1.0.4"), "2.0.0.10.in-addr.arpa.", dns.TypePTR, "NOERROR 192.0.2.53", "198.51.100.53:53 udp"},
		{"PTR unknown", front, web, "9.9.0.10.in-addr.arpa.", dns.TypePTR, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		{"PTR of a network", front, web, "0.0.10.in-addr.arpa.", dns.TypePTR, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		// other types of a known name go upstream, as Docker's: an alias
		// that shadows an outside name keeps its other records
		{"PTR qtype on a name", front, web, "web.", dns.TypePTR, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		{"TXT of a known name", front, web, "web.", dns.TypeTXT, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},

		// Unknown names.
		{"single label goes upstream, as Docker's (a LAN host's short name)", front, web, "nosuch.", dns.TypeA, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		{"single label AAAA", front, web, "nosuch.", dns.TypeAAAA, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		{"single label, other types go upstream (a TLD's DS)", front, web, "com.", dns.TypeDS, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		{"single label SOA", front, web, "nosuch.", dns.TypeSOA, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		{"forwarded to the client's upstream", front, web, "example.com.", dns.TypeA, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		{"client without upstreams", front, api, "example.com.", dns.TypeA, "NOERROR 192.0.2.53", "198.51.100.53:53 udp"},
		{"unknown client", front, stranger, "example.com.", dns.TypeA, "NOERROR 192.0.2.53", "198.51.100.53:53 udp"},
		{"root", front, web, ".", dns.TypeNS, "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeUpstreams{}
			q := query(tc.qname, tc.qtype)
			m := tabs.answer(context.Background(), request{local: tc.local, client: tc.client, msg: q}, f.exchange)
			if got := summary(m); got != tc.want {
				t.Errorf("answer = %q, want %q", got, tc.want)
			}
			if got := strings.Join(f.calls, " "); got != tc.forwardedTo {
				t.Errorf("forwarded to %q, want %q", got, tc.forwardedTo)
			}
			if m.Id != q.Id || !m.Response || (m.Authoritative && !m.RecursionAvailable) {
				t.Errorf("header: id %d response %v ra %v", m.Id, m.Response, m.RecursionAvailable)
			}
			for _, rr := range m.Answer {
				if m.Authoritative && (rr.Header().Ttl != ttl || rr.Header().Name != tc.qname) {
					t.Errorf("record %v: want TTL %d and name %q", rr, ttl, tc.qname)
				}
			}
		})
	}
}

func TestAnswerForward(t *testing.T) {
	var (
		u1, u2, self = ap("127.0.0.1:1"), ap("127.0.0.1:2"), ap("10.0.0.1:53")
		front, web   = ip("10.0.0.1"), ip("10.0.0.2")
	)
	tests := []struct {
		name      string
		upstreams []netip.AddrPort
		fake      fakeUpstreams
		tcp       bool
		want      string
		calls     string
	}{
		{name: "first answers", upstreams: []netip.AddrPort{u1, u2},
			want: "NOERROR 192.0.2.1", calls: "127.0.0.1:1 udp"},
		{name: "over tcp", upstreams: []netip.AddrPort{u1, u2}, tcp: true,
			want: "NOERROR 192.0.2.1", calls: "127.0.0.1:1 tcp"},
		{name: "first fails", upstreams: []netip.AddrPort{u1, u2}, fake: fakeUpstreams{fail: map[netip.AddrPort]bool{u1: true}},
			want: "NOERROR 192.0.2.2", calls: "127.0.0.1:1 udp 127.0.0.1:2 udp"},
		{name: "first says SERVFAIL", upstreams: []netip.AddrPort{u1, u2}, fake: fakeUpstreams{rcode: map[netip.AddrPort]int{u1: dns.RcodeServerFailure}},
			want: "NOERROR 192.0.2.2", calls: "127.0.0.1:1 udp 127.0.0.1:2 udp"},
		{name: "all refuse: SERVFAIL, as Docker's", upstreams: []netip.AddrPort{u1, u2}, fake: fakeUpstreams{rcode: map[netip.AddrPort]int{u1: dns.RcodeRefused, u2: dns.RcodeRefused}},
			want: "SERVFAIL", calls: "127.0.0.1:1 udp 127.0.0.1:2 udp"},
		{name: "NXDOMAIN is an answer", upstreams: []netip.AddrPort{u1, u2}, fake: fakeUpstreams{rcode: map[netip.AddrPort]int{u1: dns.RcodeNameError}},
			want: "NXDOMAIN 192.0.2.1", calls: "127.0.0.1:1 udp"},
		{name: "none answers", upstreams: []netip.AddrPort{u1, u2}, fake: fakeUpstreams{fail: map[netip.AddrPort]bool{u1: true, u2: true}},
			want: "SERVFAIL", calls: "127.0.0.1:1 udp 127.0.0.1:2 udp"},
		{name: "no upstreams", want: "SERVFAIL"},
		{name: "never to itself", upstreams: []netip.AddrPort{self, ap("[::ffff:10.0.0.1]:53"), u2},
			want: "NOERROR 192.0.2.2", calls: "127.0.0.1:2 udp"},
		{name: "only itself", upstreams: []netip.AddrPort{self}, want: "SERVFAIL"},
		{name: "truncated reply as is", upstreams: []netip.AddrPort{u1}, fake: fakeUpstreams{tc: map[netip.AddrPort]bool{u1: true}},
			want: "NOERROR tc 192.0.2.1", calls: "127.0.0.1:1 udp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testSnapshot()
			s.Upstreams = nil
			s.Networks[0].Endpoints[0].Upstreams = tc.upstreams
			q := query("example.com.", dns.TypeA)
			m := newTables(s).answer(context.Background(), request{local: front, client: web, tcp: tc.tcp, msg: q}, tc.fake.exchange)
			if got := summary(m); got != tc.want {
				t.Errorf("answer = %q, want %q", got, tc.want)
			}
			if got := strings.Join(tc.fake.calls, " "); got != tc.calls {
				t.Errorf("forwarded to %q, want %q", got, tc.calls)
			}
			if m.Id != q.Id {
				t.Errorf("reply ID %d, want %d", m.Id, q.Id)
			}
			for u, id := range tc.fake.ids {
				if id != q.Id {
					t.Errorf("upstream %v saw ID %d, want %d", u, id, q.Id)
				}
			}
		})
	}
}

func TestAnswerMalformed(t *testing.T) {
	tabs := newTables(testSnapshot())
	two := query("web.", dns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	none := query("web.", dns.TypeA)
	none.Question = nil
	update := query("web.", dns.TypeA)
	update.Opcode = dns.OpcodeUpdate
	notify := query("web.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	response := query("web.", dns.TypeA)
	response.Response = true
	for _, tc := range []struct {
		name string
		q    *dns.Msg
		want string
	}{
		{"two questions", two, "FORMERR"},
		{"no question", none, "FORMERR"},
		{"update", update, "NOTIMP"},
		{"notify", notify, "NOTIMP"},
		{"a response", response, "no reply"},
	} {
		f := &fakeUpstreams{}
		m := tabs.answer(context.Background(), request{local: ip("10.0.0.1"), client: ip("10.0.0.2"), msg: tc.q}, f.exchange)
		if got := summary(m); got != tc.want || len(f.calls) > 0 {
			t.Errorf("%s: answer = %q, forwarded to %q; want %q, not forwarded", tc.name, got, f.calls, tc.want)
		}
		if m != nil && (m.Id != tc.q.Id || m.Opcode != tc.q.Opcode) {
			t.Errorf("%s: reply ID %d opcode %d, want %d %d", tc.name, m.Id, m.Opcode, tc.q.Id, tc.q.Opcode)
		}
	}
}

// TestAnswerClass checks that only class IN is answered locally.
func TestAnswerClass(t *testing.T) {
	tabs := newTables(testSnapshot())
	for _, tc := range []struct {
		qname, want, calls string
	}{
		{"web.", "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
		{"version.bind.", "NOERROR 192.0.2.53", "192.0.2.53:53 udp"},
	} {
		f := &fakeUpstreams{}
		q := query(tc.qname, dns.TypeTXT)
		q.Question[0].Qclass = dns.ClassCHAOS
		m := tabs.answer(context.Background(), request{local: ip("10.0.0.1"), client: ip("10.0.0.2"), msg: q}, f.exchange)
		if got, calls := summary(m), strings.Join(f.calls, " "); got != tc.want || calls != tc.calls {
			t.Errorf("CH %s: answer %q, forwarded to %q; want %q, %q", tc.qname, got, calls, tc.want, tc.calls)
		}
	}
}

// TestAnswerTruncate checks that a UDP reply fits the client's buffer:
// 512 bytes, or what its EDNS OPT record offers.
func TestAnswerTruncate(t *testing.T) {
	s := &Snapshot{Networks: []Network{{Name: "n", Listen: []netip.Addr{ip("10.0.0.1")}}}}
	for i := range 100 {
		s.Networks[0].Endpoints = append(s.Networks[0].Endpoints, Endpoint{Container: fmt.Sprint(i), Name: fmt.Sprint("c", i),
			Aliases: []string{"many"}, Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 1, byte(i)})}})
	}
	tabs := newTables(s)
	for _, tc := range []struct {
		name    string
		tcp     bool
		edns    uint16
		answers int
		tc      bool
	}{
		{"udp", false, 0, 0, true},
		{"udp with edns 4096", false, 4096, 100, false},
		{"udp with edns 1232", false, 1232, 0, true},
		{"tcp", true, 0, 100, false},
	} {
		q := query("many.", dns.TypeA)
		if tc.edns != 0 {
			q.SetEdns0(tc.edns, false)
		}
		m := tabs.answer(context.Background(), request{local: ip("10.0.0.1"), client: ip("10.0.0.9"), tcp: tc.tcp, msg: q}, nil)
		packed, err := m.Pack()
		if err != nil {
			t.Fatalf("%s: pack: %v", tc.name, err)
		}
		limit := max(512, int(tc.edns))
		if tc.tcp {
			limit = dns.MaxMsgSize
		}
		if m.Truncated != tc.tc || len(packed) > limit || (tc.answers > 0 && len(m.Answer) != tc.answers) {
			t.Errorf("%s: %d answers in %d bytes, tc %v; want tc %v, at most %d bytes, %d answers",
				tc.name, len(m.Answer), len(packed), m.Truncated, tc.tc, limit, tc.answers)
		}
		if tc.edns != 0 && m.IsEdns0() == nil {
			t.Errorf("%s: no OPT record in the reply", tc.name)
		}
	}
}

func TestReverseAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" for no address
	}{
		{"4.3.2.1.in-addr.arpa", "1.2.3.4"},
		{"255.0.0.10.in-addr.arpa", "10.0.0.255"},
		{"256.0.0.10.in-addr.arpa", ""},
		{"0.0.10.in-addr.arpa", ""},
		{"x.0.0.10.in-addr.arpa", ""},
		{"1.0.0.0.10.in-addr.arpa", ""},
		{"in-addr.arpa", ""},
		{".in-addr.arpa", ""},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "2001:db8::1"},
		{"f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.0.f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.0.ip6.arpa", "123:4567:89ab:cdef:123:4567:89ab:cdef"},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.ip6.arpa", ""},
		{"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", ""},
		{"10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", ""},
		{"example.com", ""},
	} {
		a, ok := reverseAddr(tc.in)
		got := ""
		if ok {
			got = a.String()
		}
		if got != tc.want {
			t.Errorf("reverseAddr(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestNewTablesKeepsSnapshot checks that indexing does not change the
// caller's snapshot (addresses are unmapped in copies).
func TestNewTablesKeepsSnapshot(t *testing.T) {
	s := testSnapshot()
	newTables(s)
	if got := s.Networks[1].Endpoints[1].Addrs; !slices.Equal(got, []netip.Addr{ip("::ffff:10.1.0.4")}) {
		t.Errorf("snapshot changed: %v", got)
	}
}

// A client outside the listen address's subnets (another host routing to
// the gateway) is refused: the server is no open resolver.
func TestAnswerRefusesOutsiders(t *testing.T) {
	tabs := newTables(&Snapshot{Networks: []Network{{
		Name: "n", Listen: []netip.Addr{netip.MustParseAddr("10.1.0.1")},
		Subnets:   []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")},
		Endpoints: []Endpoint{{Container: "c", Name: "web", Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.2")}}},
	}}})
	q := new(dns.Msg)
	q.SetQuestion("web.", dns.TypeA)
	for _, tc := range []struct {
		client string
		rcode  int
	}{{"10.1.0.9", dns.RcodeSuccess}, {"198.51.100.2", dns.RcodeRefused}} {
		r := request{local: netip.MustParseAddr("10.1.0.1"), client: netip.MustParseAddr(tc.client), msg: q}
		if m := tabs.answer(context.Background(), r, nil); m == nil || m.Rcode != tc.rcode {
			t.Errorf("client %s: reply %v, want rcode %s", tc.client, m, dns.RcodeToString[tc.rcode])
		}
	}
}

// A container on internal networks only whose namespace the snapshot does
// not give gets its names answered and none forwarded (from the host, it
// would be a way out); so does any client asking on internal networks
// only, even one whose source address is of a container also on an open
// network (which an internal one could forge: its own queries go to the
// open network's gateway). A container with a network that is not
// internal forwards as usual there.
func TestAnswerInternal(t *testing.T) {
	s := &Snapshot{
		Upstreams: []netip.AddrPort{hostUpstream},
		Networks: []Network{
			{Name: "closed", Internal: true, Listen: []netip.Addr{ip("10.2.0.1")}, Endpoints: []Endpoint{
				{Container: "c-in", Name: "in", Isolated: true, Addrs: []netip.Addr{ip("10.2.0.2")}},
				{Container: "c-both", Name: "both", Addrs: []netip.Addr{ip("10.2.0.3")}},
			}},
			{Name: "open", Listen: []netip.Addr{ip("10.3.0.1")}, Endpoints: []Endpoint{
				{Container: "c-both", Name: "both", Addrs: []netip.Addr{ip("10.3.0.3")}},
			}},
		},
	}
	tests := []struct {
		name          string
		local, client netip.Addr
		q             string
		want, calls   string
	}{
		{"isolated: outside name", ip("10.2.0.1"), ip("10.2.0.2"), "example.com.", "SERVFAIL", ""},
		{"isolated: a neighbour's name", ip("10.2.0.1"), ip("10.2.0.2"), "both.", "NOERROR aa 10.2.0.3", ""},
		{"also on an open network, asking the internal one", ip("10.2.0.1"), ip("10.2.0.3"), "example.com.", "SERVFAIL", ""},
		{"also on an open network, asking the open one", ip("10.3.0.1"), ip("10.3.0.3"), "example.com.", "NOERROR 192.0.2.53", "198.51.100.53:53 udp"},
		{"unknown client, internal listener", ip("10.2.0.1"), ip("10.2.0.9"), "example.com.", "SERVFAIL", ""},
		{"unknown client, open listener", ip("10.3.0.1"), ip("10.3.0.9"), "example.com.", "NOERROR 192.0.2.53", "198.51.100.53:53 udp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f fakeUpstreams
			m := newTables(s).answer(context.Background(), request{local: tc.local, client: tc.client, msg: query(tc.q, dns.TypeA)}, f.exchange)
			if got := summary(m); got != tc.want {
				t.Errorf("answer = %q, want %q", got, tc.want)
			}
			if got := strings.Join(f.calls, " "); got != tc.calls {
				t.Errorf("forwarded to %q, want %q", got, tc.calls)
			}
		})
	}
}

// Containers' queries go upstream from their own namespaces, as Docker's:
// only a server of the host's that the container could not reach (on
// loopback, with a zone, of a family the container lacks), for a
// container without --dns, is asked from the host. On an internal
// network's gateway, where a source address may be a neighbour's forged,
// only a server on that network is asked, from an isolated container's
// namespace (no way out); the host never is.
func TestAnswerFromNamespaces(t *testing.T) {
	stub, six, zoned := ap("127.0.0.53:53"), ap("[2001:db8::53]:53"), ap("[fe80::1%eth9]:53")
	s := &Snapshot{
		Upstreams: []netip.AddrPort{stub, six, zoned, hostUpstream},
		Networks: []Network{
			{Name: "closed", Internal: true, Listen: []netip.Addr{ip("10.2.0.1")}, Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}, Endpoints: []Endpoint{
				{Container: "c-in", Name: "in", Isolated: true, Netns: "/ns/in", Addrs: []netip.Addr{ip("10.2.0.2")},
					Upstreams: []netip.AddrPort{ap("127.0.0.1:53"), ap("10.9.0.53:53"), ap("10.2.0.53:53")}}, // only the last is on the network
				{Container: "c-in2", Name: "in2", Isolated: true, Netns: "/ns/in2", Addrs: []netip.Addr{ip("10.2.0.4")}},
				{Container: "c-both", Name: "both", Netns: "/ns/both", Addrs: []netip.Addr{ip("10.2.0.3")}, Upstreams: []netip.AddrPort{ap("10.2.0.53:53")}},
			}},
			{Name: "open", Listen: []netip.Addr{ip("10.3.0.1")}, Endpoints: []Endpoint{
				{Container: "c-both", Name: "both", Netns: "/ns/both", Addrs: []netip.Addr{ip("10.3.0.3")}, Upstreams: []netip.AddrPort{ap("10.2.0.53:53")}},
				{Container: "c-own", Name: "own", Netns: "/ns/own", Addrs: []netip.Addr{ip("10.3.0.4")},
					Upstreams: []netip.AddrPort{ap("127.0.0.1:53"), ap("127.0.0.11:53"), ap("203.0.113.1:53")}},
				{Container: "c-plain", Name: "plain", Netns: "/ns/plain", Addrs: []netip.Addr{ip("10.3.0.6")}},
				{Container: "c-v6", Name: "v6", Netns: "/ns/v6", IPv6: true, Addrs: []netip.Addr{ip("10.3.0.7")}},
				{Container: "c-old", Name: "old", Addrs: []netip.Addr{ip("10.3.0.5")}}, // a record without its namespace
			}},
		},
	}
	tests := []struct {
		name          string
		local, client netip.Addr
		calls         string
	}{
		{"isolated: only its --dns on the network asked", ip("10.2.0.1"), ip("10.2.0.2"), "/ns/in:10.2.0.53:53 udp"},
		{"isolated, the host's servers: none", ip("10.2.0.1"), ip("10.2.0.4"), ""},
		{"also on an open network, asking the internal one", ip("10.2.0.1"), ip("10.2.0.3"), ""},
		{"also on an open network, asking the open one", ip("10.3.0.1"), ip("10.3.0.3"), "/ns/both:10.2.0.53:53 udp"},
		{"--dns 127.0.0.1 is its own loopback; 127.0.0.11 is this server", ip("10.3.0.1"), ip("10.3.0.4"), "/ns/own:127.0.0.1:53 udp /ns/own:203.0.113.1:53 udp"},
		{"the host's servers without IPv6: unreachable ones from the host", ip("10.3.0.1"), ip("10.3.0.6"),
			"127.0.0.53:53 udp [2001:db8::53]:53 udp [fe80::1%eth9]:53 udp"},
		{"the host's servers with IPv6", ip("10.3.0.1"), ip("10.3.0.7"), "127.0.0.53:53 udp /ns/v6:[2001:db8::53]:53 udp [fe80::1%eth9]:53 udp"},
		{"no namespace known: the host's", ip("10.3.0.1"), ip("10.3.0.5"), "127.0.0.53:53 udp [2001:db8::53]:53 udp [fe80::1%eth9]:53 udp"},
		{"unknown client, open listener", ip("10.3.0.1"), ip("10.3.0.9"), "127.0.0.53:53 udp [2001:db8::53]:53 udp [fe80::1%eth9]:53 udp"},
		{"unknown client, internal listener", ip("10.2.0.1"), ip("10.2.0.9"), ""},
	}
	// An IPv6-only container's IPv4 host server: from the host.
	v6only := &Endpoint{Container: "c-v6only", Netns: "/ns/v6only", IPv6: true, NoIPv4: true}
	if netns, ok := newTables(s).askFrom(ip("10.3.0.1"), v6only, hostUpstream); netns != "" || !ok {
		t.Errorf("an IPv6-only container's IPv4 host server: from %q, %v; want the host's", netns, ok)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fail := map[netip.AddrPort]int{}
			for _, u := range append(slices.Clone(s.Upstreams), ap("127.0.0.1:53"), ap("10.2.0.53:53")) {
				fail[u] = dns.RcodeServerFailure // every upstream asked in turn
			}
			f := fakeUpstreams{rcode: fail}
			newTables(s).answer(context.Background(), request{local: tc.local, client: tc.client, msg: query("example.com.", dns.TypeA)}, f.exchange)
			if got := strings.Join(f.calls, " "); got != tc.calls {
				t.Errorf("forwarded to %q, want %q", got, tc.calls)
			}
		})
	}
}

// A forwarded query's reply must repeat its question; only a FORMERR,
// NOTIMP, REFUSED or SERVFAIL may come without one (none answers the
// name; waiting them out cost the client the upstream's whole timeout).
func TestAnswersQuestion(t *testing.T) {
	q := dns.Question{Name: "example.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET}
	with := func(rcode int, qs ...dns.Question) *dns.Msg {
		m := new(dns.Msg)
		m.Response, m.Rcode, m.Question = true, rcode, qs
		return m
	}
	other := dns.Question{Name: "example.org.", Qtype: dns.TypeA, Qclass: dns.ClassINET}
	upper := dns.Question{Name: "EXAMPLE.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET}
	for _, tc := range []struct {
		name string
		m    *dns.Msg
		want bool
	}{
		{"same question", with(dns.RcodeSuccess, q), true},
		{"same, other case", with(dns.RcodeSuccess, upper), true},
		{"other question", with(dns.RcodeSuccess, other), false},
		{"two questions", with(dns.RcodeSuccess, q, q), false},
		{"no question, NOERROR", with(dns.RcodeSuccess), false},
		{"no question, NXDOMAIN", with(dns.RcodeNameError), false},
		{"no question, FORMERR", with(dns.RcodeFormatError), true},
		{"no question, NOTIMP", with(dns.RcodeNotImplemented), true},
		{"no question, REFUSED", with(dns.RcodeRefused), true},
		{"no question, SERVFAIL", with(dns.RcodeServerFailure), true},
	} {
		if got := answersQuestion(tc.m, q); got != tc.want {
			t.Errorf("%s: answersQuestion = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A container that set ndots itself gets an empty answer for an unknown
// single-label name, which its resolver then tries with the search
// domains, as Docker's; other names still go upstream.
func TestAnswerNdotsSet(t *testing.T) {
	s := testSnapshot()
	s.Networks[0].Endpoints[0].NdotsSet = true // web
	tabs := newTables(s)
	for _, tc := range []struct {
		qname, want, calls string
		qtype              uint16
	}{
		{"nosuch.", "NOERROR", "", dns.TypeA},
		{"nosuch.", "NOERROR", "", dns.TypeAAAA},
		{"api.", "NOERROR aa 10.0.0.3", "", dns.TypeA},
		{"nosuch.example.", "NOERROR 192.0.2.53", "192.0.2.53:53 udp", dns.TypeA},
		{"nosuch.", "NOERROR 192.0.2.53", "192.0.2.53:53 udp", dns.TypeSOA},
	} {
		f := &fakeUpstreams{}
		m := tabs.answer(context.Background(), request{local: ip("10.0.0.1"), client: ip("10.0.0.2"), msg: query(tc.qname, tc.qtype)}, f.exchange)
		if got, calls := summary(m), strings.Join(f.calls, " "); got != tc.want || calls != tc.calls {
			t.Errorf("%s %s: %q forwarded to %q, want %q and %q", tc.qname, dns.TypeToString[tc.qtype], got, calls, tc.want, tc.calls)
		}
	}
}

// A --link alias resolves for the linking container only, to the
// target's addresses on the networks the two share, before any other
// container's name that is the same (Docker's --link on a user-defined
// network); other clients see the names as they are.
func TestAnswerLinkAliases(t *testing.T) {
	s := &Snapshot{
		Upstreams: []netip.AddrPort{hostUpstream},
		Networks: []Network{{Name: "app", Listen: []netip.Addr{ip("10.5.0.1")}, Endpoints: []Endpoint{
			{Container: "c-db", Name: "db", Addrs: []netip.Addr{ip("10.5.0.2")}},
			{Container: "c-web", Name: "web", Addrs: []netip.Addr{ip("10.5.0.3")}, Links: map[string]string{"Database": "c-db", "gone": "c-gone", "cache": "c-gone"}},
			{Container: "c-other", Name: "other", Addrs: []netip.Addr{ip("10.5.0.4")}},
			{Container: "c-imp", Name: "database", Addrs: []netip.Addr{ip("10.5.0.9")}},
			{Container: "c-cache", Name: "cache", Addrs: []netip.Addr{ip("10.5.0.8")}},
		}}, {Name: "side", Listen: []netip.Addr{ip("10.6.0.1")}, Endpoints: []Endpoint{
			// web's other network: its links are the first network's
			{Container: "c-web", Name: "web", Addrs: []netip.Addr{ip("10.6.0.3")}},
			{Container: "c-db", Name: "db", Addrs: []netip.Addr{ip("10.6.0.2")}},
		}}},
	}
	tabs := newTables(s)
	for _, tc := range []struct {
		local, client, q, want, calls string
	}{
		{"10.5.0.1", "10.5.0.3", "database.", "NOERROR aa 10.5.0.2", ""},
		{"10.5.0.1", "10.5.0.3", "DATABASE.", "NOERROR aa 10.5.0.2", ""},
		{"10.5.0.1", "10.5.0.4", "database.", "NOERROR aa 10.5.0.9", ""},
		{"10.5.0.1", "10.5.0.3", "db.", "NOERROR aa 10.5.0.2 10.6.0.2", ""}, // its name, on both networks
		// asked on its other network: the link's target on the link's
		{"10.6.0.1", "10.6.0.3", "database.", "NOERROR aa 10.5.0.2", ""},
		// a target on no shared network: the name as any other's
		{"10.5.0.1", "10.5.0.3", "cache.", "NOERROR aa 10.5.0.8", ""},
		{"10.5.0.1", "10.5.0.3", "gone.", "NOERROR 192.0.2.53", "198.51.100.53:53 udp"},
	} {
		var f fakeUpstreams
		m := tabs.answer(context.Background(), request{local: ip(tc.local), client: ip(tc.client), msg: query(tc.q, dns.TypeA)}, f.exchange)
		if got := summary(m); got != tc.want {
			t.Errorf("%s asks %s: %q, want %q", tc.client, tc.q, got, tc.want)
		}
		if got := strings.Join(f.calls, " "); got != tc.calls {
			t.Errorf("%s asks %s: forwarded to %q, want %q", tc.client, tc.q, got, tc.calls)
		}
	}
}

// A query tries three upstreams at most, as glibc's resolver and Docker's
// do: a fourth would outlast the client's own timeout.
func TestForwardTriesThreeUpstreams(t *testing.T) {
	var ups []netip.AddrPort
	f := fakeUpstreams{rcode: map[netip.AddrPort]int{}}
	for i := range 4 {
		u := netip.AddrPortFrom(ip("198.51.100.53"), uint16(53+i))
		ups = append(ups, u)
		f.rcode[u] = dns.RcodeServerFailure
	}
	s := &Snapshot{Upstreams: ups, Networks: []Network{{Name: "n", Listen: []netip.Addr{ip("10.1.0.1")}}}}
	m := newTables(s).answer(context.Background(), request{local: ip("10.1.0.1"), client: ip("10.1.0.9"), msg: query("example.com.", dns.TypeA)}, f.exchange)
	if got := summary(m); got != "SERVFAIL" {
		t.Errorf("answer = %q, want SERVFAIL", got)
	}
	if len(f.calls) != 3 {
		t.Errorf("asked %q, want the first three", f.calls)
	}
}

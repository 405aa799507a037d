package server

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/miekg/dns"
)

// ttl is the TTL of local answers, Docker's.
const ttl = 600

// request is one query as the server received it.
type request struct {
	local  netip.Addr // the listener's address
	client netip.Addr
	tcp    bool
	msg    *dns.Msg
}

// exchangeFunc sends q to one upstream, over TCP or UDP, and returns the
// reply, whose ID is q's.
type exchangeFunc func(ctx context.Context, q *dns.Msg, to route, tcp bool) (*dns.Msg, error)

// route is where a forwarded query goes: an upstream, asked from inside
// the network namespace at netns, or from the server's own (the host's)
// when netns is "".
type route struct {
	netns string
	addr  netip.AddrPort
}

// answer returns the reply to r, or nil when r gets none because it is
// itself a response (answering one could start a loop). Names of the
// networks in scope are answered here; other names go to the client's
// upstreams through exchange. The reply fits the client's UDP buffer, or
// a TCP message.
func (t *tables) answer(ctx context.Context, r request, exchange exchangeFunc) *dns.Msg {
	m, forward := t.answerLocal(r)
	if forward {
		m = t.answerForward(ctx, r, exchange)
	}
	return m
}

// answerLocal is answer without waiting for anything: it returns the
// reply to r, nil if r gets none, or forward true when r's name must go
// upstream (answerForward).
func (t *tables) answerLocal(r request) (m *dns.Msg, forward bool) {
	q := r.msg
	switch {
	case q.Response:
		return nil, false
	case q.Opcode != dns.OpcodeQuery:
		return reply(q, dns.RcodeNotImplemented), false
	case len(q.Question) != 1:
		return reply(q, dns.RcodeFormatError), false
	}
	if !t.allowed(r.local, r.client) {
		return reply(q, dns.RcodeRefused), false
	}
	nets, client := t.scope(r.local, r.client)
	m = t.lookup(q, nets, client)
	if m == nil {
		return nil, true
	}
	fit(r, m)
	return m, false
}

// answerForward returns the reply to r, a query answerLocal sent upstream.
func (t *tables) answerForward(ctx context.Context, r request, exchange exchangeFunc) *dns.Msg {
	_, client := t.scope(r.local, r.client)
	m := t.forward(ctx, r, client, exchange)
	fit(r, m)
	return m
}

// askFrom returns the namespace from which a query of client's (nil: not
// a known container) asked on local goes to upstream u, and false when it
// may not go to u at all.
//
// A container's go from its own namespace (Endpoint.Netns), but for a
// server of the host's it could not reach, asked from the host's
// (files.AskedFromHost). The server tells containers by their source
// address, which a container can forge within its own subnet; so what is
// asked on an internal network's gateway never goes out from the host or
// from a namespace that has a way out, and only to a server on that
// network, from an isolated container's namespace: a neighbour on an open
// network too, or one whose own --dns is elsewhere, could otherwise be
// given to send names out through it. Unknown clients are answered from
// the host's side on open networks only.
func (t *tables) askFrom(local netip.Addr, client *Endpoint, u netip.AddrPort) (string, bool) {
	nets := t.byListen[local]
	open := slices.ContainsFunc(nets, func(n *network) bool { return !n.internal })
	switch {
	case client == nil:
		return "", open
	case client.Netns == "" || files.AskedFromHost(u.Addr(), len(client.Upstreams) > 0, !client.NoIPv4, client.IPv6):
		return "", open && !client.Isolated
	case u.Addr() == firewall.EmbeddedDNS: // redirected back here; u is unmapped (forward)
		return "", false
	case open:
		return client.Netns, true
	}
	onNet := slices.ContainsFunc(nets, func(n *network) bool {
		return slices.ContainsFunc(n.subnets, func(p netip.Prefix) bool { return p.Contains(u.Addr()) })
	})
	return client.Netns, client.Isolated && onNet
}

// fit truncates m to the client's UDP buffer, or a TCP message; it sets TC
// if records had to go.
func fit(r request, m *dns.Msg) {
	size := dns.MaxMsgSize
	if !r.tcp {
		size = dns.MinMsgSize
		if opt := r.msg.IsEdns0(); opt != nil {
			size = max(size, int(opt.UDPSize()))
		}
	}
	m.Truncate(size)
}

// lookup answers q from the networks in scope, or returns nil when the
// name is not theirs and must be forwarded.
func (t *tables) lookup(q *dns.Msg, nets []*network, client *Endpoint) *dns.Msg {
	qs := q.Question[0]
	name := key(qs.Name)
	if qs.Qclass == dns.ClassINET {
		if rrs := ptrRecords(qs, name, nets); len(rrs) > 0 {
			return authoritative(q, rrs)
		}
		if answeredHere(qs.Qtype) {
			scope, endpoints := nets, func(n *network) []*Endpoint { return n.names[name] }
			if l, ok := t.linkTarget(client, name); ok {
				// A link alias is the linking container's name for its
				// target on the network of the link, before any other
				// container's of that name.
				scope, endpoints = []*network{l.net}, func(*network) []*Endpoint { return []*Endpoint{l.ep} }
			}
			if rrs, known := addrRecords(qs, scope, endpoints); known {
				// A known name gets no NXDOMAIN, even when it has no
				// record of the type asked (an IPv4-only container's
				// AAAA; MX, as Docker's). The addresses of a name several
				// containers share come in a new order each time, as
				// Docker's (round robin for clients that take the first).
				rand.Shuffle(len(rrs), func(i, j int) { rrs[i], rrs[j] = rrs[j], rrs[i] })
				return authoritative(q, rrs)
			}
		}
	}
	if client != nil && client.NdotsSet && name != "" && !strings.Contains(name, ".") &&
		(qs.Qtype == dns.TypeA || qs.Qtype == dns.TypeAAAA) {
		// As Docker's: a container that set ndots itself asks a bare
		// name with its search domains next; the bare one stays here,
		// answered empty. Otherwise it goes upstream, where a LAN's
		// resolver may know it (a host's short name).
		return reply(q, dns.RcodeSuccess)
	}
	return nil
}

// answeredHere reports whether a container's name is answered here for
// qtype. Other types go upstream, as Docker's: an alias that shadows an
// outside name keeps its TXT, CAA, HTTPS records.
func answeredHere(qtype uint16) bool {
	return qtype == dns.TypeA || qtype == dns.TypeAAAA || qtype == dns.TypeMX
}

// linkTarget returns the endpoint that name, a link alias of the client
// (nil: not a known container), names: its target's on the link's network.
// None when the target is not there (gone, stopped): the name is then
// looked up as any other.
func (t *tables) linkTarget(client *Endpoint, name string) (linked, bool) {
	if client == nil || client.Container == "" {
		return linked{}, false
	}
	l, ok := t.links[client.Container][name]
	return l, ok
}

// addrRecords returns the A or AAAA records of the endpoints that answer
// the question on nets, and whether there is any.
func addrRecords(qs dns.Question, nets []*network, endpoints func(*network) []*Endpoint) (rrs []dns.RR, known bool) {
	var seen []netip.Addr
	for _, n := range nets {
		for _, ep := range endpoints(n) {
			known = true
			for _, a := range ep.Addrs {
				if slices.Contains(seen, a) {
					continue
				}
				hdr := dns.RR_Header{Name: qs.Name, Rrtype: qs.Qtype, Class: dns.ClassINET, Ttl: ttl}
				switch {
				case qs.Qtype == dns.TypeA && a.Is4():
					rrs = append(rrs, &dns.A{Hdr: hdr, A: a.AsSlice()})
				case qs.Qtype == dns.TypeAAAA && a.Is6():
					rrs = append(rrs, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
				default:
					continue
				}
				seen = append(seen, a)
			}
		}
	}
	return rrs, known
}

// ptrRecords returns "container.network." for a PTR query of the address
// of an endpoint on nets.
func ptrRecords(qs dns.Question, name string, nets []*network) []dns.RR {
	if qs.Qtype != dns.TypePTR {
		return nil
	}
	a, ok := reverseAddr(name)
	if !ok {
		return nil
	}
	var rrs []dns.RR
	var seen []string
	for _, n := range nets {
		ep := n.addrs[a]
		if ep == nil || ep.Name == "" {
			continue
		}
		target := dns.Fqdn(ep.Name + "." + n.name)
		if _, ok := dns.IsDomainName(target); !ok || slices.Contains(seen, target) {
			continue
		}
		seen = append(seen, target)
		rrs = append(rrs, &dns.PTR{
			Hdr: dns.RR_Header{Name: qs.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl},
			Ptr: target,
		})
	}
	return rrs
}

// forward asks the client's upstreams in turn (the first maxUpstreams it
// may ask: askFrom), or the snapshot's when the client is unknown or has
// none, skipping the server's own addresses. A SERVFAIL or REFUSED reply
// moves on to the next upstream; when none gives another answer, the
// answer is SERVFAIL, as Docker's.
func (t *tables) forward(ctx context.Context, r request, client *Endpoint, exchange exchangeFunc) *dns.Msg {
	ups := t.upstreams
	if client != nil && len(client.Upstreams) > 0 {
		ups = client.Upstreams
	}
	tried := 0
	for _, u := range ups {
		u = netip.AddrPortFrom(u.Addr().Unmap(), u.Port())
		netns, ok := t.askFrom(r.local, client, u)
		if !ok || t.listen[u] || ctx.Err() != nil {
			continue
		}
		if tried == maxUpstreams {
			break
		}
		tried++
		m, err := exchange(ctx, r.msg, route{netns, u}, r.tcp)
		if err != nil || m == nil {
			continue
		}
		m.Id = r.msg.Id
		if m.Rcode != dns.RcodeServerFailure && m.Rcode != dns.RcodeRefused {
			return m
		}
	}
	return reply(r.msg, dns.RcodeServerFailure)
}

// maxUpstreams bounds the upstreams one query tries, as glibc's resolver
// reads no more than three nameservers and Docker's asks no more: each is
// given its timeout in turn, and a client's resolver (glibc: 5 s, then
// the same query again, whose late answer it takes) waits no longer.
const maxUpstreams = 3

// packReply packs m, the answer to q; an answer that does not pack (an
// upstream's that it took apart) becomes SERVFAIL, so that the client is
// told at once rather than left to its timeout.
func packReply(m, q *dns.Msg) ([]byte, error) {
	b, err := m.Pack()
	if err != nil {
		return reply(q, dns.RcodeServerFailure).Pack()
	}
	return b, nil
}

// reply returns an empty reply to q with rcode, offering recursion, with
// an OPT record if q had one (RFC 6891).
func reply(q *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg).SetRcode(q, rcode)
	m.RecursionAvailable = true
	if rcode == dns.RcodeFormatError || rcode == dns.RcodeNotImplemented {
		m.Question = nil // the question may be what is wrong
		return m
	}
	if q.IsEdns0() != nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
	}
	return m
}

// authoritative returns the reply to q with the answers rrs.
func authoritative(q *dns.Msg, rrs []dns.RR) *dns.Msg {
	m := reply(q, dns.RcodeSuccess)
	m.Authoritative = true
	m.Answer = rrs
	return m
}

// reverseAddr returns the address a PTR query name (lowercase, no trailing
// dot) stands for: four decimal labels under in-addr.arpa or 32 hex
// nibbles under ip6.arpa, least significant first.
func reverseAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, l := range labels {
			n, err := strconv.ParseUint(l, 10, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			b[3-i] = byte(n)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		if len(rest) != 63 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i := range 32 {
			if i < 31 && rest[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(rest[2*i:2*i+1], 16, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			nibble := 31 - i // the first label is the last nibble
			b[nibble/2] |= byte(v) << (4 * (1 - nibble%2))
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

package server

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"

	"github.com/miekg/dns"
)

// answerCache keeps the packed replies to the UDP queries a reader
// answered from its tables, so that asking again costs a map lookup and a
// copy instead of unpacking the query and building and packing the reply.
//
// A reply depends on the tables, on the client's address (the networks it
// sees, or REFUSED) and on these parts of the query: the name (case aside),
// type and class, whether it has an OPT record and the UDP size that
// offers. Everything else a reply takes from its query is patched in on a
// hit: the ID, the RD and CD bits, and the name as the client spelled it,
// in the question and in the answers' owner names (DNS 0x20). Only
// queries in the common form parseQuery takes are looked up; the rest, and
// replies that are forwarded, truncated or large, take the general path.
//
// A cache is one reader's, without locks; it empties itself when the
// tables change and when it has grown past cacheBytes.
type answerCache struct {
	tables   *tables // those the replies came from
	size     int     // bytes held
	byClient map[netip.Addr]map[string]cached
	key      []byte // the last key parsed, its buffer reused
}

// cached is one reply: its bytes, and the offsets of the names to patch.
type cached struct {
	reply []byte
	names []int
}

const (
	cacheBytes    = 1 << 20 // held by one reader at most, keys and replies
	maxCacheReply = 1232    // larger replies are rare: not worth the space
	headerLen     = 12
)

// Header bits a reply copies from its query.
const (
	rdBit = 0x01 // in byte 2
	cdBit = 0x10 // in byte 3
)

// wireQuery is what the fast path reads of a UDP query.
type wireQuery struct {
	name []byte // the question's name as sent, in wire form
	key  []byte // the cache key: lowercase name, type, class, size, EDNS
}

// parseQuery reads b if it is a query in the common form: a standard query
// with one question, a name of letters, digits, hyphens and underscores
// without compression, and nothing else but perhaps an OPT record without
// options. It appends the cache key to key[:0].
func parseQuery(b, key []byte) (q wireQuery, ok bool) {
	if len(b) < headerLen || b[2]&0xf8 != 0 { // QR and opcode 0: a standard query
		return q, false
	}
	counts := b[4:headerLen]
	if string(counts[:6]) != "\x00\x01\x00\x00\x00\x00" || counts[6] != 0 || counts[7] > 1 {
		return q, false
	}
	edns := counts[7] == 1
	off := headerLen
	budget := 255 // as miekg/dns: a name's labels take fewer than 255 bytes
	key = key[:0]
	for {
		if off >= len(b) {
			return q, false
		}
		n := int(b[off])
		if n == 0 {
			break
		}
		if budget -= n + 1; n > 63 || budget <= 0 || off+1+n > len(b) {
			return q, false
		}
		key = append(key, byte(n))
		for _, c := range b[off+1 : off+1+n] {
			switch {
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			default:
				return q, false
			}
			key = append(key, c)
		}
		off += 1 + n
	}
	q.name = b[headerLen : off+1]
	off++
	if off+4 > len(b) {
		return q, false
	}
	key = append(key, 0)
	key = append(key, b[off:off+4]...) // type and class
	off += 4
	limit := dns.MinMsgSize
	if edns {
		// The root name, type OPT, the UDP size, a TTL, no options.
		if off+11 != len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != dns.TypeOPT ||
			binary.BigEndian.Uint16(b[off+9:]) != 0 {
			return q, false
		}
		limit = max(limit, int(binary.BigEndian.Uint16(b[off+3:])))
		off += 11
	}
	if off != len(b) {
		return q, false
	}
	q.key = binary.BigEndian.AppendUint16(key, uint16(limit))
	if edns {
		q.key = append(q.key, 1)
	}
	return q, true
}

// parse is parseQuery with c's key buffer.
func (c *answerCache) parse(b []byte) (wireQuery, bool) {
	q, ok := parseQuery(b, c.key)
	if ok {
		c.key = q.key
	}
	return q, ok
}

// reset empties c for replies from t.
func (c *answerCache) reset(t *tables) {
	*c = answerCache{tables: t, key: c.key}
}

// get returns the cached reply to q from client under t, patched for q and
// copied into out (or a new buffer when out is too small), or nil.
func (c *answerCache) get(t *tables, client netip.Addr, b []byte, q wireQuery, out []byte) []byte {
	if c.tables != t {
		c.reset(t)
		return nil
	}
	e, ok := c.byClient[client][string(q.key)]
	if !ok {
		return nil
	}
	if len(out) < len(e.reply) {
		out = make([]byte, len(e.reply))
	}
	r := out[:len(e.reply)]
	copy(r, e.reply)
	copy(r, b[:2]) // ID
	r[2] = r[2]&^rdBit | b[2]&rdBit
	r[3] = r[3]&^cdBit | b[3]&cdBit
	for _, off := range e.names {
		copy(r[off:], q.name)
	}
	shuffleAddrs(r, e.names[1:], len(q.name))
	return r
}

// shuffleAddrs puts the addresses of a reply's A or AAAA answers, whose
// owner names (n bytes each) start at offs, in a new order, as the general
// path does: the records differ in their data only.
func shuffleAddrs(r []byte, offs []int, n int) {
	if len(offs) < 2 {
		return
	}
	rtype := binary.BigEndian.Uint16(r[offs[0]+n:])
	if rtype != dns.TypeA && rtype != dns.TypeAAAA {
		return
	}
	size := 4
	if rtype == dns.TypeAAAA {
		size = 16
	}
	var tmp [16]byte
	for i := len(offs) - 1; i > 0; i-- {
		j := rand.IntN(i + 1)
		a, b := r[offs[i]+n+10:][:size], r[offs[j]+n+10:][:size]
		copy(tmp[:size], a)
		copy(a, b)
		copy(b, tmp[:size])
	}
}

// put caches reply, the reply to q from client under t, when it is one to
// keep: not truncated, not large, and with q's name where parseQuery and
// ownerNames expect it.
func (c *answerCache) put(t *tables, client netip.Addr, q wireQuery, reply []byte) {
	// get, just before with the same t, set c.tables; a packed reply has
	// at least its header.
	if len(reply) > maxCacheReply || reply[2]&0x02 != 0 { // TC
		return
	}
	names, ok := ownerNames(reply, len(q.name))
	if !ok {
		return
	}
	if c.size+len(q.key)+len(reply) > cacheBytes {
		c.reset(t)
	}
	c.size += len(q.key) + len(reply)
	if c.byClient == nil {
		c.byClient = make(map[netip.Addr]map[string]cached)
	}
	m := c.byClient[client]
	if m == nil {
		m = make(map[string]cached)
		c.byClient[client] = m
	}
	m[string(q.key)] = cached{reply: append([]byte(nil), reply...), names: names}
}

// ownerNames returns the offsets in reply of the question's name, n bytes
// long, and of the answers' owner names, which the server always writes as
// the question's name. It reports false for a reply of another shape: not
// one question, records outside the answer and additional sections, or an
// owner name compressed or different from the question's.
func ownerNames(reply []byte, n int) ([]int, bool) {
	qd := binary.BigEndian.Uint16(reply[4:])
	an := int(binary.BigEndian.Uint16(reply[6:]))
	ns := binary.BigEndian.Uint16(reply[8:])
	name := headerLen
	if qd != 1 || ns != 0 || name+n+4 > len(reply) {
		return nil, false
	}
	names := []int{name}
	off := name + n + 4
	for range an {
		if off+n+10 > len(reply) || !equalFold(reply[off:off+n], reply[name:name+n]) {
			return nil, false
		}
		names = append(names, off)
		off += n + 8
		off += 2 + int(binary.BigEndian.Uint16(reply[off:]))
	}
	return names, off <= len(reply)
}

// equalFold reports whether the wire names a and b are equal but for the
// case of ASCII letters.
func equalFold(a, b []byte) bool {
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return len(a) == len(b)
}

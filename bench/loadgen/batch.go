package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// Question is one name asked of a DNS server and the IPv4 address its
// answer must hold.
type Question struct {
	Name string
	Want netip.Addr
}

// BatchResult is what DNSBatch measured.
type BatchResult struct {
	Answered, Lost int
	Elapsed        time.Duration   // from the first question to the last answer
	Lat            []time.Duration // round trips, one per answer
}

// BatchLen is how many datagrams one sendmmsg or recvmmsg moves.
const BatchLen = 64

// DNSBatch loads the UDP server at addr for d from one socket that keeps
// up to window questions in flight, asking questions in turn. It sends
// and reads BatchLen datagrams per system call (sendmmsg, recvmmsg) and
// checks each answer against its question's bytes instead of decoding it,
// so that it costs the CPUs it shares with the server far less per query
// than the one-question-in-flight clients of DNS or than dnsperf: on a
// small machine, a load that needs a whole CPU caps what any server can
// show. An answer without the wanted address or with an rcode other than
// NOERROR fails the run; a question unanswered for a second is lost.
func DNSBatch(addr string, window int, d time.Duration, questions []Question) (BatchResult, error) {
	if window < 1 || window > 1<<15 || len(questions) == 0 {
		return BatchResult{}, fmt.Errorf("loadgen: window %d with %d questions", window, len(questions))
	}
	raddr, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return BatchResult{}, err
	}
	conn, err := net.DialUDP("udp4", nil, raddr)
	if err != nil {
		return BatchResult{}, err
	}
	defer conn.Close()
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	g := &batchGen{pc: ipv4.NewPacketConn(conn), window: window}
	for _, q := range questions {
		if !q.Want.Is4() {
			return BatchResult{}, fmt.Errorf("loadgen: %s: want an IPv4 address, not %v", q.Name, q.Want)
		}
		m := new(dns.Msg).SetQuestion(q.Name, dns.TypeA)
		m.RecursionDesired = true
		wire, err := m.Pack()
		if err != nil {
			return BatchResult{}, fmt.Errorf("loadgen: %s: %w", q.Name, err)
		}
		a := q.Want.As4()
		g.wires = append(g.wires, wire)
		g.wants = append(g.wants, a[:])
	}
	return g.run(d)
}

// batchGen is DNSBatch's state. A question's ID is its slot in inFlight,
// so an answer finds its question without a map.
type batchGen struct {
	pc           *ipv4.PacketConn
	window       int
	wires, wants [][]byte
	next         int // the next question to ask
	nextID       uint16
	inFlight     [1 << 16]slot
	pending      int
	res          BatchResult
}

type slot struct {
	busy bool
	q    int       // the question asked
	sent time.Time // when its batch went out
}

func (g *batchGen) run(d time.Duration) (BatchResult, error) {
	out := make([]ipv4.Message, BatchLen)
	in := make([]ipv4.Message, BatchLen)
	for i := range BatchLen {
		out[i].Buffers = [][]byte{make([]byte, 512)}
		in[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	start := time.Now()
	end := start.Add(d)
	lastAnswer := start
	for {
		now := time.Now()
		if now.Before(end) {
			if err := g.send(out, now); err != nil {
				return g.res, err
			}
		} else if g.pending == 0 {
			break
		}
		// One deadline per read is cheap next to the batch it reads: a
		// timer in Go's poller, no system call.
		_ = g.pc.SetReadDeadline(now.Add(time.Second))
		n, err := g.pc.ReadBatch(in, 0)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			g.loseAll()
			if !now.Before(end) {
				break
			}
			continue
		}
		if err != nil {
			return g.res, fmt.Errorf("loadgen: recvmmsg: %w", err)
		}
		now = time.Now()
		for _, m := range in[:n] {
			if err := g.answer(m.Buffers[0][:m.N], now); err != nil {
				return g.res, err
			}
		}
		lastAnswer = now
	}
	g.res.Elapsed = lastAnswer.Sub(start)
	return g.res, nil
}

// send fills the window, a batch at a time.
func (g *batchGen) send(out []ipv4.Message, now time.Time) error {
	for g.pending < g.window {
		k := min(BatchLen, g.window-g.pending)
		for i := range k {
			for g.inFlight[g.nextID].busy { // an ID still out from a lost question
				g.nextID++
			}
			id := g.nextID
			g.nextID++
			q := g.next
			g.next = (g.next + 1) % len(g.wires)
			b := out[i].Buffers[0][:len(g.wires[q])]
			copy(b, g.wires[q])
			b[0], b[1] = byte(id>>8), byte(id)
			out[i].Buffers[0] = b
			g.inFlight[id] = slot{busy: true, q: q, sent: now}
		}
		sent, err := g.pc.WriteBatch(out[:k], 0)
		if err != nil {
			return fmt.Errorf("loadgen: sendmmsg: %w", err)
		}
		for i := sent; i < k; i++ { // not sent: free their IDs again
			id := uint16(out[i].Buffers[0][0])<<8 | uint16(out[i].Buffers[0][1])
			g.inFlight[id] = slot{}
		}
		g.pending += sent
		if sent < k {
			return nil // the socket's buffer is full: read first
		}
	}
	return nil
}

// answer checks one answer against its question: the same ID and
// question section, NOERROR, at least one answer record, and the wanted
// address's four bytes after the question.
func (g *batchGen) answer(m []byte, now time.Time) error {
	if len(m) < 12 {
		return fmt.Errorf("loadgen: a %d-byte answer", len(m))
	}
	id := uint16(m[0])<<8 | uint16(m[1])
	s := g.inFlight[id]
	if !s.busy {
		return nil // an answer to a question already counted lost
	}
	g.inFlight[id] = slot{}
	g.pending--
	q := g.wires[s.q][12:]
	name := func() string {
		var msg dns.Msg
		_ = msg.Unpack(g.wires[s.q])
		return msg.Question[0].Name
	}
	if rcode := m[3] & 0xf; rcode != dns.RcodeSuccess {
		return fmt.Errorf("loadgen: %s: rcode %s", name(), dns.RcodeToString[int(rcode)])
	}
	if m[2]&0x80 == 0 || (m[6] == 0 && m[7] == 0) || !bytes.HasPrefix(m[12:], q) ||
		!bytes.Contains(m[12+len(q):], g.wants[s.q]) {
		return fmt.Errorf("loadgen: %s: answer without %v: %x", name(), netip.AddrFrom4([4]byte(g.wants[s.q])), m)
	}
	g.res.Answered++
	g.res.Lat = append(g.res.Lat, now.Sub(s.sent))
	return nil
}

// loseAll counts every question in flight as lost: none was answered for
// a second.
func (g *batchGen) loseAll() {
	for id := range g.inFlight {
		if g.inFlight[id].busy {
			g.inFlight[id] = slot{}
			g.res.Lost++
		}
	}
	g.pending = 0
}

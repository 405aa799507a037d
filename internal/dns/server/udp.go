package server

import (
	"net/netip"
	"runtime"

	"github.com/miekg/dns"
)

// The UDP reader moves datagrams a batch at a time (recvmmsg, sendmmsg):
// under load several queries wait on the socket, and one system call each
// way answers them all. It answers local names at once, from its cache
// when it can, in its own buffers and without a goroutine per query; a
// forwarded query gets a goroutine, so that local answers keep flowing
// during the upstream's round trip.
const (
	batchSize  = 16 // datagrams per system call
	yieldEvery = 64 // batches; see readUDP
)

// readUDP answers the UDP queries it reads until the socket is shut down.
func (l *listener) readUDP() {
	defer l.wg.Done()
	b := newBatch(batchSize, dns.MaxMsgSize)
	// arena holds the replies of one batch, one after the other; a reply
	// that does not fit gets a buffer of its own.
	arena := make([]byte, dns.MaxMsgSize)
	cache := new(answerCache)
	for batches := 1; ; batches++ {
		if batches%yieldEvery == 0 {
			// A goroutine that never leaves its processor looks stuck to
			// the runtime's monitor after 10ms: it takes the processor
			// away during the next recvmmsg, and then wakes every 20us
			// for a millisecond and more (thousands of wakeups a second
			// under load). Yielding now and then costs far less.
			runtime.Gosched()
		}
		// Blocked in the kernel unless forwarded queries want the thread.
		n, err := l.udp.recv(b, l.forwarding.Load() == 0)
		if l.h.ctx.Err() != nil {
			return
		}
		if err != nil {
			l.h.log.Debug("dns read", "err", err)
			continue
		}
		free := arena
		for i := range n {
			data, from := b.datagram(i)
			if !from.IsValid() {
				continue
			}
			reply := l.serveUDP(cache, data, from, free)
			if len(reply) == 0 {
				continue
			}
			if len(reply) <= len(free) && &reply[0] == &free[0] {
				free = free[len(reply):]
			}
			b.reply(i, reply)
		}
		if err := l.udp.send(b); err != nil {
			l.h.log.Debug("dns reply", "err", err)
		}
	}
}

// maxForwarding bounds the forwarded UDP queries in flight per listener,
// and maxForwardingPerClient those of one client address, so that one
// container cannot take them all from its neighbours (variables for the
// tests).
var (
	maxForwarding          int32 = 1024
	maxForwardingPerClient       = 128
)

// serveUDP answers one UDP query, b, from client from. It returns the
// reply, packed into out when it fits, or nil when there is none now: a
// response gets none, and a forwarded query's goroutine sends its own.
func (l *listener) serveUDP(c *answerCache, b []byte, from netip.AddrPort, out []byte) []byte {
	h := l.h
	t := h.tables.Load()
	local, fwd, err := answerUDP(t, c, h.local, from.Addr().Unmap().WithZone(""), b, out)
	if err != nil {
		h.log.Debug("dns reply", "client", from, "err", err)
	}
	if fwd == nil {
		return local
	}
	client := from.Addr().Unmap().WithZone("")
	if l.forwarding.Load() >= maxForwarding || !l.clientForwards(client, 1) {
		// A flood of names to forward (an upstream that does not answer
		// holds each for seconds) gets SERVFAIL at once rather than a
		// goroutine and a socket each.
		r, err := reply(fwd.msg, dns.RcodeServerFailure).PackBuffer(out)
		if err != nil {
			h.log.Debug("dns reply", "client", from, "err", err)
		}
		return r
	}
	l.wg.Add(1)
	l.forwarding.Add(1)
	go func() {
		defer l.wg.Done()
		m := t.answerForward(h.ctx, *fwd, h.exchange)
		// Counted out of the client's before the reply leaves: a client
		// that sends its next query on the reply (as many do, up to a
		// number in flight) would otherwise find this one still counted,
		// and a busy CPU can hold this goroutine between the two for
		// long. (The listener's count, after: it keeps the reader off a
		// blocking read until the reply is out.)
		l.clientForwards(client, -1)
		b, err := packReply(m, fwd.msg)
		if err == nil {
			err = l.udp.sendTo(b, from)
		}
		if err != nil {
			h.log.Debug("dns reply", "client", from, "err", err)
		}
		l.forwarding.Add(-1)
		afterForwardReply()
	}()
	return nil
}

// afterForwardReply runs as a forwarded query's goroutine ends (for the
// tests: a CPU busy elsewhere holding it).
var afterForwardReply = func() {}

// clientForwards counts client's forwarded queries in flight up (delta 1)
// or down (-1); up fails, changing nothing, at maxForwardingPerClient.
func (l *listener) clientForwards(client netip.Addr, delta int) bool {
	l.perClientMu.Lock()
	defer l.perClientMu.Unlock()
	n := l.perClient[client] + delta
	switch {
	case delta > 0 && n > maxForwardingPerClient:
		return false
	case n <= 0:
		delete(l.perClient, client)
	default:
		if l.perClient == nil {
			l.perClient = make(map[netip.Addr]int)
		}
		l.perClient[client] = n
	}
	return true
}

// answerUDP answers the UDP query b from client on local from t, and
// from c when it can. It returns the packed reply (in out when it fits);
// or nil and the request when the query must go upstream (answerForward);
// or nil, nil when b gets no reply.
func answerUDP(t *tables, c *answerCache, local, client netip.Addr, b, out []byte) ([]byte, *request, error) {
	if len(b) < headerLen || b[2]&0x80 != 0 {
		return nil, nil, nil // not a query, or a response: no reply
	}
	q, fast := c.parse(b)
	if fast {
		if r := c.get(t, client, b, q, out); r != nil {
			return r, nil, nil
		}
	}
	msg := new(dns.Msg)
	if err := msg.Unpack(b); err != nil {
		// As dns.Server does: FORMERR, with the query's header fields.
		m := &dns.Msg{MsgHdr: dns.MsgHdr{Id: uint16(b[0])<<8 | uint16(b[1]), Response: true,
			Opcode: int(b[2]>>3) & 0xf, RecursionDesired: b[2]&1 != 0, Rcode: dns.RcodeFormatError}}
		r, err := m.PackBuffer(out)
		return r, nil, err
	}
	r := request{local: local, client: client, msg: msg}
	m, forward := t.answerLocal(r)
	if forward {
		return nil, &r, nil
	}
	if m == nil {
		return nil, nil, nil
	}
	packed, err := m.PackBuffer(out)
	if err != nil {
		return nil, nil, err
	}
	if fast {
		c.put(t, client, q, packed)
	}
	return packed, nil, nil
}

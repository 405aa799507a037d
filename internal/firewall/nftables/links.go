package nftables

import (
	"encoding/binary"
	"fmt"
	"slices"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/firewall"
)

// The link sets: source . destination . protocol . destination port of
// the connections that docker's --link allows despite ICC=false.
const (
	setLinks4 = "links4" // ipv4_addr . ipv4_addr . inet_proto . inet_service
	setLinks6 = "links6" // ipv6_addr . ipv6_addr . inet_proto . inet_service
)

var linkSets = []addrPortSet{{setLinks4, false, 2}, {setLinks6, true, 2}}

// linkRule accepts the connections of the set's links. It is a shared
// rule placed before every network's rules, so that it wins over their
// ICC drop; it matches only what an element names.
//
//	ip saddr . ip daddr . meta l4proto . th dport @links4 fib saddr . iif oif != 0 accept
//	ip6 saddr . ip6 daddr . meta l4proto . th dport @links6 fib saddr . iif oif != 0 accept
func linkRule(d addrPortSet) *nft.Rule { return linkMatch(d, false) }

// linkReplyRule accepts the replies of the links' connections that an
// administrator's notrack rule left untracked: they are not established
// then, and the ICC drop of untracked packets would take them. The key
// is the reply's, turned around (Docker's link rules accept both
// directions without conntrack, too).
//
//	ct state untracked ip daddr . ip saddr . meta l4proto . th sport @links4 fib saddr . iif oif != 0 accept
//	ct state untracked ip6 daddr . ip6 saddr . meta l4proto . th sport @links6 fib saddr . iif oif != 0 accept
func linkReplyRule(d addrPortSet) *nft.Rule { return linkMatch(d, true) }

func linkMatch(d addrPortSet, reply bool) *nft.Rule {
	fam, words, src := byte(unix.NFPROTO_IPV4), uint32(1), uint32(12)
	if d.v6 {
		fam, words, src = unix.NFPROTO_IPV6, 4, 8
	}
	first, second, port := src, src+4*words, uint32(2) // source, destination, destination port
	var untracked []expr.Any
	if reply {
		first, second, port = second, first, 0
		untracked = ctBits(expr.CtKeySTATE, expr.CtStateBitUNTRACKED, true)
	}
	// The key is built from register 1 on: two addresses, then protocol
	// and port in one 4-byte register each.
	return tagged(forwardChain, tagBase, untracked, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: first, Len: 4 * words},
		&expr.Payload{DestRegister: reg32(words), Base: expr.PayloadBaseNetworkHeader, Offset: second, Len: 4 * words},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32(2 * words)},
		&expr.Payload{DestRegister: reg32(2*words + 1), Base: expr.PayloadBaseTransportHeader, Offset: port, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: d.name},
		// The source must be routed back through the interface the
		// packet came in on: a linked container's address forged from
		// another network or from outside is not let through.
		&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}, verdict(expr.VerdictAccept))
}

// AddLinks allows owner's links as elements of the link sets, in one batch
// that also creates knit's table, chains and sets if missing. An element
// in place is left alone; one of another owner is replaced. The cost does
// not grow with the number of other links: only the keys of links are
// looked up.
//
// Equivalent to: nft get element inet knit links4 { 10.99.0.2 . 10.99.0.3
// . tcp . 80 }; nft add element inet knit links4 { 10.99.0.2 . 10.99.0.3
// . tcp . 80 comment "knit:owner=ID" } (links6 for IPv6)
func (f *Firewall) AddLinks(owner string, links []firewall.Link) error {
	want, err := linkElems(owner, links)
	if err != nil {
		return err
	}
	if err := f.elemsEnsure(want); err != nil {
		return fmt.Errorf("add links of %s: %w", owner, err)
	}
	return nil
}

// RemoveLinks deletes owner's elements for links (every one of owner's
// when links is nil, for a prune), in one batch; elements missing or held
// by another owner are skipped, and nothing is written when none is left
// to delete. With links given, only their keys are looked up: the cost
// does not grow with the number of other links.
//
// Equivalent to: nft get element inet knit links4 { 10.99.0.2 . 10.99.0.3
// . tcp . 80 } (for its owner); nft delete element inet knit links4 {
// 10.99.0.2 . 10.99.0.3 . tcp . 80 }
func (f *Firewall) RemoveLinks(owner string, links []firewall.Link) error {
	want, err := linkElems(owner, links)
	if err != nil {
		return err
	}
	if err := f.elemsRemove(owner, want, links == nil, []string{setLinks4, setLinks6}); err != nil {
		return fmt.Errorf("remove links of %s: %w", owner, err)
	}
	return nil
}

// SetLinks makes owner's elements exactly those of links, in one batch
// that also creates knit's table, chains and sets if missing: its others
// are deleted and the missing added (one of another owner replaced), so
// a link kept is in place throughout, which RemoveLinks then AddLinks, two
// batches, would not give: new connections over it would be dropped
// between them. It reads every link element; nothing is written when all
// is in place.
//
// Equivalent to: nft delete element inet knit links4 { OLD }; nft add
// element inet knit links4 { NEW comment "knit:owner=ID" } (one nft -f)
func (f *Firewall) SetLinks(owner string, links []firewall.Link) error {
	want, err := linkElems(owner, links)
	if err != nil {
		return err
	}
	err = f.apply(func(c *nft.Conn, cur ruleset) error {
		var del, add []ownedElem
		for _, set := range []string{setLinks4, setLinks6} {
			for _, h := range cur.elems[set] {
				i := slices.IndexFunc(want, func(w ownedElem) bool { return w.set == set && string(w.Key) == string(h.Key) })
				switch {
				case i < 0 && h.Comment == ownerTag(owner):
					del = append(del, ownedElem{set: set, SetElement: h})
				case i >= 0 && h.Comment != want[i].Comment: // another owner's
					del = append(del, ownedElem{set: set, SetElement: h})
				}
			}
		}
		for _, w := range want {
			if !slices.ContainsFunc(cur.elems[w.set], func(h nft.SetElement) bool {
				return string(h.Key) == string(w.Key) && h.Comment == w.Comment
			}) {
				add = append(add, w)
			}
		}
		baseOK := cur.baseUpToDate()
		if baseOK && len(del) == 0 && len(add) == 0 {
			return nil // an empty batch is not sent
		}
		if !baseOK {
			f.noteLost()
			if err := baseEnsure(c, cur); err != nil {
				return err
			}
		}
		for _, e := range del {
			if err := elemsDel(c, e.set, []nft.SetElement{e.SetElement}); err != nil {
				return err
			}
		}
		for _, e := range add {
			if err := c.SetAddElements(&nft.Set{Table: table, Name: e.set}, []nft.SetElement{e.SetElement}); err != nil {
				return fmt.Errorf("add element to set %s: %w", e.set, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set links of %s: %w", owner, err)
	}
	return nil
}

// LinkOwners returns the owners of link set elements, sorted.
//
// Equivalent to: nft list set inet knit links4 (and links6) | grep -o 'knit:owner=[^"]*'
func (f *Firewall) LinkOwners() ([]string, error) {
	cur, err := f.read()
	if err != nil {
		return nil, err
	}
	return cur.owners([]string{setLinks4, setLinks6}), nil
}

// linkElems validates the links and turns them into set elements, one per
// distinct link.
func linkElems(owner string, links []firewall.Link) ([]ownedElem, error) {
	if err := firewall.ValidateOwner(owner); err != nil {
		return nil, err
	}
	var out []ownedElem
	for _, l := range links {
		if err := l.Validate(); err != nil {
			return nil, err
		}
		e := ownedElem{set: setLinks4, SetElement: nft.SetElement{Key: linkKey(l), Comment: ownerTag(owner)}}
		if l.From.Is6() {
			e.set = setLinks6
		}
		if !slices.ContainsFunc(out, func(o ownedElem) bool { return o.set == e.set && string(o.Key) == string(e.Key) }) {
			out = append(out, e)
		}
	}
	return out, nil
}

// linkKey is from . to . protocol . port, each field padded to 4 bytes as
// nft's concatenations are.
func linkKey(l firewall.Link) []byte {
	key := append(l.From.AsSlice(), l.To.AsSlice()...)
	key = append(key, protoNum[l.Proto], 0, 0, 0)
	return append(binary.BigEndian.AppendUint16(key, l.Port), 0, 0)
}

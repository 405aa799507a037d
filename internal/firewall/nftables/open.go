package nftables

import (
	"encoding/binary"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/firewall"
)

// The open sets: container address . protocol . container port of the
// published ports of routed networks (Docker's gateway mode "routed"),
// which outside hosts may reach on the container's own address.
const (
	setOpen4 = "open4" // ipv4_addr . inet_proto . inet_service
	setOpen6 = "open6" // ipv6_addr . inet_proto . inet_service
)

var openSets = []addrPortSet{{setOpen4, false, 1}, {setOpen6, true, 1}}

// openElem is the open-set element of a mapping whose Open is set.
func openElem(owner string, m firewall.PortMapping) ownedElem {
	d := openSets[0]
	if m.ContainerIP.Is6() {
		d = openSets[1]
	}
	key := append(m.ContainerIP.AsSlice(), protoNum[m.Proto], 0, 0, 0)
	key = append(binary.BigEndian.AppendUint16(key, m.ContainerPort), 0, 0)
	return ownedElem{set: d.name, SetElement: nft.SetElement{Key: key, Comment: ownerTag(owner)}}
}

// exposureRules keep new connections from outside the bridge away from
// the containers, except through a port mapping (destination-NATed); on
// a family whose gateway mode is routed, also except to a published port
// on the container's own address, and ICMP (a ping, as Docker's routed
// mode lets in).
//
// A packet an administrator's notrack rule leaves untracked has no ct
// status (the match fails, not the drop): it is dropped on its own.
//
//	iifname != BR oifname BR ct state untracked drop
//	iifname != BR oifname BR ct state new ct status != dnat drop
//	iifname != BR oifname BR ip daddr . meta l4proto . th dport != @open4 meta l4proto != icmp ct state new ct status != dnat drop
//	iifname != BR oifname BR meta nfproto ipv6 ct state new ct status != dnat drop
func exposureRules(n firewall.Network, tag string) []*nft.Rule {
	br := n.Bridge
	from := append(ifname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, br), ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br)...)
	untracked := tagged(forwardChain, tag, from, ctBits(expr.CtKeySTATE, expr.CtStateBitUNTRACKED, true), verdict(expr.VerdictDrop))
	unNATedNew := append(ctBits(expr.CtKeySTATE, expr.CtStateBitNEW, true), ctBits(expr.CtKeySTATUS, ctStatusDNAT, false)...)
	if !n.Routed4 && !n.Routed6 {
		return []*nft.Rule{untracked, tagged(forwardChain, tag, from, unNATedNew, verdict(expr.VerdictDrop))}
	}
	rules := []*nft.Rule{untracked}
	for _, d := range openSets {
		var match []expr.Any
		if d.v6 && n.Routed6 || !d.v6 && n.Routed4 {
			icmp := byte(unix.IPPROTO_ICMP)
			if d.v6 {
				icmp = unix.IPPROTO_ICMPV6
			}
			match = append(openLookup(d),
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{icmp}})
		} else {
			fam := byte(unix.NFPROTO_IPV4)
			if d.v6 {
				fam = unix.NFPROTO_IPV6
			}
			match = []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
			}
		}
		rules = append(rules, tagged(forwardChain, tag, from, match, unNATedNew, verdict(expr.VerdictDrop)))
	}
	return rules
}

// openLookup matches a packet whose destination address, protocol and
// port are not in the open set.
//
//	ip daddr . meta l4proto . th dport != @open4
func openLookup(d addrPortSet) []expr.Any {
	fam, words, dst := byte(unix.NFPROTO_IPV4), uint32(1), uint32(16)
	if d.v6 {
		fam, words, dst = unix.NFPROTO_IPV6, 4, 24
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: dst, Len: 4 * words},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32(words)},
		&expr.Payload{DestRegister: reg32(words + 1), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: d.name, Invert: true},
	}
}

package nftables

import (
	"fmt"
	"net/netip"
	"slices"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/firewall"
)

// The source sets of the bridge table: the addresses containers' ports
// claim (guarded), and which port claims each (senders). A frame from a
// container's port with a guarded source address that is not its own is
// forged: a neighbour giving another's address to the embedded DNS server
// (which would answer it with that container's view of names, and forward
// from that container's namespace), or to a linked port.
const (
	setGuarded4 = "guarded4" // ipv4_addr
	setGuarded6 = "guarded6" // ipv6_addr
	setSenders4 = "senders4" // ifname . ipv4_addr
	setSenders6 = "senders6" // ifname . ipv6_addr
)

// chainSourceGuard is the bridge table's chain of sourceGuardRules.
const chainSourceGuard = "source-guard"

// sourceGuardChain sees every frame that enters a bridge from a port, as
// raGuardChain does.
var sourceGuardChain = &nft.Chain{
	Name: chainSourceGuard, Table: bridgeTable, Type: nft.ChainTypeFilter,
	Hooknum: nft.ChainHookPrerouting, Priority: nft.ChainPriorityRef(-200),
	Policy: &policyAccept,
}

// sourceSets are the names of the source sets, which grow with the
// containers: their elements are read only by calls that need them all.
var sourceSets = []string{setGuarded4, setGuarded6, setSenders4, setSenders6}

// sourceSetDefs returns fresh descriptions of the source sets.
//
//	set guarded4 { type ipv4_addr; }
//	set senders4 { type ifname . ipv4_addr; }
func sourceSetDefs() []*nft.Set {
	return []*nft.Set{
		{Table: bridgeTable, Name: setGuarded4, KeyType: nft.TypeIPAddr},
		{Table: bridgeTable, Name: setGuarded6, KeyType: nft.TypeIP6Addr},
		{Table: bridgeTable, Name: setSenders4, Concatenation: true, KeyType: nft.MustConcatSetType(nft.TypeIFName, nft.TypeIPAddr)},
		{Table: bridgeTable, Name: setSenders6, Concatenation: true, KeyType: nft.MustConcatSetType(nft.TypeIFName, nft.TypeIP6Addr)},
	}
}

// setTable is the table that holds knit's set called name: set names are
// unique across knit's two tables.
func setTable(name string) *nft.Table {
	if slices.Contains(sourceSets, name) {
		return bridgeTable
	}
	return table
}

// sourceGuardRules drop what a container's port sends with an address
// another container claims: IPv4 and IPv6 packets by their source, ARP by
// its sender address and neighbour advertisements by their target (which
// would point the host's and the neighbours' caches at the forger, and
// the replies with them). The group comes first: frames of other ports
// leave the chain at once. An address no container claims passes. The
// family checks are meta protocol, which the kernel reads past an 802.1Q
// tag (it takes one off before the bridge sees the frame); a frame with
// a second tag, which the host would take off as well, is dropped.
//
//	iifgroup 1802398068 ip saddr @guarded4 iifname . ip saddr != @senders4 drop comment "knit:base"
//	iifgroup 1802398068 ip6 saddr @guarded6 iifname . ip6 saddr != @senders6 drop comment "knit:base"
//	iifgroup 1802398068 arp saddr ip @guarded4 iifname . arp saddr ip != @senders4 drop comment "knit:base"
//	iifgroup 1802398068 icmpv6 type nd-neighbor-advert @th,64,128 @guarded6 iifname . @th,64,128 != @senders6 drop comment "knit:base"
//	iifgroup 1802398068 meta protocol 8021q drop comment "knit:base"
//	iifgroup 1802398068 meta protocol 8021ad drop comment "knit:base"
//	iifgroup 1802398068 ip saddr 127.0.0.0/8 drop comment "knit:base"
//	iifgroup 1802398068 ip6 saddr ::1 drop comment "knit:base"
//	iifgroup 1802398068 arp saddr ip 127.0.0.0/8 drop comment "knit:base"
func sourceGuardRules() []*nft.Rule {
	group := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFGROUP, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(firewall.PortGroup)},
	}
	guard := func(proto uint16, base expr.PayloadBase, offset, size uint32, guarded, senders string, dep ...expr.Any) *nft.Rule {
		return tagged(sourceGuardChain, tagBase, group, metaProtocol(proto), dep, []expr.Any{
			&expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: size},
			&expr.Lookup{SourceRegister: 1, SetName: guarded},
			// The key: the port's name fills register 1, the address
			// follows in register 2.
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Payload{DestRegister: 2, Base: base, Offset: offset, Len: size},
			&expr.Lookup{SourceRegister: 1, SetName: senders, Invert: true},
		}, verdict(expr.VerdictDrop))
	}
	rules := []*nft.Rule{
		guard(unix.ETH_P_IP, expr.PayloadBaseNetworkHeader, 12, 4, setGuarded4, setSenders4),
		guard(unix.ETH_P_IPV6, expr.PayloadBaseNetworkHeader, 8, 16, setGuarded6, setSenders6),
		// the ARP sender's protocol address
		guard(unix.ETH_P_ARP, expr.PayloadBaseNetworkHeader, 14, 4, setGuarded4, setSenders4),
		// the neighbour advertisement's target address
		guard(unix.ETH_P_IPV6, expr.PayloadBaseTransportHeader, 8, 16, setGuarded6, setSenders6,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{icmpv6NeighborAdvert}}),
	}
	for _, tag := range []uint16{unix.ETH_P_8021Q, unix.ETH_P_8021AD} {
		rules = append(rules, tagged(sourceGuardChain, tagBase, group, metaProtocol(tag), verdict(expr.VerdictDrop)))
	}
	// Loopback sources, which no container sends but a forger (its
	// redirect's masquerade aside): one would reach a neighbour whose
	// namespace takes them (route_localnet, for its own 127.0.0.11), or,
	// through br_netfilter, leave masqueraded to the gateway's address,
	// the neighbour answering "the host".
	rules = append(rules,
		tagged(sourceGuardChain, tagBase, group, metaProtocol(unix.ETH_P_IP), addrPayload(loopback4, false), verdict(expr.VerdictDrop)),
		tagged(sourceGuardChain, tagBase, group, metaProtocol(unix.ETH_P_IPV6), addrPayload(loopback6, false), verdict(expr.VerdictDrop)),
		tagged(sourceGuardChain, tagBase, group, metaProtocol(unix.ETH_P_ARP), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 14, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
		}, verdict(expr.VerdictDrop)))
	return rules
}

// metaProtocol matches the frame's protocol (its ether type, past one
// VLAN tag).
//
//	meta protocol ip
func metaProtocol(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

// AddSources claims owner's sources as elements of the source sets, in
// one batch that also creates knit's tables, chains and sets if missing.
// An element in place is left alone; an address of another owner is
// taken over (its old port's pair stays until that owner's removal or a
// prune: it names a port that no longer sends). Only the keys of srcs are
// looked up.
//
// Equivalent to: nft get element bridge knit guarded4 { 10.99.0.2 }; nft
// add element bridge knit guarded4 { 10.99.0.2 comment "knit:owner=ID" };
// nft add element bridge knit senders4 { "veth0a1b2c3" . 10.99.0.2 comment
// "knit:owner=ID" } (guarded6, senders6 for IPv6)
func (f *Firewall) AddSources(owner string, srcs []firewall.Source) error {
	want, err := sourceElems(owner, srcs, true)
	if err != nil {
		return err
	}
	if err := f.elemsEnsure(want); err != nil {
		return fmt.Errorf("claim sources of %s: %w", owner, err)
	}
	return nil
}

// RemoveSources deletes owner's elements for srcs (their pairs) and
// addrs (their claims), every one of owner's when both are nil, for a
// prune, in one batch; elements missing or held by another owner are
// skipped. Otherwise only their keys are looked up.
//
// Equivalent to: nft get element bridge knit senders4 { "veth0a1b2c3" .
// 10.99.0.2 } (for its owner); nft delete element bridge knit senders4 {
// "veth0a1b2c3" . 10.99.0.2 }; the same for guarded4 { 10.99.0.2 }
func (f *Firewall) RemoveSources(owner string, srcs []firewall.Source, addrs []netip.Addr) error {
	want, err := releaseElems(owner, srcs, addrs)
	if err != nil {
		return err
	}
	if err := f.elemsRemove(owner, want, srcs == nil && addrs == nil, sourceSets); err != nil {
		return fmt.Errorf("release sources of %s: %w", owner, err)
	}
	return nil
}

// AddPortsAndSources is AddPorts and AddSources in one batch, for a
// container just set up: its pairs name its own new ports, so they are
// added without a lookup (a pair in place is left as it is).
//
// Equivalent to: the add element commands of both, in one nft -f
func (f *Firewall) AddPortsAndSources(owner string, ports []firewall.PortMapping, srcs []firewall.Source) error {
	pe, err := portElems(owner, ports)
	if err != nil {
		return err
	}
	se, err := sourceElems(owner, srcs, true)
	if err != nil {
		return err
	}
	for i := range se {
		se[i].fresh = se[i].set == setSenders4 || se[i].set == setSenders6
	}
	if err := f.elemsEnsure(append(pe, se...)); err != nil {
		return fmt.Errorf("publish ports and claim sources of %s: %w", owner, err)
	}
	return nil
}

// RemovePortsAndSources is RemovePorts and RemoveSources of the keys
// given, in one batch.
//
// Equivalent to: the delete element commands of both, in one nft -f
func (f *Firewall) RemovePortsAndSources(owner string, ports []firewall.PortMapping, srcs []firewall.Source, addrs []netip.Addr) error {
	pe, err := portElems(owner, ports)
	if err != nil {
		return err
	}
	se, err := releaseElems(owner, srcs, addrs)
	if err != nil {
		return err
	}
	if err := f.elemsRemove(owner, append(pe, se...), false, nil); err != nil {
		return fmt.Errorf("unpublish ports and release sources of %s: %w", owner, err)
	}
	return nil
}

// SourceOwners returns the owners of source set elements, sorted.
//
// Equivalent to: nft list table bridge knit | grep -o 'knit:owner=[^"]*'
func (f *Firewall) SourceOwners() ([]string, error) {
	cur, err := f.read()
	if err != nil {
		return nil, err
	}
	return cur.owners(sourceSets), nil
}

// sourceElems validates the sources and turns them into set elements:
// each pair, and with claims a claim on each address, once per distinct
// key.
func sourceElems(owner string, srcs []firewall.Source, claims bool) ([]ownedElem, error) {
	if err := firewall.ValidateOwner(owner); err != nil {
		return nil, err
	}
	var out []ownedElem
	add := func(e ownedElem) {
		if !slices.ContainsFunc(out, func(o ownedElem) bool { return o.set == e.set && string(o.Key) == string(e.Key) }) {
			out = append(out, e)
		}
	}
	for _, s := range srcs {
		if err := s.Validate(); err != nil {
			return nil, err
		}
		if claims {
			add(guardedElem(owner, s.Addr))
		}
		senders := setSenders4
		if s.Addr.Is6() {
			senders = setSenders6
		}
		add(ownedElem{set: senders, SetElement: nft.SetElement{Key: append(ifnameKey(s.Port), s.Addr.AsSlice()...), Comment: ownerTag(owner)}})
	}
	return out, nil
}

// releaseElems are the elements of owner's sources srcs (their pairs)
// and of its claims on addrs.
func releaseElems(owner string, srcs []firewall.Source, addrs []netip.Addr) ([]ownedElem, error) {
	out, err := sourceElems(owner, srcs, false)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if err := firewall.ValidateClaim(a); err != nil {
			return nil, err
		}
		out = append(out, guardedElem(owner, a))
	}
	return out, nil
}

// guardedElem is owner's claim on addr.
func guardedElem(owner string, addr netip.Addr) ownedElem {
	set := setGuarded4
	if addr.Is6() {
		set = setGuarded6
	}
	return ownedElem{set: set, SetElement: nft.SetElement{Key: addr.AsSlice(), Comment: ownerTag(owner)}}
}

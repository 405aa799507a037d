package nftables

import (
	"fmt"
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
// another port claims: IPv4 and IPv6 packets by their source, ARP by its
// sender address (which would poison the host's and the neighbours'
// caches with the forger's MAC, and take the replies). The group comes
// first: frames of other ports leave the chain at once. An address no
// port claims passes.
//
//	iifgroup 1802398068 ip saddr @guarded4 iifname . ip saddr != @senders4 drop comment "knit:base"
//	iifgroup 1802398068 ip6 saddr @guarded6 iifname . ip6 saddr != @senders6 drop comment "knit:base"
//	iifgroup 1802398068 arp saddr ip @guarded4 iifname . arp saddr ip != @senders4 drop comment "knit:base"
func sourceGuardRules() []*nft.Rule {
	group := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFGROUP, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(firewall.PortGroup)},
	}
	// The dependency of each, as nft writes it: meta protocol for ip and
	// ip6, the ether type for arp.
	proto := func(p uint16) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
		}
	}
	ether := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(unix.ETH_P_ARP)},
	}
	guard := func(dep []expr.Any, offset, size uint32, guarded, senders string) *nft.Rule {
		return tagged(sourceGuardChain, tagBase, group, dep, []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
			&expr.Lookup{SourceRegister: 1, SetName: guarded},
			// The key: the port's name fills register 1, the address
			// follows in register 2.
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
			&expr.Lookup{SourceRegister: 1, SetName: senders, Invert: true},
		}, verdict(expr.VerdictDrop))
	}
	return []*nft.Rule{
		guard(proto(unix.ETH_P_IP), 12, 4, setGuarded4, setSenders4),
		guard(proto(unix.ETH_P_IPV6), 8, 16, setGuarded6, setSenders6),
		guard(ether, 14, 4, setGuarded4, setSenders4), // the ARP sender's protocol address
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
	want, err := sourceElems(owner, srcs)
	if err != nil {
		return err
	}
	if err := f.elemsEnsure(want); err != nil {
		return fmt.Errorf("claim sources of %s: %w", owner, err)
	}
	return nil
}

// RemoveSources deletes owner's elements for srcs (every one of owner's
// when srcs is nil, for a prune), in one batch; elements missing or held
// by another owner are skipped. With srcs given, only their keys are
// looked up.
//
// Equivalent to: nft get element bridge knit guarded4 { 10.99.0.2 } (for
// its owner); nft delete element bridge knit guarded4 { 10.99.0.2 } (and
// its pair in senders4)
func (f *Firewall) RemoveSources(owner string, srcs []firewall.Source) error {
	want, err := sourceElems(owner, srcs)
	if err != nil {
		return err
	}
	if err := f.elemsRemove(owner, want, srcs == nil, sourceSets); err != nil {
		return fmt.Errorf("release sources of %s: %w", owner, err)
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

// sourceElems validates the sources and turns them into set elements: a
// guarded address and its sender pair each, once per distinct key.
func sourceElems(owner string, srcs []firewall.Source) ([]ownedElem, error) {
	if err := firewall.ValidateOwner(owner); err != nil {
		return nil, err
	}
	var out []ownedElem
	add := func(set string, key []byte) {
		if !slices.ContainsFunc(out, func(o ownedElem) bool { return o.set == set && string(o.Key) == string(key) }) {
			out = append(out, ownedElem{set: set, SetElement: nft.SetElement{Key: key, Comment: ownerTag(owner)}})
		}
	}
	for _, s := range srcs {
		if err := s.Validate(); err != nil {
			return nil, err
		}
		guarded, senders := setGuarded4, setSenders4
		if s.Addr.Is6() {
			guarded, senders = setGuarded6, setSenders6
		}
		add(guarded, s.Addr.AsSlice())
		add(senders, append(ifnameKey(s.Port), s.Addr.AsSlice()...))
	}
	return out, nil
}

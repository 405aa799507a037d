package nftables

import (
	"fmt"
	"slices"
	"sync"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/firewall"
)

// What every knit table holds whatever its networks: the chains besides
// postrouting and forward, the sets and maps, and the shared ("knit:base")
// rules that look them up.
const (
	chainPrerouting = "prerouting"
	chainOutput     = "output"
	chainUser       = "knit-user"

	setBridges = "bridges" // ifname: every knit bridge, for isolation
	mapPub4Any = "pub4any" // inet_proto . inet_service : ipv4_addr . inet_service
	mapPub4IP  = "pub4ip"  // ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
	mapPub6Any = "pub6any"
	mapPub6IP  = "pub6ip"
)

var (
	preroutingChain = &nft.Chain{
		Name: chainPrerouting, Table: table, Type: nft.ChainTypeNAT,
		Hooknum: nft.ChainHookPrerouting, Priority: nft.ChainPriorityNATDest,
		Policy: &policyAccept,
	}
	// Connections the host itself makes to a published port are
	// destination-NATed on their way out.
	outputChain = &nft.Chain{
		Name: chainOutput, Table: table, Type: nft.ChainTypeNAT,
		Hooknum: nft.ChainHookOutput, Priority: nft.ChainPriorityNATDest,
		Policy: &policyAccept,
	}
	// userChain belongs to the administrator: knit creates it when missing
	// and jumps to it first thing in forward, and never writes to it again.
	userChain = &nft.Chain{Name: chainUser, Table: table}
)

// mapDef describes one port map: the IP family of its addresses and
// whether its key starts with the host address.
type mapDef struct {
	name   string
	v6     bool
	byHost bool
}

var pubMaps = []mapDef{
	{mapPub4IP, false, true}, {mapPub6IP, true, true},
	{mapPub4Any, false, false}, {mapPub6Any, true, false},
}

func (d mapDef) addrType() nft.SetDatatype {
	if d.v6 {
		return nft.TypeIP6Addr
	}
	return nft.TypeIPAddr
}

// set returns a fresh description of the map; fresh because AddSet assigns
// it a batch-local ID.
//
//	map pub4ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
func (d mapDef) set() *nft.Set {
	key := []nft.SetDatatype{nft.TypeInetProto, nft.TypeInetService}
	if d.byHost {
		key = append([]nft.SetDatatype{d.addrType()}, key...)
	}
	return &nft.Set{
		Table: table, Name: d.name, IsMap: true, Concatenation: true,
		KeyType:  nft.MustConcatSetType(key...),
		DataType: nft.MustConcatSetType(d.addrType(), nft.TypeInetService),
	}
}

// addrPortSet describes a set keyed by addrs addresses of one family, a
// protocol and a port: the link sets (source . destination) and the open
// sets (destination).
type addrPortSet struct {
	name  string
	v6    bool
	addrs int
}

// set returns a fresh description of the set (fresh because AddSet
// assigns it a batch-local ID).
//
//	set links4 { type ipv4_addr . ipv4_addr . inet_proto . inet_service; }
//	set open4 { type ipv4_addr . inet_proto . inet_service; }
func (d addrPortSet) set() *nft.Set {
	addr := nft.TypeIPAddr
	if d.v6 {
		addr = nft.TypeIP6Addr
	}
	var key []nft.SetDatatype
	for range d.addrs {
		key = append(key, addr)
	}
	return &nft.Set{
		Table: table, Name: d.name, Concatenation: true,
		KeyType: nft.MustConcatSetType(append(key, nft.TypeInetProto, nft.TypeInetService)...),
	}
}

// bridgesSet returns a fresh description of the set of knit's bridges.
//
//	set bridges { type ifname; }
func bridgesSet() *nft.Set {
	// nft reads the key's byte order from the set's userdata; a string is
	// "host" order, as nft itself declares it.
	return &nft.Set{Table: table, Name: setBridges, KeyType: nft.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
}

// wantSets returns fresh descriptions of every set and map knit needs.
func wantSets() []*nft.Set {
	sets := []*nft.Set{bridgesSet()}
	for _, d := range pubMaps {
		sets = append(sets, d.set())
	}
	for _, d := range openSets {
		sets = append(sets, d.set())
	}
	for _, d := range linkSets {
		sets = append(sets, d.set())
	}
	return append(sets, sourceSetDefs()...)
}

// baseRules returns the shared rules of each chain, in chain order. They
// sit at the head of their chain, before any network's rules.
func baseRules() map[string][]*nft.Rule {
	return map[string][]*nft.Rule{
		chainForward: slices.Concat(
			[]*nft.Rule{
				// jump knit-user
				tagged(forwardChain, tagBase, []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainUser}}),
				baseRule(),
			},
			invalidRules(),
			// Links come before every network's ICC drop.
			[]*nft.Rule{linkRule(linkSets[0]), linkRule(linkSets[1]), linkReplyRule(linkSets[0]), linkReplyRule(linkSets[1])},
		),
		chainInput:       {loopbackSourceRule(), localnetRule()},
		chainRAGuard:     raGuardRules(),
		chainSourceGuard: sourceGuardRules(),
		// A packet from outside addressed to a loopback address is never
		// DNATed (routing drops it as martian): a port published on
		// 127.0.0.1 stays reachable from the host only.
		chainPrerouting: append([]*nft.Rule{
			tagged(preroutingChain, tagBase, daddr(loopback4), verdict(expr.VerdictReturn)),
			tagged(preroutingChain, tagBase, daddr(loopback6), verdict(expr.VerdictReturn)),
			// jump dns-gateway: the embedded server's queries, before
			// the port maps.
			tagged(preroutingChain, tagBase, []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainDNSGateway}}),
		}, dnatRules(preroutingChain)...),
		// The host's own connections to [::1] are never DNATed either:
		// the kernel cannot send a ::1 source out of a bridge, so the
		// connection would hang; untouched, it is refused at once and the
		// client moves on to 127.0.0.1, which works.
		chainOutput: append([]*nft.Rule{
			tagged(outputChain, tagBase, daddr(loopback6), verdict(expr.VerdictReturn)),
		}, dnatRules(outputChain)...),
	}
}

// dnatRules look the packet up in the four port maps of c's family, the
// maps of specific host addresses first.
//
//	fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pub4ip
//	fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6ip
//	fib daddr type local dnat ip to meta l4proto . th dport map @pub4any
//	fib daddr type local dnat ip6 to meta l4proto . th dport map @pub6any
//
// Only addresses of the host's are NATed, as Docker's DOCKER chain is
// reached for LOCAL destinations only: a port published on an address the
// host does not have (any more) must not catch traffic routed through the
// host to whoever has it.
func dnatRules(c *nft.Chain) []*nft.Rule {
	var rules []*nft.Rule
	for _, d := range pubMaps {
		rules = append(rules, tagged(c, tagBase, dnatLookup(d)))
	}
	return rules
}

// reg32 names the 4-byte register w words past the start of register 1:
// concatenations are built in consecutive 4-byte registers, and
// NFT_REG32_00 (8) is the first word of the 16-byte register 1.
func reg32(w uint32) uint32 { return 8 + w }

// dnatLookup builds the map's key from register 1 on, looks it up into
// register 1, and NATs to the address and port found there.
func dnatLookup(d mapDef) []expr.Any {
	fam, words, off := byte(unix.NFPROTO_IPV4), uint32(1), uint32(16)
	if d.v6 {
		fam, words, off = unix.NFPROTO_IPV6, 4, 24
	}
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
	protoReg, portReg := uint32(1), reg32(1)
	if d.byHost {
		exprs = append(exprs, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4 * words})
		protoReg, portReg = reg32(words), reg32(words+1)
	}
	return append(exprs,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: d.name},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(fam), RegAddrMin: 1, RegProtoMin: reg32(words), Specified: true})
}

// baseEnsure queues what it takes for knit's table, chains, sets and
// shared rules to be in place: adding what exists is a no-op (and resets a
// base chain's policy to accept); the user chain is added only when
// missing; shared rules out of place are replaced at the head of their
// chain.
//
// Equivalent to: nft add table inet knit; nft add chain inet knit
// prerouting '{ type nat hook prerouting priority dstnat; policy accept; }'
// (and postrouting, output, forward); nft add chain inet knit knit-user;
// nft add map inet knit pub4any '{ type inet_proto . inet_service :
// ipv4_addr . inet_service; }' (and the others, and the sets links4 and
// links6); nft insert rule inet knit
// forward jump knit-user comment "knit:base" (and the other shared rules)
func baseEnsure(c *nft.Conn, cur ruleset) error {
	c.AddTable(table)
	c.AddTable(bridgeTable)
	for _, ch := range chains {
		if cur.chain(ch.Name) != nil {
			queueDeferred(c) // the kernel frees the chain's old state later
		}
		c.AddChain(ch)
	}
	if cur.chain(chainUser) == nil {
		c.AddChain(userChain)
	}
	for _, want := range wantSets() {
		have := cur.set(want.Name)
		if sameSetType(have, want) {
			continue
		}
		if have != nil {
			return fmt.Errorf("set %s has type %s : %s, want %s : %s (delete table inet knit to start over)",
				want.Name, have.KeyType.Name, have.DataType.Name, want.KeyType.Name, want.DataType.Name)
		}
		if err := setAdd(c, want); err != nil {
			return err
		}
	}
	for name, want := range baseRules() {
		if cur.baseInPlace(name, want) {
			continue
		}
		if err := rulesDel(c, cur.taggedIn(name, tagBase)); err != nil {
			return err
		}
		for i := len(want) - 1; i >= 0; i-- {
			c.InsertRule(want[i])
		}
	}
	return nil
}

// setIDMu guards the library's process-wide counter of batch-local set
// IDs, which AddSet increments unlocked: two Firewalls of one process may
// build batches at once.
var setIDMu sync.Mutex

// setAdd queues the creation of a set; adding one that exists (of the same
// type) is a no-op that keeps its elements.
//
// Equivalent to: nft add map inet knit NAME '{ type KEY : VALUE; }'
func setAdd(c *nft.Conn, s *nft.Set) error {
	setIDMu.Lock()
	defer setIDMu.Unlock()
	if err := c.AddSet(s, nil); err != nil {
		return fmt.Errorf("add set %s: %w", s.Name, err)
	}
	return nil
}

// bridgeElemEnsure queues what it takes for n's bridge, and only it, to be
// in the set of knit bridges, tagged with n.
//
// Equivalent to: nft add element inet knit bridges { "BR" comment "knit:net=NAME" }
func bridgeElemEnsure(c *nft.Conn, cur ruleset, n firewall.Network) error {
	tag, key := netTag(n.Name), ifnameKey(n.Bridge)
	var stale []nft.SetElement
	inPlace := false
	for _, e := range cur.elems[setBridges] {
		same := string(e.Key) == string(key)
		switch {
		case same && e.Comment == tag:
			inPlace = true
		case same || e.Comment == tag: // another network's tag, or n's old bridge
			stale = append(stale, e)
		}
	}
	if err := elemsDel(c, setBridges, stale); err != nil {
		return err
	}
	if inPlace {
		return nil
	}
	if err := c.SetAddElements(bridgesSet(), []nft.SetElement{{Key: key, Comment: tag}}); err != nil {
		return fmt.Errorf("add bridge %s to set %s: %w", n.Bridge, setBridges, err)
	}
	return nil
}

// elemsDel queues the deletion of elements (by key) from a set.
//
// Equivalent to: nft delete element inet knit SET { KEY, ... }
func elemsDel(c *nft.Conn, set string, elems []nft.SetElement) error {
	if len(elems) == 0 {
		return nil
	}
	queueDeferred(c)
	keys := make([]nft.SetElement, len(elems))
	for i, e := range elems {
		keys[i] = nft.SetElement{Key: e.Key}
	}
	if err := c.SetDeleteElements(&nft.Set{Table: setTable(set), Name: set}, keys); err != nil {
		return fmt.Errorf("delete elements of set %s: %w", set, err)
	}
	return nil
}

// ifnameKey is an interface name as a set key: zero-padded to IFNAMSIZ.
func ifnameKey(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

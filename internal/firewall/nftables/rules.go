package nftables

import (
	"net/netip"
	"slices"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/firewall"
)

// Names of knit's table and chains, and the tags in rule comments.
const (
	tableName    = "knit"
	chainNAT     = "postrouting"
	chainForward = "forward"
	chainInput   = "input"
	// chainDNSGateway is a regular chain, of the networks' rules only.
	chainDNSGateway = "dns-gateway"
	// chainRAGuard is the one chain of the bridge table (raGuardRules).
	chainRAGuard = "ra-guard"
	tagBase      = "knit:base"
	tagNetPrefix = "knit:net="
)

var (
	table = &nft.Table{Name: tableName, Family: nft.TableFamilyINet}
	// bridgeTable holds what must see frames a bridge switches between its
	// ports, which the inet hooks see only through br_netfilter.
	bridgeTable = &nft.Table{Name: tableName, Family: nft.TableFamilyBridge}
)

// The base chains. Both accept by default: knit only ever adds matches on
// its own bridges and subnets, so the host's other traffic passes untouched
// (but for foreignRules, once knit turned forwarding on).
var (
	policyAccept = nft.ChainPolicyAccept
	natChain     = &nft.Chain{
		Name: chainNAT, Table: table, Type: nft.ChainTypeNAT,
		Hooknum: nft.ChainHookPostrouting, Priority: nft.ChainPriorityNATSource,
		Policy: &policyAccept,
	}
	forwardChain = &nft.Chain{
		Name: chainForward, Table: table, Type: nft.ChainTypeFilter,
		Hooknum: nft.ChainHookForward, Priority: nft.ChainPriorityFilter,
		Policy: &policyAccept,
	}
	// inputChain guards the host itself from its containers (see
	// localnetRule).
	inputChain = &nft.Chain{
		Name: chainInput, Table: table, Type: nft.ChainTypeFilter,
		Hooknum: nft.ChainHookInput, Priority: nft.ChainPriorityFilter,
		Policy: &policyAccept,
	}
	// dnsGatewayChain holds the networks' rules that keep DNS queries to
	// their gateway from the port maps (see dnsGatewayRules);
	// prerouting jumps to it before it looks them up.
	dnsGatewayChain = &nft.Chain{Name: chainDNSGateway, Table: table}
	// raGuardChain sees every frame that enters a bridge from a port,
	// whether the bridge forwards it to another port or delivers it to
	// the host ("filter" is -200 in the bridge family).
	raGuardChain = &nft.Chain{
		Name: chainRAGuard, Table: bridgeTable, Type: nft.ChainTypeFilter,
		Hooknum: nft.ChainHookPrerouting, Priority: nft.ChainPriorityRef(-200),
		Policy: &policyAccept,
	}
	chains = []*nft.Chain{natChain, forwardChain, preroutingChain, outputChain, inputChain, dnsGatewayChain, raGuardChain, sourceGuardChain}
)

// netTag is the comment on every rule added for the named network.
func netTag(name string) string { return tagNetPrefix + name }

// ruleTag returns the comment of r, "" if it has none.
func ruleTag(r *nft.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// tagged returns a rule of chain c made of the given expression groups and
// commented with tag.
func tagged(c *nft.Chain, tag string, groups ...[]expr.Any) *nft.Rule {
	var exprs []expr.Any
	for _, g := range groups {
		exprs = append(exprs, g...)
	}
	return &nft.Rule{
		Table: c.Table, Chain: c, Exprs: exprs,
		UserData: userdata.AppendString(nil, userdata.TypeComment, tag),
	}
}

// baseRule lets replies to connections the network rules allowed back in.
//
//	ct state established,related accept comment "knit:base"
func baseRule() *nft.Rule {
	return tagged(forwardChain, tagBase, []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			// The ct state bitmask is in host byte order.
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  make([]byte, 4),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}, verdict(expr.VerdictAccept))
}

// invalidRules drop what conntrack could not place in a connection (a
// bare FIN, RST or SYN-ACK) on its way into or out of a knit bridge. The
// network rules decide on "ct state new" and "ct status dnat", which such
// a packet has neither of, so without these it would pass them all.
//
//	iifname @bridges ct state invalid drop
//	oifname @bridges ct state invalid drop
func invalidRules() []*nft.Rule {
	var rules []*nft.Rule
	for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
		rules = append(rules, tagged(forwardChain, tagBase, ifnameIn(key, setBridges),
			ctBits(expr.CtKeySTATE, expr.CtStateBitINVALID, true), verdict(expr.VerdictDrop)))
	}
	return rules
}

// localnetRule keeps containers away from the host's loopback services.
// The bridges have route_localnet on, which the replies to the host's
// connections to a port published on 127.0.0.1 need (they come back from
// the bridge addressed to 127.0.0.1); it would also deliver a packet that
// a container addresses to 127.0.0.1 itself. Only replies pass.
//
//	iifname @bridges ip daddr 127.0.0.0/8 ct state ! established,related drop
func localnetRule() *nft.Rule {
	return tagged(inputChain, tagBase, ifnameIn(expr.MetaKeyIIFNAME, setBridges), daddr(loopback4),
		ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, false), verdict(expr.VerdictDrop))
}

// loopbackSourceRule drops what comes from a bridge to the host with a
// loopback source. route_localnet on the bridges (see localnetRule) lets
// such packets in: a container that turns route_localnet on for its own
// eth0 could otherwise send to the host's services as 127.0.0.1, which
// what trusts localhost trusts (blind: the replies stay on the host's
// loopback). The kernel does not forward them. No reply the host expects
// comes in so: a reply to its connection to a port published on 127.0.0.1
// gets its loopback source back only after the filter hooks.
//
//	iifname @bridges ip saddr 127.0.0.0/8 drop
func loopbackSourceRule() *nft.Rule {
	return tagged(inputChain, tagBase, ifnameIn(expr.MetaKeyIIFNAME, setBridges), saddr(loopback4), verdict(expr.VerdictDrop))
}

// raGuardRules drop the router advertisements and redirects that enter a
// bridge from a container's port (the host end of its veth, which the
// drivers put in interface group firewall.PortGroup; CVE-2020-13401's
// class). A new namespace accepts router advertisements, so another
// container on the bridge would take the sender for its IPv6 router: a
// default route through it and an address in its prefix, even on a network
// without IPv6, and with them every IPv6 connection to the outside. The
// host's own advertisements (on an IPv6 network), and anything else's on
// the bridge (an administrator's uplink port), pass. The group comes
// first: frames of other bridges' ports leave the chain at once.
//
//	iifgroup 1802398068 icmpv6 type nd-router-advert drop comment "knit:base"
//	iifgroup 1802398068 icmpv6 type nd-redirect drop comment "knit:base"
func raGuardRules() []*nft.Rule {
	var rules []*nft.Rule
	for _, typ := range []byte{icmpv6RouterAdvert, icmpv6Redirect} {
		rules = append(rules, tagged(raGuardChain, tagBase, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFGROUP, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(firewall.PortGroup)},
		}, metaProtocol(unix.ETH_P_IPV6), []expr.Any{
			// icmpv6's dependencies: the protocol, past a VLAN tag
			// (nft's own, the ether type, reads the tag: a tagged
			// advertisement would pass), then the layer 4 protocol.
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}},
		}, verdict(expr.VerdictDrop)))
	}
	return rules
}

// ICMPv6 message types (RFC 4861) the RA guard drops.
const (
	icmpv6RouterAdvert   = 134
	icmpv6NeighborAdvert = 136 // the source guard's (sourceGuardRules)
	icmpv6Redirect       = 137
)

// networkRules returns the rules that express n, in the order they are
// added. Each rule matches on n's bridge or subnets only, so the number of
// rules a packet meets grows with networks, never with containers. Within
// one network the drops come before the accept, and a drop of one network
// never matches what another network's accept must let through, so the
// order of networks in a chain does not matter.
func networkRules(n firewall.Network) []*nft.Rule {
	tag := netTag(n.Name)
	br := n.Bridge
	iif, oif := ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br)
	var rules []*nft.Rule
	if n.Internal {
		// iifname BR oifname != BR drop; oifname BR iifname != BR drop
		rules = append(rules,
			tagged(forwardChain, tag, iif, ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, br), verdict(expr.VerdictDrop)),
			tagged(forwardChain, tag, oif, ifname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, br), verdict(expr.VerdictDrop)),
		)
	} else {
		// iifname BR oifname != BR oifname @bridges ct status != dnat
		// drop: no network reaches another (one rule per network,
		// whatever their number), except through a published port,
		// which is the host's service to whoever reaches the host.
		// iifname BR oifname != BR oifname @bridges ct state untracked
		// drop: a packet an administrator's notrack rule left untracked
		// has no ct status (the match above fails, not the drop), and
		// would reach this network's own accept below.
		toOther := slices.Concat(iif, ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, br), ifnameIn(expr.MetaKeyOIFNAME, setBridges))
		rules = append(rules,
			tagged(forwardChain, tag, toOther, ctBits(expr.CtKeySTATUS, ctStatusDNAT, false), verdict(expr.VerdictDrop)),
			tagged(forwardChain, tag, toOther, ctBits(expr.CtKeySTATE, expr.CtStateBitUNTRACKED, true), verdict(expr.VerdictDrop)))
	}
	if !n.ICC {
		// iifname BR oifname BR ct status != dnat drop (seen here through
		// br_netfilter); a published port, the container's own included,
		// stays reachable through the host's address.
		// iifname BR oifname BR ct state untracked meta l4proto !=
		// ipv6-icmp drop: a packet that an administrator's notrack rule
		// left untracked has no ct status (the match fails, not the
		// drop); it cannot be DNATed either. ICMPv6 is left out: conntrack
		// never tracks neighbour discovery, which containers need to
		// reach each other at all (a link over IPv6).
		notICMPv6 := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		}
		rules = append(rules,
			tagged(forwardChain, tag, iif, oif, ctBits(expr.CtKeySTATUS, ctStatusDNAT, false), verdict(expr.VerdictDrop)),
			tagged(forwardChain, tag, iif, oif, ctBits(expr.CtKeySTATE, expr.CtStateBitUNTRACKED, true), notICMPv6, verdict(expr.VerdictDrop)))
	}
	if n.DNS {
		rules = append(rules, dnsGatewayRules(n, tag)...)
	}
	// iifname @bridges iifname != BR ip saddr SUBNET ct direction
	// original drop: what starts or continues a flow to the host from
	// another knit bridge with a source in this network is forged, a
	// container giving a neighbour's address: the embedded DNS server,
	// which knows containers by their address, would answer it as that
	// neighbour (and forward for it, from an internal network). A reply
	// to the host's own connection may come so (a container with two
	// networks, replying through its default route) and passes. (A
	// forged reply to the host's own flow passes too, if it guesses the
	// flow: the DNS server's upstream queries have random IDs and ports.)
	// The same with "ct state invalid,untracked": what has no direction
	// (conntrack placed it in no flow; an administrator's notrack;
	// neighbour discovery, which a container sends from its own
	// network's or a link-local address, never another network's).
	for _, p := range n.Subnets {
		from := slices.Concat(ifnameIn(expr.MetaKeyIIFNAME, setBridges), ifname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, br), saddr(p.Masked()))
		rules = append(rules,
			tagged(inputChain, tag, from, ctOriginal(), verdict(expr.VerdictDrop)),
			tagged(inputChain, tag, from, ctBits(expr.CtKeySTATE, expr.CtStateBitINVALID|expr.CtStateBitUNTRACKED, true), verdict(expr.VerdictDrop)))
	}
	if n.Internal {
		return rules
	}
	// From outside, only published ports reach the containers.
	rules = append(rules, exposureRules(n, tag)...)
	// iifname BR accept: containers may start connections out.
	rules = append(rules, tagged(forwardChain, tag, iif, verdict(expr.VerdictAccept)))
	if n.Masquerade {
		for _, p := range n.Subnets {
			if n.Routed(p.Addr()) {
				continue // the subnet is routed to this host: its addresses leave as they are
			}
			// ip saddr SUBNET oifname != BR masquerade
			rules = append(rules, tagged(natChain, tag, saddr(p.Masked()),
				ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, br), masq()))
		}
	}
	for _, p := range n.Subnets {
		// ip saddr SUBNET oifname BR ct status dnat masquerade: hairpin.
		// A container reaching a published port of its own network gets
		// the reply from the host, so it returns through the host (and a
		// container reaching its own port does not see itself as source).
		// Not "iifname BR": a DNATed packet that stays in the bridge is
		// bridged by br_netfilter, whose postrouting hook has no input
		// interface.
		rules = append(rules, tagged(natChain, tag, saddr(p.Masked()), oif,
			ctBits(expr.CtKeySTATUS, ctStatusDNAT, true), masq()))
	}
	// ip saddr 127.0.0.0/8 oifname BR masquerade: the host's connections
	// to a port published on 127.0.0.1 leave with a loopback source, which
	// the container could not answer. (The driver sets route_localnet on
	// the bridge, without which the kernel does not send them at all.)
	return append(rules, tagged(natChain, tag, saddr(loopback4), oif, masq()))
}

// ctStatusDNAT is IPS_DST_NAT, the ct status bit of a destination-NATed
// connection.
const ctStatusDNAT = 1 << 5

var (
	loopback4 = netip.MustParsePrefix("127.0.0.0/8")
	loopback6 = netip.MustParsePrefix("::1/128")
)

// ctBits matches a ct state or ct status bit set (or clear).
//
//	ct state new | ct status dnat | ct status != dnat
func ctBits(key expr.CtKey, bit uint32, set bool) []expr.Any {
	op := expr.CmpOpNeq
	if !set {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bit), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: make([]byte, 4)},
	}
}

// ctOriginal matches a packet of its flow's original direction (its
// first, and the later ones the same way).
//
//	ct direction original
func ctOriginal() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}}, // IP_CT_DIR_ORIGINAL
	}
}

// ifnameIn matches the input or output interface name against a set.
//
//	oifname @bridges
func ifnameIn(key expr.MetaKey, set string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}
}

func masq() []expr.Any { return []expr.Any{&expr.Masq{}} }

// ifname matches the input or output interface name exactly.
//
//	iifname "BR" | oifname != "BR"
func ifname(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

// saddr matches the source address against p, loading only the bytes the
// prefix covers, as nft does. The family check (meta nfproto) is what nft
// adds implicitly in an inet table.
//
//	ip saddr P | ip6 saddr P
func saddr(p netip.Prefix) []expr.Any { return addrMatch(p, false) }

// daddr matches the destination address against p.
//
//	ip daddr P | ip6 daddr P
func daddr(p netip.Prefix) []expr.Any { return addrMatch(p, true) }

func addrMatch(p netip.Prefix, dst bool) []expr.Any {
	proto := byte(unix.NFPROTO_IPV4)
	if p.Addr().Is6() {
		proto = unix.NFPROTO_IPV6
	}
	return append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}, addrPayload(p, dst)...)
}

// addrPayload matches the address against p without the family check, for
// a table of one family (ip, ip6), where nft adds none (and its listing
// fails on one).
func addrPayload(p netip.Prefix, dst bool) []expr.Any {
	offset := uint32(12)
	if p.Addr().Is6() {
		offset = 8
	}
	if dst {
		offset += uint32(p.Addr().BitLen() / 8)
	}
	n := uint32(p.Bits()+7) / 8
	exprs := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n},
	}
	if p.Bits()%8 != 0 {
		mask := make([]byte, n)
		for i := range p.Bits() {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		exprs = append(exprs, &expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n),
		})
	}
	return append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()[:n]})
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// dnsGatewayRules keep the DNS queries n's containers send to their bridge's
// own addresses, where the embedded server answers (and where 127.0.0.11
// goes), for that server: a port 53 published on every address of the
// host must not take them (a Pi-hole container's -p 53:53/udp would
// answer every container's name lookups). Accepted in the nat hook, they
// skip the port maps' DNAT.
//
//	iifname BR fib daddr . iif type local meta l4proto udp th dport 53 accept
//	iifname BR fib daddr . iif type local meta l4proto tcp th dport 53 accept
func dnsGatewayRules(n firewall.Network, tag string) []*nft.Rule {
	var rules []*nft.Rule
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rules = append(rules, tagged(dnsGatewayChain, tag, ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, n.Bridge), []expr.Any{
			&expr.Fib{Register: 1, FlagDADDR: true, FlagIIF: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
		}, verdict(expr.VerdictAccept)))
	}
	return rules
}

// foreignDropTag is the comment of the family's jump to the
// foreign-forward chain (DropForeignForwarding).
func foreignDropTag(v6 bool) string {
	if v6 {
		return "knit:foreign-forward-drop6"
	}
	return "knit:foreign-forward-drop4"
}

// chainForeign holds the rules DropForeignForwarding's jumps lead to;
// tagForeign tags them.
const (
	chainForeign = "foreign-forward"
	tagForeign   = "knit:foreign-forward"
)

var foreignChain = &nft.Chain{Name: chainForeign, Table: table}

// foreignJumpRule sends the family's forwarded packets to foreign-forward.
// Where it sits in the forward chain does not matter: what that chain
// drops never touches a knit bridge, which every network rule names. The
// administrator's chain, jumped to first, can accept what should pass.
//
//	meta nfproto ipv4 jump foreign-forward comment "knit:foreign-forward-drop4"
func foreignJumpRule(v6 bool) *nft.Rule {
	proto := byte(unix.NFPROTO_IPV4)
	if v6 {
		proto = unix.NFPROTO_IPV6
	}
	return tagged(forwardChain, foreignDropTag(v6), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: chainForeign},
	})
}

// The kernel's NFT_META_IIFKIND and NFT_META_OIFKIND (Linux 5.2), which the
// library does not name: the interface's link kind, "bridge" for a bridge.
// A device without one (a physical NIC) fails the load, and the rule with it.
const (
	metaKeyIIFKIND expr.MetaKey = 26
	metaKeyOIFKIND expr.MetaKey = 27
)

// foreignRules drop what the host forwards between interfaces none of
// which is a bridge: knit turned forwarding on, on a host that forwarded
// nothing, and must not make it a router between its network interfaces
// (a LAN reaching a VPN through it; dockerd's FORWARD policy DROP does
// that job under iptables). Whatever enters or leaves through a bridge
// passes here: knit's own are its networks' rules' to judge, and other
// software's (libvirt's virbr0, LXD's, Docker's, a CNI's cni0; virtual
// machines on an administrator's br0, whose frames br_netfilter shows to
// this hook) are theirs, which a drop in knit's table would override
// (an accept elsewhere does not undo it). A host whose uplink is a bridge
// keeps less of this protection.
//
//	meta iifkind "bridge" return
//	meta oifkind "bridge" return
//	drop
func foreignRules() []*nft.Rule {
	kind := func(key expr.MetaKey) []expr.Any {
		data := make([]byte, unix.IFNAMSIZ)
		copy(data, "bridge")
		return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data}}
	}
	return []*nft.Rule{
		tagged(foreignChain, tagForeign, kind(metaKeyIIFKIND), verdict(expr.VerdictReturn)),
		tagged(foreignChain, tagForeign, kind(metaKeyOIFKIND), verdict(expr.VerdictReturn)),
		tagged(foreignChain, tagForeign, verdict(expr.VerdictDrop)), // knit's bridges are bridges: returned above
	}
}

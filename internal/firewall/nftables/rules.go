package nftables

import (
	"net/netip"

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
	tagBase      = "knit:base"
	tagNetPrefix = "knit:net="
)

var table = &nft.Table{Name: tableName, Family: nft.TableFamilyINet}

// The base chains. Both accept by default: knit only ever adds matches on
// its own bridges and subnets, so the host's other traffic passes untouched.
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
	chains = []*nft.Chain{natChain, forwardChain}
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
		Table: table, Chain: c, Exprs: exprs,
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

// networkRules returns the rules that express n, in the order they are
// added. Each rule matches on n's bridge or subnets only, so the number of
// rules a packet meets grows with networks, never with containers.
func networkRules(n firewall.Network) []*nft.Rule {
	tag := netTag(n.Name)
	var rules []*nft.Rule
	if n.Internal {
		// iifname BR oifname != BR drop; oifname BR iifname != BR drop
		rules = append(rules,
			tagged(forwardChain, tag, ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, n.Bridge),
				ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, n.Bridge), verdict(expr.VerdictDrop)),
			tagged(forwardChain, tag, ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, n.Bridge),
				ifname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, n.Bridge), verdict(expr.VerdictDrop)),
		)
		return rules
	}
	// iifname BR accept: containers may start connections out.
	rules = append(rules, tagged(forwardChain, tag,
		ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, n.Bridge), verdict(expr.VerdictAccept)))
	if n.Masquerade {
		for _, p := range n.Subnets {
			// ip saddr SUBNET oifname != BR masquerade
			rules = append(rules, tagged(natChain, tag, saddr(p.Masked()),
				ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, n.Bridge), []expr.Any{&expr.Masq{}}))
		}
	}
	return rules
}

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
func saddr(p netip.Prefix) []expr.Any {
	proto, offset := byte(unix.NFPROTO_IPV4), uint32(12)
	if p.Addr().Is6() {
		proto, offset = unix.NFPROTO_IPV6, 8
	}
	n := uint32(p.Bits()+7) / 8
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
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

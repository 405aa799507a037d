package nftables

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// render prints the ruleset as `nft list table inet knit` followed by `nft
// list table bridge knit` do, so that tests can compare the two; a missing
// table prints nothing.
func (s ruleset) render() string {
	var b strings.Builder
	for _, t := range []*nft.Table{table, bridgeTable} {
		var chains []*nft.Chain
		for _, ch := range s.chains {
			if ch.Table.Family == t.Family {
				chains = append(chains, ch)
			}
		}
		if len(chains) == 0 {
			continue
		}
		fmt.Fprintf(&b, "table %s %s {\n", map[nft.TableFamily]string{nft.TableFamilyINet: "inet", nft.TableFamilyBridge: "bridge"}[t.Family], tableName)
		for _, set := range s.sets {
			if set.Table.Family == t.Family {
				b.WriteString(renderSet(set, s.elems[set.Name]))
				b.WriteString("\n")
			}
		}
		for i, ch := range chains {
			if i > 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "\tchain %s {\n", ch.Name)
			if ch.Hooknum != nil {
				fmt.Fprintf(&b, "\t\t%s\n", chainHeader(ch))
			}
			for _, r := range s.rules[ch.Name] {
				fmt.Fprintf(&b, "\t\t%s\n", renderRule(r))
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// chainHeader renders a base chain's type, hook, priority and policy.
func chainHeader(ch *nft.Chain) string {
	hooks := map[nft.ChainHook]string{
		unix.NF_INET_PRE_ROUTING: "prerouting", unix.NF_INET_LOCAL_IN: "input",
		unix.NF_INET_FORWARD: "forward", unix.NF_INET_LOCAL_OUT: "output",
		unix.NF_INET_POST_ROUTING: "postrouting",
	}
	prio := "0"
	if ch.Priority != nil {
		prio = priorityName(ch.Table.Family, *ch.Hooknum, *ch.Priority)
	}
	policy := "accept"
	if ch.Policy != nil && *ch.Policy == nft.ChainPolicyDrop {
		policy = "drop"
	}
	return fmt.Sprintf("type %s hook %s priority %s; policy %s;", ch.Type, hooks[*ch.Hooknum], prio, policy)
}

// priorityName names a priority as nft does: dstnat and srcnat only on the
// hooks where nft defines them; the bridge family has names of its own.
func priorityName(family nft.TableFamily, hook nft.ChainHook, p nft.ChainPriority) string {
	names := map[nft.ChainPriority]string{
		-300: "raw", -150: "mangle", 0: "filter", 50: "security",
	}
	switch {
	case family == nft.TableFamilyBridge:
		names = map[nft.ChainPriority]string{-300: "dstnat", -200: "filter", 100: "out", 300: "srcnat"}
	case p == -100 && hook == *nft.ChainHookPrerouting:
		return "dstnat"
	case p == 100 && hook == *nft.ChainHookPostrouting:
		return "srcnat"
	}
	if name, ok := names[p]; ok {
		return name
	}
	return fmt.Sprint(int32(p))
}

// operand is what an expression loaded into a register.
type operand struct {
	what expr.Any // *expr.Meta, *expr.Payload, *expr.Ct, *expr.Fib or *expr.Lookup
	mask []byte   // from a bitwise on the register, nil if none
	key  string   // for a map lookup: its key and map, "KEY map @SET"
}

// renderRule prints one rule in nft's syntax. It understands the
// expressions knit writes; anything else is shown as [TYPE], so that a
// foreign or tampered rule stands out rather than hides.
func renderRule(r *nft.Rule) string {
	var words, loads []string // loads: what was loaded since the last match, in order
	regs := map[uint32]operand{}
	proto := byte(0) // the family a preceding meta nfproto matched
	for i, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta, *expr.Payload, *expr.Ct, *expr.Fib:
			reg := loadReg(e)
			regs[reg] = operand{what: e}
			loads = append(loads, loadName(e, proto))
		case *expr.Bitwise:
			op := regs[e.SourceRegister]
			op.mask = e.Mask
			regs[e.DestRegister] = op
		case *expr.Cmp:
			loads = nil
			op := regs[e.Register]
			if m, ok := op.what.(*expr.Meta); ok && m.Key == expr.MetaKeyNFPROTO && len(e.Data) == 1 {
				proto = e.Data[0]
				// nft leaves out the family check that a later payload
				// match of the network header implies.
				if e.Op == expr.CmpOpEq && slices.ContainsFunc(r.Exprs[i+1:], isNetworkPayload) {
					continue
				}
			}
			// In the bridge family the family check is meta protocol;
			// nft leaves it out when a later payload match of the
			// network or transport header implies it. (The ether type,
			// which an older knit's RA guard checked, is printed: its
			// rules must not look like the ones that replace them.)
			if fam, ok := bridgeFamily(op, e); ok {
				proto = fam
				rest := r.Exprs[i+1:]
				if slices.ContainsFunc(rest, isNetworkPayload) || fam == unix.NFPROTO_IPV6 && matchesICMPv6(rest) {
					continue
				}
			}
			words = append(words, renderCmp(op, e, proto))
			// nft folds a protocol match into the port match after it:
			// "meta l4proto udp th dport 53" is "udp dport 53".
			if n := len(words); n >= 2 && strings.HasPrefix(words[n-1], "th dport ") {
				if l4, ok := strings.CutPrefix(words[n-2], "meta l4proto "); ok && !strings.HasPrefix(l4, "!=") {
					words = append(words[:n-2], l4+strings.TrimPrefix(words[n-1], "th"))
				}
			}
			// and the protocol into an icmpv6 type match.
			if n := len(words); n >= 2 && strings.HasPrefix(words[n-1], "icmpv6 type ") && words[n-2] == "meta l4proto ipv6-icmp" {
				words = append(words[:n-2], words[n-1])
			}
		case *expr.Lookup:
			key := strings.Join(loads, " . ")
			loads = nil
			if e.IsDestRegSet {
				regs[e.DestRegister] = operand{what: e, key: key + " map @" + e.SetName}
				continue
			}
			words = append(words, fmt.Sprintf("%s %s@%s", key, map[bool]string{true: "!= "}[e.Invert], e.SetName))
		case *expr.NAT:
			words = append(words, renderNAT(e, regs))
		case *expr.Masq:
			words = append(words, "masquerade")
		case *expr.Verdict:
			words = append(words, renderVerdict(e))
		default:
			words = append(words, fmt.Sprintf("[%T]", e))
		}
	}
	if tag := ruleTag(r); tag != "" {
		words = append(words, fmt.Sprintf("comment %q", tag))
	}
	return strings.Join(words, " ")
}

// renderNAT prints a dnat to the address and port a map lookup found;
// other NATs knit does not write, so they are shown raw.
func renderNAT(e *expr.NAT, regs map[uint32]operand) string {
	fam := map[uint32]string{unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6"}[e.Family]
	op := regs[e.RegAddrMin]
	if e.Type != expr.NATTypeDestNAT || op.key == "" || fam == "" {
		return fmt.Sprintf("[nat %+v]", *e)
	}
	return fmt.Sprintf("dnat %s to %s", fam, op.key)
}

// loadReg is the register a load expression writes.
func loadReg(e expr.Any) uint32 {
	switch e := e.(type) {
	case *expr.Meta:
		return e.Register
	case *expr.Payload:
		return e.DestRegister
	case *expr.Ct:
		return e.Register
	case *expr.Fib:
		return e.Register
	}
	return 0
}

// loadName names what a load expression loads when it is part of a
// concatenated key ("ip daddr", "meta l4proto", "th dport", "oifname").
func loadName(e expr.Any, proto byte) string {
	switch e := e.(type) {
	case *expr.Meta:
		names := map[expr.MetaKey]string{expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname",
			expr.MetaKeyL4PROTO: "meta l4proto", expr.MetaKeyNFPROTO: "meta nfproto"}
		if n, ok := names[e.Key]; ok {
			return n
		}
	case *expr.Payload:
		if e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2 {
			return "th dport"
		}
		if e.Base == expr.PayloadBaseTransportHeader && e.Offset == 0 && e.Len == 2 {
			return "th sport"
		}
		if e.Base == expr.PayloadBaseTransportHeader { // as nft prints a raw one
			return fmt.Sprintf("@th,%d,%d", 8*e.Offset, 8*e.Len)
		}
		if s, ok := renderAddrMatch(e, nil, make([]byte, e.Len), proto); ok {
			return s[0]
		}
	}
	return fmt.Sprintf("[%T]", e)
}

// bridgeFamily reports the family that an equality with meta protocol
// checks: NFPROTO_IPV4, NFPROTO_IPV6 or NFPROTO_ARP.
func bridgeFamily(op operand, c *expr.Cmp) (byte, bool) {
	if c.Op != expr.CmpOpEq || len(c.Data) != 2 || op.mask != nil {
		return 0, false
	}
	if m, ok := op.what.(*expr.Meta); !ok || m.Key != expr.MetaKeyPROTOCOL {
		return 0, false
	}
	fam, ok := map[uint16]byte{unix.ETH_P_IP: unix.NFPROTO_IPV4, unix.ETH_P_IPV6: unix.NFPROTO_IPV6, unix.ETH_P_ARP: unix.NFPROTO_ARP}[binary.BigEndian.Uint16(c.Data)]
	return fam, ok
}

// matchesICMPv6 reports whether exprs compare the layer 4 protocol with
// ICMPv6 (whose header an icmpv6 match then reads).
func matchesICMPv6(exprs []expr.Any) bool {
	for i := 0; i+1 < len(exprs); i++ {
		m, ok := exprs[i].(*expr.Meta)
		c, isCmp := exprs[i+1].(*expr.Cmp)
		if ok && m.Key == expr.MetaKeyL4PROTO && isCmp && c.Op == expr.CmpOpEq && string(c.Data) == string([]byte{unix.IPPROTO_ICMPV6}) {
			return true
		}
	}
	return false
}

func isNetworkPayload(e expr.Any) bool {
	p, ok := e.(*expr.Payload)
	return ok && p.Base == expr.PayloadBaseNetworkHeader
}

func isTransportPayload(e expr.Any) bool {
	p, ok := e.(*expr.Payload)
	return ok && p.Base == expr.PayloadBaseTransportHeader
}

// icmpv6Types are the names nft gives the ICMPv6 types knit's rules match.
var icmpv6Types = map[byte]string{icmpv6RouterAdvert: "nd-router-advert", icmpv6NeighborAdvert: "nd-neighbor-advert", icmpv6Redirect: "nd-redirect"}

// etherTypes are the names nft gives the ether types knit's rules match.
var etherTypes = map[uint16]string{unix.ETH_P_IP: "ip", unix.ETH_P_IPV6: "ip6", unix.ETH_P_ARP: "arp",
	unix.ETH_P_8021Q: "8021q", unix.ETH_P_8021AD: "8021ad"}

// protoNames are the names nft gives the layer 4 protocols knit's rules
// compare with.
var protoNames = map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_SCTP: "sctp", unix.IPPROTO_ICMP: "icmp", unix.IPPROTO_ICMPV6: "ipv6-icmp"}

// renderCmp prints a comparison of a loaded operand with data.
func renderCmp(op operand, c *expr.Cmp, proto byte) string {
	ops := map[expr.CmpOp]string{
		expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ",
		expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= ",
	}
	rel := ops[c.Op]
	switch w := op.what.(type) {
	case *expr.Meta:
		switch w.Key {
		case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
			name := "iifname"
			if w.Key == expr.MetaKeyOIFNAME {
				name = "oifname"
			}
			return fmt.Sprintf("%s %s%q", name, rel, strings.TrimRight(string(c.Data), "\x00"))
		case metaKeyIIFKIND, metaKeyOIFKIND:
			name := "meta iifkind"
			if w.Key == metaKeyOIFKIND {
				name = "meta oifkind"
			}
			return fmt.Sprintf("%s %s%q", name, rel, strings.TrimRight(string(c.Data), "\x00"))
		case expr.MetaKeyIIFGROUP:
			if len(c.Data) == 4 {
				return fmt.Sprintf("iifgroup %s%d", rel, binaryutil.NativeEndian.Uint32(c.Data))
			}
		case expr.MetaKeyNFPROTO:
			fam := map[byte]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}[c.Data[0]]
			return fmt.Sprintf("meta nfproto %s%s", rel, fam)
		case expr.MetaKeyL4PROTO:
			if name, ok := protoNames[c.Data[0]]; ok && len(c.Data) == 1 {
				return fmt.Sprintf("meta l4proto %s%s", rel, name)
			}
		case expr.MetaKeyPROTOCOL:
			if name, ok := etherTypes[binary.BigEndian.Uint16(c.Data)]; ok && len(c.Data) == 2 {
				return fmt.Sprintf("meta protocol %s%s", rel, name)
			}
		}
	case *expr.Payload:
		if w.Base == expr.PayloadBaseTransportHeader && w.Offset == 2 && w.Len == 2 && len(c.Data) == 2 && op.mask == nil {
			return fmt.Sprintf("th dport %s%d", rel, binary.BigEndian.Uint16(c.Data))
		}
		if w.Base == expr.PayloadBaseTransportHeader && w.Offset == 0 && w.Len == 1 && len(c.Data) == 1 && op.mask == nil {
			// knit matches the first byte only for icmpv6 (raGuardRules)
			if name, ok := icmpv6Types[c.Data[0]]; ok {
				return fmt.Sprintf("icmpv6 type %s%s", rel, name)
			}
			return fmt.Sprintf("icmpv6 type %s%d", rel, c.Data[0])
		}
		if w.Base == expr.PayloadBaseLLHeader && w.Offset == 12 && w.Len == 2 && len(c.Data) == 2 && op.mask == nil {
			if t := binary.BigEndian.Uint16(c.Data); t == unix.ETH_P_IPV6 {
				return "ether type " + rel + "ip6"
			}
		}
		if s, ok := renderAddrMatch(w, op.mask, c.Data, proto); ok {
			return fmt.Sprintf("%s %s%s", s[0], rel, s[1])
		}
	case *expr.Ct:
		if w.Key == expr.CtKeyDIRECTION && len(c.Data) == 1 && op.mask == nil && c.Data[0] < 2 {
			return "ct direction " + rel + []string{"original", "reply"}[c.Data[0]]
		}
		if len(op.mask) == 4 && allZero(c.Data) && (c.Op == expr.CmpOpNeq || c.Op == expr.CmpOpEq) {
			mask := binaryutil.NativeEndian.Uint32(op.mask)
			not := map[bool]string{true: "! "}[c.Op == expr.CmpOpEq] // as nft 1.0 prints it
			switch w.Key {
			case expr.CtKeySTATE:
				return "ct state " + not + ctStates(mask)
			case expr.CtKeySTATUS:
				return "ct status " + not + ctStatuses(mask)
			}
		}
	case *expr.Fib:
		if w.FlagDADDR && w.ResultADDRTYPE && len(c.Data) == 4 {
			iif := map[bool]string{true: " . iif"}[w.FlagIIF]
			types := map[uint32]string{unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local",
				unix.RTN_BROADCAST: "broadcast", unix.RTN_MULTICAST: "multicast"}
			if t, ok := types[binaryutil.NativeEndian.Uint32(c.Data)]; ok {
				return fmt.Sprintf("fib daddr%s type %s%s", iif, rel, t)
			}
		}
		if w.FlagSADDR && w.FlagIIF && w.ResultOIF && len(c.Data) == 4 {
			return fmt.Sprintf("fib saddr . iif oif %s%d", rel, binaryutil.NativeEndian.Uint32(c.Data))
		}
	}
	return fmt.Sprintf("[cmp %T %s%x]", op.what, rel, c.Data)
}

// renderAddrMatch names an address field of the network header and prints
// the (possibly masked) value compared with it.
func renderAddrMatch(p *expr.Payload, mask, data []byte, proto byte) ([2]string, bool) {
	type field struct {
		proto  byte
		offset uint32
	}
	fields := map[field]string{
		{unix.NFPROTO_IPV4, 12}: "ip saddr", {unix.NFPROTO_IPV4, 16}: "ip daddr",
		{unix.NFPROTO_IPV6, 8}: "ip6 saddr", {unix.NFPROTO_IPV6, 24}: "ip6 daddr",
		// the sender's and the target's protocol address of an ARP
		// packet over Ethernet
		{unix.NFPROTO_ARP, 14}: "arp saddr ip", {unix.NFPROTO_ARP, 24}: "arp daddr ip",
	}
	name, ok := fields[field{proto, p.Offset}]
	if !ok || p.Base != expr.PayloadBaseNetworkHeader || int(p.Len) != len(data) {
		return [2]string{}, false
	}
	full := 4
	if proto == unix.NFPROTO_IPV6 {
		full = 16
	}
	if len(data) > full {
		return [2]string{}, false
	}
	raw := make([]byte, full)
	copy(raw, data)
	addr, _ := netip.AddrFromSlice(raw)
	n := len(data) * 8
	if mask != nil {
		n = 0
		for _, m := range mask {
			n += bits.OnesCount8(m)
		}
	}
	if n == full*8 {
		return [2]string{name, addr.String()}, true
	}
	return [2]string{name, netip.PrefixFrom(addr, n).String()}, true
}

// ctStates prints a ct state bitmask as nft does, in bit order.
func ctStates(mask uint32) string {
	names := []struct {
		bit  uint32
		name string
	}{
		{expr.CtStateBitINVALID, "invalid"}, {expr.CtStateBitESTABLISHED, "established"},
		{expr.CtStateBitRELATED, "related"}, {expr.CtStateBitNEW, "new"},
		{expr.CtStateBitUNTRACKED, "untracked"},
	}
	var out []string
	for _, n := range names {
		if mask&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return strings.Join(out, ",")
}

// ctStatuses prints the ct status bits knit matches on.
func ctStatuses(mask uint32) string {
	if mask == ctStatusDNAT {
		return "dnat"
	}
	return fmt.Sprintf("0x%x", mask)
}

func renderVerdict(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	}
	return fmt.Sprintf("[verdict %d]", v.Kind)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

package nftables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/faults"
	"github.com/knit-dev/knit/internal/firewall"
)

// dnsTable is the table RedirectDNS keeps in a container's namespace.
const dnsTable = "knit-dns"

// RedirectDNS makes (or retargets) in the network namespace at nsPath the
// rules that send 127.0.0.11:53 to server:53, the embedded DNS server on
// the gateway of one of the container's networks, in one batch.
// The query leaves from the container's own address on that network
// (masquerade): the server answers clients of its networks only. The
// kernel must let loopback addresses through the container's interfaces
// for that (route_localnet, which the caller sets); a packet from outside
// addressed to a loopback address is dropped unless it is a reply, or the
// container's own rules sent it there (DNAT).
//
// Equivalent to, in the namespace: nft -f - <<< 'table ip knit-dns {
// chain output { type nat hook output priority dstnat;
// ip daddr 127.0.0.11 udp dport 53 dnat to SERVER:53;
// ip daddr 127.0.0.11 tcp dport 53 dnat to SERVER:53 }
// chain postrouting { type nat hook postrouting priority srcnat;
// oifname != "lo" ip saddr 127.0.0.0/8 masquerade }
// chain input { type filter hook input priority filter;
// iifname != "lo" ip daddr 127.0.0.0/8 ct state invalid,untracked drop;
// iifname != "lo" ip daddr 127.0.0.0/8 ct state ! established,related ct status ! dnat drop } }'
//
// A complete table that sends to server already is left as it is (no batch).
func (f *Firewall) RedirectDNS(nsPath string, server netip.Addr) error {
	if !server.Is4() {
		return fmt.Errorf("redirect DNS to %s: not an IPv4 address", server)
	}
	err := inNamespace(nsPath, func(c *nft.Conn) error {
		t := &nft.Table{Family: nft.TableFamilyIPv4, Name: dnsTable}
		out := &nft.Chain{Name: "output", Table: t, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookOutput, Priority: nft.ChainPriorityNATDest}
		if rules, err := c.GetRules(t, out); err == nil && dnatTarget(rules) == server && complete(c, t) {
			return nil
		}
		c.AddTable(t)
		c.AddChain(out)
		post := c.AddChain(&nft.Chain{Name: "postrouting", Table: t, Type: nft.ChainTypeNAT, Hooknum: nft.ChainHookPostrouting, Priority: nft.ChainPriorityNATSource})
		in := c.AddChain(&nft.Chain{Name: "input", Table: t, Type: nft.ChainTypeFilter, Hooknum: nft.ChainHookInput, Priority: nft.ChainPriorityFilter})
		c.FlushTable(t)
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			c.AddRule(&nft.Rule{Table: t, Chain: out, Exprs: slices.Concat(
				addrPayload(netip.PrefixFrom(firewall.EmbeddedDNS, 32), true),
				[]expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, 53)},
					&expr.Immediate{Register: 1, Data: server.AsSlice()},
					&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, 53)},
					&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
				})})
		}
		c.AddRule(&nft.Rule{Table: t, Chain: post, Exprs: slices.Concat(
			ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, "lo"), addrPayload(loopback4, false), masq())})
		// A packet without a conntrack entry (untracked, invalid) has no
		// ct status, which the second rule's match needs: the first drops
		// it.
		c.AddRule(&nft.Rule{Table: t, Chain: in, Exprs: slices.Concat(
			ifname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, "lo"), addrPayload(loopback4, true),
			ctBits(expr.CtKeySTATE, expr.CtStateBitINVALID|expr.CtStateBitUNTRACKED, true), verdict(expr.VerdictDrop))})
		c.AddRule(&nft.Rule{Table: t, Chain: in, Exprs: slices.Concat(
			ifname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, "lo"), addrPayload(loopback4, true),
			ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, false),
			ctBits(expr.CtKeySTATUS, ctStatusDNAT, false), verdict(expr.VerdictDrop))})
		faults.Step("nft.dns-redirect")
		return c.Flush()
	})
	if err != nil {
		return fmt.Errorf("redirect 127.0.0.11:53 to %s: %w", server, err)
	}
	return nil
}

// HasDNSRedirect says whether the namespace at nsPath has RedirectDNS's
// rules.
//
// Equivalent to, in the namespace: nft list table ip knit-dns
func (f *Firewall) HasDNSRedirect(nsPath string) (bool, error) {
	found := false
	err := inNamespace(nsPath, func(c *nft.Conn) error {
		_, err := c.ListTableOfFamily(dnsTable, nft.TableFamilyIPv4)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		found = err == nil
		return err
	})
	return found, err
}

// RemoveDNSRedirect deletes RedirectDNS's rules from the namespace at
// nsPath; none there is no error.
//
// Equivalent to, in the namespace: nft delete table ip knit-dns
func (f *Firewall) RemoveDNSRedirect(nsPath string) error {
	err := inNamespace(nsPath, func(c *nft.Conn) error {
		c.DelTable(&nft.Table{Family: nft.TableFamilyIPv4, Name: dnsTable})
		faults.Step("nft.dns-redirect")
		return c.Flush()
	})
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove the 127.0.0.11 redirect: %w", err)
	}
	return nil
}

// complete says whether the table's chains hold all their rules (the
// container's root can delete some): 2 in output, 1 in postrouting, 2 in
// input.
func complete(c *nft.Conn, t *nft.Table) bool {
	for name, want := range map[string]int{"output": 2, "postrouting": 1, "input": 2} {
		rules, err := c.GetRules(t, &nft.Chain{Name: name, Table: t})
		if err != nil || len(rules) != want {
			return false
		}
	}
	return true
}

// dnatTarget is the address the output chain's rules DNAT to.
func dnatTarget(rules []*nft.Rule) netip.Addr {
	for _, r := range rules {
		for _, e := range r.Exprs {
			if im, ok := e.(*expr.Immediate); ok && im.Register == 1 && len(im.Data) == 4 {
				a, _ := netip.AddrFromSlice(im.Data)
				return a
			}
		}
	}
	return netip.Addr{}
}

// inNamespace runs fn with a netlink connection bound to the network
// namespace at nsPath.
func inNamespace(nsPath string, fn func(*nft.Conn) error) error {
	ns, err := os.Open(nsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	c, err := nft.New(nft.AsLasting(), nft.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return fmt.Errorf("open nftables netlink: %w", err)
	}
	defer c.CloseLasting()
	return fn(c)
}

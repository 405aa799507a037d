// Package nftables is the nftables backend of firewall.Firewall.
//
// knit owns the table "inet knit" (inet nat has worked since Linux 5.2,
// so one table serves IPv4 and IPv6), which `nft list table inet knit`
// shows readably (one network n1 on br0 with ICC off, one published port,
// one link; Rules prints the same):
//
//	table inet knit {
//		set bridges {
//			type ifname
//			elements = { "br0" comment "knit:net=n1" }
//		}
//
//		map pub4ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//		map pub6ip { ... }
//		map pub4any {
//			type inet_proto . inet_service : ipv4_addr . inet_service
//			elements = { tcp . 8080 comment "knit:owner=ID" : 10.99.0.2 . 80 }
//		}
//		map pub6any { ... }
//
//		set links4 {
//			type ipv4_addr . ipv4_addr . inet_proto . inet_service
//			elements = { 10.99.0.2 . 10.99.0.3 . tcp . 80 comment "knit:owner=ID" }
//		}
//		set links6 { ... }
//
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			ip saddr 10.99.0.0/24 oifname != "br0" masquerade comment "knit:net=n1"
//			ip saddr 10.99.0.0/24 oifname "br0" ct status dnat masquerade comment "knit:net=n1"
//			ip saddr 127.0.0.0/8 oifname "br0" masquerade comment "knit:net=n1"
//		}
//
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			jump knit-user comment "knit:base"
//			ct state established,related accept comment "knit:base"
//			ip saddr . ip daddr . meta l4proto . th dport @links4 accept comment "knit:base"
//			ip6 saddr . ip6 daddr . meta l4proto . th dport @links6 accept comment "knit:base"
//			iifname "br0" oifname != "br0" oifname @bridges ct status ! dnat drop comment "knit:net=n1"
//			iifname "br0" oifname "br0" ct status ! dnat drop comment "knit:net=n1"
//			iifname != "br0" oifname "br0" ct state new ct status ! dnat drop comment "knit:net=n1"
//			iifname "br0" accept comment "knit:net=n1"
//		}
//
//		chain prerouting {
//			type nat hook prerouting priority dstnat; policy accept;
//			ip daddr 127.0.0.0/8 return comment "knit:base"
//			ip6 daddr ::1 return comment "knit:base"
//			dnat ip to ip daddr . meta l4proto . th dport map @pub4ip comment "knit:base"
//			dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6ip comment "knit:base"
//			meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @pub4any comment "knit:base"
//			meta nfproto ipv6 fib daddr type local dnat ip6 to meta l4proto . th dport map @pub6any comment "knit:base"
//		}
//
//		chain output {
//			type nat hook output priority -100; policy accept;
//			(the four dnat rules of prerouting)
//		}
//
//		chain knit-user {
//		}
//	}
//
// and a second table, "bridge knit", whose chains see the frames a bridge
// switches between its ports (the inet hooks see those only through
// br_netfilter), for the RA guard (raGuardRules) and the source guard
// (sourceGuardRules; one container claims 10.99.0.2 for its port):
//
//	table bridge knit {
//		set guarded4 {
//			type ipv4_addr
//			elements = { 10.99.0.2 comment "knit:owner=ID" }
//		}
//		set senders4 {
//			type ifname . ipv4_addr
//			elements = { "veth0a1b2c3" . 10.99.0.2 comment "knit:owner=ID" }
//		}
//		(guarded6, senders6)
//
//		chain ra-guard {
//			type filter hook prerouting priority filter; policy accept;
//			iifgroup 1802398068 icmpv6 type nd-router-advert drop comment "knit:base"
//			iifgroup 1802398068 icmpv6 type nd-redirect drop comment "knit:base"
//		}
//
//		chain source-guard {
//			type filter hook prerouting priority filter; policy accept;
//			iifgroup 1802398068 ip saddr @guarded4 iifname . ip saddr != @senders4 drop comment "knit:base"
//			(the same for ip6 saddr, arp saddr ip, a neighbour advertisement's
//			target; frames with a second VLAN tag dropped)
//		}
//	}
//
// Its chains and sets are part of the base: found missing, it is a loss
// like the inet table's. Chain and set names are unique across the two
// tables.
//
// Invariants:
//   - knit adds rules only to its own tables, whose base chains accept by
//     default: the host's other tables, and traffic not of knit's bridges,
//     subnets and published ports, are never touched; but for the chain
//     foreign-forward (DropForeignForwarding), which drops what the host
//     forwards between interfaces none of which is a bridge once knit
//     turned forwarding on ("knit:foreign-forward*" tags).
//   - Every rule and set element carries a comment: "knit:net=NAME" for a
//     network's rules and its element of @bridges, "knit:base" for the
//     shared rules, "knit:owner=ID" for a published port, a link or a claim on a source address (the
//     owner lives in the element: adding or removing a mapping or link is
//     one element operation, and Owners or LinkOwners one read). Removal
//     and repair select by tag only, so they delete exactly what was added
//     for a network or owner.
//   - Each call sends one batch (one conn.Flush): the kernel applies it
//     whole or not at all, and no packet sees a half-installed network.
//     A call that finds everything in place writes nothing.
//   - What publishing and linking read does not grow with the port
//     mappings and links of others: AddPorts, RemovePorts, AddLinks and
//     RemoveLinks of given mappings or links read the table without the
//     elements of the port maps and link sets (chains, rules, set headers,
//     bridges), and look up each of their own keys on its own (`nft get
//     element`; the maps and sets have exact keys, no intervals). So does
//     EnsureNetwork when its network is in place. The other calls (a
//     network's changes, Owners, LinkOwners, Networks, Rules, and
//     RemovePorts or RemoveLinks of all of an owner's, for a prune) read
//     every element. EnsureNetwork and the element calls skip even the
//     table read while the ruleset generation has not moved since the base
//     (and the network) were last seen up to date, by this Firewall or, with
//     WithStamp, by another process's (gen.go): a run of a command whose
//     predecessors left everything in place reads no chain, rule or set.
//   - Repair replaces a network's rules in that same batch: whatever the
//     table held for the network (none, some, duplicates, tampered ones)
//     becomes exactly the wanted rules.
//   - Per-packet work grows with the number of networks only: published
//     ports are elements of the four pub maps, looked up by a fixed set of
//     rules (hash lookups on concatenated keys), never rules of their own.
//     Networks are kept apart by one rule each against @bridges.
//   - Links (docker's --link) are elements of links4 and links6, looked up
//     by one shared rule per family placed before every network's rules:
//     an element from . to . proto . port accepts exactly those new
//     connections, whatever ICC says; replies pass as established. The
//     rule does not check bridges, so the caller links containers of one
//     network only. Removing a link stops new connections; ones already
//     established live on in conntrack, as with docker.
//   - The chain knit-user belongs to the administrator: knit creates it when
//     missing and jumps to it first in forward, and never flushes or writes
//     it, so rules there (drop or accept) win over knit's. RemoveAll, the
//     uninstall, deletes it with the table.
//   - A port published on a loopback address is reachable from the host
//     only: prerouting never DNATs a loopback destination. For the host's
//     own connections to it (and to 127.0.0.1 for any-address ports) the
//     caller must set route_localnet=1 on the bridge (the bridge driver
//     does); knit masquerades their loopback source out of the bridge.
//   - ICC=false relies on br_netfilter for traffic between ports of one
//     bridge (the bridge's own nf_call_iptables, which the driver sets on
//     such a network's bridge): without it such traffic is switched past
//     the forward hook. Hairpin to a container's own port also needs hairpin mode
//     on its bridge port (set by the driver).
//   - Calls on one Firewall are serialized. Between processes, calls for
//     different networks or owners are safe (a batch that loses a race on
//     a rule handle or element is retried); calls for the same network must
//     be serialized by the caller, or a racing pair may leave two copies
//     until the next EnsureNetwork repairs it.
package nftables

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/mdlayher/netlink"

	nft "github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/faults"
	"github.com/knit-dev/knit/internal/firewall"
)

// Firewall installs knit's rules in one network namespace.
type Firewall struct {
	nsFd int // 0: the namespace of the thread that dials
	mu   sync.Mutex
	// What was last seen up to date, and at which ruleset generation;
	// see gen.go. stamp is the file that shares it with other processes.
	stamp string
	// The loss marker (lost.go): in memory without a stamp file, and the
	// token of the file that lost last read.
	lostMem  bool
	lostSeen string
	genMu    sync.Mutex
	mem      verified
	memOK    bool
	// One socket of each kind is kept between calls (see useConn).
	connMu   sync.Mutex
	idleConn *nft.Conn
	idleElem *elemConn
	// socks are the netlink sockets of the batch connections (which the
	// library does not give back), for Linger; deferred says a batch went
	// that left the kernel work to do after a grace period.
	socks    map[*nft.Conn]*netlink.Conn
	deferred bool
}

var _ firewall.Firewall = (*Firewall)(nil)

// Option configures New.
type Option func(*Firewall)

// WithNetnsFd makes the firewall act in the network namespace open at fd
// instead of the caller's own. Its netlink sockets are opened inside it, so
// fd must stay open as long as the Firewall is used.
func WithNetnsFd(fd int) Option { return func(f *Firewall) { f.nsFd = fd } }

// New returns a Firewall. It opens no socket: each is opened on first use,
// where a kernel without nf_tables shows as an error. A command that never
// touches the firewall (ps, inspect, rm of a stopped container) then binds
// no netfilter socket, whose release at exit waits, if any process deleted
// a rule or element in the last ~15 ms, for the kernel to free it after an
// RCU grace period.
func New(opts ...Option) *Firewall {
	f := &Firewall{}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Check asks the kernel for nf_tables' generation (nfnetlink requires
// CAP_NET_ADMIN even of reads), on the socket the element lookups and the
// up-to-date checks use next: a run, which checks first, opens no other.
//
// Equivalent to: any read, such as nft list tables
func (f *Firewall) Check() error {
	err := f.useElemConn(func(ec *elemConn) error {
		_, err := ec.gen()
		return err
	})
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

// Close releases the sockets kept between calls. In a process that exits
// after its command there is no need to: the kernel closes them.
func (f *Firewall) Close() error {
	f.connMu.Lock()
	c, ec := f.idleConn, f.idleElem
	f.idleConn, f.idleElem = nil, nil
	f.connMu.Unlock()
	if c != nil {
		c.CloseLasting()
	}
	if ec != nil {
		ec.Close()
	}
	return nil
}

// useConn runs fn with a netfilter socket: the one kept from an earlier
// call, or a new one. Closing such a socket right after a batch that
// deleted anything (an unpublish) waits in the kernel for the deletion's
// RCU grace period (the release flushes nf_tables' destroy work: 4-16 ms
// here), so a socket is kept for the next call, and closed only when fn
// failed: it may hold a half-built batch or unread answers.
func (f *Firewall) useConn(fn func(c *nft.Conn) error) error {
	return useKept(&f.connMu, &f.idleConn, f.conn, func(c *nft.Conn) {
		f.connMu.Lock()
		delete(f.socks, c)
		f.connMu.Unlock()
		_ = c.CloseLasting()
	}, fn)
}

// useElemConn is useConn for the element lookup socket.
func (f *Firewall) useElemConn(fn func(ec *elemConn) error) error {
	return useKept(&f.connMu, &f.idleElem, f.elemConn, func(ec *elemConn) { _ = ec.Close() }, fn)
}

// useKept runs fn with the socket kept in *idle (taken out meanwhile, so
// concurrent calls each have their own) or a new one from open, and keeps
// it afterwards unless fn failed or another was kept meanwhile.
func useKept[S comparable](mu *sync.Mutex, idle *S, open func() (S, error), release func(S), fn func(S) error) error {
	var none S
	mu.Lock()
	s := *idle
	*idle = none
	mu.Unlock()
	if s == none {
		var err error
		if s, err = open(); err != nil {
			return err
		}
	}
	err := fn(s)
	mu.Lock()
	if err == nil && *idle == none {
		*idle, s = s, none
	}
	mu.Unlock()
	if s != none {
		release(s)
	}
	return err
}

// conn opens a netlink socket. A Conn buffers one batch, so a call uses
// one Conn at a time (useConn).
func (f *Firewall) conn() (*nft.Conn, error) {
	// The kernel acknowledges every message of a batch; the default socket
	// buffer overflows (ENOBUFS) at a few hundred elements, e.g. -p with a
	// range of 300 ports.
	var sock *netlink.Conn
	opts := []nft.ConnOption{nft.AsLasting(), nft.WithSockOptions(func(c *netlink.Conn) error {
		sock = c
		return c.SetReadBuffer(8 << 20)
	})}
	if f.nsFd != 0 {
		opts = append(opts, nft.WithNetNSFd(f.nsFd))
	}
	c, err := nft.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink: %w", err)
	}
	f.connMu.Lock()
	if f.socks == nil {
		f.socks = map[*nft.Conn]*netlink.Conn{}
	}
	f.socks[c] = sock
	f.connMu.Unlock()
	return c, nil
}

// EnsureNetwork installs or repairs n's rules and bridge element, and
// knit's table, chains, sets and shared rules, in one batch.
//
// Equivalent to: nft -f - <<< 'add table inet knit; add chain ...; add map ...;
// delete rule inet knit CHAIN handle H (each rule tagged knit:net=NAME);
// add rule inet knit forward iifname BR accept comment "knit:net=NAME";
// add rule inet knit postrouting ip saddr SUBNET oifname != BR masquerade ...;
// add element inet knit bridges { "BR" comment "knit:net=NAME" }'
func (f *Firewall) EnsureNetwork(n firewall.Network) error {
	if err := n.Validate(); err != nil {
		return err
	}
	// Every knit command ensures its network; a read that finds everything
	// in place costs a fraction of a batch, whose commit waits for the
	// kernel (~15 ms here).
	// A failed check only means a full read and repair below (and drops
	// the lookup socket, whose state is then unknown).
	upToDate := false
	_ = f.useElemConn(func(ec *elemConn) error {
		if f.networkStill(ec, n) {
			upToDate = true
			return nil
		}
		cur, g, err := f.readBaseAtGen(ec)
		if err != nil {
			return err
		}
		if cur.upToDate(n) {
			if g != nil {
				f.rememberNetwork(ec, *g, n)
			}
			upToDate = true
		}
		return nil
	})
	if upToDate {
		return nil
	}
	err := f.apply(func(c *nft.Conn, cur ruleset) error {
		if !cur.baseUpToDate() {
			f.noteLost()
		}
		if err := baseEnsure(c, cur); err != nil {
			return err
		}
		if err := rulesDel(c, cur.tagged(netTag(n.Name))); err != nil {
			return err
		}
		for _, r := range networkRules(n) {
			c.AddRule(r)
		}
		return bridgeElemEnsure(c, cur, n)
	})
	if err != nil {
		return fmt.Errorf("ensure firewall of network %s: %w", n.Name, err)
	}
	return nil
}

// EnsureNetworkReport is EnsureNetwork, and reports whether knit's base
// was found not in place (by this or any call of any process, since the
// last MarkRestored): see lost.go and firewall.Firewall. Only it reads the
// marker, whose token MarkRestored then clears: the EnsureNetwork calls of
// a restore must not take a newer loss's token for the one it restores.
func (f *Firewall) EnsureNetworkReport(n firewall.Network) (lost bool, err error) {
	if err := f.EnsureNetwork(n); err != nil {
		return false, err
	}
	return f.lost(), nil
}

// RemoveNetwork deletes every rule and element tagged with the named
// network, in one batch. A network without rules, or a missing table, is
// not an error.
//
// Equivalent to: nft delete rule inet knit CHAIN handle H (each rule tagged
// knit:net=NAME); nft delete element inet knit bridges { "BR" }
func (f *Firewall) RemoveNetwork(name string) error {
	if err := firewall.ValidateName(name); err != nil {
		return err
	}
	err := f.apply(func(c *nft.Conn, cur ruleset) error {
		if err := rulesDel(c, cur.tagged(netTag(name))); err != nil {
			return err
		}
		return elemsDel(c, setBridges, cur.taggedElems(setBridges, netTag(name)))
	})
	if err != nil {
		return fmt.Errorf("remove firewall of network %s: %w", name, err)
	}
	return nil
}

// DropForeignForwarding sends the family's forwarded packets through
// foreignRules (the chain foreign-forward, made if missing), with knit's
// base if missing; what is in place is left alone.
//
// Equivalent to: nft add chain inet knit foreign-forward; nft add rule
// inet knit foreign-forward meta iifkind "bridge" return; (the same for
// oifkind); nft add rule inet knit foreign-forward drop; nft add rule
// inet knit forward meta nfproto ipv4 jump foreign-forward comment
// "knit:foreign-forward-drop4"
func (f *Firewall) DropForeignForwarding(v6 bool) error {
	err := f.apply(func(c *nft.Conn, cur ruleset) error {
		if !cur.baseUpToDate() {
			f.noteLost()
		}
		if err := baseEnsure(c, cur); err != nil {
			return err
		}
		if cur.chain(chainForeign) == nil {
			c.AddChain(foreignChain)
		}
		if !sameRules(cur.taggedIn(chainForeign, tagForeign), foreignRules()) {
			if err := rulesDel(c, cur.taggedIn(chainForeign, tagForeign)); err != nil {
				return err
			}
			for _, r := range foreignRules() {
				c.AddRule(r)
			}
		}
		if len(cur.taggedIn(chainForward, foreignDropTag(v6))) == 0 {
			c.AddRule(foreignJumpRule(v6))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("drop forwarding between other interfaces: %w", err)
	}
	return nil
}

// sameRules reports whether have are want, in order, as rendered.
func sameRules(have, want []*nft.Rule) bool {
	return slices.EqualFunc(have, want, func(h, w *nft.Rule) bool { return renderRule(h) == renderRule(w) })
}

// AllowForeignForwarding removes the family's jump to foreign-forward.
//
// Equivalent to: nft delete rule inet knit forward handle H (the rule
// tagged knit:foreign-forward-drop4)
func (f *Firewall) AllowForeignForwarding(v6 bool) error {
	err := f.apply(func(c *nft.Conn, cur ruleset) error {
		return rulesDel(c, cur.taggedIn(chainForward, foreignDropTag(v6)))
	})
	if err != nil {
		return fmt.Errorf("allow forwarding between other interfaces: %w", err)
	}
	return nil
}

// RemoveAll deletes knit's tables with everything in them; a missing
// table is not an error. For uninstalling, and for tests.
//
// Equivalent to: nft delete table inet knit; nft delete table bridge knit
func (f *Firewall) RemoveAll() error {
	err := f.apply(func(c *nft.Conn, _ ruleset) error {
		for _, t := range []*nft.Table{table, bridgeTable} {
			c.AddTable(t) // so that the delete cannot fail on a missing table
			c.DelTable(t)
			queueDeferred(c)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove firewall table: %w", err)
	}
	return nil
}

// InputDrops names the base chains of other tables that drop by default
// what is addressed to the host ("inet filter/input"): ufw's or
// firewalld's. knit's own accepts cannot override them (a packet must pass
// every base chain), and the embedded DNS server answers containers on
// their gateway, an address of the host's.
//
// Equivalent to: nft list chains | grep 'hook input.*policy drop'
func (f *Firewall) InputDrops() ([]string, error) {
	var out []string
	err := f.useConn(func(c *nft.Conn) error {
		chains, err := c.ListChains()
		if err != nil {
			return fmt.Errorf("list nftables chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Table.Name == tableName || ch.Hooknum == nil || *ch.Hooknum != *nft.ChainHookInput ||
				ch.Policy == nil || *ch.Policy != nft.ChainPolicyDrop {
				continue
			}
			fam := map[nft.TableFamily]string{nft.TableFamilyINet: "inet", nft.TableFamilyIPv4: "ip", nft.TableFamilyIPv6: "ip6"}[ch.Table.Family]
			if fam != "" {
				out = append(out, fmt.Sprintf("%s %s/%s", fam, ch.Table.Name, ch.Name))
			}
		}
		return nil
	})
	return out, err
}

// Networks returns the names of the networks that have rules, sorted, so
// that a prune can remove those of networks that no longer exist.
//
// Equivalent to: nft list table inet knit | grep -o 'knit:net=[^"]*'
func (f *Firewall) Networks() ([]string, error) {
	cur, err := f.read()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, rules := range cur.rules {
		for _, r := range rules {
			if name, ok := strings.CutPrefix(ruleTag(r), tagNetPrefix); ok && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	for _, e := range cur.elems[setBridges] {
		if name, ok := strings.CutPrefix(e.Comment, tagNetPrefix); ok && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Rules renders knit's tables as `nft list table inet knit` and `nft list
// table bridge knit` print them; "" if there are none. For tests and
// --explain.
//
// Equivalent to: nft list table inet knit; nft list table bridge knit
func (f *Firewall) Rules() (string, error) {
	cur, err := f.read()
	if err != nil {
		return "", err
	}
	return cur.render(), nil
}

func (f *Firewall) read() (cur ruleset, err error) {
	err = f.useConn(func(c *nft.Conn) (err error) {
		cur, err = rulesetGet(c)
		return err
	})
	return cur, err
}

// readBase reads knit's table without the elements of the port maps and
// link sets, which may number thousands: what a network's up-to-date check
// looks at does not depend on them.
func (f *Firewall) readBase() (cur ruleset, err error) {
	err = f.useConn(func(c *nft.Conn) (err error) {
		cur, err = rulesetBase(c)
		return err
	})
	return cur, err
}

// readBaseAtGen is readBase, with the ruleset generation it was read at
// when the generation did not change during the read (nil otherwise).
func (f *Firewall) readBaseAtGen(ec *elemConn) (ruleset, *uint32, error) {
	before, gerr := ec.gen()
	cur, err := f.readBase()
	if err != nil || gerr != nil {
		return cur, nil, err
	}
	if after, err := ec.gen(); err != nil || after != before {
		return cur, nil, nil
	}
	return cur, &before, nil
}

// apply reads knit's table, lets build queue a batch on the same socket and
// sends it. A batch that names a rule another process deleted in between
// fails whole (ENOENT); it is then rebuilt from a fresh read.
func (f *Firewall) apply(build func(c *nft.Conn, cur ruleset) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.useConn(func(c *nft.Conn) error { return f.applyOn(c, build) })
}

func (f *Firewall) applyOn(c *nft.Conn, build func(c *nft.Conn, cur ruleset) error) error {
	defer deferring.Delete(c) // a build that failed
	for attempt := 0; ; attempt++ {
		cur, err := rulesetGet(c)
		if err != nil {
			return err
		}
		deferring.Delete(c)
		if err := build(c, cur); err != nil {
			return err
		}
		faults.Step("nft.batch")
		err = c.Flush()
		f.noteSent(c, err)
		if err == nil || attempt == 2 || !errors.Is(err, unix.ENOENT) {
			if err != nil {
				return fmt.Errorf("apply nftables batch: %w", err)
			}
			return nil
		}
	}
}

// applyElems is apply for calls on given elements, which read no more
// than they need: build reads on the call's two sockets (the batch's and
// a lookup socket), queues a batch and reports whether it has anything to
// write; trusted tells it that knit's base is up to date (gen.go). A batch
// that names an element another process deleted in between (ENOENT) or
// added with another value (EEXIST) fails whole; it is then rebuilt from
// fresh reads.
func (f *Firewall) applyElems(build func(c *nft.Conn, ec *elemConn, trusted bool) (write bool, err error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.useConn(func(c *nft.Conn) error {
		return f.useElemConn(func(ec *elemConn) error { return f.applyElemsOn(c, ec, build) })
	})
}

func (f *Firewall) applyElemsOn(c *nft.Conn, ec *elemConn, build func(c *nft.Conn, ec *elemConn, trusted bool) (write bool, err error)) error {
	defer deferring.Delete(c) // a build that failed, or wrote nothing
	for attempt := 0; ; attempt++ {
		v, trusted := f.baseStill(ec)
		deferring.Delete(c)
		write, err := build(c, ec, trusted)
		if err != nil || !write {
			return err
		}
		faults.Step("nft.elems-batch")
		err = c.Flush()
		f.noteSent(c, err)
		if err == nil {
			if trusted {
				f.advance(ec, v)
			}
			return nil
		}
		if trusted {
			f.forgetVerified()
		}
		if attempt == 2 || !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("apply nftables batch: %w", err)
		}
	}
}

// rulesDel queues the deletion of rules read back from the kernel.
//
// Equivalent to: nft delete rule inet knit CHAIN handle H
func rulesDel(c *nft.Conn, rules []*nft.Rule) error {
	if len(rules) > 0 {
		queueDeferred(c)
	}
	for _, r := range rules {
		if err := c.DelRule(r); err != nil {
			return fmt.Errorf("delete rule %d of chain %s: %w", r.Handle, r.Chain.Name, err)
		}
	}
	return nil
}

// deferring holds the connections whose queued batch leaves the kernel
// work to do after an RCU grace period (it frees what a batch deleted,
// and the old state of a chain a batch added again), which the release of
// a netfilter socket waits for. What a batch adds anew is done with at
// its commit.
var deferring sync.Map // *nft.Conn → struct{}

// queueDeferred notes that c's batch leaves work for after a grace
// period.
func queueDeferred(c *nft.Conn) { deferring.Store(c, struct{}{}) }

// noteSent records c's batch as sent (the library drops its queue
// whether the kernel took it or not): whether it left deferred work.
func (f *Firewall) noteSent(c *nft.Conn, err error) {
	if _, d := deferring.LoadAndDelete(c); d && err == nil {
		f.connMu.Lock()
		f.deferred = true
		f.connMu.Unlock()
	}
}

// lingerFor is how long Linger's holder keeps the sockets: a few RCU
// grace periods (5-15 ms each here).
const lingerFor = "0.2"

// LingerName is the holder's name (its argv[0]), for ps and for tests
// that count processes.
const LingerName = "knit-linger"

// Linger closes the kept sockets for a process about to exit, handing
// them first, when this process sent a batch that left deferred work (it
// deleted something, or added a chain in place again), to a process of
// their own that holds them a moment. The release of a netfilter socket
// waits, if any batch (of any process) left such work in the last RCU
// grace period, for the kernel to do it (5-15 ms here): a `run --rm`
// deletes its container's elements and exits at once, and its caller
// would wait that long for the exit. The holder (sleep, not waited for,
// without the caller's stdio) closes them once it is over; the elements
// are gone already. Without sleep, or without such a batch (a `run
// -d`'s, a CNI ADD's: the fork would cost more than it saves), the
// sockets close here.
func (f *Firewall) Linger() {
	f.connMu.Lock()
	c, ec, sent := f.idleConn, f.idleElem, f.deferred
	f.idleConn, f.idleElem = nil, nil
	sock := f.socks[c]
	f.connMu.Unlock()
	defer func() {
		if c != nil {
			_ = c.CloseLasting()
		}
		if ec != nil {
			_ = ec.Close()
		}
	}()
	if !sent {
		return
	}
	sleep := ""
	for _, p := range []string{"/bin/sleep", "/usr/bin/sleep"} {
		if _, err := os.Stat(p); err == nil {
			sleep = p
			break
		}
	}
	if sleep == "" {
		return
	}
	var files []*os.File
	defer func() {
		for _, file := range files {
			file.Close()
		}
	}()
	for _, s := range []*netlink.Conn{sock, ecSock(ec)} {
		if s == nil {
			continue
		}
		if file, err := dupConn(s); err == nil {
			files = append(files, file)
		}
	}
	if len(files) == 0 {
		return
	}
	cmd := exec.Command(sleep, lingerFor)
	cmd.Args[0] = LingerName
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if cmd.Start() == nil {
		_ = cmd.Process.Release()
	}
}

func ecSock(ec *elemConn) *netlink.Conn {
	if ec == nil {
		return nil
	}
	return ec.nl
}

// dupConn returns a new descriptor of the netlink socket of s.
func dupConn(s *netlink.Conn) (*os.File, error) {
	rc, err := s.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var derr error
	if err := rc.Control(func(sfd uintptr) { fd, derr = unix.FcntlInt(sfd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return os.NewFile(uintptr(fd), "netfilter"), nil
}

// Package nftables is the nftables backend of firewall.Firewall.
//
// knit owns one table, "inet knit" (inet nat has worked since Linux 5.2,
// so one table serves IPv4 and IPv6), which `nft list table inet knit`
// shows readably:
//
//	table inet knit {
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			ip saddr 10.99.0.0/24 oifname != "br0" masquerade comment "knit:net=NET"
//		}
//
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			ct state established,related accept comment "knit:base"
//			iifname "br0" accept comment "knit:net=NET"
//		}
//	}
//
// Invariants:
//   - knit adds rules only to its own table, whose base chains accept by
//     default: the host's other tables, and traffic not of knit's bridges
//     and subnets, are never touched.
//   - Every rule carries a comment: "knit:net=NAME" for a network's rules,
//     "knit:base" for the shared ones. Removal and repair select rules by
//     that tag only, so they delete exactly what was added for a network.
//   - Each call sends one batch (one conn.Flush): the kernel applies it
//     whole or not at all, and no packet sees a half-installed network.
//   - Repair replaces a network's rules in that same batch: whatever the
//     table held for the network (none, some, duplicates, tampered ones)
//     becomes exactly the wanted rules.
//   - Per-packet work grows with the number of networks only. Endpoints and
//     published ports, when added, go into sets and verdict maps looked up
//     from these chains, not into more rules.
//   - Calls on one Firewall are serialized. Between processes, calls for
//     different networks are safe (a batch that loses a race on a rule
//     handle is retried); calls for the same network must be serialized by
//     the caller, or a racing pair may leave two copies until the next
//     EnsureNetwork repairs it.
package nftables

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	nft "github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/firewall"
)

// Firewall installs knit's rules in one network namespace.
type Firewall struct {
	nsFd int // 0: the namespace of the thread that dials
	mu   sync.Mutex
}

var _ firewall.Firewall = (*Firewall)(nil)

// Option configures New.
type Option func(*Firewall)

// WithNetnsFd makes the firewall act in the network namespace open at fd
// instead of the caller's own. The netlink socket is opened inside it for
// each call, so fd must stay open as long as the Firewall is used.
func WithNetnsFd(fd int) Option { return func(f *Firewall) { f.nsFd = fd } }

// New returns a Firewall after checking that the kernel speaks nf_tables.
//
// Equivalent to: nft list tables
func New(opts ...Option) (*Firewall, error) {
	f := &Firewall{}
	for _, o := range opts {
		o(f)
	}
	c, err := f.conn()
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	if _, err := c.ListTablesOfFamily(nft.TableFamilyINet); err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	return f, nil
}

// conn opens one netlink socket for the duration of a call. Each call gets
// its own Conn because a Conn buffers one batch.
func (f *Firewall) conn() (*nft.Conn, error) {
	opts := []nft.ConnOption{nft.AsLasting()}
	if f.nsFd != 0 {
		opts = append(opts, nft.WithNetNSFd(f.nsFd))
	}
	c, err := nft.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink: %w", err)
	}
	return c, nil
}

// EnsureNetwork installs or repairs n's rules, and knit's table, chains and
// shared rules, in one batch.
//
// Equivalent to: nft -f - <<< 'add table inet knit; add chain ...;
// delete rule inet knit CHAIN handle H (each rule tagged knit:net=NAME);
// add rule inet knit forward iifname BR accept comment "knit:net=NAME";
// add rule inet knit postrouting ip saddr SUBNET oifname != BR masquerade ...'
func (f *Firewall) EnsureNetwork(n firewall.Network) error {
	if err := n.Validate(); err != nil {
		return err
	}
	// Every knit command ensures its network; a read that finds everything
	// in place costs a fraction of a batch, whose commit waits for the
	// kernel (~15 ms here).
	if cur, err := f.read(); err == nil && cur.upToDate(n) {
		return nil
	}
	err := f.apply(func(c *nft.Conn, cur ruleset) error {
		tableEnsure(c)
		baseEnsure(c, cur)
		if err := rulesDel(c, cur.tagged(netTag(n.Name))); err != nil {
			return err
		}
		for _, r := range networkRules(n) {
			c.AddRule(r)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ensure firewall of network %s: %w", n.Name, err)
	}
	return nil
}

// RemoveNetwork deletes every rule tagged with the named network, in one
// batch. A network without rules, or a missing table, is not an error.
//
// Equivalent to: nft delete rule inet knit CHAIN handle H (each rule tagged
// knit:net=NAME)
func (f *Firewall) RemoveNetwork(name string) error {
	if err := firewall.ValidateName(name); err != nil {
		return err
	}
	err := f.apply(func(c *nft.Conn, cur ruleset) error {
		return rulesDel(c, cur.tagged(netTag(name)))
	})
	if err != nil {
		return fmt.Errorf("remove firewall of network %s: %w", name, err)
	}
	return nil
}

// RemoveAll deletes knit's table with everything in it; a missing table is
// not an error. For uninstalling, and for tests.
//
// Equivalent to: nft delete table inet knit
func (f *Firewall) RemoveAll() error {
	err := f.apply(func(c *nft.Conn, _ ruleset) error {
		c.AddTable(table) // so that the delete cannot fail on a missing table
		c.DelTable(table)
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove firewall table: %w", err)
	}
	return nil
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
	slices.Sort(names)
	return names, nil
}

// Rules renders knit's table as `nft list table inet knit` prints it; ""
// if there is no table. For tests and --explain.
//
// Equivalent to: nft list table inet knit
func (f *Firewall) Rules() (string, error) {
	cur, err := f.read()
	if err != nil {
		return "", err
	}
	return cur.render(), nil
}

func (f *Firewall) read() (ruleset, error) {
	c, err := f.conn()
	if err != nil {
		return ruleset{}, err
	}
	defer c.CloseLasting()
	return rulesetGet(c)
}

// apply reads knit's table, lets build queue a batch on the same socket and
// sends it. A batch that names a rule another process deleted in between
// fails whole (ENOENT); it is then rebuilt from a fresh read.
func (f *Firewall) apply(build func(c *nft.Conn, cur ruleset) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.conn()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	for attempt := 0; ; attempt++ {
		cur, err := rulesetGet(c)
		if err != nil {
			return err
		}
		if err := build(c, cur); err != nil {
			return err
		}
		err = c.Flush()
		if err == nil || attempt == 2 || !errors.Is(err, unix.ENOENT) {
			if err != nil {
				return fmt.Errorf("apply nftables batch: %w", err)
			}
			return nil
		}
	}
}

// tableEnsure queues the creation of knit's table and base chains; adding
// what exists is a no-op, and resets a chain's policy to accept.
//
// Equivalent to: nft add table inet knit; nft add chain inet knit
// postrouting '{ type nat hook postrouting priority srcnat; policy accept; }';
// nft add chain inet knit forward '{ type filter hook forward priority
// filter; policy accept; }'
func tableEnsure(c *nft.Conn) {
	c.AddTable(table)
	for _, ch := range chains {
		c.AddChain(ch)
	}
}

// baseEnsure queues what it takes for the shared rules to be present once,
// at the head of their chain.
//
// Equivalent to: nft insert rule inet knit forward ct state
// established,related accept comment "knit:base"
func baseEnsure(c *nft.Conn, cur ruleset) {
	want := baseRule()
	have := cur.tagged(tagBase)
	if len(have) == 1 && have[0].Chain.Name == want.Chain.Name && renderRule(have[0]) == renderRule(want) {
		if rules := cur.rules[chainForward]; rules[0].Handle == have[0].Handle {
			return
		}
	}
	_ = rulesDel(c, have) // cannot fail: every rule read back has a handle
	c.InsertRule(want)
}

// rulesDel queues the deletion of rules read back from the kernel.
//
// Equivalent to: nft delete rule inet knit CHAIN handle H
func rulesDel(c *nft.Conn, rules []*nft.Rule) error {
	for _, r := range rules {
		if err := c.DelRule(r); err != nil {
			return fmt.Errorf("delete rule %d of chain %s: %w", r.Handle, r.Chain.Name, err)
		}
	}
	return nil
}

// ruleset is what knit's table holds: its chains in kernel order and
// their rules.
type ruleset struct {
	chains []*nft.Chain
	rules  map[string][]*nft.Rule
}

// rulesetGet reads knit's table; a missing table is an empty ruleset.
//
// Equivalent to: nft -a list table inet knit
func rulesetGet(c *nft.Conn) (ruleset, error) {
	cur := ruleset{rules: map[string][]*nft.Rule{}}
	all, err := c.ListChainsOfTableFamily(nft.TableFamilyINet)
	if err != nil {
		return cur, fmt.Errorf("list nftables chains: %w", err)
	}
	for _, ch := range all {
		if ch.Table.Name != tableName {
			continue
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return cur, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		cur.chains = append(cur.chains, ch)
		cur.rules[ch.Name] = rules
	}
	return cur, nil
}

// upToDate reports whether the table, its chains, the base rule at the head
// of forward and exactly n's rules are in place, so EnsureNetwork has
// nothing to write.
func (s ruleset) upToDate(n firewall.Network) bool {
	for _, want := range chains {
		found := false
		for _, ch := range s.chains {
			found = found || (ch.Name == want.Name && chainHeader(ch) == chainHeader(want))
		}
		if !found {
			return false
		}
	}
	base := s.tagged(tagBase)
	fwd := s.rules[chainForward]
	if len(base) != 1 || len(fwd) == 0 || fwd[0].Handle != base[0].Handle || renderRule(base[0]) != renderRule(baseRule()) {
		return false
	}
	return slices.Equal(ruleKeys(s.tagged(netTag(n.Name))), ruleKeys(networkRules(n)))
}

// ruleKeys renders rules as sorted "chain: rule" lines, for comparing sets
// of rules whatever order the chains are listed in.
func ruleKeys(rules []*nft.Rule) []string {
	keys := make([]string, len(rules))
	for i, r := range rules {
		keys[i] = r.Chain.Name + ": " + renderRule(r)
	}
	slices.Sort(keys)
	return keys
}

// tagged returns the rules commented with tag, from every chain.
func (s ruleset) tagged(tag string) []*nft.Rule {
	var out []*nft.Rule
	for _, ch := range s.chains {
		for _, r := range s.rules[ch.Name] {
			if ruleTag(r) == tag {
				out = append(out, r)
			}
		}
	}
	return out
}

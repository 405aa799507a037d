package nftables

import (
	"fmt"
	"slices"

	nft "github.com/google/nftables"

	"github.com/knit-dev/knit/internal/firewall"
)

// ruleset is what knit's table holds: its chains in kernel order and
// their rules, and its sets with their elements.
type ruleset struct {
	chains []*nft.Chain
	rules  map[string][]*nft.Rule
	sets   []*nft.Set
	elems  map[string][]nft.SetElement
}

// rulesetGet reads knit's table; a missing table is an empty ruleset.
//
// Equivalent to: nft -a list table inet knit
func rulesetGet(c *nft.Conn) (ruleset, error) {
	return rulesetRead(c, func(string) bool { return true })
}

// rulesetBase reads knit's table without the elements of the port maps,
// open sets, link sets and source sets, which may number thousands.
func rulesetBase(c *nft.Conn) (ruleset, error) {
	return rulesetRead(c, func(set string) bool {
		if slices.Contains(portSets(), set) || slices.Contains(sourceSets, set) {
			return false
		}
		for _, d := range linkSets {
			if d.name == set {
				return false
			}
		}
		return true
	})
}

// rulesetRead reads knit's table with the elements of the sets that
// withElems names.
func rulesetRead(c *nft.Conn, withElems func(set string) bool) (ruleset, error) {
	cur := ruleset{rules: map[string][]*nft.Rule{}, elems: map[string][]nft.SetElement{}}
	// Chain names are unique across knit's two tables.
	for _, t := range []*nft.Table{table, bridgeTable} {
		all, err := c.ListChainsOfTableFamily(t.Family)
		if err != nil {
			return cur, fmt.Errorf("list nftables chains: %w", err)
		}
		traceRead("chains")
		for _, ch := range all {
			if ch.Table.Name != tableName {
				continue
			}
			rules, err := c.GetRules(t, ch)
			if err != nil {
				return cur, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
			}
			traceRead("rules " + ch.Name)
			cur.chains = append(cur.chains, ch)
			cur.rules[ch.Name] = rules
		}
	}
	for _, t := range []*nft.Table{table, bridgeTable} {
		if !slices.ContainsFunc(cur.chains, func(ch *nft.Chain) bool { return ch.Table.Family == t.Family }) {
			continue // no such table (knit never makes one without chains), so no sets
		}
		sets, err := c.GetSets(t)
		if err != nil {
			return cur, fmt.Errorf("list nftables sets: %w", err)
		}
		traceRead("sets")
		cur.sets = append(cur.sets, sets...)
	}
	var err error
	for _, s := range cur.sets {
		if !withElems(s.Name) {
			continue
		}
		if cur.elems[s.Name], err = c.GetSetElements(s); err != nil {
			return cur, fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		traceRead("dump " + s.Name)
	}
	return cur, nil
}

// chain returns the chain called name, nil if there is none.
func (s ruleset) chain(name string) *nft.Chain {
	for _, ch := range s.chains {
		if ch.Name == name {
			return ch
		}
	}
	return nil
}

// set returns the set called name, nil if there is none.
func (s ruleset) set(name string) *nft.Set {
	for _, set := range s.sets {
		if set.Name == name {
			return set
		}
	}
	return nil
}

// baseUpToDate reports whether the table, its chains, sets and maps and
// the shared rules at the head of their chains are in place.
func (s ruleset) baseUpToDate() bool {
	for _, want := range append(slices.Clone(chains), userChain) {
		ch := s.chain(want.Name)
		if ch == nil || (want.Hooknum != nil) != (ch.Hooknum != nil) ||
			want.Hooknum != nil && chainHeader(ch) != chainHeader(want) {
			return false
		}
	}
	for _, want := range wantSets() {
		if !sameSetType(s.set(want.Name), want) {
			return false
		}
	}
	for name, want := range baseRules() {
		if !s.baseInPlace(name, want) {
			return false
		}
	}
	return true
}

// sameSetType reports whether have (nil: missing) is a set like want.
func sameSetType(have, want *nft.Set) bool {
	return have != nil && have.IsMap == want.IsMap && have.KeyType.Name == want.KeyType.Name &&
		have.DataType.Name == want.DataType.Name
}

// baseInPlace reports whether chain name begins with exactly the base
// rules want, and holds no other base rule.
func (s ruleset) baseInPlace(name string, want []*nft.Rule) bool {
	have := s.rules[name]
	if len(s.taggedIn(name, tagBase)) != len(want) || len(have) < len(want) {
		return false
	}
	for i, r := range want {
		if ruleTag(have[i]) != tagBase || renderRule(have[i]) != renderRule(r) {
			return false
		}
	}
	return true
}

// upToDate reports whether everything shared and exactly n's rules and
// bridge element are in place, so EnsureNetwork has nothing to write.
func (s ruleset) upToDate(n firewall.Network) bool {
	if !s.baseUpToDate() {
		return false
	}
	elems := s.taggedElems(setBridges, netTag(n.Name))
	if len(elems) != 1 || string(elems[0].Key) != string(ifnameKey(n.Bridge)) {
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

// tagged returns the rules commented with tag, from every chain but the
// administrator's.
func (s ruleset) tagged(tag string) []*nft.Rule {
	var out []*nft.Rule
	for _, ch := range s.chains {
		if ch.Name != chainUser {
			out = append(out, s.taggedIn(ch.Name, tag)...)
		}
	}
	return out
}

// taggedIn returns the rules of one chain commented with tag.
func (s ruleset) taggedIn(chain, tag string) []*nft.Rule {
	var out []*nft.Rule
	for _, r := range s.rules[chain] {
		if ruleTag(r) == tag {
			out = append(out, r)
		}
	}
	return out
}

// taggedElems returns the elements of a set commented with tag.
func (s ruleset) taggedElems(set, tag string) []nft.SetElement {
	var out []nft.SetElement
	for _, e := range s.elems[set] {
		if e.Comment == tag {
			out = append(out, e)
		}
	}
	return out
}

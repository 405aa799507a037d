package nftables

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	nft "github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
)

// tagOwnerPrefix starts the comment of every port map element: the owner
// is kept in the element itself, so adding and removing a mapping is one
// element operation and Owners is one read.
const tagOwnerPrefix = "knit:owner="

func ownerTag(owner string) string { return tagOwnerPrefix + owner }

// ownedElem is one port mapping or link as an element of one of knit's
// sets, commented with its owner.
type ownedElem struct {
	set string
	nft.SetElement
	// fresh: no element of this key can be in place (a new container's
	// pair, named by its own new port): added without a lookup (the
	// kernel takes an identical element's add as done).
	fresh bool
}

// AddPorts publishes owner's ports as elements of the port maps, in one
// batch that also creates knit's table, chains and maps if missing. An
// element in place is left alone; one of the same key but another value or
// owner is replaced. The cost does not grow with the number of other
// mappings: only the keys of ports are looked up.
//
// Equivalent to: nft get element inet knit pub4any { tcp . 8080 }; nft add
// element inet knit pub4any { tcp . 8080 comment "knit:owner=ID" :
// 10.99.0.2 . 80 } (pub4ip for a host address: { 127.0.0.1 . tcp . 8080
// ... }; pub6any, pub6ip for IPv6)
func (f *Firewall) AddPorts(owner string, ports []firewall.PortMapping) error {
	want, err := portElems(owner, ports)
	if err != nil {
		return err
	}
	if err := f.elemsEnsure(want); err != nil {
		return fmt.Errorf("publish ports of %s: %w", owner, err)
	}
	return nil
}

// elemsEnsure puts the owned elements want in place, in one batch that
// also creates knit's table, chains and sets if missing; an element of the
// same key but another value or owner is replaced. Nothing is written when
// all are in place.
//
// It reads the table without the elements of the port maps and link sets
// (rulesetBase) and looks up each key of want on its own (elemConn.get),
// so that its cost does not grow with the elements of other keys.
func (f *Firewall) elemsEnsure(want []ownedElem) error {
	return f.applyElems(func(c *nft.Conn, ec *elemConn, trusted bool) (bool, error) {
		// When nothing changed since the base was last seen up to date (a
		// run's EnsureNetwork), there is no need to read it again.
		var cur ruleset
		if !trusted {
			var err error
			if cur, err = rulesetBase(c); err != nil {
				return false, err
			}
		}
		var stale, missing []ownedElem
		for _, e := range want {
			if e.fresh {
				missing = append(missing, e)
				continue
			}
			var have nft.SetElement
			found := false
			var err error
			// A missing set holds nothing, and one of another type fails
			// baseEnsure below.
			if w := wantSet(e.set); w != nil && (trusted || sameSetType(cur.set(e.set), w)) {
				if have, found, err = ec.get(e.set, e.Key); err != nil {
					return false, err
				}
			}
			if found && string(have.Val) == string(e.Val) && have.Comment == e.Comment {
				continue // in place
			}
			if found {
				stale = append(stale, ownedElem{set: e.set, SetElement: have})
			}
			missing = append(missing, e)
		}
		baseOK := trusted || cur.baseUpToDate()
		if baseOK && len(missing) == 0 {
			return false, nil
		}
		if !baseOK {
			f.noteLost()
			if err := baseEnsure(c, cur); err != nil {
				return false, err
			}
		}
		for _, e := range stale {
			if err := elemsDel(c, e.set, []nft.SetElement{e.SetElement}); err != nil {
				return false, err
			}
		}
		for _, e := range missing {
			if err := c.SetAddElements(&nft.Set{Table: setTable(e.set), Name: e.set}, []nft.SetElement{e.SetElement}); err != nil {
				return false, fmt.Errorf("add element to set %s: %w", e.set, err)
			}
		}
		return true, nil
	})
}

// wantSet returns a fresh description of knit's set called name, nil if
// knit has none such.
func wantSet(name string) *nft.Set {
	for _, s := range wantSets() {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// RemovePorts deletes owner's elements for ports (every one of owner's
// when ports is nil, for a prune), in one batch; elements missing or held
// by another owner are skipped, and nothing is written when none is left
// to delete. With ports given, only their keys are looked up: the cost
// does not grow with the number of other mappings.
//
// Equivalent to: nft get element inet knit pub4any { tcp . 8080 } (for
// its owner); nft delete element inet knit pub4any { tcp . 8080 }
func (f *Firewall) RemovePorts(owner string, ports []firewall.PortMapping) error {
	want, err := portElems(owner, ports)
	if err != nil {
		return err
	}
	if err := f.elemsRemove(owner, want, ports == nil, portSets()); err != nil {
		return fmt.Errorf("unpublish ports of %s: %w", owner, err)
	}
	return nil
}

// elemsRemove deletes the elements of want that owner holds, or with all
// every element of owner in sets, in one batch; nothing is written when
// none is left to delete. The elements of want are looked up one by one;
// all, which knows no keys, reads every element of the table.
func (f *Firewall) elemsRemove(owner string, want []ownedElem, all bool, sets []string) error {
	if all { // every element of owner: a prune knows no more
		return f.elemsRemoveAll(owner, sets)
	}
	return f.applyElems(func(c *nft.Conn, ec *elemConn, _ bool) (bool, error) {
		held := false
		for _, e := range want {
			have, found, err := ec.get(e.set, e.Key)
			if err != nil {
				return false, err
			}
			if !found || have.Comment != e.Comment {
				continue
			}
			if err := elemsDel(c, e.set, []nft.SetElement{e.SetElement}); err != nil {
				return false, err
			}
			held = true
		}
		return held, nil
	})
}

// elemsRemoveAll deletes every element of owner in sets, in one batch;
// nothing is written when there is none.
func (f *Firewall) elemsRemoveAll(owner string, sets []string) error {
	held := func(cur ruleset) []ownedElem {
		var out []ownedElem
		for _, set := range sets {
			for _, e := range cur.taggedElems(set, ownerTag(owner)) {
				out = append(out, ownedElem{set: set, SetElement: e})
			}
		}
		return out
	}
	if cur, err := f.read(); err == nil && len(held(cur)) == 0 {
		return nil
	}
	return f.apply(func(c *nft.Conn, cur ruleset) error {
		for _, e := range held(cur) {
			if err := elemsDel(c, e.set, []nft.SetElement{e.SetElement}); err != nil {
				return err
			}
		}
		return nil
	})
}

// Owners returns the owners of port map elements, sorted.
//
// Equivalent to: nft list table inet knit | grep -o 'knit:owner=[^"]*'
func (f *Firewall) Owners() ([]string, error) {
	cur, err := f.read()
	if err != nil {
		return nil, err
	}
	return cur.owners(portSets()), nil
}

// owners returns the owners of the elements of sets, sorted.
func (s ruleset) owners(sets []string) []string {
	var owners []string
	for _, set := range sets {
		for _, e := range s.elems[set] {
			if o, ok := strings.CutPrefix(e.Comment, tagOwnerPrefix); ok && !slices.Contains(owners, o) {
				owners = append(owners, o)
			}
		}
	}
	slices.Sort(owners)
	return owners
}

// portElems validates the mappings and turns them into map elements. Two
// mappings of one key must agree.
func portElems(owner string, ports []firewall.PortMapping) ([]ownedElem, error) {
	if err := firewall.ValidateOwner(owner); err != nil {
		return nil, err
	}
	var out []ownedElem
	for _, m := range ports {
		if err := m.Validate(); err != nil {
			return nil, err
		}
		e := ownedElem{set: portMap(m).name, SetElement: nft.SetElement{
			Key: portKey(m), Val: portVal(m), Comment: ownerTag(owner)}}
		if i := slices.IndexFunc(out, func(o ownedElem) bool { return o.set == e.set && string(o.Key) == string(e.Key) }); i >= 0 {
			if string(out[i].Val) != string(e.Val) {
				return nil, errdefs.Invalid("port mapping %s: host port mapped twice", m)
			}
			continue
		}
		out = append(out, e)
		if !m.Open {
			continue
		}
		// Two host ports may map to one container port: one open element.
		if o := openElem(owner, m); !slices.ContainsFunc(out, func(x ownedElem) bool { return x.set == o.set && string(x.Key) == string(o.Key) }) {
			out = append(out, o)
		}
	}
	return out, nil
}

// portSets are the sets that hold port mappings' elements.
func portSets() []string {
	var sets []string
	for _, d := range pubMaps {
		sets = append(sets, d.name)
	}
	for _, d := range openSets {
		sets = append(sets, d.name)
	}
	return sets
}

// portMap picks the map a mapping belongs in.
func portMap(m firewall.PortMapping) mapDef {
	for _, d := range pubMaps {
		if d.v6 == m.ContainerIP.Is6() && d.byHost == !m.AnyHost() {
			return d
		}
	}
	panic("unreachable: pubMaps covers both families and both kinds")
}

// portKey is [host address .] protocol . host port, each field padded to
// 4 bytes as nft's concatenations are.
func portKey(m firewall.PortMapping) []byte {
	var key []byte
	if !m.AnyHost() {
		key = m.HostIP.Unmap().AsSlice()
	}
	key = append(key, protoNum[m.Proto], 0, 0, 0)
	return append(binary.BigEndian.AppendUint16(key, m.HostPort), 0, 0)
}

// protoNum maps the protocols of port mappings and links to their numbers.
var protoNum = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

// portVal is container address . container port.
func portVal(m firewall.PortMapping) []byte {
	return append(binary.BigEndian.AppendUint16(m.ContainerIP.AsSlice(), m.ContainerPort), 0, 0)
}

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
}

// AddPorts publishes owner's ports as elements of the port maps, in one
// batch that also creates knit's table, chains and maps if missing. An
// element in place is left alone; one of the same key but another value or
// owner is replaced.
//
// Equivalent to: nft add element inet knit pub4any { tcp . 8080 comment
// "knit:owner=ID" : 10.99.0.2 . 80 } (pub4ip for a host address:
// { 127.0.0.1 . tcp . 8080 ... }; pub6any, pub6ip for IPv6)
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
func (f *Firewall) elemsEnsure(want []ownedElem) error {
	if cur, err := f.read(); err == nil && cur.baseUpToDate() && len(elemsMissing(cur, want)) == 0 {
		return nil
	}
	return f.apply(func(c *nft.Conn, cur ruleset) error {
		if err := baseEnsure(c, cur); err != nil {
			return err
		}
		for _, e := range elemsMissing(cur, want) {
			if old, ok := cur.elem(e.set, e.Key); ok {
				if err := elemsDel(c, e.set, []nft.SetElement{old}); err != nil {
					return err
				}
			}
			if err := c.SetAddElements(&nft.Set{Table: table, Name: e.set}, []nft.SetElement{e.SetElement}); err != nil {
				return fmt.Errorf("add element to set %s: %w", e.set, err)
			}
		}
		return nil
	})
}

// elemsMissing returns the elements of want that are not in place as they
// are (same key, value and owner).
func elemsMissing(cur ruleset, want []ownedElem) []ownedElem {
	var out []ownedElem
	for _, e := range want {
		have, ok := cur.elem(e.set, e.Key)
		if !ok || string(have.Val) != string(e.Val) || have.Comment != e.Comment {
			out = append(out, e)
		}
	}
	return out
}

// RemovePorts deletes owner's elements for ports, in one batch; elements
// missing or held by another owner are skipped, and nothing is written
// when none is left to delete.
//
// Equivalent to: nft delete element inet knit pub4any { tcp . 8080 }
func (f *Firewall) RemovePorts(owner string, ports []firewall.PortMapping) error {
	want, err := portElems(owner, ports)
	if err != nil {
		return err
	}
	var sets []string
	for _, d := range pubMaps {
		sets = append(sets, d.name)
	}
	if err := f.elemsRemove(owner, want, ports == nil, sets); err != nil {
		return fmt.Errorf("unpublish ports of %s: %w", owner, err)
	}
	return nil
}

// elemsRemove deletes the elements of want that owner holds, and with all
// every element of owner in sets, in one batch; nothing is written when
// none is left to delete.
func (f *Firewall) elemsRemove(owner string, want []ownedElem, all bool, sets []string) error {
	held := func(cur ruleset) []ownedElem {
		var out []ownedElem
		for _, e := range want {
			if have, ok := cur.elem(e.set, e.Key); ok && have.Comment == e.Comment {
				out = append(out, e)
			}
		}
		if all { // every element of owner: a prune knows no more
			for _, set := range sets {
				for _, e := range cur.taggedElems(set, ownerTag(owner)) {
					out = append(out, ownedElem{set: set, SetElement: e})
				}
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
	var sets []string
	for _, d := range pubMaps {
		sets = append(sets, d.name)
	}
	return cur.owners(sets), nil
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
	}
	return out, nil
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

package nftables

import (
	"testing"

	"github.com/knit-dev/knit/internal/firewall"
)

// WantTable lets the kernel tests check the unit tests' rendering against
// what nft itself prints.
const WantTable = wantTable

const WantBridgeTable = wantBridgeTable

// TestLinks are the links of WantTable, by owner.
var TestLinks = testLinks

// Elem is a set element as a lookup returns it.
type Elem struct {
	Key, Val []byte
	Comment  string
}

// LookupPort looks up the key of m, alone, in the map it belongs in.
func (f *Firewall) LookupPort(m firewall.PortMapping) (set string, e Elem, found bool, err error) {
	set = portMap(m).name
	e, found, err = f.lookup(set, portKey(m))
	return set, e, found, err
}

// LookupLink looks up the key of l, alone, in the set it belongs in.
func (f *Firewall) LookupLink(l firewall.Link) (set string, e Elem, found bool, err error) {
	set = setLinks4
	if l.From.Is6() {
		set = setLinks6
	}
	e, found, err = f.lookup(set, linkKey(l))
	return set, e, found, err
}

func (f *Firewall) lookup(set string, key []byte) (Elem, bool, error) {
	ec, err := f.elemConn()
	if err != nil {
		return Elem{}, false, err
	}
	defer ec.Close()
	e, found, err := ec.get(set, key)
	return Elem{Key: e.Key, Val: e.Val, Comment: e.Comment}, found, err
}

// PortKey and PortVal are m's key and value in its map; LinkKey is l's
// key in its set.
var (
	PortKey = portKey
	PortVal = portVal
	LinkKey = linkKey
)

// TraceReads has fn told of every read the package's calls make ("chains",
// "rules CHAIN", "sets", "dump SET" for a set read whole, "get SET" for
// one element looked up) until the test ends. Tests that use it must not
// run in parallel.
func TraceReads(t testing.TB, fn func(req string)) {
	readTrace = fn
	t.Cleanup(func() { readTrace = nil })
}

// Generation is the namespace's nftables ruleset generation, which every
// committed batch advances by one.
func (f *Firewall) Generation() (uint32, error) {
	ec, err := f.elemConn()
	if err != nil {
		return 0, err
	}
	defer ec.Close()
	return ec.gen()
}

package engine

import (
	"net/netip"
	"strings"

	"github.com/knit-dev/knit/internal/store"
)

// bucketIPAMNext keeps where the search for a network's lowest free address
// starts, so that a run does not read every allocation of its network:
// "NETWORK 4" (or 6) → "NETWORK-ID ADDR", where every address of the
// family's subnet (or ip-range) below ADDR is taken or reserved. An
// allocation of the lowest free address moves it past that address, a
// release moves it down to the address released; both in the transaction
// that changes the allocations. A hint of another network ID (a removed
// network of the same name) or none at all means "from the start": never
// wrong, only slower.
const bucketIPAMNext = "ipam-next"

func ipamNextKey(network string, a netip.Addr) string {
	if a.Is4() {
		return network + " 4"
	}
	return network + " 6"
}

// ipamNext returns the hint of n's subnet of family is4, if any.
func ipamNext(tx store.Tx, n *Network, is4 bool) netip.Addr {
	fam := netip.IPv6Unspecified()
	if is4 {
		fam = netip.IPv4Unspecified()
	}
	v, err := tx.Get(bucketIPAMNext, ipamNextKey(n.Name, fam))
	if err != nil {
		return netip.Addr{}
	}
	id, a, ok := strings.Cut(string(v), " ")
	if !ok || id != n.ID {
		return netip.Addr{}
	}
	addr, _ := netip.ParseAddr(a)
	return addr
}

// takeAddr records a as c's on network n; lowest says that a was the
// lowest free address of its subnet, which moves the hint past it.
func takeAddr(tx store.Tx, n *Network, a netip.Addr, id string, lowest bool) error {
	if err := tx.Put(ipamBucket(n.Name), a.String(), []byte(id)); err != nil {
		return err
	}
	if !lowest || !a.Next().IsValid() {
		return nil
	}
	return tx.Put(bucketIPAMNext, ipamNextKey(n.Name, a), []byte(n.ID+" "+a.Next().String()))
}

// releaseAddr frees a on network (a missing allocation is not an error)
// and moves the hint down to it.
func releaseAddr(tx store.Tx, network string, a netip.Addr) error {
	if err := tx.Delete(ipamBucket(network), a.String()); err != nil {
		return err
	}
	v, err := tx.Get(bucketIPAMNext, ipamNextKey(network, a))
	if err != nil {
		return nil // no hint: searches start at the beginning anyway
	}
	id, cur, _ := strings.Cut(string(v), " ")
	if next, err := netip.ParseAddr(cur); err == nil && a.Compare(next) >= 0 {
		return nil
	}
	return tx.Put(bucketIPAMNext, ipamNextKey(network, a), []byte(id+" "+a.String()))
}

// forgetIPAMNext drops a removed network's hints.
func forgetIPAMNext(tx store.Tx, network string) error {
	for _, fam := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		if err := tx.Delete(bucketIPAMNext, ipamNextKey(network, fam)); err != nil {
			return err
		}
	}
	return nil
}

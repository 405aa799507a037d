package engine

import (
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/store"
)

// busyReads is a store whose reads time out, as when another knit holds
// the file past the timeout, and that counts its writes.
type busyReads struct {
	store.Store
	updates int
}

func (s *busyReads) View(func(store.Tx) error) error {
	return errdefs.Unavailable("store is busy")
}

func (s *busyReads) Update(fn func(store.Tx) error) error {
	s.updates++
	return s.Store.Update(fn)
}

// A teardown that cannot read the attachment's network fails and keeps the
// record and the address: only a network that is gone lets it skip the
// link's removal. (Releasing the address while the veth still holds it
// would hand it out twice.)
func TestCNITeardownKeepsStateWhenTheNetworkCannotBeRead(t *testing.T) {
	st := &busyReads{Store: newStore(t)}
	e := &Engine{st: st}
	a := &CNIAttachment{ID: CNIAttachmentID("c1", "eth0"), Network: "knet"}
	err := e.cniTeardown(a)
	if errdefs.KindOf(err) != errdefs.KindUnavailable {
		t.Fatalf("teardown: %v, want the store's busy error", err)
	}
	if st.updates != 0 {
		t.Errorf("teardown wrote to the store %d times after failing to read the network", st.updates)
	}
}

package link_test

import (
	"testing"

	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/testutil"
)

func TestPool(t *testing.T) {
	var p link.Pool
	// On the process's namespace (read only here): a handle put back is
	// the next one handed out.
	a, err := p.Host()
	if err != nil {
		t.Fatal(err)
	}
	p.Put(a)
	b, err := p.Host()
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("a handle put back was not reused")
	}
	p.Put(b)

	// On another namespace: a handle of its own, bound there, never kept.
	ns := testutil.NewNetns(t)
	var in [2]*link.Handle
	for i := range in {
		err := netns.Do(ns, func() error {
			var err error
			in[i], err = p.Host()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := in[i].BridgeEnsure("br-pool", 1500); err != nil {
			t.Fatal(err) // made in ns, whichever thread runs this
		}
		p.Put(in[i])
	}
	if in[0] == in[1] || in[0] == b || in[1] == b {
		t.Error("a handle on another namespace was kept or the process's handed out there")
	}
	c, err := p.Host()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Put(c)
	if c != b {
		t.Error("the process's idle handle was lost")
	}
	if _, err := c.LinkGet("br-pool"); !link.IsNotFound(err) {
		t.Errorf("br-pool seen from the process's namespace: %v", err)
	}
}

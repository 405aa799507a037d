package nftables_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/nftables"
	"github.com/knit-dev/knit/internal/testutil"
)

// stamped returns a Firewall in the namespace at ns that shares the record
// of what was seen up to date through the file at stamp, as each knit
// command's does.
func stamped(t *testing.T, ns, stamp string) *nftables.Firewall {
	t.Helper()
	fd, err := os.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() })
	return nftables.New(nftables.WithNetnsFd(int(fd.Fd())), nftables.WithStamp(stamp))
}

// readsBase runs fn and reports whether it read knit's chains, rules or
// sets.
func readsBase(t *testing.T, fn func() error) bool {
	t.Helper()
	read := false
	nftables.TraceReads(t, func(req string) {
		if req == "chains" || req == "sets" || strings.HasPrefix(req, "rules ") {
			read = true
		}
	})
	defer nftables.TraceReads(t, nil)
	check(t, fn())
	return read
}

// The stamp file lets one process skip the read of a base another one saw
// up to date, follows the processes' own element batches, and is dropped
// by any other change, by a changed network, and in another namespace.
func TestStampSkipsVerifiedReads(t *testing.T) {
	ns := testutil.NewNetns(t)
	stamp := filepath.Join(t.TempDir(), "verified")
	n1 := network("n1", "br0", "10.99.0.0/24")
	first := stamped(t, ns, stamp)
	check(t, first.EnsureNetwork(n1)) // creates: records nothing
	if !readsBase(t, func() error { return first.EnsureNetwork(n1) }) {
		t.Fatal("the first EnsureNetwork after a repair did not read the base")
	}

	// A second process (Firewall) trusts the stamp, and its publish moves
	// the stamp along for a third.
	second := stamped(t, ns, stamp)
	if readsBase(t, func() error { return second.EnsureNetwork(n1) }) {
		t.Error("EnsureNetwork read the base another process saw up to date")
	}
	pm := portMapping("", 8080, "tcp", "10.99.0.2", 80)
	if readsBase(t, func() error { return second.AddPorts("o1", []firewall.PortMapping{pm}) }) {
		t.Error("AddPorts read a verified base")
	}
	third := stamped(t, ns, stamp)
	if readsBase(t, func() error { return third.EnsureNetwork(n1) }) {
		t.Error("EnsureNetwork after another process's publish read the base")
	}
	if readsBase(t, func() error { return third.RemovePorts("o1", []firewall.PortMapping{pm}) }) {
		t.Error("RemovePorts read the base")
	}
	if readsBase(t, func() error { return stamped(t, ns, stamp).EnsureNetwork(n1) }) {
		t.Error("EnsureNetwork after another process's unpublish read the base")
	}

	// The same name with other settings is another network.
	n1icc := n1
	n1icc.ICC = !n1.ICC
	if !readsBase(t, func() error { return stamped(t, ns, stamp).EnsureNetwork(n1icc) }) {
		t.Error("EnsureNetwork of a changed network trusted the stamp")
	}
	if out := nft(t, ns, "list", "chain", "inet", "knit", "forward"); strings.Contains(out, `iifname "br0" oifname "br0"`) != !n1icc.ICC {
		t.Errorf("ICC=%v not applied:\n%s", n1icc.ICC, out)
	}
	check(t, stamped(t, ns, stamp).EnsureNetwork(n1icc)) // verified and recorded again

	// Someone else's change moves the generation: the next call reads and
	// repairs.
	nft(t, ns, "flush", "chain", "inet", "knit", "prerouting")
	if !readsBase(t, func() error { return stamped(t, ns, stamp).EnsureNetwork(n1icc) }) {
		t.Error("EnsureNetwork trusted the stamp after a foreign change")
	}
	if out := nft(t, ns, "list", "chain", "inet", "knit", "prerouting"); !strings.Contains(out, "@pub4any") {
		t.Errorf("prerouting not repaired:\n%s", out)
	}

	// A stamp of a knit whose base differs (before an upgrade added to
	// it) is not this one's: its element calls read the base.
	check(t, stamped(t, ns, stamp).EnsureNetwork(n1icc))
	b, err := os.ReadFile(stamp)
	check(t, err)
	older := regexp.MustCompile(` base [0-9a-f]+`).ReplaceAll(b, []byte(" base 0123456789abcdef"))
	if string(older) == string(b) {
		t.Fatalf("no base digest in the stamp:\n%s", b)
	}
	check(t, os.WriteFile(stamp, older, 0o600))
	if !readsBase(t, func() error { return stamped(t, ns, stamp).AddPorts("o2", []firewall.PortMapping{pm}) }) {
		t.Error("AddPorts trusted the stamp of another base")
	}

	// Another namespace at the same generation is not the one recorded.
	check(t, stamped(t, ns, stamp).EnsureNetwork(n1icc))
	other := testutil.NewNetns(t)
	if !readsBase(t, func() error { return stamped(t, other, stamp).EnsureNetwork(n1icc) }) {
		t.Error("a Firewall of another namespace trusted the stamp")
	}
}

// A stamp that says more than holds (here: forged after knit's table was
// deleted; in life, a namespace that reused a recorded identity) costs one
// failed batch, not a stuck firewall: the batch's failure drops the stamp,
// the call retries from a fresh read, and the next EnsureNetwork repairs.
func TestStampThatLiesIsDropped(t *testing.T) {
	ns := testutil.NewNetns(t)
	stamp := filepath.Join(t.TempDir(), "verified")
	n1 := network("n1", "br0", "10.99.0.0/24")
	fw := stamped(t, ns, stamp)
	check(t, fw.EnsureNetwork(n1))
	check(t, fw.EnsureNetwork(n1)) // recorded
	b, err := os.ReadFile(stamp)
	if err != nil {
		t.Fatal(err)
	}
	nft(t, ns, "delete", "table", "inet", "knit") // one commit: generation + 1
	var boot, base string
	var netns, gen uint64
	first, rest, _ := strings.Cut(string(b), "\n")
	if _, err := fmt.Sscanf(first, "boot %s netns %d gen %d base %s", &boot, &netns, &gen, &base); err != nil {
		t.Fatalf("stamp %q: %v", b, err)
	}
	forged := fmt.Sprintf("boot %s netns %d gen %d base %s\n%s", boot, netns, gen+1, base, rest)
	if err := os.WriteFile(stamp, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}

	liar := stamped(t, ns, stamp)
	check(t, liar.EnsureNetwork(n1)) // believes the stamp: no read, no repair
	pm := portMapping("", 8080, "tcp", "10.99.0.2", 80)
	check(t, liar.AddPorts("o1", []firewall.PortMapping{pm})) // fails once, drops the stamp, repairs the base
	if _, err := os.Stat(stamp); !os.IsNotExist(err) {
		t.Errorf("stamp still there after a batch failed on its word: %v", err)
	}
	if !readsBase(t, func() error { return stamped(t, ns, stamp).EnsureNetwork(n1) }) {
		t.Error("EnsureNetwork after a dropped stamp did not read")
	}
	if out := nft(t, ns, "list", "table", "inet", "knit"); !strings.Contains(out, `"br0"`) || !strings.Contains(out, "tcp . 8080") {
		t.Errorf("table not repaired:\n%s", out)
	}
}

// EnsureNetworkReport says when knit's base was found not in place (its
// first creation, an `nft flush ruleset`, a deleted table), by this call or
// by another that rebuilt it meanwhile (an AddPorts), until MarkRestored;
// never when it was in place.
func TestEnsureNetworkReportsLoss(t *testing.T) {
	ns := testutil.NewNetns(t)
	stamp := filepath.Join(t.TempDir(), "verified")
	fw := stamped(t, ns, stamp)
	n1, n2 := network("n1", "br0", "10.99.0.0/24"), network("n2", "br1", "10.98.0.0/24")
	pm := portMapping("", 8080, "tcp", "10.99.0.2", 80)
	for _, step := range []struct {
		what    string
		do      func()
		n       firewall.Network
		lost    bool
		restore bool // MarkRestored after
	}{
		{"first creation", func() {}, n1, true, false},
		{"not restored yet", func() {}, n2, true, true},
		{"another network, table in place", func() {}, n2, false, false},
		{"after nft flush ruleset", func() { nft(t, ns, "flush", "ruleset") }, n1, true, true},
		{"the same again", func() {}, n1, false, false},
		{"after a deleted table that AddPorts rebuilt", func() {
			nft(t, ns, "delete", "table", "inet", "knit")
			check(t, fw.AddPorts("o1", []firewall.PortMapping{pm}))
		}, n2, true, true},
		{"seen by another process's Firewall", func() {
			nft(t, ns, "flush", "ruleset")
			check(t, stamped(t, ns, stamp).EnsureNetwork(n1))
		}, n2, true, true},
		{"restored", func() {}, n2, false, false},
	} {
		step.do()
		lost, err := fw.EnsureNetworkReport(step.n)
		if err != nil || lost != step.lost {
			t.Errorf("%s: lost %v, %v; want %v", step.what, lost, err, step.lost)
		}
		if step.restore {
			check(t, fw.MarkRestored())
		}
	}
	// A loss noted by another process while this one restores is not
	// cleared with the one this one saw.
	nft(t, ns, "flush", "ruleset")
	if lost, err := fw.EnsureNetworkReport(n1); err != nil || !lost {
		t.Fatalf("after a flush: lost %v, %v", lost, err)
	}
	nft(t, ns, "flush", "ruleset")
	check(t, stamped(t, ns, stamp).EnsureNetwork(n2)) // another process: a new loss
	check(t, fw.EnsureNetwork(n2))                    // the restore puts n2's rules back
	check(t, fw.MarkRestored())
	if lost, err := fw.EnsureNetworkReport(n1); err != nil || !lost {
		t.Errorf("a loss noted during the restore was cleared by it: lost %v, %v", lost, err)
	}
}

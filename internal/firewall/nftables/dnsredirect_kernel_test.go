package nftables_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/firewall/nftables"
	"github.com/knit-dev/knit/internal/testutil"
)

// RedirectDNS makes the container namespace's table, which nft lists as
// the rules it stands for; a second call retargets it in place and says
// keeps it when it is whole; RemoveDNSRedirect deletes it, twice without
// error.
func TestRedirectDNS(t *testing.T) {
	ns := testutil.NewNetns(t)
	f := nftables.New()
	gw1, gw2 := netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.2.0.1")
	if err := f.RedirectDNS(ns, gw1); err != nil {
		t.Fatal(err)
	}
	out := nft(t, ns, "list", "table", "ip", "knit-dns")
	for _, want := range []string{
		"ip daddr 127.0.0.11 udp dport 53 dnat to 10.1.0.1:53",
		"ip daddr 127.0.0.11 tcp dport 53 dnat to 10.1.0.1:53",
		`oifname != "lo" ip saddr 127.0.0.0/8 masquerade`,
		`iifname != "lo" ip daddr 127.0.0.0/8 ct state invalid,untracked drop`,
		`iifname != "lo" ip daddr 127.0.0.0/8 ct state ! established,related ct status ! dnat drop`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if has, err := f.HasDNSRedirect(ns); err != nil || !has {
		t.Errorf("HasDNSRedirect = %v, %v; want true", has, err)
	}
	// To the same server: no batch (the rules keep their handles); with
	// a rule deleted, the table is made whole again.
	handles := nft(t, ns, "-a", "list", "table", "ip", "knit-dns")
	if err := f.RedirectDNS(ns, gw1); err != nil {
		t.Fatal(err)
	}
	if again := nft(t, ns, "-a", "list", "table", "ip", "knit-dns"); again != handles {
		t.Errorf("RedirectDNS to the same server rewrote the table:\n%s\nwas\n%s", again, handles)
	}
	nft(t, ns, "flush", "chain", "ip", "knit-dns", "input")
	if err := f.RedirectDNS(ns, gw1); err != nil {
		t.Fatal(err)
	}
	if out := nft(t, ns, "list", "chain", "ip", "knit-dns", "input"); strings.Count(out, "drop") != 2 {
		t.Errorf("input chain after a repair:\n%s", out)
	}
	if err := f.RedirectDNS(ns, gw2); err != nil {
		t.Fatal(err)
	}
	if out := nft(t, ns, "list", "table", "ip", "knit-dns"); strings.Contains(out, "10.1.0.1") || strings.Count(out, "dnat to 10.2.0.1:53") != 2 {
		t.Errorf("after the retarget:\n%s", out)
	}
	for range 2 {
		if err := f.RemoveDNSRedirect(ns); err != nil {
			t.Fatalf("RemoveDNSRedirect: %v", err)
		}
	}
	if out := nft(t, ns, "list", "tables"); strings.Contains(out, "knit-dns") {
		t.Errorf("tables after the removal:\n%s", out)
	}
	if has, err := f.HasDNSRedirect(ns); err != nil || has {
		t.Errorf("HasDNSRedirect after the removal = %v, %v; want false", has, err)
	}
}

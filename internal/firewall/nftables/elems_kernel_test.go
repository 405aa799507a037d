package nftables_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/firewall/nftables"
)

// portMapping is a mapping from hostIP ("" for any):hostPort to
// ctr:ctrPort.
func portMapping(hostIP string, hostPort uint16, proto, ctr string, ctrPort uint16) firewall.PortMapping {
	m := mapping(hostIP, hostPort, proto)
	m.ContainerIP, m.ContainerPort = netip.MustParseAddr(ctr), ctrPort
	return m
}

func linkOf(from, to, proto string, port uint16) firewall.Link {
	return firewall.Link{Network: "n1", From: netip.MustParseAddr(from), To: netip.MustParseAddr(to), Proto: proto, Port: port}
}

// TestLookupElement checks the lookup of one element by key against
// elements that nft itself added, in each of the four port maps and both
// link sets.
func TestLookupElement(t *testing.T) {
	fw, ns := newFirewall(t)
	absent := portMapping("", 8080, "tcp", "10.99.0.2", 80)
	if set, e, found, err := fw.LookupPort(absent); err != nil || found {
		t.Fatalf("lookup without a table in %s = %+v, %v, %v; want not found", set, e, found, err)
	}
	check(t, fw.AddPorts("c0", nil)) // makes the table, its maps and sets
	nft(t, ns, strings.Join([]string{
		`add element inet knit pub4any { tcp . 8080 comment "knit:owner=a" : 10.99.0.2 . 80, tcp . 8081 : 10.99.0.9 . 81 }`,
		`add element inet knit pub4ip { 127.0.0.1 . udp . 53 comment "knit:owner=b" : 10.99.0.3 . 5353, 127.0.0.2 . udp . 53 : 10.99.0.9 . 53 }`,
		`add element inet knit pub6any { sctp . 9 comment "knit:owner=c" : fd00::2 . 9, sctp . 10 : fd00::9 . 10 }`,
		`add element inet knit pub6ip { ::1 . tcp . 443 comment "knit:owner=d" : fd00::3 . 8443, ::1 . tcp . 444 : fd00::9 . 443 }`,
		`add element inet knit links4 { 10.99.0.2 . 10.99.0.3 . tcp . 80 comment "knit:owner=e", 10.99.0.2 . 10.99.0.3 . tcp . 81 }`,
		`add element inet knit links6 { fd00::2 . fd00::3 . udp . 53 comment "knit:owner=f", fd00::2 . fd00::4 . udp . 53 }`,
	}, "; "))

	// The bytes of one, by hand: tcp . 8080 : 10.99.0.2 . 80, each field
	// padded to 4 bytes.
	set, e, found, err := fw.LookupPort(absent)
	if err != nil || !found || set != "pub4any" {
		t.Fatalf("lookup tcp . 8080 in %s = %v, %v", set, found, err)
	}
	if want := []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}; !bytes.Equal(e.Key, want) {
		t.Errorf("key = %v, want %v", e.Key, want)
	}
	if want := []byte{10, 99, 0, 2, 0, 80, 0, 0}; !bytes.Equal(e.Val, want) {
		t.Errorf("value = %v, want %v", e.Val, want)
	}

	ports := []struct {
		m       firewall.PortMapping
		set     string
		comment string
	}{
		{portMapping("", 8080, "tcp", "10.99.0.2", 80), "pub4any", "knit:owner=a"},
		{portMapping("", 8081, "tcp", "10.99.0.9", 81), "pub4any", ""},
		{portMapping("127.0.0.1", 53, "udp", "10.99.0.3", 5353), "pub4ip", "knit:owner=b"},
		{portMapping("", 9, "sctp", "fd00::2", 9), "pub6any", "knit:owner=c"},
		{portMapping("::1", 443, "tcp", "fd00::3", 8443), "pub6ip", "knit:owner=d"},
	}
	for _, p := range ports {
		set, e, found, err := fw.LookupPort(p.m)
		if err != nil || !found || set != p.set {
			t.Errorf("lookup %s in %s = %v, %v; want found in %s", p.m, set, found, err, p.set)
			continue
		}
		if !bytes.Equal(e.Key, nftables.PortKey(p.m)) || !bytes.Equal(e.Val, nftables.PortVal(p.m)) || e.Comment != p.comment {
			t.Errorf("lookup %s = %v : %v comment %q, want %v : %v comment %q", p.m, e.Key, e.Val, e.Comment,
				nftables.PortKey(p.m), nftables.PortVal(p.m), p.comment)
		}
		// Another port, protocol or host address of the same map is absent.
		other := p.m
		other.HostPort += 100
		if set, e, found, err := fw.LookupPort(other); err != nil || found {
			t.Errorf("lookup %s in %s = %+v, %v, %v; want not found", other, set, e, found, err)
		}
		other = p.m
		other.Proto = "udp"
		if p.m.Proto == "udp" {
			other.Proto = "tcp"
		}
		if set, _, found, err := fw.LookupPort(other); err != nil || found {
			t.Errorf("lookup %s in %s = %v, %v; want not found", other, set, found, err)
		}
	}
	if set, _, found, err := fw.LookupPort(portMapping("127.0.0.3", 53, "udp", "10.99.0.3", 5353)); err != nil || found {
		t.Errorf("lookup of another host address in %s = %v, %v; want not found", set, found, err)
	}

	links := []struct {
		l       firewall.Link
		set     string
		comment string
	}{
		{linkOf("10.99.0.2", "10.99.0.3", "tcp", 80), "links4", "knit:owner=e"},
		{linkOf("10.99.0.2", "10.99.0.3", "tcp", 81), "links4", ""},
		{linkOf("fd00::2", "fd00::3", "udp", 53), "links6", "knit:owner=f"},
	}
	for _, l := range links {
		set, e, found, err := fw.LookupLink(l.l)
		if err != nil || !found || set != l.set {
			t.Errorf("lookup %s in %s = %v, %v; want found in %s", l.l, set, found, err, l.set)
			continue
		}
		if !bytes.Equal(e.Key, nftables.LinkKey(l.l)) || len(e.Val) != 0 || e.Comment != l.comment {
			t.Errorf("lookup %s = %v : %v comment %q, want %v comment %q", l.l, e.Key, e.Val, e.Comment,
				nftables.LinkKey(l.l), l.comment)
		}
		other := l.l
		other.Port += 100
		if set, _, found, err := fw.LookupLink(other); err != nil || found {
			t.Errorf("lookup %s in %s = %v, %v; want not found", other, set, found, err)
		}
	}

	// A missing set is no error either (the flush drops the rule that
	// refers to it).
	nft(t, ns, "flush chain inet knit forward; delete set inet knit links6")
	if set, _, found, err := fw.LookupLink(links[2].l); err != nil || found {
		t.Errorf("lookup in a deleted %s = %v, %v; want not found", set, found, err)
	}
}

// fill adds n elements of other owners to set at once, through nft: line
// returns element i.
func fill(t *testing.T, ns, set string, n int, line func(i int) string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "add element inet knit %s {\n", set)
	for i := range n {
		fmt.Fprintf(&b, "\t%s,\n", line(i))
	}
	b.WriteString("}\n")
	f := filepath.Join(t.TempDir(), set+".nft")
	check(t, os.WriteFile(f, []byte(b.String()), 0o644))
	nft(t, ns, "-f", f)
}

// TestElemsReadOnlyTheirKeys shows that publishing, unpublishing, linking
// and unlinking read the same whatever other elements the maps and sets
// hold: every read of such calls is recorded, with no other elements and
// with 2,000 of other owners, and the records must be equal and hold no
// dump of a port map or link set.
func TestElemsReadOnlyTheirKeys(t *testing.T) {
	fw, ns := newFirewall(t)
	check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")))
	ports := []firewall.PortMapping{portMapping("", 8080, "tcp", "10.99.0.2", 80)}
	links := []firewall.Link{linkOf("10.99.0.2", "10.99.0.3", "tcp", 80)}
	calls := []struct {
		name string
		call func() error
	}{
		{"AddPorts", func() error { return fw.AddPorts("new", ports) }},
		{"AddPorts again", func() error { return fw.AddPorts("new", ports) }},
		{"RemovePorts", func() error { return fw.RemovePorts("new", ports) }},
		{"AddLinks", func() error { return fw.AddLinks("new", links) }},
		{"AddLinks again", func() error { return fw.AddLinks("new", links) }},
		{"RemoveLinks", func() error { return fw.RemoveLinks("new", links) }},
	}
	record := func() [][]string {
		var reads [][]string
		for _, c := range calls {
			var got []string
			nftables.TraceReads(t, func(req string) { got = append(got, req) })
			check(t, c.call())
			nftables.TraceReads(t, nil)
			for _, r := range got {
				if set, ok := strings.CutPrefix(r, "dump "); ok && set != "bridges" {
					t.Errorf("%s read all of %s: %v", c.name, set, got)
				}
			}
			reads = append(reads, got)
		}
		return reads
	}
	empty := record()
	const n = 2000
	fill(t, ns, "pub4any", n, func(i int) string {
		return fmt.Sprintf(`tcp . %d comment "knit:owner=o%d" : 10.99.0.%d . 80`, 10000+i, i/200, 3+i%250)
	})
	fill(t, ns, "links4", n, func(i int) string {
		return fmt.Sprintf(`10.99.%d.%d . 10.99.0.3 . tcp . 80 comment "knit:owner=o%d"`, 1+i/250, 3+i%250, i/200)
	})
	full := record()
	for i, c := range calls {
		if !slices.Equal(empty[i], full[i]) {
			t.Errorf("%s reads with %d other elements:\n%v\nwithout:\n%v", c.name, n, full[i], empty[i])
		}
	}
	// Each call looks up its one key, and only it.
	for i, want := range []string{"get pub4any", "get pub4any", "get pub4any", "get links4", "get links4", "get links4"} {
		var gets []string
		for _, r := range full[i] {
			if strings.HasPrefix(r, "get ") {
				gets = append(gets, r)
			}
		}
		if len(gets) != 1 || gets[0] != want {
			t.Errorf("%s looked up %v, want [%s]", calls[i].name, gets, want)
		}
	}
	if got := nft(t, ns, "list", "map", "inet", "knit", "pub4any"); strings.Count(got, "knit:owner=") != n || strings.Contains(got, "knit:owner=new") {
		t.Errorf("other elements changed: %d left", strings.Count(got, "knit:owner="))
	}
}

// TestElemsRace changes a key between a call's lookup and its batch, as
// another process could: the batch fails whole and is rebuilt from fresh
// lookups.
func TestElemsRace(t *testing.T) {
	fw, ns := newFirewall(t)
	check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")))
	// between runs cmd, once, right after the call's first lookup; retried
	// checks that the call looked its key up twice: once before cmd, once
	// for the rebuilt batch.
	var gets int
	between := func(cmd string) {
		gets = 0
		nftables.TraceReads(t, func(req string) {
			if strings.HasPrefix(req, "get ") {
				if gets++; gets == 1 {
					nft(t, ns, cmd)
				}
			}
		})
	}
	retried := func(what string) {
		t.Helper()
		if gets != 2 {
			t.Errorf("%s: %d lookups, want 2 (the batch rebuilt once)", what, gets)
		}
	}
	owners := func() string {
		t.Helper()
		got := nft(t, ns, "list", "map", "inet", "knit", "pub4any")
		var out []string
		for _, line := range strings.Split(got, "\n") {
			if i := strings.Index(line, "tcp . "); i >= 0 {
				out = append(out, strings.TrimSpace(strings.Trim(strings.TrimSpace(line[i:]), ",}")))
			}
		}
		slices.Sort(out)
		return strings.Join(out, "\n")
	}

	// Added by another with another value (EEXIST): replaced.
	between(`add element inet knit pub4any { tcp . 8080 comment "knit:owner=other" : 10.99.0.9 . 80 }`)
	check(t, fw.AddPorts("c1", []firewall.PortMapping{portMapping("", 8080, "tcp", "10.99.0.2", 80)}))
	retried("racing add")
	if got, want := owners(), `tcp . 8080 comment "knit:owner=c1" : 10.99.0.2 . 80`; got != want {
		t.Errorf("after a racing add:\n%s\nwant:\n%s", got, want)
	}

	// Another's element deleted in between (ENOENT on the replacement's
	// delete): added.
	nft(t, ns, `add element inet knit pub4any { tcp . 8081 comment "knit:owner=other" : 10.99.0.9 . 80 }`)
	between(`delete element inet knit pub4any { tcp . 8081 }`)
	check(t, fw.AddPorts("c1", []firewall.PortMapping{portMapping("", 8081, "tcp", "10.99.0.2", 81)}))
	retried("racing delete")
	want := "tcp . 8080 comment \"knit:owner=c1\" : 10.99.0.2 . 80\ntcp . 8081 comment \"knit:owner=c1\" : 10.99.0.2 . 81"
	if got := owners(); got != want {
		t.Errorf("after a racing delete:\n%s\nwant:\n%s", got, want)
	}

	// One's own element deleted in between (ENOENT): nothing left to do.
	between(`delete element inet knit pub4any { tcp . 8081 }`)
	check(t, fw.RemovePorts("c1", []firewall.PortMapping{portMapping("", 8081, "tcp", "10.99.0.2", 81)}))
	retried("racing removal")
	nftables.TraceReads(t, nil)
	if got, want := owners(), `tcp . 8080 comment "knit:owner=c1" : 10.99.0.2 . 80`; got != want {
		t.Errorf("after a racing removal:\n%s\nwant:\n%s", got, want)
	}
}

// AddPorts right after an EnsureNetwork that found the base up to date
// trusts it (one generation query, no read of chains, rules or sets); once
// anything changed in between, it reads the base again and repairs it.
func TestAddPortsTrustsAFreshBase(t *testing.T) {
	fw, ns := newFirewall(t)
	check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")))
	check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24"))) // up to date: remembered
	var got []string
	nftables.TraceReads(t, func(req string) { got = append(got, req) })
	check(t, fw.AddPorts("o1", []firewall.PortMapping{portMapping("", 8080, "tcp", "10.99.0.2", 80)}))
	nftables.TraceReads(t, nil)
	for _, r := range got {
		if r == "chains" || r == "sets" || strings.HasPrefix(r, "rules ") {
			t.Errorf("AddPorts after a fresh EnsureNetwork read the base: %v", got)
			break
		}
	}
	// Another hand flushes knit's prerouting chain: the generation moves,
	// and the next AddPorts puts the shared rules back.
	check(t, fw.EnsureNetwork(network("n1", "br0", "10.99.0.0/24")))
	nft(t, ns, "flush", "chain", "inet", "knit", "prerouting")
	check(t, fw.AddPorts("o2", []firewall.PortMapping{portMapping("", 8081, "tcp", "10.99.0.3", 80)}))
	if out := nft(t, ns, "list", "chain", "inet", "knit", "prerouting"); !strings.Contains(out, "@pub4any") {
		t.Errorf("AddPorts did not repair the flushed prerouting chain:\n%s", out)
	}
}

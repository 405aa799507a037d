package files

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
)

func TestValidHostname(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	for _, tc := range []struct {
		in  string
		ok  bool
		msg string
	}{
		{"web", true, ""},
		{"web-1.example.com", true, ""},
		{"1abc", true, ""},
		{"A", true, ""},
		{long63, true, ""},
		{strings.Repeat(long63+".", 3) + strings.Repeat("a", 61), true, ""}, // 253
		{strings.Repeat(long63+".", 3) + strings.Repeat("a", 62), false, "limit is 253"},
		{"", false, "empty"},
		{long63 + "a", false, "limit is 63"},
		{"-web", false, "hyphen"},
		{"web-", false, "hyphen"},
		{"we_b", true, ""},   // a container's name, as generated
		{"_srv.x", true, ""}, // as DNS's service labels
		{"we!b", false, `'!'`},
		{"web.", false, "empty label"},
		{".web", false, "empty label"},
		{"a..b", false, "empty label"},
		{"web server", false, "' '"},
		{"wéb", false, "letters"},
		{"a:b", false, "':'"},
	} {
		err := ValidHostname(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ValidHostname(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err != nil && (errdefs.KindOf(err) != errdefs.KindInvalid || !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("ValidHostname(%q) = %v (kind %v), want an invalid error mentioning %q", tc.in, err, errdefs.KindOf(err), tc.msg)
		}
	}
}

func TestHostname(t *testing.T) {
	if got := string(Hostname("web")); got != "web\n" {
		t.Errorf("Hostname = %q", got)
	}
}

func TestValidateSearchDomain(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{".", true}, {"example.com", true}, {"example.com.", true}, {"corp", true},
		{"", false}, {"..", false}, {"a b", false}, {"-x.com", false}, {"x..com", false},
	} {
		if err := ValidateSearchDomain(tc.in); (err == nil) != tc.ok {
			t.Errorf("ValidateSearchDomain(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		} else if err != nil && errdefs.KindOf(err) != errdefs.KindInvalid {
			t.Errorf("ValidateSearchDomain(%q): kind %v", tc.in, errdefs.KindOf(err))
		}
	}
}

func TestValidateDNSOption(t *testing.T) {
	for _, tc := range []struct {
		in  string
		ok  bool
		msg string
	}{
		{"ndots:2", true, ""}, {"ndots:0", true, ""}, {"timeout:30", true, ""}, {"attempts:5", true, ""},
		{"ndots:15", true, ""}, {"rotate", true, ""}, {"edns0", true, ""}, {"single-request", true, ""},
		{"single-request-reopen", true, ""}, {"no-tld-query", true, ""}, {"use-vc", true, ""},
		{"no-reload", true, ""}, {"trust-ad", true, ""}, {"inet6", true, ""}, {"debug", true, ""},
		{"no-aaaa", true, ""},
		{"", false, "unknown option"},
		{"bogus", false, "valid options are ndots:N"},
		{"NDOTS:1", false, "unknown"},
		{"ndots", false, "needs a number"},
		{"ndots:", false, "not a number"},
		{"ndots:-1", false, "not a number"},
		{"ndots:+1", false, "not a number"},
		{"ndots:1.5", false, "not a number"},
		{"ndots:x", false, "not a number"},
		{"ndots:99999999999", false, "not a number"},
		{"ndots:1 rotate", false, "not a number"},
		{"rotate:1", false, "takes no value"},
		{"edns0:", false, "takes no value"},
	} {
		err := ValidateDNSOption(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateDNSOption(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err != nil && (errdefs.KindOf(err) != errdefs.KindInvalid || !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("ValidateDNSOption(%q) = %v, want an invalid error mentioning %q", tc.in, err, tc.msg)
		}
	}
}

func TestParseAddHost(t *testing.T) {
	ip := netip.MustParseAddr
	for _, tc := range []struct {
		in   string
		want HostEntry
		err  string
	}{
		{in: "db:10.0.0.5", want: HostEntry{IP: ip("10.0.0.5"), Names: []string{"db"}}},
		{in: "db=10.0.0.5", want: HostEntry{IP: ip("10.0.0.5"), Names: []string{"db"}}},
		{in: " db : 10.0.0.5 ", want: HostEntry{IP: ip("10.0.0.5"), Names: []string{"db"}}},
		{in: "db.example.com:10.0.0.5", want: HostEntry{IP: ip("10.0.0.5"), Names: []string{"db.example.com"}}},
		{in: "v6:2001:db8::1", want: HostEntry{IP: ip("2001:db8::1"), Names: []string{"v6"}}},
		{in: "v6:[2001:db8::1]", want: HostEntry{IP: ip("2001:db8::1"), Names: []string{"v6"}}},
		{in: "v6=[2001:db8::1]", want: HostEntry{IP: ip("2001:db8::1"), Names: []string{"v6"}}},
		{in: "v6=::1", want: HostEntry{IP: ip("::1"), Names: []string{"v6"}}},
		{in: "v4:[10.0.0.1]", want: HostEntry{IP: ip("10.0.0.1"), Names: []string{"v4"}}},
		{in: "gw:host-gateway", want: HostEntry{Names: []string{"gw"}, HostGateway: true}},
		{in: "gw=host-gateway", want: HostEntry{Names: []string{"gw"}, HostGateway: true}},
		{in: "db", err: "expected NAME:IP"},
		{in: "", err: "expected NAME:IP"},
		{in: ":10.0.0.5", err: "empty"},
		{in: "=10.0.0.5", err: "empty"},
		{in: "db:", err: "is not an IP address"},
		{in: "db:nothost", err: `"nothost" is not an IP address`},
		{in: "db:10.0.0.256", err: "is not an IP address"},
		{in: "db:[]", err: "is not an IP address"},
		{in: "db:fe80::1%eth0", err: "is not an IP address"},
		{in: "db:[2001:db8::1", err: "is not an IP address"},
		{in: "my_host:10.0.0.5", want: HostEntry{IP: ip("10.0.0.5"), Names: []string{"my_host"}}}, // as Docker
		{in: "my host:10.0.0.5", err: "without blanks"},
		{in: "a#b:10.0.0.5", err: "without blanks, #"},
		{in: "a:b=10.0.0.5", err: "or :"},
		{in: "a=b:10.0.0.5", err: "is not an IP address"},
		{in: "2001:db8::1=v6", err: "or :"},
	} {
		got, err := ParseAddHost(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || errdefs.KindOf(err) != errdefs.KindInvalid {
				t.Errorf("ParseAddHost(%q) = %+v, %v; want an invalid error mentioning %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got.IP != tc.want.IP || got.HostGateway != tc.want.HostGateway || !slices.Equal(got.Names, tc.want.Names) {
			t.Errorf("ParseAddHost(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestHosts(t *testing.T) {
	ip := netip.MustParseAddr
	const head = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n" +
		"ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
	for _, tc := range []struct {
		name       string
		own, extra []HostEntry
		want       string
	}{
		{name: "empty", want: head},
		{
			name: "docker run --add-host",
			own:  []HostEntry{{IP: ip("172.17.0.2"), Names: []string{"3f4e5d6c7b8a"}}},
			extra: []HostEntry{
				{IP: ip("10.0.0.5"), Names: []string{"db"}},
				{IP: ip("2001:db8::1"), Names: []string{"v6"}},
				{IP: ip("10.0.0.5"), Names: []string{"db2"}},
			},
			want: head + "10.0.0.5\tdb\n2001:db8::1\tv6\n10.0.0.5\tdb2\n172.17.0.2\t3f4e5d6c7b8a\n",
		},
		{
			name: "own names and two addresses",
			own: []HostEntry{
				{IP: ip("172.17.0.2"), Names: []string{"web", "knit_web"}},
				{IP: ip("fd00::2"), Names: []string{"web", "knit_web"}},
			},
			want: head + "172.17.0.2\tweb knit_web\nfd00::2\tweb knit_web\n",
		},
		{
			name:  "unresolved and nameless entries left out",
			extra: []HostEntry{{Names: []string{"gw"}, HostGateway: true}, {IP: ip("10.0.0.1")}},
			want:  head,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(Hosts(tc.own, tc.extra))
			if got != tc.want {
				t.Errorf("Hosts =\n%s\nwant\n%s", got, tc.want)
			}
			if !strings.HasPrefix(got, string(Hosts(nil, nil))) {
				t.Errorf("Hosts(nil, nil) is not a prefix of the result")
			}
		})
	}
}

func TestMergeLines(t *testing.T) {
	old := "127.0.0.1\tlocalhost\n10.1.0.2\tweb\n"
	cur := "127.0.0.1\tlocalhost\n10.1.0.2\tweb\n10.9.9.9\textra\n" // the user added a line
	want := "127.0.0.1\tlocalhost\n10.1.0.2\tweb\n10.2.0.2\tweb\n"  // connected to a second network
	if got := string(MergeLines([]byte(cur), []byte(old), []byte(want))); got != "127.0.0.1\tlocalhost\n10.1.0.2\tweb\n10.9.9.9\textra\n10.2.0.2\tweb\n" {
		t.Errorf("connect: %q", got)
	}
	// Disconnected from the first: its line goes, the user's stays.
	cur2 := "127.0.0.1\tlocalhost\n10.1.0.2\tweb\n10.9.9.9\textra\n10.2.0.2\tweb\n"
	want2 := "127.0.0.1\tlocalhost\n10.2.0.2\tweb\n"
	if got := string(MergeLines([]byte(cur2), []byte(want), []byte(want2))); got != "127.0.0.1\tlocalhost\n10.9.9.9\textra\n10.2.0.2\tweb\n" {
		t.Errorf("disconnect: %q", got)
	}
	// A line of knit's the user took out or changed stays as the user left
	// it (the last search line wins: knit's must not come back after it).
	got := MergeLines([]byte("127.0.0.1\tlocalhost\n"), []byte(old), []byte(want))
	if string(got) != "127.0.0.1\tlocalhost\n10.2.0.2\tweb\n" {
		t.Errorf("after the user's removal: %q", got)
	}
	if got := MergeLines([]byte("nameserver 127.0.0.11\nsearch b.example\n"), []byte("nameserver 127.0.0.11\nsearch a.example\n"),
		[]byte("nameserver 198.51.100.2\nsearch a.example\n")); string(got) != "search b.example\nnameserver 198.51.100.2\n" {
		t.Errorf("the user's search line: %q", got)
	}
	// Merging again with the same record changes nothing (a refresh cut
	// short after its rewrite and done again).
	merged := MergeLines([]byte(cur), []byte(old), []byte(want))
	if again := MergeLines(merged, []byte(old), []byte(want)); string(again) != string(merged) {
		t.Errorf("merged twice: %q, once: %q", again, merged)
	}
}

func TestRewriteDone(t *testing.T) {
	old := "a\nb\n"
	for _, tc := range []struct {
		cur, pending string
		done         bool
	}{
		{"a\nb\n", "a\nb\nc\n", false},      // not begun
		{"a\nb\nc\n", "a\nb\nc\n", true},    // done
		{"a\nb\nx\nc\n", "a\nb\nc\n", true}, // done, in an edited file
		{"a\nb\n", "a\n", false},            // a line to take out still there
		{"a\n", "a\n", true},                // taken out
		{"a\nx\n", "a\nc\n", false},         // half: b out, c not in
	} {
		if got := RewriteDone([]byte(tc.cur), []byte(old), []byte(tc.pending)); got != tc.done {
			t.Errorf("RewriteDone(%q, %q, %q) = %v, want %v", tc.cur, old, tc.pending, got, tc.done)
		}
	}
}

package cli

import (
	"slices"
	"strings"
	"testing"
)

// knit port lists its lines in natural order, as docker port does.
func TestNaturalCompare(t *testing.T) {
	lines := []string{"8080/tcp -> 0.0.0.0:1", "443/tcp -> 0.0.0.0:8443", "80/udp -> 0.0.0.0:80", "80/tcp -> 10.0.0.10:80", "80/tcp -> 10.0.0.9:80"}
	slices.SortFunc(lines, naturalCompare)
	want := []string{"80/tcp -> 10.0.0.9:80", "80/tcp -> 10.0.0.10:80", "80/udp -> 0.0.0.0:80", "443/tcp -> 0.0.0.0:8443", "8080/tcp -> 0.0.0.0:1"}
	if !slices.Equal(lines, want) {
		t.Errorf("sorted:\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{{"a", "a", 0}, {"a1", "a01", -1}, {"a", "ab", -1}, {"a2", "a10", -1}, {"b", "a9", 1},
		{"net1", "net-a", -1}, {"a1c", "a01b", -1}, {"x", "x", 0}} {
		if got := naturalCompare(tc.a, tc.b); got != tc.want {
			t.Errorf("naturalCompare(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

package engine

import (
	"regexp"
	"testing"
)

func TestRandomName(t *testing.T) {
	plain, retried := regexp.MustCompile(`^[a-z]+_[a-z]+$`), regexp.MustCompile(`^[a-z]+_[a-z]+[0-9]$`)
	seen := map[string]bool{}
	for range 2000 {
		n := randomName(0)
		if !plain.MatchString(n) || !validName(n) {
			t.Fatalf("randomName(0) = %q", n)
		}
		seen[n] = true
		if n := randomName(3); !retried.MatchString(n) || !validName(n) {
			t.Fatalf("randomName(3) = %q", n)
		}
	}
	// 2000 draws from ~14,000 names: far more than a few hundred distinct.
	if len(seen) < 1500 {
		t.Errorf("2000 names drew only %d distinct ones", len(seen))
	}
	for _, list := range [][]string{adjectives, surnames} {
		dup := map[string]bool{}
		for _, w := range list {
			if dup[w] {
				t.Errorf("%q twice in a name list", w)
			}
			dup[w] = true
		}
	}
}

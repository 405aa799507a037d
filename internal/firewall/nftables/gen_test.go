package nftables

import (
	"reflect"
	"testing"
)

func TestStampRoundTrip(t *testing.T) {
	v := verified{boot: "6f1c0b8e-1d2a-4c1b-9a51-0d0c7a3e5f10", netns: 4026532281, gen: 4294967295,
		nets: map[string]string{"bridge": "0123456789abcdef", "n-1.x": "fedcba9876543210"}}
	got, err := parseStamp(v.String())
	if err != nil || !reflect.DeepEqual(got, v) {
		t.Fatalf("parseStamp(%q) = %+v, %v; want %+v", v.String(), got, err, v)
	}
	for _, bad := range []string{"", "gen 1\n", "boot x netns 1 gen\n", "boot x netns 1 gen 2\nnet a\n", "boot x netns 1 gen 2\nnope a b\n"} {
		if _, err := parseStamp(bad); err == nil {
			t.Errorf("parseStamp(%q) accepted a damaged stamp", bad)
		}
	}
}

package nftables

import "testing"

func TestUdataComment(t *testing.T) {
	for _, tt := range []struct {
		udata []byte
		want  string
	}{
		{append([]byte{0, 13}, "knit:owner=a\x00"...), "knit:owner=a"},
		{append([]byte{7, 2, 1, 2, 0, 2}, "x\x00"...), "x"}, // after another record
		{[]byte{0, 9, 'k'}, ""},                             // cut short
		{[]byte{1, 1, 1}, ""},                               // no comment
		{nil, ""},
	} {
		if got := udataComment(tt.udata); got != tt.want {
			t.Errorf("udataComment(%v) = %q, want %q", tt.udata, got, tt.want)
		}
	}
}

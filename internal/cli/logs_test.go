package cli

import (
	"testing"
	"time"
)

// --since and --until take Docker's forms: a duration back, a Unix
// timestamp, RFC 3339, or a local date and time.
func TestParseLogTime(t *testing.T) {
	now := time.Date(2026, 11, 30, 7, 0, 0, 0, time.UTC)
	local := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02T15:04:05", s, time.Local)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"42m", now.Add(-42 * time.Minute)},
		{"1h30m", now.Add(-90 * time.Minute)},
		{"1764486000", time.Unix(1764486000, 0)},
		{"1764486000.25", time.Unix(1764486000, 250000000)},
		{"2026-11-30T06:00:00Z", time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)},
		{"2026-11-30T06:00:00.5+01:00", time.Date(2026, 11, 30, 5, 0, 0, 500000000, time.UTC)},
		{"2026-11-30T06:00:00", local("2026-11-30T06:00:00")},
		{"2026-11-30", local("2026-11-30T00:00:00")},
		{"0", time.Unix(0, 0)},
		{"2026-11-30Z", time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)},
		{"2026-11-30T06Z", time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)},
		{"2026-11-30T06:30+01:00", time.Date(2026, 11, 30, 5, 30, 0, 0, time.UTC)},
	} {
		got, err := parseLogTime("--since", tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseLogTime(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"yesterday", "1.2.3", "-5m5", "2026-13-01", "12abc"} {
		if _, err := parseLogTime("--since", bad, now); err == nil {
			t.Errorf("parseLogTime(%q): no error", bad)
		}
	}
}

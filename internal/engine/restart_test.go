package engine

import (
	"testing"
	"time"
)

func TestParseRestartPolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want RestartPolicy
		bad  bool
	}{
		{"no", RestartPolicy{Name: "no"}, false},
		{"always", RestartPolicy{Name: "always"}, false},
		{"unless-stopped", RestartPolicy{Name: "unless-stopped"}, false},
		{"on-failure", RestartPolicy{Name: "on-failure"}, false},
		{"on-failure:5", RestartPolicy{Name: "on-failure", MaxRetries: 5}, false},
		{"on-failure:0", RestartPolicy{Name: "on-failure"}, false},
		{"on-failure:-1", RestartPolicy{}, true},
		{"on-failure:x", RestartPolicy{}, true},
		{"always:3", RestartPolicy{}, true},
		{"sometimes", RestartPolicy{}, true},
		{":3", RestartPolicy{}, true},
		{"", RestartPolicy{}, false}, // as no
	} {
		got, err := ParseRestartPolicy(tc.in)
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("ParseRestartPolicy(%q) = %+v, %v", tc.in, got, err)
		}
	}
	if p, _ := ParseRestartPolicy("on-failure:3"); p.String() != "on-failure:3" || p.Mode() != "on-failure" {
		t.Errorf("String %q Mode %q", p.String(), p.Mode())
	}
	if p := (RestartPolicy{}); p.Restarts() || p.Mode() != "no" {
		t.Errorf("the zero policy: Restarts %v, Mode %q", p.Restarts(), p.Mode())
	}
}

func TestRestartPolicyWants(t *testing.T) {
	for _, tc := range []struct {
		p           string
		code, count int
		want        bool
	}{
		{"no", 1, 0, false},
		{"always", 0, 100, true},
		{"unless-stopped", 0, 0, true},
		{"on-failure", 0, 0, false},
		{"on-failure", 1, 1000, true},
		{"on-failure:2", 1, 1, true},
		{"on-failure:2", 1, 2, false},
		{"on-failure:2", 137, 0, true},
	} {
		p, err := ParseRestartPolicy(tc.p)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.wants(tc.code, tc.count); got != tc.want {
			t.Errorf("%s after %d restarts, code %d: %v", tc.p, tc.count, tc.code, got)
		}
	}
}

// Docker's back-off: 100 ms, doubled up to a minute, reset by a run of 10 s.
func TestBackoff(t *testing.T) {
	var b backoff
	var got []time.Duration
	for range 12 {
		got = append(got, b.next(time.Second))
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v, want %v ms", got, want)
		}
	}
	if d := b.next(10 * time.Second); d != 100*time.Millisecond {
		t.Errorf("after a 10 s run: %v, want 100ms", d)
	}
}

// A knit restart's request holds for the process it stopped, until its
// time: a restart that died half-way does not restart a later exit.
func TestRestartRequested(t *testing.T) {
	p, other := Proc{Pid: 10, Start: 5}, Proc{Pid: 11, Start: 6}
	s := State{RestartFor: p}
	if !s.restartRequested(p) || s.restartRequested(other) {
		t.Error("a request without an end: for its process only")
	}
	s.RestartBy = time.Now().Add(time.Minute)
	if !s.restartRequested(p) {
		t.Error("a request before its end not honoured")
	}
	s.RestartBy = time.Now().Add(-time.Second)
	if s.restartRequested(p) {
		t.Error("a request past its end honoured")
	}
	s.clearRestart()
	if s.restartRequested(Proc{}) || s.RestartFor != (Proc{}) {
		t.Error("a cleared request still holds")
	}
}

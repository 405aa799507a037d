package cli

import (
	"slices"
	"testing"
)

func TestFilterPS(t *testing.T) {
	out := "UID          PID    PPID  C STIME TTY          TIME CMD\n" +
		"root           1       0  0 07:00 ?        00:00:01 /sbin/init\n" +
		"root        4242    4240  0 07:01 ?        00:00:00 sleep 300\n" +
		"65534       4250    4242  0 07:01 ?        00:00:00 sh -c echo 4242\n"
	got, err := filterPS(out, []int{4242, 4250})
	want := []string{
		"UID          PID    PPID  C STIME TTY          TIME CMD",
		"root        4242    4240  0 07:01 ?        00:00:00 sleep 300",
		"65534       4250    4242  0 07:01 ?        00:00:00 sh -c echo 4242",
	}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("filterPS = %q, %v", got, err)
	}
	if _, err := filterPS("USER COMMAND\nroot init\n", []int{1}); err == nil {
		t.Error("an output without a PID column: no error")
	}
}

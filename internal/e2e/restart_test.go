package e2e

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/testutil"
)

// inspectField is one field of a container's inspect template, trimmed.
func inspectField(t *testing.T, s *testutil.Sandbox, name, tmpl string) string {
	t.Helper()
	return strings.TrimSpace(s.MustKnit(t, "inspect", "-f", tmpl, name))
}

// --restart on-failure:N runs the command N more times when it fails, in
// the same network namespace with the same address, then records it
// exited with its code.
func TestRestartOnFailure(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--restart", "on-failure:2", "--name", "flaky", "--rootfs", bb,
		"sh", "-c", `ip -4 -o addr show eth0 | awk '{print $4}'; sleep 0.2; exit 3`)
	// logs -f follows it through its restarts, to its end.
	if out := s.MustKnit(t, "logs", "-f", "flaky"); strings.Count(out, "172.17.0.2/16") != 3 {
		t.Errorf("logs -f through two restarts: %q, want three runs", out)
	}
	eventually(t, func() (string, error) {
		if st := inspectField(t, s, "flaky", "{{.State.Status}}"); st != "exited" {
			return "", fmt.Errorf("flaky is %s, want exited after its restarts", st)
		}
		return "", nil
	})
	if got := inspectField(t, s, "flaky", "{{.RestartCount}} {{.State.ExitCode}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}"); got != "2 3 on-failure:2" {
		t.Errorf("RestartCount, ExitCode, policy = %q, want 2 3 on-failure:2", got)
	}
	// Three runs, one log, the same address each time.
	lines := strings.Fields(s.MustKnit(t, "logs", "flaky"))
	if len(lines) != 3 || lines[0] != "172.17.0.2/16" || lines[1] != lines[0] || lines[2] != lines[0] {
		t.Errorf("logs of three runs: %q, want the same address three times", lines)
	}
	// A success is not restarted by on-failure.
	s.MustKnit(t, "run", "-d", "--restart", "on-failure", "--name", "fine", "--rootfs", bb, "true")
	eventually(t, func() (string, error) {
		if st := inspectField(t, s, "fine", "{{.State.Status}} {{.RestartCount}}"); st != "exited 0" {
			return "", fmt.Errorf("fine: %s, want exited 0", st)
		}
		return "", nil
	})
	s.MustKnit(t, "rm", "flaky", "fine")
	assertEmpty(t, s, "after the restarts")
}

// --restart always starts the command again whatever its code, until
// knit stops it, kills it (SIGKILL or its stop signal) or removes it;
// other signals leave the policy in place, as in Docker. Between runs the
// container shows as restarting.
func TestRestartAlways(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	restarts := func(name string) int {
		var n int
		fmt.Sscan(inspectField(t, s, name, "{{.RestartCount}}"), &n)
		return n
	}
	awaitRestarts := func(name string, n int) {
		t.Helper()
		eventually(t, func() (string, error) {
			if got := restarts(name); got < n {
				return "", fmt.Errorf("%s restarted %d times, want %d", name, got, n)
			}
			return "", nil
		})
	}
	// stays: stop ends it, and it stays stopped.
	s.MustKnit(t, "run", "-d", "--restart", "always", "--name", "stays", "--rootfs", bb, "sh", "-c", "sleep 0.2")
	awaitRestarts("stays", 2)
	ip := ipOn(t, s, "stays", "bridge")
	s.MustKnit(t, "stop", "stays")
	n := restarts("stays")
	time.Sleep(time.Second) // the back-off is 0.8 s at most by now: a restart would show
	if st := inspectField(t, s, "stays", "{{.State.Status}}"); st != "exited" || restarts("stays") != n {
		t.Errorf("after stop: %s with %d restarts (had %d), want exited and no more", st, restarts("stays"), n)
	}
	if ip != "172.17.0.2" {
		t.Errorf("address across restarts: %s", ip)
	}

	// sig: USR1 is a message, not a stop; SIGKILL is a stop. (Under
	// --init, sleep is not PID 1, which ignores signals it has no handler
	// for: USR1 kills it.)
	s.MustKnit(t, "run", "-d", "--restart", "always", "--init", "--name", "sig", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "kill", "-s", "USR1", "sig")
	awaitRestarts("sig", 1)
	eventually(t, func() (string, error) {
		if st := inspectField(t, s, "sig", "{{.State.Status}}"); st != "running" {
			return "", fmt.Errorf("sig is %s after its restart", st)
		}
		return "", nil
	})
	s.MustKnit(t, "kill", "sig")
	eventually(t, func() (string, error) {
		if st := inspectField(t, s, "sig", "{{.State.Status}}"); st != "exited" {
			return "", fmt.Errorf("sig is %s after kill, want exited", st)
		}
		return "", nil
	})

	// loop: a command that fails at once waits longer each time, and
	// shows as restarting meanwhile; exec is refused then, rm -f ends it.
	s.MustKnit(t, "run", "-d", "--restart", "always", "--name", "loop", "--rootfs", bb, "sh", "-c", "exit 1")
	eventually(t, func() (string, error) {
		out := s.MustKnit(t, "ps", "--filter", "status=restarting", "--format", "{{.Names}} {{.Status}}")
		if !strings.HasPrefix(out, "loop Restarting (1) ") {
			return "", fmt.Errorf("ps status=restarting: %q", out)
		}
		return "", nil
	})
	if r := s.Knit("exec", "loop", "true"); r.Code == 0 || !strings.Contains(r.Stderr, "restarting") {
		t.Errorf("exec while restarting: exit %d, %q", r.Code, r.Stderr)
	}
	if got := inspectField(t, s, "loop", "{{.State.Running}} {{.State.Restarting}}"); got != "true true" && got != "true false" {
		t.Errorf("Running Restarting = %s", got)
	}
	s.MustKnit(t, "rm", "-f", "loop")
	s.MustKnit(t, "rm", "stays", "sig")
	assertEmpty(t, s, "after rm -f of a restarting container")
}

// What --restart refuses, before anything is made.
func TestRestartRefused(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--restart", "always", "--rm", "-d"}, "--rm"},
		{[]string{"--restart", "always"}, "needs -d"},
		{[]string{"--restart", "sometimes", "-d"}, "invalid restart policy"},
		{[]string{"--restart", "always:3", "-d"}, "on-failure only"},
		{[]string{"--restart", "on-failure:-1", "-d"}, "negative"},
		{[]string{"--restart", "on-failure:x", "-d"}, "integer"},
	} {
		args := append(append([]string{"run"}, tc.args...), "--rootfs", bb, "true")
		if r := s.Knit(args...); r.Code != 125 || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%q: exit %d, %q; want 125 and %q", tc.args, r.Code, r.Stderr, tc.want)
		}
	}
	if out := s.MustKnit(t, "ps", "-a", "-q"); out != "" {
		t.Errorf("refused runs left containers: %q", out)
	}
}

// A command that cannot start is not started again, as in Docker: run -d
// reports the first failure, and a restart that fails stops the container.
// A container sharing the network of a container that stopped is not
// restarted either: its namespace is gone.
func TestRestartStopsOnFailedStart(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	awaitExited := func(name string) string {
		t.Helper()
		return eventually(t, func() (string, error) {
			got := inspectField(t, s, name, "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}")
			if !strings.HasPrefix(got, "exited ") {
				return "", fmt.Errorf("%s: %s", name, got)
			}
			return got, nil
		})
	}
	if r := s.Knit("run", "-d", "--restart", "always", "--name", "missing", "--rootfs", bb, "no-such-command"); r.Code != 127 {
		t.Errorf("run -d --restart always of a missing command: exit %d, %q", r.Code, r.Stderr)
	}
	time.Sleep(300 * time.Millisecond) // two restarts' worth of back-off
	if got := awaitExited("missing"); got != "exited 127 0" {
		t.Errorf("missing: %s, want exited 127 and no restart", got)
	}
	// Runs once, then removes itself: the restart finds no command.
	script := filepath.Join(s.Dir(), "once.sh")
	s.MustRun(t, "sh", "-c", `printf '#!/bin/sh\nrm -f "$0"\nexit 1\n' > "$1" && chmod +x "$1"`, "sh", script)
	s.MustKnit(t, "run", "-d", "--restart", "always", "--name", "once", script)
	if got := awaitExited("once"); got != "exited 127 1" {
		t.Errorf("once: %s, want exited 127 after one restart", got)
	}
	// joiner restarts while owner runs, and stops with it.
	s.MustKnit(t, "run", "-d", "--name", "owner", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "-d", "--restart", "always", "--network", "container:owner", "--name", "joiner", "--rootfs", bb, "sh", "-c", "sleep 0.1")
	eventually(t, func() (string, error) {
		if n := inspectField(t, s, "joiner", "{{.RestartCount}}"); n == "0" {
			return "", errors.New("joiner has not restarted")
		}
		return "", nil
	})
	// Sampled until one lands between two runs (its back-off grows).
	eventually(t, func() (string, error) {
		got := inspectField(t, s, "joiner", "{{.State.Restarting}} {{.State.Pid}}")
		if !strings.HasPrefix(got, "true ") {
			return "", errors.New("not caught restarting yet")
		}
		if got != "true 0" {
			t.Errorf("Restarting, Pid = %s: a restarting container has no process", got)
		}
		return "", nil
	})
	s.MustKnit(t, "stop", "-t", "0", "owner")
	awaitExited("joiner")
	s.MustKnit(t, "rm", "owner", "joiner", "missing", "once")
	assertEmpty(t, s, "after the failed restarts")
}

// wait blocks until each container stops, through its restarts, and
// prints its exit code, as docker wait.
func TestWait(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "w1", "--rootfs", bb, "sh", "-c", "sleep 0.5; exit 4")
	s.MustKnit(t, "run", "-d", "--name", "w2", "--restart", "on-failure:1", "--rootfs", bb, "sh", "-c", "sleep 0.3; exit 2")
	start := time.Now()
	if out := s.MustKnit(t, "wait", "w1", "w2"); out != "4\n2\n" {
		t.Errorf("wait w1 w2: %q, want 4 and 2", out)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("wait returned after %v, before the containers stopped", took)
	}
	if got := inspectField(t, s, "w2", "{{.State.Status}} {{.RestartCount}}"); got != "exited 1" {
		t.Errorf("w2 after wait: %s, want exited after its one restart", got)
	}
	if out := s.MustKnit(t, "wait", "w1"); out != "4\n" { // stopped already
		t.Errorf("wait of a stopped container: %q", out)
	}
	// --rm: the code outlives the record, for a wait begun before.
	s.MustKnit(t, "run", "-d", "--rm", "--name", "w3", "--rootfs", bb, "sh", "-c", "sleep 0.3; exit 6")
	if out := s.MustKnit(t, "wait", "w3"); out != "6\n" {
		t.Errorf("wait of a --rm container: %q, want 6", out)
	}
	if r := s.Knit("wait", "nosuch", "w1"); r.Code != 1 || r.Stdout != "4\n" || !strings.Contains(r.Stderr, "no such container") {
		t.Errorf("wait nosuch w1: exit %d, %q, %q", r.Code, r.Stdout, r.Stderr)
	}
	s.MustKnit(t, "rm", "w1", "w2")
}

// top lists the container's processes, from the host's ps, with its
// options, as docker top.
func TestTop(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--init", "--name", "topped", "--rootfs", bb, "sh", "-c", "sleep 301 & sleep 302")
	eventually(t, func() (string, error) {
		out := s.MustKnit(t, "top", "topped")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || !strings.Contains(lines[0], "PID") || !strings.Contains(out, "sleep 301") || !strings.Contains(out, "sleep 302") || !strings.Contains(out, "_init") {
			return "", fmt.Errorf("top: %q, want the header, init and two sleeps (sh execs the last)", out)
		}
		return "", nil
	})
	if out := s.MustKnit(t, "top", "topped", "-o", "pid,args"); !strings.Contains(out, "sleep 302") || strings.Contains(out, "UID") {
		t.Errorf("top -o pid,args: %q", out)
	}
	if r := s.Knit("top", "topped", "-o", "args"); r.Code != 1 || !strings.Contains(r.Stderr, "PID") {
		t.Errorf("top without a PID column: exit %d, %q", r.Code, r.Stderr)
	}
	s.MustKnit(t, "stop", "-t", "0", "topped")
	if r := s.Knit("top", "topped"); r.Code != 1 || !strings.Contains(r.Stderr, "not running") {
		t.Errorf("top of a stopped container: exit %d, %q", r.Code, r.Stderr)
	}
	s.MustKnit(t, "rm", "topped")
}

// knit restart stops a detached container's command and starts it again
// at once, on the same address, as docker restart; it cuts a policy's
// back-off short, and refuses what it cannot start again.
func TestRestartCommand(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "again", "--rootfs", bb, "sh", "-c", `trap "exit 0" TERM; echo started; while :; do sleep 0.1; done`)
	eventually(t, func() (string, error) {
		if out := s.MustKnit(t, "logs", "again"); out != "started\n" {
			return "", fmt.Errorf("logs: %q", out)
		}
		return "", nil
	})
	pid := inspectField(t, s, "again", "{{.State.Pid}}")
	if out := s.MustKnit(t, "restart", "again"); out != "again\n" {
		t.Errorf("restart printed %q", out)
	}
	if got := inspectField(t, s, "again", "{{.State.Status}} {{.NetworkSettings.IPAddress}} {{.RestartCount}}"); got != "running 172.17.0.2 0" {
		t.Errorf("after restart: %s, want running on its address (not a policy restart)", got)
	}
	if inspectField(t, s, "again", "{{.State.Pid}}") == pid {
		t.Error("the same process after restart")
	}
	eventually(t, func() (string, error) {
		if out := s.MustKnit(t, "logs", "again"); out != "started\nstarted\n" {
			return "", fmt.Errorf("logs after restart: %q", out)
		}
		return "", nil
	})
	// A policy's back-off (here growing past a second) is cut short.
	s.MustKnit(t, "run", "-d", "--restart", "always", "--name", "backoff", "--rootfs", bb, "sh", "-c", "exit 1")
	eventually(t, func() (string, error) {
		if n, _ := strconv.Atoi(inspectField(t, s, "backoff", "{{.RestartCount}}")); n < 4 {
			return "", fmt.Errorf("backoff restarted %d times", n)
		}
		return "", nil
	})
	start := time.Now()
	s.MustKnit(t, "restart", "-t", "0", "backoff")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("restart during the back-off took %v", took)
	}
	s.MustKnit(t, "rm", "-f", "backoff")
	// A stop racing a restart wins: the container ends stopped, whichever
	// came first.
	for i := range 3 {
		name := fmt.Sprintf("race%d", i)
		s.MustKnit(t, "run", "-d", "--name", name, "--rootfs", bb, "sleep", "300")
		restarted := make(chan testutil.Result, 1)
		go func() { restarted <- s.Knit("restart", "-t", "0", name) }()
		start := time.Now()
		s.MustKnit(t, "stop", "-t", "0", name)
		// Not the 10 s that stop waits for a supervisor before it gives up
		// on it: a restart that slipped in after the stop's signal.
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s: stop racing restart took %v: the restart was not held off", name, took)
		}
		<-restarted // either outcome: it may come too late or too early
		time.Sleep(300 * time.Millisecond)
		if st := inspectField(t, s, name, "{{.State.Status}}"); st != "exited" {
			t.Errorf("%s after stop racing restart: %s, want exited", name, st)
		}
		s.MustKnit(t, "rm", "-f", name)
	}
	// Refused: a stopped container, a foreground run's.
	s.MustKnit(t, "stop", "-t", "0", "again")
	if r := s.Knit("restart", "again"); r.Code != 1 || !strings.Contains(r.Stderr, "not running") {
		t.Errorf("restart of a stopped container: exit %d, %q", r.Code, r.Stderr)
	}
	s.MustKnit(t, "rm", "again")
	assertEmpty(t, s, "after the restarts")
}

// stats shows a busy container's CPU, its tasks and its network traffic,
// from its namespaces, as docker stats --no-stream.
func TestStats(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "busy", "--rootfs", bb, "sh", "-c", "while :; do :; done")
	s.MustKnit(t, "run", "-d", "--name", "idle", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "exec", "idle", "ping", "-c", "3", "-i", "0.2", "172.17.0.1")
	out := s.MustKnit(t, "stats", "--no-stream")
	rows := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(l)
		rows[f[1]] = f
	}
	// ID NAME CPU% USAGE / LIMIT MEM% RX / TX READ / WRITE PIDS
	busy, idle := rows["busy"], rows["idle"]
	if len(busy) != 14 || len(idle) != 14 {
		t.Fatalf("stats:\n%s", out)
	}
	if cpu, _ := strconv.ParseFloat(strings.TrimSuffix(busy[2], "%"), 64); cpu < 30 {
		t.Errorf("a busy loop's CPU: %s\n%s", busy[2], out)
	}
	if cpu, _ := strconv.ParseFloat(strings.TrimSuffix(idle[2], "%"), 64); cpu > 5 {
		t.Errorf("sleep's CPU: %s\n%s", idle[2], out)
	}
	if idle[13] != "1" || idle[7] == "0B" || idle[9] == "0B" {
		t.Errorf("idle: PIDS %s, NET I/O %s / %s; want 1 task and the pings' traffic\n%s", idle[13], idle[7], idle[9], out)
	}
	if r := s.Knit("stats", "--no-stream", "nosuch"); r.Code != 1 {
		t.Errorf("stats of a missing container: exit %d", r.Code)
	}
	// --format, as docker stats': the fields by name, json a line each.
	if got := s.MustKnit(t, "stats", "--no-stream", "--format", "{{.Container}} {{.Name}} {{.PIDs}}", "idle"); got != "idle idle 1\n" {
		t.Errorf("stats --format: %q", got)
	}
	if got := s.MustKnit(t, "stats", "--no-stream", "--format", "json", "idle"); !strings.HasPrefix(got, `{"BlockIO":`) || !strings.Contains(got, `"Name":"idle"`) {
		t.Errorf("stats --format json: %q", got)
	}
	s.MustKnit(t, "rm", "-f", "busy", "idle")
}

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/testutil"
)

func TestRunFlags(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)

	// -e, -w, --ip, --mac-address.
	got := s.MustKnit(t, "run", "--rm", "-e", "GREETING=hi", "-w", "/tmp/work", "--ip", "172.17.0.50",
		"--mac-address", "02:00:00:aa:bb:cc", "--rootfs", bb,
		"sh", "-c", "echo $GREETING; pwd; ip -o -4 addr show eth0; cat /sys/class/net/eth0/address")
	for _, want := range []string{"hi\n", "/tmp/work\n", "inet 172.17.0.50/16", "02:00:00:aa:bb:cc"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	// -t gives the command a terminal; without it, none.
	if out := s.MustKnit(t, "run", "--rm", "-t", "--rootfs", bb, "sh", "-c", "test -t 1 && echo is-a-tty"); !strings.Contains(out, "is-a-tty") {
		t.Errorf("-t: %q", out)
	}
	// The command can name its terminal (tty, ttyname: sudo, ssh and
	// script ask for it), though its /dev/pts is its own.
	if out := s.MustKnit(t, "run", "--rm", "-t", "--rootfs", bb, "tty"); strings.TrimSpace(out) != "/dev/console" {
		t.Errorf("-t: tty = %q, want /dev/console", out)
	}
	if r := s.Knit("run", "--rm", "--rootfs", bb, "sh", "-c", "test -t 1"); r.Code != 1 {
		t.Errorf("without -t stdout should not be a terminal: exit %d", r.Code)
	}
	// From a terminal, without -t, the container's streams are pipes, as
	// Docker's: never the caller's terminal (a shell would take itself for
	// interactive, and could change the terminal's modes).
	for _, flags := range []string{"--rm", "--rm -i", "-i --name kept"} {
		cmd := fmt.Sprintf(`%s run %s --rootfs %s sh -c 'for f in 0 1 2; do [ -t $f ] && echo tty$f; done; echo done' </dev/tty`, knit, flags, bb)
		out := s.MustRun(t, "script", "-qec", cmd, "/dev/null")
		if strings.ReplaceAll(out, "\r", "") != "done\n" {
			t.Errorf("knit run %s from a terminal: %q, want no terminal among the container's streams", flags, out)
		}
	}
	// exec too; and a process it leaves running with its streams open
	// does not keep knit exec waiting (docker exec's would).
	s.MustKnit(t, "run", "-d", "--name", "execpipes", "--rootfs", bb, "sleep", "300")
	for _, flags := range []string{"", "-i"} {
		cmd := fmt.Sprintf(`%s exec %s execpipes sh -c 'for f in 0 1 2; do [ -t $f ] && echo tty$f; done; echo done; sleep 30 &' </dev/tty`, knit, flags)
		out := s.MustRun(t, "timeout", "10", "script", "-qec", cmd, "/dev/null")
		if strings.ReplaceAll(out, "\r", "") != "done\n" {
			t.Errorf("knit exec %s from a terminal: %q, want no terminal among the command's streams", flags, out)
		}
	}
	// One that keeps writing does not either.
	if r := s.Run("timeout", "10", knit, "exec", "execpipes", "sh", "-c", "(while :; do echo x; sleep 0.05; done) & echo started"); r.Code != 0 || !strings.Contains(r.Stdout, "started\n") { // the loop's first x may come first
		t.Errorf("knit exec leaving a process that keeps writing: exit %d (124: it hung), %q", r.Code, r.Stdout)
	}
	// What such a process writes after knit exec returned fails, as it
	// would once the reader of its stdout went away.
	s.MustKnit(t, "exec", "execpipes", "sh", "-c", "(trap '' PIPE; sleep 0.5; if echo late; then r=written; else r=failed; fi; echo $r > /tmp/late) & echo started")
	eventually(t, func() (string, error) {
		switch out := s.Knit("exec", "execpipes", "cat", "/tmp/late").Stdout; out {
		case "failed\n":
			return "", nil
		case "":
			return "", errors.New("the leftover process has not written yet")
		default:
			t.Fatalf("a write to the pipe after knit exec returned: %q, want it failed", out)
			return "", nil
		}
	})
	s.MustKnit(t, "rm", "-f", "kept", "execpipes")
	// A Docker user's image name is taken for the command, and said so.
	for _, image := range []string{"busybox:latest", "mageedu/httpd:v0.2"} {
		if r := s.Knit("run", "--rm", "--rootfs", bb, image); r.Code != 127 || !strings.Contains(r.Stderr, "knit runs no images") {
			t.Errorf("run %s: exit %d, %q; want 127 and a hint at --rootfs", image, r.Code, r.Stderr)
		}
	}
	// With -t piped into a reader that leaves, knit is not killed by
	// SIGPIPE (which would skip restoring the terminal and recording the
	// exit): it hangs up the container's terminal, as closing a window
	// does; a command that handles SIGHUP ends on it, one that does not
	// (PID 1 ignores it then) is killed a second later.
	for script, want := range map[string]string{
		`trap "exit 129" HUP; while :; do echo y; done`: "129",
		`while :; do echo y; done`:                      "137",
	} {
		pipe := s.Run("bash", "-c", knit+" run --rm -t --rootfs "+bb+" sh -c '"+script+"' | head -1 >/dev/null; echo ${PIPESTATUS[0]}")
		if code := strings.TrimSpace(pipe.Stdout); code != want {
			t.Errorf("knit run -t sh -c %q piped into head -1: exit %q, want %s\n%s", script, code, want, pipe.Stderr)
		}
	}
	// -i forwards stdin; without -i the command reads EOF.
	if out := s.MustRun(t, "sh", "-c", "echo piped | "+knit+" run --rm -i --rootfs "+bb+" cat"); out != "piped\n" {
		t.Errorf("-i: %q", out)
	}
	if out := s.MustRun(t, "sh", "-c", "echo piped | "+knit+" run --rm --rootfs "+bb+" cat"); out != "" {
		t.Errorf("without -i: %q", out)
	}
	// The PID namespace has its own /proc: the command is PID 1.
	if out := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"); out != "1\n3\n" && out != "1\n2\n" {
		// sh, ls and grep (which may not have started when ls reads /proc)
		t.Errorf("pid namespace: %q, want the shell as PID 1 and only its own processes", out)
	}
	// Without --rootfs the host's root is seen through a private mount namespace.
	if out := s.MustKnit(t, "run", "--rm", "sh", "-c", "test -x /usr/bin/busybox && hostname"); strings.TrimSpace(out) == "" {
		t.Errorf("host rootfs run: %q", out)
	}
}

func TestDetachedLogsStopAndPs(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	id := strings.TrimSpace(s.MustKnit(t, "run", "-d", "--name", "talker", "--rootfs", bb, "sh", "-c",
		"echo out; echo err >&2; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done"))
	if len(id) != 64 {
		t.Fatalf("run -d printed %q, want a 64-character ID", id)
	}
	eventually(t, func() (string, error) {
		if r := s.Knit("logs", "talker"); r.Stdout != "out\n" || r.Stderr != "err\n" {
			return "", fmt.Errorf("logs: stdout %q, stderr %q", r.Stdout, r.Stderr)
		}
		return "", nil
	})
	if q := s.MustKnit(t, "ps", "-q"); strings.TrimSpace(q) != id[:12] {
		t.Errorf("ps -q = %q, want %s", q, id[:12])
	}
	if f := s.MustKnit(t, "ps", "--format", "{{.Names}} {{.State}} {{.Command}}"); f != "talker running \"sh -c echo out; ech…\"\n" {
		t.Errorf("ps --format = %q", f)
	}
	// As Docker's list formats: \n and \t written literally become a
	// newline and a tab, kept as they are without "table"; -q wins over
	// --format, said on stderr.
	if f := s.MustKnit(t, "ps", "--format", `{{.Names}}\n{{.State}}\t.`); f != "talker\nrunning\t.\n" {
		t.Errorf("ps --format with \\n and \\t = %q", f)
	}
	if r := s.Knit("ps", "-q", "--format", "{{.Names}}"); r.Code != 0 || strings.TrimSpace(r.Stdout) != id[:12] || !strings.Contains(r.Stderr, "Ignoring custom format") {
		t.Errorf("ps -q --format: exit %d, %q, %q; want the ID and a warning", r.Code, r.Stdout, r.Stderr)
	}
	if f := s.MustKnit(t, "network", "ls", "--filter", "name=^bridge$", "--format", `{{.Name}}\t{{.Driver}}`); f != "bridge\tbridge\n" {
		t.Errorf("network ls --format with a tab = %q, want the tab kept", f)
	}
	// Docker's names begin with a slash (inspect's .Name): /talker is
	// talker, --name /slashed is slashed.
	if f := s.MustKnit(t, "inspect", "-f", "{{.Name}}", "/talker"); f != "/talker\n" {
		t.Errorf("inspect /talker = %q", f)
	}
	s.MustKnit(t, "run", "-d", "--name", "/slashed", "--rootfs", bb, "sleep", "300")
	if f := s.MustKnit(t, "ps", "--filter", "name=slashed", "--format", "{{.Names}}"); f != "slashed\n" {
		t.Errorf("run --name /slashed: ps shows %q", f)
	}
	s.MustKnit(t, "rm", "-f", "/slashed")
	// docker system prune -af, as scripts write it (knit has no images).
	s.MustKnit(t, "system", "prune", "-af", "--volumes")
	var row map[string]any
	if f := s.MustKnit(t, "ps", "--format", "json"); json.Unmarshal([]byte(f), &row) != nil || row["Names"] != "talker" || row["State"] != "running" {
		t.Errorf("ps --format json = %q", f)
	}
	if r := s.Knit("inspect", "nosuch"); r.Code != 1 || r.Stdout != "[]\n" || !strings.Contains(r.Stderr, "no such object: nosuch") {
		t.Errorf("inspect nosuch: exit %d, %q, %q; want 1, [] and no such object", r.Code, r.Stdout, r.Stderr)
	}
	// As docker inspect: a network too, unless --type says otherwise.
	if f := s.MustKnit(t, "inspect", "-f", "{{.Name}} {{.Driver}}", "bridge"); f != "bridge bridge\n" {
		t.Errorf("inspect bridge (the network) = %q", f)
	}
	if r := s.Knit("inspect", "--type", "container", "bridge"); r.Code != 1 || !strings.Contains(r.Stderr, "no such container: bridge") {
		t.Errorf("inspect --type container bridge: exit %d, %q", r.Code, r.Stderr)
	}
	if f := s.MustKnit(t, "inspect", "--type", "container", "-f", "{{.Name}}", "talker"); f != "/talker\n" {
		t.Errorf("inspect --type container talker = %q", f)
	}
	s.MustKnit(t, "stop", "-t", "5", "talker")
	if l := s.MustKnit(t, "logs", "talker"); !strings.Contains(l, "bye") {
		t.Errorf("stop should deliver SIGTERM first; logs:\n%s", l)
	}
	if ps := s.MustKnit(t, "ps"); strings.Contains(ps, "talker") {
		t.Errorf("ps without -a shows a stopped container:\n%s", ps)
	}
	if ps := s.MustKnit(t, "ps", "-a"); !strings.Contains(ps, "Exited (0)") {
		t.Errorf("ps -a:\n%s", ps)
	}
	// Docker's filters, -n and -l; a status filter sees stopped ones too.
	if f := s.MustKnit(t, "ps", "-f", "status=exited", "-f", "name=talk", "--format", "{{.Names}}"); f != "talker\n" {
		t.Errorf("ps -f status=exited -f name=talk = %q", f)
	}
	if f := s.MustKnit(t, "ps", "-f", "network=bridge", "--format", "{{.Names}}"); f != "" {
		t.Errorf("ps -f network=bridge (no container running) = %q", f)
	}
	if f := s.MustKnit(t, "ps", "-l", "-q"); f != id[:12]+"\n" {
		t.Errorf("ps -lq = %q, want %s", f, id[:12])
	}
	if f := s.MustKnit(t, "ps", "-n", "0", "-q"); f != "" {
		t.Errorf("ps -n 0 -q = %q, want the running ones (none), as Docker's -n 0 is no limit", f)
	}
	if r := s.Knit("ps", "-f", "color=red"); r.Code != 1 || !strings.Contains(r.Stderr, "invalid filter 'color'") {
		t.Errorf("ps -f color=red: exit %d, %q", r.Code, r.Stderr)
	}
	// logs -f returns when the container ends.
	s.MustKnit(t, "run", "-d", "--name", "counter", "--rootfs", bb, "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done")
	if l := s.MustKnit(t, "logs", "-f", "counter"); l != "1\n2\n3\n" {
		t.Errorf("logs -f = %q", l)
	}
	// --tail / -n: the last lines only.
	if l := s.MustKnit(t, "logs", "--tail", "2", "counter"); l != "2\n3\n" {
		t.Errorf("logs --tail 2 = %q", l)
	}
	if l := s.MustKnit(t, "logs", "-n", "0", "counter"); l != "" {
		t.Errorf("logs -n 0 = %q", l)
	}
	// --details: the lines' attributes (none) and a space, as Docker's.
	if l := s.MustKnit(t, "logs", "--details", "--tail", "1", "counter"); l != " 3\n" {
		t.Errorf("logs --details = %q", l)
	}
	// stop -s: the signal sent first (the trap answers USR1, not TERM).
	s.MustKnit(t, "run", "-d", "--name", "usr1", "--rootfs", bb, "sh", "-c",
		"trap 'echo got-usr1; exit 0' USR1; echo ready; while :; do sleep 0.1; done")
	eventually(t, func() (string, error) {
		if l := s.MustKnit(t, "logs", "usr1"); !strings.Contains(l, "ready") {
			return "", fmt.Errorf("logs: %q", l)
		}
		return "", nil
	})
	s.MustKnit(t, "stop", "-s", "USR1", "--timeout", "5", "usr1")
	if l := s.MustKnit(t, "logs", "usr1"); !strings.Contains(l, "got-usr1") {
		t.Errorf("stop -s USR1: logs %q, want the trap's answer", l)
	}
	// run --stop-signal and --stop-timeout: stop's defaults for the
	// container (here a signal its trap answers), shown by inspect.
	s.MustKnit(t, "run", "-d", "--name", "usr2", "--stop-signal", "USR2", "--stop-timeout", "7", "--rootfs", bb, "sh", "-c",
		"trap 'echo got-usr2; exit 0' USR2; echo ready; while :; do sleep 0.1; done")
	eventually(t, func() (string, error) {
		if l := s.MustKnit(t, "logs", "usr2"); !strings.Contains(l, "ready") {
			return "", fmt.Errorf("logs: %q", l)
		}
		return "", nil
	})
	if f := s.MustKnit(t, "inspect", "-f", "{{.Config.StopSignal}} {{.Config.StopTimeout}}", "usr2"); f != "SIGUSR2 7\n" {
		t.Errorf("inspect of --stop-signal USR2 --stop-timeout 7: %q", f)
	}
	s.MustKnit(t, "stop", "usr2")
	if l := s.MustKnit(t, "logs", "usr2"); !strings.Contains(l, "got-usr2") {
		t.Errorf("stop of a --stop-signal USR2 container: logs %q, want the trap's answer", l)
	}
	s.MustKnit(t, "rm", "-v", "usr2") // -v: accepted, as knit makes no volumes
	// rm -f of a missing container says so, but succeeds, as docker rm -f.
	if r := s.Knit("rm", "-f", "nosuch", "usr1"); r.Code != 0 || !strings.Contains(r.Stderr, "no such container: nosuch") || r.Stdout != "usr1\n" {
		t.Errorf("rm -f nosuch usr1: exit %d, stdout %q, stderr %q; want 0, usr1, and the missing one named", r.Code, r.Stdout, r.Stderr)
	}
	if r := s.Knit("rm", "nosuch"); r.Code != 1 {
		t.Errorf("rm nosuch (without -f): exit %d, want 1, as Docker's", r.Code)
	}
}

// --env-file and -e, for run and exec; -u root is accepted.
func TestEnvFileAndUser(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	env := filepath.Join(s.Dir(), "env")
	s.MustRun(t, "sh", "-c", `printf '# settings\nA=from-file\nB=file\n' > "$1"`, "sh", env)
	if out := s.MustKnit(t, "run", "--rm", "-u", "root", "--env-file", env, "-e", "B=flag", "--rootfs", bb, "sh", "-c", `echo "$A $B"`); out != "from-file flag\n" {
		t.Errorf("run --env-file -e: %q, want the file's A and the flag's B", out)
	}
	s.MustKnit(t, "run", "-d", "--name", "envbox", "--rootfs", bb, "sleep", "300")
	if out := s.MustKnit(t, "exec", "-u", "0", "--env-file", env, "envbox", "sh", "-c", `echo "$A"`); out != "from-file\n" {
		t.Errorf("exec --env-file: %q", out)
	}
	s.MustKnit(t, "rm", "-f", "envbox")
}

// --entrypoint runs its program with the command as arguments; labels
// from --label and --label-file show in inspect and ps and filter ps;
// exec -d returns once its command started, which goes on in the
// container.
// logs keeps a detached container's stdout and stderr apart and knows
// when each line came: -t, --since and --until, as docker logs.
func TestLogsStreamsAndTimes(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "talk", "--rootfs", bb, "sh", "-c",
		`echo out1; echo err1 >&2; sleep 1.5; echo out2; printf 'no newline'`)
	eventually(t, func() (string, error) {
		if st := inspectField(t, s, "talk", "{{.State.Status}}"); st != "exited" {
			return "", fmt.Errorf("talk is %s", st)
		}
		return "", nil
	})
	r := s.Knit("logs", "talk")
	if r.Code != 0 || r.Stdout != "out1\nout2\nno newline" || r.Stderr != "err1\n" {
		t.Errorf("logs: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	stamped := strings.Split(strings.TrimSpace(s.MustKnit(t, "logs", "-t", "talk")), "\n")
	if len(stamped) != 3 {
		t.Fatalf("logs -t: %q", stamped)
	}
	var times []time.Time
	for _, l := range stamped {
		ts, text, _ := strings.Cut(l, " ")
		tm, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || !strings.HasPrefix(text, "out") && text != "no newline" {
			t.Fatalf("logs -t line %q: %v", l, err)
		}
		times = append(times, tm)
	}
	// out2 came 1.5 s after out1: a bound between them splits the log.
	mid := times[0].Add(750 * time.Millisecond).Format(time.RFC3339Nano)
	if out := s.MustKnit(t, "logs", "--since", mid, "talk"); out != "out2\nno newline" {
		t.Errorf("logs --since %s: %q", mid, out)
	}
	if r := s.Knit("logs", "--until", mid, "talk"); r.Stdout != "out1\n" || r.Stderr != "err1\n" {
		t.Errorf("logs --until %s: %q, %q", mid, r.Stdout, r.Stderr)
	}
	if out := s.MustKnit(t, "logs", "--since", "1h", "-n", "1", "talk"); out != "no newline" {
		t.Errorf("logs --since 1h -n 1: %q", out)
	}
	if out := s.MustKnit(t, "logs", "--until", "1h", "talk"); out != "" {
		t.Errorf("logs --until 1h (an hour ago): %q", out)
	}
	if r := s.Knit("logs", "--since", "yesterday", "talk"); r.Code != 1 || !strings.Contains(r.Stderr, "--since") {
		t.Errorf("logs --since yesterday: exit %d, %q", r.Code, r.Stderr)
	}
	s.MustKnit(t, "rm", "talk")
}

func TestEntrypointLabelsExecDetach(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	if out := s.MustKnit(t, "run", "--rm", "--entrypoint", "echo", "--rootfs", bb, "a", "b"); out != "a b\n" {
		t.Errorf("--entrypoint echo a b: %q", out)
	}
	labels := filepath.Join(s.Dir(), "labels")
	s.MustRun(t, "sh", "-c", `printf '# owners\ntier=front\nteam\n' > "$1"`, "sh", labels)
	s.MustKnit(t, "run", "-d", "--name", "front", "--label-file", labels, "-l", "owner=ann", "--entrypoint", "sleep", "--rootfs", bb, "300")
	s.MustKnit(t, "run", "-d", "--name", "back", "--label", "tier=back", "--rootfs", bb, "sleep", "300")
	if out := s.MustKnit(t, "inspect", "-f", `{{index .Config.Labels "tier"}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Path}}`, "front"); out != "front [\"sleep\"] [\"300\"] sleep\n" {
		t.Errorf("inspect: %q", out)
	}
	for filter, want := range map[string]string{"label=tier": "back front", "label=tier=front": "front", "label=team": "front", "label=owner=bob": ""} {
		out := s.MustKnit(t, "ps", "--filter", filter, "--format", "{{.Names}}")
		if got := strings.Join(slices.Sorted(strings.FieldsSeq(out)), " "); got != want {
			t.Errorf("ps --filter %s: %q, want %q", filter, got, want)
		}
	}
	if out := s.MustKnit(t, "ps", "--filter", "name=front", "--format", `{{.Labels}} {{.Label "owner"}}`); out != "owner=ann,team=,tier=front ann\n" {
		t.Errorf("ps --format labels: %q", out)
	}
	bridgeID := strings.TrimSpace(s.MustKnit(t, "network", "inspect", "-f", "{{.Id}}", "bridge"))
	for _, filter := range []string{"ancestor=" + bb, "network=" + bridgeID[:12], "network=" + bridgeID} {
		out := s.MustKnit(t, "ps", "--filter", filter, "--format", "{{.Names}}")
		if got := strings.Join(slices.Sorted(strings.FieldsSeq(out)), " "); got != "back front" {
			t.Errorf("ps --filter %s: %q", filter, got)
		}
	}
	// exec -d: the command outlives the exec, and its output goes nowhere.
	if out := s.MustKnit(t, "exec", "-d", "back", "sh", "-c", "echo lost; sleep 1; touch /tmp/done; sleep 300"); out != "" {
		t.Errorf("exec -d printed %q", out)
	}
	if out := s.MustKnit(t, "exec", "back", "sh", "-c", "grep -l 'touch /tmp/done' /proc/[0-9]*/cmdline || true"); strings.TrimSpace(out) == "" {
		t.Error("exec -d's command is not running in the container")
	}
	eventually(t, func() (string, error) {
		if s.Knit("exec", "back", "test", "-e", "/tmp/done").Code != 0 {
			return "", errors.New("exec -d's command did not go on after knit exec exited")
		}
		return "", nil
	})
	// Why a detached command did not start is said, as docker exec -d does.
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"back", "nosuch-command"}, 127, "nosuch-command"},
		{[]string{"-w", "/nonexistent", "back", "true"}, 126, "/nonexistent"},
		{[]string{"-u", "nobody-here", "back", "true"}, 125, "nobody-here"},
	} {
		r := s.Knit(append([]string{"exec", "-d"}, c.args...)...)
		if r.Code != c.code || !strings.Contains(r.Stderr, c.says) {
			t.Errorf("exec -d %q: exit %d (%q), want %d and a message naming %s", c.args, r.Code, r.Stderr, c.code, c.says)
		}
	}
	if r := s.Knit("exec", "-d", "-i", "back", "true"); r.Code != 1 || !strings.Contains(r.Stderr, "-d") {
		t.Errorf("exec -d -i: exit %d (%q), want 1 and a reason", r.Code, r.Stderr)
	}
	s.MustKnit(t, "rm", "-f", "front", "back")
}

// run --init: knit's init is PID 1, passes stop's signal on to the
// command and ends with its code.
func TestRunInit(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	if r := s.Knit("run", "--rm", "--init", "--rootfs", bb, "sh", "-c", "exit 3"); r.Code != 3 {
		t.Errorf("run --init sh -c 'exit 3': exit %d (%q)", r.Code, r.Stderr)
	}
	s.MustKnit(t, "run", "-d", "--init", "--name", "ini", "--rootfs", bb,
		"sh", "-c", `trap "exit 7" TERM; touch /tmp/ready; while :; do sleep 0.1; done`)
	eventually(t, func() (string, error) {
		if s.Knit("exec", "ini", "test", "-e", "/tmp/ready").Code != 0 {
			return "", errors.New("the command's trap is not set")
		}
		return "", nil
	})
	if out := s.MustKnit(t, "exec", "ini", "cat", "/proc/1/cmdline"); !strings.Contains(out, "_init") {
		t.Errorf("PID 1 runs %q, want knit's init", out)
	}
	if out := s.MustKnit(t, "inspect", "-f", "{{.HostConfig.Init}} {{json .Config.Cmd}}", "ini"); !strings.HasPrefix(out, "true [\"sh\"") {
		t.Errorf("inspect: %q", out)
	}
	s.MustKnit(t, "stop", "ini")
	if out := s.MustKnit(t, "inspect", "-f", "{{.State.ExitCode}}", "ini"); out != "7\n" {
		t.Errorf("exit code after stop: %q, want 7 from the command's trap", out)
	}
	s.MustKnit(t, "rm", "ini")
}

func TestInspect(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	id := strings.TrimSpace(s.MustKnit(t, "run", "-d", "--name", "insp", "-h", "box", "--rootfs", bb, "sleep", "300"))
	var views []map[string]any
	if err := json.Unmarshal([]byte(s.MustKnit(t, "inspect", "insp")), &views); err != nil || len(views) != 1 {
		t.Fatalf("inspect JSON: %v (%d objects)", err, len(views))
	}
	f := s.MustKnit(t, "inspect", "-f",
		"{{.Id}} {{.Name}} {{.State.Running}} {{.Config.Hostname}} {{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}} "+
			"{{.NetworkSettings.Gateway}} {{.NetworkSettings.MacAddress}} {{(index .NetworkSettings.Networks \"bridge\").IPAddress}}", "insp")
	want := id + " /insp true box 172.17.0.2/16 172.17.0.1 02:42:ac:11:00:02 172.17.0.2\n"
	if f != want {
		t.Errorf("inspect -f = %q, want %q", f, want)
	}
	pid := strings.TrimSpace(s.MustKnit(t, "inspect", "-f", "{{.State.Pid}}", id[:8]))
	if cmd := s.MustRun(t, "cat", "/proc/"+pid+"/cmdline"); !strings.HasPrefix(cmd, "sleep") {
		t.Errorf(".State.Pid %s runs %q, want sleep", pid, cmd)
	}
}

func TestConfig(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.WriteConfig(t, `{"bip": "10.99.0.1/24", "mtu": 1400, "ip-forward": false}`)
	out := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ip", "-o", "link", "show", "eth0")
	if !strings.Contains(out, "mtu 1400") {
		t.Errorf("mtu: %s", out)
	}
	// mtu is the default of the networks knit creates, not only of the
	// default one.
	s.MustKnit(t, "network", "create", "own")
	if out := s.MustKnit(t, "run", "--rm", "--network", "own", "--rootfs", bb, "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "mtu 1400") {
		t.Errorf("mtu on a user-defined network: %s", out)
	}
	if ip := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ip", "-o", "-4", "addr", "show", "eth0"); !strings.Contains(ip, "10.99.0.2/24") {
		t.Errorf("bip: %s", ip)
	}
	if fwd := s.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(fwd) != "0" {
		t.Errorf("ip-forward false, but ip_forward = %s", fwd)
	}
	s.WriteConfig(t, `{"bip": "not-a-cidr"}`)
	if r := s.Knit("ps"); r.Code != 1 || !strings.Contains(r.Stderr, "bip") {
		t.Errorf("bad config: exit %d, %q", r.Code, r.Stderr)
	}
}

func TestDefaultSubnetSkipsHostRoutes(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	// The "LAN" already uses 172.17.0.0/16: the default network moves on.
	s.MustRun(t, "ip", "route", "add", "172.17.0.0/16", "via", "198.51.100.2")
	if ip := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ip", "-o", "-4", "addr", "show", "eth0"); !strings.Contains(ip, "172.18.0.2/16") {
		t.Errorf("want 172.18.0.0/16 when 172.17.0.0/16 is routed: %s", ip)
	}
}

// adminBridge makes a bridge as an administrator would, up, with addr.
func adminBridge(t *testing.T, s *testutil.Sandbox, name, addr string) {
	t.Helper()
	s.MustRun(t, "ip", "link", "add", name, "type", "bridge")
	s.MustRun(t, "ip", "addr", "add", addr, "dev", name)
	s.MustRun(t, "ip", "link", "set", name, "up")
}

func TestExistingBridgeIsUsedAndKept(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	adminBridge(t, s, "br-admin", "10.50.0.1/24")
	s.WriteConfig(t, `{"bridge": "br-admin"}`) // its address 10.50.0.1/24 is the subnet's
	s.MustKnit(t, "run", "-d", "--name", "onadmin", "--rootfs", bb, "sleep", "300")
	if ports := s.MustRun(t, "ip", "-o", "link", "show", "master", "br-admin"); !strings.Contains(ports, "veth") {
		t.Errorf("no veth on br-admin:\n%s", ports)
	}
	s.MustKnit(t, "exec", "onadmin", "ping", "-c1", "-W2", "10.50.0.1")
	s.MustKnit(t, "rm", "-f", "onadmin")
	s.MustRun(t, "ip", "link", "show", "br-admin") // still there
	if r := s.Run("ip", "link", "show", "knit0"); r.Code == 0 {
		t.Errorf("knit0 was created although the config names br-admin")
	}
}

// As dockerd -b: a bridge that has an address keeps it as the default
// network's subnet and gateway when the config gives no bip (the reference
// notes' bridge0 with 192.168.5.1/24).
func TestExistingBridgeAddressIsTheSubnet(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	adminBridge(t, s, "bridge0", "192.168.5.1/24")
	s.WriteConfig(t, `{"bridge": "bridge0"}`)
	s.MustKnit(t, "run", "-d", "--name", "b0", "--rootfs", bb, "sleep", "300")
	got := s.MustKnit(t, "inspect", "-f", "{{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}} {{.NetworkSettings.Gateway}}", "b0")
	if got != "192.168.5.2/24 192.168.5.1\n" {
		t.Errorf("container on bridge0: %q, want 192.168.5.2/24 192.168.5.1", got)
	}
	if addrs := s.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "bridge0"); strings.Count(addrs, "inet ") != 1 {
		t.Errorf("bridge0 got another address:\n%s", addrs)
	}
	s.MustKnit(t, "exec", "b0", "ping", "-c1", "-W2", "192.168.5.1")
}

func TestSystemPruneRemovesStrays(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "-d", "--name", "keeper", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "run", "--name", "done", "--rootfs", bb, "true")
	// Strays: a namespace mount and a bridge port that no container owns
	// (knit's alias names its container).
	s.MustRun(t, "touch", s.ExecRoot()+"/netns/deadbeef")
	s.MustRun(t, "unshare", "--net="+s.ExecRoot()+"/netns/deadbeef", "true")
	s.MustRun(t, "ip", "link", "add", "vethdead000", "type", "veth", "peer", "name", "vethdead001")
	s.MustRun(t, "ip", "link", "set", "vethdead000", "alias", "knit:deadbeef00", "master", "knit0")
	// A veth someone attached by hand (the reference notes' A on docker0)
	// is not knit's: prune leaves it, as Docker would.
	s.MustRun(t, "ip", "link", "add", "vethhand0", "type", "veth", "peer", "name", "vethhand1")
	s.MustRun(t, "ip", "link", "set", "vethhand0", "master", "knit0")
	// and a published-port element whose container is gone.
	s.MustRun(t, "nft", "add", "element", "inet", "knit", "pub4any",
		`{ tcp . 7070 comment "knit:owner=cafe0000" : 172.17.0.9 . 80 }`)
	out := s.MustKnit(t, "system", "prune", "-f")
	for _, want := range []string{"done", "deadbeef", "vethdead000", "cafe0000"} {
		if !strings.Contains(out, want) {
			t.Errorf("prune output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "keeper") {
		t.Errorf("prune touched a running container:\n%s", out)
	}
	if r := s.Run("ip", "link", "show", "vethdead000"); r.Code == 0 {
		t.Error("stray veth survived prune")
	}
	if l := s.Run("ip", "-o", "link", "show", "vethhand0"); strings.Contains(out, "vethhand0") || !strings.Contains(l.Stdout, "master knit0") {
		t.Errorf("prune removed a veth knit did not make:\n%s", out)
	}
	if r := s.Run("sh", "-c", "grep -q ' "+s.ExecRoot()+"/netns/deadbeef ' /proc/self/mountinfo || test -e "+s.ExecRoot()+"/netns/deadbeef"); r.Code == 0 {
		t.Error("the stray namespace is still mounted, or its file still there, after prune")
	}
	if rules := s.MustRun(t, "nft", "list", "map", "inet", "knit", "pub4any"); strings.Contains(rules, "7070") {
		t.Errorf("stray port element survived prune:\n%s", rules)
	}
	s.MustKnit(t, "exec", "keeper", "ping", "-c1", "-W2", "172.17.0.1")
	if ps := s.MustKnit(t, "ps", "-a", "--format", "{{.Names}}"); ps != "keeper\n" {
		t.Errorf("after prune: %q", ps)
	}
}

// A run makes its namespace while its record is written: until the record
// exists, only the maker's shared lock on the exec-root's netns.lock says
// the namespace is wanted. A prune waits for that lock, so it never takes
// the namespace of a run in flight, and then deletes one whose maker ended
// without a record (a crash).
func TestSystemPruneWaitsForNamespacesBeingMade(t *testing.T) {
	s := sandbox(t)
	s.MustKnit(t, "system", "prune", "-f") // mounts the exec-root tmpfs
	ns := s.ExecRoot() + "/netns/0123abcd"
	s.MustRun(t, "mkdir", "-p", s.ExecRoot()+"/netns")
	s.MustRun(t, "touch", ns)
	s.MustRun(t, "unshare", "--net="+ns, "true")
	const script = `knit=$1 lock=$2 ns=$3 out=$4
		flock -s "$lock" sleep 1.5 &  # the maker, for 1.5 s
		sleep 0.3
		"$knit" system prune -f > "$out" 2>&1 &
		prune=$!
		sleep 0.7
		mountpoint -q "$ns" && echo kept-while-held
		wait $prune || echo prune failed
		mountpoint -q "$ns" || echo gone-after`
	out := s.MustRun(t, "sh", "-c", script, "sh", testutil.KnitBinary(t), s.ExecRoot()+"/netns.lock", ns, s.Dir()+"/prune.out")
	pruned := s.MustRun(t, "cat", s.Dir()+"/prune.out")
	if out != "kept-while-held\ngone-after\n" {
		t.Errorf("got %q, want the namespace kept while its maker held the lock and gone after; prune said:\n%s", out, pruned)
	}
	if !strings.Contains(pruned, "0123abcd") {
		t.Errorf("prune output lacks the namespace:\n%s", pruned)
	}
}

// fixed-cidr hands out the default network's addresses from its range:
// inside bip's subnet, or, without bip, as the subnet itself.
func TestConfigFixedCIDR(t *testing.T) {
	bb := testutil.Busybox(t)
	for _, tc := range []struct{ config, want string }{
		{`{"bip": "10.97.0.1/16", "fixed-cidr": "10.97.5.0/24"}`, "inet 10.97.5."}, // in the range, of the subnet
		{`{"fixed-cidr": "10.96.0.0/24"}`, "10.96.0.2/24"},
	} {
		s := sandbox(t)
		s.WriteConfig(t, tc.config)
		if ip := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ip", "-o", "-4", "addr", "show", "eth0"); !strings.Contains(ip, tc.want) {
			t.Errorf("%s: eth0 %s, want %s", tc.config, ip, tc.want)
		}
	}
}

// default-gateway (dockerd's --default-gateway) is the default network's
// containers' default route; the bridge keeps its own address.
func TestConfigDefaultGateway(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.WriteConfig(t, `{"bip": "10.93.0.1/24", "default-gateway": "10.93.0.254"}`)
	if route := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ip", "route"); !strings.Contains(route, "default via 10.93.0.254 dev eth0") {
		t.Errorf("routes:\n%s\nwant default via 10.93.0.254", route)
	}
	if addr := s.MustRun(t, "ip", "-o", "-4", "addr", "show", "knit0"); !strings.Contains(addr, "10.93.0.1/24") {
		t.Errorf("knit0: %s", addr)
	}
	// A default route that moves to the default network on a disconnect
	// goes to default-gateway too.
	s.MustKnit(t, "network", "create", "--subnet", "10.95.0.0/24", "first")
	s.MustKnit(t, "run", "-d", "--name", "mover", "--network", "first", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "network", "connect", "bridge", "mover")
	s.MustKnit(t, "network", "disconnect", "first", "mover")
	if route := s.MustKnit(t, "exec", "mover", "ip", "route"); !strings.Contains(route, "default via 10.93.0.254 dev eth1") {
		t.Errorf("routes after the default route moved to the default network:\n%s\nwant default via 10.93.0.254", route)
	}
	s.MustKnit(t, "rm", "-f", "mover")
	// A default-gateway that no subnet of the pools holds, given once the
	// default network exists: refused, and the network left as it was.
	s.WriteConfig(t, `{"default-gateway": "10.99.0.1"}`)
	if r := s.Knit("run", "--rm", "--rootfs", bb, "true"); r.Code != 125 || !strings.Contains(r.Stderr, "default-gateway 10.99.0.1") {
		t.Errorf("a default-gateway outside any pool subnet: exit %d, %q", r.Code, r.Stderr)
	}
	if addr := s.MustRun(t, "ip", "-o", "-4", "addr", "show", "knit0"); !strings.Contains(addr, "10.93.0.1/24") {
		t.Errorf("knit0 after a refused config change: %s, want it as it was", addr)
	}
	s2 := sandbox(t)
	s2.WriteConfig(t, `{"bip": "10.93.0.1/24", "default-gateway": "10.94.0.254"}`)
	if r := s2.Knit("run", "--rm", "--rootfs", bb, "true"); r.Code != 125 || !strings.Contains(r.Stderr, "outside bip's subnet") {
		t.Errorf("default-gateway outside the subnet: exit %d, %q", r.Code, r.Stderr)
	}
}

// config.json's default-network settings take effect once nothing uses the
// network (as dockerd applies them at its next start); while containers do,
// a run says what to remove.
func TestDefaultNetworkFollowsConfig(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.WriteConfig(t, `{"bip": "10.51.0.1/24"}`)
	if out := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ip", "-o", "-4", "addr", "show", "eth0"); !strings.Contains(out, "10.51.0.2/24") {
		t.Fatalf("with bip 10.51.0.1/24: %s", out)
	}
	s.MustKnit(t, "run", "-d", "--name", "holder", "--rootfs", bb, "sleep", "300")
	s.WriteConfig(t, `{"bip": "10.52.0.1/24", "mtu": 1400}`)
	r := s.Knit("run", "--rm", "--rootfs", bb, "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "holder") || !strings.Contains(r.Stderr, "subnet 10.52.0.0/24, was 10.51.0.0/24") {
		t.Errorf("run with the default network in use and changed: exit %d\n%s", r.Code, r.Stderr)
	}
	s.MustKnit(t, "rm", "-f", "holder")
	out := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ip", "-o", "link", "show", "eth0")
	if !strings.Contains(out, "mtu 1400") {
		t.Errorf("eth0 after the change: %s", out)
	}
	if out := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ip", "-o", "-4", "addr", "show", "eth0"); !strings.Contains(out, "10.52.0.2/24") {
		t.Errorf("with bip 10.52.0.1/24: %s", out)
	}
	if addrs := s.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "knit0"); strings.Contains(addrs, "10.51.0.1") || !strings.Contains(addrs, "10.52.0.1/24") {
		t.Errorf("knit0 after the change:\n%s", addrs)
	}
	// network connect bridge follows config.json as a run does.
	s.MustKnit(t, "network", "create", "elsewhere")
	s.MustKnit(t, "run", "-d", "--name", "joiner", "--network", "elsewhere", "--rootfs", bb, "sleep", "300")
	s.WriteConfig(t, `{"bip": "10.53.0.1/24"}`)
	s.MustKnit(t, "network", "connect", "bridge", "joiner")
	if ip := inspectField(t, s, "joiner", "{{.NetworkSettings.Networks.bridge.IPAddress}}"); ip != "10.53.0.2" {
		t.Errorf("network connect bridge after bip changed: %q, want 10.53.0.2", ip)
	}
	// In use, it is refused as a run is, naming the users, and nothing changes.
	s.MustKnit(t, "run", "-d", "--name", "second", "--network", "elsewhere", "--rootfs", bb, "sleep", "300")
	s.WriteConfig(t, `{"bip": "10.54.0.1/24"}`)
	if r := s.Knit("network", "connect", "bridge", "second"); r.Code == 0 || !strings.Contains(r.Stderr, "joiner still use") || !strings.Contains(r.Stderr, "subnet 10.54.0.0/24, was 10.53.0.0/24") {
		t.Errorf("network connect bridge with the changed default network in use: exit %d\n%s", r.Code, r.Stderr)
	}
	if nets := inspectField(t, s, "second", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"); nets != "elsewhere" {
		t.Errorf("second's networks after the refused connect: %q", nets)
	}
	if addrs := s.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "knit0"); !strings.Contains(addrs, "10.53.0.1/24") {
		t.Errorf("knit0 after the refused connect:\n%s", addrs)
	}
	s.MustKnit(t, "rm", "-f", "joiner", "second")
	// Unused now, but a connect refused (no such container) does not make
	// it again.
	if r := s.Knit("network", "connect", "bridge", "nosuch"); r.Code == 0 || !strings.Contains(r.Stderr, "no such container") {
		t.Errorf("network connect bridge nosuch: exit %d, %q", r.Code, r.Stderr)
	}
	if addrs := s.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "knit0"); !strings.Contains(addrs, "10.53.0.1/24") {
		t.Errorf("knit0 after a connect refused for want of its container:\n%s", addrs)
	}
}

// run -u and exec -u, as Docker's: a name or UID from the container's own
// /etc/passwd (the host's without --rootfs), HOME from it, exec running as
// the container's user unless told; the container still dies with its
// supervisor after it changed user.
func TestRunUser(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	if out := s.MustKnit(t, "run", "--rm", "-u", "nobody", "sh", "-c", `id -u; id -g; echo "$HOME"`); out != "65534\n65534\n/nonexistent\n" {
		t.Errorf("run -u nobody: %q", out)
	}
	if out := s.MustKnit(t, "run", "--rm", "-u", "1000:1001", "--rootfs", bb, "sh", "-c", `id -u; id -g; echo "$HOME"`); out != "1000\n1001\n/\n" {
		t.Errorf("run -u 1000:1001 (no passwd entry): %q", out)
	}
	if out := s.MustKnit(t, "run", "--rm", "--init", "-u", "nobody", "id", "-u"); out != "65534\n" {
		t.Errorf("run --init -u nobody: %q", out)
	}
	// A working directory the user cannot enter fails the start, as runc's
	// (the host's /root is 0700).
	for _, init := range []string{"--init=false", "--init"} {
		if r := s.Knit("run", "--rm", init, "-u", "nobody", "-w", "/root", "pwd"); r.Code != 126 || !strings.Contains(r.Stderr, "permission denied") {
			t.Errorf("run %s -u nobody -w /root: exit %d, %q %q", init, r.Code, r.Stdout, r.Stderr)
		}
	}
	if out := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "sh", "-c", `echo "$HOME"`); out != "/root\n" {
		t.Errorf("root's HOME: %q", out)
	}
	if out := s.MustKnit(t, "run", "--rm", "-u", "nobody", "--group-add", "audio", "--group-add", "4000", "id", "-G"); out != "65534 29 4000\n" {
		t.Errorf("run -u nobody --group-add audio --group-add 4000: id -G %q", out)
	}
	if out := s.MustKnit(t, "run", "--rm", "--group-add", "4000", "--rootfs", bb, "id", "-G"); out != "0 4000\n" {
		t.Errorf("run --group-add 4000 as root: id -G %q", out)
	}
	// Root gets the groups the container's /etc/group gives it, as
	// Docker's, not those of whoever ran knit (here 4242), for run and
	// exec alike.
	groups := filepath.Join(t.TempDir(), "rootfs")
	s.MustRun(t, "cp", "-a", bb, groups)
	s.MustRun(t, "sh", "-c", `mkdir -p "$1/etc" && printf "root:x:0:\nwheel:x:10:root\nstaff:x:50:alice\n" > "$1/etc/group" && echo root:x:0:0:root:/root:/bin/sh > "$1/etc/passwd"`, "sh", groups)
	knit := testutil.KnitBinary(t)
	if out := s.MustRun(t, "setpriv", "--groups", "4242", knit, "run", "--rm", "--rootfs", groups, "id", "-G"); out != "0 10\n" {
		t.Errorf("run as root, from a caller in group 4242: id -G %q, want 0 10", out)
	}
	s.MustKnit(t, "run", "-d", "--name", "grouped", "--rootfs", groups, "sleep", "300")
	if out := s.MustRun(t, "setpriv", "--groups", "4242", knit, "exec", "grouped", "id", "-G"); out != "0 10\n" {
		t.Errorf("exec as root, from a caller in group 4242: id -G %q, want 0 10", out)
	}
	s.MustKnit(t, "rm", "-f", "grouped")
	if r := s.Knit("run", "--rm", "--group-add", "nosuchgroup", "true"); r.Code != 125 || !strings.Contains(r.Stderr, "unable to find group nosuchgroup") {
		t.Errorf("run --group-add nosuchgroup: exit %d, %q", r.Code, r.Stderr)
	}
	if r := s.Knit("run", "--rm", "-u", "nosuchuser", "true"); r.Code != 125 || !strings.Contains(r.Stderr, "unable to find user nosuchuser") {
		t.Errorf("run -u nosuchuser: exit %d, %q", r.Code, r.Stderr)
	}
	// A detached container's pipes are the user's: /dev/stdout opens.
	s.MustKnit(t, "run", "-d", "-u", "1000", "--name", "piped", "--rootfs", bb, "sh", "-c", "echo out >/dev/stdout; echo err >/dev/stderr")
	if got := s.MustKnit(t, "wait", "piped"); got != "0\n" {
		t.Errorf("-u 1000 writing to /dev/stdout and /dev/stderr: exit %s", got)
	}
	if r := s.Knit("logs", "piped"); r.Stdout != "out\n" || r.Stderr != "err\n" {
		t.Errorf("logs of -u 1000 through /dev/stdout: %q, %q", r.Stdout, r.Stderr)
	}
	s.MustKnit(t, "rm", "piped")
	s.MustKnit(t, "run", "-d", "-u", "nobody", "--group-add", "4000", "--name", "unpriv", "sleep", "300")
	if got := inspectField(t, s, "unpriv", "{{.Config.User}}"); got != "nobody" {
		t.Errorf("Config.User = %q", got)
	}
	if out := s.MustKnit(t, "exec", "unpriv", "sh", "-c", "id -u; id -G"); out != "65534\n65534 4000\n" {
		t.Errorf("exec runs as %q, want the container's user and groups", out)
	}
	// exec -t: the terminal knit allocates is the user's to open.
	if out := s.MustKnit(t, "exec", "-t", "-u", "1000", "unpriv", "sh", "-c", "echo x >/dev/stdout"); out != "x\r\n" {
		t.Errorf("exec -t -u 1000 writing to /dev/stdout: %q", out)
	}
	// And without -t, knit's pipes are, as runc gives docker exec's.
	if r := s.Knit("exec", "-i", "-u", "1000", "unpriv", "sh", "-c", "echo x >/dev/stdout; echo y >/dev/stderr; cat </dev/stdin"); r.Code != 0 || r.Stdout != "x\n" || r.Stderr != "y\n" {
		t.Errorf("exec -u 1000 writing to /dev/stdout and /dev/stderr: exit %d, %q, %q", r.Code, r.Stdout, r.Stderr)
	}
	if out := s.MustKnit(t, "exec", "-u", "root", "unpriv", "id", "-u"); out != "0\n" {
		t.Errorf("exec -u root runs as %q", out)
	}
	// The kernel clears the parent-death signal when a process changes
	// user: the init sets it again, so the command dies with its
	// supervisor, before any knit command looks.
	pid := inspectField(t, s, "unpriv", "{{.State.Pid}}")
	sup := strings.TrimSpace(s.MustRun(t, "sh", "-c", "pgrep -f '_supervise' | head -1"))
	s.MustRun(t, "kill", "-9", sup)
	eventually(t, func() (string, error) {
		if s.Run("kill", "-0", pid).Code == 0 {
			return "", fmt.Errorf("the container's process %s outlives its supervisor", pid)
		}
		return "", nil
	})
	s.MustKnit(t, "rm", "-f", "unpriv")
}

// A container run in the foreground and kept (no --rm) has its output
// logged too, as Docker's: the caller sees it as it comes, from pipes (the
// command's stdout is no terminal without -t, as in Docker), and a reader
// that goes away ends the command as a closed pipe would.
func TestForegroundLogs(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	r := s.Knit("run", "--name", "fg", "--rootfs", bb, "sh", "-c", "echo out; echo err >&2; test -t 1 || echo no-tty")
	if r.Code != 0 || r.Stdout != "out\nno-tty\n" || r.Stderr != "err\n" {
		t.Errorf("run: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := s.Knit("logs", "fg"); r.Stdout != "out\nno-tty\n" || r.Stderr != "err\n" {
		t.Errorf("logs of a foreground run: %q, %q", r.Stdout, r.Stderr)
	}
	if got := inspectField(t, s, "fg", "{{.LogPath}}"); !strings.HasSuffix(got, "/container.log") {
		t.Errorf("LogPath = %q", got)
	}
	// yes writes for ever: head's exit must end it.
	done := make(chan testutil.Result, 1)
	go func() {
		done <- s.Run("sh", "-c", fmt.Sprintf("%s run --name yes --rootfs %s yes | head -1", testutil.KnitBinary(t), bb))
	}()
	select {
	case r := <-done:
		if r.Stdout != "y\n" {
			t.Errorf("knit run yes | head -1: %q, %q", r.Stdout, r.Stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("knit run yes | head -1 did not end")
	}
	eventually(t, func() (string, error) {
		if st := inspectField(t, s, "yes", "{{.State.Status}}"); st != "exited" {
			return "", fmt.Errorf("yes is %s after its reader left", st)
		}
		return "", nil
	})
	// --rm: nothing kept, nothing logged.
	if out := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "echo", "gone"); out != "gone\n" {
		t.Errorf("run --rm: %q", out)
	}
	// -t: the terminal's output once to the caller, and a copy in the log.
	if out := s.MustKnit(t, "run", "-t", "--name", "tty", "--rootfs", bb, "echo", "once"); out != "once\r\n" {
		t.Errorf("run -t: %q, want the line once", out)
	}
	if out := s.MustKnit(t, "logs", "tty"); out != "once\r\n" {
		t.Errorf("logs of run -t: %q", out)
	}
	// A user other than root opens /dev/stdout, knit's pipe, but the
	// caller's stdin is left as it is.
	fifo := filepath.Join(s.Dir(), "stdin")
	r = s.Run("sh", "-c", fmt.Sprintf("mkfifo %[1]s; (echo in >%[1]s &); %[2]s run -i -u 1000 --name fgu --rootfs %[3]s sh -c 'cat; echo out >/dev/stdout' <%[1]s; stat -c %%u %[1]s", fifo, testutil.KnitBinary(t), bb))
	if r.Stdout != "in\nout\n0\n" {
		t.Errorf("run -i -u 1000 writing to /dev/stdout: %q, %q", r.Stdout, r.Stderr)
	}
	s.MustKnit(t, "rm", "fg", "yes", "tty", "fgu")
}

// cp copies between a container's filesystem, as its processes see it,
// and the host's, by docker cp's rules, and never through a link out of
// the container's tree.
func TestCopy(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	dir := s.Dir()
	s.MustKnit(t, "run", "-d", "--name", "cpbox", "-h", "boxhost", "--rootfs", bb, "sleep", "300")
	s.MustRun(t, "sh", "-c", `printf 'from the host\n' > "$1/in.txt"`, "sh", dir)
	s.MustKnit(t, "cp", filepath.Join(dir, "in.txt"), "cpbox:/tmp/")
	if out := s.MustKnit(t, "exec", "cpbox", "cat", "/tmp/in.txt"); out != "from the host\n" {
		t.Errorf("a file copied in: %q", out)
	}
	// /etc/hosts is a bind mount inside the container: its own is read.
	s.MustKnit(t, "cp", "cpbox:/etc/hosts", filepath.Join(dir, "hosts"))
	if out := s.MustRun(t, "cat", filepath.Join(dir, "hosts")); !strings.Contains(out, "boxhost") {
		t.Errorf("the container's /etc/hosts copied out: %q", out)
	}
	s.MustKnit(t, "exec", "cpbox", "sh", "-c", "mkdir -p /tmp/d/sub && echo deep > /tmp/d/sub/f && ln -s /etc/shadow /tmp/evil")
	s.MustKnit(t, "cp", "cpbox:/tmp/d", filepath.Join(dir, "d"))
	if out := s.MustRun(t, "cat", filepath.Join(dir, "d/sub/f")); out != "deep\n" {
		t.Errorf("a directory copied out: %q", out)
	}
	// Owners: the caller's, unless -a; modification times kept.
	s.MustKnit(t, "exec", "cpbox", "sh", "-c", "chown 1234:5678 /tmp/d/sub/f && touch -t 200102030405.06 /tmp/d/sub/f") // UTC, 981173106
	for flag, want := range map[string]string{"": "0:0 981173106", "-a": "1234:5678 981173106"} {
		to := filepath.Join(dir, "owned"+flag)
		s.MustKnit(t, slices.DeleteFunc([]string{"cp", flag, "cpbox:/tmp/d/sub/f", to}, func(a string) bool { return a == "" })...)
		if got := strings.TrimSpace(s.MustRun(t, "stat", "-c", "%u:%g %Y", to)); got != want {
			t.Errorf("cp %s: owner and time %q, want %q", flag, got, want)
		}
	}
	s.MustKnit(t, "cp", "cpbox:/tmp/evil", filepath.Join(dir, "evil"))
	if target := s.MustRun(t, "readlink", filepath.Join(dir, "evil")); target != "/etc/shadow\n" {
		t.Errorf("a link copied out: %q; want the link itself", target)
	}
	// -L resolves the link inside the container, which has no
	// /etc/shadow: an error, never the host's file.
	if r := s.Knit("cp", "-L", "cpbox:/tmp/evil", filepath.Join(dir, "shadow")); r.Code != 1 {
		t.Errorf("cp -L through a link out of the container: exit %d, %q", r.Code, r.Stderr)
	}
	if s.Run("test", "-e", filepath.Join(dir, "shadow")).Code == 0 {
		t.Error("cp -L copied the host's /etc/shadow")
	}
	for _, bad := range [][]string{{"cp", "cpbox:/a", "cpbox:/b"}, {"cp", "/a", "/b"}, {"cp", "cpbox:/etc/hosts", "-"}, {"cp", "nosuch:/a", "/tmp"}} {
		if r := s.Knit(bad...); r.Code != 1 {
			t.Errorf("%q: exit %d, %q", bad, r.Code, r.Stderr)
		}
	}
	// A stopped container's files are its --rootfs directory's.
	s.MustKnit(t, "stop", "-t", "0", "cpbox")
	s.MustKnit(t, "cp", "cpbox:/bin/busybox", filepath.Join(dir, "bb"))
	if r := s.Run("test", "-s", filepath.Join(dir, "bb"), "-a", "-x", filepath.Join(dir, "bb")); r.Code != 0 {
		t.Error("busybox copied from a stopped container: missing, empty or not executable")
	}
	s.MustKnit(t, "rm", "cpbox")
}

// A container starts with every signal's default action, as Docker's,
// whatever its caller ignored (nohup, a background job, a runtime that
// ignores SIGPIPE): an ignored disposition survives execve, and a shell
// cannot trap a signal ignored on entry.
func TestContainerSignalsStartDefault(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	knit := testutil.KnitBinary(t)
	for _, mode := range [][]string{{"--rm"}, {"--rm", "--init"}} {
		args := strings.Join(mode, " ")
		out := s.MustRun(t, "sh", "-c", `trap '' HUP INT PIPE TERM; "$1" run `+args+` --rootfs "$2" sh -c 'grep SigIgn /proc/self/status; trap "exit 7" HUP; kill -HUP $$; sleep 1; echo not-trapped'; echo "exit $?"`, "sh", knit, bb)
		if !strings.Contains(out, "SigIgn:\t0000000000000000") || !strings.Contains(out, "exit 7") {
			t.Errorf("run %s under a caller that ignores HUP, INT, PIPE and TERM:\n%s\nwant no signal ignored and the HUP trapped (exit 7)", args, out)
		}
	}
	// exec's command too, as docker exec's.
	s.MustKnit(t, "run", "-d", "--name", "sigdefault", "--rootfs", bb, "sleep", "300")
	out := s.MustRun(t, "sh", "-c", `trap '' HUP INT PIPE TERM; "$1" exec sigdefault grep SigIgn /proc/self/status`, "sh", knit)
	if !strings.Contains(out, "SigIgn:\t0000000000000000") {
		t.Errorf("exec under a caller that ignores HUP, INT, PIPE and TERM: %q, want no signal ignored", out)
	}
	// Nor does a signal its caller blocked stay blocked (env
	// --block-signal: a signal mask survives fork and execve; Go unblocks
	// on its threads only the signals it must see, TERM among them, not
	// USR1).
	for _, args := range [][]string{{"run", "--rm"}, {"run", "--rm", "--init"}, {"run", "-d", "--name", "sigblocked"}, {"exec", "sigdefault"}} {
		cmd := append([]string{"env", "--block-signal=USR1", "--block-signal=TERM", knit}, args...)
		if args[0] == "run" {
			cmd = append(cmd, "--rootfs", bb)
		}
		if args[1] == "-d" {
			s.MustRun(t, append(cmd, "sleep", "300")...)
			cmd = []string{knit, "exec", "sigblocked", "grep", "SigBlk", "/proc/1/status"}
		} else {
			cmd = append(cmd, "grep", "SigBlk", "/proc/self/status")
		}
		if out := s.MustRun(t, cmd...); !strings.Contains(out, "SigBlk:\t0000000000000000") {
			t.Errorf("%s under a caller that blocks USR1 and TERM: %q, want no signal blocked", strings.Join(args, " "), out)
		}
	}
	s.MustKnit(t, "rm", "-f", "sigdefault", "sigblocked")
}

// What knit leaves running (a supervisor, the DNS server) keeps none of its
// caller's descriptors: a shell's `knit run -d ... | cat` would otherwise
// wait for the container, and a test harness's pipe never end.
func TestHelpersKeepNoCallerDescriptor(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "network", "create", "fdnet") // its containers start the DNS server
	marker := s.Dir() + "/held-by-the-caller"
	s.MustRun(t, "sh", "-c", `"$1" run -d --name fd --network fdnet --rootfs "$2" sleep 300 7>"$3"`, "sh", testutil.KnitBinary(t), bb, marker)
	holders := s.MustRun(t, "sh", "-c", `for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -q -F "$1" && cat $p/cmdline | tr '\0' ' ' && echo; done; true`, "sh", marker)
	if strings.TrimSpace(holders) != "" {
		t.Errorf("processes knit left hold its caller's descriptor:\n%s", holders)
	}
	s.MustKnit(t, "rm", "-f", "fd")
}

// A foreground run passes on every signal it can, as docker run's proxy:
// SIGPWR and SIGALRM reach the container's trap instead of ending knit (by
// default they kill it) while the container goes on.
func TestForegroundRunRelaysEverySignal(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	script := `out="$3/sig.out"
"$1" run --rm --rootfs "$2" sh -c 'trap "echo got-30" 30; trap "echo got-14; exit 3" 14; echo ready; while :; do sleep 0.1; done' >"$out" 2>&1 &
k=$!
i=0; until grep -q ready "$out"; do [ $i -gt 400 ] && { echo "never ready"; exit 1; }; sleep 0.05; i=$((i+1)); done
kill -30 $k; sleep 0.3; kill -14 $k
wait $k; echo "rc=$?"; cat "$out"`
	out := s.MustRun(t, "sh", "-c", script, "sh", testutil.KnitBinary(t), bb, s.Dir())
	if !strings.HasPrefix(out, "rc=3\n") || !strings.Contains(out, "got-30\n") || !strings.Contains(out, "got-14\n") {
		t.Errorf("signals 30 (PWR) and 14 (ALRM) to a foreground run:\n%s\nwant both trapped in the container and its exit code 3", out)
	}
	// knit exec too, through its helper.
	s.MustKnit(t, "run", "-d", "--name", "sigexec", "--rootfs", bb, "sleep", "300")
	// Its own output file: the shell truncates it in the background job,
	// and the loop must not find the run's "ready" there first.
	script = strings.Replace(strings.Replace(script, `run --rm --rootfs "$2"`, `exec sigexec`, 1), "sig.out", "sigexec.out", 1)
	out = s.MustRun(t, "sh", "-c", script, "sh", testutil.KnitBinary(t), bb, s.Dir())
	if !strings.HasPrefix(out, "rc=3\n") || !strings.Contains(out, "got-30\n") || !strings.Contains(out, "got-14\n") {
		t.Errorf("signals 30 (PWR) and 14 (ALRM) to knit exec:\n%s\nwant both trapped in the command and its exit code 3", out)
	}
	s.MustKnit(t, "rm", "-f", "sigexec")
	// SIGABRT is knit's own, not passed on: it prints its goroutines and
	// dies, and the container goes with it.
	script = `out="$3/abrt.out"
"$1" run --name aborted --rootfs "$2" sh -c 'trap "echo got-6" 6; echo ready; while :; do sleep 0.1; done' >"$out" 2>&1 &
k=$!
i=0; until grep -q ready "$out"; do [ $i -gt 400 ] && { echo "never ready"; exit 1; }; sleep 0.05; i=$((i+1)); done
kill -6 $k
wait $k; echo "rc=$?"; cat "$out"`
	out = s.MustRun(t, "sh", "-c", script, "sh", testutil.KnitBinary(t), bb, s.Dir())
	if !strings.HasPrefix(out, "rc=2\n") || strings.Contains(out, "got-6") || !strings.Contains(out, "goroutine ") {
		t.Errorf("SIGABRT to a foreground run:\n%s\nwant knit's goroutines printed, exit code 2, and nothing trapped in the container", out)
	}
	// Exited, or, if knit died before it recorded the start (the command
	// can print before that), removed as a run cut short is.
	eventually(t, func() (string, error) {
		if ps := s.MustKnit(t, "ps", "-a", "--format", "{{.Names}} {{.Status}}"); ps != "" && !strings.HasPrefix(ps, "aborted Exited (") {
			return "", fmt.Errorf("after knit run died of SIGABRT, ps -a: %q, want the container exited or gone", ps)
		}
		return "", nil
	})
}

// stop (and restart) of several containers stops them at the same time,
// as Docker's: two that ignore SIGTERM both get it at once, rather than
// the second after the first's grace period, and the names print in the
// order given.
func TestStopSeveralAtOnce(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	for _, name := range []string{"slow1", "slow2"} {
		s.MustKnit(t, "run", "-d", "--name", name, "--rootfs", bb, "sh", "-c", `trap "echo term" TERM; echo up; while :; do sleep 0.1; done`)
	}
	for _, name := range []string{"slow1", "slow2"} {
		eventually(t, func() (string, error) {
			if out := s.MustKnit(t, "logs", name); out != "up\n" {
				return "", fmt.Errorf("%s not up: %q", name, out)
			}
			return "", nil
		})
	}
	if out := s.MustKnit(t, "stop", "-t", "3", "slow1", "slow2"); out != "slow1\nslow2\n" {
		t.Errorf("stop printed %q", out)
	}
	var at []time.Time
	for _, name := range []string{"slow1", "slow2"} {
		for _, line := range strings.Split(s.MustKnit(t, "logs", "-t", name), "\n") {
			if ts, text, ok := strings.Cut(line, " "); ok && text == "term" {
				when, err := time.Parse(time.RFC3339Nano, ts)
				if err != nil {
					t.Fatal(err)
				}
				at = append(at, when)
			}
		}
	}
	if len(at) != 2 {
		t.Fatalf("SIGTERM seen by %d of the 2 containers", len(at))
	}
	if d := at[1].Sub(at[0]).Abs(); d > 1500*time.Millisecond {
		t.Errorf("the second container got SIGTERM %v after the first: stopped one after the other (grace period 3 s)", d)
	}
}

// Docker's management group: docker container ls/inspect/rm/prune, the
// names its reference and scripts use.
func TestContainerGroup(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "container", "run", "-d", "--name", "up", "--rootfs", bb, "sleep", "300")
	s.MustKnit(t, "container", "run", "--name", "done", "--rootfs", bb, "true")
	if ls := s.MustKnit(t, "container", "ls", "--format", "{{.Names}}"); ls != "up\n" {
		t.Errorf("container ls = %q", ls)
	}
	if ls := s.MustKnit(t, "container", "list", "-a", "--format", "{{.Names}}"); ls != "done\nup\n" && ls != "up\ndone\n" {
		t.Errorf("container list -a = %q", ls)
	}
	if f := s.MustKnit(t, "container", "inspect", "-f", "{{.Name}}", "up"); f != "/up\n" {
		t.Errorf("container inspect = %q", f)
	}
	// Containers only, as docker container inspect.
	if r := s.Knit("container", "inspect", "bridge"); r.Code != 1 || !strings.Contains(r.Stderr, "no such container: bridge") {
		t.Errorf("container inspect bridge: exit %d, %q", r.Code, r.Stderr)
	}
	out := s.MustKnit(t, "container", "prune", "-f")
	if out != "Deleted Containers:\ndone\n\n" {
		t.Errorf("container prune -f = %q, want the stopped one's name", out)
	}
	if ls := s.MustKnit(t, "container", "ls", "-a", "--format", "{{.Names}}"); ls != "up\n" {
		t.Errorf("after container prune: %q, want the running one only", ls)
	}
	s.MustKnit(t, "container", "rm", "-f", "up")
}

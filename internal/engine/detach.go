package engine

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/logfile"
	"github.com/knit-dev/knit/internal/runner"
)

// SuperviseArg is the hidden command a detached container's supervisor runs.
const SuperviseArg = "_supervise"

const logFile = "container.log"

// RunDetached creates a container and leaves a supervisor process that
// starts it, records its exit and releases its network. It returns once the
// container runs, with its ID.
func (e *Engine) RunDetached(o RunOptions) (string, error) {
	o.Detach = true
	// A signal while the container is set up (rm -f of it sends SIGTERM;
	// ^C) cancels the run once the setup is done, which is then undone,
	// and the run says so, instead of dying half-way with nothing said.
	// Signals the caller ignores (nohup, a script's background job) stay
	// ignored. Once the container is made, they are held until knit exits:
	// the start goes on, and whoever sent one finds it running.
	held := make(chan os.Signal, 1)
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		if !signal.Ignored(sig) {
			signal.Notify(held, sig)
		}
	}
	c, err := e.create(&o)
	if err != nil {
		signal.Stop(held)
		return "", err
	}
	select {
	case sig := <-held:
		signal.Stop(held)
		return "", errors.Join(cancelledStart(c, sig), e.destroy(c))
	default:
	}
	if err := e.spawnSupervisor(c); err != nil {
		var se *StartError
		if !errors.As(err, &se) { // a command that did not start is recorded as exited by its supervisor
			e.destroy(c)
		}
		return "", err
	}
	return c.ID, nil
}

// cancelledStart is the error of a run that got sig while it set c up
// (and undid it): rm -f of the container sends SIGTERM, ^C SIGINT.
func cancelledStart(c *Container, sig os.Signal) error {
	if sig == syscall.SIGTERM {
		return errdefs.Conflict("container %s was removed while starting (knit got %v)", c.Name, sig)
	}
	return errdefs.Conflict("start of container %s cancelled (knit got %v)", c.Name, sig)
}

// StartError is why a container's command did not start (not found: 127,
// cannot be executed: 126, setup: 125).
type StartError = runner.StartError

// spawnSupervisor starts `knit _supervise ID` in a session of its own and
// waits for its one-line report on a pipe: "ok" or the reason it failed.
func (e *Engine) spawnSupervisor(c *Container) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	args := []string{"--data-root", e.paths.DataRoot, "--exec-root", e.paths.ExecRoot, "--config", e.paths.Config,
		SuperviseArg, c.ID, string(formatProc(c.State.Owner))}
	// The host-side link names Join chose are in no record yet: the
	// supervisor records them with the start, as a foreground run does
	// (the teardown and a restore of the firewall key the claims on the
	// container's addresses by them).
	ports := make([]string, len(c.Endpoints))
	for i, ep := range c.Endpoints {
		ports[i] = ep.HostIf
	}
	if len(ports) > 0 {
		args = append(args, strings.Join(ports, ","))
	}
	cmd := exec.Command(e.self, args...)
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ok" {
		return cmd.Process.Release()
	}
	if rest, ok := strings.CutPrefix(line, "exit "); ok {
		// The container ran its init, but not its command; the supervisor
		// records its exit.
		code, msg, _ := strings.Cut(rest, " ")
		n, _ := strconv.Atoi(code)
		_ = cmd.Process.Release()
		return &StartError{Code: n, Msg: msg}
	}
	_ = cmd.Wait()
	if line == "" {
		return errors.New("supervisor exited before starting the container")
	}
	return errors.New(line)
}

func openLog(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
}

// Supervise is the body of a detached container's supervisor: start the
// container with its output in the log, report on ready (fd 3 of the
// supervisor), wait, start it again as its restart policy says, then
// record the exit and release the network.
// owner ("PID:START") is the command that created the container: if the
// record names another by now (an rm -f, a repair took it over), the
// container is not started, and if that happens while it starts, start
// finds out and kills it. ports are the host-side link names of its
// endpoints, in order, which the start records.
func (e *Engine) Supervise(id, owner string, ports []string, ready *os.File) error {
	c, err := e.get(id)
	if err == nil {
		if want, ok := parseProc([]byte(owner)); !ok || !c.State.Owner.is(want) {
			err = errdefs.Conflict("container %s was removed while starting", c.Name)
		}
	}
	if err == nil && len(ports) == len(c.Endpoints) {
		for i := range c.Endpoints {
			if c.Endpoints[i].HostIf == "" {
				c.Endpoints[i].HostIf = ports[i]
			}
		}
	}
	if err != nil {
		fmt.Fprintln(ready, err)
		return err
	}
	log, err := openLog(e.logDir(id))
	if err != nil {
		fmt.Fprintln(ready, err)
		return err
	}
	defer log.Close()
	streams, err := newLogStreams(log, c.Spec.LogFormat, nil)
	if err != nil {
		fmt.Fprintln(ready, err)
		return err
	}
	// What the container wrote is in the log before its exit is recorded,
	// so that logs -f, which ends there, misses nothing.
	end := func(code int) error { streams.close(); return e.finish(id, code) }
	sc := runner.StartConfig{Stdout: streams.out, Stderr: streams.err, Tty: c.Spec.Tty}
	if c.Spec.Interactive && !c.Spec.Tty {
		// -di: a stdin that stays open and silent, so shells wait for input
		// instead of exiting at EOF, as with docker run -di. With -t the
		// terminal is that already: a pipe there would only keep, for every
		// restart, a relay goroutine blocked reading it.
		in, keep, err := os.Pipe()
		if err != nil {
			fmt.Fprintln(ready, err)
			streams.close()
			return err
		}
		defer keep.Close()
		defer in.Close()
		sc.Stdin = in
	}
	p, err := e.start(c, sc)
	if err != nil {
		fmt.Fprintln(ready, err)
		streams.close()
		e.destroy(c)
		return err
	}
	if f := p.Failed; f != nil {
		fmt.Fprintf(ready, "exit %d %s\n", f.Code, strings.ReplaceAll(f.Msg, "\n", " "))
	} else {
		fmt.Fprintln(ready, "ok")
	}
	ready.Close()
	go announce(announcements(c.Endpoints), c.Netns)
	var b backoff
	for {
		stop := p.ForwardSignals()
		code, _ := p.Wait()
		stop()
		// A command that could not start (126, 127, a failed setup) is
		// not started again, as in Docker: the first time, run -d reports
		// it; on a restart, the container stops.
		exited := procNow(p.Pid, p.StartTime)
		if p.Failed != nil || !e.awaitRestart(id, exited, code, b.next(time.Since(c.State.StartedAt))) {
			return end(code)
		}
		if p, err = e.restart(c, sc); err != nil {
			fmt.Fprintf(os.Stderr, "knit: %v\n", err)
			return end(code)
		}
	}
}

// logStreams are a container's stdout and stderr: pipes whose other ends
// its supervisor copies into the log as records (logfile), or, for a
// container recorded by a knit before that format, the log itself.
type logStreams struct {
	out, err *os.File // the container's ends
	pipes    bool     // false: out and err are the log
	copiers  sync.WaitGroup
	after    func() // run by close once the copies are done; may be nil
}

// newLogStreams makes a container's streams into log. With tee (a
// foreground run: the caller's stdout and stderr), each stream also goes
// there as it comes; once tee's side fails (a reader that went away:
// knit run ... | head -1), the pipe is closed, so that the container's
// next write fails as it would have without knit in between.
func newLogStreams(log *os.File, format string, tee *Stdio) (*logStreams, error) {
	if format != logfile.Format {
		return &logStreams{out: log, err: log}, nil
	}
	l := &logStreams{pipes: true}
	w := logfile.NewWriter(log)
	for _, s := range []struct {
		name string
		end  **os.File
		tee  func(*Stdio) io.Writer
	}{
		{logfile.Stdout, &l.out, func(t *Stdio) io.Writer { return writerOf(t.Out) }},
		{logfile.Stderr, &l.err, func(t *Stdio) io.Writer { return writerOf(t.Err) }},
	} {
		r, wr, err := os.Pipe()
		if err != nil {
			l.close()
			return nil, err
		}
		*s.end = wr
		var src io.Reader = r
		if tee != nil {
			src = io.TeeReader(r, s.tee(tee))
		}
		l.copiers.Add(1)
		go func() {
			defer l.copiers.Done()
			defer r.Close()
			if err := w.Copy(s.name, src); err != nil && !errors.Is(err, syscall.EPIPE) {
				fmt.Fprintf(os.Stderr, "knit: log %s: %v\n", s.name, err)
			}
		}()
	}
	return l, nil
}

// writerOf is f, or a writer that discards for no file.
func writerOf(f *os.File) io.Writer {
	if f == nil {
		return io.Discard
	}
	return f
}

// close closes the container's ends and waits until the copies have
// written what the container left in the pipes: its processes are gone by
// then (they die with its PID 1), so nothing else holds the pipes open.
func (l *logStreams) close() {
	if !l.pipes {
		return
	}
	for _, f := range []*os.File{l.out, l.err} {
		if f != nil {
			f.Close()
		}
	}
	l.copiers.Wait()
	if l.after != nil {
		l.after()
	}
}

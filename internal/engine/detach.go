package engine

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/knit-dev/knit/internal/errdefs"
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
	c, err := e.create(&o)
	if err != nil {
		return "", err
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
	cmd := exec.Command(e.self,
		"--data-root", e.paths.DataRoot, "--exec-root", e.paths.ExecRoot, "--config", e.paths.Config,
		SuperviseArg, c.ID, string(formatProc(c.State.Owner)))
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
// finds out and kills it.
func (e *Engine) Supervise(id, owner string, ready *os.File) error {
	c, err := e.get(id)
	if err == nil {
		if want, ok := parseProc([]byte(owner)); !ok || c.State.Owner != want {
			err = errdefs.Conflict("container %s was removed while starting", c.Name)
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
	sc := runner.StartConfig{Stdout: log, Stderr: log, Tty: c.Spec.Tty}
	if c.Spec.Interactive {
		// -di: a stdin that stays open and silent, so shells wait for input
		// instead of exiting at EOF, as with docker run -di.
		in, keep, err := os.Pipe()
		if err != nil {
			fmt.Fprintln(ready, err)
			return err
		}
		defer keep.Close()
		defer in.Close()
		sc.Stdin = in
	}
	p, err := e.start(c, sc)
	if err != nil {
		fmt.Fprintln(ready, err)
		e.destroy(c)
		return err
	}
	if f := p.Failed; f != nil {
		fmt.Fprintf(ready, "exit %d %s\n", f.Code, strings.ReplaceAll(f.Msg, "\n", " "))
	} else {
		fmt.Fprintln(ready, "ok")
	}
	ready.Close()
	var b backoff
	for {
		stop := p.ForwardSignals()
		code, _ := p.Wait()
		stop()
		if !c.Spec.Restart.Restarts() || !e.awaitRestart(id, code, b.next(time.Since(c.State.StartedAt))) {
			return e.finish(id, code)
		}
		// A command that cannot start now (127, say) fails as a run of
		// its own, and the back-off grows, as Docker's does.
		if p, err = e.restart(c, sc); err != nil {
			fmt.Fprintf(os.Stderr, "knit: %v\n", err)
			return e.finish(id, code)
		}
	}
}

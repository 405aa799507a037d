package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
)

// eachContainer applies fn to every named container, printing the name of
// each success as Docker does and reporting every failure.
func (a *app) eachContainer(cmd *cobra.Command, refs []string, fn func(e *engine.Engine, ref string) error) error {
	return a.forContainers(cmd, refs, false, fn)
}

// eachContainerAtOnce is eachContainer with fn run for every container at
// the same time, as docker stop and restart do: three containers that
// ignore SIGTERM stop in one grace period, not three. The names still
// print in the order given.
func (a *app) eachContainerAtOnce(cmd *cobra.Command, refs []string, fn func(e *engine.Engine, ref string) error) error {
	return a.forContainers(cmd, refs, true, fn)
}

func (a *app) forContainers(cmd *cobra.Command, refs []string, atOnce bool, fn func(e *engine.Engine, ref string) error) error {
	e, err := a.engine()
	if err != nil {
		return err
	}
	result := func(i int) error { return fn(e, refs[i]) }
	if atOnce {
		done := make([]chan error, len(refs))
		for i := range refs {
			done[i] = make(chan error, 1)
			go func() { done[i] <- fn(e, refs[i]) }()
		}
		result = func(i int) error { return <-done[i] }
	}
	var errs []error
	for i, ref := range refs {
		if err := result(i); errors.Is(err, errReported) {
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(out(cmd), ref)
	}
	return errors.Join(errs...)
}

// errReported is what eachContainer's fn returns for a container it has
// reported on itself, and that is no failure.
var errReported = errors.New("reported")

func (a *app) stopCommand() *cobra.Command {
	return a.stoppingCommand("stop [OPTIONS] CONTAINER [CONTAINER...]",
		"Stop running containers: SIGTERM, then SIGKILL after a grace period", (*engine.Engine).Stop)
}

func (a *app) restartCommand() *cobra.Command {
	return a.stoppingCommand("restart [OPTIONS] CONTAINER [CONTAINER...]",
		"Restart running detached containers: stop the command, then start it again in the same network", (*engine.Engine).Restart)
}

// stoppingCommand is stop or restart: do, with -t and -s, on each
// container named.
func (a *app) stoppingCommand(use, short string, do func(*engine.Engine, string, *time.Duration, syscall.Signal) (*engine.Container, error)) *cobra.Command {
	var f stopFlags
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			timeout, sig, err := f.resolve(cmd)
			if err != nil {
				return err
			}
			return a.eachContainerAtOnce(cmd, args, func(e *engine.Engine, ref string) error {
				_, err := do(e, ref, timeout, sig)
				return err
			})
		},
	}
	f.bind(c)
	return c
}

// stopFlags are stop's and restart's -t/--timeout and -s/--signal.
type stopFlags struct {
	seconds int
	signal  string
}

func (f *stopFlags) bind(c *cobra.Command) {
	c.Flags().IntVarP(&f.seconds, "timeout", "t", 10, "seconds to wait before killing the container (-1: wait for ever; default: its --stop-timeout, or 10)")
	c.Flags().StringVarP(&f.signal, "signal", "s", "TERM", "signal to send first, name or number (default: its --stop-signal, or TERM)")
	// Docker's older name of --timeout.
	c.Flags().SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "time" {
			name = "timeout"
		}
		return pflag.NormalizedName(name)
	})
}

// resolve returns the flags given: unless given, the container's own
// (its run's --stop-signal and --stop-timeout), as in Docker.
func (f *stopFlags) resolve(cmd *cobra.Command) (timeout *time.Duration, sig syscall.Signal, err error) {
	if f.seconds < -1 {
		return nil, 0, errdefs.Invalid("invalid --timeout %d: want seconds, or -1 to wait for ever", f.seconds)
	}
	if cmd.Flags().Changed("signal") {
		if sig, err = parseSignal(f.signal); err != nil {
			return nil, 0, err
		}
	}
	if cmd.Flags().Changed("timeout") {
		d := time.Duration(f.seconds) * time.Second // -1: for ever, as in Docker
		timeout = &d
	}
	return timeout, sig, nil
}

func (a *app) killCommand() *cobra.Command {
	var signal string
	c := &cobra.Command{
		Use:   "kill [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Send a signal to running containers",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig, err := parseSignal(signal)
			if err != nil {
				return err
			}
			return a.eachContainer(cmd, args, func(e *engine.Engine, ref string) error {
				_, err := e.Kill(ref, sig)
				return err
			})
		},
	}
	c.Flags().StringVarP(&signal, "signal", "s", "KILL", "signal to send (name or number)")
	return c
}

func (a *app) renameCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rename CONTAINER NEW_NAME",
		Short: "Rename a container",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.engine()
			if err != nil {
				return err
			}
			return e.Rename(args[0], args[1])
		},
	}
}

func (a *app) waitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "wait CONTAINER [CONTAINER...]",
		Short: "Block until containers stop, then print their exit codes",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.eachContainer(cmd, args, func(e *engine.Engine, ref string) error {
				code, err := e.Wait(ref)
				if err != nil {
					return err
				}
				fmt.Fprintln(out(cmd), code)
				return errReported
			})
		},
	}
}

// The real-time signals as glibc numbers them (it keeps 32 and 33), which
// is what RTMIN+N means to a container's programs and to Docker.
const sigRTMin, sigRTMax = 34, 64

// signalAliases are the second names of signals, which unix.SignalNum
// does not know.
var signalAliases = map[string]syscall.Signal{"SIGIOT": unix.SIGABRT, "SIGPOLL": unix.SIGIO, "SIGCLD": unix.SIGCHLD}

// parseSignal accepts "KILL", "SIGKILL", "kill", "9", aliases such as IOT,
// and the real-time signals RTMIN, RTMIN+N, RTMAX-N and RTMAX, as Docker.
func parseSignal(s string) (syscall.Signal, error) {
	invalid := errdefs.Invalid("invalid signal %q", s)
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > sigRTMax {
			return 0, invalid
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	for _, rt := range []struct {
		prefix string
		base   int
		sign   byte // of the offset: RTMIN+N, RTMAX-N
	}{{"SIGRTMIN", sigRTMin, '+'}, {"SIGRTMAX", sigRTMax, '-'}} {
		rest, ok := strings.CutPrefix(name, rt.prefix)
		if !ok {
			continue
		}
		n := 0
		if rest != "" {
			var err error
			if n, err = strconv.Atoi(rest); err != nil || rest[0] != rt.sign {
				return 0, invalid
			}
		}
		if sig := rt.base + n; sig >= sigRTMin && sig <= sigRTMax {
			return syscall.Signal(sig), nil
		}
		return 0, invalid
	}
	if sig, ok := signalAliases[name]; ok {
		return sig, nil
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, invalid
	}
	return sig, nil
}

func (a *app) rmCommand() *cobra.Command {
	var force, volumes bool
	c := &cobra.Command{
		Use:   "rm [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Remove containers, releasing their network",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.eachContainer(cmd, args, func(e *engine.Engine, ref string) error {
				err := e.Remove(ref, engine.RemoveOptions{Force: force})
				if force && errdefs.KindOf(err) == errdefs.KindNotFound {
					// As docker rm -f: said, but not a failure, so that
					// `rm -f NAME; run --name NAME` works either way.
					fmt.Fprintf(a.env.Err, "knit: %v\n", err)
					return errReported
				}
				return err
			})
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "kill and remove a running container; a missing one is not an error")
	c.Flags().BoolVarP(&volumes, "volumes", "v", false, "accepted for Docker's sake: knit makes no volumes")
	return c
}

func (a *app) logsCommand() *cobra.Command {
	var (
		follow, timestamps, details bool
		tail, since, until          string
	)
	c := &cobra.Command{
		Use:   "logs [OPTIONS] CONTAINER",
		Short: "Print the output of a container (detached, or run in the foreground without --rm)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := engine.LogsOptions{Follow: follow, Tail: -1, Timestamps: timestamps, Details: details} // -1: all
			if tail != "all" {
				n, err := strconv.Atoi(tail)
				if err != nil {
					return errdefs.Invalid("invalid --tail %q: want a number of lines, or all", tail)
				}
				if n >= 0 {
					o.Tail = n
				}
			}
			now := time.Now()
			var err error
			if o.Since, err = parseLogTime("--since", since, now); err != nil {
				return err
			}
			if o.Until, err = parseLogTime("--until", until, now); err != nil {
				return err
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			return e.Logs(args[0], o, out(cmd), cmd.ErrOrStderr())
		},
	}
	fl := c.Flags()
	fl.BoolVarP(&follow, "follow", "f", false, "follow log output until the container stops")
	fl.StringVarP(&tail, "tail", "n", "all", "number of lines to show from the end of the logs")
	fl.BoolVarP(&timestamps, "timestamps", "t", false, "show the time each line was written")
	fl.BoolVar(&details, "details", false, "show the extra details given to the log (knit's lines have none: a space before each)")
	fl.StringVar(&since, "since", "", "show lines since a time (2006-01-02T15:04:05Z07:00, 2006-01-02, a Unix timestamp) or for a duration back (42m)")
	fl.StringVar(&until, "until", "", "show lines before a time, or a duration back (as --since)")
	return c
}

// logTimeLayouts are the times --since and --until take besides Unix
// timestamps and durations, as Docker's; those without a zone are local.
var logTimeLayouts = []string{
	time.RFC3339Nano, "2006-01-02T15:04Z07:00", "2006-01-02T15Z07:00", "2006-01-02Z07:00",
	"2006-01-02T15:04:05.999999999", "2006-01-02T15:04", "2006-01-02T15", "2006-01-02",
}

// parseLogTime reads a --since or --until value: a time, a Unix timestamp
// (seconds, with a fraction or not), or a duration back from now; "" is
// no bound.
func parseLogTime(flag, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil && v != "0" { // 0 is the epoch, as Docker's
		return now.Add(-d), nil
	}
	if secs, frac, _ := strings.Cut(v, "."); secs != "" && strings.Trim(secs, "0123456789") == "" && strings.Trim(frac, "0123456789") == "" && len(frac) <= 9 {
		s, err := strconv.ParseInt(secs, 10, 64)
		if err == nil {
			ns, _ := strconv.Atoi((frac + "000000000")[:9])
			return time.Unix(s, int64(ns)), nil
		}
	}
	for _, layout := range logTimeLayouts {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errdefs.Invalid("invalid %s %q: want a time (2006-01-02T15:04:05Z07:00, 2006-01-02), a Unix timestamp or a duration back (42m)", flag, v)
}

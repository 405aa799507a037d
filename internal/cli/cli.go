// Package cli is knit's command line: cobra commands, flags and output. It
// parses and validates what the user typed, calls the engine, and prints
// results the way Docker does. It makes no kernel calls of its own.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
)

// Exit codes of knit's own errors, as Docker's: 125 for the command line's
// (an unknown flag, a flag's bad value) and for run's, 1 for any other
// command's.
const (
	ExitInternal = 125
	ExitFailure  = 1
)

// flagError is an error of the command line's syntax.
type flagError struct{ error }

func (e flagError) Unwrap() error { return e.error }

// Env is what main hands the CLI.
type Env struct {
	// NewEngine builds the engine once the global flags are parsed.
	NewEngine func(engine.Paths) (*engine.Engine, error)
	In        *os.File
	Out, Err  *os.File
	Version   string
}

// statusError is an error with an exit code of its own (inspect's template
// that does not parse: 64, as Docker's CLI).
type statusError struct {
	code int
	err  error
}

func (e statusError) Error() string { return e.err.Error() }
func (e statusError) Unwrap() error { return e.err }

// exitError carries a container's exit status back to main.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// app holds what every command needs.
type app struct {
	env   Env
	paths engine.Paths
	eng   *engine.Engine
}

// engine builds the engine on first use, so that `knit --help` touches nothing.
func (a *app) engine() (*engine.Engine, error) {
	if a.eng == nil {
		e, err := a.env.NewEngine(a.paths)
		if err != nil {
			return nil, err
		}
		a.eng = e
	}
	return a.eng, nil
}

// Run executes the command line args (without the program name) and returns
// the process exit code.
func Run(args []string, env Env) int {
	a := &app{env: env, paths: pathsFromEnv()}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(env.In)
	root.SetOut(env.Out)
	root.SetErr(env.Err)
	err := root.Execute()
	if a.eng != nil {
		a.eng.Linger()
	}
	var ee exitError
	var se statusError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &se):
		fmt.Fprintf(env.Err, "knit: %v\n", err)
		return se.code
	default:
		fmt.Fprintf(env.Err, "knit: %v\n", err)
		if errdefs.KindOf(err) == errdefs.KindInvalid {
			fmt.Fprintln(env.Err, "See 'knit --help'.")
		}
		if cmd, _, ferr := root.Find(args); errors.As(err, new(flagError)) || ferr == nil && cmd.Name() == "run" {
			return ExitInternal
		}
		return ExitFailure
	}
}

// pathsFromEnv applies KNIT_DATA_ROOT, KNIT_EXEC_ROOT and KNIT_CONFIG; the
// global flags override them.
func pathsFromEnv() engine.Paths {
	p := engine.DefaultPaths()
	for env, dst := range map[string]*string{
		"KNIT_DATA_ROOT": &p.DataRoot,
		"KNIT_EXEC_ROOT": &p.ExecRoot,
		"KNIT_CONFIG":    &p.Config,
	} {
		if v := os.Getenv(env); v != "" {
			*dst = v
		}
	}
	return p
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "knit",
		Short:         "Container networking that explains itself",
		Long:          "knit runs processes in their own namespaces and gives them a network: namespaces, veth pairs, bridges and addresses, like Docker's, in one daemonless binary.",
		Version:       a.env.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return flagError{errdefs.Invalid("%v", err)}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.paths.DataRoot, "data-root", a.paths.DataRoot, "directory of persistent state (env KNIT_DATA_ROOT)")
	pf.StringVar(&a.paths.ExecRoot, "exec-root", a.paths.ExecRoot, "directory of runtime state (env KNIT_EXEC_ROOT)")
	pf.StringVar(&a.paths.Config, "config", a.paths.Config, "configuration file (env KNIT_CONFIG)")
	root.AddCommand(
		a.runCommand(), a.execCommand(), a.psCommand(), a.inspectCommand(),
		a.stopCommand(), a.killCommand(), a.rmCommand(), a.logsCommand(), a.waitCommand(), a.topCommand(), a.renameCommand(), a.restartCommand(), a.cpCommand(), a.statsCommand(),
		a.systemCommand(), a.portCommand(), a.networkCommand(), a.containerCommand(), a.superviseCommand(), announceCommand(),
	)
	root.AddCommand(a.dnsCommand())
	root.AddCommand(a.cniCommand())
	return root
}

// superviseCommand is the hidden entry of a detached container's supervisor.
func (a *app) superviseCommand() *cobra.Command {
	return &cobra.Command{
		Use:    engine.SuperviseArg + " ID OWNER [PORT,...]",
		Hidden: true,
		Args:   cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ready := os.NewFile(3, "ready")
			e, err := a.engine()
			if err != nil {
				fmt.Fprintln(ready, err)
				return err
			}
			var ports []string
			if len(args) == 3 {
				ports = strings.Split(args[2], ",")
			}
			return e.Supervise(args[0], args[1], ports, ready)
		},
	}
}

// announceCommand is the hidden entry of the process a `network connect`
// or a CNI ADD leaves to announce its addresses once the port forwards.
func announceCommand() *cobra.Command {
	return &cobra.Command{
		Use:    engine.AnnounceArg + " NETNS SPEC",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return engine.Announce(args[0], args[1])
		},
	}
}

// noHelpShorthand frees -h for --hostname, as in docker run.
func noHelpShorthand(c *cobra.Command) {
	c.Flags().Bool("help", false, "print usage")
}

func out(c *cobra.Command) io.Writer { return c.OutOrStdout() }

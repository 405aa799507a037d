package cli

import (
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
)

func (a *app) execCommand() *cobra.Command {
	var (
		env, envFiles    []string
		workdir, user    string
		interactive, tty bool
		detach           bool
	)
	c := &cobra.Command{
		Use:   "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
		Short: "Run a command in a running container, in all of its namespaces",
		Args:  minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tty && interactive && !isTerminal(a.env.In) {
				return errdefs.Invalid("the input device is not a TTY: drop -t, or run from a terminal")
			}
			resolved, err := envFromFlags(envFiles, env)
			if err != nil {
				return err
			}
			if err := checkUser(user); err != nil {
				return err
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			code, err := e.Exec(args[0], engine.ExecOptions{
				Args: args[1:], Env: resolved, Workdir: workdir, Tty: tty, Interactive: interactive, Detach: detach, User: user,
			}, engine.Stdio{In: a.env.In, Out: a.env.Out, Err: a.env.Err})
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	noHelpShorthand(c)
	fl := c.Flags()
	fl.SetInterspersed(false)
	fl.StringArrayVarP(&env, "env", "e", nil, "set environment variables")
	fl.StringArrayVar(&envFiles, "env-file", nil, "read environment variables from a file of KEY=VALUE lines")
	fl.StringVarP(&user, "user", "u", "", "user to run the command as: NAME|UID[:GROUP|GID], from the container's /etc/passwd and /etc/group")
	fl.StringVarP(&workdir, "workdir", "w", "", "working directory inside the container")
	fl.BoolVarP(&interactive, "interactive", "i", false, "keep STDIN open")
	fl.BoolVarP(&tty, "tty", "t", false, "allocate a pseudo-TTY")
	fl.BoolVarP(&detach, "detach", "d", false, "run the command in the background")
	return c
}

func isTerminal(f *os.File) bool {
	if f == nil {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

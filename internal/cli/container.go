package cli

import (
	"github.com/spf13/cobra"
)

// containerCommand is Docker's management group `docker container ...`:
// the same commands as at the top, under the names Docker's reference
// and scripts use (container ls, container rm, container inspect), and
// container prune.
func (a *app) containerCommand() *cobra.Command {
	c := &cobra.Command{Use: "container", Short: "Manage containers (the commands of the top level, as docker container)"}
	ls := a.psCommand()
	ls.Use, ls.Aliases = "ls [OPTIONS]", []string{"list", "ps"}
	inspect := a.inspectCommand()
	// docker container inspect looks at containers only.
	_ = inspect.Flags().Set("type", "container")
	inspect.Flags().Lookup("type").Hidden = true
	c.AddCommand(a.runCommand(), a.execCommand(), ls, inspect, a.stopCommand(), a.killCommand(), a.rmCommand(),
		a.logsCommand(), a.waitCommand(), a.topCommand(), a.renameCommand(), a.restartCommand(), a.cpCommand(),
		a.statsCommand(), a.portCommand(), a.containerPruneCommand())
	return c
}

// containerPruneCommand removes every stopped container, as docker
// container prune (system prune also repairs what nothing owns).
func (a *app) containerPruneCommand() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove all stopped containers",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force && !confirm(out(cmd), a.env.In, "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ") {
				return nil
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			removed, err := e.PruneContainers()
			writePruned(out(cmd), "Deleted Containers:", removed)
			return err
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "do not prompt for confirmation")
	return c
}

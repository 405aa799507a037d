package cli

import (
	"github.com/spf13/cobra"
)

func (a *app) systemCommand() *cobra.Command {
	sys := &cobra.Command{Use: "system", Short: "Manage knit's state"}
	var force bool
	prune := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove stopped containers and kernel objects no container owns",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force && !confirm(out(cmd), a.env.In, "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - namespaces, links, addresses and firewall elements that nothing owns\n\nAre you sure you want to continue? [y/N] ") {
				return nil
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			r, err := e.Prune()
			if r != nil {
				for _, k := range []struct {
					title string
					items []string
				}{
					{"Deleted Containers:", r.Containers}, {"Deleted Networks:", r.Networks}, {"Deleted CNI Attachments:", r.CNI},
					{"Deleted Network Namespaces:", r.Netns}, {"Deleted Links:", r.Links}, {"Released Addresses:", r.Addresses},
					{"Removed Firewall Elements of:", r.Ports},
				} {
					writePruned(out(cmd), k.title, k.items)
				}
			}
			return err
		},
	}
	prune.Flags().BoolVarP(&force, "force", "f", false, "do not prompt for confirmation")
	// docker system prune -a and --volumes are about images and volumes,
	// which knit has none of: taken, as scripts written for Docker pass
	// them, and they change nothing.
	prune.Flags().BoolP("all", "a", false, "accepted for Docker's scripts; knit has no images")
	prune.Flags().Bool("volumes", false, "accepted for Docker's scripts; knit has no volumes")
	sys.AddCommand(prune)
	return sys
}

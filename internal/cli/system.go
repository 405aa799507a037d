package cli

import (
	"fmt"

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
				print := func(title string, items []string) {
					if len(items) == 0 {
						return
					}
					fmt.Fprintln(out(cmd), title)
					for _, it := range items {
						fmt.Fprintln(out(cmd), it)
					}
					fmt.Fprintln(out(cmd))
				}
				print("Deleted Containers:", r.Containers)
				print("Deleted Networks:", r.Networks)
				print("Deleted CNI Attachments:", r.CNI)
				print("Deleted Network Namespaces:", r.Netns)
				print("Deleted Links:", r.Links)
				print("Released Addresses:", r.Addresses)
				print("Removed Firewall Elements of:", r.Ports)
			}
			return err
		},
	}
	prune.Flags().BoolVarP(&force, "force", "f", false, "do not prompt for confirmation")
	// docker system prune -a and --volumes are about images and volumes,
	// which knit has none of: taken, as scripts written for Docker pass
	// them, and they change nothing.
	var all, volumes bool
	prune.Flags().BoolVarP(&all, "all", "a", false, "accepted for Docker's scripts; knit has no images")
	prune.Flags().BoolVar(&volumes, "volumes", false, "accepted for Docker's scripts; knit has no volumes")
	sys.AddCommand(prune)
	return sys
}

package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// cniCommand is `knit cni`: install knit as a CNI plugin and list the
// attachments CNI runtimes made. (The plugin itself runs when a runtime
// executes knit with CNI_COMMAND set; see internal/cni.)
func (a *app) cniCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "cni",
		Short: "Use knit as a CNI plugin",
		Long: "A CNI runtime (containerd, CRI-O, Podman's CNI backend, cnitool) executes knit as the plugin of type \"knit\" " +
			"when it is in the runtime's plugin directory. knit then attaches the runtime's namespace to the knit network the " +
			"configuration names, shared with `knit run`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	c.AddCommand(a.cniInstallCommand(), a.cniLsCommand())
	return c
}

func (a *app) cniInstallCommand() *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "install",
		Short: "Copy this knit binary into a CNI plugin directory as \"knit\"",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own executable: %w", err)
			}
			dst := filepath.Join(dir, "knit")
			if err := installFile(self, dst); err != nil {
				return err
			}
			fmt.Fprintln(out(cmd), dst)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "/opt/cni/bin", "CNI plugin directory")
	return c
}

// installFile copies src to dst through a temporary file in dst's
// directory, so that a runtime never executes a half-written plugin.
func installFile(src, dst string) (err error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".knit-install-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = io.Copy(tmp, in); err == nil {
		err = tmp.Chmod(0o755)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	return os.Rename(tmp.Name(), dst)
}

func (a *app) cniLsCommand() *cobra.Command {
	var network string
	var noTrunc bool
	c := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the attachments CNI runtimes made",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.engine()
			if err != nil {
				return err
			}
			atts, err := e.CNIAttachments(network)
			if err != nil {
				return err
			}
			tw := newTable(out(cmd))
			fmt.Fprintln(tw, "CONTAINER ID\tIFNAME\tNETWORK\tNAME\tADDRESSES\tNETNS")
			for _, at := range atts {
				id := at.ContainerID
				if !noTrunc && len(id) > 12 {
					id = id[:12]
				}
				var addrs []string
				for _, p := range at.Endpoint.Addrs {
					addrs = append(addrs, p.String())
				}
				state := at.Netns
				if at.Owner.Pid != 0 {
					state += " (ADD in progress or died)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", id, at.IfName, at.Network, at.Name, strings.Join(addrs, ","), state)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&network, "network", "", "only attachments on this network")
	c.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate container IDs")
	return c
}

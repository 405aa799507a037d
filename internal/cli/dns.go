package cli

import "github.com/spf13/cobra"

// dnsCommand is the hidden entry of the embedded DNS server, which the
// engine starts when a DNS-enabled network gets its first container and
// which exits by itself when no network needs it.
func (a *app) dnsCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "_dns",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.engine()
			if err != nil {
				return err
			}
			return e.ServeDNS()
		},
	}
}

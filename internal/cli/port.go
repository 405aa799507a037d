package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/portmap"
)

func (a *app) portCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "port CONTAINER [PRIVATE_PORT[/PROTO]]",
		Short: "List port mappings, or look up the public address of one port",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.engine()
			if err != nil {
				return err
			}
			c, err := e.Container(args[0])
			if err != nil {
				return err
			}
			maps := engine.Mappings(c)
			if len(args) == 1 {
				for _, m := range maps {
					fmt.Fprintln(out(cmd), m)
				}
				return nil
			}
			port, proto, _ := strings.Cut(args[1], "/")
			if proto == "" {
				proto = "tcp"
			}
			found := false
			for _, m := range maps {
				if fmt.Sprint(m.ContainerPort) == port && string(m.Proto) == proto {
					fmt.Fprintln(out(cmd), strings.TrimPrefix(m.String(), fmt.Sprintf("%d/%s -> ", m.ContainerPort, m.Proto)))
					found = true
				}
			}
			if !found {
				return errdefs.NotFound("no public port '%s/%s' published for %s", port, proto, c.Name)
			}
			return nil
		},
	}
}

// portsColumn renders ps's PORTS column as Docker does: 0.0.0.0:8080->80/tcp.
func portsColumn(c *engine.Container) string {
	var parts []string
	published := map[string]bool{}
	for _, m := range engine.Mappings(c) {
		key := fmt.Sprintf("%d/%s", m.ContainerPort, m.Proto)
		parts = append(parts, hostAddr(m)+"->"+key)
		published[key] = true
	}
	if c.Running() { // an exposed port nothing publishes shows alone, as in Docker's
		for _, s := range c.Spec.Exposed {
			eachPort(s, func(key, _ string) {
				if !published[key] {
					published[key] = true
					parts = append(parts, key)
				}
			})
		}
	}
	return strings.Join(parts, ", ")
}

func hostAddr(m portmap.Mapping) string {
	s := m.String() // "80/tcp -> 0.0.0.0:8080"
	_, addr, _ := strings.Cut(s, " -> ")
	return addr
}

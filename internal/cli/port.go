package cli

import (
	"cmp"
	"fmt"
	"slices"
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
				lines := make([]string, len(maps))
				for i, m := range maps {
					lines[i] = m.String()
				}
				// In natural order (80 before 443), as docker port's.
				slices.SortFunc(lines, naturalCompare)
				for _, l := range lines {
					fmt.Fprintln(out(cmd), l)
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
	if c.Running() && len(c.Endpoints) > 0 { // an exposed port nothing publishes shows alone, as in Docker's
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

// naturalCompare orders strings as Docker's CLI does (sortorder's natural
// order): runs of digits by their value ("80/tcp" before "443/tcp",
// "10.0.0.9" before "10.0.0.10"), a digit before any other character, and
// of two equal numbers the one written with fewer leading zeros first.
func naturalCompare(a, b string) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		da, db := isDigit(a[i]), isDigit(b[j])
		switch {
		case da != db:
			if da {
				return -1
			}
			return 1
		case !da:
			if a[i] != b[j] {
				return cmp.Compare(a[i], b[j])
			}
			i, j = i+1, j+1
		default:
			zi, zj := i, j // past the leading zeros
			for zi < len(a) && a[zi] == '0' {
				zi++
			}
			for zj < len(b) && b[zj] == '0' {
				zj++
			}
			ei, ej := zi+len(digitRun(a[zi:])), zj+len(digitRun(b[zj:]))
			if c := cmp.Or(cmp.Compare(ei-zi, ej-zj), strings.Compare(a[zi:ei], b[zj:ej]), cmp.Compare(zi-i, zj-j)); c != 0 {
				return c
			}
			i, j = ei, ej
		}
	}
	return cmp.Compare(len(a)-i, len(b)-j)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// digitRun is the run of digits s starts with.
func digitRun(s string) string {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i]
}

package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/knit-dev/knit/internal/engine"
)

// psRow holds the fields `knit ps --format` offers, named as in Docker.
type psRow struct {
	ID, Names, Command, CreatedAt, RunningFor, Status, State, Ports, Networks, Image, Labels string

	labels map[string]string
	header bool
}

// Label returns the value of one label: {{.Label "com.example.owner"}}.
func (r psRow) Label(key string) string {
	if r.header {
		return "LABEL"
	}
	return r.labels[key]
}

// psHeader is the row a table template prints as its header.
var psHeader = psRow{
	ID: "CONTAINER ID", Names: "NAMES", Command: "COMMAND", CreatedAt: "CREATED AT",
	RunningFor: "CREATED", Status: "STATUS", State: "STATE", Ports: "PORTS",
	Networks: "NETWORKS", Image: "IMAGE", Labels: "LABELS", header: true,
}

const psDefaultFormat = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"

func (a *app) psCommand() *cobra.Command {
	var (
		all, quiet, noTrunc, latest bool
		format                      string
		filters                     []string
		last                        int
	)
	c := &cobra.Command{
		Use:     "ps [OPTIONS]",
		Aliases: []string{"ls"},
		Short:   "List containers",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parsePSFilter(filters)
			if err != nil {
				return err
			}
			if latest && last == -1 {
				last = 1
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			list, err := e.Containers() // newest first
			if err != nil {
				return err
			}
			var nets []*engine.Network
			if len(f.networks) > 0 {
				if nets, err = e.Networks(); err != nil {
					return err
				}
			}
			if err := f.resolve(list, nets); err != nil {
				return err
			}
			// -n and -l take the newest of every state (-n 0 is no
			// limit); a status filter looks at every state too, as in
			// Docker.
			all = all || last > 0 || f.impliesAll
			list = slices.DeleteFunc(list, func(c *engine.Container) bool { return (!all && !c.Running()) || !f.match(c) })
			if last > 0 && len(list) > last {
				list = list[:last]
			}
			if quiet {
				// As docker ps: -q wins.
				if format != "" && format != "table" {
					fmt.Fprintln(cmd.ErrOrStderr(), "WARNING: Ignoring custom format, because both --format and --quiet are set.")
				}
				format = "{{.ID}}"
			}
			tmpl, table, err := listFormat(format, psDefaultFormat)
			if err != nil {
				return err
			}
			now := time.Now()
			rows := make([]psRow, len(list))
			for i, c := range list {
				rows[i] = newPSRow(c, now, noTrunc)
			}
			return writeRows(out(cmd), tmpl, table, psHeader, rows)
		},
	}
	fl := c.Flags()
	fl.BoolVarP(&all, "all", "a", false, "show all containers (default shows just running)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "only display container IDs")
	fl.BoolVar(&noTrunc, "no-trunc", false, "don't truncate output")
	fl.StringVar(&format, "format", "", "format output using a Go template")
	fl.StringArrayVarP(&filters, "filter", "f", nil, "filter output (id, name, status, exited, network, publish, expose, before, since, label, ancestor, volume)")
	fl.IntVarP(&last, "last", "n", -1, "show n last created containers (includes all states)")
	fl.BoolVarP(&latest, "latest", "l", false, "show the latest created container (includes all states)")
	return c
}

func newPSRow(c *engine.Container, now time.Time, noTrunc bool) psRow {
	r := psRow{
		ID:         c.ID,
		Names:      c.Name,
		CreatedAt:  c.Created.Local().Format("2006-01-02 15:04:05 -0700 MST"),
		RunningFor: humanDuration(now.Sub(c.Created)) + " ago",
		State:      c.StatusName(),
		Ports:      portsColumn(c),
		Image:      rootfsOf(c),
		Labels:     joinLabels(c.Spec.Labels),
		labels:     c.Spec.Labels,
	}
	var nets []string
	for _, ep := range c.Endpoints {
		nets = append(nets, ep.Network)
	}
	if len(nets) == 0 {
		nets = []string{c.Spec.NetworkMode}
	}
	r.Networks = strings.Join(nets, ",")
	cmd := strings.Join(c.Spec.Args, " ")
	if !noTrunc {
		r.ID = r.ID[:12]
		if runes := []rune(cmd); len(runes) > 20 {
			cmd = string(runes[:19]) + "…"
		}
	}
	r.Command = strconv.Quote(cmd)
	switch c.StatusName() {
	case engine.StatusRestarting:
		r.Status = fmt.Sprintf("Restarting (%d) %s ago", c.State.ExitCode, humanDuration(now.Sub(c.State.FinishedAt)))
	case engine.StatusRunning:
		r.Status = "Up " + humanDuration(now.Sub(c.State.StartedAt))
	case engine.StatusExited:
		r.Status = fmt.Sprintf("Exited (%d) %s ago", c.State.ExitCode, humanDuration(now.Sub(c.State.FinishedAt)))
	default:
		r.Status = "Created"
	}
	return r
}

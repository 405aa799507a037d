package cli

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/knit-dev/knit/internal/engine"
)

// statsInterval is how far apart stats samples a container: its CPU % is
// the CPU time used over it.
const statsInterval = time.Second

// statsCommand is docker stats: CPU, memory, network, block I/O and tasks
// of running containers (all of them by default), refreshed every second
// until interrupted, or once with --no-stream.
func (a *app) statsCommand() *cobra.Command {
	var noStream, noTrunc bool
	var format string
	c := &cobra.Command{
		Use:   "stats [OPTIONS] [CONTAINER...]",
		Short: "Display a live stream of containers' resource usage",
		RunE: func(cmd *cobra.Command, args []string) error {
			tmpl, table, err := listFormat(format, statsDefaultFormat)
			if err != nil {
				return err
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			refs := args
			if len(refs) == 0 {
				all, err := e.Containers()
				if err != nil {
					return err
				}
				for _, c := range all {
					if c.StatusName() == engine.StatusRunning {
						refs = append(refs, c.ID)
					}
				}
			}
			prev, err := sample(e, refs)
			if err != nil {
				return err
			}
			stop := make(chan os.Signal, 1)
			signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(stop)
			for {
				select {
				case <-stop:
					return nil
				case <-time.After(statsInterval):
				}
				cur, err := sample(e, refs)
				if err != nil {
					return err
				}
				if !noStream {
					fmt.Fprint(out(cmd), "\033[2J\033[H") // a fresh screen, as Docker's
				}
				if err := writeRows(out(cmd), tmpl, table, statsHeader, statsRows(refs, prev, cur, noTrunc, len(args) > 0)); err != nil {
					return err
				}
				if noStream {
					return nil
				}
				prev = cur
			}
		},
	}
	c.Flags().BoolVar(&noStream, "no-stream", false, "print one sample and exit")
	c.Flags().BoolVar(&noTrunc, "no-trunc", false, "don't truncate output")
	c.Flags().StringVar(&format, "format", "", "format output using a Go template, or table, or json")
	return c
}

// statsRow is a container's line of docker stats: the fields its --format
// templates name.
type statsRow struct {
	BlockIO, CPUPerc, Container, ID, MemPerc, MemUsage, Name, NetIO, PIDs string
}

var statsHeader = statsRow{
	BlockIO: "BLOCK I/O", CPUPerc: "CPU %", Container: "CONTAINER", ID: "CONTAINER ID", MemPerc: "MEM %",
	MemUsage: "MEM USAGE / LIMIT", Name: "NAME", NetIO: "NET I/O", PIDs: "PIDS",
}

const statsDefaultFormat = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"

type usageSample struct {
	c *engine.Container
	u *engine.Usage
}

// sample reads every container's usage; one named that is not running is
// an error, as in Docker.
func sample(e *engine.Engine, refs []string) (map[string]usageSample, error) {
	out := map[string]usageSample{}
	for _, ref := range refs {
		c, u, err := e.Usage(ref)
		if err != nil {
			return nil, err
		}
		out[ref] = usageSample{c, u}
	}
	return out, nil
}

// statsRows makes each container's row from two samples of it. Its
// Container is the reference given (named), else its ID, as Docker's.
func statsRows(refs []string, prev, cur map[string]usageSample, noTrunc, named bool) []statsRow {
	rows := make([]statsRow, 0, len(refs))
	for _, ref := range refs {
		p, c := prev[ref], cur[ref]
		id := c.c.ID
		if !noTrunc {
			id = id[:12]
		}
		cpu := 0.0
		if wall := c.u.At.Sub(p.u.At); wall > 0 && c.u.CPU > p.u.CPU {
			cpu = 100 * float64(c.u.CPU-p.u.CPU) / float64(wall)
		}
		mem := 0.0
		if c.u.MemoryLimit > 0 {
			mem = 100 * float64(c.u.Memory) / float64(c.u.MemoryLimit)
		}
		r := statsRow{
			Container: id, ID: id, Name: c.c.Name, CPUPerc: fmt.Sprintf("%.2f%%", cpu),
			MemUsage: binarySize(c.u.Memory) + " / " + binarySize(c.u.MemoryLimit), MemPerc: fmt.Sprintf("%.2f%%", mem),
			NetIO:   decimalSize(c.u.NetRx) + " / " + decimalSize(c.u.NetTx),
			BlockIO: decimalSize(c.u.BlockRead) + " / " + decimalSize(c.u.BlockWrite), PIDs: fmt.Sprint(c.u.Pids),
		}
		if named {
			r.Container = ref
		}
		rows = append(rows, r)
	}
	return rows
}

// binarySize is Docker's memory form: 1.5MiB, 23.4GiB.
func binarySize(n uint64) string {
	return humanSize(float64(n), 1024, []string{"B", "KiB", "MiB", "GiB", "TiB"})
}

// decimalSize is Docker's network and block I/O form: 1.2kB, 3MB.
func decimalSize(n uint64) string {
	return humanSize(float64(n), 1000, []string{"B", "kB", "MB", "GB", "TB"})
}

// humanSize prints size in the largest unit that keeps it at least 1, to
// four significant digits (Docker's go-units: "%.4g%s").
func humanSize(size, base float64, units []string) string {
	i := 0
	for size >= base && i < len(units)-1 {
		size /= base
		i++
	}
	return fmt.Sprintf("%.4g%s", size, units[i])
}

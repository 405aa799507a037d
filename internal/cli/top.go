package cli

import (
	"bytes"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/knit-dev/knit/internal/errdefs"
)

// topCommand is docker top: the host's ps, with its options (-ef by
// default), keeping the header and the lines of the container's
// processes, found by the PID column.
func (a *app) topCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "top CONTAINER [ps OPTIONS]",
		Short: "Display the running processes of a container",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.engine()
			if err != nil {
				return err
			}
			pids, err := e.Processes(args[0])
			if err != nil {
				return err
			}
			psArgs := args[1:]
			if len(psArgs) == 0 {
				psArgs = []string{"-ef"}
			}
			var stderr bytes.Buffer
			ps := exec.Command("ps", psArgs...)
			ps.Stderr = &stderr
			output, err := ps.Output()
			if err != nil {
				return errdefs.Invalid("ps %s: %v: %s", strings.Join(psArgs, " "), err, strings.TrimSpace(stderr.String()))
			}
			lines, err := filterPS(string(output), pids)
			if err != nil {
				return errdefs.Invalid("ps %s: %v", strings.Join(psArgs, " "), err)
			}
			for _, l := range lines {
				fmt.Fprintln(out(cmd), l)
			}
			return nil
		},
	}
	c.Flags().SetInterspersed(false) // what follows CONTAINER is ps's
	return c
}

// filterPS keeps ps's header and the lines whose PID column names one of
// pids; a ps output without a PID column is an error, as Docker's.
func filterPS(output string, pids []int) ([]string, error) {
	lines := strings.Split(strings.TrimRight(output, "\n"), "\n")
	col := slices.Index(strings.Fields(lines[0]), "PID")
	if col < 0 {
		return nil, fmt.Errorf("its output has no PID column")
	}
	kept := lines[:1]
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) <= col {
			continue
		}
		if pid, err := strconv.Atoi(f[col]); err == nil && slices.Contains(pids, pid) {
			kept = append(kept, l)
		}
	}
	return kept, nil
}

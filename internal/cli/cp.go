package cli

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/knit-dev/knit/internal/copytree"
	"github.com/knit-dev/knit/internal/errdefs"
)

// cpCommand is docker cp between a container's filesystem and the host's,
// by docker cp's rules (copytree.Copy); copied files belong to root, as
// Docker's without -a, and keep their modification times.
func (a *app) cpCommand() *cobra.Command {
	var follow, archive bool
	c := &cobra.Command{
		Use:   "cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH | SRC_PATH CONTAINER:DEST_PATH",
		Short: "Copy files and directories between a container and the host",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcC, srcPath := splitCpArg(args[0])
			dstC, dstPath := splitCpArg(args[1])
			switch {
			case srcPath == "-" || dstPath == "-":
				return errdefs.Invalid("knit cp does not read or write tar streams (-) yet: give a path")
			case srcC != "" && dstC != "":
				return errdefs.Invalid("copying between containers is not supported: copy through the host")
			case srcC == "" && dstC == "":
				return errdefs.Invalid("one of the two paths must be CONTAINER:PATH")
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			open := func(container, p string) (*os.Root, string, error) {
				if container != "" {
					r, err := e.OpenRoot(container)
					return r, p, err
				}
				// The host's side, as a path from /, relative ones from
				// the working directory.
				abs, err := filepath.Abs(p)
				if err != nil {
					return nil, "", err
				}
				if strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") {
					abs += p[strings.LastIndex(p, "/"):] // Abs drops what Copy's rules read
				}
				r, err := os.OpenRoot("/")
				return r, abs, err
			}
			src, sp, err := open(srcC, srcPath)
			if err != nil {
				return err
			}
			defer src.Close()
			dst, dp, err := open(dstC, dstPath)
			if err != nil {
				return err
			}
			defer dst.Close()
			if err := copytree.Copy(src, sp, dst, dp, copytree.Options{FollowLink: follow, Archive: archive}); err != nil {
				return errdefs.Invalid("%v", err)
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&follow, "follow-link", "L", false, "always follow a symbolic link given as SRC_PATH")
	c.Flags().BoolVarP(&archive, "archive", "a", false, "archive mode (copy all uid/gid information)")
	// Docker's suppresses its progress output; knit prints none.
	c.Flags().BoolP("quiet", "q", false, "suppress progress output (knit prints none)")
	return c
}

// splitCpArg reads CONTAINER:PATH, or a host path: one that is absolute
// or starts with . is a host path even with a colon in it, as Docker's.
func splitCpArg(arg string) (container, path string) {
	if filepath.IsAbs(arg) || strings.HasPrefix(arg, ".") {
		return "", arg
	}
	if c, p, ok := strings.Cut(arg, ":"); ok {
		return c, p
	}
	return "", arg
}

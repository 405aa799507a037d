// Package copytree copies files and directories between two directory
// trees, as docker cp does between a container and the host. Each side is
// an os.Root, so a path, or a symbolic link met on the way, never leads
// out of its tree: a container's absolute link to /etc/shadow cannot make
// a copy read or write the host's.
package copytree

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Options tune Copy.
type Options struct {
	// FollowLink copies what a symbolic link given as the source points
	// to, not the link (docker cp -L). Links inside a copied directory
	// are copied as links either way.
	FollowLink bool
}

// Copy copies src's srcPath to dst's dstPath by docker cp's rules:
//   - a file to a path that does not exist is created there; to a
//     directory, it goes into it under its own name; to a file, it
//     replaces its contents; to a missing path ending in /, it is an
//     error (the directory must exist);
//   - a directory to a path that does not exist is created there with the
//     source's contents; to a directory, it goes into it under its own
//     name, or, when srcPath ends in "/.", its contents do; to a file, it
//     is an error.
//
// Paths are relative to their roots; a leading / is the root's own.
func Copy(src *os.Root, srcPath string, dst *os.Root, dstPath string, o Options) error {
	sp, dp := clean(srcPath), clean(dstPath)
	stat := src.Lstat
	if o.FollowLink {
		stat = src.Stat
	}
	sfi, err := stat(sp)
	if err != nil {
		return fmt.Errorf("source %s: %w", srcPath, unwrapPath(err))
	}
	contentsOnly := strings.HasSuffix(srcPath, "/.")
	dfi, err := dst.Stat(dp)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if strings.HasSuffix(dstPath, "/") && !sfi.IsDir() {
			return fmt.Errorf("destination %s: no such directory (it must exist)", dstPath)
		}
		// The parent must exist, as docker cp's.
		if _, perr := dst.Stat(path.Dir(dp)); perr != nil {
			return fmt.Errorf("destination %s: its directory: %w", dstPath, unwrapPath(perr))
		}
		if sfi.IsDir() {
			return copyDirContents(src, sp, sfi, dst, dp)
		}
		return copyEntry(src, sp, sfi, dst, dp)
	case err != nil:
		return fmt.Errorf("destination %s: %w", dstPath, unwrapPath(err))
	case dfi.IsDir() && sfi.IsDir() && contentsOnly:
		return copyDirContents(src, sp, sfi, dst, dp)
	case dfi.IsDir():
		return copyEntry(src, sp, sfi, dst, path.Join(dp, path.Base(sp)))
	case sfi.IsDir():
		return fmt.Errorf("cannot copy directory %s to file %s", srcPath, dstPath)
	}
	return copyEntry(src, sp, sfi, dst, dp)
}

// clean makes p relative to its root: "/" and "" are ".".
func clean(p string) string {
	p = path.Clean("/" + p)
	if p == "/" {
		return "."
	}
	return p[1:]
}

// unwrapPath drops the *PathError's operation, whose path is the root's
// relative one, for messages that name the caller's path.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// copyEntry copies one entry, a directory with everything in it.
func copyEntry(src *os.Root, sp string, fi fs.FileInfo, dst *os.Root, dp string) error {
	switch mode := fi.Mode(); {
	case mode.IsDir():
		return copyDirContents(src, sp, fi, dst, dp)
	case mode&fs.ModeSymlink != 0:
		target, err := src.Readlink(sp)
		if err != nil {
			return err
		}
		if err := dst.Remove(dp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return dst.Symlink(target, dp)
	case mode.IsRegular():
		return copyFile(src, sp, mode.Perm(), dst, dp)
	default:
		return fmt.Errorf("%s: cannot copy a %s", sp, strings.TrimPrefix(mode.Type().String(), "-"))
	}
}

// copyDirContents makes dp a directory (if it is not one) with fi's
// permissions and copies sp's entries into it.
func copyDirContents(src *os.Root, sp string, fi fs.FileInfo, dst *os.Root, dp string) error {
	if err := dst.Mkdir(dp, fi.Mode().Perm()); err == nil {
		if err := dst.Chmod(dp, fi.Mode().Perm()); err != nil { // past the umask
			return err
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return err
	}
	d, err := src.Open(sp)
	if err != nil {
		return err
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, e := range entries {
		efi, err := e.Info()
		if err != nil {
			return err
		}
		if err := copyEntry(src, path.Join(sp, e.Name()), efi, dst, path.Join(dp, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src *os.Root, sp string, perm fs.FileMode, dst *os.Root, dp string) (err error) {
	in, err := src.Open(sp)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := dst.OpenFile(dp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy %s: %w", sp, err)
	}
	return out.Chmod(perm) // an existing file keeps its mode otherwise
}

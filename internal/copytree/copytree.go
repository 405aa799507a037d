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
	"syscall"
)

// Options tune Copy.
type Options struct {
	// FollowLink copies what a symbolic link given as the source points
	// to, not the link (docker cp -L). Links inside a copied directory
	// are copied as links either way.
	FollowLink bool
	// Archive keeps each entry's owner and group (docker cp -a); without
	// it, what Copy makes belongs to its caller. The files and directories
	// Copy makes keep their modification times either way, as docker
	// cp's (not links: os.Root has no lutimes; nor a directory that was
	// there already).
	Archive bool
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
	// The paths given are resolved as in their own tree, symbolic links
	// included (a container's /var/run -> /run), so that what os.Root
	// walks has none left in it but, for the source, the last one.
	sp, err := resolve(src, clean(srcPath), o.FollowLink)
	if err != nil {
		return fmt.Errorf("source %s: %w", srcPath, unwrapPath(err))
	}
	dp, err := resolve(dst, clean(dstPath), true)
	if err != nil {
		return fmt.Errorf("destination %s: %w", dstPath, unwrapPath(err))
	}
	sfi, err := src.Lstat(sp)
	if err != nil {
		return fmt.Errorf("source %s: %w", srcPath, unwrapPath(err))
	}
	if strings.HasSuffix(srcPath, "/") && !sfi.IsDir() {
		return fmt.Errorf("source %s: not a directory", srcPath)
	}
	contentsOnly := strings.HasSuffix(srcPath, "/.") || srcPath == "."
	dfi, err := dst.Stat(dp)
	if sfi.IsDir() {
		// Both trees can be one (a container whose root is the host's):
		// a directory copied into itself would copy its copy without end.
		into := dp
		if err == nil && dfi.IsDir() && !contentsOnly {
			into = path.Join(dp, path.Base(sp))
		}
		if inside, ierr := within(dst, into, sfi); ierr != nil {
			return fmt.Errorf("destination %s: %w", dstPath, unwrapPath(ierr))
		} else if inside {
			return fmt.Errorf("cannot copy directory %s into itself (%s)", srcPath, dstPath)
		}
	}
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
			return copyDirContents(src, sp, sfi, dst, dp, o)
		}
		return copyEntry(src, sp, sfi, dst, dp, o)
	case err != nil:
		return fmt.Errorf("destination %s: %w", dstPath, unwrapPath(err))
	case dfi.IsDir() && sfi.IsDir() && contentsOnly:
		return copyDirContents(src, sp, sfi, dst, dp, o)
	case dfi.IsDir():
		return copyEntry(src, sp, sfi, dst, path.Join(dp, path.Base(sp)), o)
	case sfi.IsDir():
		return fmt.Errorf("cannot copy directory %s to file %s", srcPath, dstPath)
	case strings.HasSuffix(dstPath, "/"):
		return fmt.Errorf("destination %s: not a directory", dstPath)
	}
	return copyEntry(src, sp, sfi, dst, dp, o)
}

// within reports whether p, or a directory above it, in dst is dir.
func within(dst *os.Root, p string, dir fs.FileInfo) (bool, error) {
	for {
		fi, err := dst.Lstat(p)
		switch {
		case err == nil && os.SameFile(fi, dir):
			return true, nil
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return false, err
		case p == ".":
			return false, nil
		}
		p = path.Dir(p)
	}
}

// maxLinks bounds the symbolic links resolve follows, as the kernel's 40.
const maxLinks = 40

// resolve returns p, relative to r, with every symbolic link in it
// replaced by its target as seen in r (an absolute one from r's top, ..
// stopping there), the last component's too with last; a part that does
// not exist ends the resolution, the rest kept as given.
func resolve(r *os.Root, p string, last bool) (string, error) {
	done := "."
	rest := strings.Split(p, "/")
	for links := 0; len(rest) > 0; {
		name := rest[0]
		rest = rest[1:]
		if name == "." || name == "" {
			continue
		}
		next := path.Join(done, name)
		if name == ".." {
			done = next
			if strings.HasPrefix(done, "..") {
				done = "." // the tree's top is its own parent
			}
			continue
		}
		fi, err := r.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			return path.Join(append([]string{next}, rest...)...), nil
		} else if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 || (len(rest) == 0 && !last) {
			done = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := r.Readlink(next)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			done = "."
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return done, nil
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
func copyEntry(src *os.Root, sp string, fi fs.FileInfo, dst *os.Root, dp string, o Options) error {
	switch mode := fi.Mode(); {
	case mode.IsDir():
		return copyDirContents(src, sp, fi, dst, dp, o)
	case mode&fs.ModeSymlink != 0:
		target, err := src.Readlink(sp)
		if err != nil {
			return err
		}
		if err := clear(dst, dp, fi); err != nil {
			return err
		}
		if err := dst.Symlink(target, dp); err != nil || !o.Archive {
			return err
		}
		uid, gid := owner(fi)
		return dst.Lchown(dp, uid, gid)
	case mode.IsRegular():
		if err := clear(dst, dp, fi); err != nil {
			return err
		}
		if err := copyFile(src, sp, fi, dst, dp); err != nil {
			return err
		}
		return setMeta(dst, dp, fi, o)
	default:
		return fmt.Errorf("%s: cannot copy a %s", sp, kind(mode))
	}
}

// copyDirContents makes dp a directory (if it is not one) with fi's
// permissions and copies sp's entries into it; a directory it made gets
// fi's owner (Archive) and times once its entries are in.
func copyDirContents(src *os.Root, sp string, fi fs.FileInfo, dst *os.Root, dp string, o Options) error {
	// A directory there is used; a link or a file there is replaced,
	// never followed: a link copied out of a container earlier must not
	// lead this copy's files anywhere.
	if cur, err := dst.Lstat(dp); err == nil && !cur.IsDir() {
		if err := dst.Remove(dp); err != nil {
			return err
		}
	}
	made := false
	if err := dst.Mkdir(dp, fi.Mode().Perm()); err == nil {
		made = true
		if err := dst.Chmod(dp, modeOf(fi)); err != nil { // past the umask
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
		if err := copyEntry(src, path.Join(sp, e.Name()), efi, dst, path.Join(dp, e.Name()), o); err != nil {
			return err
		}
	}
	if !made {
		return nil
	}
	return setMeta(dst, dp, fi, o)
}

// setMeta gives dp, a file or directory copy made, fi's owner and group
// (Archive), mode, and modification time, which it also takes as its
// access time, as docker cp's tar extraction does. The mode goes after
// the owner: a change of owner clears the setuid and setgid bits.
func setMeta(dst *os.Root, dp string, fi fs.FileInfo, o Options) error {
	if o.Archive {
		uid, gid := owner(fi)
		if err := dst.Lchown(dp, uid, gid); err != nil {
			return err
		}
		if err := dst.Chmod(dp, modeOf(fi)); err != nil {
			return err
		}
	}
	return dst.Chtimes(dp, fi.ModTime(), fi.ModTime())
}

// owner is fi's owner and group.
func owner(fi fs.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

// kind names a special file's type, for errors.
func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// clear makes way at dp for the entry fi, not a directory: what is there
// (a file, a link, not followed) goes; a directory, or fi itself (both
// trees can be one), is an error.
func clear(dst *os.Root, dp string, fi fs.FileInfo) error {
	cur, err := dst.Lstat(dp)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case cur.IsDir():
		return fmt.Errorf("%s: cannot overwrite a directory", dp)
	case os.SameFile(cur, fi):
		return fmt.Errorf("%s: source and destination are the same file", dp)
	}
	return dst.Remove(dp)
}

// modeOf is fi's permissions with its setuid, setgid and sticky bits.
func modeOf(fi fs.FileInfo) fs.FileMode {
	return fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// copyFile copies the regular file sp, whose Lstat was fi, to dp, which
// clear emptied. The file opened must be
// that one: a tree that changes meanwhile (a container's) cannot swap in
// a FIFO that would hang the copy, or a link to a device.
func copyFile(src *os.Root, sp string, fi fs.FileInfo, dst *os.Root, dp string) (err error) {
	// sp is no link: resolve took -L's, and a tree's links are copied as
	// links.
	in, err := src.OpenFile(sp, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	if got, err := in.Stat(); err != nil || !got.Mode().IsRegular() || !os.SameFile(got, fi) {
		return fmt.Errorf("%s: changed while copied", sp)
	}
	out, err := dst.OpenFile(dp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NONBLOCK, fi.Mode().Perm())
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
	return out.Chmod(modeOf(fi)) // past the umask
}

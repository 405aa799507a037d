package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// mountPrivate stops mount events propagating between the container's
// mount namespace and the host's, in both directions.
//
// Equivalent to: mount --make-rprivate /
func mountPrivate() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	return nil
}

// hideMounts detaches the host mount points in paths from the container's
// mount namespace. A copy of another container's namespace bind mount would
// otherwise keep that namespace alive after knit deleted it on the host.
// Paths that are missing or not mount points are skipped.
//
// Equivalent to: umount --lazy PATH (until it is no longer a mount point)
func hideMounts(paths []string) error {
	for _, p := range paths {
		// Mounts may be stacked on p (bind-mounted twice); 16 is plenty.
		for range 16 {
			err := unix.Unmount(p, unix.MNT_DETACH)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				break
			}
			if err != nil {
				return fmt.Errorf("hide %s: %w", p, err)
			}
		}
	}
	return nil
}

// mountProc mounts a procfs showing the container's PID namespace. Over
// the host's /proc too in host-root mode: it is our private mount namespace.
//
// Equivalent to: mount -t proc proc /proc
func mountProc() error {
	return mountFS(fsMount{"proc", "/proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""})
}

// detachedBind is a bind mount cloned from the host but not attached yet.
type detachedBind struct {
	fd     int // from open_tree
	target string
	dir    bool
}

// openBinds clones each source into a detached mount (read-only if asked),
// so the binds can be attached after the root has changed, with targets
// resolved inside the container's root.
//
// Equivalent to: mount --rbind SOURCE TARGET [-o remount,bind,ro], in two halves
func openBinds(binds []Bind) (_ []detachedBind, err error) {
	var out []detachedBind
	defer func() {
		if err != nil {
			closeBinds(out)
		}
	}()
	for _, b := range binds {
		fd, err := unix.OpenTree(unix.AT_FDCWD, b.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if err != nil {
			return nil, fmt.Errorf("bind %s: %w", b.Source, err)
		}
		out = append(out, detachedBind{fd: fd, target: b.Target})
		d := &out[len(out)-1]
		if b.ReadOnly {
			attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
			if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
				return nil, fmt.Errorf("bind %s read-only: %w", b.Source, err)
			}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("bind %s: %w", b.Source, err)
		}
		d.dir = st.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	return out, nil
}

func closeBinds(binds []detachedBind) {
	for _, b := range binds {
		unix.Close(b.fd)
	}
}

// attachBinds mounts the detached binds on their targets, creating missing
// targets as a directory or an empty file like their source.
func attachBinds(binds []detachedBind) error {
	for _, b := range binds {
		target := filepath.Join("/", b.target)
		if err := makeTarget(target, b.dir); err != nil {
			return fmt.Errorf("bind %s: %w", target, err)
		}
		if err := unix.MoveMount(b.fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("bind %s: %w", target, err)
		}
	}
	return nil
}

// makeTarget creates a mount point: a directory, or an empty file.
func makeTarget(path string, dir bool) error {
	if dir {
		return os.MkdirAll(path, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

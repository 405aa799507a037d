package runner

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// hostDevices are the device nodes a container's /dev gets from the host.
var hostDevices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// devLinks are /dev's symlinks, name → target.
var devLinks = [][2]string{
	{"/dev/ptmx", "pts/ptmx"},
	{"/dev/fd", "/proc/self/fd"},
	{"/dev/stdin", "/proc/self/fd/0"},
	{"/dev/stdout", "/proc/self/fd/1"},
	{"/dev/stderr", "/proc/self/fd/2"},
}

// fsMount is one filesystem mount, as mount(2) takes it.
type fsMount struct {
	fstype, target string
	flags          uintptr
	data           string
}

// devMounts and sysMount are mounted in this order once the root changed.
var (
	devTmpfs  = fsMount{"tmpfs", "/dev", unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=755,size=65536k"}
	devMounts = []fsMount{
		// A devpts of its own: the container sees only its own ptys.
		{"devpts", "/dev/pts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
		{"tmpfs", "/dev/shm", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=1777,size=65536k"},
	}
	sysMount = fsMount{"sysfs", "/sys", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""}
)

// setupRootfs makes rootfs the container's root, with a minimal /dev and a
// read-only /sys, as docker run does for an image. With tty, the terminal
// on fd 0 (a pty of the host's devpts, which the container's own devpts
// does not show) is also /dev/console, as runc binds it: so the command
// can name its terminal (tty, ttyname: sudo, ssh, script ask for it).
func setupRootfs(rootfs string, tty bool) error {
	binds := make([]Bind, len(hostDevices))
	for i, d := range hostDevices {
		binds[i] = Bind{Source: "/dev/" + d, Target: "/dev/" + d}
	}
	if tty {
		// By its path in this mount namespace (a copy of the host's): the
		// fd's own mount belongs to the namespace that opened it, which
		// open_tree refuses.
		if pts, err := os.Readlink("/proc/self/fd/0"); err == nil && strings.HasPrefix(pts, "/dev/pts/") {
			binds = append(binds, Bind{Source: pts, Target: "/dev/console"})
		}
	}
	devs, err := openBinds(binds) // from the host's /dev, before it is gone
	if err != nil {
		return err
	}
	defer closeBinds(devs)
	if err := pivotRoot(rootfs); err != nil {
		return err
	}
	if err := mountFS(devTmpfs); err != nil {
		return err
	}
	if err := attachBinds(devs); err != nil {
		return err
	}
	for _, m := range devMounts {
		if err := mountFS(m); err != nil {
			return err
		}
	}
	for _, l := range devLinks {
		if err := os.Symlink(l[1], l[0]); err != nil {
			return fmt.Errorf("symlink %s: %w", l[0], err)
		}
	}
	return mountFS(sysMount)
}

// pivotRoot makes rootfs the root of the mount namespace and detaches the
// old root, so the host's files are out of reach.
//
// Equivalent to: mount --rbind ROOTFS ROOTFS && cd ROOTFS && pivot_root . . && umount -l .
func pivotRoot(rootfs string) error {
	// pivot_root needs the new root to be a mount point.
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs %s: %w", rootfs, err)
	}
	// Entered after the bind mount, so "." is the mount, not what is under.
	if err := unix.Chdir(rootfs); err != nil {
		return fmt.Errorf("chdir rootfs %s: %w", rootfs, err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one at
	// "."; detaching "." then drops it, with no put_old directory needed
	// inside the rootfs (as runc does).
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", rootfs, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}

// mountFS mounts m, creating its mount point if missing.
//
// Equivalent to: mkdir -p TARGET && mount -t FSTYPE -o DATA FSTYPE TARGET
func mountFS(m fsMount) error {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", m.target, err)
	}
	if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	return nil
}

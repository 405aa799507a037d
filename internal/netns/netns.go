// Package netns owns every namespace switch in knit: it is the only package
// that calls setns, unshare or runtime.LockOSThread.
//
// Invariants:
//   - A Go thread that entered another namespace goes back to its own before
//     it is unlocked; if going back fails, the thread stays locked and dies
//     with its goroutine, so no goroutine ever runs in a namespace it did not
//     ask for.
//   - The caller's goroutine and thread are never switched: every switch
//     happens on a fresh goroutine.
//   - A network namespace outlives its processes only as a bind mount of its
//     nsfs file (as `ip netns add` makes them); Delete undoes exactly that.
//   - Joining namespaces for a new process (including the mount namespace,
//     which a multi-threaded process cannot join) is done by the cgo
//     constructor in nsenter.c, driven by the EnvJoin variable.
package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/faults"
	"github.com/knit-dev/knit/internal/flock"
)

// EnvJoin names the environment variable read by the cgo constructor.
const EnvJoin = "_KNIT_NSENTER"

// EnvJoined is EnvJoin's name once the constructor has joined: renamed in
// place (see nsenter.c), so that children do not join again.
const EnvJoined = "_KNIT_NSENTED"

// Join names one namespace for a child process to join.
type Join struct {
	// "ipc", "uts", "net", "mnt" or "cgroup"; not "pid": the Go runtime
	// of a process that joined a PID namespace cannot start its threads
	// (StartInPID joins one on a thread of its own instead).
	Kind string
	Path string // a namespace file, e.g. /proc/PID/ns/net; must not contain ','
}

// JoinEnv returns the EnvJoin=kind:path,... entry for a child's environment.
// The constructor joins them in order, except that mnt always goes last.
func JoinEnv(joins ...Join) string {
	parts := make([]string, len(joins))
	for i, j := range joins {
		parts[i] = j.Kind + ":" + j.Path
	}
	return EnvJoin + "=" + strings.Join(parts, ",")
}

// PrepareDir makes dir a tmpfs mount point with shared propagation, unless
// it already is a mount point. Shared propagation makes namespace files
// bind-mounted below it unmounted everywhere when deleted, rather than pinned
// by copies in other mount namespaces (what `ip netns` does for /run/netns);
// tmpfs makes the small runtime files knit writes there cost microseconds
// where a journaled disk costs a millisecond per file. Idempotent and safe
// to call concurrently, also from several processes.
//
// Equivalent to: mkdir -p DIR && mount -t tmpfs knit DIR && mount --make-shared DIR
func PrepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("prepare %s: %w", dir, err)
	}
	// The lock keeps two preparers from stacking two mounts: the second one
	// sees the first's mount once it gets the lock on the directory below.
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("prepare %s: %w", dir, err)
	}
	defer f.Close()
	if err := lockDir(f, dir); err != nil {
		return err
	}
	mounted, err := isMountPoint(dir)
	if err != nil {
		return err
	}
	if mounted {
		// Shared again, which changes nothing if it is: a preparer killed
		// between the two mounts left it private, under a private parent
		// (with nothing mounted below it yet). Not MS_REC, which would
		// walk every namespace mount below it at every command.
		if err := unix.Mount("", dir, "none", unix.MS_SHARED, ""); err != nil {
			return fmt.Errorf("prepare %s: make shared: %w", dir, err)
		}
		return nil
	}
	faults.Step("netns.mount-dir")
	if err := unix.Mount("knit", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0711"); err != nil {
		return fmt.Errorf("prepare %s: mount tmpfs: %w", dir, err)
	}
	faults.Step("netns.share-dir")
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		return fmt.Errorf("prepare %s: make shared: %w", dir, err)
	}
	return nil
}

// prepareWait bounds the wait for another preparer, which holds the lock
// for the time of two mount calls: one stopped or hung there must not
// stall every later command for ever.
var prepareWait = 30 * time.Second // a variable for the tests

// lockDir takes an exclusive flock on f, the directory dir, for at most
// prepareWait.
func lockDir(f *os.File, dir string) error {
	err := flock.Poll(int(f.Fd()), unix.LOCK_EX, prepareWait)
	if errors.Is(err, flock.ErrBusy) {
		return errdefs.Unavailable("prepare %s: another knit process has held its lock for over %s; retry, or look for a stopped or stuck knit process (fuser %s)", dir, prepareWait, dir)
	} else if err != nil {
		return fmt.Errorf("prepare %s: lock: %w", dir, err)
	}
	return nil
}

func isMountPoint(path string) (bool, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, 0, &st); err != nil {
		return false, fmt.Errorf("statx %s: %w", path, err)
	}
	if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false, fmt.Errorf("statx %s: kernel does not report mount roots", path)
	}
	return st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// Create makes a new network namespace and keeps it alive as a bind mount at
// path, which must not exist. If inside is not nil it runs on the thread
// while it is in the new namespace, before the thread goes back: sockets it
// opens stay bound to the new namespace, which saves a second switch (each
// costs a few hundred microseconds). On error nothing is left behind.
//
// Equivalent to: ip netns add NAME
func Create(path string, inside func() error) error {
	p := Begin(path, inside)
	p.Place(nil)
	return p.Wait()
}

// Pending is a network namespace being made by Begin.
type Pending struct {
	path   string
	file   chan error // Place's verdict, for the thread
	thread <-chan error
	placed bool // Place was called
	made   bool // Place made the file
	once   sync.Once
	err    error
}

// Begin starts what Create does and returns at once: the kernel makes the
// namespace (unshare, ~0.4 ms) on a fresh thread while the caller gets
// ready for the file to appear (say, takes a lock that orders it with a
// cleaner of namespace files) and then calls Place. Wait returns Create's
// error.
func Begin(path string, inside func() error) *Pending {
	p := &Pending{path: path, file: make(chan error, 1)}
	p.thread = goFreshThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		if err := <-p.file; err != nil {
			return err
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		faults.Step("netns.mount")
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		if inside != nil {
			if err := inside(); err != nil {
				_ = unix.Unmount(path, unix.MNT_DETACH)
				return err
			}
		}
		return nil
	})
	return p
}

// Place makes the namespace's file and lets the namespace be mounted on it;
// with a non-nil err (the caller could not get ready) it makes nothing and
// the namespace fails with err. Call it once, from Begin's caller.
func (p *Pending) Place(err error) {
	p.placed = true
	if err == nil {
		faults.Step("netns.create")
		var f *os.File
		if f, err = os.OpenFile(p.path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444); err == nil {
			f.Close()
			p.made = true
		}
	}
	p.file <- err
}

// Wait waits for the namespace; it may be called more than once, from
// Begin's caller. Without a Place before (a caller unwinding from a panic)
// the namespace is abandoned.
func (p *Pending) Wait() error {
	if !p.placed {
		p.Place(errors.New("abandoned before its file was made"))
	}
	p.once.Do(func() {
		if err := <-p.thread; err != nil {
			if p.made {
				_ = os.Remove(p.path)
			}
			p.err = fmt.Errorf("create netns %s: %w", p.path, err)
		}
	})
	return p.err
}

// Delete unmounts and removes the namespace file at path. The namespace
// itself, and the links in it, go away once nothing else holds it. A missing
// path is not an error.
//
// Equivalent to: ip netns delete NAME
func Delete(path string) error {
	faults.Step("netns.delete")
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: unmount: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", path, err)
	}
	return nil
}

// Mounted reports whether path is a bind-mounted namespace file.
func Mounted(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// IsNet reports whether path is a network namespace's file: on nsfs
// (Mounted) and, asked (NS_GET_NSTYPE), of a network namespace. A file
// that cannot be opened or asked counts as one: its user's own error says
// more.
func IsNet(path string) bool {
	if !Mounted(path) {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	return err != nil || t == unix.CLONE_NEWNET
}

// List returns the names of the entries in dir; a missing dir has none.
//
// Equivalent to: ip netns list
func List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list netns %s: %w", dir, err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

// Do runs fn on a locked thread inside the network namespace at path and
// returns fn's error. Goroutines fn starts do not run in the namespace;
// sockets fn opens stay bound to it after Do returns.
//
// Equivalent to: ip netns exec NAME ...
func Do(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	defer target.Close()
	return onFreshThread(func() error {
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter netns %s: %w", path, err)
		}
		return fn()
	})
}

// onFreshThread runs fn on a new goroutine locked to its thread, and puts
// the thread back into its original network namespace afterwards. fn may
// change the thread's network namespace but nothing else.
func onFreshThread(fn func() error) error { return <-goFreshThread(fn) }

// goFreshThread is onFreshThread that does not wait: fn's error arrives
// on the channel.
func goFreshThread(fn func() error) <-chan error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("save netns: %w", err)
			return
		}
		defer orig.Close()
		fnErr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(fnErr, fmt.Errorf("restore netns: %w", err))
			// Parked for good, locked: the thread is never reused in the
			// wrong namespace, nor ended, as returning locked would have
			// the runtime do. A child forked earlier from this thread with
			// Pdeathsig (a container, runner's startCmd, on a thread
			// handed back since) would die with it.
			select {}
		}
		runtime.UnlockOSThread()
		done <- fnErr
	}()
	return done
}

package netns_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/testutil"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestJoinEnv(t *testing.T) {
	got := netns.JoinEnv(
		netns.Join{Kind: "net", Path: "/run/knit/netns/a"},
		netns.Join{Kind: "mnt", Path: "/proc/1/ns/mnt"},
	)
	want := "_KNIT_NSENTER=net:/run/knit/netns/a,mnt:/proc/1/ns/mnt"
	if got != want {
		t.Fatalf("JoinEnv = %q, want %q", got, want)
	}
}

func TestListMissingDir(t *testing.T) {
	names, err := netns.List(filepath.Join(t.TempDir(), "nope"))
	if err != nil || names != nil {
		t.Fatalf("List(missing) = %v, %v; want nil, nil", names, err)
	}
}

// mountCount counts mounts at dir in this process's mount namespace.
func mountCount(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			n++
		}
	}
	return n
}

func TestPrepareDirConcurrent(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "a", "netns")
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = netns.PrepareDir(dir) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := netns.PrepareDir(dir); err != nil {
		t.Fatal(err)
	}
	if n := mountCount(t, dir); n != 1 {
		t.Fatalf("%d mounts at %s, want 1", n, dir)
	}
}

// A directory a preparer killed between its two mounts left mounted but
// private (under a private parent, as the test sandbox's) is made shared
// by the next.
func TestPrepareDirSharesAMountLeftPrivate(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "netns")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("knit", dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "none", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	shared := func() bool {
		data, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(data)) {
			if f := strings.Fields(line); len(f) > 6 && f[4] == dir {
				return strings.HasPrefix(f[6], "shared:")
			}
		}
		t.Fatalf("%s is not in mountinfo", dir)
		return false
	}
	if shared() {
		t.Fatal("the test's mount is shared already")
	}
	if err := netns.PrepareDir(dir); err != nil {
		t.Fatal(err)
	}
	if !shared() || mountCount(t, dir) != 1 {
		t.Errorf("after PrepareDir: shared %v, %d mounts; want shared, 1", shared(), mountCount(t, dir))
	}
}

func TestCreateDelete(t *testing.T) {
	path := testutil.NewNetns(t)
	dir := filepath.Dir(path)
	if !netns.Mounted(path) {
		t.Fatalf("%s is not a namespace mount", path)
	}
	if inode(t, path) == inode(t, "/proc/self/ns/net") {
		t.Fatal("Create returned the caller's own namespace")
	}
	if names, err := netns.List(dir); err != nil || !slices.Equal(names, []string{"ns"}) {
		t.Fatalf("List = %v, %v", names, err)
	}
	// A second Create on the same path fails and must not harm the first.
	if err := netns.Create(path, nil); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Create(existing) = %v, want ErrExist", err)
	}
	if !netns.Mounted(path) {
		t.Fatal("failed Create removed an existing namespace")
	}

	other := filepath.Join(dir, "other")
	if err := netns.Create(other, nil); err != nil {
		t.Fatal(err)
	}
	if err := netns.Delete(other); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Delete: stat = %v", err)
	}
	if err := netns.Delete(other); err != nil {
		t.Fatalf("Delete(missing) = %v", err)
	}
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "missing-dir", "ns")
	if err := netns.Create(path, nil); err == nil {
		t.Fatal("Create in a missing directory succeeded")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat after failed Create = %v", err)
	}
}

// A caller of Begin that cannot get ready refuses the file, or unwinds to
// Wait without a Place: nothing is made, and Wait reports why.
func TestBeginPlaceRefused(t *testing.T) {
	testutil.RequireRoot(t)
	why := errors.New("lock refused")
	for _, place := range []bool{true, false} {
		path := filepath.Join(t.TempDir(), "ns")
		ran := false
		p := netns.Begin(path, func() error { ran = true; return nil })
		if place {
			p.Place(why)
		}
		err := p.Wait()
		if err == nil || place && !errors.Is(err, why) {
			t.Fatalf("Place %v: Wait = %v, want an error (%v)", place, err, why)
		}
		if again := p.Wait(); again != err {
			t.Fatalf("Place %v: second Wait = %v, first %v", place, again, err)
		}
		if ran {
			t.Fatalf("Place %v: inside ran in a namespace that was refused", place)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Place %v: stat after = %v", place, err)
		}
	}
}

// A failure inside the new namespace unmounts and removes its file.
func TestCreateInsideFailure(t *testing.T) {
	testutil.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "ns")
	why := errors.New("inside failed")
	if err := netns.Create(path, func() error { return why }); !errors.Is(err, why) {
		t.Fatalf("Create = %v, want %v", err, why)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat after failed inside = %v", err)
	}
	if n := mountCount(t, path); n != 0 {
		t.Fatalf("%d mounts left at %s", n, path)
	}
}

func TestDo(t *testing.T) {
	path := testutil.NewNetns(t)
	own := inode(t, "/proc/self/ns/net")
	want := inode(t, path)
	for range 20 {
		var got uint64
		err := netns.Do(path, func() error {
			var st unix.Stat_t
			err := unix.Stat("/proc/thread-self/ns/net", &st)
			got = st.Ino
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("inside Do: netns inode %d, want %d", got, want)
		}
	}
	// Do runs fn on a thread of its own, which it puts back: every
	// thread of the process is in its own namespace again.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if ino := inode(t, "/proc/self/task/"+task.Name()+"/ns/net"); ino != own {
			t.Errorf("thread %s is in netns %d after Do, want the process's %d", task.Name(), ino, own)
		}
	}
	sentinel := errors.New("boom")
	if err := netns.Do(path, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	if err := netns.Do(filepath.Join(t.TempDir(), "nope"), func() error { return nil }); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Do(missing) = %v", err)
	}
}

// IsNet takes a network namespace's file, and no other namespace's or
// plain file.
func TestIsNet(t *testing.T) {
	plain := filepath.Join(t.TempDir(), "ns")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"/proc/self/ns/net": true, "/proc/self/ns/uts": false, plain: false} {
		if got := netns.IsNet(path); got != want {
			t.Errorf("IsNet(%s) = %v, want %v", path, got, want)
		}
	}
}

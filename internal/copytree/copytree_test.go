package copytree

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tree makes a directory from path → content ("" for a directory, "->X"
// for a symbolic link to X) and opens it as a root.
func tree(t *testing.T, files map[string]string) (string, *os.Root) {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case c == "":
			err = os.MkdirAll(full, 0o750)
		case strings.HasPrefix(c, "->"):
			err = os.Symlink(c[2:], full)
		default:
			err = os.WriteFile(full, []byte(c), 0o640)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return dir, r
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCopyDockerRules(t *testing.T) {
	srcDir, src := tree(t, map[string]string{
		"etc/app.conf": "conf", "data/a": "A", "data/sub/b": "B", "data/link": "->a", "evil": "->/etc/passwd",
	})
	dstDir, dst := tree(t, map[string]string{"existing/": "", "file": "old", "out/": ""})
	for _, tc := range []struct {
		src, dst string
		follow   bool
		check    map[string]string // path under dstDir → content ("->X": a link to X)
		wantErr  string
	}{
		{src: "/etc/app.conf", dst: "/new.conf", check: map[string]string{"new.conf": "conf"}},
		{src: "/etc/app.conf", dst: "/existing", check: map[string]string{"existing/app.conf": "conf"}},
		{src: "/etc/app.conf", dst: "/file", check: map[string]string{"file": "conf"}},
		{src: "/etc/app.conf", dst: "/missing/", wantErr: "must exist"},
		{src: "/etc/app.conf", dst: "/nodir/x", wantErr: "its directory"},
		{src: "/data", dst: "/copied", check: map[string]string{"copied/a": "A", "copied/sub/b": "B", "copied/link": "->a"}},
		{src: "/data", dst: "/out", check: map[string]string{"out/data/a": "A", "out/data/sub/b": "B"}},
		{src: "/data/.", dst: "/existing", check: map[string]string{"existing/a": "A", "existing/sub/b": "B"}},
		{src: "/data", dst: "/file", wantErr: "cannot copy directory"},
		{src: "/evil", dst: "/evil", check: map[string]string{"evil": "->/etc/passwd"}}, // a link, as it is
		{src: "/evil", dst: "/followed", follow: true, wantErr: "source /evil"},         // never the host's file
		{src: "/data/link", dst: "/deref", follow: true, check: map[string]string{"deref": "A"}},
		{src: "/../../etc/app.conf", dst: "/up.conf", check: map[string]string{"up.conf": "conf"}}, // .. stops at the root
		{src: "/nosuch", dst: "/x", wantErr: "source /nosuch"},
	} {
		err := Copy(src, tc.src, dst, tc.dst, Options{FollowLink: tc.follow})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Copy(%s, %s) = %v, want an error with %q", tc.src, tc.dst, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Copy(%s, %s): %v", tc.src, tc.dst, err)
			continue
		}
		for p, want := range tc.check {
			full := filepath.Join(dstDir, p)
			if target, ok := strings.CutPrefix(want, "->"); ok {
				if got, err := os.Readlink(full); err != nil || got != target {
					t.Errorf("Copy(%s, %s): %s links to %q, %v; want %q", tc.src, tc.dst, p, got, err, target)
				}
				continue
			}
			if got := read(t, full); got != want {
				t.Errorf("Copy(%s, %s): %s = %q, want %q", tc.src, tc.dst, p, got, want)
			}
		}
	}
	if fi, err := os.Stat(filepath.Join(dstDir, "copied/a")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode of a copied file: %v, %v", fi.Mode(), err)
	}
	want, _ := os.Stat(filepath.Join(srcDir, "data"))
	if fi, err := os.Stat(filepath.Join(dstDir, "copied")); err != nil || fi.Mode() != want.Mode() {
		t.Errorf("mode of a copied directory: %v, %v; want %v", fi.Mode(), err, want.Mode())
	}
}

// A destination link out of its tree is not followed either.
func TestCopyDestinationLinkStaysInside(t *testing.T) {
	_, src := tree(t, map[string]string{"f": "data"})
	outside := t.TempDir()
	_, dst := tree(t, map[string]string{"escape": "->" + outside})
	if err := Copy(src, "/f", dst, "/escape/f", Options{}); err == nil {
		t.Error("copied through a link out of the destination's tree")
	}
	if _, err := os.Stat(filepath.Join(outside, "f")); err == nil {
		t.Error("a file was written outside the destination's tree")
	}
}

// What is at the destination is replaced, never followed: a link a
// container planted in an earlier copy's output cannot lead a later copy
// out of the destination's tree.
func TestCopyReplacesLinksAtTheDestination(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, src := tree(t, map[string]string{"data/x": "new", "data/d/f": "in d"})
	dstDir, dst := tree(t, map[string]string{"out/x": "->" + victim, "out/d": "->" + outside})
	if err := Copy(src, "/data/.", dst, "/out", Options{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, victim); got != "keep" {
		t.Errorf("the file behind a planted link was written: %q", got)
	}
	if got := read(t, filepath.Join(dstDir, "out/x")); got != "new" {
		t.Errorf("out/x = %q", got)
	}
	if fi, err := os.Lstat(filepath.Join(dstDir, "out/d")); err != nil || !fi.IsDir() {
		t.Errorf("out/d: %v, %v; want a directory in place of the link", fi, err)
	}
	if _, err := os.Stat(filepath.Join(outside, "f")); err == nil {
		t.Error("a file was written through a planted directory link")
	}
}

// Links in the paths given resolve inside their own tree, absolute ones
// from its top (a container's /var/run -> /run).
func TestCopyResolvesGivenPathsInTheirTree(t *testing.T) {
	_, src := tree(t, map[string]string{"var/run": "->/run", "run/f": "F", "top": "->../../.."})
	dstDir, dst := tree(t, map[string]string{"link": "->/real", "real/": ""})
	if err := Copy(src, "/var/run/f", dst, "/link/", Options{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dstDir, "real/f")); got != "F" {
		t.Errorf("real/f = %q", got)
	}
	// .. in a link stops at the tree's top.
	if err := Copy(src, "/top/run/f", dst, "/g", Options{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dstDir, "g")); got != "F" {
		t.Errorf("g = %q", got)
	}
}

func TestCopyRefusals(t *testing.T) {
	srcDir, src := tree(t, map[string]string{"f": "F", "d/x": "X"})
	if err := syscall.Mkfifo(filepath.Join(srcDir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(srcDir, "f"), os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	dstDir, dst := tree(t, map[string]string{"file": "old", "dir/x/": ""})
	for _, tc := range []struct{ src, dst, want string }{
		{"/f/", "/new", "not a directory"},
		{"/f", "/file/", "not a directory"},
		{"/fifo", "/pipe", "cannot copy a named pipe"},
		{"/d/x", "/dir", "cannot overwrite a directory"},
	} {
		if err := Copy(src, tc.src, dst, tc.dst, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Copy(%s, %s) = %v, want %q", tc.src, tc.dst, err, tc.want)
		}
	}
	// "." is the contents, and setuid stays.
	if err := os.Remove(filepath.Join(srcDir, "fifo")); err != nil {
		t.Fatal(err)
	}
	if err := Copy(src, ".", dst, "/all", Options{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dstDir, "all/d/x")); got != "X" {
		t.Errorf("all/d/x = %q", got)
	}
	if fi, err := os.Stat(filepath.Join(dstDir, "all/f")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("all/f: %v, %v; want setuid kept", fi, err)
	}
}

// Both sides can be one tree (a container whose root is the host's): a
// directory copied into itself is refused before anything is copied, not
// copied without end, and a file copied onto itself is refused, not
// deleted before it is read.
func TestCopyOntoItself(t *testing.T) {
	dir, r := tree(t, map[string]string{"a/f": "F", "a/sub/g": "G", "a/l": "->f"})
	for _, tc := range []struct{ src, dst, want string }{
		{"/a", "/a/sub", "into itself"},
		{"/a", "/a/sub/new", "into itself"},
		{"/a/.", "/a", "into itself"},
		{"/a/.", "/a/sub", "into itself"},
		{"/a", "/", "into itself"}, // a goes to /a: itself
		{"/a/f", "/a/f", "same file"},
		{"/a/f", "/a", "same file"},
		{"/a/l", "/a", "same file"},
	} {
		if err := Copy(r, tc.src, r, tc.dst, Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Copy(%s, %s) = %v, want %q", tc.src, tc.dst, err, tc.want)
		}
	}
	if got := read(t, filepath.Join(dir, "a/f")); got != "F" {
		t.Errorf("a/f = %q after the refusals", got)
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "a/sub")); err != nil || len(entries) != 1 {
		t.Errorf("a/sub after the refusals: %v, %v; want only g", entries, err)
	}
	// Beside itself is fine.
	if err := Copy(r, "/a", r, "/b", Options{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "b/sub/g")); got != "G" {
		t.Errorf("b/sub/g = %q", got)
	}
}

// Copies keep their modification times, as docker cp's, directories'
// too; with Archive they keep their owner and group (links included),
// and a setuid file its bit past the change of owner; without it they
// belong to the caller.
func TestCopyKeepsTimesAndWithArchiveOwners(t *testing.T) {
	srcDir, src := tree(t, map[string]string{"d/f": "F", "d/l": "->f", "d/s": "S"})
	past := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	root := os.Geteuid() == 0
	if root {
		for _, p := range []string{"d/f", "d/l", "d"} {
			if err := os.Lchown(filepath.Join(srcDir, p), 1234, 5678); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Chmod(filepath.Join(srcDir, "d/s"), os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"d/f", "d/s", "d"} { // d last: its entries' changes touch it
		if err := os.Chtimes(filepath.Join(srcDir, p), past, past); err != nil {
			t.Fatal(err)
		}
	}
	for _, archive := range []bool{false, true} {
		dstDir, dst := tree(t, nil)
		if err := Copy(src, "/d", dst, "/d", Options{Archive: archive}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"d", "d/f", "d/s"} {
			fi, err := os.Stat(filepath.Join(dstDir, p))
			if err != nil {
				t.Fatal(err)
			}
			if !fi.ModTime().Equal(past) {
				t.Errorf("archive %v: %s modified %v, want %v", archive, p, fi.ModTime(), past)
			}
		}
		if fi, err := os.Stat(filepath.Join(dstDir, "d/s")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
			t.Errorf("archive %v: d/s lost its setuid bit: %v %v", archive, fi.Mode(), err)
		}
		if !root {
			continue
		}
		for _, p := range []string{"d", "d/f", "d/l"} {
			fi, err := os.Lstat(filepath.Join(dstDir, p))
			if err != nil {
				t.Fatal(err)
			}
			uid, gid := owner(fi)
			want := [2]int{os.Getuid(), os.Getgid()}
			if archive {
				want = [2]int{1234, 5678}
			}
			if [2]int{uid, gid} != want {
				t.Errorf("archive %v: %s owned by %d:%d, want %d:%d", archive, p, uid, gid, want[0], want[1])
			}
		}
	}
}

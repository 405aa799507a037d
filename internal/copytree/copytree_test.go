package copytree

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
		{src: "/evil", dst: "/followed", follow: true, wantErr: "source /evil"},    // never the host's file
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

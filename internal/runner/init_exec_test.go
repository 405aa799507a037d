package runner

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"exe": 0o755, "plain": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"A=b", "PATH=/nonexistent:" + dir, "PATH=/ignored"}
	tests := []struct {
		name, want string
		notFound   bool
	}{
		{name: "exe", want: filepath.Join(dir, "exe")},
		{name: "plain", notFound: true},  // not executable: skipped, as sh does
		{name: "subdir", notFound: true}, // directories are not commands
		{name: "missing", notFound: true},
		{name: "./rel/x", want: "./rel/x"}, // with a slash: used as is
		{name: "/abs/x", want: "/abs/x"},
	}
	for _, tt := range tests {
		got, err := lookPath(tt.name, env)
		if tt.notFound {
			if !errors.Is(err, exec.ErrNotFound) {
				t.Errorf("lookPath(%q) = %q, %v; want ErrNotFound", tt.name, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("lookPath(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	_, err := lookPath("nope", env)
	if want := `exec: "nope": executable file not found in $PATH`; err == nil || err.Error() != want {
		t.Errorf("error = %v; want %s", err, want)
	}
}

func TestPathOfDefault(t *testing.T) {
	if got := pathOf([]string{"HOME=/"}); got != defaultPath {
		t.Errorf("pathOf without PATH = %q", got)
	}
}

func TestExecCode(t *testing.T) {
	for err, want := range map[error]int{
		&exec.Error{Name: "x", Err: exec.ErrNotFound}: 127,
		unix.ENOENT:  127,
		unix.EACCES:  126,
		unix.ENOEXEC: 126,
		unix.EPERM:   126,
	} {
		if got := execCode(err); got != want {
			t.Errorf("execCode(%v) = %d; want %d", err, got, want)
		}
	}
}

// The last fallback of CloseOnExecFrom marks what is open below the limit.
func TestCloseOnExecBelow(t *testing.T) {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil { // without O_CLOEXEC
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	closeOnExecBelow(3, max(p[0], p[1])+1)
	for _, fd := range p {
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("fd %d: flags %#x, %v; want close-on-exec", fd, flags, err)
		}
	}
}

func TestImageHint(t *testing.T) {
	for name, want := range map[string]bool{
		"busybox:latest": true, "mageedu/httpd:v0.2": true, "library/nginx": true, "centos:7": true,
		"busybox": false, "/bin/sh": false, "./run": false, "sh": false, "a:": false, "Foo:1": false, "x:a/b": false,
	} {
		if got := imageHint(name) != ""; got != want {
			t.Errorf("imageHint(%q) given: %v, want %v", name, got, want)
		}
	}
}

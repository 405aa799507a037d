package runner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// defaultPath is used when the command's environment has no PATH, as in
// docker.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// execCommand replaces this process with the command, so that it keeps our
// PID (1 in a container). It only returns on failure, with the exit code.
func execCommand(args, env []string) (code int, err error) {
	path, err := lookPath(args[0], env)
	if err != nil {
		return execCode(err), fmt.Errorf("%w%s", err, imageHint(args[0]))
	}
	err = syscall.Exec(path, args, env)
	return execCode(err), fmt.Errorf("exec: %q: %w%s", args[0], err, imageHint(args[0]))
}

// imageHint is what a command not found that looks like an image reference
// (busybox:latest, library/nginx:1.27, mageedu/httpd:v0.2) is told: a
// Docker user's habit, which knit, having no images, takes for the command.
func imageHint(name string) string {
	ref, tag, tagged := strings.Cut(name, ":")
	if name == "" || strings.HasPrefix(name, "/") || strings.HasPrefix(name, ".") ||
		!tagged && !strings.Contains(name, "/") || tagged && (tag == "" || strings.Contains(tag, "/")) {
		return ""
	}
	for _, c := range ref {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("._-/", c)) {
			return ""
		}
	}
	return fmt.Sprintf(" (knit runs no images: %s was taken for the command; give the image's root filesystem, unpacked, with --rootfs DIR, and the command after it)", name)
}

// lookPath finds name in env's PATH within the current root; a name with a
// slash is used as it is (execve then reports what is wrong with it).
// Unlike exec.LookPath it uses the command's environment, not ours.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathOf(env)) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

// pathOf returns env's PATH (the first, as getenv(3) finds), or the
// default when there is none.
func pathOf(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			return v
		}
	}
	return defaultPath
}

// execCode maps a failure to start the command to docker's exit code: 127
// when it does not exist, 126 when it cannot be executed.
func execCode(err error) int {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, unix.ENOENT) {
		return 127
	}
	return 126
}

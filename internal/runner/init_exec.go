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
		return execCode(err), err
	}
	err = syscall.Exec(path, args, env)
	return execCode(err), fmt.Errorf("exec: %q: %w", args[0], err)
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

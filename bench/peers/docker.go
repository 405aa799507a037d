package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ---- Docker: Debian's dockerd inside the sandbox, driven by its CLI ----
//
// The columns "docker" and "knit-cli" time whole commands, as a user types
// them: process start, the client's request, the container's process and
// filesystem, and its network with one published port. They are compared
// with each other, not with the engine-level columns.

// Debian's binaries (package docker.io), by absolute path: a machine may
// have another docker CLI earlier in PATH (this one has a Docker 28 client
// in /usr/local/bin).
const (
	dockerBin  = "/usr/bin/docker"
	dockerdBin = "/usr/sbin/dockerd"
)

// dockerDriver is the storage driver: overlay2 works on the sandbox's
// tmpfs (kernel 6.x), so Docker runs with its default driver and does not
// copy the image per container as vfs would.
const dockerDriver = "overlay2"

type dockerTool struct {
	dir    string   // dockerd's state, sockets and logs, on the sandbox's tmpfs
	env    []string // DOCKER_HOST and DOCKER_CONFIG of the CLI
	image  string
	cgroup string // dockerd's --cgroup-parent, removed by Close
	daemon *exec.Cmd
	exited chan struct{} // closed when dockerd has exited
}

// newDocker starts dockerd with a data root, exec root, pidfile, socket,
// configuration file and trust key of its own under workDir (never the
// machine's /var/lib/docker, /run/docker.sock or /etc/docker), waits until
// it answers, and imports a busybox image. dockerd programs iptables in the
// sandbox's network namespace and keeps its default userland proxy: two
// docker-proxy processes per published port, as a user gets.
func newDocker() (_ *dockerTool, err error) {
	t := &dockerTool{dir: filepath.Join(workDir, "docker"), image: "knit-bench/busybox", exited: make(chan struct{})}
	t.env = []string{"DOCKER_HOST=unix://" + filepath.Join(t.dir, "docker.sock"), "DOCKER_CONFIG=" + filepath.Join(t.dir, "cli")}
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		return nil, err
	}
	// Relative to dockerd's own cgroup in each hierarchy, so the
	// containers stay inside the cgroups the benchmark runs in; a unique
	// name, because the hierarchies are the machine's.
	t.cgroup = "knit-bench-docker-" + rand.Text()[:8]
	// dockerd 20.10 writes a trust key to /etc/docker/key.json unless its
	// configuration file says otherwise.
	conf := fmt.Sprintf("{\"deprecated-key-path\": %q}\n", filepath.Join(t.dir, "key.json"))
	if err := os.WriteFile(filepath.Join(t.dir, "daemon.json"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if err := t.start(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
		}
	}()
	if err := t.waitReady(); err != nil {
		return nil, err
	}
	rootfs := filepath.Join(workDir, "busybox")
	if err := makeBusyboxRootfs(rootfs); err != nil {
		return nil, err
	}
	if err := dockerImport(t.env, rootfs, t.image); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *dockerTool) start() error {
	log, err := os.Create(filepath.Join(t.dir, "dockerd.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	t.daemon = exec.Command(dockerdBin,
		"--config-file", filepath.Join(t.dir, "daemon.json"),
		"--data-root", filepath.Join(t.dir, "lib"),
		"--exec-root", filepath.Join(t.dir, "exec"),
		"--pidfile", filepath.Join(t.dir, "dockerd.pid"),
		"-H", "unix://"+filepath.Join(t.dir, "docker.sock"),
		"--storage-driver", dockerDriver,
		"--cgroup-parent", t.cgroup)
	t.daemon.Stdout, t.daemon.Stderr = log, log
	t.daemon.Env = append(os.Environ(), "TMPDIR="+filepath.Join(t.dir, "tmp"))
	if err := os.MkdirAll(filepath.Join(t.dir, "tmp"), 0o755); err != nil {
		return err
	}
	if err := t.daemon.Start(); err != nil {
		return fmt.Errorf("start dockerd: %w", err)
	}
	go func() {
		_ = t.daemon.Wait()
		close(t.exited)
	}()
	return nil
}

// waitReady polls `docker info` until dockerd answers, and checks that it
// runs with the storage driver asked for.
func (t *dockerTool) waitReady() error {
	deadline := time.Now().Add(execLimit)
	for {
		driver, err := output(t.env, dockerBin, "info", "--format", "{{.Driver}}")
		if err == nil {
			if driver != dockerDriver {
				return fmt.Errorf("dockerd runs with storage driver %q, not %s", driver, dockerDriver)
			}
			return nil
		}
		select {
		case <-t.exited:
			return fmt.Errorf("dockerd exited: %s", t.logTail())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd not ready after %s: %w: %s", execLimit, err, t.logTail())
		}
	}
}

func (t *dockerTool) logTail() string {
	b, _ := os.ReadFile(filepath.Join(t.dir, "dockerd.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return oneLine(strings.Join(lines[max(0, len(lines)-5):], " | "))
}

// dockerImport makes image from the rootfs directory: `tar -C ROOTFS -c . |
// docker import - IMAGE`, no registry involved.
func dockerImport(env []string, rootfs, image string) error {
	ctx, cancel := context.WithTimeout(context.Background(), execLimit)
	defer cancel()
	tar := exec.CommandContext(ctx, "tar", "-C", rootfs, "-c", ".")
	imp := exec.CommandContext(ctx, dockerBin, "import", "-", image)
	imp.Env = append(os.Environ(), env...)
	pipe, err := tar.StdoutPipe()
	if err != nil {
		return err
	}
	imp.Stdin = pipe
	if err := tar.Start(); err != nil {
		return err
	}
	out, err := imp.CombinedOutput()
	if werr := tar.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("tar: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("docker import: %w: %s", err, oneLine(string(out)))
	}
	return nil
}

func (t *dockerTool) attach(i int) (any, error) {
	return output(t.env, dockerBin, "run", "-d", "-p", fmt.Sprintf("%d:%d", hostPortBase+i, ctrPort), t.image, "sleep", "1d")
}

func (t *dockerTool) detach(h any) error {
	_, err := output(t.env, dockerBin, "rm", "-f", h.(string))
	return err
}

// Close stops what newDocker started, quickly whatever the number of
// containers left (`docker rm -f` of hundreds takes minutes: each one
// deletes iptables rules under one lock). It kills the containers'
// processes, found in the cgroups dockerd made for them, stops dockerd by
// the PID it was started with, and removes those cgroups, which are the
// machine's. The rest (mounts, sockets, iptables rules, containerd and
// its shims) goes with the sandbox.
func (t *dockerTool) Close() error {
	if ids, err := output(t.env, dockerBin, "ps", "-aq"); err == nil && ids != "" {
		fmt.Printf("note-docker: Docker ran with its default userland proxy: %d docker-proxy processes for %d containers "+
			"with one published port (one for IPv4, one for IPv6); dockerd's storage driver: %s on the sandbox's tmpfs\n",
			dockerProxies(), len(strings.Fields(ids)), dockerDriver)
	}
	roots, err := cgroupRoots(t.cgroup)
	errs := []error{err}
	if len(roots) > 0 {
		errs = append(errs, killCgroup(roots[0]))
	}
	_ = t.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.exited:
	case <-time.After(30 * time.Second):
		_ = t.daemon.Process.Kill()
		<-t.exited
	}
	return errors.Join(append(errs, removeCgroups(roots))...)
}

// dockerProxies counts the docker-proxy processes in the sandbox.
func dockerProxies() int {
	n := 0
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "comm")); err == nil && strings.TrimSpace(string(b)) == "docker-proxy" {
			n++
		}
	}
	return n
}

// cgroupRoots returns the cgroup directories named name below this
// process's own cgroup, one per hierarchy (cgroup v1, v2 or both, mounted
// where Debian mounts them), as dockerd's relative --cgroup-parent makes
// them.
func cgroupRoots(name string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var roots []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		mount := filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(parts[1], "name="))
		if parts[1] == "" {
			if mount = "/sys/fs/cgroup/unified"; !isDir(mount) {
				mount = "/sys/fs/cgroup"
			}
		}
		if root := filepath.Join(mount, parts[2], name); isDir(root) {
			roots = append(roots, root)
		}
	}
	return roots, nil
}

// cgroupTree returns root and the cgroups below it, parents first.
func cgroupTree(root string) []string {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	return dirs
}

// cgroupProcs returns the PIDs in the cgroups of root's tree.
func cgroupProcs(root string) []int {
	var pids []int
	for _, d := range cgroupTree(root) {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// killCgroup sends SIGKILL to the processes of root's tree: the
// containers dockerd started for this sandbox, and nothing else.
func killCgroup(root string) error {
	var errs []error
	for _, pid := range cgroupProcs(root) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups waits until the trees of roots have no process left, then
// removes their cgroups, deepest first (runc removes a container's own
// cgroup when it can, never the parent).
func removeCgroups(roots []string) error {
	deadline := time.Now().Add(10 * time.Second)
	for len(roots) > 0 && len(cgroupProcs(roots[0])) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	var errs []error
	for _, root := range roots {
		dirs := cgroupTree(root)
		slices.Reverse(dirs)
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// makeBusyboxRootfs makes the smallest root filesystem that runs `sleep`:
// the static busybox of Debian's busybox-static as bin/busybox, bin/sleep
// linked to it, and the empty directories a runtime mounts on. It checks
// the result with chroot, since a dynamic busybox would find no libc.
func makeBusyboxRootfs(dir string) error {
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	b, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		return fmt.Errorf("needs busybox-static: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), b, 0o755); err != nil {
		return err
	}
	if err := os.Symlink("busybox", filepath.Join(dir, "bin", "sleep")); err != nil {
		return err
	}
	if _, err := output(nil, "chroot", dir, "/bin/sleep", "0"); err != nil {
		return fmt.Errorf("busybox rootfs (is busybox-static installed?): %w", err)
	}
	return nil
}

// output executes a command like run, and returns its standard output,
// trimmed: the container ID that `docker run -d` and `knit run -d` print.
func output(env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), execLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, oneLine(string(ee.Stderr)))
		}
		return "", fmt.Errorf("%s %s: %w", filepath.Base(name), strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

package runner

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// busyboxRootfs builds a root filesystem holding only a static busybox
// and its applet links.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	const busybox = "/usr/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		t.Skip("needs busybox-static at " + busybox)
	}
	root := t.TempDir()
	bin := filepath.Join(root, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", busybox, bin).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	for _, applet := range []string{"sh", "echo", "cat", "hostname", "ls", "test", "sleep", "readlink"} {
		if err := os.Symlink("busybox", filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestRootfs(t *testing.T) {
	requireSandbox(t)
	root := busyboxRootfs(t)
	hostname := filepath.Join(t.TempDir(), "hostname")
	write(t, hostname, "from-bind\n")
	script := strings.Join([]string{
		"ls /",
		"echo hidden > /dev/null && echo null-ok",
		"test -c /dev/zero && test -c /dev/urandom && test -L /dev/ptmx && echo dev-ok",
		"test -e /usr || echo no-usr",
		"cat /etc/hostname",
		"hostname",
		"echo $$",
		"pwd",
	}, "; ")
	spec := Spec{
		Args:     []string{"sh", "-c", script},
		Env:      []string{"PATH=/bin"},
		Rootfs:   root,
		Hostname: "rootfs-ctr",
		Cwd:      "/work",
		Binds:    []Bind{{Source: hostname, Target: "/etc/hostname", ReadOnly: true}},
	}
	code, out, errOut := run(t, spec, "")
	want := "bin\ndev\netc\nproc\nsys\nwork\nnull-ok\ndev-ok\nno-usr\nfrom-bind\nrootfs-ctr\n1\n/work\n"
	if code != 0 || out != want {
		t.Errorf("code %d, stderr %q\nout:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	// The bind target was made inside the rootfs, not on the host's /etc.
	if got := read(t, filepath.Join(root, "etc", "hostname")); got != "" {
		t.Errorf("rootfs etc/hostname = %q; want the empty mount point", got)
	}
}

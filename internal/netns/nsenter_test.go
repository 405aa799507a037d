package netns_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/testutil"
)

// childEnv makes the re-executed test binary report what the constructor did
// instead of running tests.
const childEnv = "KNIT_NETNS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		reportChild()
		return
	}
	os.Exit(m.Run())
}

// reportChild prints "net=INODE mnt=INODE cwd=DIR env=VALUE".
func reportChild() {
	var out []string
	for _, kind := range []string{"net", "mnt"} {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/ns/"+kind, &st); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out = append(out, fmt.Sprintf("%s=%d", kind, st.Ino))
	}
	cwd, _ := os.Getwd()
	fmt.Printf("%s cwd=%s env=%s joined=%s\n", strings.Join(out, " "), cwd, os.Getenv(netns.EnvJoin), os.Getenv(netns.EnvJoined))
}

// runChild re-executes the test binary with the given joins.
func runChild(t *testing.T, env string) (stdout, stderr string, err error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", env)
	cmd.Dir = t.TempDir()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func parseReport(t *testing.T, out string) map[string]string {
	t.Helper()
	r := map[string]string{}
	for f := range strings.FieldsSeq(out) {
		k, v, _ := strings.Cut(f, "=")
		r[k] = v
	}
	return r
}

func TestNsenterNet(t *testing.T) {
	path := testutil.NewNetns(t)
	out, errOut, err := runChild(t, netns.JoinEnv(netns.Join{Kind: "net", Path: path}))
	if err != nil {
		t.Fatalf("child: %v: %s", err, errOut)
	}
	r := parseReport(t, out)
	if want := strconv.FormatUint(inode(t, path), 10); r["net"] != want {
		t.Errorf("child netns inode %s, want %s", r["net"], want)
	}
	if want := strconv.FormatUint(inode(t, "/proc/self/ns/mnt"), 10); r["mnt"] != want {
		t.Errorf("child mnt ns changed without a mnt join")
	}
	if r["env"] != "" {
		t.Errorf("child still sees %s=%s", netns.EnvJoin, r["env"])
	}
	// Renamed in place, not removed: the Go runtime, which reads the
	// environment from the array the kernel laid out, sees it, so the
	// array was not shifted over the auxiliary vector that follows it.
	if r["joined"] != "net:"+path {
		t.Errorf("child sees %s=%q, want net:%s (the variable renamed in place)", netns.EnvJoined, r["joined"], path)
	}
	if r["cwd"] == "/" {
		t.Errorf("child moved to / without a mnt join")
	}
}

// TestNsenterMnt joins a mount namespace listed first; the constructor must
// still join net (opened before) and mnt (joined last) and chdir to /.
func TestNsenterMnt(t *testing.T) {
	path := testutil.NewNetns(t)
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	mntPath := fmt.Sprintf("/proc/%d/ns/mnt", holder.Process.Pid)
	// unshare(1) joins its new namespace just before exec'ing sleep.
	deadline := time.Now().Add(2 * time.Second)
	for inode(t, mntPath) == inode(t, "/proc/self/ns/mnt") {
		if time.Now().After(deadline) {
			t.Fatal("unshare did not enter a mount namespace of its own within 2 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	env := netns.JoinEnv(netns.Join{Kind: "mnt", Path: mntPath}, netns.Join{Kind: "net", Path: path})
	out, errOut, err := runChild(t, env)
	if err != nil {
		t.Fatalf("child: %v: %s", err, errOut)
	}
	r := parseReport(t, out)
	if want := strconv.FormatUint(inode(t, mntPath), 10); r["mnt"] != want {
		t.Errorf("child mnt inode %s, want %s", r["mnt"], want)
	}
	if want := strconv.FormatUint(inode(t, path), 10); r["net"] != want {
		t.Errorf("child net inode %s, want %s", r["net"], want)
	}
	if r["cwd"] != "/" {
		t.Errorf("child cwd %q, want /", r["cwd"])
	}
}

func TestNsenterFailure(t *testing.T) {
	for _, tc := range []struct{ env, msg string }{
		{"net:/nonexistent/ns", "knit: join net namespace /nonexistent/ns: No such file or directory\n"},
		{"bogus:/proc/self/ns/net", "knit: join bogus namespace /proc/self/ns/net: Invalid argument\n"},
		{"net", "knit: join net namespace : Invalid argument\n"},
	} {
		_, errOut, err := runChild(t, netns.EnvJoin+"="+tc.env)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 125 {
			t.Errorf("%s: child exit = %v, want 125", tc.env, err)
		}
		if errOut != tc.msg {
			t.Errorf("%s: stderr %q, want %q", tc.env, errOut, tc.msg)
		}
	}
}

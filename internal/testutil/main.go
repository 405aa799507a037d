package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// EnvSandboxed marks a test binary that Sandboxed re-ran in its sandbox.
const EnvSandboxed = "KNIT_TEST_SANDBOXED"

// Sandboxed is for a TestMain: run as root outside its sandbox, it re-runs
// the test binary in fresh network and mount namespaces (unshare, mounts
// private) and returns that run's exit status and true; otherwise it
// returns false, and the tests run in this process. Whatever the code under
// test does to links, addresses, routes or mounts, even by mistake, then
// dies with the sandbox instead of reaching the machine's own.
//
// A test binary started as `knit _announce ...` (an engine under test,
// whose own executable it is, leaving an announcement to a process of
// its own) exits at once instead of running the tests again.
func Sandboxed() (code int, reran bool) {
	if len(os.Args) > 1 && os.Args[1] == "_announce" { // engine.AnnounceArg
		os.Exit(0)
	}
	if os.Geteuid() != 0 || InSandbox() {
		return 0, false
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--mount", "--propagation", "private", "--"}, os.Args...)...)
	cmd.Env = append(os.Environ(), EnvSandboxed+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), true
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "unshare:", err)
		return 1, true
	}
	return 0, true
}

// InSandbox reports whether the test binary runs in the sandbox Sandboxed
// made: the mark is there, and the network and mount namespaces are not
// PID 1's.
func InSandbox() bool {
	if os.Getenv(EnvSandboxed) == "" {
		return false
	}
	for _, kind := range []string{"mnt", "net"} {
		self, _ := os.Readlink("/proc/self/ns/" + kind)
		host, _ := os.Readlink("/proc/1/ns/" + kind)
		if self == "" || self == host {
			return false
		}
	}
	return true
}

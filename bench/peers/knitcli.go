package main

import (
	"fmt"
	"path/filepath"
)

// ---- knit's command line, to compare with Docker's (see docker.go) ----

// knitCLITool execs a real knit binary per operation, with the sandbox's
// own data root, exec root and configuration file: `knit run -d -p
// HOSTPORT:80 --rootfs BUSYBOX sleep 1d` and `knit rm -f ID`, the commands
// a user types, timed whole like Docker's.
type knitCLITool struct {
	bin, rootfs string
	env         []string
}

func newKnitCLI(bin string) (*knitCLITool, error) {
	if bin == "" {
		return nil, fmt.Errorf("no knit binary given (-knit-bin)")
	}
	dir := filepath.Join(workDir, "knit-cli")
	t := &knitCLITool{bin: bin, rootfs: filepath.Join(workDir, "busybox"), env: []string{
		"KNIT_DATA_ROOT=" + filepath.Join(dir, "lib"), "KNIT_EXEC_ROOT=" + filepath.Join(dir, "run"),
		"KNIT_CONFIG=" + filepath.Join(dir, "config.json")}}
	return t, makeBusyboxRootfs(t.rootfs)
}

func (t *knitCLITool) attach(i int) (any, error) {
	return output(t.env, t.bin, "run", "-d", "-p", fmt.Sprintf("%d:%d", hostPortBase+i, ctrPort), "--rootfs", t.rootfs, "sleep", "1d")
}

func (t *knitCLITool) detach(h any) error {
	_, err := output(t.env, t.bin, "rm", "-f", h.(string))
	return err
}

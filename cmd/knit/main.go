// Command knit runs processes in their own namespaces and gives them a
// network. main wires the dependencies and dispatches the hidden entry points
// that knit re-executes itself as (container init, exec helper), and the CNI
// plugin face when a CNI runtime executes knit (CNI_COMMAND set, no
// arguments).
package main

import (
	"os"
	"runtime"

	"github.com/knit-dev/knit/internal/cli"
	"github.com/knit-dev/knit/internal/cni"
	"github.com/knit-dev/knit/internal/config"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/driver/bridge"
	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/firewall/nftables"
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store/bolt"
)

// The main goroutine keeps the main thread to itself, so that no goroutine
// that switches namespaces ever runs there: the main thread is the thread
// group's leader, whose namespace /proc/self (and /proc/net) follows.
func init() { runtime.LockOSThread() }

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case runner.InitArg:
			runner.Init() // never returns
		case runner.ExecArg:
			runner.ExecMain() // never returns
		}
	}
	// What knit starts to outlive it (a supervisor, the DNS server) gets
	// what it is given and nothing else of the caller's, as a daemon's
	// children would: a shell's `knit run -d ... | cat` must not wait for
	// the container to end.
	_ = runner.CloseOnExecFrom(3)
	if cni.Invoked(os.Args[1:], os.Getenv) {
		os.Exit(cni.Main(cni.Env{
			NewEngine: func(p engine.Paths) (cni.Engine, error) { return newEngine(p) },
			Getenv:    os.Getenv,
			Stdin:     os.Stdin,
			Stdout:    os.Stdout,
			Stderr:    os.Stderr,
		}))
	}
	os.Exit(cli.Run(os.Args[1:], cli.Env{
		NewEngine: newEngine,
		In:        os.Stdin,
		Out:       os.Stdout,
		Err:       os.Stderr,
		Version:   version,
	}))
}

func newEngine(p engine.Paths) (*engine.Engine, error) {
	cfg, err := config.Load(p.Config)
	if err != nil {
		return nil, err
	}
	o := engine.Options{
		Paths:   p,
		Config:  cfg,
		Store:   bolt.Open(p.DataRoot + "/knit.db"),
		Drivers: map[string]driver.Driver{"bridge": bridge.New()},
	}
	if cfg.FirewallOn() {
		// The record of what was last seen up to date saves every
		// command a read of the ruleset while nothing changed.
		o.Firewall = nftables.New(nftables.WithStamp(p.FirewallStamp()))
	}
	return engine.New(o)
}

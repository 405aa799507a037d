// Package faults kills the process at a chosen step, so that tests can
// check what a crash at any point of a command leaves behind. Every kernel
// or store change knit makes is preceded by a call to Step with the name of
// the change; nothing else happens unless the environment asks for it.
//
// Environment, read once at process start:
//
//	KNIT_CRASH_AT=N      at the Nth step of this process, SIGKILL the process
//	                     (before the change of that step is made)
//	KNIT_CRASH_TRACE=F   append "N NAME" for every step to the file F, so a
//	                     test can count the steps of a command
//	KNIT_CRASH_PROC=P    which knit processes count steps: "" (the default)
//	                     is the command-line process; "_supervise", "_dns",
//	                     "_init" or "_exec" one of the hidden entry points
//	                     knit re-executes itself as; "*" every process
//
// Children inherit the environment, but each process counts its own steps
// from 1, and only processes that KNIT_CRASH_PROC selects count at all.
// With none of the variables set, Step is one predictable branch.
//
// Step names (package.change):
//
//	store.commit        a write transaction is about to commit (bolt)
//	netns.create        a namespace file is about to be created
//	netns.mount         the new namespace is about to be bind-mounted
//	netns.delete        a namespace mount is about to be unmounted and removed
//	netns.mount-dir     the exec-root tmpfs is about to be mounted
//	netns.share-dir     the exec-root tmpfs is about to be made shared
//	link.bridge-add     ip link add BR type bridge
//	link.veth-add       ip link add NAME type veth peer ...
//	link.veth-master    ip link set NAME master BR
//	link.veth-hairpin   ip link set NAME type bridge_slave hairpin on
//	link.veth-alias     ip link set NAME alias ALIAS
//	link.veth-up        ip link set NAME up (a new veth)
//	link.addrgen        ip link set DEV addrgenmode none (a veth end, an ifb)
//	link.set-up         ip link set DEV up
//	link.set-group      ip link set DEV group N (a port an older knit made)
//	link.del            ip link del DEV
//	link.addr-add       ip addr add P dev DEV
//	link.addr-del       ip addr del P dev DEV (an External bridge's gateway)
//	link.route-add      ip route add default via GW dev DEV
//	link.sysctl         a sysctl write (forwarding, disable_ipv6, route_localnet, ...)
//	link.conntrack-del  conntrack -D ...
//	nft.batch           an nftables batch of rules or sets is about to be sent
//	nft.elems-batch     an nftables batch of elements is about to be sent
//	nft.dns-redirect    the 127.0.0.11 redirect table in a container's
//	                    namespace is about to be made, changed or deleted
//	dns.save            the DNS server's records snapshot is about to be written
//	files.rewrite       a container's /etc/hosts or resolv.conf is about to
//	                    be rewritten in place (a connect, a disconnect, a link)
//	files.rewritten     rewritten, its record of what knit wrote not yet updated
//
// Invariants: the package imports nothing of knit's, changes no state
// unless KNIT_CRASH_AT or KNIT_CRASH_TRACE is set, and a crash is a
// SIGKILL: no deferred function, no cleanup, exactly as a kill -9 or a
// power cut would leave things (minus the page cache).
package faults

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Environment variables.
const (
	EnvAt    = "KNIT_CRASH_AT"
	EnvTrace = "KNIT_CRASH_TRACE"
	EnvProc  = "KNIT_CRASH_PROC"
)

var (
	enabled bool // set once by init, read-only afterwards
	crashAt int64
	steps   atomic.Int64
	traceMu sync.Mutex
	trace   *os.File
)

func init() {
	at, path := os.Getenv(EnvAt), os.Getenv(EnvTrace)
	if at == "" && path == "" {
		return
	}
	if want, self := os.Getenv(EnvProc), role(os.Args[1:]); want != "*" && want != self {
		return
	}
	if n, err := strconv.ParseInt(at, 10, 64); err == nil && n > 0 {
		crashAt = n
	}
	if path != "" {
		// Opened once; O_APPEND makes each line one atomic write, also when
		// several processes trace into the same file.
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			trace = f
		}
	}
	enabled = crashAt > 0 || trace != nil
}

// role names the hidden entry point the process runs as ("_supervise",
// "_dns", "_init", "_exec"), or "" for the command line. The entry point is
// the first argument that is not a global flag (--data-root DIR and the
// like, which all take a value).
func role(args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if !strings.Contains(a, "=") {
				i++ // the flag's value
			}
			continue
		}
		if strings.HasPrefix(a, "_") {
			return a
		}
		return ""
	}
	return ""
}

// Step marks the point just before a change called name. It counts the
// step, traces it, and kills the process if it is the step KNIT_CRASH_AT
// names.
func Step(name string) {
	if !enabled {
		return
	}
	// Counted and traced under one lock: steps taken on two goroutines at
	// once (a run makes its namespace beside its links) reach the trace in
	// the order of their numbers.
	traceMu.Lock()
	n := steps.Add(1)
	if trace != nil {
		fmt.Fprintf(trace, "%d %s\n", n, name)
	}
	traceMu.Unlock()
	if n == crashAt {
		// SIGKILL to ourselves stops every thread; nothing after this line
		// runs.
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}

// After returns fn followed by Step(name) when fn succeeds, for a change
// that happens when fn returns nil (a transaction that commits then). With
// crashes off it returns fn itself.
func After[T any](name string, fn func(T) error) func(T) error {
	if !enabled {
		return fn
	}
	return func(v T) error {
		if err := fn(v); err != nil {
			return err
		}
		Step(name)
		return nil
	}
}

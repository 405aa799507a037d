package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/testutil"
)

// The crash tests kill knit (internal/faults: KNIT_CRASH_AT=k) at each step
// of a command, one step per attempt, and then check that the next command
// and `knit system prune` leave the store and the kernel consistent: nothing
// held by nothing, and nothing a live container needs removed (a bystander
// container with a published port keeps answering throughout).
//
// KNIT_CRASH_FULL=1 tries every step even of commands with many; by default
// a command of more than maxCrashSteps steps is sampled so that every
// distinct step name is still killed at least once.

// maxCrashSteps bounds the attempts per command in the default (CI) mode.
const maxCrashSteps = 40

// faultsInjected counts the crashes of every crash test of this binary.
var faultsInjected atomic.Int64

// crashKind is one command to crash at each of its steps.
type crashKind struct {
	name string
	// proc is KNIT_CRASH_PROC: "" crashes the command-line process, or a
	// hidden entry point ("_supervise") of one it starts.
	proc string
	// crashnet makes the user-defined network crashnet, with a second
	// bystander on it, for commands that use it.
	crashnet bool
	// bystanderNet, when set, is a user-defined network made for the
	// bystander, for commands that need the default network unused.
	bystanderNet string
	// setup prepares the sandbox once, after the bystanders run.
	setup func(t *testing.T, s *testutil.Sandbox, bb string)
	// bystanders, when set, checks the kind's own bystanders (made by
	// setup) with the common ones after every attempt.
	bystanders func(t *testing.T, s *testutil.Sandbox)
	// before prepares each attempt (what the command removes).
	before func(t *testing.T, s *testutil.Sandbox, bb string)
	// crash runs the command with env (the KNIT_CRASH_* settings) and
	// returns its result.
	crash func(t *testing.T, s *testutil.Sandbox, bb string, env []string) testutil.Result
	// next is the next ordinary command a user would type after a crash:
	// it must succeed or fail cleanly, and leave a working state.
	next func(t *testing.T, s *testutil.Sandbox, bb string)
}

// knitEnv runs knit inside the sandbox with extra environment variables
// (the sandbox drops KNIT_* from the test's own).
func knitEnv(t *testing.T, s *testutil.Sandbox, env []string, args ...string) testutil.Result {
	t.Helper()
	return s.Run(append(append([]string{"env"}, env...), append([]string{testutil.KnitBinary(t)}, args...)...)...)
}

// mustCleanly fails the test unless r exited 0, or with one of knit's
// error codes and a one-line "knit: " message containing one of okErrors.
func mustCleanly(t *testing.T, what string, r testutil.Result, okErrors ...string) {
	t.Helper()
	if r.Code == 0 {
		return
	}
	msg := strings.TrimSpace(r.Stderr)
	if failedCleanly(r.Code) && strings.HasPrefix(msg, "knit: ") && !strings.Contains(msg, "\n") {
		for _, ok := range okErrors {
			if strings.Contains(msg, ok) {
				return
			}
		}
	}
	t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, r.Code, r.Stdout, r.Stderr)
}

// runVictim runs the victim container on crashnet.
func runVictim(t *testing.T, s *testutil.Sandbox, bb string, env []string) testutil.Result {
	return runVictimOn(t, s, bb, "crashnet", env)
}

// runVictimOn runs the victim, a web server publishing 8080, on network.
func runVictimOn(t *testing.T, s *testutil.Sandbox, bb, network string, env []string) testutil.Result {
	return knitEnv(t, s, env, "run", "-d", "--name", "victim", "--network", network, "-p", "8080:80", "-h", "victim",
		"--rootfs", bb, "httpd", "-f", "-p", "80", "-h", "/etc")
}

// disconnectVictim disconnects the victim from connectnet.
func disconnectVictim(t *testing.T, s *testutil.Sandbox, _ string, env []string) testutil.Result {
	return knitEnv(t, s, env, "network", "disconnect", "connectnet", "victim")
}

func crashKinds() []crashKind {
	return []crashKind{{
		name:     "RunForeground",
		crashnet: true,
		crash: func(t *testing.T, s *testutil.Sandbox, bb string, env []string) testutil.Result {
			return knitEnv(t, s, env, "run", "--rm", "--name", "victim", "--network", "crashnet", "-p", "8080:80", "--rootfs", bb, "true")
		},
		next: func(t *testing.T, s *testutil.Sandbox, bb string) {
			s.MustKnit(t, "run", "--rm", "--name", "victim", "--network", "crashnet", "-p", "8080:80", "--rootfs", bb, "true")
		},
	}, {
		name:     "RunDetached",
		crashnet: true,
		crash:    runVictim,
		next: func(t *testing.T, s *testutil.Sandbox, bb string) {
			mustCleanly(t, "run after crash", runVictim(t, s, bb, nil))
			reaches(t, s, world, "198.51.100.1", 8080, "victim")
			s.MustKnit(t, "rm", "-f", "victim")
		},
	}, {
		name:     "RemoveForce",
		crashnet: true,
		before: func(t *testing.T, s *testutil.Sandbox, bb string) {
			mustCleanly(t, "run victim", runVictim(t, s, bb, nil))
		},
		crash: func(t *testing.T, s *testutil.Sandbox, _ string, env []string) testutil.Result {
			return knitEnv(t, s, env, "rm", "-f", "victim")
		},
		next: func(t *testing.T, s *testutil.Sandbox, _ string) {
			mustCleanly(t, "rm after crash", s.Knit("rm", "-f", "victim"), "no such container")
		},
	}, {
		// The supervisor of a detached container: killed while it records
		// the start, or while it releases the network after rm -f kills
		// the container.
		name:     "Supervisor",
		proc:     "_supervise",
		crashnet: true,
		crash: func(t *testing.T, s *testutil.Sandbox, bb string, env []string) testutil.Result {
			r := runVictim(t, s, bb, env)
			mustCleanly(t, "run with a crashing supervisor", r, "supervisor exited")
			if r.Code == 0 {
				r = s.Knit("rm", "-f", "victim")
				mustCleanly(t, "rm with a crashing supervisor", r, "no such container")
			}
			return r
		},
		next: func(t *testing.T, s *testutil.Sandbox, _ string) {
			mustCleanly(t, "rm after crash", s.Knit("rm", "-f", "victim"), "no such container")
		},
	}, {
		// restart, done by the container's supervisor: killed while it
		// tears the old process's namespaces down or makes the new ones.
		name:     "Restart",
		proc:     "_supervise",
		crashnet: true,
		crash: func(t *testing.T, s *testutil.Sandbox, bb string, env []string) testutil.Result {
			r := runVictim(t, s, bb, env)
			mustCleanly(t, "run with a crashing supervisor", r, "supervisor exited")
			if r.Code == 0 {
				r = s.Knit("restart", "-t", "1", "victim")
				mustCleanly(t, "restart with a crashing supervisor", r, "no such container", "stopped instead of restarting")
			}
			return r
		},
		next: func(t *testing.T, s *testutil.Sandbox, bb string) {
			if running := s.Knit("ps", "-q", "-f", "name=victim"); running.Stdout != "" {
				reaches(t, s, world, "198.51.100.1", 8080, "victim")
			}
			mustCleanly(t, "rm after crash", s.Knit("rm", "-f", "victim"), "no such container")
			mustCleanly(t, "run after crash", runVictim(t, s, bb, nil))
			reaches(t, s, world, "198.51.100.1", 8080, "victim")
		},
	}, {
		// A run on an IPv6-only network, its port on [::] only.
		name: "RunIPv6Only",
		setup: func(t *testing.T, s *testutil.Sandbox, bb string) {
			s.MustRun(t, "ip", "addr", "add", "2001:db8:53::1/64", "dev", "wan0", "nodad")
			s.World("ip", "addr", "add", "2001:db8:53::2/64", "dev", "eth0", "nodad")
			s.MustKnit(t, "network", "create", "--ipv4=false", "--ipv6", "--subnet", "fd00:db8:7::/64", "sixnet")
			serve(t, s, bb, "bystander6", "--network", "sixnet", "-p", "8092:80") // keeps it from a prune
		},
		crash: func(t *testing.T, s *testutil.Sandbox, bb string, env []string) testutil.Result {
			return runVictimOn(t, s, bb, "sixnet", env)
		},
		next: func(t *testing.T, s *testutil.Sandbox, bb string) {
			mustCleanly(t, "run after crash", runVictimOn(t, s, bb, "sixnet", nil))
			reaches(t, s, world, "2001:db8:53::1", 8080, "victim")
			s.MustKnit(t, "rm", "-f", "victim")
		},
		bystanders: func(t *testing.T, s *testutil.Sandbox) {
			reaches(t, s, world, "2001:db8:53::1", 8092, "bystander6")
		},
	}, {
		name: "NetworkCreate",
		crash: func(t *testing.T, s *testutil.Sandbox, _ string, env []string) testutil.Result {
			return knitEnv(t, s, env, "network", "create", "scratch")
		},
		next: func(t *testing.T, s *testutil.Sandbox, bb string) {
			mustCleanly(t, "network create after crash", s.Knit("network", "create", "scratch"), "already exists")
			// A network half made by a crash is repaired by its next use.
			s.MustKnit(t, "run", "--rm", "--network", "scratch", "--rootfs", bb, "ping", "-c1", "-W2", gateway(t, s, "scratch"))
		},
	}, {
		name: "NetworkRemove",
		before: func(t *testing.T, s *testutil.Sandbox, _ string) {
			s.MustKnit(t, "network", "create", "scratch")
		},
		crash: func(t *testing.T, s *testutil.Sandbox, _ string, env []string) testutil.Result {
			return knitEnv(t, s, env, "network", "rm", "scratch")
		},
		next: func(t *testing.T, s *testutil.Sandbox, _ string) {
			mustCleanly(t, "network rm after crash", s.Knit("network", "rm", "scratch"), "not found")
			// Its name and subnet can be taken again.
			s.MustKnit(t, "network", "create", "scratch")
			s.MustKnit(t, "network", "rm", "scratch")
		},
	}, {
		// On the administrator's bridge, rm takes back only the gateway
		// knit gave it; a crash leaves the rest to the next rm.
		name: "NetworkRemoveExternal",
		setup: func(t *testing.T, s *testutil.Sandbox, _ string) {
			adminBridge(t, s, "admin-br", "198.51.100.1/24")
		},
		before: func(t *testing.T, s *testutil.Sandbox, _ string) {
			s.MustKnit(t, "network", "create", "-o", "bridge=admin-br", "--subnet", "203.0.113.0/24", "extnet")
		},
		crash: func(t *testing.T, s *testutil.Sandbox, _ string, env []string) testutil.Result {
			return knitEnv(t, s, env, "network", "rm", "extnet")
		},
		next: func(t *testing.T, s *testutil.Sandbox, _ string) {
			mustCleanly(t, "network rm after crash", s.Knit("network", "rm", "extnet"), "not found")
			if a := s.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "admin-br"); strings.Contains(a, "203.0.113.1") || !strings.Contains(a, "198.51.100.1/24") {
				t.Errorf("admin-br after network rm: want the administrator's address only:\n%s", a)
			}
		},
	}, {
		// Killed half-way, a connect leaves an endpoint recorded whose
		// link may be half made: the next command undoes it, or, once the
		// link is recorded, finishes its DNS part.
		name:     "NetworkConnect",
		crashnet: true,
		before: func(t *testing.T, s *testutil.Sandbox, bb string) {
			s.MustKnit(t, "network", "create", "connectnet")
			// On the default network, which has no DNS: the connect
			// points its resolv.conf at connectnet's server.
			mustCleanly(t, "run victim", runVictimOn(t, s, bb, "bridge", nil))
		},
		crash: func(t *testing.T, s *testutil.Sandbox, _ string, env []string) testutil.Result {
			return knitEnv(t, s, env, "network", "connect", "--alias", "vconn", "connectnet", "victim")
		},
		next: func(t *testing.T, s *testutil.Sandbox, _ string) {
			// A prune before removes the network when nothing was on it.
			mustCleanly(t, "network create after crash", s.Knit("network", "create", "connectnet"), "already exists")
			mustCleanly(t, "connect after crash", s.Knit("network", "connect", "--alias", "vconn", "connectnet", "victim"), "already exists in network")
			// Connected for real: the new interface reaches its gateway,
			// resolv.conf names connectnet's DNS, and that knows the alias
			// the connect gave, however late in the connect the crash came.
			gw := gateway(t, s, "connectnet")
			s.MustKnit(t, "exec", "victim", "ping", "-c1", "-W2", gw)
			out := s.MustKnit(t, "exec", "victim", "nslookup", "vconn")
			if _, answer, _ := strings.Cut(out, "Name:"); !strings.Contains(answer, gw[:strings.LastIndexByte(gw, '.')+1]) {
				t.Errorf("nslookup vconn after the connect: no address on connectnet:\n%s", out)
			}
			reaches(t, s, world, "198.51.100.1", 8080, "victim")
		},
	}, {
		// The same onto the default network, which has no DNS: a crash
		// after the link was recorded leaves /etc/hosts to the next command.
		name:     "NetworkConnectBridge",
		crashnet: true,
		before: func(t *testing.T, s *testutil.Sandbox, bb string) {
			mustCleanly(t, "run victim", runVictim(t, s, bb, nil))
		},
		crash: func(t *testing.T, s *testutil.Sandbox, _ string, env []string) testutil.Result {
			return knitEnv(t, s, env, "network", "connect", "bridge", "victim")
		},
		next: func(t *testing.T, s *testutil.Sandbox, _ string) {
			mustCleanly(t, "connect after crash", s.Knit("network", "connect", "bridge", "victim"), "already exists in network")
			ip := inspectField(t, s, "victim", "{{.NetworkSettings.Networks.bridge.IPAddress}}")
			if hosts := s.MustKnit(t, "exec", "victim", "cat", "/etc/hosts"); !strings.Contains(hosts, ip+"\tvictim") {
				t.Errorf("/etc/hosts lacks the address on the default network, %s:\n%s", ip, hosts)
			}
			s.MustKnit(t, "exec", "victim", "ping", "-c1", "-W2", gateway(t, s, "bridge"))
			reaches(t, s, world, "198.51.100.1", 8080, "victim")
		},
	}, {
		// Killed half-way, a disconnect may have left the endpoint
		// recorded, or dropped it with resolv.conf still naming the
		// network's DNS server: the next command finishes it.
		name:     "NetworkDisconnect",
		crashnet: true,
		before: func(t *testing.T, s *testutil.Sandbox, bb string) {
			s.MustKnit(t, "network", "create", "--subnet", "10.77.0.0/24", "connectnet")
			mustCleanly(t, "run victim", runVictimOn(t, s, bb, "bridge", nil))
			s.MustKnit(t, "network", "connect", "--alias", "vconn", "connectnet", "victim")
			// A probe on connectnet asks its DNS server after the crash
			// (by exec: a run would bring the server up to date itself).
			s.MustKnit(t, "run", "-d", "--name", "probe", "--network", "connectnet", "--rootfs", bb, "sleep", "300")
			s.MustKnit(t, "exec", "probe", "nslookup", "vconn")
		},
		crash: disconnectVictim,
		next: func(t *testing.T, s *testutil.Sandbox, _ string) {
			mustCleanly(t, "disconnect after crash", s.Knit("network", "disconnect", "connectnet", "victim"), "is not connected")
			// Gone for real: resolv.conf no longer names connectnet's
			// server, the network can go, and the container still reaches
			// the world and is reached through its published port.
			if resolv := s.MustKnit(t, "exec", "victim", "cat", "/etc/resolv.conf"); strings.Contains(resolv, "10.77.0.1") {
				t.Errorf("resolv.conf still names connectnet's server 10.77.0.1 after the disconnect:\n%s", resolv)
			}
			if hosts := s.MustKnit(t, "exec", "victim", "cat", "/etc/hosts"); strings.Contains(hosts, "10.77.0.") {
				t.Errorf("/etc/hosts still has connectnet's address after the disconnect:\n%s", hosts)
			}
			// connectnet's DNS server no longer knows the alias.
			if r := s.Knit("exec", "probe", "nslookup", "vconn"); r.Code == 0 {
				t.Errorf("connectnet's DNS still answers for vconn after the disconnect:\n%s", r.Stdout)
			}
			s.MustKnit(t, "rm", "-f", "probe")
			s.MustKnit(t, "network", "rm", "connectnet")
			s.MustKnit(t, "exec", "victim", "ping", "-c1", "-W2", "203.0.113.1")
			reaches(t, s, world, "198.51.100.1", 8080, "victim")
		},
	}, {
		// The same with the default route on the network left: it moves
		// to the next network, also when the crash came after the drop.
		name:     "NetworkDisconnectRoute",
		crashnet: true,
		before: func(t *testing.T, s *testutil.Sandbox, bb string) {
			s.MustKnit(t, "network", "create", "--subnet", "10.77.0.0/24", "connectnet")
			mustCleanly(t, "run victim", runVictimOn(t, s, bb, "connectnet", nil))
			s.MustKnit(t, "network", "connect", "crashnet", "victim")
		},
		crash: disconnectVictim,
		next: func(t *testing.T, s *testutil.Sandbox, _ string) {
			mustCleanly(t, "disconnect after crash", s.Knit("network", "disconnect", "connectnet", "victim"), "is not connected", "not found")
			gw := gateway(t, s, "crashnet")
			if routes := s.MustKnit(t, "exec", "victim", "ip", "route"); !strings.Contains(routes, "default via "+gw) {
				t.Errorf("the default route did not move to crashnet (%s):\n%s", gw, routes)
			}
			s.MustKnit(t, "exec", "victim", "ping", "-c1", "-W2", "203.0.113.1")
			// resolv.conf names 127.0.0.11, which goes to crashnet's server.
			if resolv := s.MustKnit(t, "exec", "victim", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "nameserver 127.0.0.11\n") {
				t.Errorf("resolv.conf does not name 127.0.0.11 after the disconnect:\n%s", resolv)
			}
			if rules := s.MustRun(t, "nsenter", "--net="+netnsOf(t, s, "victim"), "nft", "list", "table", "ip", "knit-dns"); strings.Contains(rules, "10.77.0.1") || !strings.Contains(rules, "dnat to "+gw+":53") {
				t.Errorf("the 127.0.0.11 redirect does not go to crashnet's server %s alone after the disconnect:\n%s", gw, rules)
			}
			mustCleanly(t, "network rm after crash", s.Knit("network", "rm", "connectnet"), "not found")
		},
	}, {
		// config.json changed the unused default network: a run makes it
		// again, killed half-way through tearing the old one down or
		// making the new one.
		name:         "DefaultNetworkRemake",
		bystanderNet: "bysnet",
		before: func(t *testing.T, s *testutil.Sandbox, bb string) {
			s.WriteConfig(t, `{"bip": "10.61.0.1/24"}`)
			s.MustKnit(t, "run", "--rm", "--rootfs", bb, "true")
			s.WriteConfig(t, `{"bip": "10.62.0.1/24"}`)
		},
		crash: func(t *testing.T, s *testutil.Sandbox, bb string, env []string) testutil.Result {
			return knitEnv(t, s, env, "run", "--rm", "--rootfs", bb, "true")
		},
		next: func(t *testing.T, s *testutil.Sandbox, bb string) {
			if out := s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ip", "-o", "-4", "addr", "show", "eth0"); !strings.Contains(out, "10.62.0.2/24") {
				t.Errorf("a run after the crash: %s, want 10.62.0.2/24", out)
			}
			if addrs := s.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "knit0"); strings.Contains(addrs, "10.61.0.1") || !strings.Contains(addrs, "10.62.0.1/24") {
				t.Errorf("knit0 after the crash and a run:\n%s", addrs)
			}
		},
	}, {
		name:  "CNIAdd",
		setup: cniSetup,
		crash: func(t *testing.T, s *testutil.Sandbox, _ string, env []string) testutil.Result {
			return cniCmd(t, s, "ADD", env)
		},
		next: func(t *testing.T, s *testutil.Sandbox, _ string) {
			// A runtime DELs after a failed ADD, then tries again.
			// (TestCNICrashAtEveryStep checks that an ADD alone
			// repairs a half-made attachment.)
			mustCNI(t, s, "DEL")
			mustCNI(t, s, "ADD")
			mustCNI(t, s, "CHECK")
			reaches(t, s, world, "198.51.100.1", 8082, "cniweb")
			mustCNI(t, s, "DEL")
		},
	}, {
		name:  "CNIDel",
		setup: cniSetup,
		before: func(t *testing.T, s *testutil.Sandbox, _ string) {
			mustCNI(t, s, "ADD")
		},
		crash: func(t *testing.T, s *testutil.Sandbox, _ string, env []string) testutil.Result {
			return cniCmd(t, s, "DEL", env)
		},
		next: func(t *testing.T, s *testutil.Sandbox, _ string) {
			mustCNI(t, s, "DEL") // DEL is idempotent
			blocked(t, s, world, "198.51.100.1", 8082)
		},
	}, {
		// The repair itself, killed half-way through repairing a run
		// killed half-way, an exited container and an unused network.
		name:     "SystemPrune",
		crashnet: true,
		before: func(t *testing.T, s *testutil.Sandbox, bb string) {
			s.MustKnit(t, "run", "--name", "done", "--network", "crashnet", "-p", "8081:80", "--rootfs", bb, "true")
			s.MustKnit(t, "network", "create", "scratch")
			// Last: any other command would repair it first.
			if r := runVictim(t, s, bb, []string{"KNIT_CRASH_AT=17"}); r.Code != 137 {
				t.Fatalf("half-made run: exit %d, want 137: %s", r.Code, r.Stderr)
			}
		},
		crash: func(t *testing.T, s *testutil.Sandbox, _ string, env []string) testutil.Result {
			return knitEnv(t, s, env, "system", "prune", "-f")
		},
		next: func(t *testing.T, s *testutil.Sandbox, bb string) {
			s.MustKnit(t, "system", "prune", "-f")
			mustCleanly(t, "run after crash", runVictim(t, s, bb, nil))
			reaches(t, s, world, "198.51.100.1", 8080, "victim")
		},
	}}
}

func TestCrashRunForeground(t *testing.T)          { crashTest(t, "RunForeground") }
func TestCrashRunDetached(t *testing.T)            { crashTest(t, "RunDetached") }
func TestCrashRemoveForce(t *testing.T)            { crashTest(t, "RemoveForce") }
func TestCrashSupervisor(t *testing.T)             { crashTest(t, "Supervisor") }
func TestCrashNetworkCreate(t *testing.T)          { crashTest(t, "NetworkCreate") }
func TestCrashRunIPv6Only(t *testing.T)            { crashTest(t, "RunIPv6Only") }
func TestCrashRestart(t *testing.T)                { crashTest(t, "Restart") }
func TestCrashNetworkRemove(t *testing.T)          { crashTest(t, "NetworkRemove") }
func TestCrashNetworkRemoveExternal(t *testing.T)  { crashTest(t, "NetworkRemoveExternal") }
func TestCrashNetworkConnect(t *testing.T)         { crashTest(t, "NetworkConnect") }
func TestCrashNetworkConnectBridge(t *testing.T)   { crashTest(t, "NetworkConnectBridge") }
func TestCrashNetworkDisconnect(t *testing.T)      { crashTest(t, "NetworkDisconnect") }
func TestCrashNetworkDisconnectRoute(t *testing.T) { crashTest(t, "NetworkDisconnectRoute") }
func TestCrashSystemPrune(t *testing.T)            { crashTest(t, "SystemPrune") }
func TestCrashDefaultNetworkRemake(t *testing.T)   { crashTest(t, "DefaultNetworkRemake") }
func TestCrashCNIAdd(t *testing.T)                 { crashTest(t, "CNIAdd") }
func TestCrashCNIDel(t *testing.T)                 { crashTest(t, "CNIDel") }

// cniConf is the plugin configuration of the CNI crash tests: a network
// made on first use, and a published port.
const cniConf = `{"cniVersion":"1.1.0","name":"cninet","type":"knit","subnet":"10.84.0.0/24","bridge":"kcni",` +
	`"runtimeConfig":{"portMappings":[{"hostPort":8082,"containerPort":80,"protocol":"tcp"}]}}`

// cniSetup makes the runtime's namespace, with a web server in it whose
// /hostname is "cniweb", and the plugin configuration.
func cniSetup(t *testing.T, s *testutil.Sandbox, _ string) {
	t.Helper()
	root := filepath.Join(s.Dir(), "cniweb")
	s.MustRun(t, "sh", "-c", `mkdir -p "$1" && echo cniweb > "$1/hostname" && printf '%s' "$2" > "$3"`,
		"sh", root, cniConf, filepath.Join(s.Dir(), "cni.json"))
	s.MustRun(t, "ip", "netns", "add", "cnins")
	s.MustRun(t, "ip", "netns", "exec", "cnins", "ip", "link", "set", "lo", "up")
	s.Start(t, "ip", "netns", "exec", "cnins", "busybox", "httpd", "-f", "-p", "80", "-h", root)
}

// cniCmd runs knit as a CNI plugin, as a runtime does: CNI_* in the
// environment, the configuration on stdin.
func cniCmd(t *testing.T, s *testutil.Sandbox, command string, env []string) testutil.Result {
	t.Helper()
	env = append(env, "CNI_COMMAND="+command, "CNI_CONTAINERID=crashc", "CNI_IFNAME=eth0",
		"CNI_NETNS=/run/netns/cnins", "CNI_PATH=/usr/lib/cni")
	args := append(append([]string{"env"}, env...), "sh", "-c", `exec "$0" < "$1"`, testutil.KnitBinary(t), filepath.Join(s.Dir(), "cni.json"))
	return s.Run(args...)
}

func mustCNI(t *testing.T, s *testutil.Sandbox, command string) {
	t.Helper()
	if r := cniCmd(t, s, command, nil); r.Code != 0 {
		t.Fatalf("CNI %s: exit %d\n%s%s", command, r.Code, r.Stdout, r.Stderr)
	}
}

func crashTest(t *testing.T, name string) {
	i := slices.IndexFunc(crashKinds(), func(k crashKind) bool { return k.name == name })
	k := crashKinds()[i]
	s := sandbox(t)
	bb := testutil.Busybox(t)
	start := time.Now()
	// The bystander runs through every crash: on the default network, and
	// for the commands that make containers, a second one on theirs.
	flags := []string{"-p", "8090:80"}
	if k.bystanderNet != "" {
		s.MustKnit(t, "network", "create", k.bystanderNet)
		flags = append(flags, "--network", k.bystanderNet)
	}
	serve(t, s, bb, "bystander", flags...)
	if k.crashnet {
		s.MustKnit(t, "network", "create", "crashnet")
		serve(t, s, bb, "bystander2", "--network", "crashnet", "-p", "8091:80")
	}
	if k.setup != nil {
		k.setup(t, s, bb)
	}
	bystanders := func() {
		t.Helper()
		reaches(t, s, world, "198.51.100.1", 8090, "bystander")
		if k.crashnet {
			reaches(t, s, world, "198.51.100.1", 8091, "bystander2")
		}
		if k.bystanders != nil {
			k.bystanders(t, s)
		}
	}
	// Count the steps of one ordinary run of the command.
	steps := crashSteps(t, s, bb, k)
	if len(steps) == 0 {
		t.Fatalf("%s: no steps traced", k.name)
	}
	ks := pickSteps(steps)
	t.Logf("%s: %d steps %v; crashing at %d of them", k.name, len(steps), steps, len(ks))

	crashed := map[string]int{}
	varies := false // an attempt crashed at another step than counted
	attempt := func(name string, at int) {
		t.Helper()
		step := steps[at-1]
		ok := t.Run(fmt.Sprintf("%s%02d_%s", name, at, step), func(t *testing.T) {
			if bug := knownCrashBugs[k.name+"/"+step]; bug != "" && os.Getenv("KNIT_CRASH_KNOWN") != "1" {
				t.Skip("known bug (KNIT_CRASH_KNOWN=1 runs it): " + bug)
			}
			got := crashAttempt(t, s, bb, k, at)
			if got != "" {
				crashed[got]++
			}
			varies = varies || got != step
			bystanders()
		})
		if !ok {
			t.Fatalf("%s: stopping at the first failed attempt: the next ones would start from its state", k.name)
		}
	}
	for _, at := range ks {
		attempt("", at)
	}
	// Some commands' steps depend on timing (a prune deletes the veths
	// the kernel has not destroyed yet): a step missed is tried again.
	for i, name := range steps {
		for try := 0; try < 2 && crashed[name] == 0 && knownCrashBugs[k.name+"/"+name] == ""; try++ {
			attempt("retry", i+1)
		}
	}
	n := 0
	for _, c := range crashed {
		n += c
	}
	t.Logf("%s: %d crashes in %v; per step: %v; %d faults injected so far in this binary",
		k.name, n, time.Since(start).Round(time.Millisecond), crashed, faultsInjected.Load())
	for i, name := range steps {
		if crashed[name] == 0 && knownCrashBugs[k.name+"/"+name] == "" {
			if varies {
				t.Logf("%s: step %d (%s) was never crashed at: the command's steps vary between runs", k.name, i+1, name)
			} else {
				t.Errorf("%s: step %d (%s) was never crashed at", k.name, i+1, name)
			}
		}
	}
}

// knownCrashBugs are steps where a crash is known to leave knit broken:
// kind/step → the bug. Their attempts are skipped unless KNIT_CRASH_KNOWN=1.
// (An ADD killed between creating its veth and tagging it used to be one:
// the untagged veth is now found by its derived name.)
var knownCrashBugs = map[string]string{}

// crashAttempt crashes the command at step at, runs the next ordinary
// command and a prune, and checks the state; then resets the sandbox. It
// returns the name of the step crashed at, "" when the command took fewer
// steps this time.
func crashAttempt(t *testing.T, s *testutil.Sandbox, bb string, k crashKind, at int) (crashed string) {
	if k.before != nil {
		k.before(t, s, bb)
	}
	trace := filepath.Join(s.Dir(), fmt.Sprintf("trace-%d", at))
	s.MustRun(t, "rm", "-f", trace) // from an earlier attempt at the step
	env := []string{"KNIT_CRASH_AT=" + strconv.Itoa(at), "KNIT_CRASH_TRACE=" + trace, "KNIT_CRASH_PROC=" + k.proc}
	r := k.crash(t, s, bb, env)
	got := traceSteps(t, s, trace)
	label := fmt.Sprintf("%s: crash at step %d", k.name, at)
	if len(got) < at {
		// The command took fewer steps this time (a first-time-only
		// step, say): it must have finished normally.
		t.Logf("%s: the command took only %d steps; no crash", label, len(got))
		if r.Code != 0 && k.proc == "" {
			t.Fatalf("%s: no crash, yet exit %d: %s%s", label, r.Code, r.Stdout, r.Stderr)
		}
	} else {
		crashed = got[at-1]
		label += " (" + crashed + ")"
		faultsInjected.Add(1)
		if k.proc == "" && r.Code != 137 {
			t.Fatalf("%s: exit %d, want 137 (SIGKILL)\nstderr: %s", label, r.Code, r.Stderr)
		}
	}
	label += fmt.Sprintf(" [exit %d %q]", r.Code, strings.SplitN(strings.TrimSpace(r.Stderr), "\n", 2)[0])
	// Alternate the order: the next ordinary command must clean up on its
	// own (reconcile), and so must a prune.
	prune := func() { mustCleanly(t, label+": system prune", s.Knit("system", "prune", "-f")) }
	if at%2 == 0 {
		k.next(t, s, bb)
		prune()
	} else {
		prune()
		k.next(t, s, bb)
	}
	assertConsistent(t, s, label)
	resetCrashSandbox(t, s)
	assertConsistent(t, s, label+", after reset")
	return crashed
}

// crashSteps runs the command once without crashing (preceded by before,
// followed by a reset) and returns the names of its steps in order.
func crashSteps(t *testing.T, s *testutil.Sandbox, bb string, k crashKind) []string {
	t.Helper()
	if k.before != nil {
		k.before(t, s, bb)
	}
	trace := filepath.Join(s.Dir(), "trace-count")
	r := k.crash(t, s, bb, []string{"KNIT_CRASH_TRACE=" + trace, "KNIT_CRASH_PROC=" + k.proc})
	if r.Code != 0 {
		t.Fatalf("%s: counting run: exit %d: %s", k.name, r.Code, r.Stderr)
	}
	steps := traceSteps(t, s, trace)
	resetCrashSandbox(t, s)
	assertConsistent(t, s, k.name+": counting run")
	return steps
}

// traceSteps reads a KNIT_CRASH_TRACE file: step names by number, 1 first.
func traceSteps(t *testing.T, s *testutil.Sandbox, path string) []string {
	t.Helper()
	r := s.Run("cat", path)
	var names []string
	for i, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if line == "" {
			continue
		}
		n, name, ok := strings.Cut(line, " ")
		if !ok || n != strconv.Itoa(i+1) {
			t.Fatalf("trace %s: line %d is %q", path, i+1, line)
		}
		names = append(names, name)
	}
	return names
}

// pickSteps returns the steps to crash at (1-based): all of them, or when
// there are more than maxCrashSteps and KNIT_CRASH_FULL is not set, the
// first occurrence of every name, the last step, and evenly spaced others.
func pickSteps(steps []string) []int {
	all := make([]int, len(steps))
	for i := range steps {
		all[i] = i + 1
	}
	if len(steps) <= maxCrashSteps || os.Getenv("KNIT_CRASH_FULL") == "1" {
		return all
	}
	picked := map[int]bool{len(steps): true}
	seen := map[string]bool{}
	for i, name := range steps {
		if !seen[name] {
			seen[name], picked[i+1] = true, true
		}
	}
	for stride := len(steps)/maxCrashSteps + 1; len(picked) < maxCrashSteps; stride++ {
		for i := 1; i <= len(steps) && len(picked) < maxCrashSteps; i += stride {
			picked[i] = true
		}
	}
	var ks []int
	for k := range picked {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	return ks
}

// resetCrashSandbox removes every container but the bystanders, and what
// else a crash could have left, with ordinary commands.
func resetCrashSandbox(t *testing.T, s *testutil.Sandbox) {
	t.Helper()
	if s.Run("test", "-e", filepath.Join(s.Dir(), "cni.json")).Code == 0 {
		mustCNI(t, s, "DEL") // the CNI kinds' attachment, as its runtime would
	}
	for _, name := range strings.Fields(s.MustKnit(t, "ps", "-a", "--format", "{{.Names}}")) {
		if !strings.HasPrefix(name, "bystander") {
			mustCleanly(t, "reset: rm -f "+name, s.Knit("rm", "-f", name), "no such container")
		}
	}
	s.MustKnit(t, "network", "prune", "-f")
	s.MustKnit(t, "system", "prune", "-f")
}

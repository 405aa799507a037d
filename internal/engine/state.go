package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store"
)

// Store buckets.
const (
	bucketContainers = "containers" // container ID → Container
	bucketNames      = "names"      // container name → container ID
	bucketNetworks   = "networks"   // network name → Network
	// bucketLive indexes the containers a process is responsible for:
	// container ID → "PID:START" of its owner (while created) or supervisor
	// (while running). Reconcile reads only this, so its cost stays small
	// however many containers there are.
	bucketLive = "live"
	// bucketConnecting holds the `network connect`s and `disconnect`s
	// under way: "ID/NETWORK" → "PID:START" of the process connecting (or
	// repairing) it, followed by " dns" once the link is made and only the
	// DNS is left, or by " leave" for a disconnect. The next command's
	// reconcile undoes a connect whose process died, or, at the DNS stage,
	// finishes it, and finishes a disconnect.
	bucketConnecting = "connecting"
	// bucketMeta holds facts about the store itself: "boot" is the kernel
	// boot whose processes the live index was last checked against,
	// "schema" the version of the layout (currentSchema).
	bucketMeta = "meta"
)

// joinsBucket lists the containers, running or being set up, that share
// owner's network namespace (--network container:OWNER): joiner ID → "".
func joinsBucket(owner string) string { return "joins/" + owner }

// linkedByBucket lists the containers, running or being set up, with a
// --link to target: linker ID → "". The target's exit looks there for
// link elements to take back.
func linkedByBucket(target string) string { return "linkedby/" + target }

// ipamBucket holds one network's allocations: address → container ID.
func ipamBucket(network string) string { return "ipam/" + network }

// Container states, as Docker names them.
const (
	StatusCreated = "created" // being set up; Owner is the process doing it
	StatusRunning = "running"
	StatusExited  = "exited"
	// StatusRestarting is never stored: a running container with
	// State.Restarting shows as it (StatusName).
	StatusRestarting = "restarting"
)

// Proc identifies a process across PID reuse and reboots. PID and start
// time alone repeat across boots: a boot-time service starts its
// processes with the same PIDs at the same ticks every time, and a record
// from the last boot would then name a process of this one (and a repair
// could kill it). Boot is empty in records of knits before 2026-11-30.
type Proc struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`          // start time in clock ticks since boot
	Boot  string `json:"boot,omitempty"` // the kernel's boot_id then
}

// procNow names a process of this boot.
func procNow(pid int, start uint64) Proc { return Proc{Pid: pid, Start: start, Boot: bootID()} }

// is reports whether p and q name the same process. The boot is left out:
// a record's Proc of this boot has it, one that an older knit wrote or that
// came through the indexes ("PID:START") has not.
func (p Proc) is(q Proc) bool { return p.Pid == q.Pid && p.Start == q.Start }

// thisBoot reports whether p may be a process of this boot: its boot is
// this one, or one of the two is unknown.
func (p Proc) thisBoot() bool { return p.Boot == "" || bootID() == "" || p.Boot == bootID() }

// selfProc is this process as the owner of the records it writes; its
// start time, which never changes, is read from /proc once it has been
// read without error.
func selfProc() Proc {
	selfCache.Lock()
	defer selfCache.Unlock()
	if !selfCache.known {
		start, err := runner.StartTime(os.Getpid())
		selfCache.p, selfCache.known = procNow(os.Getpid(), start), err == nil
	}
	return selfCache.p
}

var selfCache struct {
	sync.Mutex
	p     Proc
	known bool
}

// State is a container's life-cycle state.
type State struct {
	Status     string `json:"status"`
	Process    Proc   `json:"process"`    // the container's PID 1, as seen from the host
	Supervisor Proc   `json:"supervisor"` // waits for the process and releases the network
	Owner      Proc   `json:"owner"`      // the command setting the container up (StatusCreated)
	// Claimed says that Owner is a command that took the record over to
	// remove it (an rm -f, a repair of a dead owner's run), not the one
	// setting it up: another rm -f waits for it instead of killing it.
	Claimed    bool      `json:"claimed,omitempty"`
	ExitCode   int       `json:"exitCode"`
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	// Restarting says that a running container's command exited and its
	// supervisor waits to start it again (--restart); Process is the one
	// that exited until then. RestartCount counts those starts.
	Restarting   bool `json:"restarting,omitempty"`
	RestartCount int  `json:"restartCount,omitempty"`
	// StopRequested says that knit was asked to stop the container (stop,
	// rm -f, kill with a stopping signal): it is not restarted.
	StopRequested bool `json:"stopRequested,omitempty"`
	// RestartFor is the process knit restart stops for its supervisor to
	// start the command again at once, until RestartBy (zero: no end): a
	// restart that died half-way leaves a request that a later exit of
	// another process, or one past the time, does not honour.
	RestartFor Proc      `json:"restartFor,omitzero"`
	RestartBy  time.Time `json:"restartBy,omitzero"`
}

// restartRequested reports whether knit restart asked for a new start
// after process p ends (p: the one that just exited, or, between runs, the
// one recorded).
func (s *State) restartRequested(p Proc) bool {
	return s.RestartFor.Pid > 0 && s.RestartFor.is(p) && (s.RestartBy.IsZero() || time.Now().Before(s.RestartBy))
}

// clearRestart forgets a knit restart's request.
func (s *State) clearRestart() { s.RestartFor, s.RestartBy = Proc{}, time.Time{} }

// StatusName is the container's state as Docker names it: its Status, or
// "restarting" between two runs.
func (c *Container) StatusName() string {
	if c.betweenRuns() {
		return StatusRestarting
	}
	return c.State.Status
}

// betweenRuns reports whether c runs, but its command exited and its
// supervisor waits to start it again (--restart): there is no process.
func (c *Container) betweenRuns() bool { return c.Running() && c.State.Restarting }

// Endpoint is a container's attachment to a network, as recorded.
type Endpoint struct {
	Network string `json:"network"`
	// Aliases are extra DNS names of the container on this network
	// (--network-alias, network connect --alias).
	Aliases []string `json:"aliases,omitempty"`
	driver.Endpoint
}

// routes reports whether ep carries the container's default route of a
// family (v4: IPv4).
func (ep *Endpoint) routes(v4 bool) bool {
	return ep.DefaultRoute && slices.ContainsFunc(ep.Gateways, func(g netip.Addr) bool { return g.Is4() == v4 })
}

// Container is the stored record of one container.
type Container struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Spec    Spec      `json:"spec"`
	State   State     `json:"state"`
	// Netns is the network namespace file the container runs in: its own
	// (bridge, none, user networks), another container's (container:NAME), or
	// empty for host networking.
	Netns     string     `json:"netns,omitempty"`
	OwnsNetns bool       `json:"ownsNetns,omitempty"`
	JoinedTo  string     `json:"joinedTo,omitempty"` // container ID for container:NAME
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// Ports are the published ports, with the host ports chosen.
	Ports []firewall.PortMapping `json:"ports,omitempty"`
	Links []Link                 `json:"links,omitempty"`
	Dir   string                 `json:"dir"` // holds hosts, resolv.conf, hostname, container.log
}

// Spec is what the user asked for, kept for inspect.
type Spec struct {
	Args        []string     `json:"args"`
	Env         []string     `json:"env,omitempty"`
	Workdir     string       `json:"workdir,omitempty"`
	Hostname    string       `json:"hostname"`
	Domainname  string       `json:"domainname,omitempty"`
	Rootfs      string       `json:"rootfs,omitempty"`
	NetworkMode string       `json:"networkMode"`
	IP          netip.Addr   `json:"ip,omitzero"`
	MAC         string       `json:"mac,omitempty"`
	DNS         []netip.Addr `json:"dns,omitempty"`
	DNSSearch   []string     `json:"dnsSearch,omitempty"`
	DNSOptions  []string     `json:"dnsOptions,omitempty"`
	// HostResolv keeps, without --dns-option, the host's resolv.conf
	// options as the container's file got them when it was made: a
	// refresh (connect, disconnect) writes them again, whatever the host's
	// are by then, as moby keeps the container's own, and whether they set
	// ndots decides how the embedded DNS answers an unknown bare name. Nil
	// for containers made before it was kept.
	HostResolv *HostResolv `json:"hostResolv,omitempty"`
	ExtraHosts []string    `json:"extraHosts,omitempty"`
	// Exposed are the --expose'd ports: what -P publishes and --link opens.
	Exposed []portmap.Spec `json:"exposed,omitempty"`
	// Publish are the -p values as given (inspect's PortBindings) and
	// PublishAll is -P; the ports published are the record's Ports.
	Publish     []portmap.Spec `json:"publish,omitempty"`
	PublishAll  bool           `json:"publishAll,omitempty"`
	Tty         bool           `json:"tty,omitempty"`
	Interactive bool           `json:"interactive,omitempty"`
	Detach      bool           `json:"detach,omitempty"`
	AutoRemove  bool           `json:"autoRemove,omitempty"`
	// StopSignal (0: SIGTERM) and StopTimeout (seconds; nil: 10) are
	// stop's defaults for this container (--stop-signal, --stop-timeout).
	StopSignal  int  `json:"stopSignal,omitempty"`
	StopTimeout *int `json:"stopTimeout,omitempty"`
	// Entrypoint is the start of Args that --entrypoint gave (Args is the
	// whole command line).
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Init       bool              `json:"init,omitempty"`
	Restart    RestartPolicy     `json:"restart,omitzero"`
	// LogFormat is how a detached container's log is written: logfile's
	// records, or, empty for records of knits before them, the bytes as
	// they came.
	LogFormat string   `json:"logFormat,omitempty"`
	User      string   `json:"user,omitempty"` // -u; "" is root
	GroupAdd  []string `json:"groupAdd,omitempty"`
}

// Running reports whether the container's process is believed alive.
func (c *Container) Running() bool { return c.State.Status == StatusRunning }

// Network is the stored record of one network.
type Network struct {
	driver.Network
	Created time.Time         `json:"created"`
	Labels  map[string]string `json:"labels,omitempty"`
	// Masquerade rewrites the source of traffic leaving the subnet to the
	// outgoing interface's address (Docker's ip-masq).
	Masquerade bool `json:"masquerade"`
	ICC        bool `json:"icc"`
	// IPv6 is true for dual-stack networks (--ipv6).
	IPv6       bool `json:"ipv6,omitempty"`
	Attachable bool `json:"attachable,omitempty"`
	// DNS is true when the embedded DNS server answers for the network's
	// containers (user-defined networks, unless -o enable-dns=false).
	DNS bool `json:"dns,omitempty"`
	// Routed and Routed6 are Docker's gateway mode "routed" for IPv4 and
	// IPv6 (-o gateway-mode=routed for both, or Docker's
	// com.docker.network.bridge.gateway_mode_ipv4/_ipv6): that family's
	// addresses are not masqueraded, and a host that routes the subnet here
	// reaches the containers' published ports on their own addresses.
	Routed  bool `json:"routed,omitempty"`
	Routed6 bool `json:"routed6,omitempty"`
	// HostIP is the host address ports are published on when -p names none
	// (-o host-ip, Docker's com.docker.network.bridge.host_binding_ipv4).
	HostIP netip.Addr `json:"hostIp,omitzero"`
	// Removing is set by network rm once no container uses the network:
	// runs and connects refuse it, and a prune, or a network create or a
	// CNI ADD of its name, finishes a removal that a crash interrupted.
	Removing bool `json:"removing,omitempty"`
}

// UserDefined reports whether n was made by network create (not the
// default bridge).
func (n *Network) UserDefined() bool { return n.Name != ModeBridge }

func getJSON(tx store.Tx, bucket, key string, v any) error {
	b, err := tx.Get(bucket, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return nil
}

func putJSON(tx store.Tx, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(bucket, key, b)
}

func getContainer(tx store.Tx, id string) (*Container, error) {
	var c Container
	if err := getJSON(tx, bucketContainers, id, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// putContainer writes c and keeps the live index in step with its state.
func putContainer(tx store.Tx, c *Container) error {
	var resp Proc
	switch c.State.Status {
	case StatusCreated:
		resp = c.State.Owner
	case StatusRunning:
		resp = c.State.Supervisor
	}
	var err error
	if resp.Pid > 0 {
		err = tx.Put(bucketLive, c.ID, formatProc(resp))
	} else {
		err = tx.Delete(bucketLive, c.ID)
	}
	if err != nil {
		return err
	}
	if c.JoinedTo != "" {
		// From the reservation on, not only once running: a joiner being
		// set up may enter the namespace at any moment, and the target's
		// teardown must then delete its links itself (joiner).
		if c.State.Status != StatusExited {
			err = tx.Put(joinsBucket(c.JoinedTo), c.ID, nil)
		} else {
			err = tx.Delete(joinsBucket(c.JoinedTo), c.ID)
		}
		if err != nil {
			return err
		}
	}
	for _, l := range c.Links {
		if c.State.Status != StatusExited {
			err = tx.Put(linkedByBucket(l.TargetID), c.ID, nil)
		} else {
			err = tx.Delete(linkedByBucket(l.TargetID), c.ID)
		}
		if err != nil {
			return err
		}
	}
	if err := putDNS(tx, c); err != nil {
		return err
	}
	return putJSON(tx, bucketContainers, c.ID, c)
}

// formatProc is p as the store's indexes hold it (bucketLive,
// bucketConnecting): "PID:START". The boot stays out, as older knits
// (a CNI plugin of another version, sharing the store) read these values
// and would take a third field for a dead process.
func formatProc(p Proc) []byte { return fmt.Appendf(nil, "%d:%d", p.Pid, p.Start) }

// parseProc reads a live-index value ("PID:START").
func parseProc(v []byte) (Proc, bool) {
	pid, start, ok := strings.Cut(string(v), ":")
	p, err1 := strconv.Atoi(pid)
	s, err2 := strconv.ParseUint(start, 10, 64)
	return Proc{Pid: p, Start: s}, ok && err1 == nil && err2 == nil
}

func listContainers(tx store.Tx) ([]*Container, error) {
	var out []*Container
	err := tx.List(bucketContainers, func(_ string, v []byte) error {
		var c Container
		if err := json.Unmarshal(v, &c); err != nil {
			return err
		}
		out = append(out, &c)
		return nil
	})
	return out, err
}

// lookupContainer resolves a name, a full ID or a unique ID prefix, as Docker does.
func lookupContainer(tx store.Tx, ref string) (*Container, error) {
	// Docker's names begin with a slash (inspect's .Name): /web is web.
	ref = strings.TrimPrefix(ref, "/")
	if ref == "" {
		return nil, errdefs.Invalid("container name or ID must not be empty")
	}
	// A full ID first: a name that happens to be another's ID must not
	// take over the lookups knit makes by ID, as in Docker.
	if c, err := getContainer(tx, ref); !errors.Is(err, store.ErrNotFound) {
		return c, err
	}
	if id, err := tx.Get(bucketNames, ref); err == nil {
		return getContainer(tx, string(id))
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	var match *Container
	err := tx.List(bucketContainers, func(k string, v []byte) error {
		if len(ref) > len(k) || k[:len(ref)] != ref {
			return nil
		}
		if match != nil {
			return errdefs.Invalid("multiple containers match ID prefix %q: use more characters", ref)
		}
		var c Container
		if err := json.Unmarshal(v, &c); err != nil {
			return err
		}
		match = &c
		return nil
	})
	if err != nil {
		return nil, err
	}
	if match == nil {
		return nil, errdefs.NotFound("no such container: %s", ref)
	}
	return match, nil
}

func getNetwork(tx store.Tx, name string) (*Network, error) {
	var n Network
	if err := getJSON(tx, bucketNetworks, name, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

func listNetworks(tx store.Tx) ([]*Network, error) {
	var out []*Network
	err := tx.List(bucketNetworks, func(_ string, v []byte) error {
		var n Network
		if err := json.Unmarshal(v, &n); err != nil {
			return err
		}
		out = append(out, &n)
		return nil
	})
	return out, err
}

// HostResolv is what a container's resolv.conf took from the host's.
type HostResolv struct {
	Options []string `json:"options"`
}

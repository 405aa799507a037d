package engine

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/logfile"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/runner"
	"github.com/knit-dev/knit/internal/store"
)

// Network modes that are not networks.
const (
	ModeNone      = "none"
	ModeHost      = "host"
	ModeBridge    = "bridge"     // the default network's name
	ModeContainer = "container:" // + NAME: another container's namespace
)

// RunOptions is a validated `knit run` request.
type RunOptions struct {
	Name     string
	Hostname string
	// Domainname is the container's NIS domain name (--domainname); with
	// it, /etc/hosts names the container HOSTNAME.DOMAINNAME first.
	Domainname string
	Network    string // "" means bridge; the first network (eth0)
	// ExtraNetworks are further user-defined networks (eth1, ...), and
	// ExtraEndpoints, when set, what each asks of its endpoint (Docker's
	// --network name=N,ip=…,alias=…).
	ExtraNetworks  []string
	ExtraEndpoints []EndpointOptions
	IP, IP6        netip.Addr // addresses on the first network
	Aliases        []string   // DNS aliases on the first network (--network-alias)
	MAC            net.HardwareAddr
	Args           []string
	Env            []string // KEY=VALUE, already resolved against the caller's environment
	Workdir        string
	Rootfs         string
	DNS            []netip.Addr
	DNSSearch      []string
	DNSOptions     []string
	AddHosts       []files.HostEntry
	Publish        []portmap.Spec // -p
	Expose         []portmap.Spec // --expose
	PublishAll     bool           // -P: publish every exposed port on a random host port
	Links          []LinkOption   // --link
	Tty            bool
	Interactive    bool
	Detach         bool
	AutoRemove     bool
	// StopSignal and StopTimeout are what stop sends first and how long
	// it waits, unless told (--stop-signal, --stop-timeout); 0 and nil
	// are Docker's SIGTERM and 10 seconds.
	StopSignal  syscall.Signal
	StopTimeout *int
	// Entrypoint, when given (--entrypoint), is the start of the command
	// line, and Args follow it (Docker's CMD after ENTRYPOINT).
	Entrypoint []string
	// Labels are the container's metadata (--label, --label-file).
	Labels map[string]string
	// Init runs knit's init as PID 1, the command as its child (--init).
	Init bool
	// Restart is what the supervisor of a detached container does when
	// its command exits by itself (--restart).
	Restart RestartPolicy
	// User is who the command runs as (-u NAME|UID[:GROUP|GID]); "" is
	// root. It is looked up in the container's own files when it starts,
	// as are GroupAdd's further groups (--group-add).
	User     string
	GroupAdd []string
}

// UnicastMAC reports whether mac can be an interface's own Ethernet
// address: six bytes, not a group address, not all zeros.
func UnicastMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&1 == 0 && !bytes.Equal(mac, make(net.HardwareAddr, 6))
}

// EndpointOptions are what a run, a connect or a CNI ADD asks of its
// endpoint on one network.
type EndpointOptions struct {
	IP, IP6 netip.Addr
	MAC     net.HardwareAddr
	Aliases []string
}

// argv is the command line the container runs: the entrypoint, then the
// arguments.
func (o *RunOptions) argv() []string {
	if len(o.Entrypoint) == 0 {
		return o.Args
	}
	return append(slices.Clone(o.Entrypoint), o.Args...)
}

// validate rejects flag combinations Docker rejects, before anything changes.
func (o *RunOptions) validate() error {
	if len(o.argv()) == 0 {
		return errdefs.Invalid("no command given: usage: knit run [OPTIONS] COMMAND [ARG...]")
	}
	if len(o.Entrypoint) > 0 && o.Entrypoint[0] == "" {
		return errdefs.Invalid("invalid --entrypoint: an empty command")
	}
	if o.User != "" {
		if err := runner.ValidUser(o.User); err != nil {
			return errdefs.Invalid("%v", err)
		}
	}
	for _, g := range o.GroupAdd {
		if g == "" || strings.Contains(g, ":") {
			return errdefs.Invalid("invalid --group-add %q: want a group name or GID", g)
		}
	}
	if err := o.Restart.validate(); err != nil {
		return err
	}
	if o.Restart.Restarts() && o.AutoRemove {
		return errdefs.Invalid("conflicting options: --restart and --rm")
	}
	if o.Restart.Restarts() && !o.Detach {
		return errdefs.Invalid("--restart %s needs -d: a container that restarts needs the supervisor of a detached run, which outlives this command", o.Restart)
	}
	for k := range o.Labels {
		if k == "" {
			return errdefs.Invalid("invalid label: an empty key")
		}
	}
	if o.Network == "" {
		o.Network = ModeBridge
	}
	if o.StopTimeout != nil && *o.StopTimeout < -1 {
		return errdefs.Invalid("invalid --stop-timeout %d: want seconds, or -1 to wait for ever", *o.StopTimeout)
	}
	o.Name = strings.TrimPrefix(o.Name, "/") // Docker's --name /web is web
	if o.Name != "" && !validName(o.Name) {
		return errdefs.Invalid("invalid container name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", o.Name)
	}
	if o.Domainname != "" {
		if err := files.ValidHostname(o.Domainname); err != nil {
			return errdefs.Invalid("invalid domainname %q: %v", o.Domainname, err)
		}
	}
	// The kernel's limit for both (a UTS name), below DNS's 253.
	for flag, v := range map[string]string{"hostname": o.Hostname, "domainname": o.Domainname} {
		if len(v) > 64 {
			return errdefs.Invalid("invalid %s %q: longer than the kernel's 64 characters", flag, v)
		}
	}
	if o.Hostname != "" {
		if err := files.ValidHostname(o.Hostname); err != nil {
			return errdefs.Invalid("invalid hostname %q: %v", o.Hostname, err)
		}
	}
	if o.Rootfs != "" {
		if fi, err := os.Stat(o.Rootfs); err != nil || !fi.IsDir() {
			return errdefs.Invalid("--rootfs %s: not a directory", o.Rootfs)
		}
		// Absolute, as the caller meant it: a detached container's
		// supervisor runs from /, where a relative path names another
		// directory (or none).
		abs, err := filepath.Abs(o.Rootfs)
		if err != nil {
			return errdefs.Invalid("--rootfs %s: %v", o.Rootfs, err)
		}
		o.Rootfs = abs
	}
	mode := o.Network
	ownNet := mode != ModeNone && mode != ModeHost && !strings.HasPrefix(mode, ModeContainer)
	if !ownNet && (o.IP.IsValid() || o.IP6.IsValid()) {
		return errdefs.Invalid("conflicting options: --ip and --ip6 cannot be used with --network %s", mode)
	}
	if o.IP.IsValid() && !o.IP.Is4() {
		return errdefs.Invalid("invalid --ip %s: not an IPv4 address (use --ip6)", o.IP)
	}
	if o.IP6.IsValid() && o.IP6.Is4() {
		return errdefs.Invalid("invalid --ip6 %s: not an IPv6 address", o.IP6)
	}
	if !ownNet && len(o.ExtraNetworks) > 0 {
		return errdefs.Invalid("conflicting options: --network %s cannot be combined with other networks", mode)
	}
	if len(o.ExtraEndpoints) > 0 && len(o.ExtraEndpoints) != len(o.ExtraNetworks) {
		return errdefs.Invalid("%d endpoint settings for %d further networks", len(o.ExtraEndpoints), len(o.ExtraNetworks))
	}
	for i, ep := range o.ExtraEndpoints {
		switch {
		case ep.IP.IsValid() && !ep.IP.Is4():
			return errdefs.Invalid("invalid ip %s for network %s: not an IPv4 address (use ip6)", ep.IP, o.ExtraNetworks[i])
		case ep.IP6.IsValid() && ep.IP6.Is4():
			return errdefs.Invalid("invalid ip6 %s for network %s: not an IPv6 address", ep.IP6, o.ExtraNetworks[i])
		case ep.MAC != nil && !UnicastMAC(ep.MAC):
			return errdefs.Invalid("invalid mac-address %s for network %s: must be a unicast Ethernet address", ep.MAC, o.ExtraNetworks[i])
		}
		for _, a := range ep.Aliases {
			if err := files.ValidHostname(a); err != nil {
				return errdefs.Invalid("invalid alias %q for network %s: %v", a, o.ExtraNetworks[i], err)
			}
		}
	}
	if len(o.Aliases) > 0 && (!ownNet || mode == ModeBridge) {
		return errdefs.Invalid("network-scoped aliases are supported only for containers on user-defined networks")
	}
	for _, a := range o.Aliases {
		if err := files.ValidHostname(a); err != nil {
			return errdefs.Invalid("invalid --network-alias %q: %v", a, err)
		}
	}
	if !ownNet && o.MAC != nil {
		return errdefs.Invalid("conflicting options: --mac-address cannot be used with --network %s", mode)
	}
	if strings.HasPrefix(mode, ModeContainer) {
		switch {
		case strings.TrimPrefix(mode, ModeContainer) == "":
			return errdefs.Invalid("--network container: needs a container name or ID")
		case o.Hostname != "":
			return errdefs.Invalid("conflicting options: hostname and the network mode")
		case o.Domainname != "":
			return errdefs.Invalid("conflicting options: domainname and the network mode (the container takes its target's)")
		case len(o.DNS) > 0: // --dns-search and --dns-option are ignored, as by Docker
			return errdefs.Invalid("conflicting options: dns and the network mode")
		case len(o.AddHosts) > 0:
			return errdefs.Invalid("conflicting options: custom host-to-IP mapping and the network mode")
		}
	}
	if !ownNet && len(o.Links) > 0 {
		return errdefs.Invalid("conflicting options: --link and --network %s", mode)
	}
	if !ownNet && len(portSpecs(o)) > 0 {
		return errdefs.Invalid("conflicting options: port publishing and --network %s", mode)
	}
	if o.MAC != nil && !UnicastMAC(o.MAC) {
		return errdefs.Invalid("invalid --mac-address %s: must be a unicast Ethernet address", o.MAC)
	}
	return nil
}

// Create makes a container ready to start without starting it: its record,
// namespace, network endpoints and /etc files. The calling process owns it
// (a reconcile in another process leaves it alone while the caller lives)
// until it starts it or removes it. On error everything done is undone.
func (e *Engine) Create(o RunOptions) (*Container, error) { return e.create(&o) }

func (e *Engine) create(o *RunOptions) (c *Container, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if ownsNetns(o.Network) && o.Network != ModeNone {
		if err := e.CheckFirewall(); err != nil {
			return nil, err
		}
	}
	// The container's namespace (unshare, mount, lo up: it needs only the
	// ID) is made while the store and the network are dealt with. Its file
	// and the /etc files live on the exec-root tmpfs.
	id := newID()
	var ns *earlyNetns
	if ownsNetns(o.Network) {
		ns = e.startNetns(id)
		defer func() {
			if c == nil { // no record names the namespace
				ns.abandon()
			}
		}()
	}
	err = e.prepareExecRoot()
	if ns != nil {
		err = ns.place(e, err)
	}
	if err != nil {
		return nil, err
	}
	c, plan, err := e.reserve(id, o, readListeners(len(portSpecs(o)) > 0))
	if err != nil {
		return nil, err
	}
	// The record names the namespace now: destroy deletes it, once it is
	// made. The networks' kernel objects are ensured meanwhile.
	if ns != nil {
		ns.recorded()
	}
	var h *link.Handle
	claimed := ns == nil
	claim := func() (err error) {
		claimed = true
		h, err = ns.claim()
		return err
	}
	done := false           // also false when a panic unwinds
	var side sync.WaitGroup // the goroutine beside the links, below
	defer func() {
		if !claimed {
			_ = claim()
		}
		if h != nil {
			h.Close()
		}
		if !done {
			side.Wait() // a panic left it running: it must not publish after destroy
			e.destroy(c)
		}
	}()
	if err := e.ensure(plan); err != nil {
		return c, err
	}
	if err := e.ensureHostGateway(o, plan); err != nil {
		return c, err
	}
	if !claimed {
		if err := claim(); err != nil {
			return c, err
		}
	}
	// The published ports (elements of the firewall's maps), the /etc
	// files and the namespace's name for `ip netns` need only what the
	// reservation chose: they are made while the links are, from a copy of
	// the record (Join sets HostIf). One goroutine does them in turn: with
	// the links' it keeps two busy, which two CPUs run at once.
	// The claims on the container's addresses too, under the names Join
	// will give its ports (unless another link holds one: checked after).
	published, written := make(chan error, 1), make(chan error, 1)
	snap := *c
	snap.Endpoints = e.portsNamed(c.Endpoints, plan.networks)
	side.Add(1)
	go func() {
		defer side.Done()
		published <- e.publishAndClaim(snap.ID, snap.Ports, snap.Endpoints)
		if snap.OwnsNetns {
			e.linkNetns(&snap)
		}
		written <- e.writeFiles(&snap, o, plan)
	}()
	err = e.setupNetwork(c, plan, h)
	perr, werr := <-published, <-written
	switch {
	case err != nil:
		return c, err
	case perr != nil:
		return c, perr
	case werr != nil:
		return c, fmt.Errorf("write /etc files: %w", werr)
	}
	if err := e.claimRenamed(c, snap.Endpoints); err != nil {
		return c, err
	}
	if err := e.applyLinks(c); err != nil {
		return c, err
	}
	if usesDNS(c) {
		if err := e.syncDNS(); err != nil {
			return c, fmt.Errorf("embedded DNS: %w", err)
		}
	}
	done = true
	return c, nil
}

// StartResult reports how a foreground container ended.
type StartResult struct {
	ID       string
	ExitCode int
}

// Stdio is the caller's terminal or pipes.
type Stdio struct {
	In, Out, Err *os.File
}

// foregroundLog opens the log of a foreground run, whose streams go to the
// caller's stdout and stderr too. The caller gone (a closed pipe on its
// stdout) fails knit's write with EPIPE, not with a SIGPIPE that would
// kill it before it records the exit.
func (e *Engine) foregroundLog(c *Container, tee *Stdio) (*logStreams, error) {
	log, err := openLog(e.logDir(c.ID))
	if err != nil {
		return nil, err
	}
	l, err := newLogStreams(log, logfile.Format, tee)
	if err != nil {
		log.Close()
		return nil, err
	}
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	l.after = func() {
		signal.Stop(pipe)
		log.Close()
	}
	return l, nil
}

// RunForeground creates and starts a container and supervises it from the
// calling process: signals are forwarded, and when the command exits its
// network is released and its exit code returned.
func (e *Engine) RunForeground(o RunOptions, io Stdio) (int, error) {
	// Until the container runs, and after it ends, a signal must not kill
	// knit half-way, nor be lost: every one it relays is held from here, a
	// pending one that asks knit to stop cancels the start, and the others
	// go to the container once it runs.
	hold := runner.HoldRelayed()
	c, err := e.create(&o)
	if err != nil {
		return 0, err
	}
	if sig, ok := hold.Stopping(); ok { // as run -d says it (rm -f of the container, ^C)
		return 0, errors.Join(cancelledStart(c, sig), e.destroy(c))
	}
	in := io.In
	if !o.Interactive {
		in = nil
	}
	sc := runner.StartConfig{Stdin: in, Stdout: io.Out, Stderr: io.Err, Tty: o.Tty}
	// Without -t, as Docker's: the container's stdin (-i) is a pipe fed
	// from the caller's, never the caller's own file (a terminal the
	// command would take for one); so are its stdout and stderr, relayed
	// to the caller's with --rm, logged and copied to the caller without.
	var relay *runner.Relay
	if !o.Tty && (in != nil || o.AutoRemove) {
		var out, errOut *os.File
		if o.AutoRemove {
			out, errOut = io.Out, io.Err
		}
		if relay, err = runner.NewRelay(in, out, errOut); err != nil {
			e.destroy(c)
			return 0, err
		}
		sc.Stdin = relay.In
		if o.AutoRemove {
			sc.Stdout, sc.Stderr = relay.Out, relay.Err
		}
	}
	// A container kept after its exit (no --rm) has its output logged
	// too, as Docker's, for knit logs: through pipes copied to the caller
	// and to the log, or, on a terminal, a copy of the terminal's output.
	streams := &logStreams{}
	if !o.AutoRemove {
		tee := &io // the pipes' copies go to the caller
		if o.Tty {
			tee = nil // the relay writes to the caller itself, and a copy to the log
		}
		if streams, err = e.foregroundLog(c, tee); err != nil {
			relay.Started()
			relay.Wait()
			e.destroy(c)
			return 0, err
		}
		if o.Tty {
			sc.TtyCopy = streams.out
		} else {
			sc.Stdout, sc.Stderr = streams.out, streams.err
		}
	}
	p, err := e.start(c, sc)
	relay.Started() // the container has its own copies of its ends
	if err != nil {
		relay.Wait()
		streams.close()
		e.destroy(c)
		return 0, err
	}
	stop := hold.To(p) // what came meanwhile first
	go announce(announcements(c.Endpoints), c.Netns)
	code, werr := p.Wait()
	stop()
	relay.Wait() // all the output is out before knit returns
	streams.close()
	if ferr := e.finish(c.ID, code); ferr != nil {
		fmt.Fprintf(os.Stderr, "knit: release %s: %v\n", c.Name, ferr)
	}
	if werr != nil {
		return code, werr
	}
	return code, nil
}

// start launches the container's process and records it as running.
func (e *Engine) start(c *Container, sc runner.StartConfig) (*runner.Process, error) {
	return e.launch(c, sc, func(_ store.Tx, cur *Container) error {
		if err := startable(cur, c.State.Owner); err != nil {
			return err
		}
		cur.State.Owner = Proc{}
		cur.Endpoints = c.Endpoints // with the host-side link names Join chose
		return nil
	})
}

// launch starts c's command and records it running, supervised by this
// process, if take, given the record in the same transaction, agrees (and
// updates it); if not, the command is killed.
func (e *Engine) launch(c *Container, sc runner.StartConfig, take func(tx store.Tx, cur *Container) error) (*runner.Process, error) {
	sc.Netns = c.Netns
	spec, err := e.runnerSpec(c)
	if err != nil {
		return nil, err
	}
	sc.Spec = spec
	p, err := runner.Start(sc)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", c.Name, err)
	}
	err = e.st.Update(func(tx store.Tx) error {
		cur, err := getContainer(tx, c.ID)
		if err != nil {
			return err
		}
		if err := take(tx, cur); err != nil {
			return err
		}
		cur.State.Status = StatusRunning
		cur.State.Process = procNow(p.Pid, p.StartTime)
		cur.State.Supervisor = selfProc()
		cur.State.StartedAt = time.Now().UTC()
		*c = *cur
		return putContainer(tx, cur)
	})
	if err != nil {
		_ = killProc(procNow(p.Pid, p.StartTime))
		_, _ = p.Wait()
		return nil, fmt.Errorf("record %s as running: %w", c.Name, err)
	}
	return p, nil
}

// startable says whether the record cur may be marked running by a start
// on behalf of owner: still created, still owner's, and owner alive. A
// repair that could not undo the run gives the record back to the dead
// owner (for the next command to retry): its supervisor, if it got this
// far, must not start what is half torn down.
func startable(cur *Container, owner Proc) error {
	if cur.State.Status != StatusCreated || !cur.State.Owner.is(owner) || !alive(owner) {
		return errdefs.Conflict("container %s was removed while starting", cur.Name)
	}
	return nil
}

func (e *Engine) runnerSpec(c *Container) (runner.Spec, error) {
	links, err := e.linksEnv(c)
	if err != nil {
		return runner.Spec{}, err
	}
	s := runner.Spec{
		Args:       c.Spec.Args,
		Env:        mergeEnv(links, c.Spec.Env), // the container's own win, as Docker's
		Cwd:        c.Spec.Workdir,
		Hostname:   c.Spec.Hostname,
		Domainname: c.Spec.Domainname,
		Rootfs:     c.Spec.Rootfs,
		Hide:       []string{e.paths.ExecRoot, e.paths.NetnsLinks},
		Tty:        c.Spec.Tty,
		Init:       c.Spec.Init,
		User:       c.Spec.User,
		GroupAdd:   c.Spec.GroupAdd,
		OwnStdio:   ownStdio(c),
	}
	dir := c.Dir
	if c.JoinedTo != "" {
		dir = e.containerDir(c.JoinedTo) // container:NAME shares NAME's files
	}
	for _, f := range []string{"hosts", "resolv.conf", "hostname"} {
		s.Binds = append(s.Binds, runner.Bind{Source: dir + "/" + f, Target: "/etc/" + f})
	}
	return s, nil
}

// ownStdio lists the standard streams of c's command that are knit's own
// pipes, which its init gives to the user it runs as: a detached
// container's three (stdin is one with -di, /dev/null else), and without
// -t a foreground run's stdout and stderr (logged, or relayed with --rm)
// and, with -i, the pipe fed from the caller's stdin. Never the caller's
// own files.
func ownStdio(c *Container) []int {
	// The init gives only pipes among those (/dev/null is none).
	if c.Spec.Detach || !c.Spec.Tty && (c.Spec.AutoRemove || c.Spec.LogFormat == logfile.Format) {
		return []int{0, 1, 2}
	}
	return nil
}

// errNotRunning is returned when an operation needs a running container.
var errNotRunning = errors.New("container is not running")

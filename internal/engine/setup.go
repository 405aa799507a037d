package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/ipam"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/logfile"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/store"
)

// plan is what a run resolved before reserving anything.
type plan struct {
	mode     string     // ModeNone, ModeHost, "container" or "network"
	networks []*Network // mode "network": eth0, eth1, ... in order
	target   string     // mode "container": the reference given by the user
}

// planTx resolves the network mode and reads the networks, in the
// reservation's transaction. The default network's record is made on its
// first use, outside (errNoDefaultNetwork); its kernel objects are
// ensure's.
func planTx(tx store.Tx, o *RunOptions) (*plan, error) {
	switch {
	case o.Network == ModeNone || o.Network == ModeHost:
		return &plan{mode: o.Network}, nil
	case strings.HasPrefix(o.Network, ModeContainer):
		return &plan{mode: "container", target: strings.TrimPrefix(o.Network, ModeContainer)}, nil
	}
	p := &plan{mode: "network"}
	for _, name := range append([]string{o.Network}, o.ExtraNetworks...) {
		n, err := usableNetworkTx(tx, name)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(p.networks, func(m *Network) bool { return m.Name == n.Name }) {
			return nil, errdefs.Invalid("network %s given twice", n.Name)
		}
		p.networks = append(p.networks, n)
	}
	if len(p.networks) > 1 && slices.ContainsFunc(p.networks, func(n *Network) bool { return !n.UserDefined() }) {
		return nil, errdefs.Invalid("conflicting options: the default bridge network cannot be combined with other networks at run; use network connect")
	}
	return p, nil
}

// ensure makes sure the kernel objects of the plan's networks exist.
func (e *Engine) ensure(p *plan) error {
	for _, n := range p.networks {
		if err := e.ensureNetwork(n); err != nil {
			return err
		}
	}
	return nil
}

// ensureHostGateway makes the default network's kernel objects for a run
// with --add-host NAME:host-gateway whose networks do not include it: the
// gateway address it names is the host's only while the default bridge
// holds it, as dockerd makes docker0 when it starts.
func (e *Engine) ensureHostGateway(o *RunOptions, p *plan) error {
	if !slices.ContainsFunc(o.AddHosts, func(h files.HostEntry) bool { return h.HostGateway }) ||
		slices.ContainsFunc(p.networks, func(n *Network) bool { return n.Name == ModeBridge }) {
		return nil
	}
	n, err := e.usableNetwork(ModeBridge)
	if err != nil {
		return fmt.Errorf("resolve host-gateway: %w", err)
	}
	// As config.json has it now, made again if unused; in use, as it is
	// (its bridge still has that address).
	if cur, err := e.currentDefault(n); err == nil {
		n = cur
	} else if errdefs.KindOf(err) != errdefs.KindConflict {
		return fmt.Errorf("resolve host-gateway: %w", err)
	}
	if err := e.ensureNetwork(n); err != nil {
		return fmt.Errorf("resolve host-gateway: %w", err)
	}
	return nil
}

// errNoDefaultNetwork: the default network has no record yet, or one
// whose removal (config.json changed it) a crash cut short:
// createDefaultNetwork finishes that and makes it.
var errNoDefaultNetwork = errors.New("the default network has no record yet")

// usableNetwork looks a network up by name, ID or ID prefix for a run or a
// connect, refusing one being removed and the modes that are not networks.
// The default network is recorded on its first use.
func (e *Engine) usableNetwork(ref string) (*Network, error) {
	var n *Network
	err := e.st.View(func(tx store.Tx) (err error) { n, err = usableNetworkTx(tx, ref); return err })
	if errors.Is(err, errNoDefaultNetwork) {
		return e.createDefaultNetwork()
	}
	return n, err
}

func usableNetworkTx(tx store.Tx, ref string) (*Network, error) {
	if predefined[ref] != "" || strings.HasPrefix(ref, ModeContainer) {
		return nil, errdefs.Invalid("network mode %s cannot be combined with other networks", ref)
	}
	n, err := lookupNetworkRef(tx, ref)
	if ref == ModeBridge && errdefs.KindOf(err) == errdefs.KindNotFound {
		return nil, errNoDefaultNetwork
	}
	if err != nil {
		return nil, err
	}
	if n.Removing {
		if n.Name == ModeBridge {
			return nil, errNoDefaultNetwork
		}
		return nil, networkRemoving(n.Name)
	}
	return n, nil
}

// staleDefault ends a reservation on the default network whose record no
// longer matches config.json and that nothing uses: it is made again, then
// the run tried again.
type staleDefault struct{ n *Network }

func (s *staleDefault) Error() string { return "the default network differs from config.json" }

// checkDefaultTx checks the default network's record n against
// config.json: a *staleDefault if config.json changed it and nothing uses
// it (remakeDefault makes it again), a conflict naming its users if
// something does, nil if it follows config.json.
func (e *Engine) checkDefaultTx(tx store.Tx, n *Network) error {
	what := e.defaultNetworkChanged(n)
	if what == "" {
		return nil
	}
	if users := networkUsers(tx, ModeBridge); len(users) > 0 {
		return errdefs.Conflict("config.json changed the default network (%s), which %s still use: remove them (knit rm -f) and it is made again with the new settings",
			what, strings.Join(users, ", "))
	}
	return &staleDefault{n}
}

// remakeDefault makes the unused, stale default network again from
// config.json, as dockerd does at its next start. The new subnet is
// checked first: a config.json that cannot make one (a default-gateway
// outside it) leaves the old network as it is.
func (e *Engine) remakeDefault(stale *Network) (*Network, error) {
	if _, err := e.defaultSubnet(); err != nil {
		return nil, err
	}
	if err := e.removeUnusedNetwork(stale); err != nil {
		return nil, err
	}
	return e.createDefaultNetwork()
}

// repairFirst ends a reservation whose transaction found containers
// whose owner is gone, or connects whose process is: they are repaired
// (reconcile), then it is tried again.
type repairFirst struct{ dead }

func (r *repairFirst) Error() string {
	return fmt.Sprintf("%d containers and %d connects to repair first", len(r.ids), len(r.connects))
}

// reserve plans the run and records the container, its name, addresses and
// ports in one transaction, which also does every command's reconcile
// check: one store transaction per run where a reconcile, a network lookup
// and the reservation took three. Repairs and the default network's first
// record are made between tries.
func (e *Engine) reserve(id string, o *RunOptions, listening func() (*portmap.Listeners, error)) (*Container, *plan, error) {
	repairs, defaults := 0, 0
	tried := map[string]bool{} // repaired by this run already
	for {
		// After three rounds of repairs (owners dying while we repair),
		// or when only what this run tried to repair is left (a repair
		// that could not finish gives the container back), the run goes
		// ahead without the check: the next command repairs.
		c, p, err := e.reserveOnce(id, o, listening, repairs < 3)
		var rf *repairFirst
		var stale *staleDefault
		switch {
		case errors.As(err, &rf):
			repairs++
			fresh := false
			for _, k := range append(slices.Clone(rf.ids), rf.connects...) {
				fresh = fresh || !tried[k]
				tried[k] = true
			}
			if !fresh {
				repairs = 3
				continue
			}
			if _, err := e.repairDead(rf.dead); err != nil {
				return nil, nil, err
			}
		case errors.As(err, &stale) && defaults == 0:
			defaults++
			if _, err := e.remakeDefault(stale.n); err != nil {
				return nil, nil, err
			}
		case errors.As(err, &stale):
			return nil, nil, errdefs.Conflict("the default network does not follow config.json yet: try again")
		case errors.Is(err, errNoDefaultNetwork) && defaults == 0:
			defaults++
			if _, err := e.createDefaultNetwork(); err != nil {
				return nil, nil, err
			}
		case errors.Is(err, errNoDefaultNetwork): // removed again at once
			return nil, nil, errdefs.NotFound("network %s not found", ModeBridge)
		default:
			return c, p, err
		}
	}
}

// reserveOnce is one try of reserve: the plan and the container's record,
// name, addresses and ports in one transaction, so that concurrent runs
// never share a name, an address or a host port.
func (e *Engine) reserveOnce(id string, o *RunOptions, listening func() (*portmap.Listeners, error), reconcile bool) (*Container, *plan, error) {
	c := &Container{
		ID:      id,
		Name:    o.Name,
		Created: time.Now().UTC(),
		Dir:     e.containerDir(id),
		State:   State{Status: StatusCreated, Owner: selfProc()},
		Spec: Spec{
			Args: o.argv(), Entrypoint: o.Entrypoint, Labels: o.Labels, Init: o.Init, Restart: o.Restart, LogFormat: logfile.Format, User: o.User, GroupAdd: o.GroupAdd, Env: o.Env, Workdir: o.Workdir, Hostname: o.Hostname, Domainname: o.Domainname, Rootfs: o.Rootfs,
			NetworkMode: o.Network, IP: o.IP, DNS: o.DNS, DNSSearch: o.DNSSearch, DNSOptions: o.DNSOptions,
			ExtraHosts: extraHostStrings(o), Tty: o.Tty, Interactive: o.Interactive, Detach: o.Detach,
			AutoRemove: o.AutoRemove, Exposed: o.Expose, StopSignal: int(o.StopSignal), StopTimeout: o.StopTimeout,
			Publish: slices.Clone(o.Publish), PublishAll: o.PublishAll, // before config's host address applies
		},
	}
	if o.MAC != nil {
		c.Spec.MAC = o.MAC.String()
	}
	if len(o.DNSOptions) == 0 {
		c.Spec.HostResolv = &HostResolv{Options: hostResolvOptions()}
	}
	if c.Spec.Hostname == "" {
		c.Spec.Hostname = id[:12]
	}
	var p *plan
	err := e.st.Update(func(tx store.Tx) (err error) {
		// Reconcile's check, in the write transaction: one getpriority
		// per distinct owner (~0.5 µs each) while other commands wait for
		// the lock, against a View of its own (one more open and map of
		// the file, ~0.15 ms of CPU) for every run.
		if reconcile {
			rebooted := bootChanged(tx)
			d, err := findDead(tx, rebooted, rebooted)
			if err != nil {
				return fmt.Errorf("read state: %w", err)
			}
			if !d.none() {
				return &repairFirst{d}
			}
			if rebooted {
				if err := noteBoot(tx); err != nil {
					return err
				}
			}
			if err := ensureSchema(tx); err != nil {
				return err
			}
		}
		if p, err = planTx(tx, o); err != nil {
			return err
		}
		for _, n := range p.networks {
			if n.Name != ModeBridge {
				continue
			}
			if err := e.checkDefaultTx(tx, n); err != nil {
				return err
			}
		}
		e.defaultHostIP(o, p)
		if err := reserveName(tx, c); err != nil {
			return err
		}
		switch p.mode {
		case ModeNone:
			c.Netns, c.OwnsNetns = e.netnsPath(id), true
		case ModeHost:
			if o.Hostname == "" {
				c.Spec.Hostname, _ = os.Hostname()
			}
		case "container":
			t, err := lookupContainer(tx, p.target)
			if err != nil {
				return err
			}
			if !t.Running() {
				return errdefs.Conflict("cannot join the network of container %s: it is not running", t.Name)
			}
			if t.JoinedTo != "" { // share the namespace's owner, not a middleman
				if t, err = getContainer(tx, t.JoinedTo); err != nil {
					return fmt.Errorf("container %s joins a container that no longer exists", p.target)
				}
			}
			c.Netns, c.JoinedTo, c.Spec.Hostname, c.Spec.Domainname = t.Netns, t.ID, t.Spec.Hostname, t.Spec.Domainname
		case "network":
			c.Netns, c.OwnsNetns = e.netnsPath(id), true
			for i, n := range p.networks {
				req := EndpointOptions{IP: o.IP, IP6: o.IP6, MAC: o.MAC, Aliases: o.Aliases}
				if i > 0 {
					req = EndpointOptions{}
					if i <= len(o.ExtraEndpoints) {
						req = o.ExtraEndpoints[i-1]
					}
				}
				ep, err := allocateEndpoint(tx, n, c, req, fmt.Sprintf("eth%d", i), defaultRouteFamilies(c.Endpoints))
				if err != nil {
					return err
				}
				c.Endpoints = append(c.Endpoints, *ep)
			}
			specs := portSpecs(o)
			if n := p.networks[0]; n.Internal && len(specs) > 0 {
				// Nothing outside an internal network reaches it, a port
				// published there included.
				return errdefs.Invalid("cannot publish ports on network %s: it is internal (--internal), which nothing outside it reaches; publish on a network that is not", n.Name)
			}
			if err := reservePorts(tx, c, specs, listening); err != nil {
				return err
			}
			if err := reserveLinks(tx, c, o.Links); err != nil {
				return err
			}
		}
		c.Spec.Env = containerEnv(c.Spec.Hostname, o.Tty, o.Env)
		return putContainer(tx, c)
	})
	if err != nil {
		return nil, nil, err
	}
	return c, p, nil
}

// containerEnv is Docker's default environment overlaid with the user's.
// HOME is not in it, as in Docker's Config.Env: the container's init
// sets it to the home of the user the command runs as, unless given.
func containerEnv(hostname string, tty bool, user []string) []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME=" + hostname,
	}
	if tty {
		env = append(env, "TERM=xterm")
	}
	return mergeEnv(env, user)
}

func reserveName(tx store.Tx, c *Container) error {
	if c.Name == "" {
		for retry := range 100 {
			n := randomName(retry)
			if _, err := tx.Get(bucketNames, n); errors.Is(err, store.ErrNotFound) {
				c.Name = n
				break
			}
		}
		if c.Name == "" {
			c.Name = "knit_" + c.ID[:12]
		}
	} else if owner, err := tx.Get(bucketNames, c.Name); err == nil {
		return errdefs.Conflict("the container name %q is already in use by container %q: remove that container to reuse the name", c.Name, string(owner))
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return tx.Put(bucketNames, c.Name, []byte(c.ID))
}

// defaultRouteFamilies reports which families already have a default route
// through one of eps: a container's default routes go through its first
// network that has a gateway of the family.
func defaultRouteFamilies(eps []Endpoint) (routed map[bool]bool) {
	routed = map[bool]bool{}
	for _, ep := range eps {
		for _, v4 := range []bool{true, false} {
			routed[v4] = routed[v4] || ep.routes(v4)
		}
	}
	return routed
}

// allocateEndpoint takes addresses on n for c (the requested ones or the
// lowest free ones) and describes the endpoint that will carry them. The
// endpoint routes by default the families that routed lacks.
func allocateEndpoint(tx store.Tx, n *Network, c *Container, req EndpointOptions, ifname string, routed map[bool]bool) (*Endpoint, error) {
	ep := &Endpoint{Network: n.Name, Aliases: req.Aliases, Endpoint: driver.Endpoint{ContainerID: c.ID, IfName: ifname}}
	if len(req.Aliases) > 0 && !n.UserDefined() {
		// Whichever way it came (run's long --network, network connect
		// --alias): the default network has no DNS to serve them.
		return nil, errdefs.Invalid("network-scoped aliases are supported only for containers on user-defined networks")
	}
	if cur, err := getNetwork(tx, n.Name); err != nil || cur.Removing || cur.ID != n.ID {
		return nil, networkRemoving(n.Name)
	}
	// One lookup per candidate, from the hint on: reading every allocation
	// of the network would grow with its containers.
	inUse := func(a netip.Addr) bool { _, err := tx.Get(ipamBucket(n.Name), a.String()); return err == nil }
	for _, want := range []netip.Addr{req.IP, req.IP6} {
		if want.IsValid() && !slices.ContainsFunc(n.Subnets, func(s driver.Subnet) bool { return s.Prefix.Addr().Is4() == want.Is4() }) {
			return nil, errdefs.Invalid("network %s has no subnet of the address family of %s", n.Name, want)
		}
	}
	for _, s := range n.Subnets {
		want := req.IP
		if s.Prefix.Addr().Is6() {
			want = req.IP6
		}
		// The containers' default gateway, when it is not the bridge
		// (config default-gateway), is a router's: never handed out.
		taken := func(a netip.Addr) bool { return s.Reserved(a) || inUse(a) }
		var addr netip.Addr
		if want.IsValid() {
			if want == s.DefaultRoute {
				return nil, errdefs.Conflict("address %s is the network's default gateway (config default-gateway)", want)
			}
			if s.Reserved(want) {
				return nil, errdefs.Conflict("address %s is reserved on network %s (--aux-address)", want, n.Name)
			}
			if err := ipam.Check(s.Prefix, s.Gateway, want, inUse); err != nil {
				return nil, addrError(err, want, n)
			}
			addr = want
		} else {
			var err error
			addr, err = ipam.AllocateFrom(s.Prefix, s.IPRange, s.Gateway, ipamNext(tx, n, s.Prefix.Addr().Is4()), taken)
			if err != nil {
				return nil, errdefs.Conflict("network %s: %v", n.Name, err)
			}
		}
		if err := takeAddr(tx, n, addr, c.ID, !want.IsValid()); err != nil {
			return nil, err
		}
		ep.Addrs = append(ep.Addrs, netip.PrefixFrom(addr, s.Prefix.Bits()))
		if s.Gateway.IsValid() && !n.Internal && !routed[addr.Is4()] {
			ep.Gateways = append(ep.Gateways, s.Router())
			ep.DefaultRoute = true
		}
		if ep.MAC == nil && addr.Is4() {
			ep.MAC = ipam.MAC(addr)
		}
	}
	if req.MAC != nil {
		ep.MAC = req.MAC
	}
	if ep.MAC == nil && len(ep.Addrs) > 0 { // an IPv6-only network
		ep.MAC = ipam.MAC(ep.Addrs[0].Addr())
	}
	if ep.MAC == nil {
		ep.MAC = ipam.RandomMAC()
	}
	return ep, nil
}

func addrError(err error, a netip.Addr, n *Network) error {
	switch {
	case errors.Is(err, ipam.ErrInUse):
		return errdefs.Conflict("address %s is already in use on network %s", a, n.Name)
	default:
		return errdefs.Invalid("invalid address %s for network %s: %v", a, n.Name, err)
	}
}

func usedAddrs(tx store.Tx, network string) (map[netip.Addr]string, error) {
	used := map[netip.Addr]string{}
	err := tx.List(ipamBucket(network), func(k string, v []byte) error {
		a, err := netip.ParseAddr(k)
		if err == nil {
			used[a] = string(v)
		}
		return nil
	})
	return used, err
}

// setupNetwork connects the container's endpoints in the namespace that h
// is bound to (nil for a container that owns no namespace). Undo is
// destroy's job: the caller rolls back on error.
func (e *Engine) setupNetwork(c *Container, p *plan, h *link.Handle) error {
	if !c.OwnsNetns {
		return nil
	}
	// The host-side names the drivers choose reach the store with the
	// container's next write (start); a crash before that loses nothing,
	// because deleting the namespace deletes the links.
	for i := range c.Endpoints {
		if err := e.join(p.networks[i], &c.Endpoints[i], driver.Sandbox{NetnsPath: c.Netns, Link: h}); err != nil {
			return err
		}
	}
	return nil
}

// join connects one endpoint through its network's driver.
func (e *Engine) join(n *Network, ep *Endpoint, sb driver.Sandbox) error {
	d, err := e.driverFor(n)
	if err != nil {
		return err
	}
	if err := d.Join(&n.Network, &ep.Endpoint, sb); err != nil {
		return fmt.Errorf("connect to network %s: %w", n.Name, err)
	}
	return nil
}

// wantsIPv6 reports whether one of the container's networks has an IPv6 subnet.
func wantsIPv6(nets []*Network) bool { return slices.ContainsFunc(nets, (*Network).HasIPv6) }

// linkNetns makes the namespace visible to `ip netns` as knit-NAME. It is a
// convenience for people exploring, so failures are ignored. A link to a
// live namespace of another knit (another exec-root, say a CNI plugin
// configuration's, sharing /run/netns) is left alone: the container goes
// without one rather than take another's.
func (e *Engine) linkNetns(c *Container) {
	if e.paths.NetnsLinks == "" {
		return
	}
	link := e.netnsLink(c.Name)
	if t, err := os.Readlink(link); err == nil && !e.isNetnsFile(t) {
		if _, err := os.Stat(t); err == nil {
			return
		}
	}
	_ = os.MkdirAll(e.paths.NetnsLinks, 0o755)
	_ = os.Remove(link)
	_ = os.Symlink(c.Netns, link)
}

// teardownKernel releases what the container holds in the kernel. Deleting
// the namespace is enough for the links inside it: the kernel destroys them
// in the background, which costs the caller ~0.1 ms instead of ~36 ms.
func (e *Engine) teardownKernel(c *Container) error {
	if !c.OwnsNetns {
		return nil
	}
	// A container that stopped cleanly (no State.Error) had its firewall
	// elements removed then (finish): they are not asked for again, which
	// would bind a netfilter socket, whose release at exit waits for the
	// kernel to free elements just deleted. The rest is done again, cheap
	// when already done: a connect that raced the stop may have left a link.
	firewall := c.State.Status != StatusExited || c.State.Error != ""
	// A firewall failure does not keep the namespace and its veth (and
	// with them the address) alive, nor the reverse: the rest goes on, and
	// the error is reported with the others.
	var errs []error
	if target, err := os.Readlink(e.netnsLink(c.Name)); err == nil && target == c.Netns {
		_ = os.Remove(e.netnsLink(c.Name))
	}
	linksErr, nsErr := e.removeLinksAndNetns(c, firewall)
	if linksErr != nil {
		errs = append(errs, linksErr)
	}
	// The ports go after the namespace: a restore of the firewall (after a
	// flush) puts back the ports of containers whose namespace is still
	// there, so one that ran before this finds the namespace and its
	// elements go now, and one after finds it gone. The claims on its
	// addresses go with them, once no link holds the addresses (below).
	if nsErr != nil {
		if firewall {
			if err := e.unpublish(c); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(append(errs, nsErr)...)
	}
	// A container that joined this namespace keeps it alive after the
	// unmount, and with it the veth and its address: delete the links now,
	// so the released address cannot be in use twice.
	gone := true
	if j, err := e.joiner(c); err != nil || j != nil {
		gone = false
	}
	// The claims are keyed by port names: a record that does not have
	// one (a container created and never started) has the name Join
	// gives when no other link holds it; and where Join gave another, a
	// run may have claimed under that one too (claimRenamed had not
	// moved them yet), which another container's port may hold: the
	// pairs of both go.
	named := slices.Clone(c.Endpoints)
	var predicted []Endpoint // ports only
	for i := range c.Endpoints {
		ep := &c.Endpoints[i]
		n, err := e.lookupNetwork(ep.Network)
		if errdefs.KindOf(err) == errdefs.KindNotFound {
			continue // the network is gone, and its links with it
		}
		var d driver.Driver
		if err == nil {
			d, err = e.driverFor(n)
		}
		if err == nil {
			if p := d.PortName(&ep.Endpoint); named[i].HostIf == "" {
				named[i].HostIf = p
			} else if p != "" && p != named[i].HostIf {
				predicted = append(predicted, Endpoint{Network: ep.Network, Endpoint: driver.Endpoint{HostIf: p}})
			}
			err = d.Leave(&n.Network, &ep.Endpoint, driver.Sandbox{NetnsPath: c.Netns}, driver.LeaveOptions{SandboxGone: gone})
		}
		errs = append(errs, err)
	}
	if !firewall {
		return errors.Join(errs...)
	}
	// The claims on the addresses go once no link holds them (the
	// addresses themselves are released after this, unless it failed).
	if errors.Join(errs...) != nil {
		return errors.Join(append(errs, e.unpublish(c))...)
	}
	if err := unpublishAndRelease(e.fw, c.ID, c.Ports, named, predicted); err != nil {
		return err
	}
	return forgetDatagramFlows(c.Ports)
}

// removeLinksAndNetns removes the container's link elements and deletes
// its namespace. A container with links does both under the links lock: a
// relink then comes first, and its elements are removed after it, or finds
// the namespace gone and leaves them out. A failure to remove the elements
// (linksErr) does not keep the namespace. Without firewall, only the
// namespace goes.
func (e *Engine) removeLinksAndNetns(c *Container, firewall bool) (linksErr, err error) {
	if firewall && len(c.Links) > 0 && e.fw != nil {
		unlock, err := e.lockLinks()
		if err == nil {
			defer unlock()
			err = e.fw.RemoveLinks(c.ID, nil)
		}
		if err != nil {
			linksErr = fmt.Errorf("remove link rules: %w", err)
		}
	}
	if err := netns.Delete(c.Netns); err != nil {
		return linksErr, fmt.Errorf("delete network namespace: %w", err)
	}
	return linksErr, nil
}

func releaseAddrs(tx store.Tx, c *Container) error {
	if err := releasePorts(tx, c); err != nil {
		return err
	}
	for _, ep := range c.Endpoints {
		for _, a := range ep.Addrs {
			if owner, err := tx.Get(ipamBucket(ep.Network), a.Addr().String()); err == nil && string(owner) == c.ID {
				if err := releaseAddr(tx, ep.Network, a.Addr()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// finish records that the container's process ended with code and releases
// its network; with --rm the container is removed. Idempotent.
func (e *Engine) finish(id string, code int) error {
	var c *Container
	linked := false  // a container not exited has a --link to this one
	leaving := false // a disconnect under way may publish moved ports
	err := e.st.View(func(tx store.Tx) (err error) {
		c, err = getContainer(tx, id)
		linked = err == nil && isLinked(tx, id)
		leaving = disconnectUnderWay(tx, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	kerr := e.teardownKernel(c)
	// The elements that let the linkers reach this container's address go
	// before the address is released (it may go to another container): a
	// crash in between leaves the record running, for a repair to do it
	// again. Once more after, for a linker made meanwhile.
	relink := func() error {
		if err := e.relink(id, true); err != nil {
			return fmt.Errorf("update the links to container %s: %w", c.Name, err)
		}
		return nil
	}
	if linked {
		// Links to it that may remain keep the address held: the exit
		// records the error, for prune to retry.
		if err := relink(); errors.Is(err, errLinksKept) {
			kerr = errors.Join(kerr, err)
		} else if err != nil {
			fmt.Fprintf(os.Stderr, "knit: %v\n", err)
		}
	}
	defer func() {
		if linked {
			if err := relink(); err != nil {
				fmt.Fprintf(os.Stderr, "knit: %v\n", err)
			}
		}
	}()
	// A `network connect` may have added an endpoint while the teardown
	// ran, which knew only c's: the transaction that records the exit
	// looks, and undoes the new endpoints' links and ports first. (A
	// connect in turn checks, in its last transaction, that the container
	// still runs; forget releases what the record holds when it commits.)
	for tries := 0; ; tries++ {
		var late []Endpoint // endpoints added during the teardown
		var cur *Container
		err = e.st.Update(func(tx store.Tx) (err error) {
			if cur, err = getContainer(tx, id); err != nil {
				return err
			}
			linked = isLinked(tx, id)
			leaving = leaving || disconnectUnderWay(tx, id)
			if late = endpointsNotIn(cur.Endpoints, c.Endpoints); len(late) > 0 && tries < 3 {
				return errLate
			}
			if c.Spec.AutoRemove && kerr == nil {
				return errKeep // forgotten below
			}
			return recordExit(tx, cur, code, kerr)
		})
		// Their links and ports go: before a try again, or after the last
		// try's commit (connects kept coming), as a connect's undo would.
		if errors.Is(err, errLate) || err == nil || errors.Is(err, errKeep) {
			for _, ep := range late {
				if n, nerr := e.lookupNetwork(ep.Network); nerr == nil {
					kerr = errors.Join(kerr, e.leave(cur, n, ep))
				}
			}
			// So do ports a disconnect moved to another network meanwhile:
			// the teardown unpublished those it read, which its republish
			// may have published again since. (One that publishes after
			// this commit sees the exit and takes them back itself.)
			stray := slices.DeleteFunc(slices.Clone(cur.Ports), func(p firewall.PortMapping) bool {
				return slices.Contains(c.Ports, p)
			})
			if leaving {
				stray = cur.Ports
			}
			if len(stray) > 0 && e.fw != nil {
				kerr = errors.Join(kerr, e.fw.RemovePorts(id, stray))
			}
		}
		if errors.Is(err, errLate) {
			c.Endpoints = cur.Endpoints
			continue
		}
		if errors.Is(err, store.ErrNotFound) {
			return kerr // removed meanwhile (rm -f)
		}
		if errors.Is(err, errKeep) {
			if cur.Spec.Detach {
				e.noteExit(id, code) // for a knit wait that came before
			}
			return e.forget(cur)
		}
		// A --rm container whose links could not be undone is kept,
		// exited, with its addresses and host ports, as destroy keeps
		// them: none is handed out while still in use, and a prune
		// removes it later.
		if cur != nil {
			e.dnsChanged(cur)
		}
		return errors.Join(kerr, err)
	}
}

// isLinked reports whether a container not exited has a --link to id.
func isLinked(tx store.Tx, id string) bool {
	linked := false
	_ = tx.List(linkedByBucket(id), func(string, []byte) error { linked = true; return nil })
	return linked
}

// errLate ends finish's transaction that finds endpoints its teardown did
// not know.
var errLate = errors.New("endpoints added during the teardown")

// endpointsNotIn returns the endpoints of eps that known lacks.
func endpointsNotIn(eps, known []Endpoint) []Endpoint {
	var out []Endpoint
	for _, ep := range eps {
		if !slices.ContainsFunc(known, func(k Endpoint) bool { return k.Network == ep.Network && k.IfName == ep.IfName }) {
			out = append(out, ep)
		}
	}
	return out
}

// recordExit marks cur exited with code and, unless its kernel teardown
// failed (kerr), releases its addresses and host ports.
func recordExit(tx store.Tx, cur *Container, code int, kerr error) error {
	if kerr == nil { // else prune frees them once the links are gone
		if err := releaseAddrs(tx, cur); err != nil {
			return err
		}
	}
	if cur.State.Status != StatusExited {
		cur.State.Status = StatusExited
		cur.State.ExitCode = code
		cur.State.FinishedAt = time.Now().UTC()
		cur.State.Restarting = false
		cur.State.clearRestart()
	}
	if kerr != nil {
		cur.State.Error = kerr.Error()
	}
	return putContainer(tx, cur)
}

// destroy undoes create: kernel objects, addresses, name, record and files.
//
// When the kernel's part cannot be undone, it returns why, and the record
// keeps the addresses and host ports, so that none is handed out twice: a
// later command's reconcile (once this process is gone) or a prune
// retries. A record that cannot be forgotten is an error too: a repair
// then gives it back to its dead owner for the next one.
func (e *Engine) destroy(c *Container) error {
	if err := e.teardownKernel(c); err != nil {
		return err
	}
	return e.forget(c)
}

// forget removes the container from the store and its files from disk.
// What it releases is what the record holds when it commits: a connect
// may have added an endpoint since c was read.
func (e *Engine) forget(c *Container) error {
	err := e.st.Update(func(tx store.Tx) error {
		if cur, err := getContainer(tx, c.ID); err == nil {
			c = cur
		}
		if err := releaseAddrs(tx, c); err != nil {
			return err
		}
		if owner, err := tx.Get(bucketNames, c.Name); err == nil && string(owner) == c.ID {
			if err := tx.Delete(bucketNames, c.Name); err != nil {
				return err
			}
		}
		if err := tx.Delete(bucketLive, c.ID); err != nil {
			return err
		}
		if err := tx.Delete(bucketDNS, c.ID); err != nil {
			return err
		}
		if c.JoinedTo != "" {
			if err := tx.Delete(joinsBucket(c.JoinedTo), c.ID); err != nil {
				return err
			}
		}
		for _, l := range c.Links {
			if err := tx.Delete(linkedByBucket(l.TargetID), c.ID); err != nil {
				return err
			}
		}
		return tx.Delete(bucketContainers, c.ID)
	})
	if err != nil {
		return err
	}
	e.dnsChanged(c)
	return errors.Join(os.RemoveAll(c.Dir), os.RemoveAll(e.logDir(c.ID)))
}

package engine

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/store"
)

// ConnectOptions tunes Connect.
type ConnectOptions struct {
	IP, IP6 netip.Addr // requested addresses; zero: allocate
	Aliases []string   // extra DNS names on the network
}

// Connect attaches a running container to one more network: a new
// interface (eth1, eth2, ...) with an address on it, and the container's
// names in the network's DNS. On an error up to the link's record nothing
// is left attached; past it (the links, /etc files or DNS update failing)
// the container stays connected, and the next command finishes the /etc
// files and the DNS (finishConnect).
func (e *Engine) Connect(network, ref string, o ConnectOptions) (err error) {
	if err := e.CheckFirewall(); err != nil {
		return err
	}
	if err := e.Reconcile(); err != nil {
		return err
	}
	for _, a := range o.Aliases {
		if err := files.ValidHostname(a); err != nil {
			return errdefs.Invalid("invalid --alias %q: %v", a, err)
		}
	}
	// The container first: a connect it refuses changes nothing, neither
	// the network's bridge and rules nor a default network config.json
	// changed.
	err = e.st.View(func(tx store.Tx) error {
		c, err := lookupContainer(tx, ref)
		if err != nil {
			return err
		}
		name := ModeBridge // not recorded yet
		if n, err := usableNetworkTx(tx, network); err == nil {
			name = n.Name
		} else if !errors.Is(err, errNoDefaultNetwork) {
			return err
		}
		if len(o.Aliases) > 0 && name == ModeBridge {
			return errdefs.Invalid("network-scoped aliases are supported only for containers on user-defined networks")
		}
		return connectableTo(tx, c, name)
	})
	if err != nil {
		return err
	}
	n, err := e.usableNetwork(network)
	if err != nil {
		return err
	}
	if n, err = e.currentDefault(n); err != nil {
		return err
	}
	if err := e.ensureNetwork(n); err != nil {
		return err
	}
	var c *Container
	var ep *Endpoint
	err = e.st.Update(func(tx store.Tx) (err error) {
		if c, err = lookupContainer(tx, ref); err != nil {
			return err
		}
		if err := connectableTo(tx, c, n.Name); err != nil {
			return err
		}
		req := EndpointOptions{IP: o.IP, IP6: o.IP6, Aliases: o.Aliases}
		if ep, err = allocateEndpoint(tx, n, c, req, nextIfName(c), defaultRouteFamilies(c.Endpoints)); err != nil {
			return err
		}
		c.Endpoints = append(c.Endpoints, *ep)
		if err := putContainer(tx, c); err != nil {
			return err
		}
		// Until the second transaction, the connect is under way: if this
		// process dies, the next command's reconcile undoes it.
		return tx.Put(bucketConnecting, connectingKey(c.ID, n.Name), formatProc(selfProc()))
	})
	if err != nil {
		return err
	}
	linked := false // once recorded, the connect is finished, never undone
	defer func() {
		if err != nil && !linked {
			// Also after a failed Join: a link it could not delete is
			// found by its derived name. If the link stays, so do the
			// endpoint and its address (another container would get an
			// address still on a live link) and the entry of the connect
			// under way: once this process is gone, the next command's
			// reconcile undoes it again.
			if lerr := e.leave(c, n, *ep); lerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", lerr))
				return
			}
			_, _ = e.dropEndpoint(c.ID, n.Name, nil)
			if n.DNS {
				// Another command's sync may have given the server the
				// endpoint's names meanwhile (its records were written
				// with the endpoint).
				e.resyncDNS()
			}
		}
	}()
	if err := e.join(n, ep, driver.Sandbox{NetnsPath: c.Netns}); err != nil {
		return err
	}
	// Record the host-side link name Join chose; the connect is done but
	// for the DNS, unless a repair took it for dead meanwhile. From here
	// on a crash is repaired forward: the DNS stage is finished, not undone.
	key := connectingKey(c.ID, n.Name)
	err = e.st.Update(func(tx store.Tx) error {
		v, err := tx.Get(bucketConnecting, key)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		cur, err := getContainer(tx, c.ID)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(cur.Endpoints, func(x Endpoint) bool { return x.Network == n.Name && x.IfName == ep.IfName })
		if i < 0 || !bytes.Equal(v, formatProc(selfProc())) {
			return errdefs.Conflict("the connect of container %s to network %s was undone meanwhile", c.Name, n.Name)
		}
		// Its exit's teardown knew only the endpoints it read before:
		// this one is undone (the deferred leave and drop).
		if !cur.Running() {
			return errdefs.Conflict("container %s stopped while it was being connected to network %s", c.Name, n.Name)
		}
		// With the routes Join added (a family the namespace had a
		// default route for already is not the endpoint's).
		cur.Endpoints[i].HostIf, cur.Endpoints[i].Gateways, cur.Endpoints[i].DefaultRoute = ep.HostIf, ep.Gateways, ep.DefaultRoute
		if err := putContainer(tx, cur); err != nil {
			return err
		}
		c = cur
		return tx.Put(bucketConnecting, key, finishStage(selfProc()))
	})
	if err != nil {
		return err
	}
	linked = true
	e.announceLater([]Endpoint{*ep}, c.Netns)
	if err := e.finishConnect(c, n, finishStage(selfProc())); err != nil {
		return fmt.Errorf("container %s is connected to network %s, but: %w", c.Name, n.Name, err)
	}
	return nil
}

// connectableTo says whether c can be connected to the network named
// network now: running, not on it yet, no disconnect from it finishing.
func connectableTo(tx store.Tx, c *Container, network string) error {
	if err := connectable(c); err != nil {
		return err
	}
	if slices.ContainsFunc(c.Endpoints, func(ep Endpoint) bool { return ep.Network == network }) {
		return errdefs.Conflict("endpoint with name %s already exists in network %s", c.Name, network) // dockerd's words
	}
	return connectUnderWay(tx, c, network) // a disconnect finishing
}

// finishStage is the bucketConnecting value of a connect whose link is
// made and whose links, /etc files and DNS are left to do (finishConnect).
// Its word is "dns", as when only a DNS network's connect had the stage.
func finishStage(p Proc) []byte { return append(formatProc(p), " dns"...) }

// leaveStage is the bucketConnecting value of a disconnect under way: if
// its process dies, the next command finishes it.
func leaveStage(p Proc) []byte { return append(formatProc(p), " leave"...) }

// parseConnecting reads a bucketConnecting value: the process, and the
// stage: "" (a connect making its link), "dns" (a connect's last stage: finishStage) or
// "leave" (a disconnect).
func parseConnecting(v []byte) (p Proc, stage string, ok bool) {
	proc, st, _ := bytes.Cut(v, []byte(" "))
	p, ok = parseProc(proc)
	return p, string(st), ok
}

// finishConnect is a connect's last stage, done again by the next command
// if this one dies: the links to and from the container are brought up
// to date (whatever fails, the rest goes on: they have no repair of their
// own), its files rewritten (refreshFiles: the new address in /etc/hosts,
// resolv.conf naming the embedded server of its first DNS network), the
// server learns its names on a DNS network, and the connect's entry
// (still holding want) goes.
func (e *Engine) finishConnect(c *Container, n *Network, want []byte) error {
	var lerr error
	if err := e.reclaim(c.ID); err != nil {
		lerr = fmt.Errorf("its addresses are not guarded: %w", err)
	}
	if err := e.relink(c.ID, false); err != nil {
		lerr = errors.Join(lerr, fmt.Errorf("its links are not updated: %w", err))
	}
	if err := e.refreshFiles(c.ID); err != nil {
		return errors.Join(lerr, fmt.Errorf("its /etc files are not updated: %w", err))
	}
	if n.DNS {
		if err := e.syncDNS(); err != nil {
			return errors.Join(lerr, fmt.Errorf("it is not yet in the network's DNS: %w", err))
		}
	}
	return errors.Join(lerr, e.doneConnecting(connectingKey(c.ID, n.Name), want))
}

// doneConnecting deletes the connect entry key if it still holds want: a
// repair may have taken it over meanwhile.
func (e *Engine) doneConnecting(key string, want []byte) error {
	return e.st.Update(func(tx store.Tx) error {
		if v, err := tx.Get(bucketConnecting, key); err != nil || !bytes.Equal(v, want) {
			return nil
		}
		return tx.Delete(bucketConnecting, key)
	})
}

// connectingKey names a connect under way in bucketConnecting.
func connectingKey(id, network string) string { return id + "/" + network }

// deadConnects returns the keys of the connects under way whose process is
// gone (strict: or is another process with the same PID); an entry that
// cannot be read counts as gone.
func deadConnects(tx store.Tx, strict bool) ([]string, error) {
	var dead []string
	err := tx.Scan(bucketConnecting, func(k, v []byte) error {
		if p, _, ok := parseConnecting(v); !ok || !exists(p.Pid) || (strict && !alive(p)) {
			dead = append(dead, string(k))
		}
		return nil
	})
	return dead, err
}

// repairConnect undoes a connect whose process died: the link, if it was
// made, the endpoint and its addresses; or, at the DNS stage, finishes it.
// A disconnect whose process died it finishes (finishDisconnect).
// It claims the connect first, in the transaction that confirms its
// process is gone, so that two repairs do not race, and a disconnect waits
// for it (connectUnderWay); a repair that dies in turn is repaired by the
// next command. A container that is gone, no longer running or orphaned
// needs nothing here: its own end, or its repair, releases every endpoint.
func (e *Engine) repairConnect(key string) error {
	id, network, _ := strings.Cut(key, "/")
	var c *Container
	var claim []byte // this repair's entry
	atDNS := false   // the connect's link was made: finish, not undo (finishStage)
	leaving := false // a disconnect: finish it
	err := e.st.Update(func(tx store.Tx) (err error) {
		v, err := tx.Get(bucketConnecting, key)
		if errors.Is(err, store.ErrNotFound) {
			return nil // repaired meanwhile
		} else if err != nil {
			return err
		}
		p, stage, ok := parseConnecting(v)
		atDNS, leaving = stage == "dns", stage == "leave"
		if ok && alive(p) {
			return nil // still connecting
		}
		// A stopped container's disconnect is finished too (without its
		// kernel part); an orphaned one's repair releases everything.
		c, err = getContainer(tx, id)
		if errors.Is(err, store.ErrNotFound) || (err == nil && (!c.Running() && !leaving || orphaned(c))) {
			c = nil
			return tx.Delete(bucketConnecting, key)
		} else if err != nil {
			return err
		}
		switch claim = formatProc(selfProc()); {
		case atDNS:
			claim = finishStage(selfProc())
		case leaving:
			claim = leaveStage(selfProc())
		}
		return tx.Put(bucketConnecting, key, claim)
	})
	if err != nil || c == nil {
		return err
	}
	if leaving {
		n, err := e.lookupNetwork(network)
		if err != nil && errdefs.KindOf(err) != errdefs.KindNotFound {
			return fmt.Errorf("finish the disconnect of %s from %s: %w", c.Name, network, err)
		}
		err = e.finishDisconnect(c, network, n, claim, false)
		if err == nil {
			return nil
		}
		// Once the endpoint is dropped, what is left (routes, files, links,
		// DNS) is reported, as dnsChanged does, and not tried again by
		// every command; before, the next command retries the whole.
		if cur, gerr := e.get(c.ID); gerr == nil && slices.ContainsFunc(cur.Endpoints, func(ep Endpoint) bool { return ep.Network == network }) {
			return fmt.Errorf("finish the disconnect of %s from %s: %w", c.Name, network, err)
		}
		fmt.Fprintf(os.Stderr, "knit: finish the disconnect of %s from %s: %v\n", c.Name, network, err)
		return e.doneConnecting(key, claim)
	}
	if atDNS {
		n, err := e.lookupNetwork(network)
		if errdefs.KindOf(err) == errdefs.KindNotFound {
			return e.doneConnecting(key, claim) // gone, and its DNS with it
		} else if err != nil {
			return fmt.Errorf("finish the connect of %s to %s: %w", c.Name, network, err)
		}
		if err := e.finishConnect(c, n, claim); err != nil {
			// As dnsChanged: the records reach the server at its next
			// sync; a server that fails now must not stop every command.
			fmt.Fprintf(os.Stderr, "knit: finish the connect of %s to %s: %v\n", c.Name, network, err)
			return e.doneConnecting(key, claim)
		}
		return nil
	}
	undo := func(err error) error { return fmt.Errorf("undo the connect of %s to %s: %w", c.Name, network, err) }
	// The network cannot be removed while an endpoint is on it; were it
	// gone anyway, its bridge and the link's host end went with it.
	n, err := e.lookupNetwork(network)
	if err != nil && errdefs.KindOf(err) != errdefs.KindNotFound {
		return undo(err)
	}
	if i := slices.IndexFunc(c.Endpoints, func(ep Endpoint) bool { return ep.Network == network }); i >= 0 && n != nil {
		if err := e.leave(c, n, c.Endpoints[i]); err != nil {
			return undo(err)
		}
	}
	moved, err := e.dropEndpoint(c.ID, network, nil)
	if err != nil {
		return undo(err)
	}
	if err := addDefaultRoutes(c.Netns, moved, false); err != nil {
		return undo(err)
	}
	if n != nil && n.DNS {
		e.dnsChanged(c)
	}
	return nil
}

// connectUnderWay refuses to change c's endpoint on network while a live
// process connects or disconnects it (or repairs either).
func connectUnderWay(tx store.Tx, c *Container, network string) error {
	v, err := tx.Get(bucketConnecting, connectingKey(c.ID, network))
	if err != nil {
		return nil
	}
	if p, stage, ok := parseConnecting(v); ok && alive(p) {
		if stage == "leave" {
			return errdefs.Conflict("container %s is being disconnected from network %s (by process %d): try again when that command ends", c.Name, network, p.Pid)
		}
		return errdefs.Conflict("container %s is being connected to network %s (by process %d): try again when that command ends", c.Name, network, p.Pid)
	}
	return nil
}

// disconnectUnderWay says whether a disconnect of container id is under
// way (its entry is kept until it is done, republish included).
func disconnectUnderWay(tx store.Tx, id string) bool {
	found := false
	_ = tx.Scan(bucketConnecting, func(k, v []byte) error {
		if cid, _, _ := strings.Cut(string(k), "/"); cid == id {
			_, stage, _ := parseConnecting(v)
			found = found || stage == "leave"
		}
		return nil
	})
	return found
}

// connectable refuses containers whose network cannot change.
func connectable(c *Container) error {
	switch {
	case !c.Running():
		return errdefs.Conflict("container %s is not running", c.Name)
	case c.JoinedTo != "":
		return errdefs.Invalid("container %s shares the network namespace of another container: connect that one instead", c.Name)
	case !c.OwnsNetns || c.Spec.NetworkMode == ModeNone:
		return errdefs.Invalid("container %s uses --network %s, which cannot be combined with other networks", c.Name, c.Spec.NetworkMode)
	}
	return nil
}

// nextIfName is the first ethN the container does not use.
func nextIfName(c *Container) string {
	for i := 0; ; i++ {
		name := fmt.Sprintf("eth%d", i)
		if !slices.ContainsFunc(c.Endpoints, func(ep Endpoint) bool { return ep.IfName == name }) {
			return name
		}
	}
}

// Disconnect detaches a container from a network: its interface there is
// deleted, its address released, its names leave the network's DNS and
// ports published through that network are unpublished. A default route
// that went through the network moves to the next network that has a
// gateway of its family. With force, kernel errors do not stop the removal.
func (e *Engine) Disconnect(network, ref string, force bool) error {
	if err := e.Reconcile(); err != nil {
		return err
	}
	n, err := e.NetworkByRef(network)
	if err != nil {
		return err
	}
	c, err := e.get(ref)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(c.Endpoints, func(ep Endpoint) bool { return ep.Network == n.Name })
	if i < 0 {
		return errdefs.Conflict("container %s is not connected to network %s", c.Name, n.Name)
	}
	if c.JoinedTo != "" {
		return errdefs.Invalid("container %s shares the network namespace of another container", c.Name)
	}
	if c.State.Status == StatusCreated && alive(c.State.Owner) {
		// Its start would record the endpoint again, with its link.
		return errdefs.Conflict("container %s is still being set up (by PID %d); retry", c.Name, c.State.Owner.Pid)
	}
	// Until it is done the disconnect is under way: if this process dies,
	// the next command's reconcile finishes it. One that fails before it
	// dropped the endpoint is not: its entry goes with the error; after,
	// the entry stays for that reconcile.
	key, want := connectingKey(c.ID, n.Name), leaveStage(selfProc())
	err = e.st.Update(func(tx store.Tx) error {
		cur, err := getContainer(tx, c.ID)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(cur.Endpoints, func(ep Endpoint) bool { return ep.Network == n.Name }) {
			return errdefs.Conflict("container %s is not connected to network %s", c.Name, n.Name)
		}
		if err := connectUnderWay(tx, cur, n.Name); err != nil {
			return err
		}
		c = cur
		return tx.Put(bucketConnecting, key, want)
	})
	if err != nil {
		return err
	}
	if err := e.finishDisconnect(c, n.Name, n, want, force); err != nil {
		var after *afterDrop
		if errors.As(err, &after) {
			// The endpoint and its address are gone already: the entry
			// stays, for the next command's reconcile (once this process
			// is gone) to finish the rest (links, /etc files).
			return after.err
		}
		return errors.Join(err, e.doneConnecting(key, want))
	}
	return nil
}

// afterDrop is a disconnect's failure after its endpoint was dropped: what
// is left must still be done.
type afterDrop struct{ err error }

func (a *afterDrop) Error() string { return a.err.Error() }
func (a *afterDrop) Unwrap() error { return a.err }

// finishDisconnect does a disconnect of c from network (n: its record, nil
// if it is gone) whose entry holds want, from wherever one that died left
// it: the endpoint's kernel part, its record and addresses, the default
// routes it carried, the DNS, /etc files and links; then the entry goes.
// Each step is done again harmlessly. With force, kernel errors do not stop
// it.
func (e *Engine) finishDisconnect(c *Container, network string, n *Network, want []byte, force bool) error {
	i := slices.IndexFunc(c.Endpoints, func(ep Endpoint) bool { return ep.Network == network })
	if i >= 0 && c.Running() && n != nil {
		if err := e.leave(c, n, c.Endpoints[i]); err != nil && !force {
			// Still connected, as its record says: its ports, which
			// leave took down first, go back up, unless it exited
			// meanwhile (its exit sweeps them while this entry is kept,
			// or they go here).
			back := *c
			if back.Ports = portsOn(c, network); len(back.Ports) > 0 && e.fw != nil {
				if perr := e.publishWhileRunning(&back); perr != nil {
					err = errors.Join(err, fmt.Errorf("publish its ports on %s again: %w", network, perr))
				}
			}
			return err
		}
	}
	moved, err := e.dropEndpoint(c.ID, network, want)
	if err != nil {
		return err
	}
	if i >= 0 {
		// Again, now that nothing reads the endpoint any more: a claim put
		// back since leave (a restore's, a connect's), or none released
		// at all (force, over a Leave that failed), would let the port
		// still send from the address once another container holds it.
		if err := e.releaseEndpoint(c.ID, c.Endpoints, c.Endpoints[i]); err != nil && !force {
			return &afterDrop{err}
		}
	}
	keep := false // routes there already are kept
	if i < 0 {
		// Dropped by the disconnect that died, which may not have moved
		// the default routes it carried.
		cur, err := e.get(c.ID)
		if errdefs.KindOf(err) == errdefs.KindNotFound {
			return e.doneConnecting(connectingKey(c.ID, network), want) // removed since: nothing left
		} else if err != nil {
			return err
		}
		c, moved, keep = cur, slices.DeleteFunc(slices.Clone(cur.Endpoints), func(ep Endpoint) bool { return !ep.DefaultRoute }), true
	}
	if c.Running() {
		if err := addDefaultRoutes(c.Netns, moved, keep); err != nil && !force {
			return &afterDrop{err}
		}
		if err := e.republish(c.ID, moved); err != nil && !force {
			return &afterDrop{err}
		}
	}
	if n == nil || n.DNS {
		// Not dnsChanged(c): c may have no DNS network left, and the
		// server still has its names on this one.
		e.resyncDNS()
	}
	if err := e.refreshFiles(c.ID); err != nil {
		return &afterDrop{fmt.Errorf("container %s left network %s, but its /etc files are not updated: %w", c.Name, network, err)}
	}
	if err := e.relink(c.ID, false); err != nil {
		return &afterDrop{fmt.Errorf("container %s left network %s, but its links are not updated: %w", c.Name, network, err)}
	}
	return e.doneConnecting(connectingKey(c.ID, network), want)
}

// republish publishes the container's ports that followed its default
// route to the networks of moved (rehomePorts), a no-op for those in
// place (a disconnect done again). Nothing moved, nothing is asked.
func (e *Engine) republish(id string, moved []Endpoint) error {
	if len(moved) == 0 || e.fw == nil {
		return nil
	}
	c, err := e.get(id)
	if errdefs.KindOf(err) == errdefs.KindNotFound || err == nil && !c.Running() {
		return nil // its host ports are released, maybe another's by now
	} else if err != nil {
		return err
	}
	c.Ports = slices.DeleteFunc(c.Ports, func(p firewall.PortMapping) bool {
		return !slices.ContainsFunc(moved, func(ep Endpoint) bool { return ep.Network == p.Network })
	})
	if len(c.Ports) == 0 {
		return nil
	}
	if err := e.publishWhileRunning(c); err != nil {
		return fmt.Errorf("container %s: its ports on its new network: %w", c.Name, err)
	}
	return nil
}

// publishWhileRunning publishes c.Ports, and takes them back if the
// container has exited meanwhile: its teardown read its ports before
// (finish removes those it finds moved once it recorded the exit, while a
// disconnect's entry is kept), and may be past its unpublish.
func (e *Engine) publishWhileRunning(c *Container) error {
	if err := e.publish(c); err != nil {
		return err
	}
	if cur, err := e.get(c.ID); err == nil && !cur.Running() || errdefs.KindOf(err) == errdefs.KindNotFound {
		return e.unpublish(c)
	}
	return nil
}

// currentDefault makes the default network n again from config.json when
// config.json changed it and nothing uses it, as a run does (reserve); in
// use, the connect is refused as the run would be. Any other network is
// returned as it is.
func (e *Engine) currentDefault(n *Network) (*Network, error) {
	if n.Name != ModeBridge {
		return n, nil
	}
	var stale *staleDefault
	err := e.st.View(func(tx store.Tx) error { return e.checkDefaultTx(tx, n) })
	if !errors.As(err, &stale) {
		return n, err
	}
	return e.remakeDefault(n)
}

// portsOn returns c's published ports that go through network.
func portsOn(c *Container, network string) []firewall.PortMapping {
	var out []firewall.PortMapping
	for _, p := range c.Ports {
		if p.Network == network {
			out = append(out, p)
		}
	}
	return out
}

// leave undoes an endpoint in the kernel: its published ports, its
// link (the default routes through it go with the link) and then its
// claim on its addresses, which another container may get next.
func (e *Engine) leave(c *Container, n *Network, ep Endpoint) error {
	if ports := portsOn(c, n.Name); len(ports) > 0 && e.fw != nil {
		if err := e.fw.RemovePorts(c.ID, ports); err != nil {
			return fmt.Errorf("unpublish ports: %w", err)
		}
		if err := forgetDatagramFlows(ports); err != nil {
			return err
		}
	}
	d, err := e.driverFor(n)
	if err != nil {
		return err
	}
	if err := d.Leave(&n.Network, &ep.Endpoint, driver.Sandbox{NetnsPath: c.Netns}, driver.LeaveOptions{}); err != nil {
		return err
	}
	return e.releaseEndpoint(c.ID, c.Endpoints, ep)
}

// dropEndpoint removes c's endpoint on network from its record and
// releases its addresses and the host ports published through it. The
// default routes it carried go to the next endpoints with a gateway of
// their family; it returns those endpoints with the gateways they took.
// A connect of it under way, or its repair, is over either way: its entry
// goes, unless it is a disconnect's (keep), which has more to do.
func (e *Engine) dropEndpoint(id, network string, keep []byte) (moved []Endpoint, err error) {
	err = e.st.Update(func(tx store.Tx) error {
		key := connectingKey(id, network)
		if v, err := tx.Get(bucketConnecting, key); keep == nil || err != nil || !bytes.Equal(v, keep) {
			if err := tx.Delete(bucketConnecting, key); err != nil {
				return err
			}
		}
		c, err := getContainer(tx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		i := slices.IndexFunc(c.Endpoints, func(ep Endpoint) bool { return ep.Network == network })
		if i < 0 {
			return nil
		}
		ep := c.Endpoints[i]
		old := portsOn(c, network)
		c.Ports = slices.DeleteFunc(c.Ports, func(p firewall.PortMapping) bool { return p.Network == network })
		c.Endpoints = slices.Delete(c.Endpoints, i, i+1)
		if ep.DefaultRoute {
			moved = takeDefaultRoutes(tx, c.Endpoints, ep.Gateways)
		}
		// As Docker's: the published ports follow the default route to
		// the endpoint that took it, on the same host ports.
		rehomed, lost := rehomePorts(tx, c, old, moved)
		c.Ports = append(c.Ports, rehomed...)
		if err := narrowPorts(tx, c); err != nil {
			return err
		}
		gone := &Container{ID: id, Endpoints: []Endpoint{ep}, Ports: lost}
		if err := releaseAddrs(tx, gone); err != nil {
			return err
		}
		return putContainer(tx, c)
	})
	return moved, err
}

// rehomePorts moves ports, published through an endpoint of c's that is
// going, to the endpoints of moved (those that took its default routes),
// each to the one whose gateway is of its family, on its address there.
// It returns the moved mappings and those that could not move (no
// endpoint took that family's route), less any whose host-port record c
// keeps (through a moved one, or one through another network: the other
// family of a port published on every address, which shares its "*"
// record): releasing them would release that port too (narrowPorts then
// says which family keeps it). A port published on 0.0.0.0 and on [::]
// has a record for each, and the one lost is released.
func rehomePorts(tx store.Tx, c *Container, ports []firewall.PortMapping, moved []Endpoint) (rehomed, lost []firewall.PortMapping) {
	for _, p := range ports {
		to, ok := rehomePort(tx, c, p, moved)
		if ok {
			rehomed = append(rehomed, to)
		} else {
			lost = append(lost, p)
		}
	}
	kept := append(slices.Clone(c.Ports), rehomed...) // c.Ports: those not through the endpoint going
	lost = slices.DeleteFunc(lost, func(p firewall.PortMapping) bool {
		key := recordKey(tx, c, p)
		return slices.ContainsFunc(kept, func(k firewall.PortMapping) bool {
			return k.Proto == p.Proto && k.HostPort == p.HostPort && recordKey(tx, c, k) == key
		})
	})
	return rehomed, lost
}

// recordKey is the key of the host-port record that holds c's mapping p:
// "*" for a port published without an address, whose IPv4 mapping has no
// address and whose [::] twin shares the record; else p's address.
func recordKey(tx store.Tx, c *Container, p firewall.PortMapping) string {
	if p.HostIP == netip.IPv6Unspecified() {
		if v, err := tx.Get(portsBucket(portmap.Proto(p.Proto), p.HostPort), "*"); err == nil && string(v) == c.ID {
			return "*"
		}
	}
	return hostIPKey(p.HostIP)
}

// narrowPorts re-keys the host-port record ("*", every address) of a port
// published without an address whose IPv4 mapping is gone, its [::] one
// left (its network left, and the network that took the IPv6 route has no
// IPv4): the record then says [::], which frees the port on IPv4 for other
// containers. (One whose IPv6 mapping went keeps "*", as a container with
// no IPv6 holds it from the start.)
func narrowPorts(tx store.Tx, c *Container) error {
	for _, p := range c.Ports {
		if p.HostIP != netip.IPv6Unspecified() || slices.ContainsFunc(c.Ports, func(q firewall.PortMapping) bool {
			return q.Proto == p.Proto && q.HostPort == p.HostPort && !q.HostIP.IsValid()
		}) {
			continue
		}
		bucket := portsBucket(portmap.Proto(p.Proto), p.HostPort)
		if v, err := tx.Get(bucket, "*"); err != nil || string(v) != c.ID {
			continue // published on [::] alone: its own record
		}
		if err := tx.Delete(bucket, "*"); err != nil {
			return err
		}
		if err := tx.Put(bucket, hostIPKey(p.HostIP), []byte(c.ID)); err != nil {
			return err
		}
	}
	return nil
}

func rehomePort(tx store.Tx, c *Container, p firewall.PortMapping, moved []Endpoint) (firewall.PortMapping, bool) {
	v4 := p.ContainerIP.Unmap().Is4()
	for _, m := range moved {
		if len(m.Gateways) == 0 || m.Gateways[0].Is4() != v4 {
			continue
		}
		ep := endpointOn(c, m.Network)
		n, err := getNetwork(tx, m.Network)
		if ep == nil || err != nil {
			continue
		}
		if a, err := containerAddrFor(*ep, p.ContainerIP); err == nil {
			p.Network, p.ContainerIP = m.Network, a
			p.Open = firewallNetwork(n).Routed(a) && !p.HostIP.IsLoopback()
			return p, true
		}
	}
	return p, false
}

// takeDefaultRoutes gives each family of gws (the default routes a removed
// endpoint carried) to the first of eps whose network has a gateway of
// that family and is not internal, and returns those endpoints with only
// the gateways they took.
func takeDefaultRoutes(tx store.Tx, eps []Endpoint, gws []netip.Addr) []Endpoint {
	var moved []Endpoint
	for _, gw := range gws {
		for j := range eps {
			n, err := getNetwork(tx, eps[j].Network)
			if err != nil || n.Internal {
				continue
			}
			k := slices.IndexFunc(n.Subnets, func(s driver.Subnet) bool { return s.Gateway.IsValid() && s.Gateway.Is4() == gw.Is4() })
			if k < 0 {
				continue
			}
			ep, gw := &eps[j], n.Subnets[k].Router() // config.json's default-gateway on the default network
			ep.Gateways = append(ep.Gateways, gw)
			ep.DefaultRoute = true
			moved = append(moved, Endpoint{Network: ep.Network, Endpoint: driver.Endpoint{IfName: ep.IfName, Gateways: []netip.Addr{gw}}})
			break
		}
	}
	return moved
}

// addDefaultRoutes installs, in the namespace at netnsPath, a default route
// through each of eps' gateways out of its interface; with keep, a default
// route there already (a disconnect finished again) is kept.
func addDefaultRoutes(netnsPath string, eps []Endpoint, keep bool) error {
	if len(eps) == 0 {
		return nil
	}
	h, err := link.At(netnsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, ep := range eps {
		l, err := h.LinkGet(ep.IfName)
		if err != nil {
			return err
		}
		for _, gw := range ep.Gateways {
			if err := h.RouteAddDefault(l.Index, gw); err != nil && !(keep && errors.Is(err, unix.EEXIST)) {
				return fmt.Errorf("move the default route to network %s: %w", ep.Network, err)
			}
		}
	}
	return nil
}

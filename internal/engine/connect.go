package engine

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

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
// names in the network's DNS. On error nothing is left attached.
func (e *Engine) Connect(network, ref string, o ConnectOptions) (err error) {
	if err := e.Reconcile(); err != nil {
		return err
	}
	n, err := e.usableNetwork(network)
	if err != nil {
		return err
	}
	if !n.UserDefined() {
		return errdefs.Invalid("containers can be connected to the default bridge network only when they are created")
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
		if err := connectable(c); err != nil {
			return err
		}
		if slices.ContainsFunc(c.Endpoints, func(ep Endpoint) bool { return ep.Network == n.Name }) {
			return errdefs.Conflict("container %s is already connected to network %s", c.Name, n.Name)
		}
		req := endpointRequest{IP: o.IP, IP6: o.IP6, Aliases: o.Aliases}
		if ep, err = allocateEndpoint(tx, n, c, req, nextIfName(c), defaultRouteFamilies(c.Endpoints)); err != nil {
			return err
		}
		c.Endpoints = append(c.Endpoints, *ep)
		return putContainer(tx, c)
	})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = e.dropEndpoint(c.ID, n.Name)
		}
	}()
	if err := e.join(n, ep, driver.Sandbox{NetnsPath: c.Netns}); err != nil {
		return err
	}
	// Record the host-side link name Join chose.
	err = e.st.Update(func(tx store.Tx) error {
		cur, err := getContainer(tx, c.ID)
		if err != nil {
			return err
		}
		for i := range cur.Endpoints {
			if cur.Endpoints[i].Network == n.Name {
				cur.Endpoints[i].HostIf = ep.HostIf
			}
		}
		return putContainer(tx, cur)
	})
	if err != nil {
		return err
	}
	if n.DNS {
		e.pointResolvAtDNS(c, n)
		if err := e.syncDNS(); err != nil {
			return fmt.Errorf("embedded DNS: %w", err)
		}
	}
	return nil
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

// pointResolvAtDNS makes a container that had no DNS-enabled network use
// the embedded server of n, which it has just joined. The file is
// rewritten in place: the container sees it through a bind mount.
func (e *Engine) pointResolvAtDNS(c *Container, n *Network) {
	var nets []*Network
	for _, ep := range c.Endpoints {
		if ep.Network == n.Name {
			continue
		}
		if other, err := e.lookupNetwork(ep.Network); err == nil {
			nets = append(nets, other)
		}
	}
	if _, ok := dnsServer(nets); ok {
		return // already pointed at the server
	}
	gw, ok := dnsServer([]*Network{n})
	if !ok {
		return
	}
	path := filepath.Join(c.Dir, "resolv.conf")
	cur, err := os.ReadFile(path)
	if err != nil {
		return
	}
	r := files.ParseResolvConf(cur)
	r.Nameservers = []netip.Addr{gw}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(r.Render())
}

// Disconnect detaches a container from a network: its interface there is
// deleted, its address released, its names leave the network's DNS and
// ports published through that network are unpublished. A default route
// that went through the network moves to the next network that has a
// gateway. With force, kernel errors do not stop the removal.
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
	ep := c.Endpoints[i]
	if c.Running() {
		kerr := e.leave(c, n, ep)
		if kerr != nil && !force {
			return kerr
		}
	}
	if err := e.dropEndpoint(c.ID, n.Name); err != nil {
		return err
	}
	if n.DNS {
		e.dnsChanged(c)
	}
	return nil
}

// leave undoes an endpoint in the kernel: its published ports, its link,
// and the default routes it carried, which move to the next endpoint.
func (e *Engine) leave(c *Container, n *Network, ep Endpoint) error {
	var ports []firewall.PortMapping
	for _, p := range c.Ports {
		if p.Network == n.Name {
			ports = append(ports, p)
		}
	}
	if len(ports) > 0 && e.fw != nil {
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
	if !ep.DefaultRoute {
		return nil
	}
	rest := slices.DeleteFunc(slices.Clone(c.Endpoints), func(o Endpoint) bool { return o.Network == n.Name })
	h, err := link.At(c.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, gw := range ep.Gateways {
		for _, o := range rest {
			on, err := e.lookupNetwork(o.Network)
			if err != nil || on.Internal {
				continue
			}
			s := slices.IndexFunc(on.Subnets, func(s driver.Subnet) bool { return s.Gateway.IsValid() && s.Gateway.Is4() == gw.Is4() })
			if s < 0 {
				continue
			}
			l, err := h.LinkGet(o.IfName)
			if err != nil {
				return err
			}
			if err := h.RouteAddDefault(l.Index, on.Subnets[s].Gateway); err != nil {
				return fmt.Errorf("move the default route to network %s: %w", on.Name, err)
			}
			break
		}
	}
	return nil
}

// dropEndpoint removes c's endpoint on network from its record and
// releases its addresses and the host ports published through it. The
// default-route flags follow the kernel: the next endpoint with a gateway
// of the family takes over.
func (e *Engine) dropEndpoint(id, network string) error {
	return e.st.Update(func(tx store.Tx) error {
		c, err := getContainer(tx, id)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(c.Endpoints, func(ep Endpoint) bool { return ep.Network == network })
		if i < 0 {
			return nil
		}
		ep := c.Endpoints[i]
		for _, a := range ep.Addrs {
			if owner, err := tx.Get(ipamBucket(network), a.Addr().String()); err == nil && string(owner) == id {
				if err := tx.Delete(ipamBucket(network), a.Addr().String()); err != nil {
					return err
				}
			}
		}
		var keep []firewall.PortMapping
		for _, p := range c.Ports {
			if p.Network != network {
				keep = append(keep, p)
				continue
			}
			b, k := portsBucket(portmap.Proto(p.Proto), p.HostPort), hostIPKey(p.HostIP)
			if owner, err := tx.Get(b, k); err == nil && string(owner) == id {
				if err := tx.Delete(b, k); err != nil {
					return err
				}
			}
		}
		c.Ports = keep
		c.Endpoints = slices.Delete(c.Endpoints, i, i+1)
		if ep.DefaultRoute {
			routed := defaultRouteFamilies(c.Endpoints)
			for j := range c.Endpoints {
				o := &c.Endpoints[j]
				n, err := getNetwork(tx, o.Network)
				if err != nil || n.Internal {
					continue
				}
				for _, s := range n.Subnets {
					if s.Gateway.IsValid() && !routed[s.Gateway.Is4()] && gatewayOfFamily(ep.Gateways, s.Gateway.Is4()).IsValid() {
						o.Gateways = append(o.Gateways, s.Gateway)
						o.DefaultRoute = true
						routed[s.Gateway.Is4()] = true
					}
				}
			}
		}
		return putContainer(tx, c)
	})
}

// gatewayOfFamily returns the gateway of gws of the family, if any.
func gatewayOfFamily(gws []netip.Addr, v4 bool) netip.Addr {
	for _, g := range gws {
		if g.Is4() == v4 {
			return g
		}
	}
	return netip.Addr{}
}

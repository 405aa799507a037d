package engine

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/store"
)

// portsBucket holds who publishes proto/port: host address ("*" for every
// address) → container ID. One small bucket per port keeps the conflict
// check of a wildcard against specific addresses a short list.
func portsBucket(proto portmap.Proto, port uint16) string {
	return "ports/" + string(proto) + "/" + strconv.Itoa(int(port))
}

// hostIPKey is the key of a host address in a ports bucket: "*" for no
// address (both families, as Docker publishes -p PORT:PORT), else the
// address, 0.0.0.0 and :: included: each holds its own family only, so
// that -p 0.0.0.0:P and -p [::]:P of two containers do not collide.
func hostIPKey(a netip.Addr) string {
	if !a.IsValid() {
		return "*"
	}
	return a.Unmap().String()
}

// portSpecs is what a run asks to publish: -p values, and with -P each
// --expose'd port that no -p publishes, once, on a random host port (as
// Docker's -P: the exposed ports are a set).
func portSpecs(o *RunOptions) []portmap.Spec {
	specs := append([]portmap.Spec(nil), o.Publish...)
	if !o.PublishAll {
		return specs
	}
	type key struct {
		proto portmap.Proto
		port  uint16
	}
	done := map[key]bool{}
	for _, s := range o.Publish {
		for p := range s.ContainerPorts() {
			done[key{s.Proto, p}] = true
		}
	}
	for _, s := range o.Expose { // HostIP: config.json's "ip", if any
		for p := range s.ContainerPorts() {
			if k := (key{s.Proto, p}); !done[k] {
				done[k] = true
				specs = append(specs, portmap.Spec{HostIP: s.HostIP, ContainerFirst: p, ContainerLast: p, Proto: s.Proto})
			}
		}
	}
	return specs
}

// defaultHostIP applies the host address ports are published on when -p
// names none: the network's -o host-ip, or for the default network
// config.json's "ip" (dockerd's --ip, which is the default bridge's only).
func (e *Engine) defaultHostIP(o *RunOptions, p *plan) {
	var ip netip.Addr
	var err error
	if len(p.networks) > 0 && p.networks[0].Name == ModeBridge {
		ip, err = netip.ParseAddr(e.cfg.IP)
	}
	if p.mode == "network" && p.networks[0].HostIP.IsValid() {
		ip, err = p.networks[0].HostIP, nil // the network's -o host-ip
	}
	// 0.0.0.0 is the default: every address, the IPv6 ones too on a
	// dual-stack network, as moby has it.
	if !ip.IsValid() || err != nil || ip == netip.IPv4Unspecified() { // Load validated it
		return
	}
	for i := range o.Publish {
		if !o.Publish[i].HostIP.IsValid() {
			o.Publish[i].HostIP = ip
		}
	}
	for i := range o.Expose {
		o.Expose[i].HostIP = ip
	}
}

// readListeners starts reading the host's listening sockets, for the
// ports to publish, and returns what waits for them: the read (~0.05 ms
// here, more on a host with thousands of sockets, while the store lock is
// held) goes on while the store is opened. Without ports there is nothing
// to read (nil).
func readListeners(publishing bool) func() (*portmap.Listeners, error) {
	if !publishing {
		return nil
	}
	var l *portmap.Listeners
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		l, err = portmap.ReadListeners()
	}()
	return func() (*portmap.Listeners, error) {
		<-done
		if err != nil {
			return nil, fmt.Errorf("read the host's listening sockets: %w", err)
		}
		return l, nil
	}
}

// reservePorts chooses host ports for the container's published ports and
// records them, in the transaction that reserves its address, so that two
// runs never get the same host port. A port a host process listens on (as
// listening, from readListeners, reports them) is refused too.
func reservePorts(tx store.Tx, c *Container, specs []portmap.Spec, listening func() (*portmap.Listeners, error)) error {
	if len(specs) == 0 {
		return nil
	}
	if len(c.Endpoints) == 0 {
		return errdefs.Invalid("conflicting options: publishing ports needs a network of the container's own (--network %s has none)", c.Spec.NetworkMode)
	}
	for _, s := range specs {
		if a := s.HostIP.Unmap(); a.Is6() && a.IsLoopback() {
			// 127.0.0.1 works through route_localnet, which IPv6 lacks.
			return errdefs.Invalid("cannot publish on [::1]: the kernel does not forward a connection from IPv6's loopback address to a container (knit has no userland proxy); publish on 127.0.0.1, or on [::] and connect to one of the host's own addresses")
		}
	}
	var held *portmap.Listeners
	if listening != nil {
		var err error
		if held, err = listening(); err != nil {
			return err
		}
	}
	var dnsGateways map[netip.Addr]bool // read when port 53 is asked for
	// Each family's ports go through the network of its default route,
	// as Docker 28's gateway endpoints: the first network's, unless it
	// lacks the family (an IPv6-only network).
	ep4, ep6 := portEndpoint(c, true), portEndpoint(c, false)
	if ep4 == nil {
		// No IPv4: a port published on every address is published on
		// IPv6's, as Docker 28's ([::]:PORT).
		specs = slices.Clone(specs)
		for i := range specs {
			if !specs[i].HostIP.IsValid() {
				specs[i].HostIP = netip.IPv6Unspecified()
			}
		}
	}
	taken := func(ip netip.Addr, proto portmap.Proto, port uint16) (string, bool) {
		var owner string
		_ = tx.List(portsBucket(proto, port), func(k string, v []byte) error {
			held, _ := netip.ParseAddr(k) // "*" parses to the zero address: every address
			if portmap.Overlaps(held, ip) {
				owner = string(v)
			}
			return nil
		})
		if owner != "" {
			return containerName(tx, owner), true
		}
		if held == nil {
			return "", false
		}
		if port == 53 && (!ip.IsValid() || ip.IsUnspecified()) {
			// The embedded DNS server's sockets on the gateways: the
			// firewall keeps their own containers' queries for it.
			if dnsGateways == nil {
				dnsGateways = dnsListenAddrs(tx)
			}
			return held.TakenExcept(ip, proto, port, dnsGateways)
		}
		return held.Taken(ip, proto, port)
	}
	maps, err := portmap.Allocate(specs, taken)
	if err != nil {
		return err
	}
	// On a network whose gateway mode is routed for a family, the port is
	// also open on the container's address of that family, unless it is
	// published on loopback: that is the host's alone (moby#45610).
	mapping := func(ep *Endpoint, m portmap.Mapping, host netip.Addr) (firewall.PortMapping, error) {
		if ep == nil {
			return firewall.PortMapping{}, errdefs.Invalid("cannot publish on %s: no network of the container gives it an address of that family", host)
		}
		cip, err := containerAddrFor(*ep, host)
		if err != nil {
			return firewall.PortMapping{}, err
		}
		var fn firewall.Network
		if n, err := getNetwork(tx, ep.Network); err == nil {
			fn = firewallNetwork(n)
		}
		return firewall.PortMapping{
			Network: ep.Network, HostIP: host, HostPort: m.HostPort, Proto: string(m.Proto),
			ContainerIP: cip, ContainerPort: m.ContainerPort, Open: fn.Routed(cip) && !host.IsLoopback(),
		}, nil
	}
	for _, m := range maps {
		ep := ep4
		if m.HostIP.Unmap().Is6() {
			ep = ep6
		}
		p, err := mapping(ep, m, m.HostIP)
		if err != nil {
			return err
		}
		c.Ports = append(c.Ports, p)
		// A port published on every address is published on the IPv6
		// ones too, as Docker does ([::]:PORT).
		if !m.HostIP.IsValid() && ep6 != nil {
			p, err := mapping(ep6, m, netip.IPv6Unspecified())
			if err != nil {
				return err
			}
			c.Ports = append(c.Ports, p)
		}
		if err := tx.Put(portsBucket(m.Proto, m.HostPort), hostIPKey(m.HostIP), []byte(c.ID)); err != nil {
			return err
		}
	}
	return nil
}

// portEndpoint is the endpoint of c's through which ports of a family
// (v4: IPv4) are published: the one with that family's default route, else
// the first with an address of that family; nil if none has one.
func portEndpoint(c *Container, v4 bool) *Endpoint {
	has := func(ep *Endpoint) bool {
		if v4 {
			return ep.HasIPv4()
		}
		return ep.HasIPv6()
	}
	var first *Endpoint
	for i := range c.Endpoints {
		ep := &c.Endpoints[i]
		if !has(ep) {
			continue
		}
		if ep.routes(v4) {
			return ep
		}
		if first == nil {
			first = ep
		}
	}
	return first
}

// dnsListenAddrs are the addresses the embedded DNS server listens on:
// the gateways of DNS-enabled networks.
func dnsListenAddrs(tx store.Tx) map[netip.Addr]bool {
	addrs := map[netip.Addr]bool{}
	nets, _ := listNetworks(tx) // an error: none left out, the conflict stands
	for _, n := range nets {
		if !n.DNS {
			continue
		}
		for _, s := range n.Subnets {
			if s.Gateway.IsValid() {
				addrs[s.Gateway] = true
			}
		}
	}
	return addrs
}

// containerAddrFor picks the container address of the host address's family.
func containerAddrFor(ep Endpoint, host netip.Addr) (netip.Addr, error) {
	want4 := !host.IsValid() || host.Is4()
	for _, p := range ep.Addrs {
		if p.Addr().Is4() == want4 {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, errdefs.Invalid("cannot publish on %s: network %s gives the container no address of that family", host, ep.Network)
}

func containerName(tx store.Tx, id string) string {
	if name, ok := cniOwner(tx, id); ok {
		return name
	}
	if c, err := getContainer(tx, id); err == nil {
		return "container " + c.Name
	}
	return "container " + id[:min(12, len(id))]
}

// releasePorts deletes the container's host-port records.
func releasePorts(tx store.Tx, c *Container) error {
	for _, p := range c.Ports {
		b := portsBucket(portmap.Proto(p.Proto), p.HostPort)
		keys := []string{hostIPKey(p.HostIP)}
		if p.HostIP.IsUnspecified() {
			keys = append(keys, "*") // how knit before 0.0.0.0 and :: were told apart recorded them
		}
		for _, k := range keys {
			if owner, err := tx.Get(b, k); err == nil && string(owner) == c.ID {
				if err := tx.Delete(b, k); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// publish programs the container's published ports: one batch of map
// elements, whatever the number of ports.
func (e *Engine) publish(c *Container) error {
	if len(c.Ports) == 0 {
		return nil
	}
	if e.fw == nil {
		return errdefs.Invalid("cannot publish ports: the firewall is off (config \"iptables\": false)")
	}
	if err := e.fw.AddPorts(c.ID, c.Ports); err != nil {
		return fmt.Errorf("publish ports: %w", err)
	}
	return forgetDatagramFlows(c.Ports)
}

// publishAndClaim is publish of owner's ports, with the claims on the
// addresses of its endpoints eps (which name their ports) in the same
// batch.
func (e *Engine) publishAndClaim(owner string, ports []firewall.PortMapping, eps []Endpoint) error {
	srcs := claimsOf(eps)
	if len(srcs) == 0 || e.fw == nil {
		return e.publish(&Container{ID: owner, Ports: ports})
	}
	if err := e.fw.AddPortsAndSources(owner, ports, srcs); err != nil {
		return fmt.Errorf("publish ports and claim source addresses: %w", err)
	}
	return forgetDatagramFlows(ports)
}

// forgetDatagramFlows deletes the conntrack entries of the UDP and SCTP
// host ports of ports, so that flows seen before a (un)publish do not keep
// the translation of their first packet. TCP needs none: a new connection
// makes a new entry.
func forgetDatagramFlows(ports []firewall.PortMapping) error {
	var h *link.Handle
	for _, p := range ports {
		proto, ok := map[string]uint8{"udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}[p.Proto]
		if !ok {
			continue
		}
		if h == nil {
			var err error
			if h, err = link.Host(); err != nil {
				return err
			}
			defer h.Close()
		}
		if err := h.ConntrackDeleteDstPort(proto, p.HostPort); err != nil {
			return err
		}
	}
	return nil
}

// unpublish removes them; idempotent.
func (e *Engine) unpublish(c *Container) error {
	if len(c.Ports) == 0 || e.fw == nil {
		return nil
	}
	if err := e.fw.RemovePorts(c.ID, c.Ports); err != nil {
		return fmt.Errorf("unpublish ports: %w", err)
	}
	return forgetDatagramFlows(c.Ports)
}

// Mappings renders a container's published ports as `docker port` does.
func Mappings(c *Container) []portmap.Mapping {
	if !c.Running() {
		return nil // its host ports were released when it stopped, as in Docker's ps and port
	}
	out := make([]portmap.Mapping, len(c.Ports))
	for i, p := range c.Ports {
		out[i] = portmap.Mapping{HostIP: p.HostIP, HostPort: p.HostPort, Proto: portmap.Proto(p.Proto), ContainerPort: p.ContainerPort}
	}
	return out
}

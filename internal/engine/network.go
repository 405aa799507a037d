package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/ipam"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/store"
)

// network returns the named network's record; the default network "bridge"
// is recorded on first use from the configuration, as dockerd does at start.
func (e *Engine) network(name string) (*Network, error) {
	n, err := e.lookupNetwork(name)
	if name != ModeBridge || err == nil && !n.Removing || err != nil && errdefs.KindOf(err) != errdefs.KindNotFound {
		return n, err
	}
	// None yet, or a remake a crash cut short (remakeDefault):
	// createDefaultNetwork finishes that first.
	return e.createDefaultNetwork()
}

func (e *Engine) lookupNetwork(name string) (*Network, error) {
	var n *Network
	err := e.st.View(func(tx store.Tx) (err error) { n, err = getNetwork(tx, name); return err })
	if errors.Is(err, store.ErrNotFound) {
		return nil, errdefs.NotFound("network %s not found", name)
	}
	return n, err
}

// createDefaultNetwork records the "bridge" network, its subnet from
// config.json (defaultSubnet), once a removal of the old one a crash cut
// short is finished (remakeDefault's).
func (e *Engine) createDefaultNetwork() (*Network, error) {
	e.finishRemoval(ModeBridge)
	n := &Network{
		Network: driver.Network{
			ID:       newID(),
			Name:     ModeBridge,
			Driver:   "bridge",
			Bridge:   e.cfg.BridgeName(),
			MTU:      e.cfg.MTUOrDefault(),
			External: e.cfg.Bridge != "",
			Options:  map[string]string{},
		},
		Created:    time.Now().UTC(),
		Masquerade: e.cfg.MasqueradeOn(),
		ICC:        e.cfg.ICCOn(),
	}
	sub, err := e.defaultSubnet()
	if err != nil {
		return nil, err
	}
	n.Subnets = []driver.Subnet{sub}
	err = e.st.Update(func(tx store.Tx) error {
		if cur, err := getNetwork(tx, ModeBridge); err == nil { // a concurrent command won
			if cur.Removing { // or is removing it, or could not finish that
				return networkRemoving(ModeBridge)
			}
			n = cur
			return nil
		}
		return putJSON(tx, bucketNetworks, ModeBridge, n)
	})
	return n, err
}

// defaultNetworkChanged says how config.json now asks for a default
// network other than n ("" when it does not): the bridge, MTU, icc,
// ip-masq, bip, fixed-cidr, default-gateway and default-address-pools. A
// subnet picked from the pools is kept while it is in them and neither bip
// nor fixed-cidr asks for another; a bridge named in the config keeps its
// own address.
func (e *Engine) defaultNetworkChanged(n *Network) string {
	var diffs []string
	differ := func(key string, now, was any) {
		if now != was {
			diffs = append(diffs, fmt.Sprintf("%s %v, was %v", key, now, was))
		}
	}
	differ("bridge", e.cfg.BridgeName(), n.Bridge)
	differ("mtu", e.cfg.MTUOrDefault(), n.MTU)
	differ("icc", e.cfg.ICCOn(), n.ICC)
	differ("ip-masq", e.cfg.MasqueradeOn(), n.Masquerade)
	var cur driver.Subnet
	if len(n.Subnets) > 0 {
		cur = n.Subnets[0]
	}
	switch {
	case e.cfg.Bip != "":
		if want, err := e.defaultPrefix(); err == nil {
			differ("subnet", want.Prefix, cur.Prefix)
			differ("gateway", want.Gateway, cur.Gateway)
			differ("fixed-cidr", want.IPRange, cur.IPRange)
		}
	case e.cfg.FixedCIDR != "":
		// The subnet is fixed-cidr's own or an existing bridge's
		// (defaultPrefix); either holds the range. Checked without the
		// bridge: this runs inside the reservation's transaction.
		if want, err := netip.ParsePrefix(e.cfg.FixedCIDR); err == nil {
			want = want.Masked()
			differ("fixed-cidr", want, cur.IPRange)
			if !cur.Prefix.Contains(want.Addr()) || cur.Prefix.Bits() > want.Bits() {
				differ("subnet", want, cur.Prefix)
			}
		}
	default:
		// Neither: the whole subnet is allocated, and one picked from
		// the pools must still be in them (dockerd picks again at start
		// when default-address-pools is set). A bridge named in the
		// config keeps its own address, pools or not.
		differ("fixed-cidr", netip.Prefix{}, cur.IPRange)
		if e.cfg.Bridge == "" && !slices.ContainsFunc(e.cfg.Pools(), func(p ipam.PoolSpec) bool {
			return p.Base.Contains(cur.Prefix.Addr()) && cur.Prefix.Bits() == p.Size
		}) {
			differ("default-address-pools", "a pool's subnet", cur.Prefix)
		}
	}
	var gw netip.Addr
	if e.cfg.DefaultGateway != "" {
		gw, _ = netip.ParseAddr(e.cfg.DefaultGateway) // Load validated it
	}
	differ("default-gateway", gw, cur.DefaultRoute)
	return strings.Join(diffs, "; ")
}

// defaultSubnet is the default network's subnet, with config.json's
// default-gateway as its containers' default route.
func (e *Engine) defaultSubnet() (driver.Subnet, error) {
	s, err := e.defaultPrefix()
	if err != nil || e.cfg.DefaultGateway == "" {
		return s, err
	}
	gw, _ := netip.ParseAddr(e.cfg.DefaultGateway) // Load validated it
	if !s.Prefix.Contains(gw) {
		return s, errdefs.Invalid("config default-gateway %s is outside the default network's subnet %s", gw, s.Prefix)
	}
	s.DefaultRoute = gw
	return s, nil
}

// defaultPrefix picks the default network's subnet: bip, else an existing
// bridge's address (holding fixed-cidr if given), else fixed-cidr, else
// the first pool subnet that overlaps no host route or nameserver
// (hostReserved) and no network.
func (e *Engine) defaultPrefix() (driver.Subnet, error) {
	if e.cfg.Bip != "" {
		p, err := netip.ParsePrefix(e.cfg.Bip)
		if err != nil {
			return driver.Subnet{}, errdefs.Invalid("config bip %q: %v", e.cfg.Bip, err)
		}
		s := driver.Subnet{Prefix: p.Masked(), Gateway: p.Addr()}
		if e.cfg.FixedCIDR != "" {
			r, _ := netip.ParsePrefix(e.cfg.FixedCIDR) // Load validated it
			s.IPRange = r.Masked()
		}
		return s, nil
	}
	var fixed netip.Prefix
	if e.cfg.FixedCIDR != "" {
		p, err := netip.ParsePrefix(e.cfg.FixedCIDR)
		if err != nil {
			return driver.Subnet{}, errdefs.Invalid("config fixed-cidr %q: %v", e.cfg.FixedCIDR, err)
		}
		fixed = p.Masked()
	}
	// As dockerd: a bridge that already has an IPv4 address (`"bridge"`
	// naming one made by hand, or a knit0 left by a store moved aside)
	// keeps it as the subnet and gateway.
	if s, ok, err := e.existingBridgeSubnet(fixed); err != nil || ok {
		return s, err
	}
	if fixed.IsValid() {
		// Without bip, the range is the bridge's subnet, its first address
		// the gateway: a subnet from the pools would not hold it.
		return driver.Subnet{Prefix: fixed, Gateway: ipam.FirstHost(fixed), IPRange: fixed}, nil
	}
	taken, err := hostReserved()
	if err != nil {
		return driver.Subnet{}, err
	}
	err = e.st.View(func(tx store.Tx) error {
		nets, err := listNetworks(tx)
		for _, n := range nets {
			for _, s := range n.Subnets {
				taken = append(taken, s.Prefix)
			}
		}
		return err
	})
	if err != nil {
		return driver.Subnet{}, err
	}
	p, err := ipam.PickSubnet(e.cfg.Pools(), taken)
	if err != nil {
		return driver.Subnet{}, errdefs.Conflict("no free subnet in the default address pools: %v", err)
	}
	return driver.Subnet{Prefix: p, Gateway: ipam.FirstHost(p)}, nil
}

// firewallNetwork is what the firewall needs to know about n.
func firewallNetwork(n *Network) firewall.Network {
	fn := firewall.Network{
		Name: n.Name, Bridge: n.Bridge, Masquerade: n.Masquerade && !n.Internal,
		ICC: n.ICC, Internal: n.Internal, Routed4: n.Routed, Routed6: n.Routed6, DNS: n.DNS,
	}
	for _, s := range n.Subnets {
		fn.Subnets = append(fn.Subnets, s.Prefix)
	}
	return fn
}

// Masquerades says whether n masquerades any of its subnets: its flag,
// which an internal network and routed families (gateway-mode=routed)
// ignore, as firewallNetwork's rules do.
func (n *Network) Masquerades() bool {
	if !n.Masquerade || n.Internal {
		return false
	}
	return slices.ContainsFunc(n.Subnets, func(s driver.Subnet) bool {
		if s.Prefix.Addr().Is4() {
			return !n.Routed
		}
		return !n.Routed6
	})
}

// ensureNetwork makes (or repairs) the network's kernel objects and turns on
// forwarding, which bridged containers need to reach beyond the host.
//
// It holds the network's lock shared, and network rm holds it exclusively
// while it undoes the kernel objects: a run never re-creates the bridge of
// a network being removed (it re-reads the record under the lock).
func (e *Engine) ensureNetwork(n *Network) error {
	unlock, err := lockFileShared(e.networkLock(n.Name))
	if err != nil {
		return err
	}
	defer unlock()
	if n.UserDefined() {
		cur, err := e.lookupNetwork(n.Name)
		if errdefs.KindOf(err) == errdefs.KindNotFound {
			return networkGone(n.Name) // since the caller looked it up
		}
		if err != nil {
			return err
		}
		if cur.Removing {
			return networkRemoving(n.Name)
		}
		if cur.ID != n.ID { // removed, and another made since
			return networkGone(n.Name)
		}
	}
	d, err := e.driverFor(n)
	if err != nil {
		return err
	}
	// The bridge and the firewall rules are independent (the rules name
	// the bridge): each waits for the kernel on its own goroutine.
	fwErr := make(chan error, 1)
	lost := false // knit's table was flushed: what it held for others too
	if e.fw != nil {
		go func() {
			var err error
			lost, err = e.fw.EnsureNetworkReport(firewallNetwork(n))
			fwErr <- err
		}()
	} else {
		fwErr <- nil
	}
	n.Network.FilterBridged = !n.ICC
	err = d.CreateNetwork(&n.Network)
	ferr := <-fwErr
	if ferr == nil && lost {
		// What the lost table held for the others goes back whatever
		// comes of this network; not this command's failure if it cannot.
		defer func() {
			if err := e.restoreFirewall(n.Name); err != nil {
				fmt.Fprintf(os.Stderr, "knit: knit's nftables table had been flushed; putting back the rules, ports and links of the other networks and containers: %v (the next command tries again)\n", err)
			}
		}()
	}
	if ferr != nil && err == nil {
		return fmt.Errorf("firewall rules of network %s: %w", n.Name, ferr)
	}
	if err != nil {
		return fmt.Errorf("set up network %s: %w", n.Name, err)
	}
	if e.cfg.ForwardingOn() {
		if n.HasIPv4() {
			if err := e.forward(false); err != nil {
				return fmt.Errorf("enable IP forwarding: %w", err)
			}
		}
		if wantsIPv6([]*Network{n}) {
			if err := e.forward(true); err != nil {
				return fmt.Errorf("enable IPv6 forwarding: %w", err)
			}
		}
	}
	return nil
}

// forward turns the host's forwarding on for the family. Off until now, the
// host routed nothing between its interfaces, and knit must not make it a
// router between its other ones (a LAN reaching a VPN through it): what it
// forwards between interfaces none of which is a knit bridge is dropped
// first (DropForeignForwarding, as dockerd's FORWARD policy DROP), unless
// config.json's ip-forward-no-drop says not to. A marker in the exec-root
// (gone at a reboot, with the sysctl) says knit did, for the restore after
// a flush; with ip-forward-no-drop set since, the drop goes.
func (e *Engine) forward(v6 bool) error {
	on, err := link.ForwardingOn(v6)
	if err != nil {
		return err
	}
	if on {
		if e.cfg.IPForwardNoDrop && e.fw != nil && fileExists(e.foreignDropMarker(v6)) {
			if err := e.fw.AllowForeignForwarding(v6); err != nil {
				return err
			}
			return os.Remove(e.foreignDropMarker(v6))
		}
		return nil
	}
	// An interface that forwards on its own: the host routes already,
	// and a drop would cut what its administrator set up.
	drop := e.fw != nil && !e.cfg.IPForwardNoDrop
	if drop {
		routes, err := link.AnyForwarding(v6)
		if err != nil {
			return err
		}
		drop = !routes
	}
	if drop {
		if err := e.prepareExecRoot(); err != nil {
			return err
		}
		if err := os.WriteFile(e.foreignDropMarker(v6), nil, 0o644); err != nil {
			return err
		}
		if err := e.fw.DropForeignForwarding(v6); err != nil {
			return err
		}
	}
	return link.SetForwarding(v6)
}

// foreignDropMarker is the file that says knit turned the family's
// forwarding on and drops what is not its own (forward).
func (e *Engine) foreignDropMarker(v6 bool) string {
	name := "foreign-forward-drop4"
	if v6 {
		name = "foreign-forward-drop6"
	}
	return filepath.Join(e.paths.ExecRoot, name)
}

// restoreForeignDrops puts back, after a flush, the drops knit added as
// it turned forwarding on (forward).
func (e *Engine) restoreForeignDrops() error {
	var errs []error
	for _, v6 := range []bool{false, true} {
		if !e.cfg.IPForwardNoDrop && e.cfg.ForwardingOn() && fileExists(e.foreignDropMarker(v6)) {
			errs = append(errs, e.fw.DropForeignForwarding(v6))
		}
	}
	return errors.Join(errs...)
}

// restoreFirewall puts back, once knit's nftables table was found not in
// place (`nft flush ruleset`, a firewall service's restart), what it held
// beside the rules of network skip, which the caller has just made again:
// the published ports and links of every running container and CNI
// attachment, then the rules of every other network; and once all was
// tried, and every network's rules went back, clears the firewall's loss
// marker, so that a restore cut short is done again by the next command. Each owner's record is read again
// just before its elements go back, under the lock its removal takes (the
// firewall's, the links', the network's): an owner gone since the listing
// is skipped. One whose removal took its ports just before that read, but
// had not yet recorded it, gets them back; their owner gone, prune
// removes them.
func (e *Engine) restoreFirewall(skip string) error {
	var nets, ids []string
	err := e.st.View(func(tx store.Tx) error {
		ns, err := listNetworks(tx)
		if err != nil {
			return err
		}
		for _, n := range ns {
			nets = append(nets, n.Name)
		}
		cs, err := listContainers(tx)
		for _, c := range cs {
			if c.State.Status != StatusExited {
				ids = append(ids, c.ID)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	atts, err := e.CNIAttachments("")
	if err != nil {
		return err
	}
	groupErr := e.groupPorts(nets)
	errs := []error{groupErr}
	for _, id := range ids {
		errs = append(errs, e.restorePorts(id))
	}
	errs = append(errs, e.restoreLinks(ids))
	for _, a := range atts {
		errs = append(errs, e.restoreAttachmentPorts(a.ID))
	}
	netFailed := false
	for _, name := range nets {
		if name != skip {
			err := e.restoreNetworkRules(name)
			netFailed = netFailed || err != nil
			errs = append(errs, err)
		}
	}
	foreignErr := e.restoreForeignDrops()
	errs = append(errs, foreignErr)
	// What fails open keeps the loss noted, and the next command tries
	// everything again: a network left without its rules (nothing keeps
	// the world or other networks out, no ICC), the foreign-forward drop
	// missing. Otherwise the loss is cleared once every owner was tried,
	// even if some failed (they are reported): a port or link missing
	// fails closed, and one that fails every time must not make every
	// command restore everything again. A port left out of the RA guard's
	// group (the one-time repair after the upgrade that added it) keeps
	// it when its group could not be set (errGroupPort), not when a
	// network's ports could not be listed (a bridge that is not one:
	// that network is broken anyway, and would keep it for ever).
	if netFailed || foreignErr != nil || errors.Is(groupErr, errGroupPort) {
		return errors.Join(errs...)
	}
	return errors.Join(append(errs, e.fw.MarkRestored())...)
}

// groupPorts puts the host ends of the veths knit made on the named
// networks' bridges in the RA guard's interface group, firewall.PortGroup,
// where a knit from before the guard did not: the restore that follows the
// upgrade that added the guard (whose table, missing, counts as a loss)
// guards the containers and attachments already running. The driver's
// Strays walk names each port it tagged; keeping all, it removes none.
func (e *Engine) groupPorts(nets []string) error {
	var ports []string
	var errs []error
	for _, name := range nets {
		n, err := e.lookupNetwork(name)
		if err != nil {
			continue // gone since
		}
		d, err := e.driverFor(n)
		if err != nil {
			continue
		}
		_, err = d.Strays(&n.Network, func(hostIf, _ string) bool { ports = append(ports, hostIf); return true })
		errs = append(errs, err)
	}
	if len(ports) == 0 {
		return errors.Join(errs...)
	}
	h, err := link.Host()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("%w: %w", errGroupPort, err))...)
	}
	defer h.Close()
	for _, name := range ports {
		if err := h.LinkSetGroup(name, firewall.PortGroup); err != nil && !link.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%w: %w", errGroupPort, err))
		}
	}
	return errors.Join(errs...)
}

// errGroupPort marks a port groupPorts found and could not put in the
// group: the restore is tried again.
var errGroupPort = errors.New("RA guard group")

// underFirewallLock runs fn with the lock that orders knit's firewall
// changes across processes held (when e.fw takes one), on the firewall
// without it. fn may read the store: no holder of a store transaction
// waits for this lock.
func (e *Engine) underFirewallLock(fn func(fw firewall.Firewall) error) error {
	if l, ok := e.fw.(*lockedFirewall); ok {
		return l.do(func() error { return fn(l.fw) })
	}
	return fn(e.fw)
}

// restorePorts publishes again the ports of container id, and claims
// its addresses again, if it has not exited. Its record is read under the
// firewall lock: a container that took one of its host ports or addresses
// since (after its exit released it) has its elements in place already,
// and is not overwritten.
//
// A container whose namespace is gone is being torn down: its elements,
// which the teardown removes after the namespace, are not put back (its
// address may go to another container next).
func (e *Engine) restorePorts(id string) error {
	return e.underFirewallLock(func(fw firewall.Firewall) error {
		c, err := e.get(id)
		if errdefs.KindOf(err) == errdefs.KindNotFound || err == nil && c.State.Status == StatusExited {
			return nil
		} else if err != nil {
			return err
		}
		srcs := claimsOf(c.Endpoints)
		if len(c.Ports) == 0 && len(srcs) == 0 || c.OwnsNetns && !netns.Mounted(c.Netns) {
			return nil
		}
		var errs []error
		if len(c.Ports) > 0 {
			errs = append(errs, fw.AddPorts(c.ID, c.Ports))
		}
		if len(srcs) > 0 {
			errs = append(errs, fw.AddSources(c.ID, srcs))
		}
		return errors.Join(errs...)
	})
}

// restoreLinks programs again, under the links lock, the links of the
// containers ids that are still running or being set up, as relink does.
func (e *Engine) restoreLinks(ids []string) error {
	unlock, err := e.lockLinks()
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	for _, id := range ids {
		c, err := e.get(id)
		if errdefs.KindOf(err) == errdefs.KindNotFound {
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(c.Links) > 0 && (c.Running() || c.State.Status == StatusCreated) && netns.Mounted(c.Netns) {
			errs = append(errs, e.applyLinksLocked(c, ""))
		}
	}
	return errors.Join(errs...)
}

// restoreAttachmentPorts publishes again the ports of CNI attachment id,
// and claims its address again (for the ports of its pod), if it is
// still recorded, read under the
// firewall lock as restorePorts does. Not under the attachment's lock: a CNI ADD that ensures its
// network holds one of the lock's stripes, which may be id's. A teardown
// removes the ports and the record together under the firewall lock
// (cniTeardown), so what is read here is either both or neither.
func (e *Engine) restoreAttachmentPorts(id string) error {
	return e.underFirewallLock(func(fw firewall.Firewall) error {
		a, pod, err := e.readPod(id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		var errs []error
		if len(a.Ports) > 0 {
			errs = append(errs, fw.AddPorts(a.ID, a.Ports))
		}
		if srcs := podClaims(a, pod); len(srcs) > 0 {
			errs = append(errs, fw.AddSources(a.ID, srcs))
		}
		return errors.Join(errs...)
	})
}

// restoreNetworkRules makes the rules of the named network again, unless
// it is gone or being removed.
func (e *Engine) restoreNetworkRules(name string) error {
	// Held exclusively: the network is being removed (rm, prune), and
	// needs no rules; a restore must not wait for that (up to lockWait,
	// at every command while the loss stays noted).
	unlock, held, err := tryLockFileShared(e.networkLock(name))
	if err != nil || held {
		return err
	}
	defer unlock()
	n, err := e.lookupNetwork(name)
	if errdefs.KindOf(err) == errdefs.KindNotFound || err == nil && n.Removing {
		return nil
	} else if err != nil {
		return err
	}
	return e.fw.EnsureNetwork(firewallNetwork(n))
}

// networkLock is the lock file that orders ensureNetwork and network rm.
func (e *Engine) networkLock(name string) string {
	return filepath.Join(e.paths.DataRoot, "locks", "network-"+name+".lock")
}

// existingBridgeSubnet reads the default bridge's IPv4 addresses, if it
// exists, and makes the default network's subnet of them.
func (e *Engine) existingBridgeSubnet(fixed netip.Prefix) (driver.Subnet, bool, error) {
	addrs, exists, err := bridgeAddrs(e.cfg.BridgeName())
	if err != nil || !exists {
		return driver.Subnet{}, false, err
	}
	s, ok := bridgeAddrSubnet(addrs, fixed)
	return s, ok, nil
}

// bridgeAddrSubnet is dockerd's choice among a bridge's addresses: the first
// IPv4 one (the first holding fixed-cidr, when given), its network the
// subnet, itself the gateway unless it is the network's own address.
func bridgeAddrSubnet(addrs []netip.Prefix, fixed netip.Prefix) (driver.Subnet, bool) {
	for _, a := range addrs {
		if !a.Addr().Is4() || a.Addr().IsLinkLocalUnicast() || a.Bits() > 30 {
			continue
		}
		p := a.Masked()
		if fixed.IsValid() && !(p.Contains(fixed.Addr()) && p.Bits() <= fixed.Bits()) {
			continue
		}
		s := driver.Subnet{Prefix: p, Gateway: a.Addr(), IPRange: fixed}
		if a.Addr() == p.Addr() {
			s.Gateway = ipam.FirstHost(p)
		}
		return s, true
	}
	return driver.Subnet{}, false
}

// hostReserved are the prefixes a new subnet must not overlap: the host's
// routes, and its nameservers, as dockerd's InferReservedNetworks has
// them (a subnet over the resolver the host reaches through its default
// route would cut the host's DNS off).
func hostReserved() ([]netip.Prefix, error) {
	taken, err := link.HostRoutes()
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	for _, ns := range files.ParseResolvConf(commandHostResolv().file).Nameservers {
		ns = ns.Unmap()
		if !ns.IsLoopback() {
			taken = append(taken, netip.PrefixFrom(ns, ns.BitLen()))
		}
	}
	return taken, nil
}

// fileExists reports whether path names a file (of any kind).
func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/ipam"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/store"
)

// NetworkCreateOptions is a `knit network create` request.
type NetworkCreateOptions struct {
	Name       string
	Driver     string // "" means bridge
	Subnets    []netip.Prefix
	Gateways   []netip.Addr
	IPRanges   []netip.Prefix
	Aux        map[string]netip.Addr // --aux-address NAME=IP
	IPv6       bool
	NoIPv4     bool // --ipv4=false: an IPv6-only network (Docker's EnableIPv4 false)
	Internal   bool
	Attachable bool
	Labels     map[string]string
	// Options are driver options (-o KEY=VALUE): Docker's
	// com.docker.network.* names or knit's short ones (see netOptions).
	Options map[string]string
}

// netOptions maps every accepted -o key to knit's short name for it.
var netOptions = map[string]string{
	"bridge": "bridge", "com.docker.network.bridge.name": "bridge",
	"mtu": "mtu", "com.docker.network.driver.mtu": "mtu",
	"icc": "icc", "com.docker.network.bridge.enable_icc": "icc",
	"ip-masq": "ip-masq", "com.docker.network.bridge.enable_ip_masquerade": "ip-masq",
	"host-ip": "host-ip", "com.docker.network.bridge.host_binding_ipv4": "host-ip",
	"gateway-mode":      "gateway-mode",
	"gateway-mode-ipv4": "gateway-mode-ipv4", "com.docker.network.bridge.gateway_mode_ipv4": "gateway-mode-ipv4",
	"gateway-mode-ipv6": "gateway-mode-ipv6", "com.docker.network.bridge.gateway_mode_ipv6": "gateway-mode-ipv6",
	"enable-dns": "enable-dns",
	"ipv6":       "ipv6", "com.docker.network.enable_ipv6": "ipv6",
	"ipv4": "ipv4", "com.docker.network.enable_ipv4": "ipv4",
}

// Predefined networks that are modes, not records.
var predefined = map[string]string{ModeHost: "host", ModeNone: "null"}

var networkNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// predefinedNetwork describes host or none for ls and inspect.
func predefinedNetwork(name string) *Network {
	sum := sha256.Sum256([]byte("knit-predefined-" + name))
	return &Network{Network: driver.Network{ID: hex.EncodeToString(sum[:]), Name: name, Driver: predefined[name], Options: map[string]string{}}}
}

// CreateNetwork records a user-defined network and makes its bridge and
// rules. Invalid or conflicting requests change nothing, but for finishing
// an interrupted removal of a network of the same name.
func (e *Engine) CreateNetwork(o NetworkCreateOptions) (*Network, error) {
	if err := e.CheckFirewall(); err != nil {
		return nil, err
	}
	n, err := e.newNetwork(&o)
	if err != nil {
		return nil, err
	}
	// The default network takes its subnet first, as dockerd's does at start.
	if _, err := e.network(ModeBridge); err != nil {
		return nil, err
	}
	e.finishRemoval(n.Name)
	hostRoutes, err := hostReserved()
	if err != nil {
		return nil, err
	}
	err = e.st.Update(func(tx store.Tx) error {
		if err := e.placeNetwork(tx, n, &o, hostRoutes); err != nil {
			return err
		}
		return putJSON(tx, bucketNetworks, n.Name, n)
	})
	if err != nil {
		return nil, err
	}
	if err := e.ensureNetwork(n); err != nil {
		e.undoCreateNetwork(n)
		return nil, err
	}
	return n, nil
}

// placeNetwork checks, in tx, that n can be recorded (its name free, its
// bridge no other network's, its subnets overlapping none) and picks its
// subnets; hostRoutes are the prefixes a picked subnet avoids. It changes
// nothing: CreateNetwork records n after it, CNI STATUS only asks.
func (e *Engine) placeNetwork(tx store.Tx, n *Network, o *NetworkCreateOptions, hostRoutes []netip.Prefix) error {
	if cur, err := getNetwork(tx, n.Name); err == nil && cur.Removing {
		return errdefs.Conflict("network %s is being removed, and its removal could not be finished: `knit network rm %s` says why", n.Name, n.Name)
	} else if err == nil || n.Name == ModeBridge || predefined[n.Name] != "" {
		return errdefs.Conflict("network with name %s already exists", n.Name)
	}
	nets, err := listNetworks(tx)
	if err != nil {
		return err
	}
	var taken []netip.Prefix
	for _, other := range nets {
		if other.Bridge == n.Bridge {
			return errdefs.Conflict("bridge %s is already used by network %s", n.Bridge, other.Name)
		}
		for _, s := range other.Subnets {
			taken = append(taken, s.Prefix)
		}
	}
	// Looked at under the store's lock: a network rm that used the
	// bridge has taken its gateways away by the time its record is
	// gone, so none of them passes for the administrator's.
	adminAddrs, exists, err := bridgeAddrs(n.Bridge)
	if err != nil {
		return err
	}
	n.External = exists // the administrator's bridge: used, never deleted
	if err := e.pickSubnets(n, o, append(taken, hostRoutes...)); err != nil {
		return err
	}
	for _, s := range n.Subnets {
		if gw := netip.PrefixFrom(s.Gateway, s.Prefix.Bits()); exists && s.Gateway.IsValid() && !slices.Contains(adminAddrs, gw) {
			n.GatewaysAdded = append(n.GatewaysAdded, gw)
		}
	}
	// An explicit subnet may overlap a host route (the administrator
	// knows best) but never another network.
	for _, other := range nets {
		for _, s := range other.Subnets {
			for _, mine := range n.Subnets {
				if mine.Prefix.Overlaps(s.Prefix) {
					return errdefs.Conflict("invalid pool request: Pool overlaps with other one on this address space (%s overlaps with subnet %s of network %s)", mine.Prefix, s.Prefix, other.Name) // dockerd's words first
				}
			}
		}
	}
	return nil
}

// bridgeAddrs reports whether a bridge called name exists, and its
// addresses. A link of another kind by that name, or a failure to look,
// refuses the network: taking the administrator's bridge for one of knit's
// own would delete it with the network.
func bridgeAddrs(name string) (addrs []netip.Prefix, exists bool, err error) {
	h, err := link.Host()
	if err != nil {
		return nil, false, fmt.Errorf("look for bridge %s: %w", name, err)
	}
	defer h.Close()
	br, err := h.BridgeGet(name)
	switch {
	case link.IsNotFound(err):
		return nil, false, nil
	case errdefs.KindOf(err) == errdefs.KindConflict:
		return nil, false, errdefs.Conflict("cannot use %s as the network's bridge: %v; choose another name (-o bridge=)", name, err)
	case err != nil:
		return nil, false, fmt.Errorf("look for bridge %s: %w", name, err)
	}
	if addrs, err = h.AddrList(br.Index); err != nil {
		return nil, false, fmt.Errorf("addresses of bridge %s: %w", name, err)
	}
	return addrs, true, nil
}

// undoCreateNetwork removes the network n this command recorded but could
// not set up, the way `network rm` does (marked Removing, then
// finishRemoveNetwork), as long as the record under its name is still n
// and no `network rm` has marked it already: one may have removed it, and
// another `network create` made a network of the same name since, whose
// bridge and record are not ours to delete.
func (e *Engine) undoCreateNetwork(n *Network) {
	ours := false
	_ = e.st.Update(func(tx store.Tx) error {
		cur, err := getNetwork(tx, n.Name)
		if ours = err == nil && cur.ID == n.ID && !cur.Removing; !ours {
			return nil
		}
		cur.Removing = true
		return putJSON(tx, bucketNetworks, n.Name, cur)
	})
	if ours {
		_ = e.finishRemoveNetwork(n)
	}
}

// finishRemoval finishes the removal of the network called name if it is
// marked Removing: a `network rm` killed half-way would otherwise keep the
// name taken until a prune. A removal under way is waited for (its lock),
// then found done. A removal that fails again is left to the conflict it
// causes, whose message says how to see why. Other networks' interrupted
// removals are left to their own name's create, rm or a prune: waiting on
// them would let one stopped `network rm` stall every create.
func (e *Engine) finishRemoval(name string) {
	if n, err := e.lookupNetwork(name); err == nil && n.Removing {
		_ = e.finishRemoveNetwork(n)
	}
}

// stillRecorded reports whether n is still the network recorded under its
// name (read errors count as yes: the caller goes on and fails there).
func (e *Engine) stillRecorded(n *Network) bool {
	still := true
	_ = e.st.View(func(tx store.Tx) error { still = recordedAs(tx, n); return nil })
	return still
}

// recordedAs reports whether the network recorded under n's name is n.
func recordedAs(tx store.Tx, n *Network) bool {
	cur, err := getNetwork(tx, n.Name)
	return err == nil && cur.ID == n.ID
}

// hasOption reports whether opts sets the option known as key, under any
// of its names.
func hasOption(opts map[string]string, key string) bool {
	for k := range opts {
		if netOptions[k] == key {
			return true
		}
	}
	return false
}

// newNetwork validates o and turns it into a record without subnets.
func (e *Engine) newNetwork(o *NetworkCreateOptions) (*Network, error) {
	if o.Name == "" {
		return nil, errdefs.Invalid("network create needs a network name")
	}
	if !networkNameRE.MatchString(o.Name) || len(o.Name) > 64 {
		return nil, errdefs.Invalid("invalid network name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 64 characters", o.Name)
	}
	if o.Driver == "" {
		o.Driver = "bridge"
	}
	if o.Driver != "bridge" {
		return nil, errdefs.Invalid("network driver %q is not supported yet: use bridge", o.Driver)
	}
	n := &Network{
		Network: driver.Network{
			ID: newID(), Name: o.Name, Driver: o.Driver, MTU: e.cfg.MTUOrDefault(),
			Internal: o.Internal, Options: map[string]string{},
		},
		Created: time.Now().UTC(), Labels: o.Labels, Masquerade: true, ICC: true,
		IPv6: o.IPv6, Attachable: o.Attachable, DNS: true,
	}
	var ipv4Opts, ipv6Opts []bool // the ipv4 and ipv6 options given, decided once the subnets are read
	for k, v := range o.Options {
		n.Options[k] = v
		key, ok := netOptions[k]
		if !ok {
			return nil, errdefs.Invalid("unknown network option %q: known options are bridge, mtu, icc, ip-masq, host-ip, gateway-mode, gateway-mode-ipv4, gateway-mode-ipv6, enable-dns, ipv4, ipv6 (or their com.docker.network.* names)", k)
		}
		var err error
		switch key {
		case "bridge":
			if v == "" || len(v) > 15 || strings.ContainsAny(v, "/ \t\n\"\\:") {
				return nil, errdefs.Invalid("invalid bridge name %q: 1 to 15 characters without blanks, slashes or colons", v)
			}
			n.Bridge = v
		case "mtu":
			n.MTU, err = strconv.Atoi(v)
			if err != nil || n.MTU < 68 || n.MTU > 65535 {
				return nil, errdefs.Invalid("invalid mtu %q: want a number between 68 and 65535", v)
			}
		case "icc":
			n.ICC, err = parseBool(k, v)
		case "ip-masq":
			n.Masquerade, err = parseBool(k, v)
		case "enable-dns":
			n.DNS, err = parseBool(k, v)
		case "ipv6": // Docker's com.docker.network.enable_ipv6, as --ipv6
			var on bool
			if on, err = parseBool(k, v); err == nil {
				ipv6Opts = append(ipv6Opts, on)
			}
		case "ipv4": // Docker's com.docker.network.enable_ipv4, as --ipv4
			var on bool
			if on, err = parseBool(k, v); err == nil {
				ipv4Opts = append(ipv4Opts, on)
			}
		case "host-ip":
			if n.HostIP, err = netip.ParseAddr(v); err != nil {
				return nil, errdefs.Invalid("invalid host-ip %q: not an IP address", v)
			}
			n.HostIP = n.HostIP.Unmap() // ::ffff:a.b.c.d is IPv4's
		case "gateway-mode", "gateway-mode-ipv4", "gateway-mode-ipv6":
			var routed bool
			switch v {
			case "nat":
			case "routed":
				routed = true
			default:
				return nil, errdefs.Invalid("invalid %s %q: want nat or routed (knit has no nat-unprotected or isolated mode)", k, v)
			}
			// gateway-mode sets both families, but not one that has an
			// option of its own (the map has no order).
			if key == "gateway-mode-ipv4" || key == "gateway-mode" && !hasOption(o.Options, "gateway-mode-ipv4") {
				n.Routed = routed
			}
			if key == "gateway-mode-ipv6" || key == "gateway-mode" && !hasOption(o.Options, "gateway-mode-ipv6") {
				n.Routed6 = routed
			}
		}
		if err != nil {
			return nil, err
		}
	}
	var v4, v6 int
	for _, p := range o.Subnets {
		if p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return nil, errdefs.Invalid("invalid subnet %s", p)
		}
		if p != p.Masked() {
			return nil, errdefs.Invalid("invalid subnet %s: it has host bits set (did you mean %s?)", p, p.Masked())
		}
		if p.Addr().Is4() {
			v4++
			if p.Bits() > 30 {
				return nil, errdefs.Invalid("invalid subnet %s: too small for a gateway and a container (at most /30)", p)
			}
		} else {
			v6++
			o.IPv6 = true
			if p.Bits() > 126 {
				return nil, errdefs.Invalid("invalid subnet %s: too small (at most /126)", p)
			}
		}
	}
	if v4 > 1 || v6 > 1 {
		return nil, errdefs.Invalid("at most one --subnet per address family")
	}
	// An ipv6 option false refuses what asks for IPv6 (--ipv6, an IPv6
	// --subnet, the other option true); true is --ipv6.
	var on, off bool
	for _, v := range ipv6Opts {
		on, off = on || v, off || !v
	}
	if off && (on || o.IPv6) {
		return nil, errdefs.Invalid("conflicting options: ipv6 (com.docker.network.enable_ipv6) false, but IPv6 is asked for (--ipv6, an IPv6 --subnet or the option true)")
	}
	o.IPv6 = o.IPv6 || on
	n.IPv6 = o.IPv6
	// IPv4 is on unless --ipv4=false or an ipv4 option false says
	// otherwise; the two must agree.
	on, off = false, o.NoIPv4
	for _, v := range ipv4Opts {
		on, off = on || v, off || !v
	}
	switch {
	case on && off:
		return nil, errdefs.Invalid("conflicting options: ipv4 (com.docker.network.enable_ipv4) and --ipv4 disagree")
	case off && !n.IPv6:
		return nil, errdefs.Invalid("IPv4 or IPv6 must be enabled: with --ipv4=false, give --ipv6 (or an IPv6 --subnet)")
	case off && v4 > 0:
		return nil, errdefs.Invalid("invalid --subnet: an IPv4 subnet with IPv4 disabled (--ipv4=false)")
	case off && n.HostIP.Is4():
		return nil, errdefs.Invalid("invalid host-ip %s: the network has no IPv4 (--ipv4=false)", n.HostIP)
	}
	o.NoIPv4 = off
	if n.IPv6 && n.MTU < 1280 {
		// The kernel takes IPv6 off a link below it: the bridge would
		// fail to get its gateway, with an error that does not say why.
		return nil, errdefs.Invalid("invalid mtu %d with IPv6: IPv6 needs at least 1280", n.MTU)
	}
	for i, g := range o.Gateways {
		if !slices.ContainsFunc(o.Subnets, func(p netip.Prefix) bool { return p.Contains(g) }) {
			return nil, errdefs.Invalid("invalid --gateway %s: it is in no --subnet", g)
		}
		for _, h := range o.Gateways[:i] {
			if slices.ContainsFunc(o.Subnets, func(p netip.Prefix) bool { return p.Contains(g) && p.Contains(h) }) {
				return nil, errdefs.Invalid("invalid --gateway %s: subnet already has gateway %s", g, h)
			}
		}
	}
	for name, a := range o.Aux {
		if !slices.ContainsFunc(o.Subnets, func(p netip.Prefix) bool { return p.Contains(a) }) {
			return nil, errdefs.Invalid("invalid --aux-address %s=%s: it is in no --subnet", name, a)
		}
	}
	for i, r := range o.IPRanges {
		if r != r.Masked() {
			return nil, errdefs.Invalid("invalid --ip-range %s: it has host bits set (did you mean %s?)", r, r.Masked())
		}
		if !slices.ContainsFunc(o.Subnets, func(p netip.Prefix) bool { return p.Bits() <= r.Bits() && p.Contains(r.Addr()) }) {
			return nil, errdefs.Invalid("invalid --ip-range %s: it is in no --subnet", r)
		}
		for _, q := range o.IPRanges[:i] {
			if q.Addr().Is4() == r.Addr().Is4() {
				return nil, errdefs.Invalid("invalid --ip-range %s: at most one range per subnet", r)
			}
		}
	}
	if n.Bridge == "" {
		n.Bridge = "br-" + n.ID[:12]
	}
	return n, nil
}

// CheckNewNetwork says whether CreateNetwork would refuse o (but for a
// removal of a network of that name it would finish first), changing
// nothing: CNI STATUS's answer for a network ADD would create.
func (e *Engine) CheckNewNetwork(o NetworkCreateOptions) error {
	n, err := e.newNetwork(&o)
	if err != nil {
		return err
	}
	// The default network's subnet and bridge count, as in CreateNetwork
	// (which records it first, as dockerd does at start).
	if _, err := e.network(ModeBridge); err != nil {
		return err
	}
	hostRoutes, err := hostReserved()
	if err != nil {
		return err
	}
	return e.st.View(func(tx store.Tx) error { return e.placeNetwork(tx, n, &o, hostRoutes) })
}

func parseBool(key, v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, errdefs.Invalid("invalid value %q for network option %s: want true or false", v, key)
	}
	return b, nil
}

// pickSubnets fills n.Subnets from o, taking free subnets from the default
// pools for families o asks for without a subnet. taken holds the other
// networks' subnets and the host's routes.
func (e *Engine) pickSubnets(n *Network, o *NetworkCreateOptions, taken []netip.Prefix) error {
	fams := []struct {
		v6    bool
		want  bool
		pools []ipam.PoolSpec
	}{{false, !o.NoIPv4, e.cfg.Pools()}, {true, o.IPv6, e.cfg.Pools6()}}
	for _, f := range fams {
		if !f.want {
			continue
		}
		i := slices.IndexFunc(o.Subnets, func(p netip.Prefix) bool { return p.Addr().Is6() == f.v6 })
		var s driver.Subnet
		if i >= 0 {
			s.Prefix = o.Subnets[i]
		} else {
			p, err := ipam.PickSubnet(f.pools, taken)
			if err != nil {
				return errdefs.Conflict("no free subnet in the default address pools: %v", err)
			}
			s.Prefix = p
		}
		s.Gateway = ipam.FirstHost(s.Prefix)
		for _, g := range o.Gateways {
			if s.Prefix.Contains(g) {
				s.Gateway = g
			}
		}
		if s.Gateway == s.Prefix.Addr() {
			return errdefs.Invalid("invalid --gateway %s: it is the subnet's network address", s.Gateway)
		}
		if b, ok := ipam.Broadcast(s.Prefix); ok && s.Gateway == b {
			return errdefs.Invalid("invalid --gateway %s: it is the subnet's broadcast address", s.Gateway)
		}
		for _, r := range o.IPRanges {
			if s.Prefix.Contains(r.Addr()) {
				s.IPRange = r.Masked()
			}
		}
		for name, a := range o.Aux {
			if !s.Prefix.Contains(a) {
				continue
			}
			if a == s.Gateway {
				return errdefs.Invalid("invalid --aux-address %s=%s: it is the gateway", name, a)
			}
			if s.Aux == nil {
				s.Aux = map[string]netip.Addr{}
			}
			s.Aux[name] = a
		}
		n.Subnets = append(n.Subnets, s)
		taken = append(taken, s.Prefix)
	}
	return nil
}

// Networks lists every network, the predefined ones included, by name.
func (e *Engine) Networks() ([]*Network, error) {
	if _, err := e.network(ModeBridge); err != nil {
		return nil, err
	}
	var nets []*Network
	if err := e.st.View(func(tx store.Tx) (err error) { nets, err = listNetworks(tx); return err }); err != nil {
		return nil, err
	}
	nets = append(nets, predefinedNetwork(ModeHost), predefinedNetwork(ModeNone))
	sort.Slice(nets, func(i, j int) bool { return nets[i].Name < nets[j].Name })
	return nets, nil
}

// NetworkByRef returns a network by name, full ID or unique ID prefix.
func (e *Engine) NetworkByRef(ref string) (*Network, error) {
	for name := range predefined {
		if n := predefinedNetwork(name); ref == name || len(ref) >= 12 && strings.HasPrefix(n.ID, ref) {
			return n, nil
		}
	}
	if ref == ModeBridge {
		return e.network(ModeBridge)
	}
	var n *Network
	err := e.st.View(func(tx store.Tx) (err error) { n, err = lookupNetworkRef(tx, ref); return err })
	return n, err
}

func lookupNetworkRef(tx store.Tx, ref string) (*Network, error) {
	if ref == "" {
		return nil, errdefs.Invalid("network name or ID must not be empty")
	}
	if n, err := getNetwork(tx, ref); err == nil || !errors.Is(err, store.ErrNotFound) {
		return n, err
	}
	nets, err := listNetworks(tx)
	if err != nil {
		return nil, err
	}
	var matches []*Network
	for _, n := range nets {
		if strings.HasPrefix(n.ID, ref) {
			matches = append(matches, n)
		}
	}
	switch len(matches) {
	case 0:
		return nil, errdefs.NotFound("network %s not found", ref)
	case 1:
		return matches[0], nil
	}
	return nil, errdefs.Invalid("network %s is ambiguous (%d matches found)", ref, len(matches))
}

// NetworkContainers returns the containers with an endpoint on the named
// network: those created or running (an exited container has released its
// address).
func (e *Engine) NetworkContainers(name string) ([]*Container, error) {
	if err := e.Reconcile(); err != nil {
		return nil, err
	}
	var out []*Container
	err := e.st.View(func(tx store.Tx) error {
		ids := map[string]bool{}
		if err := tx.List(ipamBucket(name), func(_ string, v []byte) error { ids[string(v)] = true; return nil }); err != nil {
			return err
		}
		for id := range ids {
			c, err := getContainer(tx, id)
			if err != nil {
				continue
			}
			out = append(out, c)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// RemoveNetwork deletes a user-defined network that no container uses:
// its bridge, its rules and its record, which frees its subnets.
func (e *Engine) RemoveNetwork(ref string) error {
	if err := e.CheckFirewall(); err != nil {
		return err
	}
	if err := e.Reconcile(); err != nil {
		return err
	}
	var n *Network
	if p, err := e.NetworkByRef(ref); err == nil && predefined[p.Name] != "" {
		ref = p.Name
	}
	err := e.st.Update(func(tx store.Tx) (err error) {
		if ref == ModeBridge || predefined[ref] != "" {
			return errdefs.Invalid("%s is a pre-defined network and cannot be removed", ref)
		}
		if n, err = lookupNetworkRef(tx, ref); err != nil {
			return err
		}
		if !n.UserDefined() {
			return errdefs.Invalid("%s is a pre-defined network and cannot be removed", n.Name)
		}
		if users := networkUsers(tx, n.Name); len(users) > 0 {
			return errdefs.Conflict("error while removing network: network %s has active endpoints (%s): stop or disconnect them first", n.Name, strings.Join(users, ", "))
		}
		n.Removing = true // runs and connects refuse it from now on
		return putJSON(tx, bucketNetworks, n.Name, n)
	})
	if err != nil {
		return err
	}
	return e.finishRemoveNetwork(n)
}

// removeUnusedNetwork removes n, which a failed CNI ADD made, unless it has
// users by now (another ADD's address) or is no longer the network of its
// name.
func (e *Engine) removeUnusedNetwork(n *Network) error {
	err := e.st.Update(func(tx store.Tx) error {
		if !recordedAs(tx, n) || len(networkUsers(tx, n.Name)) > 0 {
			return errKeep
		}
		cur, err := getNetwork(tx, n.Name)
		if err != nil {
			return err
		}
		cur.Removing = true
		return putJSON(tx, bucketNetworks, cur.Name, cur)
	})
	if errors.Is(err, errKeep) {
		return nil
	}
	if err != nil {
		return err
	}
	return e.finishRemoveNetwork(n)
}

// errKeep ends a transaction that finds nothing to change.
var errKeep = errors.New("keep")

// errNetworkRemoving and errNetworkGone mark the error of a command that
// found its network being removed, or gone, after it had looked it up:
// one that makes the network on first use (CNI ADD) can make it again.
var (
	errNetworkRemoving = errors.New("is being removed")
	errNetworkGone     = errors.New("was removed meanwhile")
)

// networkRemoving is the error for network name found being removed.
func networkRemoving(name string) error {
	return errdefs.Conflict("network %s %w", name, errNetworkRemoving)
}

// networkGone is the error for network name found gone since its lookup:
// not found, as for a network that never was.
func networkGone(name string) error {
	return errdefs.NotFound("network %s %w", name, errNetworkGone)
}

// removedMeanwhile says whether err is networkRemoving's or networkGone's.
func removedMeanwhile(err error) bool {
	return errors.Is(err, errNetworkRemoving) || errors.Is(err, errNetworkGone)
}

// finishRemoveNetwork undoes the network in the kernel, then forgets it.
// A crash in between leaves the record marked Removing for a prune.
func (e *Engine) finishRemoveNetwork(n *Network) (err error) {
	unlock, err := lockFile(e.networkLock(n.Name))
	if err != nil {
		return err
	}
	forgotten := false
	defer func() {
		// Gone, under its exclusive lock: its lock file goes too, as the
		// last thing done under it, or one would be left for every
		// network name ever used.
		if forgotten {
			removeLockFile(e.networkLock(n.Name))
		}
		unlock()
	}()
	// Another removal (a prune after a crash, say) may have finished it
	// and a network of the same name been made since: its bridge, rules
	// and record are not ours.
	if !e.stillRecorded(n) {
		return nil
	}
	if err := e.removeNetworkKernel(n); err != nil {
		return err
	}
	err = e.st.Update(func(tx store.Tx) error {
		if !recordedAs(tx, n) {
			return nil
		}
		var addrs []string
		if err := tx.List(ipamBucket(n.Name), func(k string, _ []byte) error { addrs = append(addrs, k); return nil }); err != nil {
			return err
		}
		for _, a := range addrs {
			if err := tx.Delete(ipamBucket(n.Name), a); err != nil {
				return err
			}
		}
		if err := forgetIPAMNext(tx, n.Name); err != nil {
			return err
		}
		return tx.Delete(bucketNetworks, n.Name)
	})
	if err != nil {
		return err
	}
	forgotten = true
	if !n.DNS {
		return nil // never in the DNS server's records
	}
	return e.syncDNS()
}

func (e *Engine) removeNetworkKernel(n *Network) error {
	if e.fw != nil {
		if err := e.fw.RemoveNetwork(n.Name); err != nil {
			return err
		}
	}
	d, err := e.driverFor(n)
	if err != nil {
		return err
	}
	return d.DeleteNetwork(&n.Network)
}

// networkUsers names the containers holding an address on the network.
func networkUsers(tx store.Tx, network string) []string {
	var users []string
	_ = tx.List(ipamBucket(network), func(_ string, v []byte) error {
		name := strings.TrimPrefix(containerName(tx, string(v)), "container ")
		if !slices.Contains(users, name) {
			users = append(users, name)
		}
		return nil
	})
	sort.Strings(users)
	return users
}

// PruneNetworks removes every user-defined network no container uses that
// match selects (nil: all of them) and returns their names.
func (e *Engine) PruneNetworks(match func(*Network) bool) ([]string, error) {
	if err := e.CheckFirewall(); err != nil {
		return nil, err
	}
	if err := e.Reconcile(); err != nil {
		return nil, err
	}
	var nets []*Network
	if err := e.st.View(func(tx store.Tx) (err error) { nets, err = listNetworks(tx); return err }); err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, n := range nets {
		if n.Name == ModeBridge && n.Removing { // a remake cut short (remakeDefault)
			errs = append(errs, e.finishRemoveNetwork(n))
			continue
		}
		if !n.UserDefined() || match != nil && !match(n) {
			continue
		}
		err := e.RemoveNetwork(n.Name)
		switch {
		case err == nil:
			removed = append(removed, n.Name)
		case errdefs.KindOf(err) == errdefs.KindConflict, errdefs.KindOf(err) == errdefs.KindNotFound:
			// in use, or removed meanwhile by another command
		default:
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

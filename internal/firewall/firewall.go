// Package firewall states what knit needs from the host's packet filter in
// terms of networks and published ports, never in terms of rules. A backend (nftables/) turns that intent into rules; the
// recording stub (firewalltest/) lets callers be tested without root.
//
// Invariants:
//   - Callers speak intent: a Network says what its containers may do, not
//     how. Which tables, chains and rules express it is the backend's choice.
//   - Every call is all-or-nothing: a backend applies the changes of one
//     call in one atomic step, so no packet sees half a network.
//   - EnsureNetwork both installs and repairs, and calling it twice leaves
//     one copy; RemoveNetwork removes exactly what EnsureNetwork added for
//     that network name and nothing else, and is idempotent.
//   - The host's own traffic is never affected: backends add only
//     accept-by-default chains in tables they own, and match only traffic of
//     knit's bridges and subnets, or of published host ports; but for
//     DropForeignForwarding, which keeps a host that forwarded nothing
//     until knit turned forwarding on from routing between its other
//     interfaces.
//   - Containers are reachable from outside their bridge only through
//     published ports (on a routed network also on their own addresses,
//     PortMapping.Open), networks never reach each
//     other, and with ICC off containers of one network cannot talk except
//     through the links AddLinks allows.
//   - Published ports are data, not rules: AddPorts and RemovePorts change
//     elements of maps that a fixed set of rules looks up, so the work per
//     packet does not grow with the number of mappings. Each element carries
//     its owner (a container ID), so Owners lets a prune find strays.
//   - Links are data too: with ICC off, AddLinks lets one container open
//     connections to chosen ports of another (docker's --link), as elements
//     of sets that one shared rule per family looks up; replies pass as
//     for any allowed connection. Each element carries its owner (the
//     linking container's ID), which LinkOwners reports for a prune.
//   - Administrators' own rules (the nftables backend's chain knit-user) are
//     never flushed or rewritten by knit, and are consulted first.
//   - Containers are not IPv6 routers to each other: router advertisements
//     and redirects that enter a bridge from a port in interface group
//     PortGroup are dropped, whatever the network says.
//   - No container sends as another: an address claimed with AddSources
//     is the source (IP), sender (ARP) or target (neighbour advertisement)
//     of nothing from another owner's port. Claims are data, elements
//     tagged with their owner as ports and links are.
package firewall

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/knit-dev/knit/internal/errdefs"
)

// EmbeddedDNS is where a container asks knit's embedded DNS server, as
// Docker's containers do: 127.0.0.11, port 53, UDP and TCP (redirected in
// its namespace to the server on one of its networks' gateways).
var EmbeddedDNS = netip.MustParseAddr("127.0.0.11")

// PortGroup is the interface group (`ip link set DEV group N`) of the
// host end of every container's veth: the firewall tells containers'
// ports from other ports of a bridge by it. "knit" in ASCII.
const PortGroup uint32 = 0x6b6e6974

// Network is what the firewall must know about one knit network.
type Network struct {
	// Name identifies the network's rules: backends tag everything they add
	// with it, so that RemoveNetwork and a prune find exactly those.
	Name string
	// Bridge is the kernel bridge the network's containers hang off.
	Bridge string
	// Subnets are the network's address ranges, at most one per family.
	Subnets []netip.Prefix
	// Masquerade rewrites the source address of traffic that leaves the
	// network through another interface to that interface's address.
	Masquerade bool
	// ICC allows containers on the same network to talk to each other.
	// Traffic between two ports of one bridge is switched, not routed; the
	// host's br_netfilter makes it pass the forward hook, where ICC=false
	// drops it. Without br_netfilter ICC=false is not enforced.
	ICC bool
	// Internal cuts the network off from everything but itself: no traffic
	// is forwarded between its bridge and any other interface, and nothing
	// is masqueraded.
	Internal bool
	// Routed4 and Routed6 are Docker's gateway mode "routed" for each
	// family: no masquerade for that family's subnet, and the containers'
	// published ports are also reachable on their own addresses (for hosts
	// that route the subnet to this one; see PortMapping.Open). Otherwise,
	// and for every other port, new connections into the bridge that were
	// not destination-NATed by a port mapping are dropped.
	Routed4, Routed6 bool
	// DNS: the embedded DNS server answers on the bridge's own addresses,
	// port 53, which no published port takes from the network's own
	// containers.
	DNS bool `json:",omitempty"`
}

// Routed reports whether the gateway mode of addr's family is routed.
func (n Network) Routed(addr netip.Addr) bool {
	if addr.Unmap().Is4() {
		return n.Routed4
	}
	return n.Routed6
}

// PortMapping publishes a container's port on the host.
type PortMapping struct {
	// Network is the knit network the container's address belongs to.
	Network string
	// HostIP is the host address the port is published on; the zero Addr
	// (or 0.0.0.0, ::) means every host address of ContainerIP's family,
	// loopback included. A loopback HostIP is reachable from the host only.
	HostIP   netip.Addr
	HostPort uint16
	// Proto is "tcp", "udp" or "sctp".
	Proto         string
	ContainerIP   netip.Addr
	ContainerPort uint16
	// Open also lets connections reach ContainerIP:ContainerPort directly
	// from outside the bridge: the network's gateway mode for the
	// container address's family is routed.
	Open bool `json:",omitempty"`
}

// Link lets one container open connections to one port of another on the
// same network even with ICC off (docker's --link): From may connect to
// To:Port over Proto, and nothing else is allowed by it. Replies, and only
// they, pass back.
type Link struct {
	// Network is the knit network both addresses belong to; the caller
	// links containers of one network only.
	Network  string
	From, To netip.Addr
	// Proto is "tcp", "udp" or "sctp".
	Proto string
	Port  uint16
}

// Source says that a container's bridge port (the host end of its veth,
// in interface group PortGroup) may send from Addr, one of the same
// container's addresses, which then no port of another container may
// send from (nor claim by ARP or neighbour advertisement): the embedded
// DNS server tells its clients by their address, and links and ICC's
// exceptions allow by address. A container on two networks may send from
// either address out of either port (a reply routed out of the other
// network). Addresses nobody claims (a namespace a container routes for)
// pass as before.
type Source struct {
	Port string
	Addr netip.Addr
}

// Validate reports whether s can be claimed; the error is KindInvalid.
func (s Source) Validate() error {
	if s.Port == "" || len(s.Port) >= 16 || strings.ContainsAny(s.Port, "/ \t\n\x00") {
		return errdefs.Invalid("source %s: invalid interface name", s)
	}
	return ValidateClaim(s.Addr)
}

// ValidateClaim reports whether a can be a container's claimed address;
// the error is KindInvalid.
func ValidateClaim(a netip.Addr) error {
	if !a.IsValid() || a.IsUnspecified() || a.Is4In6() || a.Zone() != "" || a.IsLoopback() || a.IsMulticast() {
		return errdefs.Invalid("source address %s: invalid container address", a)
	}
	return nil
}

// String renders s as PORT=ADDR.
func (s Source) String() string { return s.Port + "=" + s.Addr.String() }

// Firewall installs and removes the packet-filter state of knit's networks.
type Firewall interface {
	// EnsureNetwork installs (or repairs) the network's rules in ONE atomic
	// batch; knit's own tables are created if missing.
	EnsureNetwork(n Network) error
	// EnsureNetworkReport is EnsureNetwork that also reports whether
	// knit's shared objects (tables, chains, sets, shared rules) were found
	// not in place, by this call or any other of any process since the last
	// MarkRestored (an `nft flush ruleset`, a firewall service's restart,
	// which flushes them): lost is then true, and what they held for other
	// networks, published ports and links is gone too, for the caller to
	// put back.
	EnsureNetworkReport(n Network) (lost bool, err error)
	// MarkRestored says that the caller has put back what a loss took:
	// EnsureNetworkReport reports none until the next.
	MarkRestored() error
	// NoteLost records a loss of the caller's own: elements it removed and
	// could not put back. EnsureNetworkReport then reports it, and its
	// caller puts everything back.
	NoteLost() error
	// RemoveNetwork deletes exactly what EnsureNetwork added for the named
	// network, atomically. Idempotent.
	RemoveNetwork(name string) error
	// AddPorts publishes ports for owner (a container ID) in ONE atomic
	// batch. Mappings already in place are left alone, so a second call
	// writes nothing. A mapping of the same host address, protocol and port
	// that is in place for another owner is replaced: the caller (which
	// allocates host ports) is the authority on who holds a port.
	AddPorts(owner string, ports []PortMapping) error
	// RemovePorts unpublishes owner's ports in one atomic batch (all of
	// them when ports is nil, for a prune that knows only the owner); mappings
	// missing, or held by another owner, are skipped. Idempotent.
	RemovePorts(owner string, ports []PortMapping) error
	// Owners returns the owners that have mappings in place, sorted, so
	// that a prune can remove those of containers that no longer exist.
	Owners() ([]string, error)
	// AddLinks allows owner's links (owner is the linking container's ID)
	// in ONE atomic batch. Links already in place are left alone, so a
	// second call writes nothing; one in place for another owner is
	// replaced.
	AddLinks(owner string, links []Link) error
	// RemoveLinks removes owner's links in one atomic batch (all of them
	// when links is nil); links missing, or held by another owner, are
	// skipped. Idempotent.
	RemoveLinks(owner string, links []Link) error
	// Networks returns the names of the networks that have rules in place,
	// sorted, so that a prune can remove those of networks that no longer
	// exist.
	Networks() ([]string, error)
	// SetLinks makes owner's links exactly links in ONE atomic batch: its
	// others are removed and the missing added (one in place for another
	// owner replaced), so a link it keeps is never absent in between.
	SetLinks(owner string, links []Link) error
	// LinkOwners returns the owners that have links in place, sorted, so
	// that a prune can remove those of containers that no longer exist.
	// (Owners reports port owners only: a prune that finds an owner there
	// removes it with RemovePorts, which leaves links alone.)
	LinkOwners() ([]string, error)
	// AddSources claims owner's sources (owner is a container or CNI
	// attachment ID) in ONE atomic batch: each Addr is owner's, and from
	// then on only the ports of owner's sources send from it (Source).
	// Sources in place are left alone; an address another owner claims
	// is taken over: the caller (which allocates addresses) is the
	// authority on who holds one.
	AddSources(owner string, srcs []Source) error
	// RemoveSources releases owner's sources srcs (a port's leave to send
	// from an address) and its claims on addrs, in one atomic batch;
	// nil for both releases every claim of owner's, for a prune. Those
	// missing, or another owner's, are skipped. Idempotent.
	RemoveSources(owner string, srcs []Source, addrs []netip.Addr) error
	// AddPortsAndSources is AddPorts and AddSources of one owner in ONE
	// atomic batch: a container's attach, whose sources name its own new
	// ports (a backend need not look those up first).
	AddPortsAndSources(owner string, ports []PortMapping, srcs []Source) error
	// RemovePortsAndSources is RemovePorts of ports and RemoveSources of
	// srcs and addrs in ONE atomic batch, for the keys given only (nil is
	// none of a kind): a container's detach.
	RemovePortsAndSources(owner string, ports []PortMapping, srcs []Source, addrs []netip.Addr) error
	// SourceOwners returns the owners that claim sources, sorted, so that
	// a prune can release those of containers that no longer exist.
	SourceOwners() ([]string, error)
	// DropForeignForwarding drops, for IPv4 or IPv6, what the host
	// forwards between interfaces none of which is a knit network's
	// bridge: knit asks for it as it turns forwarding on, on a host that
	// forwarded nothing until then (as dockerd's FORWARD policy DROP).
	// Idempotent; AllowForeignForwarding removes it.
	DropForeignForwarding(v6 bool) error
	AllowForeignForwarding(v6 bool) error
	// Check reports whether the firewall can be used at all (the kernel
	// speaks nf_tables, the process may change it). A firewall may open
	// its sockets on first use; commands that will change it check first,
	// before they reserve anything.
	Check() error
}

// ValidateOwner reports whether owner can tag port mappings: the same
// characters and length as a network name. The error is KindInvalid.
func ValidateOwner(owner string) error {
	if err := ValidateName(owner); err != nil {
		return errdefs.Invalid("invalid port owner %q: want 1 to %d printable characters without blanks or quotes", owner, MaxNameLen)
	}
	return nil
}

// Validate reports whether m can be published; the error is KindInvalid.
// The host address, when given, must be of the container address's family:
// knit does not translate between IPv4 and IPv6.
func (m PortMapping) Validate() error {
	if err := ValidateName(m.Network); err != nil {
		return err
	}
	switch m.Proto {
	case "tcp", "udp", "sctp":
	default:
		return errdefs.Invalid("port mapping %s: invalid protocol %q", m, m.Proto)
	}
	if m.HostPort == 0 || m.ContainerPort == 0 {
		return errdefs.Invalid("port mapping %s: port 0", m)
	}
	c := m.ContainerIP
	if !c.IsValid() || c.IsUnspecified() || c.Is4In6() || c.Zone() != "" {
		return errdefs.Invalid("port mapping %s: invalid container address", m)
	}
	if h := m.HostIP; h.IsValid() && (h.Unmap().Is4() != c.Is4() || h.Zone() != "") {
		return errdefs.Invalid("port mapping %s: host and container addresses differ in family", m)
	}
	return nil
}

// Validate reports whether l can be allowed; the error is KindInvalid.
// Both addresses must be of one family: knit does not translate between
// IPv4 and IPv6.
func (l Link) Validate() error {
	if err := ValidateName(l.Network); err != nil {
		return err
	}
	switch l.Proto {
	case "tcp", "udp", "sctp":
	default:
		return errdefs.Invalid("link %s: invalid protocol %q", l, l.Proto)
	}
	if l.Port == 0 {
		return errdefs.Invalid("link %s: port 0", l)
	}
	for _, a := range []netip.Addr{l.From, l.To} {
		if !a.IsValid() || a.IsUnspecified() || a.Is4In6() || a.Zone() != "" {
			return errdefs.Invalid("link %s: invalid container address", l)
		}
	}
	if l.From.Is4() != l.To.Is4() {
		return errdefs.Invalid("link %s: addresses differ in family", l)
	}
	return nil
}

// String renders l as FROM->TO:PORT/PROTO.
func (l Link) String() string {
	return fmt.Sprintf("%s->%s/%s", l.From, netip.AddrPortFrom(l.To, l.Port), l.Proto)
}

// AnyHost reports whether m publishes on every host address.
func (m PortMapping) AnyHost() bool { return !m.HostIP.IsValid() || m.HostIP.IsUnspecified() }

// String renders m as docker does: [HOSTIP:]HOSTPORT->CONTAINERIP:PORT/PROTO.
func (m PortMapping) String() string {
	host := ""
	if !m.AnyHost() {
		host = netip.AddrPortFrom(m.HostIP.Unmap(), m.HostPort).String()
	} else {
		host = fmt.Sprint(m.HostPort)
	}
	return fmt.Sprintf("%s->%s/%s", host, netip.AddrPortFrom(m.ContainerIP, m.ContainerPort), m.Proto)
}

// Limits on names, chosen so that a tag ("knit:net=" + name) fits the 128
// bytes nft prints of a comment, and a bridge name fits IFNAMSIZ.
const (
	MaxNameLen   = 64
	MaxBridgeLen = 15
)

// Validate reports whether n can be expressed by a backend; the error is
// KindInvalid. Subnets need not be in canonical (masked) form.
func (n Network) Validate() error {
	if err := ValidateName(n.Name); err != nil {
		return err
	}
	if n.Bridge == "" || len(n.Bridge) > MaxBridgeLen || strings.ContainsAny(n.Bridge, "/ \t\n\"\\\x00") {
		return errdefs.Invalid("network %s: invalid bridge name %q", n.Name, n.Bridge)
	}
	seen := map[bool]bool{}
	for _, p := range n.Subnets {
		if !p.IsValid() || p.Bits() == 0 {
			return errdefs.Invalid("network %s: invalid subnet %q", n.Name, p)
		}
		if p.Addr().Is4In6() {
			return errdefs.Invalid("network %s: subnet %s is IPv4-mapped", n.Name, p)
		}
		if seen[p.Addr().Is4()] {
			return errdefs.Invalid("network %s: more than one subnet per family", n.Name)
		}
		seen[p.Addr().Is4()] = true
	}
	return nil
}

// ValidateName reports whether name can tag a network's rules: 1 to
// MaxNameLen printable ASCII characters without blanks, quotes or
// backslashes. The error is KindInvalid.
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return errdefs.Invalid("invalid network name %q: want 1 to %d characters", name, MaxNameLen)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return errdefs.Invalid("invalid network name %q: character %q", name, c)
		}
	}
	return nil
}

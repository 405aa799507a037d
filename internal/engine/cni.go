package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/ipam"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/store"
)

// bucketCNI holds the attachments CNI runtimes made: attachment ID →
// CNIAttachment. It is knit's own record of each ADD, so that DEL, CHECK
// and GC never depend on what the runtime sends again.
const bucketCNI = "cni"

// CNIPort is one entry of the portMappings capability.
type CNIPort struct {
	HostIP        netip.Addr // zero: every host address
	HostPort      uint16
	ContainerPort uint16
	Proto         string // tcp, udp or sctp
}

// Bandwidth limits an attachment's traffic (the bandwidth capability), in
// bits per second and bits; zero rates are unlimited.
type Bandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// CNIRequest is one CNI ADD as the cni package decoded it.
type CNIRequest struct {
	// Config is the CNI configuration's name (the conflist's "name"): GC
	// of one configuration never touches another's attachments.
	Config      string
	ContainerID string
	IfName      string
	Netns       string
	// Network names the knit network; the other fields are used to create
	// it when it does not exist yet.
	Network NetworkCreateOptions
	// DefaultRoute installs default routes through the network
	// (isDefaultGateway, true unless the config says false).
	DefaultRoute bool
	IPs          []netip.Addr // the ips capability: requested addresses
	MAC          net.HardwareAddr
	Ports        []CNIPort
	Name         string   // the DNS name (K8S_POD_NAME, or the first alias)
	Aliases      []string // more DNS names
	Bandwidth    *Bandwidth
	// Accept, if set, vets the network the ADD found or made before
	// anything is attached to it (under the attachment's lock): a
	// configuration that describes another network is refused, whichever
	// ADD made it first.
	Accept func(*Network) error
}

// CNIAttachment is knit's record of one ADD.
type CNIAttachment struct {
	ID          string                 `json:"id"` // knit's owner ID of its links, addresses, ports
	ContainerID string                 `json:"containerId"`
	IfName      string                 `json:"ifName"`
	Netns       string                 `json:"netns"`
	Network     string                 `json:"network"`
	Config      string                 `json:"config,omitempty"` // the CNI configuration's name
	Name        string                 `json:"name"`
	Endpoint    Endpoint               `json:"endpoint"`
	Ports       []firewall.PortMapping `json:"ports,omitempty"`
	Bandwidth   *Bandwidth             `json:"bandwidth,omitempty"`
	// Owner is the ADD still setting the attachment up; zero once done.
	// A record whose owner died is half-made and is torn down on sight.
	Owner   Proc      `json:"owner,omitzero"`
	Created time.Time `json:"created"`
}

// CNIAttachmentID is the ID knit tags an attachment's objects with.
func CNIAttachmentID(containerID, ifname string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifname))
	return cniIDPrefix + hex.EncodeToString(sum[:20])
}

// cniIDPrefix starts every attachment's ID, and no container's.
const cniIDPrefix = "cni-"

func getAttachment(tx store.Tx, id string) (*CNIAttachment, error) {
	var a CNIAttachment
	if err := getJSON(tx, bucketCNI, id, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// CNIAdd attaches the runtime's namespace to a knit network, creating the
// network on first use. An interface of the requested name that exists in
// the namespace is refused, as the spec has ADD do; a record of the same
// container and interface that is not live is replaced (clearWay). On
// error nothing of this ADD is left.
func (e *Engine) CNIAdd(req CNIRequest) (_ *CNIAttachment, n *Network, err error) {
	if req.ContainerID == "" || req.IfName == "" || req.Netns == "" {
		return nil, nil, errdefs.Invalid("CNI ADD needs CNI_CONTAINERID, CNI_IFNAME and CNI_NETNS")
	}
	if _, err := os.Stat(req.Netns); err != nil {
		return nil, nil, errdefs.Invalid("network namespace %s: %v", req.Netns, err)
	}
	if err := e.CheckFirewall(); err != nil {
		return nil, nil, err
	}
	id := CNIAttachmentID(req.ContainerID, req.IfName)
	unlock, err := e.attachmentLock(id)
	if err != nil {
		return nil, nil, err
	}
	defer unlock() // after the rollbacks below, which run under it
	h, err := link.At(req.Netns)
	if errors.Is(err, unix.EINVAL) { // setns refuses what is not a namespace
		return nil, nil, errdefs.Invalid("%s is not a network namespace: %v", req.Netns, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("network namespace %s: %w", req.Netns, err)
	}
	defer h.Close()
	if err := e.clearWay(req, h); err != nil {
		return nil, nil, err
	}
	// The network found can go before this ADD is recorded on it: a
	// `network rm`, or the rollback of a failed ADD that made it (the
	// first of several at once). This ADD then makes it again, once, as
	// the first ADD of a network does.
	var a *CNIAttachment
	for retried := false; ; retried = true {
		var created bool
		n, created, err = e.cniNetwork(req.Network)
		if err == nil && created {
			// Runs after the attachment's own rollback (deferred below);
			// made, as the failing return sets n to nil.
			made := n
			defer func() {
				if err != nil {
					_ = e.removeUnusedNetwork(made)
				}
			}()
		}
		if err == nil {
			a, err = e.cniReserve(req, id, n)
		}
		if err == nil {
			break
		}
		if created || retried || !removedMeanwhile(err) {
			return nil, nil, err
		}
	}
	defer func() {
		if err != nil {
			_ = e.cniTeardown(a)
		}
	}()
	// A default route the namespace has already (another network's
	// interface, another plugin's route, of any metric) is kept: the
	// endpoint leaves that family out, and the record below keeps that.
	// Join does the same for one added meanwhile (EEXIST: the ADD of
	// another network into the namespace at the same moment).
	sb := driver.Sandbox{NetnsPath: req.Netns, Link: h} // the driver's too: one handle in the namespace
	if a.Endpoint.DefaultRoute {
		if err := keepDefaultRoutes(h, &a.Endpoint.Endpoint); err != nil {
			return nil, nil, err
		}
	}
	if err := e.join(n, &a.Endpoint, sb); err != nil {
		return nil, nil, err
	}
	// Its ports and the claim on its address, in one batch.
	if err := e.publishAndClaim(id, a.Ports, []Endpoint{a.Endpoint}); err != nil {
		return nil, nil, err
	}
	if b := a.Bandwidth; b != nil && (b.IngressRate > 0 || b.EgressRate > 0) {
		if err := link.ShapeLink(a.Endpoint.HostIf, link.Shape{
			IngressRate: b.IngressRate, IngressBurst: b.IngressBurst, EgressRate: b.EgressRate, EgressBurst: b.EgressBurst,
		}); err != nil {
			return nil, nil, fmt.Errorf("bandwidth: %w", err)
		}
	}
	// Complete, unless the rest of its pod (its container's other
	// networks) has ports already: the ports then send from each other's
	// addresses, claimed first (claimPod), so that an ADD cut short
	// before its pod's claims are made leaves a half-made record, which
	// the next command tears down with them.
	var pod []*CNIAttachment
	err = e.st.Update(func(tx store.Tx) error {
		cur, err := getAttachment(tx, id)
		if err != nil {
			return err
		}
		if pod, err = podOf(tx, cur); err != nil {
			return err
		}
		if len(pod) == 0 {
			cur.Owner = Proc{}
		}
		cur.Endpoint.HostIf = a.Endpoint.HostIf
		cur.Endpoint.Gateways, cur.Endpoint.DefaultRoute = a.Endpoint.Gateways, a.Endpoint.DefaultRoute
		*a = *cur
		return e.putAttachment(tx, cur, n)
	})
	if err != nil {
		return nil, nil, err
	}
	if len(pod) > 0 {
		if err := e.claimPod(id); err != nil {
			return nil, nil, err
		}
		err = e.st.Update(func(tx store.Tx) error {
			cur, err := getAttachment(tx, id)
			if err != nil {
				return err
			}
			cur.Owner = Proc{}
			*a = *cur
			return putJSON(tx, bucketCNI, id, cur)
		})
		if err != nil {
			return nil, nil, err
		}
	}
	if n.DNS {
		if err := e.syncDNS(); err != nil {
			return nil, nil, fmt.Errorf("embedded DNS: %w", err)
		}
	}
	e.announceLater([]Endpoint{a.Endpoint}, req.Netns)
	return a, n, nil
}

// cniReserve records req's attachment on n: its address, its ports and
// its DNS name, owned by this ADD until it is complete. Accept is asked
// first, and the network's kernel objects are made (or repaired).
func (e *Engine) cniReserve(req CNIRequest, id string, n *Network) (*CNIAttachment, error) {
	if req.Accept != nil {
		if err := req.Accept(n); err != nil {
			return nil, err
		}
	}
	if err := e.ensureNetwork(n); err != nil {
		return nil, err
	}
	a := &CNIAttachment{
		ID: id, ContainerID: req.ContainerID, IfName: req.IfName, Netns: req.Netns, Network: n.Name,
		Config: req.Config, Name: req.Name, Bandwidth: req.Bandwidth, Owner: selfProc(), Created: time.Now().UTC(),
	}
	if a.Name == "" && len(req.Aliases) > 0 {
		a.Name = req.Aliases[0]
	}
	listening := readListeners(len(req.Ports) > 0)
	err := e.st.Update(func(tx store.Tx) error {
		ereq := EndpointOptions{MAC: req.MAC}
		if n.UserDefined() { // knit's default network has no DNS to serve them
			ereq.Aliases = req.Aliases
		}
		for _, ip := range req.IPs {
			if ip.Is4() {
				ereq.IP = ip
			} else {
				ereq.IP6 = ip
			}
		}
		routed := map[bool]bool{}
		if !req.DefaultRoute {
			routed = map[bool]bool{true: true, false: true}
		}
		ep, err := allocateEndpoint(tx, n, &Container{ID: id}, ereq, req.IfName, routed)
		if err != nil {
			return err
		}
		a.Endpoint = *ep
		holder := &Container{ID: id, Endpoints: []Endpoint{*ep}, Spec: Spec{NetworkMode: n.Name}}
		if err := reservePorts(tx, holder, cniPortSpecs(req.Ports, n), listening); err != nil {
			return err
		}
		a.Ports = holder.Ports
		return e.putAttachment(tx, a, n)
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// keepDefaultRoutes drops from ep the default routes of the families the
// namespace has one for already.
func keepDefaultRoutes(h *link.Handle, ep *driver.Endpoint) error {
	routes, err := h.RouteList()
	if err != nil {
		return fmt.Errorf("read the namespace's routes: %w", err)
	}
	has := map[bool]bool{}
	for _, r := range routes {
		if r.Dst.Bits() == 0 {
			has[r.Dst.Addr().Is4()] = true
		}
	}
	ep.Gateways = slices.DeleteFunc(slices.Clone(ep.Gateways), func(gw netip.Addr) bool { return has[gw.Is4()] })
	ep.DefaultRoute = len(ep.Gateways) > 0
	return nil
}

// cniPortSpecs turns portMappings into publish requests; the network's
// host-ip applies when a mapping names no host address.
func cniPortSpecs(ports []CNIPort, n *Network) []portmap.Spec {
	if n.Internal {
		return nil // nothing outside reaches an internal network: as netavark, no mapping
	}
	var out []portmap.Spec
	for _, p := range ports {
		s := portmap.Spec{
			HostIP: p.HostIP, HostPortFirst: p.HostPort, HostPortLast: p.HostPort,
			ContainerFirst: p.ContainerPort, ContainerLast: p.ContainerPort, Proto: portmap.Proto(p.Proto),
		}
		if !s.HostIP.IsValid() && n.HostIP.IsValid() {
			s.HostIP = n.HostIP
		}
		out = append(out, s)
	}
	return out
}

// putAttachment writes a and its DNS record.
func (e *Engine) putAttachment(tx store.Tx, a *CNIAttachment, n *Network) error {
	if n.DNS {
		// The pod's queries go upstream from its namespace, but not on an
		// internal network: knit cannot tell whether the pod has a way out
		// (another network, another plugin's interface), through which a
		// neighbour forging its address there could send names.
		r := dnsRecord{Name: a.Name, Hostname: a.Name, Endpoints: []Endpoint{a.Endpoint}, Isolated: n.Internal,
			IPv6: a.Endpoint.HasIPv6(), NoIPv4: !a.Endpoint.HasIPv4()}
		if !n.Internal {
			r.Netns = a.Netns
		}
		if r.Name == "" {
			r.Name = a.ContainerID[:min(12, len(a.ContainerID))]
		}
		if err := putJSON(tx, bucketDNS, a.ID, r); err != nil {
			return err
		}
	}
	return putJSON(tx, bucketCNI, a.ID, a)
}

// cniNetwork returns the named network, creating it from o when missing.
// The name is matched exactly, never as an ID prefix.
func (e *Engine) cniNetwork(o NetworkCreateOptions) (n *Network, created bool, err error) {
	exact := func() (*Network, bool, error) {
		n, err := e.network(o.Name)
		if err == nil && n.Removing {
			return nil, false, networkRemoving(n.Name)
		}
		return n, false, err
	}
	n, err = e.network(o.Name)
	if err == nil && !n.Removing {
		return n, false, nil
	}
	if err != nil && errdefs.KindOf(err) != errdefs.KindNotFound {
		return nil, false, err
	}
	// Missing, or being removed (a removal killed half-way, say): create
	// finishes the removal, or waits for it, and makes the network again.
	n, err = e.CreateNetwork(o)
	if errdefs.KindOf(err) == errdefs.KindConflict && strings.Contains(err.Error(), "already exists") {
		return exact() // a concurrent ADD made it
	}
	return n, err == nil, err
}

// clearWay makes room for req's interface. An interface of that name in
// the namespace is refused, as the spec has ADD do ("If an interface of
// the requested name already exists in the container, the CNI plugin MUST
// return with an error"): whoever made it, this configuration's ADD
// repeated included, DELs it first; tearing it down and making it again
// would reset the container's connections. A record of the same container
// and interface is removed when it is not live: one cut short in this
// namespace (its ADD's owner is recorded, and the lock held says that ADD
// is over: its interface, if it got one, goes with it), and once the
// interface is known to be free, one in another namespace (the container
// ID reused for a new one) or a complete one whose interface is gone (ADD
// then repairs it). A refused ADD changes nothing else.
func (e *Engine) clearWay(req CNIRequest, h *link.Handle) error {
	a, err := e.readAttachment(CNIAttachmentID(req.ContainerID, req.IfName))
	switch {
	case errors.Is(err, store.ErrNotFound):
		a = nil
	case err != nil:
		return err
	}
	here := a != nil && sameNetns(a.Netns, req.Netns)
	if here && a.Owner != (Proc{}) {
		if err := e.cniTeardown(a); err != nil {
			return fmt.Errorf("remove the previous attachment: %w", err)
		}
		a, here = nil, false // an interface there now is someone else's
	}
	_, err = h.LinkGet(req.IfName)
	switch {
	case err == nil && here:
		return errdefs.Conflict("interface %s of container %s already exists (configuration %s, network %s): DEL it first",
			req.IfName, req.ContainerID, a.Config, a.Network)
	case err == nil:
		return errdefs.Conflict("interface %s already exists in network namespace %s, and is not this container's: remove it, or ask for another CNI_IFNAME",
			req.IfName, req.Netns)
	case !link.IsNotFound(err):
		return fmt.Errorf("network namespace %s: %w", req.Netns, err)
	}
	if a != nil {
		if err := e.cniTeardown(a); err != nil {
			return fmt.Errorf("remove the previous attachment: %w", err)
		}
	}
	return nil
}

// sameNetns reports whether two paths name one network namespace: the same
// path, or two (a bind mount, /proc/PID/ns/net) of the same namespace
// file. A path that is gone names none.
func sameNetns(a, b string) bool {
	if a == b {
		return true
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// CNIDel removes what CNIAdd made for the container's interface, from
// knit's record: the link, the address, the published ports and the DNS
// names. It succeeds when there is nothing to remove, when the namespace
// is gone, and when repeated. An attachment another configuration made
// (config names the caller's; "" is any) is not the caller's to remove:
// as nothing of its own is there, that is success too.
func (e *Engine) CNIDel(config, containerID, ifname string) error {
	id := CNIAttachmentID(containerID, ifname)
	// Nothing recorded: done, without the lock (whose directory a DEL on a
	// host with no knit state would otherwise create).
	if _, err := e.readAttachment(id); errors.Is(err, store.ErrNotFound) {
		return nil
	}
	unlock, err := e.attachmentLock(id)
	if err != nil {
		return err
	}
	defer unlock()
	a, err := e.readAttachment(id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if config != "" && a.Config != "" && a.Config != config && a.Owner == (Proc{}) {
		return nil
	}
	return e.cniTeardown(a)
}

// attachmentLock serializes the commands that change one attachment: ADD,
// DEL, and GC's and prune's removals. Without it a removal could act on a
// record read before another command replaced it (prune reading an ADD in
// progress, then finding its owner gone once the next ADD had remade the
// attachment), and take that command's published port or interface. The
// locks are striped over a fixed set of files, so that they do not pile
// up with container IDs; a holder takes no other stripe.
func (e *Engine) attachmentLock(id string) (unlock func(), err error) {
	h := fnv.New32a()
	h.Write([]byte(id))
	return lockFile(filepath.Join(e.paths.DataRoot, "locks", fmt.Sprintf("cni-%02d.lock", h.Sum32()%attachmentLocks)))
}

// attachmentLocks is the number of attachment lock stripes.
const attachmentLocks = 32

// cniTeardown undoes an attachment in the kernel, then forgets it. Its
// caller holds the attachment's lock.
func (e *Engine) cniTeardown(a *CNIAttachment) error {
	if b := a.Bandwidth; b != nil && (b.IngressRate > 0 || b.EgressRate > 0) && a.Endpoint.HostIf != "" {
		// The egress limit's ifb device outlives the veth otherwise.
		h, err := link.Host()
		if err != nil {
			return fmt.Errorf("remove bandwidth limits: %w", err)
		}
		err = h.ShapeDel(a.Endpoint.HostIf)
		h.Close()
		if err != nil && !link.IsNotFound(err) {
			return fmt.Errorf("remove bandwidth limits: %w", err)
		}
	}
	// Only a network that is gone lets the link go without a Leave: any
	// other failure to read it (a store busy past its timeout) must not
	// release an address that a live veth still holds.
	n, err := e.lookupNetwork(a.Network)
	if err != nil && errdefs.KindOf(err) != errdefs.KindNotFound {
		return err
	}
	if err == nil {
		d, err := e.driverFor(n)
		if err != nil {
			return err
		}
		// Deleting the host end takes the peer with it, wherever the
		// namespace is (or whether it still exists).
		if err := d.Leave(&n.Network, &a.Endpoint.Endpoint, driver.Sandbox{NetnsPath: a.Netns}, driver.LeaveOptions{}); err != nil {
			return err
		}
	}
	forget := func() error {
		return e.st.Update(func(tx store.Tx) error {
			holder := &Container{ID: a.ID, Endpoints: []Endpoint{a.Endpoint}, Ports: a.Ports}
			if err := releaseAddrs(tx, holder); err != nil {
				return err
			}
			if err := tx.Delete(bucketDNS, a.ID); err != nil {
				return err
			}
			return tx.Delete(bucketCNI, a.ID)
		})
	}
	if e.fw != nil {
		// The ports and the claim on the address go with the record,
		// under the firewall lock: a restore of the firewall (after a
		// flush) reads the record under it, so it either comes first, and
		// its elements go now, or finds the record gone. (The record of
		// an ADD rolling back has no link name yet.) The claims of the
		// rest of its pod for its port go first.
		err = e.underFirewallLock(func(fw firewall.Firewall) error {
			pod, err := e.releasePod(fw, a)
			if err != nil {
				return err
			}
			if err := unpublishAndRelease(fw, a.ID, a.Ports, []Endpoint{a.Endpoint}, portsOnly(pod)); err != nil {
				return err
			}
			return forget()
		})
	} else {
		err = forget()
	}
	if err != nil {
		return err
	}
	// Forgotten: a DEL retried after an error from here on finds nothing
	// to do, so the rest is done whatever fails.
	var errs []error
	if len(a.Ports) > 0 && e.fw != nil {
		errs = append(errs, forgetDatagramFlows(a.Ports))
	}
	if n != nil && n.DNS {
		errs = append(errs, e.syncDNS())
	}
	return errors.Join(errs...)
}

// CNIAttachments lists the recorded attachments on the named network (all
// of them when network is ""), oldest first.
func (e *Engine) CNIAttachments(network string) ([]*CNIAttachment, error) {
	var out []*CNIAttachment
	err := e.st.View(func(tx store.Tx) error {
		return tx.List(bucketCNI, func(_ string, v []byte) error {
			var a CNIAttachment
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			if network == "" || a.Network == network {
				out = append(out, &a)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}

// CNIGet returns the attachment of the container's interface.
func (e *Engine) CNIGet(containerID, ifname string) (*CNIAttachment, error) {
	a, err := e.readAttachment(CNIAttachmentID(containerID, ifname))
	if errors.Is(err, store.ErrNotFound) {
		return nil, errdefs.NotFound("no attachment of container %s interface %s", containerID, ifname)
	}
	return a, err
}

// readAttachment reads attachment id's record (store.ErrNotFound if none).
func (e *Engine) readAttachment(id string) (a *CNIAttachment, err error) {
	err = e.st.View(func(tx store.Tx) (err error) {
		a, err = getAttachment(tx, id)
		return err
	})
	return a, err
}

// CNIGC removes every attachment made through the CNI configuration named
// config ("" for any) on network ("" for any) that keep rejects, and every
// half-made one whose ADD died, and returns those removed.
func (e *Engine) CNIGC(network, config string, keep func(containerID, ifname string) bool) ([]string, error) {
	all, err := e.CNIAttachments(network)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, listed := range all {
		if !e.gcMayRemove(listed, config, keep) {
			continue
		}
		// Decided again on the record read under the attachment's lock:
		// an ADD or DEL may have changed it since the list.
		gone, err := e.gcRemove(listed.ID, config, keep)
		if err != nil {
			errs = append(errs, err)
		}
		if gone {
			removed = append(removed, listed.ContainerID+"/"+listed.IfName)
		}
	}
	return removed, errors.Join(errs...)
}

// gcMayRemove says whether GC removes a: one of config's ("" for any) that
// keep rejects, or a half-made one whose ADD died; never one whose ADD is
// in progress.
func (e *Engine) gcMayRemove(a *CNIAttachment, config string, keep func(containerID, ifname string) bool) bool {
	if config != "" && a.Config != "" && a.Config != config {
		return false // another configuration's, sharing the knit network
	}
	if a.Owner.Pid != 0 {
		return !alive(a.Owner) // half-made if its ADD died; else in progress
	}
	return !keep(a.ContainerID, a.IfName)
}

// gcRemove removes the attachment id under its lock if GC still may.
func (e *Engine) gcRemove(id, config string, keep func(containerID, ifname string) bool) (removed bool, err error) {
	unlock, err := e.attachmentLock(id)
	if err != nil {
		return false, err
	}
	defer unlock()
	a, err := e.readAttachment(id)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil || !e.gcMayRemove(a, config, keep) {
		return false, err
	}
	if err := e.cniTeardown(a); err != nil {
		return false, err
	}
	return true, nil
}

// CNICheck compares the live interface, addresses, routes and published
// ports with knit's record of the attachment and describes what differs.
// The embedded DNS server, which the result names as the container's
// nameserver, is started again if it was killed, as any knit command does.
func (e *Engine) CNICheck(containerID, ifname, netnsPath string) error {
	e.ensureDNSServer()
	a, err := e.CNIGet(containerID, ifname)
	if err != nil {
		return err
	}
	var diffs []string
	if netnsPath != "" && netnsPath != a.Netns {
		diffs = append(diffs, fmt.Sprintf("namespace is %s, recorded %s", netnsPath, a.Netns))
	}
	if a.Owner.Pid != 0 {
		diffs = append(diffs, "the ADD that made it did not finish")
	}
	n, err := e.lookupNetwork(a.Network)
	if err != nil {
		return fmt.Errorf("network %s of the attachment: %w", a.Network, err)
	}
	diffs = append(diffs, checkHostEnd(n, a)...)
	if b := a.Bandwidth; b != nil && (b.IngressRate > 0 || b.EgressRate > 0) {
		diffs = append(diffs, checkShape(a)...)
	}
	diffs = append(diffs, checkSandbox(n, a)...)
	if len(a.Ports) > 0 && e.fw != nil {
		owners, err := e.fw.Owners()
		if err != nil {
			return err
		}
		if !slices.Contains(owners, a.ID) {
			diffs = append(diffs, "its published ports are missing from the firewall")
		}
	}
	if len(diffs) > 0 {
		return errdefs.Conflict("attachment %s/%s differs from knit's record: %s", containerID, ifname, strings.Join(diffs, "; "))
	}
	return nil
}

func checkHostEnd(n *Network, a *CNIAttachment) []string {
	h, err := link.Host()
	if err != nil {
		return []string{err.Error()}
	}
	defer h.Close()
	l, err := h.LinkGet(a.Endpoint.HostIf)
	if err != nil {
		return []string{fmt.Sprintf("host end %s: %v", a.Endpoint.HostIf, err)}
	}
	br, err := h.LinkGet(n.Bridge)
	if err != nil {
		return []string{fmt.Sprintf("bridge %s: %v", n.Bridge, err)}
	}
	if l.MasterIndex != br.Index {
		return []string{fmt.Sprintf("host end %s is not on bridge %s", a.Endpoint.HostIf, n.Bridge)}
	}
	return nil
}

// checkShape compares the installed rate limits with the record, to 1%
// (the kernel stores rates in its own units).
func checkShape(a *CNIAttachment) []string {
	h, err := link.Host()
	if err != nil {
		return []string{err.Error()}
	}
	defer h.Close()
	have, err := h.ShapeGet(a.Endpoint.HostIf)
	if err != nil {
		return []string{fmt.Sprintf("bandwidth limits of %s: %v", a.Endpoint.HostIf, err)}
	}
	near := func(x, y uint64) bool { return x*100 >= y*99 && x*99 <= y*100 }
	if !near(have.IngressRate, a.Bandwidth.IngressRate) || !near(have.EgressRate, a.Bandwidth.EgressRate) {
		return []string{fmt.Sprintf("bandwidth limits are %d/%d bit/s (in/out), recorded %d/%d",
			have.IngressRate, have.EgressRate, a.Bandwidth.IngressRate, a.Bandwidth.EgressRate)}
	}
	return nil
}

func checkSandbox(n *Network, a *CNIAttachment) []string {
	h, err := link.At(a.Netns)
	if err != nil {
		return []string{fmt.Sprintf("namespace %s: %v", a.Netns, err)}
	}
	defer h.Close()
	l, err := h.LinkGet(a.IfName)
	if err != nil {
		return []string{fmt.Sprintf("interface %s: %v", a.IfName, err)}
	}
	var diffs []string
	if !l.Up {
		diffs = append(diffs, fmt.Sprintf("interface %s is down", a.IfName))
	}
	have, err := h.AddrList(l.Index)
	if err != nil {
		return append(diffs, err.Error())
	}
	for _, want := range a.Endpoint.Addrs {
		if !slices.Contains(have, want) {
			diffs = append(diffs, fmt.Sprintf("address %s is missing from %s", want, a.IfName))
		}
	}
	if a.Endpoint.DefaultRoute {
		// In any table: a later plugin of the chain (sbr) may have moved
		// the routes out of main, which the spec says CHECK must allow.
		routes, err := h.RouteListAllTables()
		if err != nil {
			return append(diffs, err.Error())
		}
		var gws []netip.Addr
		for _, r := range routes {
			if r.Dst.Bits() == 0 && r.LinkIndex == l.Index {
				gws = append(gws, r.Gateway)
			}
		}
		for _, gw := range a.Endpoint.Gateways {
			if !slices.Contains(gws, gw) {
				diffs = append(diffs, fmt.Sprintf("default route via %s is missing", gw))
			}
		}
	}
	return diffs
}

// ErrNetworkDamaged marks a STATUS failure that existing attachments suffer
// too (CNI code 51), not only new ones.
var ErrNetworkDamaged = errors.New("the network is damaged: existing containers may have lost connectivity")

// CNIStatus reports whether the named network can take attachments: it
// exists (or can be created) and has a free address.
func (e *Engine) CNIStatus(o NetworkCreateOptions) error {
	if err := e.CheckFirewall(); err != nil {
		return err
	}
	e.ensureDNSServer() // as CNICheck
	n, err := e.lookupNetwork(o.Name)
	if err == nil && n.Removing {
		// A removal under way holds the network's lock: answered at
		// once, where finishing it would wait for that command.
		if lockBusy(e.networkLock(n.Name)) {
			return networkRemoving(n.Name)
		}
		// A removal a crash cut short: finished here, as ADD would
		// (cniNetwork), then ADD makes the network again.
		e.finishRemoval(n.Name)
		n, err = e.lookupNetwork(o.Name)
		if err == nil && n.Removing {
			return networkRemoving(n.Name)
		}
	}
	if errdefs.KindOf(err) == errdefs.KindNotFound {
		return e.CheckNewNetwork(o) // ADD creates it, unless it would refuse to
	}
	if err != nil {
		return err
	}
	if h, err := link.Host(); err == nil {
		_, err = h.BridgeGet(n.Bridge)
		h.Close()
		if link.IsNotFound(err) {
			if n.External {
				return errdefs.Conflict("bridge %s of network %s is missing: it is the administrator's, which knit never creates", n.Bridge, n.Name)
			}
			// The next ADD makes it again. Only a container still attached
			// (a namespace still there) has lost its connectivity; after a
			// reboot, say, none has, and the network is ready.
			who, err := e.liveOn(n.Name)
			if err != nil {
				return err
			}
			if who != "" {
				return fmt.Errorf("%w: bridge %s of network %s is missing, and %s was on it (the next ADD recreates the bridge)", ErrNetworkDamaged, n.Bridge, n.Name, who)
			}
		}
	}
	return e.st.View(func(tx store.Tx) error {
		used, err := usedAddrs(tx, n.Name)
		if err != nil {
			return err
		}
		inUse := func(a netip.Addr) bool { _, ok := used[a]; return ok }
		for _, s := range n.Subnets {
			// The allocator's own answer, with what ADD counts as taken
			// (allocateEndpoint: a router's default gateway and the aux
			// addresses are never handed out), so STATUS and ADD agree.
			taken := func(a netip.Addr) bool { return s.Reserved(a) || inUse(a) }
			if _, err := ipam.Allocate(s.Prefix, s.IPRange, s.Gateway, taken); err != nil {
				return errdefs.Conflict("network %s has no free address in %s: %v", n.Name, s.Prefix, err)
			}
		}
		return nil
	})
}

// liveOn names a container attached to network name that may still be
// running: a CNI attachment whose namespace exists, or a running knit
// container whose supervisor lives; "" when there is none.
func (e *Engine) liveOn(name string) (string, error) {
	atts, err := e.CNIAttachments(name)
	if err != nil {
		return "", err
	}
	for _, a := range atts {
		if _, err := os.Stat(a.Netns); err == nil {
			return "CNI container " + a.ContainerID[:min(12, len(a.ContainerID))], nil
		}
	}
	var cs []*Container
	if err := e.st.View(func(tx store.Tx) (err error) { cs, err = listContainers(tx); return err }); err != nil {
		return "", err
	}
	for _, c := range cs {
		if c.Running() && alive(c.State.Supervisor) && slices.ContainsFunc(c.Endpoints, func(ep Endpoint) bool { return ep.Network == name }) {
			return "container " + c.Name, nil
		}
	}
	return "", nil
}

// cniOwner describes an attachment ID for messages ("CNI attachment ID/IF").
func cniOwner(tx store.Tx, id string) (string, bool) {
	a, err := getAttachment(tx, id)
	if err != nil {
		return "", false
	}
	return fmt.Sprintf("CNI container %s (%s)", a.ContainerID[:min(12, len(a.ContainerID))], a.IfName), true
}

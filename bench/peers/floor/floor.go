// Package floor makes a container's network with nothing but the kernel
// calls it takes, so that knit's attach and detach can be compared with the
// least any tool could do. It uses vishvananda/netlink and google/nftables
// directly, as knit does, and none of knit's code.
//
// Attach, per container:
//
//	unshare(CLONE_NEWNET) + bind mount          the namespace
//	RTM_SETLINK lo up                            in the netns: loopback
//	RTM_NEWLINK veth, peer "eth0" in the netns,  the pair, then the bridge
//	  RTM_SETLINK master BRIDGE                  master (netlink sends it as
//	                                             a second request)
//	RTM_SETLINK addrgenmode none, RTM_SETLINK    the host end, without IPv6,
//	  hairpin on                                 hairpin (for hairpin NAT)
//	RTM_GETLINK eth0, RTM_SETLINK addrgenmode    in the netns: no IPv6,
//	  none, RTM_NEWADDR, RTM_SETLINK up,         address, up and the
//	  RTM_NEWROUTE default                       default route
//	RTM_SETLINK up                               the host end, last
//	NFT_MSG_NEWSETELEM ×3                        the published port and the
//	                                             source guard's claim on the
//	                                             address (one batch)
//
// The host end comes up last, as knit's does: that gives the pair its
// carrier, and the bridge then activates the port in the background, work
// that grows with its number of ports (0.4 ms at 1000) and holds the
// kernel's rtnl lock, which a route add made after it waits for.
//
// These make the kernel objects knit makes, in the fewest requests. lo up
// and hairpin mode are part of a working container network (localhost in
// the container; a container reaching its own published port through the
// host's address). The addrgenmode requests give an IPv4-only network's
// veths no IPv6 link-local address. Without them each new veth's duplicate
// address detection and multicast reports are flooded to every port of the
// bridge, and attach grows with the number of containers (measured: 1.1 ms
// at the 100th, 8.7 ms at the 1000th).
//
// Detach: umount + unlink of the namespace file (the kernel destroys the
// veth pair in the background) and NFT_MSG_DELSETELEM ×3 (one batch).
//
// What is made once, by New and not timed: the bridge (multicast snooping
// off, as knit's) with its address, forwarding, and an nftables table
// whose prerouting and output chains DNAT through one map, as knit's do:
//
//	table ip floor {
//	  map pub { type inet_proto . inet_service : ipv4_addr . inet_service; }
//	  chain prerouting { type nat hook prerouting priority dstnat;
//	    fib daddr type local dnat ip to meta l4proto . th dport map @pub }
//	  chain output { type nat hook output priority dstnat; (the same rule) }
//	}
//	table bridge floor {
//	  set guarded4 { type ipv4_addr; }
//	  set senders4 { type ifname . ipv4_addr; }
//	  chain guard { type filter hook prerouting priority -200;
//	    meta protocol ip ip saddr @guarded4 iifname . ip saddr != @senders4 drop }
//	}
package floor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Floor holds what New made once: the bridge, the nftables map and the
// directory the namespace files are bound on.
type Floor struct {
	dir    string
	bridge int
	gw     netip.Addr
	bits   int
	host   *netlink.Handle
	nft    *nft.Conn
	table  *nft.Table
	pub    *nft.Set
	// the source guard's sets, as knit's (its rule drops what a port
	// sends from a guarded address not paired with it)
	guarded, senders *nft.Set
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE: no automatic IPv6 addresses.
const addrGenModeNone = 1

// Endpoint is one attached container.
type Endpoint struct {
	Netns    string
	Addr     netip.Addr
	HostPort uint16
	key      []byte
	port     string // the host end's name
}

// New makes the bridge (gateway is its address, e.g. 10.90.0.1/16) and the
// nftables table in the calling process's network namespace, which must be
// a throwaway one, and keeps namespace files under dir.
func New(dir, bridge string, gateway netip.Prefix) (*Floor, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	snooping := false // as knit's bridges: see link.BridgeEnsure
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}, MulticastSnooping: &snooping}
	if err := h.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("add bridge %s: %w", bridge, err)
	}
	l, err := h.LinkByName(bridge)
	if err != nil {
		return nil, err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gateway.Addr().AsSlice(), Mask: net.CIDRMask(gateway.Bits(), 32)}}
	if err := h.AddrAdd(l, addr); err != nil {
		return nil, fmt.Errorf("address %s: %w", gateway, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return nil, err
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return nil, err
	}
	f := &Floor{dir: dir, bridge: l.Attrs().Index, gw: gateway.Addr(), bits: gateway.Bits(), host: h}
	if err := f.nftInit(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Floor) nftInit() error {
	// One lasting socket, as knit keeps: closing a netfilter socket right
	// after a batch that deleted an element waits for an RCU grace period.
	c, err := nft.New(nft.AsLasting())
	if err != nil {
		return err
	}
	f.nft = c
	f.table = c.AddTable(&nft.Table{Family: nft.TableFamilyIPv4, Name: "floor"})
	f.pub = &nft.Set{Table: f.table, Name: "pub", IsMap: true, Concatenation: true,
		KeyType:  nft.MustConcatSetType(nft.TypeInetProto, nft.TypeInetService),
		DataType: nft.MustConcatSetType(nft.TypeIPAddr, nft.TypeInetService)}
	if err := c.AddSet(f.pub, nil); err != nil {
		return err
	}
	accept := nft.ChainPolicyAccept
	for _, hook := range []*nft.ChainHook{nft.ChainHookPrerouting, nft.ChainHookOutput} {
		ch := c.AddChain(&nft.Chain{Name: fmt.Sprint("dnat", *hook), Table: f.table, Type: nft.ChainTypeNAT,
			Hooknum: hook, Priority: nft.ChainPriorityNATDest, Policy: &accept})
		c.AddRule(&nft.Rule{Table: f.table, Chain: ch, Exprs: []expr.Any{
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 8},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 8, DestRegister: 8, IsDestRegSet: true, SetName: f.pub.Name, SetID: f.pub.ID},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 8, RegProtoMin: 9, Specified: true},
		}})
	}
	// The source guard, as knit's: a bridge table, the two sets, and the
	// rule that looks them up.
	bt := c.AddTable(&nft.Table{Family: nft.TableFamilyBridge, Name: "floor"})
	f.guarded = &nft.Set{Table: bt, Name: "guarded4", KeyType: nft.TypeIPAddr}
	f.senders = &nft.Set{Table: bt, Name: "senders4", Concatenation: true, KeyType: nft.MustConcatSetType(nft.TypeIFName, nft.TypeIPAddr)}
	for _, s := range []*nft.Set{f.guarded, f.senders} {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	guard := c.AddChain(&nft.Chain{Name: "guard", Table: bt, Type: nft.ChainTypeFilter,
		Hooknum: nft.ChainHookPrerouting, Priority: nft.ChainPriorityRef(-200), Policy: &accept})
	c.AddRule(&nft.Rule{Table: bt, Chain: guard, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(unix.ETH_P_IP)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: f.guarded.Name, SetID: f.guarded.ID},
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: f.senders.Name, SetID: f.senders.ID, Invert: true},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table: %w", err)
	}
	return nil
}

// claims are ep's elements of the source guard's sets.
func (ep *Endpoint) claims() (guarded, senders []nft.SetElement) {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, ep.port)
	return []nft.SetElement{{Key: ep.Addr.AsSlice()}}, []nft.SetElement{{Key: append(name, ep.Addr.AsSlice()...)}}
}

// Attach makes container id's namespace and network: address addr on the
// bridge's subnet, default route via the bridge, and tcp hostPort of every
// local address forwarded to addr:ctrPort.
func (f *Floor) Attach(id int, addr netip.Addr, hostPort, ctrPort uint16) (*Endpoint, error) {
	path := filepath.Join(f.dir, fmt.Sprint("c", id))
	// The container side's netlink socket is opened while the thread is in
	// the new namespace: it stays bound there, and no second switch is made.
	ns, in, err := newNetns(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	defer in.Close()
	ep := &Endpoint{Netns: path, Addr: addr, HostPort: hostPort}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: fmt.Sprint("fl", id), MasterIndex: f.bridge, TxQLen: -1},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(ns.Fd()),
		PeerTxQLen:    -1,
	}
	if err := f.host.LinkAdd(veth); err != nil {
		return nil, errors.Join(fmt.Errorf("add veth: %w", err), ep.dropNetns())
	}
	err = f.host.LinkSetIP6AddrGenMode(veth, addrGenModeNone)
	if err == nil {
		err = f.host.LinkSetHairpin(veth, true)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("host end: %w", err), ep.dropNetns())
	}
	err = in.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1}}) // lo
	if err != nil {
		return nil, errors.Join(fmt.Errorf("lo up: %w", err), ep.dropNetns())
	}
	eth, err := in.LinkByName("eth0")
	if err == nil {
		err = in.LinkSetIP6AddrGenMode(eth, addrGenModeNone)
	}
	if err == nil {
		err = in.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(f.bits, 32)}})
	}
	if err == nil {
		err = in.LinkSetUp(eth)
	}
	if err == nil {
		err = in.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: f.gw.AsSlice()})
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("container side: %w", err), ep.dropNetns())
	}
	if err := f.host.LinkSetUp(veth); err != nil {
		return nil, errors.Join(fmt.Errorf("host end up: %w", err), ep.dropNetns())
	}
	ep.key = append([]byte{unix.IPPROTO_TCP, 0, 0, 0}, binary.BigEndian.AppendUint16(nil, hostPort)...)
	ep.key = append(ep.key, 0, 0)
	ep.port = veth.Name
	val := append(binary.BigEndian.AppendUint16(addr.AsSlice(), ctrPort), 0, 0)
	g, s := ep.claims()
	err = f.nft.SetAddElements(f.pub, []nft.SetElement{{Key: ep.key, Val: val}})
	if err == nil {
		err = f.nft.SetAddElements(f.guarded, g)
	}
	if err == nil {
		err = f.nft.SetAddElements(f.senders, s)
	}
	if err != nil {
		return nil, errors.Join(err, ep.dropNetns())
	}
	if err := f.nft.Flush(); err != nil {
		return nil, errors.Join(fmt.Errorf("publish: %w", err), ep.dropNetns())
	}
	return ep, nil
}

// Detach deletes the namespace (and with it, in the background, the veth
// pair) and the port's map element.
func (f *Floor) Detach(ep *Endpoint) error {
	err := ep.dropNetns()
	g, s := ep.claims()
	e := f.nft.SetDeleteElements(f.pub, []nft.SetElement{{Key: ep.key}})
	if e == nil {
		e = f.nft.SetDeleteElements(f.guarded, g)
	}
	if e == nil {
		e = f.nft.SetDeleteElements(f.senders, s)
	}
	if e != nil {
		return errors.Join(err, e)
	}
	return errors.Join(err, f.nft.Flush())
}

func (ep *Endpoint) dropNetns() error {
	if err := unix.Unmount(ep.Netns, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %w", ep.Netns, err)
	}
	return os.Remove(ep.Netns)
}

// newNetns makes a network namespace, binds it at path and returns it open
// with a netlink handle bound to it. The thread that unshares is locked and
// goes back to its namespace.
func newNetns(path string) (*os.File, *netlink.Handle, error) {
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		return nil, nil, err
	}
	type result struct {
		f   *os.File
		h   *netlink.Handle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer orig.Close()
		var r result
		if r.err = unix.Unshare(unix.CLONE_NEWNET); r.err == nil {
			if r.err = unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); r.err == nil {
				if r.f, r.err = os.Open(path); r.err == nil {
					r.h, r.err = netlink.NewHandle(unix.NETLINK_ROUTE)
				}
			}
		}
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime ends the thread with the goroutine.
			done <- result{err: errors.Join(r.err, err)}
			return
		}
		runtime.UnlockOSThread()
		done <- r
	}()
	r := <-done
	if r.err != nil {
		if r.f != nil {
			r.f.Close()
		}
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return nil, nil, fmt.Errorf("netns %s: %w", path, r.err)
	}
	return r.f, r.h, nil
}

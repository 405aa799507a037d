package link

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/errdefs"
)

// Shape is a rate limit for a container's host-side link, in bits per
// second and bits; zero rates are unlimited. Ingress is traffic into the
// container (leaving the host end), egress traffic out of it (entering the
// host end). A zero burst with a non-zero rate gets a default (see
// ShapeLink).
type Shape struct {
	IngressRate, IngressBurst uint64
	EgressRate, EgressBurst   uint64
}

const (
	// shapeLatency bounds how long a packet may wait in a TBF queue, in
	// microseconds; as the CNI bandwidth plugin's 25ms.
	shapeLatency = 25_000
	// minDefaultBurst is the smallest default burst, in bytes: a full-size
	// GSO packet, which a policer measures whole.
	minDefaultBurst = 64 << 10
	// shapeFilterPrio and shapeFilterHandle name the one u32 filter on the
	// ingress qdisc, so that replacing it is atomic (800::800, the first
	// node of the root hash table).
	shapeFilterPrio   = 1
	shapeFilterHandle = 0x80000800
	// ifbPrefix names the ifb device that shapes egress for the link with
	// index N when the kernel has no police action: kifbN. The alias says
	// which link it is for (ifbAliasPrefix + name).
	ifbPrefix      = "kifb"
	ifbAliasPrefix = "knit-shape:"
)

// ShapeLink limits the traffic of the host-side link dev in the calling
// thread's network namespace; see Handle.ShapeLink.
func ShapeLink(dev string, s Shape) error {
	h, err := Host()
	if err != nil {
		return err
	}
	defer h.Close()
	return h.ShapeLink(dev, s)
}

// ShapeLink limits the traffic of the link dev (a container's host end),
// replacing any limits it had: a zero rate removes that direction's limit.
// Traffic into the container is queued by a token bucket on dev's egress;
// traffic out of it is policed (dropped above the rate) on dev's ingress.
// Where the kernel has no police action (act_police), egress is redirected
// to an ifb device kifbINDEX and queued by a token bucket there, as the CNI
// bandwidth plugin does; that device is deleted by ShapeDel, or by a later
// ShapeLink once dev is gone. A zero burst defaults to 10ms at the rate, at
// least 64 KiB; a policer's burst is raised to 64 KiB, since a smaller one
// would drop every full-size GSO packet. On error no limits are left on dev.
// A missing dev is KindNotFound; a kernel without the needed qdisc, filter
// or action is KindInvalid.
//
// Equivalent to: tc qdisc replace dev DEV root handle 1: tbf rate IRATE
// burst IBURST latency 25ms; tc qdisc add dev DEV ingress (unless there);
// tc filter replace dev DEV parent ffff: prio 1 handle 800::800 protocol
// all u32 match u32 0 0 police rate ERATE burst EBURST drop
//
// or, without act_police, for egress: ip link add kifbN type ifb; ip link
// set kifbN addrgenmode none alias knit-shape:DEV up; tc qdisc replace dev
// kifbN root handle 1: tbf rate ERATE burst EBURST latency 25ms; tc qdisc
// add dev DEV ingress (unless there); tc filter replace dev DEV parent
// ffff: prio 1 handle 800::800 protocol all u32 match u32 0 0 action
// mirred egress redirect dev kifbN
func (h *Handle) ShapeLink(dev string, s Shape) (err error) {
	in, err := newBucket(s.IngressRate, s.IngressBurst)
	if err != nil {
		return errdefs.Invalid("ingress bandwidth limit: %v", err)
	}
	out, err := newBucket(s.EgressRate, s.EgressBurst)
	if err != nil {
		return errdefs.Invalid("egress bandwidth limit: %v", err)
	}
	l, err := h.nl.LinkByName(dev)
	if err != nil {
		return wrap(err, "shape link %s", dev)
	}
	index := l.Attrs().Index
	h.sweepIfbs()
	defer func() {
		if err != nil {
			_ = h.unshape(index)
		}
	}()

	if in.rate == 0 {
		if err := h.delRootTbf(index); err != nil {
			return fmt.Errorf("shape link %s: %w", dev, err)
		}
	} else if err := h.nl.QdiscReplace(in.tbf(index)); err != nil {
		return unsupported(err, "the tbf qdisc (sch_tbf)", "shape link %s: add tbf qdisc", dev)
	}

	if out.rate == 0 {
		if err := errors.Join(h.delIngress(index), h.delIfb(index)); err != nil {
			return fmt.Errorf("shape link %s: %w", dev, err)
		}
		return nil
	}
	// Not QdiscReplace: netlink sends the ingress qdisc empty options, which
	// the kernel refuses to change.
	if _, ingress, err := h.qdiscs(index); err != nil {
		return fmt.Errorf("shape link %s: %w", dev, err)
	} else if !ingress {
		if err := h.nl.QdiscAdd(ingressQdisc(index)); err != nil {
			return unsupported(err, "the ingress qdisc (sch_ingress)", "shape link %s: add ingress qdisc", dev)
		}
	}
	if pol, ok := out.police(); ok {
		err := h.nl.FilterReplace(shapeFilter(index, pol))
		if err == nil {
			if err := h.delIfb(index); err != nil {
				return fmt.Errorf("shape link %s: %w", dev, err)
			}
			return nil
		}
		if !isUnsupported(err) {
			return wrap(err, "shape link %s: add police filter", dev)
		}
		// No act_police (or no cls_u32, which the ifb way fails on too).
	}
	return h.shapeEgressIfb(dev, index, out)
}

// shapeEgressIfb queues dev's ingress traffic in a token bucket on an ifb
// device: see ShapeLink.
func (h *Handle) shapeEgressIfb(dev string, index int, out bucket) error {
	const need = "the u32 classifier (cls_u32) and either the police action (act_police) or the ifb device and the mirred action (ifb, act_mirred)"
	name := ifbPrefix + strconv.Itoa(index)
	ifb := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.nl.LinkAdd(ifb); errors.Is(err, unix.EEXIST) {
		l, err := h.nl.LinkByName(name)
		if err != nil {
			return wrap(err, "shape link %s: get ifb %s", dev, name)
		}
		if l.Type() != "ifb" {
			return errdefs.Conflict("shape link %s: %s exists and is a %s, not an ifb", dev, name, l.Type())
		}
		ifb.Index = l.Attrs().Index
	} else if err != nil {
		return unsupported(err, need, "shape link %s: add ifb %s", dev, name)
	}
	if ifb.Index == 0 {
		l, err := h.nl.LinkByName(name)
		if err != nil {
			return wrap(err, "shape link %s: get ifb %s", dev, name)
		}
		ifb.Index = l.Attrs().Index
	}
	if err := h.LinkSetNoIPv6Addrs(ifb.Index); err != nil {
		return fmt.Errorf("shape link %s: ifb %s: %w", dev, name, err)
	}
	if err := h.nl.LinkSetAlias(ifb, ifbAliasPrefix+dev); err != nil {
		return wrap(err, "shape link %s: set ifb %s alias", dev, name)
	}
	if err := h.nl.LinkSetUp(ifb); err != nil {
		return wrap(err, "shape link %s: set ifb %s up", dev, name)
	}
	if err := h.nl.QdiscReplace(out.tbf(ifb.Index)); err != nil {
		return unsupported(err, "the tbf qdisc (sch_tbf)", "shape link %s: add tbf qdisc on %s", dev, name)
	}
	redirect := netlink.NewMirredAction(ifb.Index) // egress redirect, stolen
	if err := h.nl.FilterReplace(shapeFilter(index, redirect)); err != nil {
		return unsupported(err, need, "shape link %s: add mirred filter", dev)
	}
	return nil
}

// ShapeGet returns the limits ShapeLink installed on dev; zero if none. A
// missing dev is KindNotFound. Rates and bursts come back through the
// kernel's units and may differ from what was set by a rounding error.
//
// Equivalent to: tc qdisc show dev DEV; tc filter show dev DEV parent ffff:
func (h *Handle) ShapeGet(dev string) (Shape, error) {
	l, err := h.nl.LinkByName(dev)
	if err != nil {
		return Shape{}, wrap(err, "get shape of %s", dev)
	}
	var s Shape
	index := l.Attrs().Index
	tbf, hasIngress, err := h.qdiscs(index)
	if err != nil {
		return Shape{}, fmt.Errorf("get shape of %s: %w", dev, err)
	}
	if tbf != nil {
		s.IngressRate, s.IngressBurst = tbfShape(tbf)
	}
	if !hasIngress {
		return s, nil
	}
	filters, err := dump(func() ([]netlink.Filter, error) {
		return h.nl.FilterList(byIndex(index), netlink.HANDLE_INGRESS)
	})
	if err != nil {
		return Shape{}, wrap(err, "get shape of %s: list filters", dev)
	}
	for _, f := range filters {
		u, ok := f.(*netlink.U32)
		if !ok || u.Priority != shapeFilterPrio || u.Handle != shapeFilterHandle {
			continue
		}
		actions := u.Actions
		if u.Police != nil {
			actions = append(actions, u.Police)
		}
		for _, a := range actions {
			switch a := a.(type) {
			case *netlink.PoliceAction:
				s.EgressRate, s.EgressBurst = uint64(a.Rate)*8, uint64(a.Burst)*8
			case *netlink.MirredAction:
				tbf, _, err := h.qdiscs(a.Ifindex)
				if err != nil {
					return Shape{}, fmt.Errorf("get shape of %s: %w", dev, err)
				}
				if tbf != nil {
					s.EgressRate, s.EgressBurst = tbfShape(tbf)
				}
			}
		}
	}
	return s, nil
}

// ShapeDel removes the limits ShapeLink installed on dev, and its ifb
// device if it has one. A missing dev is KindNotFound, and its ifb (which
// outlives it) goes too: the teardown of an attachment whose namespace,
// and so veth, the runtime deleted first calls ShapeDel for it.
//
// Equivalent to: tc qdisc del dev DEV root; tc qdisc del dev DEV ingress;
// ip link del kifbN
func (h *Handle) ShapeDel(dev string) error {
	l, err := h.nl.LinkByName(dev)
	h.sweepIfbs()
	if err != nil {
		return wrap(err, "remove shape of %s", dev)
	}
	if err := h.unshape(l.Attrs().Index); err != nil {
		return fmt.Errorf("remove shape of %s: %w", dev, err)
	}
	return nil
}

// unshape removes every limit from the link with the given index.
func (h *Handle) unshape(index int) error {
	return errors.Join(h.delRootTbf(index), h.delIngress(index), h.delIfb(index))
}

// qdiscs returns the link's root qdisc if it is a TBF, and whether the link
// has an ingress qdisc.
func (h *Handle) qdiscs(index int) (*netlink.Tbf, bool, error) {
	qs, err := dump(func() ([]netlink.Qdisc, error) { return h.nl.QdiscList(byIndex(index)) })
	if err != nil {
		return nil, false, wrap(err, "list qdiscs of link %d", index)
	}
	var tbf *netlink.Tbf
	ingress := false
	for _, q := range qs {
		switch q := q.(type) {
		case *netlink.Tbf:
			if q.Parent == netlink.HANDLE_ROOT {
				tbf = q
			}
		case *netlink.Ingress:
			ingress = true
		}
	}
	return tbf, ingress, nil
}

func (h *Handle) delRootTbf(index int) error {
	tbf, _, err := h.qdiscs(index)
	if err != nil || tbf == nil {
		return err
	}
	if err := h.nl.QdiscDel(tbf); err != nil && !errors.Is(err, unix.ENOENT) {
		return wrap(err, "delete tbf qdisc of link %d", index)
	}
	return nil
}

func (h *Handle) delIngress(index int) error {
	_, ingress, err := h.qdiscs(index)
	if err != nil || !ingress {
		return err
	}
	if err := h.nl.QdiscDel(ingressQdisc(index)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return wrap(err, "delete ingress qdisc of link %d", index)
	}
	return nil
}

// delIfb deletes the ifb device of the link with the given index, if any.
func (h *Handle) delIfb(index int) error {
	name := ifbPrefix + strconv.Itoa(index)
	l, err := h.nl.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) || errors.Is(err, unix.ENODEV) {
		return nil
	} else if err != nil {
		return wrap(err, "get ifb %s", name)
	}
	if l.Type() != "ifb" {
		return nil
	}
	if err := h.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return wrap(err, "delete ifb %s", name)
	}
	return nil
}

// sweepIfbs deletes, best effort, the ifb devices of links that are gone:
// deleting a link takes its qdiscs and filters with it, but not its ifb.
func (h *Handle) sweepIfbs() {
	links, err := dump(h.nl.LinkList)
	if err != nil {
		return
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	for _, l := range links {
		a := l.Attrs()
		index, err := strconv.Atoi(strings.TrimPrefix(a.Name, ifbPrefix))
		if l.Type() != "ifb" || !strings.HasPrefix(a.Name, ifbPrefix) || err != nil ||
			!strings.HasPrefix(a.Alias, ifbAliasPrefix) {
			continue
		}
		if names[index] != strings.TrimPrefix(a.Alias, ifbAliasPrefix) {
			_ = h.nl.LinkDel(l)
		}
	}
}

// bucket is a token bucket in the kernel's units: bytes per second and
// bytes; rate 0 is no limit.
type bucket struct {
	rate  uint64
	burst uint32
}

func newBucket(rateBits, burstBits uint64) (bucket, error) {
	if rateBits == 0 {
		return bucket{}, nil
	}
	b := bucket{rate: rateBits / 8}
	if b.rate == 0 {
		return bucket{}, fmt.Errorf("rate %d bits/s is below 8", rateBits)
	}
	burst := burstBits / 8
	if burst == 0 {
		burst = max(b.rate/100, minDefaultBurst)
	}
	// The kernel keeps the burst in 32 bits of bytes, and as the time it
	// takes at the rate in 32 bits of ticks. A larger one is capped, not
	// refused: containerd and CRI-O send 2^32-1 bits and more to mean "no
	// particular burst" with every Kubernetes bandwidth limit.
	ticksPerByte := netlink.TIME_UNITS_PER_SEC * netlink.TickInUsec() / float64(b.rate)
	b.burst = uint32(min(burst, math.MaxUint32, uint64((math.MaxUint32-1)/ticksPerByte)))
	return b, nil
}

// tbf is the bucket as a root TBF qdisc on the link with the given index,
// with the CNI bandwidth plugin's buffer and limit.
func (b bucket) tbf(index int) *netlink.Tbf {
	buffer := float64(b.burst) / float64(b.rate) * netlink.TIME_UNITS_PER_SEC * netlink.TickInUsec()
	limit := min(float64(b.rate)*shapeLatency/netlink.TIME_UNITS_PER_SEC+float64(b.burst), math.MaxUint32)
	return &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: index,
			Handle:    netlink.MakeHandle(1, 0),
			Parent:    netlink.HANDLE_ROOT,
		},
		Rate:   b.rate,
		Buffer: uint32(buffer),
		Limit:  uint32(limit),
	}
}

// tbfShape returns a TBF's rate and burst in bits.
func tbfShape(q *netlink.Tbf) (rate, burst uint64) {
	return q.Rate * 8, uint64(netlink.Xmitsize(q.Rate, q.Buffer)) * 8
}

// police is the bucket as a police action that drops what exceeds it;
// false if the rate is too high for one (32 bits of bytes/s).
func (b bucket) police() (*netlink.PoliceAction, bool) {
	if b.rate > math.MaxUint32 {
		return nil, false
	}
	p := netlink.NewPoliceAction()
	p.Rate, p.Burst = uint32(b.rate), max(b.burst, minDefaultBurst)
	p.Mtu = 1 << 17 // no packet is too big; GSO ones are checked per segment
	p.ExceedAction, p.NotExceedAction = netlink.TC_POLICE_SHOT, netlink.TC_POLICE_OK
	return p, true
}

func ingressQdisc(index int) *netlink.Ingress {
	return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
}

// shapeFilter is the match-all u32 filter on the link's ingress qdisc that
// runs action.
func shapeFilter(index int, action netlink.Action) *netlink.U32 {
	return &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: index,
			Parent:    netlink.HANDLE_INGRESS,
			Priority:  shapeFilterPrio,
			Handle:    shapeFilterHandle,
			Protocol:  unix.ETH_P_ALL,
		},
		Sel:     &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{{}}},
		Actions: []netlink.Action{action},
	}
}

// isUnsupported reports whether a netlink add failed because the kernel
// lacks the qdisc, classifier, action or link kind asked for.
func isUnsupported(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP)
}

// unsupported wraps an add's error, as KindInvalid naming what the kernel
// needs if it lacks it.
func unsupported(err error, need, format string, args ...any) error {
	if isUnsupported(err) {
		return errdefs.Invalid("bandwidth limits need %s, which this kernel lacks: %s: %w", need, fmt.Sprintf(format, args...), err)
	}
	return wrap(err, format, args...)
}

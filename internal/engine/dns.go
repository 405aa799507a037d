package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/dns/server"
	"github.com/knit-dev/knit/internal/faults"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/store"
	"golang.org/x/sys/unix"
)

// bucketDNS indexes the containers the embedded DNS server answers for:
// container ID → dnsRecord, kept by putContainer for created and running
// containers with an endpoint on a DNS-enabled network. A snapshot of the
// server's records reads this and the networks, never every container.
const bucketDNS = "dns"

// dnsRecord is what the DNS server needs of one container.
type dnsRecord struct {
	Name      string       `json:"name"`
	Hostname  string       `json:"hostname"`
	Upstreams []netip.Addr `json:"upstreams,omitempty"` // --dns
	Endpoints []Endpoint   `json:"endpoints"`           // on DNS-enabled networks
	// Isolated: every network of the container is --internal, so its
	// queries go only to a server on the network it asks (see
	// server.Endpoint).
	Isolated bool `json:"isolated,omitempty"`
	// IPv6, NoIPv4: the container has IPv6 addresses, no IPv4 ones (see
	// server.Endpoint).
	IPv6   bool `json:"ipv6,omitempty"`
	NoIPv4 bool `json:"noIPv4,omitempty"`
	// NdotsSet: the container's resolv.conf options (its --dns-option,
	// else the host's) set ndots (see server.Endpoint).
	NdotsSet bool `json:"ndotsSet,omitempty"`
	// Links: its --link aliases → the targets' IDs, names only it
	// resolves on LinkNetwork, its first network, where links run (see
	// server.Endpoint).
	Links       map[string]string `json:"links,omitempty"`
	LinkNetwork string            `json:"linkNetwork,omitempty"`
	// Netns is a CNI attachment's namespace, which its queries go
	// upstream from (a knit container's is netnsPath of its ID); without
	// it, from the host, and nothing for an isolated one (see
	// putAttachment).
	Netns string `json:"netns,omitempty"`
}

// putDNS keeps c's entry of bucketDNS in step with its record.
func putDNS(tx store.Tx, c *Container) error {
	var eps []Endpoint
	isolated := len(c.Endpoints) > 0
	if c.State.Status == StatusCreated || c.State.Status == StatusRunning {
		for _, ep := range c.Endpoints {
			if ep.Network == ModeBridge { // the default network has no DNS
				isolated = false
				continue
			}
			n, err := getNetwork(tx, ep.Network)
			if err != nil || !n.Internal {
				isolated = false
			}
			if err == nil && n.DNS {
				eps = append(eps, ep)
			}
		}
	}
	if len(eps) == 0 {
		return tx.Delete(bucketDNS, c.ID)
	}
	ndots := files.HasNdots(c.Spec.DNSOptions) || c.Spec.HostResolv != nil && files.HasNdots(c.Spec.HostResolv.Options)
	r := dnsRecord{Name: c.Name, Hostname: c.Spec.Hostname, Upstreams: c.Spec.DNS, Endpoints: eps, Isolated: isolated, NdotsSet: ndots,
		IPv6:   slices.ContainsFunc(c.Endpoints, func(ep Endpoint) bool { return ep.HasIPv6() }),
		NoIPv4: !slices.ContainsFunc(c.Endpoints, func(ep Endpoint) bool { return ep.HasIPv4() })}
	// Links run on the container's first network (reserveLinks); on the
	// default one, without DNS, they are /etc/hosts lines only, as Docker's.
	if len(c.Links) > 0 && eps[0].Network == c.Endpoints[0].Network {
		r.Links, r.LinkNetwork = map[string]string{}, c.Endpoints[0].Network
		for _, l := range c.Links {
			r.Links[cmp.Or(l.Alias, l.Name)] = l.TargetID
		}
	}
	return putJSON(tx, bucketDNS, c.ID, r)
}

// hostResolvOptions are the options of the host's resolv.conf, which a
// container's gets unless --dns-option is given.
func hostResolvOptions() []string { return files.ParseResolvConf(commandHostResolv().file).Options }

func (e *Engine) dnsDir() string { return filepath.Join(e.paths.ExecRoot, "dns") }

// dnsServer returns the address the embedded DNS server answers c on: a
// gateway of c's DNS-enabled networks, those that are not internal first
// (on an internal one's the server forwards only to servers on that
// network, for containers on internal networks only), IPv4 first,
// then in c's order of networks.
func dnsServer(nets []*Network) (netip.Addr, bool) {
	for _, open := range []bool{true, false} {
		for _, fam4 := range []bool{true, false} {
			for _, n := range nets {
				if !n.DNS || n.Internal == open {
					continue
				}
				for _, s := range n.Subnets {
					if s.Prefix.Addr().Is4() == fam4 && s.Gateway.IsValid() {
						return s.Gateway, true
					}
				}
			}
		}
	}
	return netip.Addr{}, false
}

// dnsRedirector keeps the rules in a container's network namespace that
// send 127.0.0.11:53 to the embedded server (nftables.Firewall's).
type dnsRedirector interface {
	// RedirectDNS makes or retargets them.
	RedirectDNS(nsPath string, server netip.Addr) error
	HasDNSRedirect(nsPath string) (bool, error)
	RemoveDNSRedirect(nsPath string) error
}

// dnsRedirectTarget is where a container on nets asks for names at
// 127.0.0.11, as Docker's do: the embedded server on dnsServer's gateway
// when it is an IPv4 one. None (invalid) when it is IPv6 (the NAT cannot
// change families; resolv.conf then names the gateway), when there is
// none, or when knit's firewall is off.
func (e *Engine) dnsRedirectTarget(nets []*Network) netip.Addr {
	if e.dnsr == nil {
		return netip.Addr{}
	}
	if gw, ok := dnsServer(nets); ok && gw.Is4() {
		return gw
	}
	return netip.Addr{}
}

// redirectDNS points 127.0.0.11:53 of the namespace at nsPath at server,
// or removes the redirect when server is invalid; fresh says the
// namespace is new (no flows to forget). route_localnet lets the
// redirected query leave, and its reply in, with their loopback address;
// the rules' input drop keeps anything else addressed to a loopback
// address out, so they go in first, and go last.
func (e *Engine) redirectDNS(nsPath string, server netip.Addr, fresh bool) error {
	// A container gone meanwhile (stopped while it was being connected)
	// has no namespace left to change.
	if e.dnsr == nil || nsPath == "" || !fresh && !netns.Mounted(nsPath) {
		return nil
	}
	if !server.IsValid() {
		// Only a namespace knit redirected had route_localnet turned on
		// by knit.
		if had, err := e.dnsr.HasDNSRedirect(nsPath); err != nil || !had {
			return err
		}
		if err := netns.Do(nsPath, func() error { return link.RouteLocalnet("all", false) }); err != nil {
			return fmt.Errorf("route_localnet: %w", err)
		}
		return e.dnsr.RemoveDNSRedirect(nsPath)
	}
	if err := e.dnsr.RedirectDNS(nsPath, server); err != nil {
		return err
	}
	// Also when the rules were in place: a crash may have come between
	// them and this.
	if err := netns.Do(nsPath, func() error { return link.RouteLocalnet("all", true) }); err != nil {
		return fmt.Errorf("route_localnet: %w", err)
	}
	if fresh {
		return nil
	}
	// A client that keeps its source port (a resolver library's socket)
	// keeps its flow's first translation: the flows to another server go,
	// also those a retarget cut short by a crash left (its rules, found
	// in place, say nothing changed).
	h, err := link.ConntrackAt(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	return h.ConntrackDeleteRetargeted(firewall.EmbeddedDNS, 53, server)
}

// syncDNS rewrites the DNS server's records from the store and starts the
// server if records need one and none runs. The server reloads them by
// itself and exits when no network is left. The write and the check run
// under one lock so that the last snapshot written is the newest.
func (e *Engine) syncDNS() error {
	dir := e.dnsDir()
	if err := e.prepareExecRoot(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(filepath.Join(dir, "sync.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	snap, err := e.dnsSnapshot()
	if err != nil {
		return err
	}
	faults.Step("dns.save")
	if err := server.Save(dir, snap); err != nil {
		return fmt.Errorf("write DNS records: %w", err)
	}
	if len(snap.Networks) == 0 {
		return nil
	}
	if !server.Running(dir) || e.stopReplacedDNS(dir) {
		if err := e.startDNS(dir); err != nil {
			return err
		}
		e.warnInputDrops()
	}
	// Said, not returned: the container runs, but its names may not
	// answer (a DNS server of the host's holding port 53 on every
	// address, say).
	for _, failed := range server.ListenErrors(dir) {
		fmt.Fprintf(os.Stderr, "knit: warning: the embedded DNS server cannot listen on %s (containers asking it there, or at 127.0.0.11, get no answer; it tries again every second)\n", failed)
	}
	return nil
}

// hostUpstreams are the servers the embedded server sends a container's
// other names to when it has no --dns: the host's /etc/resolv.conf's,
// loopback ones (a local stub) included, which the server asks from the
// host (files.AskedFromHost).
func hostUpstreams() []netip.Addr {
	b, _ := os.ReadFile(hostResolvConf)
	return files.ParseResolvConf(b).Nameservers
}

// inputDropper is the firewall's, when it can tell (InputDrops).
type inputDropper interface{ InputDrops() ([]string, error) }

// warnInputDrops says, as the DNS server starts, that a firewall of the
// host's drops by default what reaches the host: the containers' queries
// to their gateway go through it, and no rule of knit's can let them in.
func (e *Engine) warnInputDrops() {
	d, ok := e.dnsr.(inputDropper)
	if !ok {
		return
	}
	drops, err := d.InputDrops()
	if err != nil || len(drops) == 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "knit: warning: the host's firewall drops what reaches the host unless allowed (%s): containers on user-defined networks ask the embedded DNS server on their gateway's port 53 through it, and get no answer unless udp and tcp port 53 are allowed in from knit's bridges (ufw: ufw allow in on BRIDGE to any port 53)\n", strings.Join(drops, ", "))
}

// dnsSnapshot builds the server's records: every DNS-enabled network with a
// container on it, and those containers.
func (e *Engine) dnsSnapshot() (*server.Snapshot, error) {
	snap := &server.Snapshot{Networks: []server.Network{}}
	for _, a := range hostUpstreams() {
		snap.Upstreams = append(snap.Upstreams, netip.AddrPortFrom(a, 53))
	}
	if len(snap.Upstreams) == 0 { // Docker's fallback
		snap.Upstreams = []netip.AddrPort{netip.MustParseAddrPort("8.8.8.8:53"), netip.MustParseAddrPort("8.8.4.4:53")}
	}
	byNet := map[string]*server.Network{}
	var order []string
	err := e.st.View(func(tx store.Tx) error {
		nets, err := listNetworks(tx)
		if err != nil {
			return err
		}
		dnsNets := map[string]*Network{}
		for _, n := range nets {
			if n.DNS && !n.Removing {
				dnsNets[n.Name] = n
			}
		}
		return tx.List(bucketDNS, func(id string, v []byte) error {
			var r dnsRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			var ups []netip.AddrPort
			for _, a := range r.Upstreams {
				ups = append(ups, netip.AddrPortFrom(a, 53))
			}
			for _, ep := range r.Endpoints {
				n := dnsNets[ep.Network]
				if n == nil {
					continue
				}
				sn := byNet[n.Name]
				if sn == nil {
					sn = &server.Network{Name: n.Name, Internal: n.Internal}
					for _, s := range n.Subnets {
						if s.Gateway.IsValid() {
							sn.Listen = append(sn.Listen, s.Gateway)
						}
						sn.Subnets = append(sn.Subnets, s.Prefix)
					}
					byNet[n.Name] = sn
					order = append(order, n.Name)
				}
				se := server.Endpoint{Container: id, Name: r.Name, Hostname: r.Hostname, Aliases: ep.Aliases, Upstreams: ups,
					Isolated: r.Isolated, NdotsSet: r.NdotsSet, Netns: r.Netns, IPv6: r.IPv6, NoIPv4: r.NoIPv4}
				if ep.Network == r.LinkNetwork {
					se.Links = r.Links
				}
				if !strings.HasPrefix(id, cniIDPrefix) {
					se.ShortID = id[:min(12, len(id))]
					se.Netns = e.netnsPath(id) // a record is kept only while it has one
				}
				for _, a := range ep.Addrs {
					se.Addrs = append(se.Addrs, a.Addr())
				}
				sn.Endpoints = append(sn.Endpoints, se)
			}
			return nil
		})
	})
	slices.Sort(order)
	for _, name := range order {
		snap.Networks = append(snap.Networks, *byNet[name])
	}
	return snap, err
}

// startDNS starts the server as a process of its own that outlives this
// command, and waits until it answers.
func (e *Engine) startDNS(dir string) error {
	logf, err := os.OpenFile(filepath.Join(dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	_ = os.Remove(filepath.Join(dir, server.PIDFile))
	cmd := exec.Command(e.self, "--data-root", e.paths.DataRoot, "--exec-root", e.paths.ExecRoot, "_dns")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = slices.DeleteFunc(os.Environ(), func(s string) bool {
		return strings.HasPrefix(s, netns.EnvJoin+"=") || strings.HasPrefix(s, netns.EnvJoined+"=")
	})
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the DNS server: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, server.PIDFile)); err == nil {
			return nil
		}
		select {
		case err := <-done:
			if server.Running(dir) { // another command's server won the lock
				return nil
			}
			return fmt.Errorf("the DNS server exited at start (%v): see %s", err, logf.Name())
		case <-deadline:
			return fmt.Errorf("the DNS server did not start within 5s: see %s", logf.Name())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// stopReplacedDNS stops the running server if it runs this binary's path
// replaced since it started (knit upgraded in place: its /proc/PID/exe
// is that path, deleted, and the path has a file again), and reports
// whether it did, for the caller to start one of its own: a server lives
// as long as its networks, and would go on answering as the old version
// did. Another install's server (a CNI plugin's copy elsewhere) and one
// whose binary was removed are left alone. Only a server of this
// exec-root's, by its command line, is signalled, through a pidfd taken
// before that check; SIGKILL if SIGTERM has not ended it within 2 s.
func (e *Engine) stopReplacedDNS(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, server.PIDFile))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if path, deleted := strings.CutSuffix(exe, " (deleted)"); err != nil || !deleted || path != e.self {
		return false
	}
	if _, err := os.Stat(e.self); err != nil {
		return false
	}
	// Taken once the server looks replaced (not on every sync), and before
	// the command line is read: the signals go to the process checked.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(pidfd)
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	if err != nil || args[len(args)-1] != "_dns" || !slices.Contains(args, e.paths.ExecRoot) {
		return false
	}
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGKILL} {
		if unix.PidfdSendSignal(pidfd, sig, nil, 0) != nil {
			return !server.Running(dir)
		}
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if !server.Running(dir) {
				return true
			}
		}
	}
	return false
}

// ServeDNS runs the embedded DNS server in the calling process until no
// network needs it (the hidden command `knit _dns`).
func (e *Engine) ServeDNS() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return server.Serve(ctx, e.dnsDir(), slog.Default())
}

// usesDNS reports whether c may have records in the DNS server: an endpoint
// on a network other than the default one (which has no DNS).
func usesDNS(c *Container) bool {
	return slices.ContainsFunc(c.Endpoints, func(ep Endpoint) bool { return ep.Network != ModeBridge })
}

// dnsChanged resyncs the DNS server after c's records went away.
func (e *Engine) dnsChanged(c *Container) {
	if usesDNS(c) {
		e.resyncDNS()
	}
}

// resyncDNS resyncs the DNS server after records went away. A failure only
// delays the removal of stale names until the next sync, so it is
// reported, not returned.
func (e *Engine) resyncDNS() {
	if err := e.syncDNS(); err != nil {
		fmt.Fprintf(os.Stderr, "knit: update DNS records: %v\n", err)
	}
}

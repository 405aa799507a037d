package engine

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/faults"
	"github.com/knit-dev/knit/internal/firewall"
	"golang.org/x/sys/unix"
)

// Host files read to build the container's own.
const (
	hostResolvConf = "/etc/resolv.conf"
	hostHosts      = "/etc/hosts"
	// resolvedConf lists systemd-resolved's upstream servers.
	resolvedConf = "/run/systemd/resolve/resolv.conf"
)

// hostResolvRead is the host's resolv.conf as containers' are built from
// it (file, read from path: when /etc/resolv.conf names only
// systemd-resolved's stub, 127.0.0.53, unreachable from a container's
// namespace, the upstream servers resolved uses, as Docker does), and its
// /etc/resolv.conf as the embedded DNS server forwards to it (raw:
// hostUpstreams).
type hostResolvRead struct {
	file []byte
	path string
	raw  []byte
}

func readHostResolvFrom(etc, resolved string) hostResolvRead {
	raw, _ := os.ReadFile(etc)
	r := hostResolvRead{file: raw, path: etc, raw: raw}
	stub := netip.MustParseAddr("127.0.0.53")
	if ns := files.ParseResolvConf(raw).Nameservers; len(ns) == 1 && ns[0] == stub {
		if b, err := os.ReadFile(resolved); err == nil {
			r.file, r.path = b, resolved
		}
	}
	return r
}

// commandHostResolv reads the host's files once per process: a run reads
// them for its record (Spec.HostResolv) and for its /etc files. Only
// commands, which live milliseconds, use it; the DNS server's records
// (dnsSnapshot), which a supervisor also writes, read them afresh.
var commandHostResolv = sync.OnceValue(func() hostResolvRead { return readHostResolvFrom(hostResolvConf, resolvedConf) })

// writeFiles writes the container's hosts, resolv.conf and hostname into its
// directory; the runner bind-mounts them over /etc inside the container, so
// the host's own files never change. container:NAME shares NAME's files.
// The caller has prepared the exec-root.
func (e *Engine) writeFiles(c *Container, o *RunOptions, p *plan) error {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	if c.JoinedTo != "" {
		return nil
	}
	hosts, resolv, err := e.etcFiles(c, o, p.mode, p.networks)
	if err != nil {
		return err
	}
	if target := e.dnsRedirectTarget(p.networks); c.OwnsNetns && target.IsValid() {
		if err := e.redirectDNS(c.Netns, target, true); err != nil {
			return err
		}
	}
	for name, data := range map[string][]byte{
		"hosts":       hosts,
		"resolv.conf": resolv,
		"hostname":    files.Hostname(c.Spec.Hostname),
	} {
		path := filepath.Join(c.Dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
		if name != "hostname" {
			noteWritten(path, data)
		}
	}
	return nil
}

// writtenAttr holds, on a container's hosts and resolv.conf, what knit
// last wrote there, so that a refresh tells the user's edits from its own
// (Docker keeps a hash of resolv.conf, and edits hosts line by line). A
// file system without trusted xattrs keeps none: the files are rewritten
// whole, as before.
const writtenAttr = "trusted.knit.written"

// pendingAttr holds, while a refresh rewrites a file, what it is writing:
// a refresh cut short by a crash between its rewrite and its record leaves
// it, and the next one tells from it which of the file's lines are knit's.
const pendingAttr = "trusted.knit.pending"

func noteWritten(path string, data []byte) { _ = unix.Setxattr(path, writtenAttr, data, 0) }

// lastWritten returns what noteWritten recorded on path, if anything.
func lastWritten(path string) ([]byte, bool) { return getAttr(path, writtenAttr) }

// getAttr returns the xattr name of path, if it has one.
func getAttr(path, name string) ([]byte, bool) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < 1<<20 {
			buf = make([]byte, 4*len(buf))
			continue
		}
		if err != nil {
			return nil, false
		}
		return buf[:n], true
	}
}

// refreshFile gives path the content data if it still holds what knit
// last wrote there (or knit kept no record). In one the container's user
// edited only knit's own lines change: those it wrote and no longer wants
// go, the new ones are added at the end, as Docker's etchosts does for
// hosts. (Docker leaves an edited resolv.conf alone, its 127.0.0.11 always
// answering; knit's answers only while the container is on a DNS network,
// so its nameserver line must follow.) A refresh cut short is repaired by
// the next: what it was writing is recorded first (pendingAttr), and if
// the file shows that rewrite done, its lines count as knit's.
func refreshFile(path string, data []byte) error {
	cur, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing mounts it
	}
	if err != nil {
		return err
	}
	old, known := lastWritten(path)
	if pending, ok := getAttr(path, pendingAttr); ok && known && files.RewriteDone(cur, old, pending) {
		old = pending // the rewrite of a refresh cut short was done
	}
	content := data
	if known && !bytes.Equal(cur, old) && !bytes.Equal(cur, data) {
		content = files.MergeLines(cur, old, data)
	}
	if !bytes.Equal(cur, content) {
		_ = unix.Setxattr(path, pendingAttr, data, 0)
		if err := rewriteInPlace(path, content); err != nil {
			return err
		}
		faults.Step("files.rewritten")
	}
	noteWritten(path, data)
	_ = unix.Removexattr(path, pendingAttr)
	return nil
}

// etcFiles builds the container's hosts and resolv.conf from its
// addresses, its run options and the networks it is on (mode is the
// network mode; host networking starts from the host's own files).
func (e *Engine) etcFiles(c *Container, o *RunOptions, mode string, nets []*Network) (hosts, resolv []byte, err error) {
	extra, err := e.extraHosts(o)
	if err != nil {
		return nil, nil, err
	}
	hostMode := mode == ModeHost
	var hostResolv []byte
	hostResolvPath := hostResolvConf
	if hostMode { // the host's own files, its resolver's stub reachable
		base, _ := os.ReadFile(hostHosts)
		hosts = files.AppendHosts(base, extra)
		hostResolv, _ = os.ReadFile(hostResolvConf)
		if len(o.DNS) == 0 && len(o.DNSSearch) == 0 && len(o.DNSOptions) == 0 {
			// As Docker's: the host's file as it is (its sortlist, its
			// comments; no nameserver line means the host's 127.0.0.1,
			// which the container shares, not a public fallback).
			return hosts, hostResolv, nil
		}
	} else {
		// --add-host before links, as Docker's: the first line of a name
		// is the one resolvers take.
		hosts = files.Hosts(ownHosts(c), append(extra, e.linkHosts(c)...))
		h := commandHostResolv()
		hostResolv, hostResolvPath = h.file, h.path
	}
	ro := files.ResolvOptions{
		DNS: o.DNS, Search: o.DNSSearch, Options: o.DNSOptions,
		KeepLoopback: hostMode, IPv6: wantsIPv6(nets), NoIPv4: len(nets) > 0 && !slices.ContainsFunc(nets, (*Network).HasIPv4),
		Source: hostResolvPath,
	}
	if h := c.Spec.HostResolv; h != nil && !hostMode {
		ro.HostOptions, ro.HostOptionsKept = h.Options, true // as when it was made
	}
	// On a DNS-enabled network the embedded server answers, at 127.0.0.11
	// (redirected to a network's gateway, redirectDNS) or on the gateway,
	// and forwards other names to o.DNS or the host's.
	if gw, ok := dnsServer(nets); ok {
		if e.dnsRedirectTarget(nets).IsValid() {
			gw = firewall.EmbeddedDNS
		}
		// Where the server sends this container's other names, as
		// dnsSnapshot has it: its --dns, else the host's servers.
		ro.Upstreams, ro.UserDNS = o.DNS, len(o.DNS) > 0
		if !ro.UserDNS {
			ro.Upstreams = files.ParseResolvConf(commandHostResolv().raw).Nameservers
		}
		ro.DNS, ro.Embedded = []netip.Addr{gw}, true
	}
	return hosts, files.ResolvConf(hostResolv, ro), nil
}

// ownHosts maps each of the container's addresses to its hostname and name.
func ownHosts(c *Container) []files.HostEntry {
	fqdn := c.Spec.Hostname
	if c.Spec.Domainname != "" {
		fqdn += "." + c.Spec.Domainname
	}
	names := []string{fqdn}
	// A dotted hostname's first label is a name of the container too, as
	// in Docker's hosts file ("IP web.example.com web").
	if short, _, dotted := strings.Cut(fqdn, "."); dotted && short != "" {
		names = append(names, short)
	}
	if !slices.Contains(names, c.Name) {
		names = append(names, c.Name)
	}
	var out []files.HostEntry
	for _, ep := range c.Endpoints {
		for _, a := range ep.Addrs {
			out = append(out, files.HostEntry{IP: a.Addr(), Names: names})
		}
	}
	return out
}

// extraHosts resolves --add-host entries; host-gateway is the default
// bridge's gateway, the host address containers can always reach.
func (e *Engine) extraHosts(o *RunOptions) ([]files.HostEntry, error) {
	var gw netip.Addr
	out := make([]files.HostEntry, 0, len(o.AddHosts))
	for _, h := range o.AddHosts {
		if h.HostGateway {
			if !gw.IsValid() {
				n, err := e.network(ModeBridge)
				if err != nil {
					return nil, fmt.Errorf("resolve host-gateway: %w", err)
				}
				if len(n.Subnets) > 0 {
					gw = n.Subnets[0].Gateway
				}
			}
			h.IP, h.HostGateway = gw, false
		}
		out = append(out, h)
	}
	return out, nil
}

func extraHostStrings(o *RunOptions) []string {
	var out []string
	for _, h := range o.AddHosts {
		ip := h.IP.String()
		if h.HostGateway {
			ip = "host-gateway"
		}
		for _, n := range h.Names {
			out = append(out, n+":"+ip)
		}
	}
	return out
}

// refreshFiles rewrites a running container's /etc/hosts and resolv.conf
// from its record after it joined or left a network, as Docker does: its
// addresses on each of its networks in hosts, and resolv.conf naming the
// embedded server of one of its DNS networks, or the container's --dns or
// the host's servers once none is left. The files are rewritten in place:
// the container sees them through bind mounts. A lock orders two connects
// at once, and each writes from the record as it is under the lock.
func (e *Engine) refreshFiles(id string) error {
	c, err := e.get(id)
	if err != nil || c.JoinedTo != "" || !c.Running() {
		return nil // gone, stopped, or sharing another container's files
	}
	unlock, err := lockFile(filepath.Join(c.Dir, "files.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if c, err = e.get(id); err != nil {
		return nil
	}
	var nets []*Network
	for _, ep := range c.Endpoints {
		if n, err := e.lookupNetwork(ep.Network); err == nil {
			nets = append(nets, n)
		}
	}
	o := &RunOptions{DNS: c.Spec.DNS, DNSSearch: c.Spec.DNSSearch, DNSOptions: c.Spec.DNSOptions}
	for _, s := range c.Spec.ExtraHosts {
		h, err := files.ParseAddHost(s)
		if err != nil {
			return err
		}
		o.AddHosts = append(o.AddHosts, h)
	}
	hosts, resolv, err := e.etcFiles(c, o, c.Spec.NetworkMode, nets)
	if err != nil {
		return err
	}
	// The redirect is in place before resolv.conf names 127.0.0.11, and
	// goes only once it no longer does.
	target := e.dnsRedirectTarget(nets)
	if c.OwnsNetns && target.IsValid() {
		if err := e.redirectDNS(c.Netns, target, false); err != nil {
			return err
		}
	}
	if err := refreshFile(filepath.Join(c.Dir, "resolv.conf"), resolv); err != nil {
		return err
	}
	if c.OwnsNetns && !target.IsValid() {
		if err := e.redirectDNS(c.Netns, target, false); err != nil {
			return err
		}
	}
	return refreshFile(filepath.Join(c.Dir, "hosts"), hosts)
}

// rewriteInPlace replaces the content of the file at path without
// replacing the file, which a bind mount holds; a missing file is left
// missing (nothing mounts it).
func rewriteInPlace(path string, data []byte) error {
	faults.Step("files.rewrite")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}

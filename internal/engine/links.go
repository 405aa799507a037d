package engine

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/netns"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/store"
)

// LinkOption is one --link NAME[:ALIAS].
type LinkOption struct {
	Target, Alias string
}

// ParseLink parses --link's NAME[:ALIAS]; the alias defaults to the name.
func ParseLink(s string) (LinkOption, error) {
	name, alias, _ := strings.Cut(s, ":")
	name = strings.TrimPrefix(name, "/")
	if alias == "" {
		alias = name
	}
	if name == "" || files.ValidHostname(alias) != nil {
		return LinkOption{}, errdefs.Invalid("invalid --link %q: want NAME[:ALIAS] with ALIAS a valid host name", s)
	}
	return LinkOption{Target: name, Alias: alias}, nil
}

// Link is a recorded --link: the container may reach the target's exposed
// and published ports, and knows it by alias and name in /etc/hosts.
type Link struct {
	TargetID string `json:"targetId"`
	Name     string `json:"name"`
	Alias    string `json:"alias"`
}

// reserveLinks resolves --link targets in the reserving transaction: each
// must be running on the network the container joins first.
func reserveLinks(tx store.Tx, c *Container, links []LinkOption) error {
	for _, l := range links {
		t, err := lookupContainer(tx, l.Target)
		if err != nil {
			return fmt.Errorf("--link %s: %w", l.Target, err)
		}
		if !t.Running() {
			return errdefs.Conflict("cannot link to %s: it is not running", t.Name)
		}
		if len(c.Endpoints) == 0 || endpointOn(t, c.Endpoints[0].Network) == nil {
			return errdefs.Invalid("cannot link to %s: links work between containers on the same network", t.Name)
		}
		c.Links = append(c.Links, Link{TargetID: t.ID, Name: t.Name, Alias: l.Alias})
	}
	return nil
}

// endpointOn returns c's endpoint on the named network, or nil.
func endpointOn(c *Container, network string) *Endpoint {
	for i := range c.Endpoints {
		if c.Endpoints[i].Network == network {
			return &c.Endpoints[i]
		}
	}
	return nil
}

// linkHosts are the /etc/hosts lines of the container's links: each
// target's addresses on the container's first network (a link runs there,
// whichever network the target joined first). None on a network with
// the embedded DNS server, as Docker writes them for its legacy links on
// the default network only: the server answers the alias for the linking
// container (dnsSnapshot) from the target's current address, where a
// hosts line, read before DNS, would keep one the target no longer has.
func (e *Engine) linkHosts(c *Container) []files.HostEntry {
	var out []files.HostEntry
	if len(c.Endpoints) == 0 {
		return nil
	}
	if n, err := e.lookupNetwork(c.Endpoints[0].Network); err == nil && n.DNS {
		return nil
	}
	for _, l := range c.Links {
		t, err := e.get(l.TargetID)
		if err != nil {
			continue
		}
		to := endpointOn(t, c.Endpoints[0].Network)
		if to == nil || len(to.Addrs) == 0 {
			continue
		}
		names := []string{l.Alias}
		for _, n := range []string{t.Spec.Hostname, t.Name} {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		for _, a := range to.Addrs { // IPv6 too, a line of its own, as Docker's
			out = append(out, files.HostEntry{IP: a.Addr(), Names: names})
		}
	}
	return out
}

// linkRules are the firewall's accept pairs for the container's links: to
// every exposed or published port of each running target but exiting (one
// whose exit is being recorded).
func (e *Engine) linkRules(c *Container, exiting string) []firewall.Link {
	var out []firewall.Link
	if len(c.Endpoints) == 0 {
		return nil
	}
	from := c.Endpoints[0]
	for _, l := range c.Links {
		// A target that has stopped has released its address.
		t, err := e.get(l.TargetID)
		if err != nil || !t.Running() || t.ID == exiting {
			continue
		}
		to := endpointOn(t, from.Network)
		if to == nil {
			continue
		}
		for _, p := range targetPorts(t) {
			for _, fa := range from.Addrs {
				for _, ta := range to.Addrs {
					if fa.Addr().Is4() == ta.Addr().Is4() {
						out = append(out, firewall.Link{Network: from.Network, From: fa.Addr(), To: ta.Addr(), Proto: p.proto, Port: p.port})
					}
				}
			}
		}
	}
	return out
}

type protoPort struct {
	proto string
	port  uint16
}

// targetPorts lists a container's exposed and published container ports,
// each once.
func targetPorts(t *Container) []protoPort {
	var out []protoPort
	seen := map[protoPort]bool{}
	add := func(p protoPort) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, s := range t.Spec.Exposed {
		for port := range s.ContainerPorts() {
			add(protoPort{string(cmp.Or(s.Proto, portmap.TCP)), port})
		}
	}
	for _, m := range t.Ports {
		add(protoPort{m.Proto, m.ContainerPort})
	}
	return out
}

// lockLinks orders the changes of link elements. A relink reads every
// container and rewrites the elements of those linked to one; a run's
// elements added, or a teardown's removed, in between would otherwise be
// undone or put back.
func (e *Engine) lockLinks() (unlock func(), err error) {
	unlock, err = lockFile(filepath.Join(e.paths.DataRoot, "links.lock"))
	if err != nil {
		return nil, fmt.Errorf("lock link rules: %w", err)
	}
	return unlock, nil
}

// applyLinks programs the container's link accept pairs, under the links
// lock.
func (e *Engine) applyLinks(c *Container) error {
	if len(c.Links) == 0 || e.fw == nil {
		return nil
	}
	unlock, err := e.lockLinks()
	if err != nil {
		return err
	}
	defer unlock()
	return e.applyLinksLocked(c, "")
}

// applyLinksLocked is applyLinks for a holder of the links lock, leaving
// out the links to exiting (see linkRules).
func (e *Engine) applyLinksLocked(c *Container, exiting string) error {
	rules := e.linkRules(c, exiting)
	if len(rules) == 0 || e.fw == nil {
		return nil
	}
	if err := e.fw.AddLinks(c.ID, rules); err != nil {
		return fmt.Errorf("link rules: %w", err)
	}
	return nil
}

// errLinksKept marks a relink error after which elements letting linkers
// reach the container may remain: its address must stay held. Failing to
// put a linker's other links back is not one.
var errLinksKept = errors.New("the links to it may remain")

// relink brings the link elements of container id, and of the running
// containers linked to it, in line with their endpoints after id joined or
// left a network, or exited (exiting: its exit is about to be recorded, and
// the links to it go): a link runs between the first endpoints of its two
// ends, and an address id gave up may go to another container, which the
// old element would let in.
func (e *Engine) relink(id string, exiting bool) error {
	gone := ""
	if exiting {
		gone = id
	}
	if e.fw == nil {
		return nil
	}
	unlock, err := e.lockLinks()
	if err != nil {
		return fmt.Errorf("%w: %w", errLinksKept, err)
	}
	defer unlock()
	var all []*Container
	if err := e.st.View(func(tx store.Tx) (err error) { all, err = listContainers(tx); return err }); err != nil {
		return fmt.Errorf("%w: %w", errLinksKept, err)
	}
	var errs []error
	for _, c := range all {
		linked := slices.ContainsFunc(c.Links, func(l Link) bool { return l.TargetID == id })
		if c.ID == id && len(c.Links) == 0 || c.ID != id && !linked {
			continue
		}
		// The elements of a running container, and of one being set up
		// (its run added them before this lock was ours), become those of
		// the records read now, in one batch: a link that stays is never
		// absent. A container whose namespace is gone is being torn down:
		// all of its go.
		var want []firewall.Link
		if (c.Running() || c.State.Status == StatusCreated) && netns.Mounted(c.Netns) {
			want = e.linkRules(c, gone)
		}
		if err := e.fw.SetLinks(c.ID, want); err != nil { // the batch failed whole: the old elements remain
			errs = append(errs, fmt.Errorf("link rules of %s: %w: %w", c.Name, errLinksKept, err))
		}
	}
	return errors.Join(errs...)
}

// linksEnv is the environment c's links give its command and its execs,
// made from its record and its targets as they are now (its name after a
// rename, its endpoints after a connect), as Docker makes it at each
// start; a target gone since gives nothing.
func (e *Engine) linksEnv(c *Container) ([]string, error) {
	if len(c.Links) == 0 {
		return nil, nil
	}
	var env []string
	err := e.st.View(func(tx store.Tx) error {
		cur, err := getContainer(tx, c.ID)
		if errors.Is(err, store.ErrNotFound) {
			cur = c // a record being made
		} else if err != nil {
			return err
		}
		if len(cur.Endpoints) == 0 {
			return nil
		}
		for _, l := range cur.Links {
			t, err := getContainer(tx, l.TargetID)
			if errors.Is(err, store.ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			env = append(env, linkEnv(cur.Name, l.Alias, endpointOn(t, cur.Endpoints[0].Network), t)...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the links of %s: %w", c.Name, err)
	}
	return env, nil
}

// linkEnv is the environment a legacy link gives the linking container
// named name, as Docker's (daemon/links): for each of the target's exposed
// and published ports, TCP ones first, then by protocol and number,
// ALIAS_PORT_P_PROTO with its _ADDR, _PORT and _PROTO, and after each run
// of consecutive ports of one protocol its _START, _PORT_START, _END and
// _PORT_END; ALIAS_PORT, the first of them; ALIAS_NAME=/NAME/ALIAS; and
// ALIAS_ENV_K for each of the target's variables but HOME, PATH, and the
// HOSTNAME and TERM knit sets. ALIAS is the alias in capitals, hyphens made
// underscores.
func linkEnv(name, alias string, ep *Endpoint, t *Container) []string {
	prefix := strings.ReplaceAll(strings.ToUpper(alias), "-", "_")
	var addr netip.Addr // the target's IPv4 address on the link's network, else its IPv6 one
	if ep != nil {
		for _, a := range ep.Addrs {
			if !addr.IsValid() || a.Addr().Is4() {
				addr = a.Addr()
			}
			if a.Addr().Is4() {
				break
			}
		}
	}
	ip := ""
	if addr.IsValid() {
		ip = addr.String()
	}
	// url is PROTO://ADDR:PORT, an IPv6 address in brackets.
	url := func(pt protoPort) string {
		return pt.proto + "://" + netip.AddrPortFrom(addr, pt.port).String()
	}
	ports := targetPorts(t)
	slices.SortFunc(ports, func(a, b protoPort) int {
		if a.proto == b.proto {
			return cmp.Compare(a.port, b.port)
		}
		return cmp.Or(boolCompare(a.proto != "tcp", b.proto != "tcp"), strings.Compare(a.proto, b.proto))
	})
	var env []string
	if ip != "" && len(ports) > 0 {
		env = append(env, fmt.Sprintf("%s_PORT=%s", prefix, url(ports[0])))
		start := 0 // the first port of the current run
		for i, pt := range ports {
			p := fmt.Sprintf("%s_PORT_%d_%s", prefix, pt.port, strings.ToUpper(pt.proto))
			env = append(env,
				fmt.Sprintf("%s=%s", p, url(pt)),
				fmt.Sprintf("%s_ADDR=%s", p, ip),
				fmt.Sprintf("%s_PORT=%d", p, pt.port),
				fmt.Sprintf("%s_PROTO=%s", p, pt.proto))
			if i+1 < len(ports) && ports[i+1].proto == pt.proto && ports[i+1].port == pt.port+1 {
				continue // the run goes on
			}
			if first := ports[start]; i > start {
				p := fmt.Sprintf("%s_PORT_%d_%s", prefix, first.port, strings.ToUpper(first.proto))
				env = append(env,
					fmt.Sprintf("%s_START=%s", p, url(first)),
					fmt.Sprintf("%s_PORT_START=%d", p, first.port),
					fmt.Sprintf("%s_END=%s", p, url(pt)),
					fmt.Sprintf("%s_PORT_END=%d", p, pt.port))
			}
			start = i + 1
		}
	}
	env = append(env, fmt.Sprintf("%s_NAME=/%s/%s", prefix, name, alias))
	for _, kv := range t.Spec.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "HOME" || k == "PATH" || k == "HOSTNAME" || kv == "TERM=xterm" {
			continue
		}
		env = append(env, fmt.Sprintf("%s_ENV_%s=%s", prefix, k, v))
	}
	return env
}

// boolCompare orders false before true.
func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case b:
		return -1
	}
	return 1
}

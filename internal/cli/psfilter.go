package cli

import (
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/portmap"
)

// psFilterKeys are docker ps's filters that concern what knit records.
var psFilterKeys = []string{"id", "name", "status", "exited", "network", "publish", "expose", "before", "since", "label", "ancestor", "volume"}

// psStates are the values of docker ps's status filter.
var psStates = []string{"created", "restarting", "running", "removing", "paused", "exited", "dead"}

// psFilter is a parsed `ps --filter` list: a container passes when, for
// every key given, one of its values matches, as in Docker.
type psFilter struct {
	ids, names      []*regexp.Regexp
	states          []string
	exited          []int
	networks        []string
	publish, expose []portmap.Spec
	before, since   []string // container references, resolved by resolve
	labels          []string // KEY or KEY=VALUE, all of which must match
	ancestors       []string // root filesystems (the IMAGE column), cleaned
	impliesAll      bool     // a status filter shows stopped containers too
	volumes         bool     // volume= given: knit mounts no volume, so none matches
	// createdBefore and createdAfter bound the creation time, from
	// before= and since=.
	createdBefore, createdAfter time.Time
}

func parsePSFilter(in []string) (*psFilter, error) {
	raw, err := parseFilters(in, psFilterKeys)
	if err != nil {
		return nil, err
	}
	f := &psFilter{networks: raw["network"], before: raw["before"], since: raw["since"], labels: raw["label"], volumes: len(raw["volume"]) > 0}
	for key, dst := range map[string]*[]*regexp.Regexp{"id": &f.ids, "name": &f.names} {
		for _, v := range raw[key] {
			re, err := regexp.Compile(v)
			if err != nil {
				return nil, errdefs.Invalid("invalid filter '%s=%s': %v", key, v, err)
			}
			*dst = append(*dst, re)
		}
	}
	for _, v := range raw["ancestor"] {
		if v == "" {
			f.ancestors = append(f.ancestors, "") // no root filesystem: matches none
			continue
		}
		abs, err := filepath.Abs(v) // as --rootfs is recorded
		if err != nil {
			return nil, errdefs.Invalid("invalid filter 'ancestor=%s': %v", v, err)
		}
		f.ancestors = append(f.ancestors, abs)
	}
	for _, v := range raw["status"] {
		if !slices.Contains(psStates, v) {
			return nil, errdefs.Invalid("invalid filter 'status=%s': want one of %s", v, strings.Join(psStates, ", "))
		}
		f.states = append(f.states, v)
		f.impliesAll = true
	}
	for _, v := range raw["exited"] {
		code, err := strconv.Atoi(v)
		if err != nil {
			return nil, errdefs.Invalid("invalid filter 'exited=%s': want an exit code", v)
		}
		f.exited = append(f.exited, code)
	}
	for key, dst := range map[string]*[]portmap.Spec{"publish": &f.publish, "expose": &f.expose} {
		for _, v := range raw[key] {
			specs, err := portmap.ParseExpose(v) // PORT[-PORT][/PROTO], tcp by default
			if err != nil {
				return nil, errdefs.Invalid("invalid filter '%s=%s': %v", key, v, err)
			}
			*dst = append(*dst, specs...)
		}
	}
	return f, nil
}

// resolve finds the containers before= and since= name among all, as
// docker ps does: by name, ID or ID prefix, and the networks network=
// names by ID or ID prefix among nets.
func (f *psFilter) resolve(all []*engine.Container, nets []*engine.Network) error {
	var names []string // a name as it is; an ID prefix, every network it starts
	for _, ref := range f.networks {
		names = append(names, ref)
		if ref == "" || slices.ContainsFunc(nets, func(n *engine.Network) bool { return n.Name == ref }) {
			continue
		}
		for _, n := range nets {
			if strings.HasPrefix(n.ID, ref) {
				names = append(names, n.Name)
			}
		}
	}
	f.networks = names
	find := func(key, ref string) (*engine.Container, error) {
		for _, c := range all {
			if c.Name == ref || c.ID == ref || len(ref) >= 1 && strings.HasPrefix(c.ID, ref) {
				return c, nil
			}
		}
		return nil, errdefs.NotFound("no such container: %s (filter %s)", ref, key)
	}
	for _, ref := range f.before {
		c, err := find("before", ref)
		if err != nil {
			return err
		}
		if f.createdBefore.IsZero() || c.Created.Before(f.createdBefore) {
			f.createdBefore = c.Created
		}
	}
	for _, ref := range f.since {
		c, err := find("since", ref)
		if err != nil {
			return err
		}
		if c.Created.After(f.createdAfter) {
			f.createdAfter = c.Created
		}
	}
	return nil
}

// match reports whether c passes the filter.
func (f *psFilter) match(c *engine.Container) bool {
	if f.volumes || !matchLabels(f.labels, c.Spec.Labels) {
		return false
	}
	if len(f.ancestors) > 0 && !slices.Contains(f.ancestors, rootfsOf(c)) {
		return false
	}
	if !f.createdBefore.IsZero() && !c.Created.Before(f.createdBefore) ||
		!f.createdAfter.IsZero() && !c.Created.After(f.createdAfter) {
		return false
	}
	anyRE := func(res []*regexp.Regexp, subjects ...string) bool {
		return len(res) == 0 || slices.ContainsFunc(res, func(re *regexp.Regexp) bool {
			return slices.ContainsFunc(subjects, re.MatchString)
		})
	}
	if !anyRE(f.ids, c.ID) || !anyRE(f.names, c.Name, "/"+c.Name) {
		return false
	}
	if len(f.states) > 0 && !slices.Contains(f.states, c.StatusName()) {
		return false
	}
	if len(f.exited) > 0 && (c.State.Status != engine.StatusExited || !slices.Contains(f.exited, c.State.ExitCode)) {
		return false
	}
	if len(f.networks) > 0 && !slices.ContainsFunc(f.networks, func(n string) bool { return onNetwork(c, n) }) {
		return false
	}
	// As Docker's (since 20.10): publish names a host port, expose a
	// container port (published or only exposed), and a container passes
	// when one of its ports matches either.
	if len(f.publish)+len(f.expose) > 0 {
		in := func(specs []portmap.Spec, proto string, port uint16) bool {
			return port != 0 && slices.ContainsFunc(specs, func(s portmap.Spec) bool {
				return string(s.Proto) == proto && port >= s.ContainerFirst && port <= s.ContainerLast
			})
		}
		published := slices.ContainsFunc(c.Ports, func(p firewall.PortMapping) bool {
			return in(f.publish, p.Proto, p.HostPort) || in(f.expose, p.Proto, p.ContainerPort)
		})
		exposed := slices.ContainsFunc(c.Spec.Exposed, func(e portmap.Spec) bool {
			return slices.ContainsFunc(f.expose, func(s portmap.Spec) bool {
				return e.Proto == s.Proto && e.ContainerFirst <= s.ContainerLast && s.ContainerFirst <= e.ContainerLast
			})
		})
		if !published && !exposed {
			return false
		}
	}
	return true
}

// onNetwork reports whether c has an endpoint on the network called n or,
// with none, runs in network mode n (host, none).
func onNetwork(c *engine.Container, n string) bool {
	if len(c.Endpoints) == 0 {
		return c.Spec.NetworkMode == n
	}
	return slices.ContainsFunc(c.Endpoints, func(ep engine.Endpoint) bool { return ep.Network == n })
}

// rootfsOf is what ps shows as a container's IMAGE: its --rootfs, or / for
// the host's root.
func rootfsOf(c *engine.Container) string {
	if c.Spec.Rootfs == "" {
		return "/"
	}
	return c.Spec.Rootfs
}

package cli

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/portmap"
)

func (a *app) portCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "port CONTAINER [PRIVATE_PORT[/PROTO]]",
		Short: "List port mappings, or look up the public address of one port",
		Args:  rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.engine()
			if err != nil {
				return err
			}
			c, err := e.Container(args[0])
			if err != nil {
				return err
			}
			maps := engine.Mappings(c)
			if len(args) == 1 {
				lines := make([]string, len(maps))
				for i, m := range maps {
					lines[i] = m.String()
				}
				// In natural order (80 before 443), as docker port's.
				slices.SortFunc(lines, naturalCompare)
				for _, l := range lines {
					fmt.Fprintln(out(cmd), l)
				}
				return nil
			}
			port, proto, _ := strings.Cut(args[1], "/")
			if proto == "" {
				proto = "tcp"
			}
			if _, err := strconv.ParseUint(port, 10, 16); err != nil {
				return errdefs.Invalid("invalid port (%s)", port)
			}
			var lines []string
			for _, m := range maps {
				if fmt.Sprint(m.ContainerPort) == port && string(m.Proto) == proto {
					lines = append(lines, strings.TrimPrefix(m.String(), fmt.Sprintf("%d/%s -> ", m.ContainerPort, m.Proto)))
				}
			}
			if len(lines) == 0 { // as docker port says it: the port and the container as given
				return errdefs.NotFound("no public port '%s' published for %s", args[1], args[0])
			}
			slices.SortFunc(lines, naturalCompare)
			for _, l := range lines {
				fmt.Fprintln(out(cmd), l)
			}
			return nil
		},
	}
}

// portSummary is one entry of ps's PORTS column: a published port, or an
// exposed one (no IP) that nothing publishes.
type portSummary struct {
	private, public uint16
	ip              netip.Addr
	proto           string
}

// portsColumn renders ps's PORTS column as Docker's CLI does
// (DisplayablePorts): sorted by container port, then host address and
// port; runs of consecutive ports published on the same port numbers
// folded into ranges (0.0.0.0:8000-8002->8000-8002/tcp), exposed ones
// too (80-82/tcp); mappings to another port number last.
func portsColumn(c *engine.Container) string {
	var ports []portSummary
	published := map[string]bool{}
	for _, m := range engine.Mappings(c) {
		ip := m.HostIP
		if !ip.IsValid() {
			ip = netip.IPv4Unspecified()
		}
		ports = append(ports, portSummary{m.ContainerPort, m.HostPort, ip, string(m.Proto)})
		published[fmt.Sprintf("%d/%s", m.ContainerPort, m.Proto)] = true
	}
	if c.Running() && len(c.Endpoints) > 0 { // an exposed port nothing publishes shows alone, as in Docker's
		for _, s := range c.Spec.Exposed {
			proto := string(cmp.Or(s.Proto, portmap.TCP))
			for p := range s.ContainerPorts() {
				if key := fmt.Sprintf("%d/%s", p, proto); !published[key] {
					published[key] = true
					ports = append(ports, portSummary{private: p, proto: proto})
				}
			}
		}
	}
	slices.SortFunc(ports, func(a, b portSummary) int {
		return cmp.Or(cmp.Compare(a.private, b.private), a.ip.Compare(b.ip), cmp.Compare(a.public, b.public), cmp.Compare(a.proto, b.proto))
	})
	type group struct{ first, last uint16 }
	groups := map[groupKey]*group{}
	var keys []groupKey
	var result, moved []string
	for _, p := range ports {
		key := groupKey{proto: p.proto}
		if p.ip.IsValid() {
			if p.public != p.private {
				moved = append(moved, fmt.Sprintf("%s->%d/%s", netip.AddrPortFrom(p.ip, p.public), p.private, p.proto))
				continue
			}
			key.ip = p.ip
		}
		g := groups[key]
		switch {
		case g == nil:
			groups[key] = &group{p.private, p.private}
			keys = append(keys, key)
		case p.private == g.last+1:
			g.last = p.private
		default:
			result = append(result, formGroup(key, g.first, g.last))
			groups[key] = &group{p.private, p.private}
		}
	}
	for _, k := range keys {
		result = append(result, formGroup(k, groups[k].first, groups[k].last))
	}
	return strings.Join(append(result, moved...), ", ")
}

// groupKey is what a run of ports shares: the protocol, and the host
// address of ports published on the same numbers (none: exposed only).
type groupKey struct {
	ip    netip.Addr
	proto string
}

// formGroup renders a run of ports under key.
func formGroup(key groupKey, first, last uint16) string {
	ports := strconv.Itoa(int(first))
	if first != last {
		ports += fmt.Sprintf("-%d", last)
	}
	if key.ip.IsValid() {
		ports = net.JoinHostPort(key.ip.String(), ports) + "->" + ports
	}
	return ports + "/" + key.proto
}

// naturalCompare orders strings as Docker's CLI does (sortorder's natural
// order): runs of digits by their value ("80/tcp" before "443/tcp",
// "10.0.0.9" before "10.0.0.10"), a digit before any other character, and
// of two equal numbers the one written with fewer leading zeros first.
func naturalCompare(a, b string) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		da, db := isDigit(a[i]), isDigit(b[j])
		switch {
		case da != db:
			if da {
				return -1
			}
			return 1
		case !da:
			if a[i] != b[j] {
				return cmp.Compare(a[i], b[j])
			}
			i, j = i+1, j+1
		default:
			zi, zj := i, j // past the leading zeros
			for zi < len(a) && a[zi] == '0' {
				zi++
			}
			for zj < len(b) && b[zj] == '0' {
				zj++
			}
			ei, ej := zi+len(digitRun(a[zi:])), zj+len(digitRun(b[zj:]))
			if c := cmp.Or(cmp.Compare(ei-zi, ej-zj), strings.Compare(a[zi:ei], b[zj:ej]), cmp.Compare(zi-i, zj-j)); c != 0 {
				return c
			}
			i, j = ei, ej
		}
	}
	return cmp.Compare(len(a)-i, len(b)-j)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// digitRun is the run of digits s starts with.
func digitRun(s string) string {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i]
}

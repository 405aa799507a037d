package cli

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/spf13/cobra"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
)

// networkCommand is `knit network`: create, ls, inspect, rm, prune,
// connect and disconnect, with docker network's flags and output.
func (a *app) networkCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "network",
		Short: "Manage networks",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			// cobra would print the help and succeed; Docker refuses.
			return errdefs.Invalid("unknown command: %s %s", cmd.CommandPath(), args[0])
		},
	}
	c.AddCommand(
		a.networkCreateCommand(), a.networkLsCommand(), a.networkInspectCommand(),
		a.networkRmCommand(), a.networkPruneCommand(),
		a.networkConnectCommand(), a.networkDisconnectCommand(),
	)
	return c
}

// Argument checks with Docker's messages.

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return errdefs.Invalid("%q requires exactly %d %s.", cmd.CommandPath(), n, plural(n, "argument"))
		}
		return nil
	}
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return errdefs.Invalid("%q requires at least %d %s.", cmd.CommandPath(), n, plural(n, "argument"))
		}
		return nil
	}
}

func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return errdefs.Invalid("%q requires at least %d and at most %d %s.", cmd.CommandPath(), lo, hi, plural(hi, "argument"))
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return errdefs.Invalid("%q accepts no arguments.", cmd.CommandPath())
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// --- create ---

// networkCreateFlags are docker network create's flags that knit implements.
type networkCreateFlags struct {
	driver                           string
	subnets, gateways, ipRanges      []string
	labels, opts, aux                []string
	ipv4, ipv6, internal, attachable bool
}

func (a *app) networkCreateCommand() *cobra.Command {
	var f networkCreateFlags
	c := &cobra.Command{
		Use:   "create [OPTIONS] NETWORK",
		Short: "Create a network",
		Example: `  knit network create mynet
  knit network create --subnet 192.168.100.0/24 --gateway 192.168.100.254 mynet
  knit network create --internal -o com.docker.network.driver.mtu=1400 backend`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := f.options(args[0])
			if err != nil {
				return err
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			n, err := e.CreateNetwork(o)
			if err != nil {
				return err
			}
			fmt.Fprintln(out(cmd), n.ID)
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVarP(&f.driver, "driver", "d", "bridge", "driver to manage the network")
	fl.StringSliceVar(&f.subnets, "subnet", nil, "subnet in CIDR format that represents a network segment")
	fl.StringSliceVar(&f.gateways, "gateway", nil, "IPv4 or IPv6 gateway for the master subnet")
	fl.StringSliceVar(&f.ipRanges, "ip-range", nil, "allocate container IPs from a sub-range")
	fl.BoolVar(&f.ipv4, "ipv4", true, "enable or disable IPv4 address assignment")
	fl.BoolVar(&f.ipv6, "ipv6", false, "enable or disable IPv6 networking")
	fl.BoolVar(&f.internal, "internal", false, "restrict external access to the network")
	fl.BoolVar(&f.attachable, "attachable", false, "enable manual container attachment")
	fl.StringArrayVar(&f.labels, "label", nil, "set metadata on a network (KEY=VALUE)")
	fl.StringArrayVarP(&f.opts, "opt", "o", nil, "set driver specific options (KEY=VALUE)")
	fl.StringArrayVar(&f.aux, "aux-address", nil, "an address of the subnet never given to a container (NAME=IP)")
	return c
}

// options turns the flags into a request, rejecting malformed values. The
// engine checks what depends on state or on several values together.
func (f *networkCreateFlags) options(name string) (engine.NetworkCreateOptions, error) {
	o := engine.NetworkCreateOptions{
		Name: name, Driver: f.driver, IPv6: f.ipv6, NoIPv4: !f.ipv4, Internal: f.internal, Attachable: f.attachable,
	}
	for _, s := range f.subnets {
		p, err := parsePrefixFlag("--subnet", s)
		if err != nil {
			return o, err
		}
		o.Subnets = append(o.Subnets, p)
	}
	for _, s := range f.ipRanges {
		p, err := parsePrefixFlag("--ip-range", s)
		if err != nil {
			return o, err
		}
		o.IPRanges = append(o.IPRanges, p)
	}
	for _, s := range f.gateways {
		g, err := parseAddrFlag("--gateway", s)
		if err != nil {
			return o, err
		}
		o.Gateways = append(o.Gateways, g)
	}
	aux, err := parseKV("--aux-address", f.aux, false)
	if err != nil {
		return o, err
	}
	for name, v := range aux {
		a, err := parseAddrFlag("--aux-address "+name+"=", v)
		if err != nil {
			return o, err
		}
		if o.Aux == nil {
			o.Aux = map[string]netip.Addr{}
		}
		o.Aux[name] = a
	}
	if (len(o.Gateways) > 0 || len(o.IPRanges) > 0 || len(o.Aux) > 0) && len(o.Subnets) == 0 {
		return o, errdefs.Invalid("every --ip-range, --gateway or --aux-address must have a corresponding --subnet")
	}
	if o.Labels, err = parseLabels("--label", f.labels); err != nil {
		return o, err
	}
	if o.Options, err = parseKV("--opt", f.opts, false); err != nil {
		return o, err
	}
	return o, nil
}

// parsePrefixFlag parses a CIDR, keeping it as given (host bits included:
// the engine explains those).
func parsePrefixFlag(flag, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, errdefs.Invalid("invalid %s %s: %s", flag, s, netipReason(err))
	}
	if p.Addr().Zone() != "" {
		return p, errdefs.Invalid("invalid %s %s: an address zone is not allowed", flag, s)
	}
	return p, nil
}

func parseAddrFlag(flag, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, errdefs.Invalid("invalid %s %s: %s", flag, s, netipReason(err))
	}
	if a.Zone() != "" {
		return a, errdefs.Invalid("invalid %s %s: an address zone is not allowed", flag, s)
	}
	return a, nil
}

// netipReason drops the `netip.ParsePrefix("...")` prefix that repeats the
// value.
func netipReason(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "): "); i >= 0 && strings.HasPrefix(msg, "netip.") {
		return msg[i+3:]
	}
	return msg
}

// --- ls ---

// networkRow holds the fields `knit network ls --format` offers, named
// (and, for json, ordered) as in Docker.
type networkRow struct {
	CreatedAt string
	Driver    string
	ID        string
	IPv4      string
	IPv6      string
	Internal  string
	Labels    string
	Name      string
	Scope     string

	labels map[string]string
	header bool
}

// Label returns the value of one label: {{.Label "com.example.owner"}}.
func (r networkRow) Label(key string) string {
	if r.header {
		return "LABEL"
	}
	return r.labels[key]
}

// networkHeader is the row a table template prints as its header.
var networkHeader = networkRow{
	CreatedAt: "CREATED AT", Driver: "DRIVER", ID: "NETWORK ID", IPv4: "IPV4", IPv6: "IPV6",
	Internal: "INTERNAL", Labels: "LABELS", Name: "NAME", Scope: "SCOPE", header: true,
}

const networkDefaultFormat = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"

func newNetworkRow(n *engine.Network, noTrunc bool) networkRow {
	r := networkRow{
		CreatedAt: n.Created.String(), Driver: n.Driver, ID: n.ID, IPv4: fmt.Sprint(ipv4Enabled(n)),
		IPv6: fmt.Sprint(n.IPv6), Internal: fmt.Sprint(n.Internal), Name: n.Name, Scope: "local",
		labels: n.Labels,
	}
	if !noTrunc && len(r.ID) > 12 {
		r.ID = r.ID[:12]
	}
	r.Labels = joinLabels(n.Labels)
	return r
}

// joinLabels is the LABELS column of ls and ps: KEY=VALUE,... by key.
func joinLabels(labels map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kv = append(kv, k+"="+labels[k])
	}
	return strings.Join(kv, ",")
}

func (a *app) networkLsCommand() *cobra.Command {
	var (
		quiet, noTrunc bool
		format         string
		filters        []string
	)
	c := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List networks",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parseNetworkFilters(filters)
			if err != nil {
				return err
			}
			tmpl, table, err := networkListFormat(format, quiet)
			if err != nil {
				return err
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			nets, err := e.Networks()
			if err != nil {
				return err
			}
			// By name in natural order (net2 before net10), as Docker's.
			slices.SortFunc(nets, func(a, b *engine.Network) int { return naturalCompare(a.Name, b.Name) })
			var inUse map[string]bool
			if _, ok := f["dangling"]; ok {
				inUse = map[string]bool{}
				for _, n := range nets {
					if isBuiltinNetwork(n) {
						continue
					}
					cs, err := e.NetworkContainers(n.Name)
					if err != nil {
						return err
					}
					inUse[n.Name] = len(cs) > 0
				}
			}
			return writeNetworkList(out(cmd), filterNetworks(nets, f, inUse), tmpl, table, noTrunc)
		},
	}
	fl := c.Flags()
	fl.StringArrayVarP(&filters, "filter", "f", nil, "provide filter values (e.g. 'driver=bridge')")
	fl.StringVar(&format, "format", "", "format output using a Go template ('table', 'table TEMPLATE', 'json' or 'TEMPLATE')")
	fl.BoolVar(&noTrunc, "no-trunc", false, "do not truncate the output")
	fl.BoolVarP(&quiet, "quiet", "q", false, "only display network IDs")
	return c
}

// networkListFormat resolves and compiles network ls's --format, -q
// included: -q prints IDs unless a custom template is given, as in Docker.
func networkListFormat(format string, quiet bool) (tmpl *template.Template, table bool, err error) {
	if quiet && (format == "" || format == "table") {
		format = "{{.ID}}"
	}
	return listFormat(format, networkDefaultFormat)
}

// writeNetworkList prints nets with a template from networkListFormat.
// Only a table's columns are aligned: another format is written as it is,
// its tabs kept (for cut -f), as docker network ls does.
func writeNetworkList(w io.Writer, nets []*engine.Network, tmpl *template.Template, table, noTrunc bool) error {
	rows := make([]networkRow, len(nets))
	for i, n := range nets {
		rows[i] = newNetworkRow(n, noTrunc)
	}
	return writeRows(w, tmpl, table, networkHeader, rows)
}

// networkFilters maps a filter key to its values.
type networkFilters map[string][]string

var networkFilterKeys = []string{"dangling", "driver", "id", "label", "name", "scope", "type"}

// parseFilters parses repeated --filter KEY=VALUE flags, as Docker: keys
// are those of keys, and a key's values are alternatives.
func parseFilters(in, keys []string) (map[string][]string, error) {
	f := map[string][]string{}
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			// Docker's --filter checks the form as the flag is parsed.
			return nil, flagError{errdefs.Invalid("invalid argument %q for \"-f, --filter\" flag: bad format of filter (expected name=value)", kv)}
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if !slices.Contains(keys, k) {
			return nil, errdefs.Invalid("invalid filter '%s'", k)
		}
		if !slices.Contains(f[k], v) {
			f[k] = append(f[k], v)
		}
	}
	return f, nil
}

// parseNetworkFilters parses network ls's --filter flags.
func parseNetworkFilters(in []string) (networkFilters, error) {
	f, err := parseFilters(in, networkFilterKeys)
	if err != nil {
		return nil, err
	}
	for _, t := range f["type"] {
		if t != "custom" && t != "builtin" {
			return nil, errdefs.Invalid("invalid filter 'type=%s'", t)
		}
	}
	if d := f["dangling"]; len(d) > 1 {
		return nil, errdefs.Invalid(`got more than one value for filter key "dangling"`)
	} else if len(d) == 1 && !slices.Contains([]string{"true", "1", "false", "0"}, d[0]) {
		return nil, errdefs.Invalid(`invalid value for filter 'dangling', must be "true" (or "1"), or "false" (or "0")`)
	}
	return f, nil
}

// isBuiltinNetwork reports whether n is one of the predefined networks.
func isBuiltinNetwork(n *engine.Network) bool {
	return n.Name == engine.ModeBridge || n.Name == engine.ModeHost || n.Name == engine.ModeNone
}

// filterNetworks keeps the networks that pass every filter key; the values
// of one key are alternatives, except label's, which must all match (as in
// dockerd). name and id match as dockerd does: exactly, or by an unanchored
// regular expression, so any part of the name or ID matches. inUse tells
// which networks have containers; only the dangling filter reads it.
func filterNetworks(nets []*engine.Network, f networkFilters, inUse map[string]bool) []*engine.Network {
	var outNets []*engine.Network
	for _, n := range nets {
		if !matchExact(f["driver"], n.Driver) || !matchExact(f["scope"], "local") ||
			!matchPattern(f["name"], n.Name) || !matchPattern(f["id"], n.ID) ||
			!matchLabels(f["label"], n.Labels) {
			continue
		}
		if types := f["type"]; len(types) > 0 {
			want := "custom"
			if isBuiltinNetwork(n) {
				want = "builtin"
			}
			if !slices.Contains(types, want) {
				continue
			}
		}
		if d := f["dangling"]; len(d) == 1 {
			used := isBuiltinNetwork(n) || inUse[n.Name]
			if dangling := d[0] == "true" || d[0] == "1"; dangling == used {
				continue
			}
		}
		outNets = append(outNets, n)
	}
	return outNets
}

func matchExact(values []string, s string) bool {
	return len(values) == 0 || slices.Contains(values, s)
}

func matchPattern(values []string, s string) bool {
	if matchExact(values, s) {
		return true
	}
	for _, v := range values {
		if ok, err := regexp.MatchString(v, s); err == nil && ok {
			return true
		}
	}
	return false
}

func matchLabels(values []string, labels map[string]string) bool {
	for _, v := range values {
		k, want, hasValue := strings.Cut(v, "=")
		got, ok := labels[k]
		if !ok || (hasValue && got != want) {
			return false
		}
	}
	return true
}

// --- inspect ---

// The Docker-shaped view of a network that `knit network inspect` prints
// and its templates address (.IPAM.Config, .Containers, ...).
type (
	networkView struct {
		Name       string                          `json:"Name"`
		Id         string                          `json:"Id"` //nolint:revive // Docker's name, used by templates
		Created    string                          `json:"Created"`
		Scope      string                          `json:"Scope"`
		Driver     string                          `json:"Driver"`
		EnableIPv4 bool                            `json:"EnableIPv4"`
		EnableIPv6 bool                            `json:"EnableIPv6"`
		IPAM       ipamView                        `json:"IPAM"`
		Internal   bool                            `json:"Internal"`
		Attachable bool                            `json:"Attachable"`
		Ingress    bool                            `json:"Ingress"`
		ConfigFrom configFromView                  `json:"ConfigFrom"`
		ConfigOnly bool                            `json:"ConfigOnly"`
		Containers map[string]networkContainerView `json:"Containers"`
		Options    map[string]string               `json:"Options"`
		Labels     map[string]string               `json:"Labels"`
	}
	ipamView struct {
		Driver  string
		Options map[string]string
		Config  []ipamConfigView
	}
	ipamConfigView struct {
		Subnet             string
		Gateway            string            `json:",omitempty"`
		IPRange            string            `json:",omitempty"`
		AuxiliaryAddresses map[string]string `json:",omitempty"`
	}
	configFromView struct {
		Network string
	}
	networkContainerView struct {
		Name        string
		EndpointID  string
		MacAddress  string
		IPv4Address string
		IPv6Address string
	}
)

// ipv4Enabled is Docker's EnableIPv4: false for a network made with
// --ipv4=false (it has subnets, none IPv4); true otherwise, host and none
// included, as before Docker had the option.
func ipv4Enabled(n *engine.Network) bool { return n.HasIPv4() || len(n.Subnets) == 0 }

// newNetworkView builds the inspect view of n. containers are those with
// an endpoint on n, or for host and none those running in that mode.
func newNetworkView(n *engine.Network, containers []*engine.Container) *networkView {
	v := &networkView{
		Name: n.Name, Id: n.ID, Created: timeString(n.Created), Scope: "local", Driver: n.Driver,
		EnableIPv4: ipv4Enabled(n), EnableIPv6: n.IPv6,
		IPAM:     ipamView{Driver: "default", Options: map[string]string{}, Config: []ipamConfigView{}},
		Internal: n.Internal, Attachable: n.Attachable,
		Containers: map[string]networkContainerView{},
		Options:    maps.Clone(n.Options), Labels: maps.Clone(n.Labels),
	}
	if v.Options == nil {
		v.Options = map[string]string{}
	}
	if n.Name == engine.ModeBridge {
		// As dockerd shows docker0's settings (scripts find the bridge's
		// name there).
		hostIP := "0.0.0.0"
		if n.HostIP.IsValid() {
			hostIP = n.HostIP.String()
		}
		maps.Copy(v.Options, map[string]string{
			"com.docker.network.bridge.default_bridge":       "true",
			"com.docker.network.bridge.enable_icc":           strconv.FormatBool(n.ICC),
			"com.docker.network.bridge.enable_ip_masquerade": strconv.FormatBool(n.Masquerade),
			"com.docker.network.bridge.host_binding_ipv4":    hostIP,
			"com.docker.network.bridge.name":                 n.Bridge,
			"com.docker.network.driver.mtu":                  strconv.Itoa(n.LinkMTU()),
		})
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	for _, s := range n.Subnets {
		cfg := ipamConfigView{Subnet: s.Prefix.String()}
		if s.Gateway.IsValid() {
			cfg.Gateway = s.Gateway.String()
		}
		if s.IPRange.IsValid() {
			cfg.IPRange = s.IPRange.String()
		}
		for name, a := range s.Aux {
			if cfg.AuxiliaryAddresses == nil {
				cfg.AuxiliaryAddresses = map[string]string{}
			}
			cfg.AuxiliaryAddresses[name] = a.String()
		}
		v.IPAM.Config = append(v.IPAM.Config, cfg)
	}
	for _, c := range containers {
		cv := networkContainerView{Name: c.Name, EndpointID: endpointID(c.ID, n.Name)}
		for _, ep := range c.Endpoints {
			if ep.Network != n.Name {
				continue
			}
			if ep.MAC != nil {
				cv.MacAddress = ep.MAC.String()
			}
			for _, p := range ep.Addrs {
				if p.Addr().Is4() {
					cv.IPv4Address = p.String()
				} else {
					cv.IPv6Address = p.String()
				}
			}
		}
		v.Containers[c.ID] = cv
	}
	return v
}

// endpointID is a stable stand-in for the endpoint ID dockerd would
// generate: the engine records none.
func endpointID(containerID, network string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + network))
	return hex.EncodeToString(sum[:])
}

func (a *app) networkInspectCommand() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "inspect [OPTIONS] NETWORK [NETWORK...]",
		Short: "Display detailed information on one or more networks",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tmpl, err := parseInspectFormat(format)
			if err != nil {
				return err
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			views := []any{}
			var errs []error
			for _, ref := range args {
				v, err := a.networkView(e, ref)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				views = append(views, v)
			}
			return writeInspect(out(cmd), views, format, tmpl, errs)
		},
	}
	c.Flags().StringVarP(&format, "format", "f", "", "format output using a Go template ('json' or 'TEMPLATE')")
	// Docker's adds a swarm network's services and tasks; for a local
	// network, knit's only kind, its output is the same without it.
	c.Flags().BoolP("verbose", "v", false, "verbose output for diagnostics (the same for local networks)")
	return c
}

// networkView looks a network up and gathers its containers.
func (a *app) networkView(e *engine.Engine, ref string) (*networkView, error) {
	n, err := e.NetworkByRef(ref)
	if errdefs.KindOf(err) == errdefs.KindNotFound {
		return nil, errdefs.NotFound("network %s not found", ref) // dockerd's words
	}
	if err != nil {
		return nil, err
	}
	var cs []*engine.Container
	if n.Name == engine.ModeHost || n.Name == engine.ModeNone {
		all, err := e.Containers()
		if err != nil {
			return nil, err
		}
		for _, c := range all {
			if c.Running() && c.Spec.NetworkMode == n.Name {
				cs = append(cs, c)
			}
		}
	} else if cs, err = e.NetworkContainers(n.Name); err != nil {
		return nil, err
	}
	return newNetworkView(n, cs), nil
}

// --- rm, prune ---

func (a *app) networkRmCommand() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:     "rm NETWORK [NETWORK...]",
		Aliases: []string{"remove"},
		Short:   "Remove one or more networks",
		Args:    minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.engine()
			if err != nil {
				return err
			}
			var errs []error
			for _, ref := range args {
				if err := e.RemoveNetwork(ref); err != nil {
					if force && errdefs.KindOf(err) == errdefs.KindNotFound {
						continue
					}
					errs = append(errs, err)
					continue
				}
				fmt.Fprintln(out(cmd), ref)
			}
			return errors.Join(errs...)
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "do not error if the network does not exist")
	return c
}

const networkPrunePrompt = "WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] "

func (a *app) networkPruneCommand() *cobra.Command {
	var (
		force   bool
		filters []string
	)
	c := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove all unused networks",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			match, err := pruneFilter(filters, time.Now())
			if err != nil {
				return err
			}
			if !force && !confirm(out(cmd), cmd.InOrStdin(), networkPrunePrompt) {
				return nil
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			removed, err := e.PruneNetworks(match)
			writePruned(out(cmd), "Deleted Networks:", removed)
			return err
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "do not prompt for confirmation")
	c.Flags().StringArrayVar(&filters, "filter", nil, "only networks that match: until=TIME|DURATION, label=KEY[=VALUE], label!=KEY[=VALUE]")
	return c
}

// pruneFilter parses network prune's --filter values, as Docker's: until
// (one; a time, a Unix timestamp or a duration back from now) selects the
// networks made before it, label those that have every label given
// (KEY or KEY=VALUE), label! those that do not have them all. nil selects
// every network.
func pruneFilter(in []string, now time.Time) (func(*engine.Network) bool, error) {
	f, err := parseFilters(in, []string{"until", "label", "label!"})
	if err != nil || len(f) == 0 {
		return nil, err
	}
	var until time.Time
	switch u := f["until"]; {
	case len(u) > 1:
		return nil, errdefs.Invalid("more than one until filter specified")
	case len(u) == 1:
		if until, err = parseLogTime("until filter", u[0], now); err != nil {
			return nil, err
		}
	}
	return func(n *engine.Network) bool {
		return (until.IsZero() || n.Created.Before(until)) &&
			(len(f["label"]) == 0 || matchLabels(f["label"], n.Labels)) &&
			(len(f["label!"]) == 0 || !matchLabels(f["label!"], n.Labels))
	}, nil
}

// confirm asks a y/N question; only "y" (any case) says yes, as in Docker.
func confirm(w io.Writer, r io.Reader, prompt string) bool {
	fmt.Fprint(w, prompt)
	answer, _ := bufio.NewReader(r).ReadString('\n')
	return strings.EqualFold(strings.TrimSpace(answer), "y") // Docker's: not "yes"
}

// writePruned prints a prune's report of one kind, as Docker's: a title
// ("Deleted Networks:"), the items, a blank line; nothing when nothing went.
func writePruned(w io.Writer, title string, removed []string) {
	if len(removed) == 0 {
		return
	}
	fmt.Fprintln(w, title)
	for _, name := range removed {
		fmt.Fprintln(w, name)
	}
	fmt.Fprintln(w)
}

// --- connect, disconnect ---

func (a *app) networkConnectCommand() *cobra.Command {
	var (
		ip, ip6 string
		aliases []string
	)
	c := &cobra.Command{
		Use:   "connect [OPTIONS] NETWORK CONTAINER",
		Short: "Connect a container to a network",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := connectOptions(ip, ip6, aliases)
			if err != nil {
				return err
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			return e.Connect(args[0], args[1], o)
		},
	}
	fl := c.Flags()
	fl.StringVar(&ip, "ip", "", "IPv4 address (e.g., 172.30.100.104)")
	fl.StringVar(&ip6, "ip6", "", "IPv6 address (e.g., 2001:db8::33)")
	fl.StringSliceVar(&aliases, "alias", nil, "add network-scoped alias for the container")
	return c
}

// connectOptions checks connect's flags.
func connectOptions(ip, ip6 string, aliases []string) (engine.ConnectOptions, error) {
	o := engine.ConnectOptions{Aliases: aliases}
	var err error
	if ip != "" {
		if o.IP, err = parseAddrFlag("--ip", ip); err != nil {
			return o, err
		}
		if !o.IP.Is4() {
			return o, errdefs.Invalid("invalid --ip %s: not an IPv4 address", ip)
		}
	}
	if ip6 != "" {
		if o.IP6, err = parseAddrFlag("--ip6", ip6); err != nil {
			return o, err
		}
		if !o.IP6.Is6() || o.IP6.Is4In6() {
			return o, errdefs.Invalid("invalid --ip6 %s: not an IPv6 address", ip6)
		}
	}
	for _, al := range aliases {
		if al == "" || strings.ContainsAny(al, " \t\n") {
			return o, errdefs.Invalid("invalid --alias %q", al)
		}
	}
	return o, nil
}

func (a *app) networkDisconnectCommand() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "disconnect [OPTIONS] NETWORK CONTAINER",
		Short: "Disconnect a container from a network",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.engine()
			if err != nil {
				return err
			}
			return e.Disconnect(args[0], args[1], force)
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "force the container to disconnect from a network")
	return c
}

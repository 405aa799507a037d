package cli

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/knit-dev/knit/internal/dns/files"
	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/portmap"
	"github.com/knit-dev/knit/internal/runner"
)

// runFlags are docker run's flags that knit implements, under the same names.
type runFlags struct {
	name, hostname, domainname, ip, ip6, mac  string
	workdir, rootfs                           string
	user, stopSignal, entrypoint, restart     string
	entrypointSet                             bool
	labels, labelFiles, groupAdd              []string
	stopTimeout                               int
	stopTimeoutSet                            bool
	networks, aliases                         []string
	env, envFiles, dns, dnsSearch, dnsOptions []string
	addHosts                                  []string
	publish, expose, links                    []string
	detach, rm, interactive, tty, publishAll  bool
	init                                      bool
}

func (a *app) runCommand() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run [OPTIONS] [--] COMMAND [ARG...]",
		Short: "Run a command in a new container with its own network",
		Example: `  knit run --rm busybox ip addr
  knit run -d --name web --rootfs /srv/busybox httpd -f -p 80
  knit run --rm --network container:web wget -qO- http://127.0.0.1`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.stopTimeoutSet = cmd.Flags().Changed("stop-timeout")
			f.entrypointSet = cmd.Flags().Changed("entrypoint")
			return a.run(cmd, &f, args)
		},
	}
	noHelpShorthand(c)
	fl := c.Flags()
	fl.SetInterspersed(false) // flags after COMMAND belong to COMMAND
	fl.StringVar(&f.name, "name", "", "assign a name to the container")
	fl.StringVarP(&f.hostname, "hostname", "h", "", "container host name")
	fl.StringVar(&f.domainname, "domainname", "", "container NIS domain name")
	fl.StringArrayVar(&f.networks, "network", []string{"bridge"}, "connect to a network: bridge, none, host, container:NAME or a user-defined network (repeat for more networks)")
	fl.StringVar(&f.ip, "ip", "", "IPv4 address on the first network (e.g., 172.30.100.104)")
	fl.StringVar(&f.ip6, "ip6", "", "IPv6 address on the first network (e.g., 2001:db8::33)")
	fl.StringArrayVar(&f.aliases, "network-alias", nil, "add a network-scoped alias for the container on the first network")
	fl.StringVar(&f.mac, "mac-address", "", "container MAC address (e.g., 92:d0:c6:0a:29:33)")
	fl.BoolVarP(&f.detach, "detach", "d", false, "run in the background and print the container ID")
	fl.BoolVar(&f.rm, "rm", false, "remove the container when it exits")
	fl.BoolVarP(&f.interactive, "interactive", "i", false, "keep STDIN open")
	fl.BoolVarP(&f.tty, "tty", "t", false, "allocate a pseudo-TTY")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set environment variables (KEY=VALUE, or KEY to copy it)")
	fl.StringArrayVar(&f.envFiles, "env-file", nil, "read environment variables from a file of KEY=VALUE lines")
	fl.StringVarP(&f.user, "user", "u", "", "user to run the command as: NAME|UID[:GROUP|GID], from the container's /etc/passwd and /etc/group")
	fl.StringVar(&f.stopSignal, "stop-signal", "", "signal that knit stop sends first (default SIGTERM)")
	fl.IntVar(&f.stopTimeout, "stop-timeout", 10, "seconds knit stop waits before it kills the container (-1: for ever)")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the container")
	fl.StringArrayVar(&f.groupAdd, "group-add", nil, "add a supplementary group (name or GID) to the command's user")
	fl.StringVar(&f.restart, "restart", engine.RestartNo, "restart policy when the command exits: no, always, on-failure[:MAX-RETRIES], unless-stopped (needs -d)")
	fl.BoolVar(&f.init, "init", false, "run an init inside the container that forwards signals and reaps processes")
	fl.StringVar(&f.entrypoint, "entrypoint", "", "the program to run, with COMMAND and ARGs as its arguments")
	fl.StringArrayVarP(&f.labels, "label", "l", nil, "set metadata on a container (KEY=VALUE, or KEY for an empty value)")
	fl.StringArrayVar(&f.labelFiles, "label-file", nil, "read labels from a file of KEY=VALUE lines")
	fl.StringArrayVar(&f.dns, "dns", nil, "set custom DNS servers")
	fl.StringArrayVar(&f.dnsSearch, "dns-search", nil, "set custom DNS search domains")
	fl.StringArrayVar(&f.dnsOptions, "dns-option", nil, "set DNS options")
	fl.StringArrayVar(&f.addHosts, "add-host", nil, "add a custom host-to-IP mapping (host:ip, ip may be host-gateway)")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a container's port(s) to the host ([IP:][HOSTPORT:]PORT[/PROTO])")
	fl.BoolVarP(&f.publishAll, "publish-all", "P", false, "publish all exposed ports to random host ports")
	fl.StringArrayVar(&f.expose, "expose", nil, "expose a port or a range of ports (PORT[-PORT][/PROTO])")
	fl.StringArrayVar(&f.links, "link", nil, "add a link to another container (NAME[:ALIAS])")
	fl.StringVar(&f.rootfs, "rootfs", "", "directory to use as the root filesystem (default: the host's, privately mounted)")
	// Docker's second names are the same flags, so that mixing the two
	// forms keeps every value (two flags would each replace the other's).
	fl.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		switch name {
		case "net":
			name = "network"
		case "dns-opt":
			name = "dns-option"
		case "net-alias":
			name = "network-alias"
		}
		return pflag.NormalizedName(name)
	})
	return c
}

func (a *app) run(cmd *cobra.Command, f *runFlags, args []string) error {
	o, err := f.options(args)
	if err != nil {
		return err
	}
	if o.Network == engine.ModeHost && (len(o.Publish) > 0 || o.PublishAll) {
		// As Docker: the container's ports are the host's already.
		fmt.Fprintln(a.env.Err, "WARNING: Published ports are discarded when using host network mode")
		o.Publish, o.PublishAll = nil, false
	}
	if target, ok := strings.CutPrefix(o.Network, engine.ModeContainer); ok && len(o.DNSSearch)+len(o.DNSOptions) > 0 {
		// Docker ignores them silently; the container uses target's files.
		fmt.Fprintf(a.env.Err, "WARNING: --dns-search and --dns-option have no effect with --network container:%s, whose resolv.conf the container uses\n", target)
		o.DNSSearch, o.DNSOptions = nil, nil
	}
	if o.Tty && o.Interactive && !o.Detach && !isTerminal(a.env.In) {
		// Docker's CLI refuses this before asking the daemon: 1, not 125.
		return statusError{ExitFailure, errdefs.Invalid("the input device is not a TTY: drop -t, or run from a terminal")}
	}
	e, err := a.engine()
	if err != nil {
		return err
	}
	if o.Detach {
		id, err := e.RunDetached(*o)
		var se *engine.StartError
		if errors.As(err, &se) { // as docker run -d: the reason, and 126 or 127
			fmt.Fprintf(a.env.Err, "knit: %s\n", se.Msg)
			return exitError{se.Code}
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(out(cmd), id)
		return nil
	}
	code, err := e.RunForeground(*o, engine.Stdio{In: a.env.In, Out: a.env.Out, Err: a.env.Err})
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}

// options turns flags into a request, rejecting malformed values early.
func (f *runFlags) options(args []string) (*engine.RunOptions, error) {
	o := &engine.RunOptions{
		Name: f.name, Hostname: f.hostname, Domainname: f.domainname, Aliases: f.aliases,
		Args: args, Workdir: f.workdir,
		Rootfs: f.rootfs, Tty: f.tty, Interactive: f.interactive, Detach: f.detach, AutoRemove: f.rm, Init: f.init,
		PublishAll: f.publishAll,
		DNSSearch:  f.dnsSearch, DNSOptions: f.dnsOptions,
	}
	var err error
	if err := f.networkOptions(o); err != nil {
		return nil, err
	}
	if f.ip != "" {
		if o.IP, err = netip.ParseAddr(f.ip); err != nil {
			return nil, errdefs.Invalid("invalid --ip %q: not an IP address", f.ip)
		}
	}
	if f.ip6 != "" {
		if o.IP6, err = netip.ParseAddr(f.ip6); err != nil {
			return nil, errdefs.Invalid("invalid --ip6 %q: not an IP address", f.ip6)
		}
	}
	if f.mac != "" {
		if o.MAC, err = net.ParseMAC(f.mac); err != nil {
			return nil, errdefs.Invalid("invalid --mac-address %q: %v", f.mac, err)
		}
	}
	if o.Workdir != "" && !strings.HasPrefix(o.Workdir, "/") {
		return nil, errdefs.Invalid("the working directory %q is invalid: it needs to be an absolute path", o.Workdir)
	}
	if o.Env, err = envFromFlags(f.envFiles, f.env); err != nil {
		return nil, err
	}
	if o.Labels, err = labelsFromFlags(f.labelFiles, f.labels); err != nil {
		return nil, err
	}
	if o.Restart, err = engine.ParseRestartPolicy(f.restart); err != nil {
		return nil, err
	}
	if f.entrypoint != "" {
		// One program, not split, as Docker takes it.
		o.Entrypoint = []string{f.entrypoint}
	} else if f.entrypointSet && len(args) == 0 {
		// Docker's --entrypoint "" clears an image's entrypoint; knit
		// has no image, so the command is all there is.
		return nil, errdefs.Invalid("no command given: --entrypoint \"\" needs a COMMAND")
	}
	if err := checkUser(f.user); err != nil {
		return nil, err
	}
	o.User, o.GroupAdd = f.user, f.groupAdd
	if f.stopSignal != "" {
		if o.StopSignal, err = parseSignal(f.stopSignal); err != nil {
			return nil, fmt.Errorf("--stop-signal: %w", err)
		}
	}
	if f.stopTimeoutSet {
		if f.stopTimeout < -1 {
			return nil, errdefs.Invalid("invalid --stop-timeout %d: want seconds, or -1 to wait for ever", f.stopTimeout)
		}
		o.StopTimeout = &f.stopTimeout
	}
	for _, s := range f.dns {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, errdefs.Invalid("invalid --dns %q: not an IP address", s)
		}
		o.DNS = append(o.DNS, a)
	}
	for _, s := range f.dnsSearch {
		if err := files.ValidateSearchDomain(s); err != nil {
			return nil, fmt.Errorf("--dns-search: %w", err)
		}
	}
	for _, s := range f.dnsOptions {
		if err := files.ValidateDNSOption(s); err != nil {
			return nil, fmt.Errorf("--dns-option: %w", err)
		}
	}
	for _, s := range f.publish {
		specs, err := portmap.ParsePublish(s)
		if err != nil {
			return nil, err
		}
		o.Publish = append(o.Publish, specs...)
	}
	for _, s := range f.expose {
		specs, err := portmap.ParseExpose(s)
		if err != nil {
			return nil, err
		}
		o.Expose = append(o.Expose, specs...)
	}
	for _, s := range f.links {
		l, err := engine.ParseLink(s)
		if err != nil {
			return nil, err
		}
		o.Links = append(o.Links, l)
	}
	for _, s := range f.addHosts {
		h, err := files.ParseAddHost(s)
		if err != nil {
			return nil, err // names the flag and the value already
		}
		o.AddHosts = append(o.AddHosts, h)
	}
	return o, nil
}

// networkOptions reads the --network flags into o: a name each, or
// Docker's long form name=NAME,ip=IP,ip6=IP,mac-address=MAC,alias=A (alias
// repeated for more), whose settings for the first network are those of
// --ip, --ip6, --mac-address and --network-alias, which it must not repeat.
func (f *runFlags) networkOptions(o *engine.RunOptions) error {
	for i, v := range f.networks {
		name, ep, isLong, err := parseNetworkFlag(v)
		if err != nil {
			return err
		}
		if i == 0 {
			o.Network = name
			if isLong {
				switch {
				case ep.IP.IsValid() && f.ip != "", ep.IP6.IsValid() && f.ip6 != "", ep.MAC != nil && f.mac != "", len(ep.Aliases) > 0 && len(f.aliases) > 0:
					return errdefs.Invalid("conflicting options: --network %s and --ip, --ip6, --mac-address or --network-alias give the same setting", v)
				}
				o.IP, o.IP6, o.MAC = ep.IP, ep.IP6, ep.MAC
				o.Aliases = append(o.Aliases, ep.Aliases...)
			}
			continue
		}
		o.ExtraNetworks = append(o.ExtraNetworks, name)
		o.ExtraEndpoints = append(o.ExtraEndpoints, ep) // zero for a plain name
	}
	return nil
}

// parseNetworkFlag parses one --network value: a name, or Docker's long
// form of comma-separated KEY=VALUE fields (CSV, so a field may be quoted).
func parseNetworkFlag(v string) (name string, ep engine.EndpointOptions, long bool, err error) {
	if !strings.Contains(v, "=") || strings.HasPrefix(v, engine.ModeContainer) {
		return v, ep, false, nil
	}
	fields, cerr := csv.NewReader(strings.NewReader(v)).Read()
	if cerr != nil {
		return "", ep, false, errdefs.Invalid("invalid --network %q: %v", v, cerr)
	}
	bad := func(format string, a ...any) error {
		return errdefs.Invalid("invalid --network %q: "+format, append([]any{v}, a...)...)
	}
	for _, field := range fields {
		k, val, ok := strings.Cut(field, "=")
		if !ok {
			return "", ep, false, bad("%q is not KEY=VALUE", field)
		}
		val = strings.TrimSpace(val)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "name":
			name = val
		case "ip":
			if ep.IP, err = netip.ParseAddr(val); err != nil {
				return "", ep, false, bad("ip %q is not an IP address", val)
			}
		case "ip6":
			if ep.IP6, err = netip.ParseAddr(val); err != nil {
				return "", ep, false, bad("ip6 %q is not an IP address", val)
			}
		case "mac-address":
			if ep.MAC, err = net.ParseMAC(val); err != nil {
				return "", ep, false, bad("mac-address %q: %v", val, err)
			}
		case "alias":
			ep.Aliases = append(ep.Aliases, val)
		case "link-local-ip", "driver-opt", "gw-priority":
			return "", ep, false, bad("knit does not take %s yet", k)
		default:
			return "", ep, false, bad("unknown key %q (name, ip, ip6, mac-address, alias)", k)
		}
	}
	if name == "" {
		return "", ep, false, bad("no name=")
	}
	return name, ep, true, nil
}

// envFromFlags is the environment --env-file and -e give, in that order
// (so -e wins), as docker run and exec read them.
func envFromFlags(files, flags []string) ([]string, error) {
	all, err := readKVFiles("--env-file", files)
	if err != nil {
		return nil, err
	}
	return resolveEnv(append(all, flags...))
}

// labelsFromFlags is the labels --label-file and --label give, in that
// order (so --label wins): KEY=VALUE, or KEY alone for an empty value, as
// docker run reads them.
func labelsFromFlags(files, flags []string) (map[string]string, error) {
	all, err := readKVFiles("--label-file", files)
	if err != nil {
		return nil, err
	}
	return parseLabels("--label", append(all, flags...))
}

// readKVFiles is the lines of every file, in order (readKVFile).
func readKVFiles(flag string, paths []string) ([]string, error) {
	var all []string
	for _, path := range paths {
		kvs, err := readKVFile(flag, path)
		if err != nil {
			return nil, err
		}
		all = append(all, kvs...)
	}
	return all, nil
}

// parseLabels reads KEY=VALUE or KEY (an empty value) into a map, the
// last of a key winning, as Docker's --label.
func parseLabels(flag string, in []string) (map[string]string, error) {
	return parseKV(flag, in, true)
}

// parseKV reads repeated KEY=VALUE flags into a map, the last of a key
// winning; with bare, KEY alone is an empty value.
func parseKV(flag string, in []string, bare bool) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	want := "KEY=VALUE"
	if bare {
		want += " or KEY"
	}
	m := make(map[string]string, len(in))
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" || !ok && !bare {
			return nil, errdefs.Invalid("invalid %s %q: want %s", flag, kv, want)
		}
		m[k] = v
	}
	return m, nil
}

// readKVFile reads Docker's format of --env-file and --label-file: one
// KEY=VALUE (the value taken as is, quotes and all) or KEY (copied from
// the caller's environment by --env-file, an empty label by --label-file)
// per line; blank lines and lines starting with # are skipped.
func readKVFile(flag, path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errdefs.Invalid("%s: %v", flag, err)
	}
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimLeftFunc(strings.TrimSuffix(line, "\r"), unicode.IsSpace)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !utf8.ValidString(line) || strings.ContainsRune(line, 0) {
			return nil, errdefs.Invalid("%s %s, line %d: not UTF-8 text", flag, path, i+1)
		}
		k, _, _ := strings.Cut(line, "=")
		if k == "" || strings.ContainsAny(k, " \t") {
			return nil, errdefs.Invalid("%s %s, line %d: invalid name %q", flag, path, i+1, k)
		}
		out = append(out, line)
	}
	return out, nil
}

// checkUser checks the shape of a --user value; who it names is looked
// up in the container's own files when the command starts.
func checkUser(u string) error {
	if u == "" {
		return nil
	}
	if err := runner.ValidUser(u); err != nil {
		return errdefs.Invalid("%v", err)
	}
	return nil
}

// resolveEnv expands -e KEY from the caller's environment (dropped if unset).
func resolveEnv(in []string) ([]string, error) {
	var out []string
	for _, kv := range in {
		k, _, hasValue := strings.Cut(kv, "=")
		if k == "" {
			return nil, errdefs.Invalid("invalid environment variable %q", kv)
		}
		if !hasValue {
			v, ok := os.LookupEnv(k)
			if !ok {
				continue
			}
			kv = k + "=" + v
		}
		out = append(out, kv)
	}
	return out, nil
}

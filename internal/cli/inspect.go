package cli

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/logfile"
	"github.com/knit-dev/knit/internal/portmap"
)

// The Docker-shaped view of a container that `knit inspect` prints and its
// templates address (.State.Pid, .NetworkSettings.IPAddress, ...).
type (
	inspectView struct {
		Id              string          `json:"Id"` //nolint:revive // Docker's name, used by templates
		Created         string          `json:"Created"`
		Path            string          `json:"Path"`
		Args            []string        `json:"Args"`
		State           stateView       `json:"State"`
		Name            string          `json:"Name"`
		HostnamePath    string          `json:"HostnamePath"`
		HostsPath       string          `json:"HostsPath"`
		ResolvConfPath  string          `json:"ResolvConfPath"`
		LogPath         string          `json:"LogPath"`
		RestartCount    int             `json:"RestartCount"`
		Config          configView      `json:"Config"`
		HostConfig      hostConfigView  `json:"HostConfig"`
		NetworkSettings networkSettings `json:"NetworkSettings"`
	}
	stateView struct {
		Status     string
		Running    bool
		Paused     bool
		Restarting bool
		OOMKilled  bool
		Dead       bool
		Pid        int
		ExitCode   int
		Error      string
		StartedAt  string
		FinishedAt string
	}
	configView struct {
		Hostname     string
		Domainname   string
		User         string
		Env          []string
		Cmd          []string
		WorkingDir   string
		Tty          bool
		OpenStdin    bool
		AttachStdout bool
		Image        string
		Entrypoint   []string
		Labels       map[string]string
		StopSignal   string `json:",omitempty"`
		StopTimeout  *int   `json:",omitempty"`
		// ExposedPorts are --expose's and -p's container ports, as
		// Docker's ({"80/tcp": {}}).
		ExposedPorts map[string]struct{} `json:",omitempty"`
	}
	hostConfigView struct {
		NetworkMode   string
		Dns           []string
		DnsSearch     []string
		DnsOptions    []string
		ExtraHosts    []string
		RestartPolicy restartPolicyView
		GroupAdd      []string
		AutoRemove    bool
		Init          *bool // null unless --init, as Docker's
		// PortBindings are the -p values as asked ("" for a random host
		// port), PublishAllPorts is -P, Links are "/TARGET:/NAME/ALIAS".
		PortBindings    map[string][]portBinding
		PublishAllPorts bool
		Links           []string
	}
	restartPolicyView struct {
		Name              string
		MaximumRetryCount int
	}
	networkSettings struct {
		SandboxKey string
		Ports      map[string][]portBinding
		endpointView
		Networks map[string]endpointView
	}
	portBinding struct {
		HostIp   string //nolint:revive // Docker's name
		HostPort string
	}
	endpointView struct {
		Aliases             []string `json:",omitempty"`
		DNSNames            []string `json:",omitempty"`
		NetworkID           string   `json:",omitempty"`
		EndpointID          string   `json:",omitempty"`
		Gateway             string
		IPAddress           string
		IPPrefixLen         int
		IPv6Gateway         string
		GlobalIPv6Address   string
		GlobalIPv6PrefixLen int
		MacAddress          string
	}
)

func (a *app) inspectCommand() *cobra.Command {
	var format, kind string
	c := &cobra.Command{
		Use:   "inspect [OPTIONS] NAME|ID [NAME|ID...]",
		Short: "Show low-level information on containers and networks as JSON",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if kind != "" && kind != "container" && kind != "network" {
				return errdefs.Invalid("invalid --type %q: want container or network", kind)
			}
			tmpl, err := parseInspectFormat(format)
			if err != nil {
				return err
			}
			e, err := a.engine()
			if err != nil {
				return err
			}
			views := []any{} // none found prints [], as in Docker
			var errs []error
			for _, ref := range args {
				v, err := a.inspectObject(e, ref, kind)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				views = append(views, v)
			}
			return writeInspect(out(cmd), views, format, tmpl, errs)
		},
	}
	c.Flags().StringVarP(&format, "format", "f", "", "format output using a Go template")
	c.Flags().StringVar(&kind, "type", "", "only this type of object: container or network")
	return c
}

// inspectObject is the view of the container ref or, as docker inspect
// looks at every type of object unless --type says which, of the network.
func (a *app) inspectObject(e *engine.Engine, ref, kind string) (any, error) {
	if kind != "network" {
		c, err := e.Container(ref)
		if err == nil {
			return a.newInspectView(e, c), nil
		}
		if kind == "container" || errdefs.KindOf(err) != errdefs.KindNotFound {
			return nil, err
		}
	}
	v, err := a.networkView(e, ref)
	if errdefs.KindOf(err) == errdefs.KindNotFound && kind == "" {
		return nil, errdefs.NotFound("no such object: %s (neither a container nor a network)", ref)
	}
	return v, err
}

func (a *app) newInspectView(e *engine.Engine, c *engine.Container) *inspectView {
	v := &inspectView{
		Id:             c.ID,
		Created:        c.Created.Format(time.RFC3339Nano),
		Path:           c.Spec.Args[0],
		Args:           c.Spec.Args[1:],
		Name:           "/" + c.Name,
		HostnamePath:   filepath.Join(c.Dir, "hostname"),
		HostsPath:      filepath.Join(c.Dir, "hosts"),
		ResolvConfPath: filepath.Join(c.Dir, "resolv.conf"),
		State: stateView{
			Status: c.StatusName(), Running: c.Running(), Restarting: c.StatusName() == engine.StatusRestarting,
			ExitCode: c.State.ExitCode, Error: c.State.Error,
			StartedAt: timeString(c.State.StartedAt), FinishedAt: timeString(c.State.FinishedAt),
		},
		Config: configView{
			Hostname: c.Spec.Hostname, Domainname: c.Spec.Domainname, User: c.Spec.User, Env: c.Spec.Env, WorkingDir: c.Spec.Workdir,
			Tty: c.Spec.Tty, OpenStdin: c.Spec.Interactive, AttachStdout: !c.Spec.Detach, Image: c.Spec.Rootfs,
			StopTimeout: c.Spec.StopTimeout, Entrypoint: c.Spec.Entrypoint, Labels: maps.Clone(c.Spec.Labels),
		},
		HostConfig: hostConfigView{
			NetworkMode: c.Spec.NetworkMode, DnsSearch: c.Spec.DNSSearch, DnsOptions: c.Spec.DNSOptions,
			ExtraHosts: c.Spec.ExtraHosts, AutoRemove: c.Spec.AutoRemove,
			RestartPolicy: restartPolicyView{Name: c.Spec.Restart.Mode(), MaximumRetryCount: c.Spec.Restart.MaxRetries},
			GroupAdd:      c.Spec.GroupAdd,
		},
		RestartCount:    c.State.RestartCount,
		NetworkSettings: networkSettings{Networks: map[string]endpointView{}},
	}
	if c.Spec.Init {
		v.HostConfig.Init = &c.Spec.Init
	}
	if v.Config.Labels == nil {
		v.Config.Labels = map[string]string{} // {} as Docker's, for templates' index
	}
	// Cmd is what follows the entrypoint, null when nothing does.
	if cmd := c.Spec.Args[min(len(c.Spec.Entrypoint), len(c.Spec.Args)):]; len(cmd) > 0 {
		v.Config.Cmd = cmd
	}
	if c.Spec.Detach || !c.Spec.AutoRemove && c.Spec.LogFormat == logfile.Format { // a foreground run's since logs existed
		v.LogPath = e.LogPath(c)
	}
	if c.Spec.StopSignal != 0 {
		if v.Config.StopSignal = unix.SignalName(syscall.Signal(c.Spec.StopSignal)); v.Config.StopSignal == "" {
			v.Config.StopSignal = strconv.Itoa(c.Spec.StopSignal) // a real-time one
		}
	}
	for _, d := range c.Spec.DNS {
		v.HostConfig.Dns = append(v.HostConfig.Dns, d.String())
	}
	v.HostConfig.PortBindings = map[string][]portBinding{}
	v.HostConfig.PublishAllPorts = c.Spec.PublishAll
	publish := publishSpecs(c)
	for _, s := range publish {
		eachPort(s, func(key, hostPort string) {
			ip := ""
			if s.HostIP.IsValid() {
				ip = s.HostIP.String()
			}
			v.HostConfig.PortBindings[key] = append(v.HostConfig.PortBindings[key], portBinding{HostIp: ip, HostPort: hostPort})
		})
	}
	for _, l := range c.Links {
		v.HostConfig.Links = append(v.HostConfig.Links, "/"+l.Name+":/"+c.Name+"/"+l.Alias)
	}
	for _, s := range append(slices.Clone(c.Spec.Exposed), publish...) {
		eachPort(s, func(key, _ string) {
			if v.Config.ExposedPorts == nil {
				v.Config.ExposedPorts = map[string]struct{}{}
			}
			v.Config.ExposedPorts[key] = struct{}{}
		})
	}
	v.NetworkSettings.Ports = map[string][]portBinding{}
	if c.Running() {
		// Every exposed port of a container with a network of its own has
		// its key, null when nothing publishes it.
		if len(c.Endpoints) > 0 {
			for key := range v.Config.ExposedPorts {
				v.NetworkSettings.Ports[key] = nil
			}
		}
		if !c.State.Restarting { // between runs there is no process (0, as Docker's)
			v.State.Pid = c.State.Process.Pid
		}
		v.NetworkSettings.SandboxKey = c.Netns
		for _, m := range engine.Mappings(c) {
			key := fmt.Sprintf("%d/%s", m.ContainerPort, m.Proto)
			ip := "0.0.0.0"
			if m.HostIP.IsValid() {
				ip = m.HostIP.String()
			}
			v.NetworkSettings.Ports[key] = append(v.NetworkSettings.Ports[key], portBinding{HostIp: ip, HostPort: fmt.Sprint(m.HostPort)})
		}
	}
	for _, ep := range c.Endpoints {
		ev := endpointView{EndpointID: endpointID(c.ID, ep.Network), Aliases: ep.Aliases}
		n, err := e.Network(ep.Network)
		if err == nil {
			ev.NetworkID = n.ID
		}
		if c.Running() {
			fillAddresses(&ev, ep)
			if err == nil {
				fillGateways(&ev, n)
				if n.DNS {
					ev.DNSNames = append([]string{c.Name, c.ID[:12]}, ep.Aliases...)
				}
			}
		}
		v.NetworkSettings.Networks[ep.Network] = ev
		if ep.Network == engine.ModeBridge { // Docker mirrors the default network at the top
			v.NetworkSettings.endpointView = ev
			v.NetworkSettings.NetworkID, v.NetworkSettings.EndpointID = "", ""
		}
	}
	if c.Spec.NetworkMode == engine.ModeHost || c.Spec.NetworkMode == engine.ModeNone {
		v.NetworkSettings.Networks[c.Spec.NetworkMode] = endpointView{}
	}
	return v
}

// publishSpecs are c's -p values; for a record of a knit that did not keep
// them, what it published (-P's ports too, which cannot be told apart).
func publishSpecs(c *engine.Container) []portmap.Spec {
	if c.Spec.Publish != nil || c.Spec.PublishAll {
		return c.Spec.Publish
	}
	var out []portmap.Spec
	for _, m := range c.Ports {
		if m.HostIP == netip.IPv6Unspecified() && slices.ContainsFunc(c.Ports, func(o firewall.PortMapping) bool {
			return !o.HostIP.IsValid() && o.HostPort == m.HostPort && o.ContainerPort == m.ContainerPort && o.Proto == m.Proto
		}) {
			continue // the [::] twin of a port published on every address: one -p
		}
		out = append(out, portmap.Spec{HostIP: m.HostIP, HostPortFirst: m.HostPort, HostPortLast: m.HostPort,
			ContainerFirst: m.ContainerPort, ContainerLast: m.ContainerPort, Proto: portmap.Proto(m.Proto)})
	}
	return out
}

// eachPort calls fn with the "PORT/PROTO" key of each container port of
// s, and the host port asked for it as Docker's PortBindings show it: ""
// for a random one, "8000-8010" for a range to pick one port from.
func eachPort(s portmap.Spec, fn func(key, hostPort string)) {
	proto := cmp.Or(s.Proto, portmap.TCP)
	for p := range s.ContainerPorts() {
		host := ""
		switch {
		case s.HostPortFirst == 0 && s.HostPortLast == 0:
		case s.ContainerFirst == s.ContainerLast && s.HostPortLast > s.HostPortFirst:
			host = fmt.Sprintf("%d-%d", s.HostPortFirst, s.HostPortLast)
		default:
			host = strconv.Itoa(int(s.HostPortFirst) + int(p-s.ContainerFirst))
		}
		fn(fmt.Sprintf("%d/%s", p, proto), host)
	}
}

func fillAddresses(ev *endpointView, ep engine.Endpoint) {
	ev.MacAddress = ep.MAC.String()
	for _, p := range ep.Addrs {
		if p.Addr().Is4() {
			ev.IPAddress, ev.IPPrefixLen = p.Addr().String(), p.Bits()
		} else {
			ev.GlobalIPv6Address, ev.GlobalIPv6PrefixLen = p.Addr().String(), p.Bits()
		}
	}
}

// fillGateways shows the network's gateways, which every endpoint has
// whether or not its default route goes through them.
func fillGateways(ev *endpointView, n *engine.Network) {
	if n.Internal {
		return
	}
	for _, s := range n.Subnets {
		if s.Gateway.Is4() {
			ev.Gateway = s.Gateway.String()
		} else if s.Gateway.IsValid() {
			ev.IPv6Gateway = s.Gateway.String()
		}
	}
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return "0001-01-01T00:00:00Z"
	}
	return t.Format(time.RFC3339Nano)
}

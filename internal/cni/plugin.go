package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
)

// Engine is what the plugin needs of knit's engine.
type Engine interface {
	CNIAdd(engine.CNIRequest) (*engine.CNIAttachment, *engine.Network, error)
	CNIDel(config, containerID, ifname string) error
	CNIGet(containerID, ifname string) (*engine.CNIAttachment, error)
	CNICheck(containerID, ifname, netnsPath string) error
	CNIGC(network, config string, keep func(containerID, ifname string) bool) ([]string, error)
	CNIStatus(engine.NetworkCreateOptions) error
	NetworkByRef(ref string) (*engine.Network, error)
}

// Env is what main hands the plugin.
type Env struct {
	// NewEngine builds the engine over the paths the configuration and
	// the environment choose.
	NewEngine func(engine.Paths) (Engine, error)
	Getenv    func(string) string
	Stdin     io.Reader
	Stdout    io.Writer
	Stderr    io.Writer // logs only: the stack of a panic
	// HostMAC returns the address of a host link, for the result; nil asks
	// the kernel.
	HostMAC func(name string) (net.HardwareAddr, error)
	// IsNetns says whether CNI_NETNS is a network namespace's file; nil
	// asks the kernel (netns.IsNet).
	IsNetns func(path string) bool
}

// Invoked reports whether a process started with args (the program name
// excluded) is a CNI plugin call: runtimes set CNI_COMMAND and pass no
// arguments. The processes knit starts itself (the DNS server) inherit the
// variable but always have arguments.
func Invoked(args []string, getenv func(string) string) bool {
	return len(args) == 0 && getenv("CNI_COMMAND") != ""
}

// Main runs the command CNI_COMMAND names and returns the exit status:
// 0, or 1 after printing the error JSON. A panic is reported the same way
// (code 100, its stack on stderr), since a runtime reads only the JSON.
func Main(env Env) (status int) {
	p := &plugin{env: env, version: Versions[len(Versions)-1]}
	defer func() {
		if v := recover(); v != nil {
			if env.Stderr != nil {
				fmt.Fprintf(env.Stderr, "knit: panic: %v\n%s", v, debug.Stack())
			}
			writeError(env.Stdout, newError(CodeKnitFailed, "knit failed: internal error", "panic: %v", v), p.version)
			status = 1
		}
	}()
	// After the result is written: the runtime reads it until the
	// plugin exits.
	defer p.linger()
	if err := p.run(); err != nil {
		writeError(env.Stdout, err, p.version)
		return 1
	}
	return 0
}

type plugin struct {
	env     Env
	inv     Invocation
	version string // of the configuration, once known; errors are given in it
	eng     Engine // once built
}

// linger lets the plugin exit without waiting for the kernel to free what
// its firewall batches deleted (engine.Engine.Linger).
func (p *plugin) linger() {
	if l, ok := p.eng.(interface{ Linger() }); ok {
		l.Linger()
	}
}

func (p *plugin) run() *Error {
	g := p.env.Getenv
	p.inv = Invocation{
		Command: g("CNI_COMMAND"), ContainerID: g("CNI_CONTAINERID"),
		IfName: g("CNI_IFNAME"), Netns: g("CNI_NETNS"), Args: g("CNI_ARGS"),
	}
	if p.inv.Command == "VERSION" {
		return p.versionCmd()
	}
	cmd, ok := commands[p.inv.Command]
	if !ok {
		return newError(CodeInvalidEnv, "invalid CNI_COMMAND", "%q: want ADD, DEL, CHECK, GC, STATUS or VERSION", p.inv.Command)
	}
	if err := p.requireEnv(cmd.env); err != nil {
		return err
	}
	data, err := io.ReadAll(p.env.Stdin)
	if err != nil {
		return newError(CodeIOFailure, "cannot read the network configuration", err.Error())
	}
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	if json.Unmarshal(data, &v) == nil && slices.Contains(Versions, v.CNIVersion) {
		p.version = v.CNIVersion
		if !versionAtLeast(v.CNIVersion, cmd.since) {
			return newError(CodeIncompatibleVersion, "incompatible CNI version",
				"config cniVersion %s does not allow %s (it came in %s)", v.CNIVersion, p.inv.Command, cmd.since)
		}
	}
	return cmd.run(p, data)
}

// command is one CNI_COMMAND: the variables it needs besides CNI_COMMAND
// and the spec version that introduced it.
type command struct {
	env   []string
	since string
	run   func(*plugin, []byte) *Error
}

var commands = map[string]command{
	"ADD":    {[]string{"CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"}, "0.3.0", (*plugin).add},
	"DEL":    {[]string{"CNI_CONTAINERID", "CNI_IFNAME"}, "0.3.0", (*plugin).del},
	"CHECK":  {[]string{"CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"}, "0.4.0", (*plugin).check},
	"GC":     {nil, "1.1.0", (*plugin).gc},
	"STATUS": {nil, "1.1.0", (*plugin).status},
}

// requireEnv checks that the named variables are set and well-formed.
func (p *plugin) requireEnv(names []string) *Error {
	var missing []string
	for _, n := range names {
		if p.env.Getenv(n) == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return newError(CodeInvalidEnv, "missing environment variables", "%s required by %s", strings.Join(missing, ", "), p.inv.Command)
	}
	if slices.Contains(names, "CNI_CONTAINERID") {
		if err := utils.ValidateContainerID(p.inv.ContainerID); err != nil {
			return newError(CodeInvalidEnv, "invalid CNI_CONTAINERID", err.Error())
		}
	}
	if slices.Contains(names, "CNI_IFNAME") {
		if err := utils.ValidateInterfaceName(p.inv.IfName); err != nil {
			return newError(CodeInvalidEnv, "invalid CNI_IFNAME", err.Error())
		}
	}
	return nil
}

// versionCmd answers VERSION with the version the runtime asked in (the
// newest when it sent none) and the versions knit speaks.
func (p *plugin) versionCmd() *Error {
	var in struct {
		CNIVersion string `json:"cniVersion"`
	}
	data, _ := io.ReadAll(p.env.Stdin)
	if json.Unmarshal(data, &in) != nil || in.CNIVersion == "" {
		in.CNIVersion = p.version
	}
	out, _ := json.Marshal(struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}{in.CNIVersion, Versions})
	if _, err := p.env.Stdout.Write(out); err != nil {
		return newError(CodeIOFailure, "cannot write the version", err.Error())
	}
	return nil
}

// engine builds the engine on the configuration's paths, else those of
// KNIT_DATA_ROOT, KNIT_EXEC_ROOT and KNIT_CONFIG, else the CLI's defaults.
func (p *plugin) engine(c *BaseConf) (Engine, *Error) {
	paths := engine.DefaultPaths()
	for env, dst := range map[string]*string{
		"KNIT_DATA_ROOT": &paths.DataRoot, "KNIT_EXEC_ROOT": &paths.ExecRoot, "KNIT_CONFIG": &paths.Config,
	} {
		if v := p.env.Getenv(env); v != "" {
			*dst = v
		}
	}
	if c.DataRoot != "" {
		paths.DataRoot = c.DataRoot
	}
	if c.ExecRoot != "" {
		paths.ExecRoot = c.ExecRoot
	}
	e, err := p.env.NewEngine(paths)
	if err != nil {
		return nil, engineError("cannot start knit", err)
	}
	p.eng = e
	return e, nil
}

// checkNetns refuses a namespace that does not exist, a path that is no
// namespace at all (a file of another filesystem than nsfs), and the
// plugin's own namespace: attaching that would give the host a default
// route through the bridge.
func checkNetns(path string, isNetns func(string) bool) *Error {
	var ns, self syscall.Stat_t
	if err := syscall.Stat(path, &ns); err != nil {
		return newError(CodeInvalidEnv, "invalid CNI_NETNS", "%s: %v", path, err)
	}
	if !isNetns(path) {
		return newError(CodeInvalidEnv, "invalid CNI_NETNS", "%s is not a network namespace", path)
	}
	if err := syscall.Stat("/proc/self/ns/net", &self); err == nil && ns.Dev == self.Dev && ns.Ino == self.Ino {
		return newError(CodeInvalidEnv, "invalid CNI_NETNS", "%s is the plugin's own network namespace", path)
	}
	return nil
}

func (p *plugin) hostMAC(name string) net.HardwareAddr {
	lookup := p.env.HostMAC
	if lookup == nil {
		lookup = hostLinkMAC
	}
	mac, err := lookup(name)
	if err != nil {
		return nil // the result then omits it, which the spec allows
	}
	return mac
}

// hostLinkMAC asks the kernel for a host link's address.
func hostLinkMAC(name string) (net.HardwareAddr, error) {
	h, err := link.Host()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkGet(name)
	return l.MAC, err
}

func (p *plugin) add(data []byte) *Error {
	c, err := ParseConfig(data)
	if err != nil {
		return err
	}
	if err := c.Unsupported(); err != nil {
		return err
	}
	args, err := ParseArgs(p.inv.Args)
	if err != nil {
		return err
	}
	prev, err := ParsePrevResult(c.PrevResult, c.CNIVersion)
	if err != nil {
		return err
	}
	req, err := c.Request(p.inv, args)
	if err != nil {
		return err
	}
	isNetns := p.env.IsNetns
	if isNetns == nil {
		isNetns = netns.IsNet
	}
	if err := checkNetns(p.inv.Netns, isNetns); err != nil {
		return err
	}
	e, err := p.engine(&c.BaseConf)
	if err != nil {
		return err
	}
	if err := checkNetwork(e, req.Network); err != nil {
		return err
	}
	// Another configuration's ADD may make the network after the check:
	// the engine checks again, before it attaches anything.
	req.Accept = func(n *engine.Network) error {
		if merr := networkMismatch(n, req.Network); merr != nil {
			return merr
		}
		return nil
	}
	a, n, aerr := e.CNIAdd(req)
	if aerr != nil {
		return engineError("ADD failed", aerr)
	}
	r := BuildResult(a, n, p.hostMAC(a.Endpoint.HostIf), c.ResultDNS(n))
	if prev != nil {
		r = Merge(prev, r)
	}
	return WriteResult(p.env.Stdout, r, c.CNIVersion)
}

// del removes the attachment from knit's record alone.
func (p *plugin) del(data []byte) *Error {
	c, err := ParseBase(data)
	if err != nil {
		return err
	}
	e, err := p.engine(c)
	if err != nil {
		return err
	}
	if derr := e.CNIDel(c.Name, p.inv.ContainerID, p.inv.IfName); derr != nil {
		return engineError("DEL failed", derr)
	}
	return nil
}

func (p *plugin) check(data []byte) *Error {
	c, err := ParseConfig(data)
	if err != nil {
		return err
	}
	prev, err := ParsePrevResult(c.PrevResult, c.CNIVersion)
	if err != nil {
		return err
	}
	e, err := p.engine(&c.BaseConf)
	if err != nil {
		return err
	}
	a, gerr := e.CNIGet(p.inv.ContainerID, p.inv.IfName)
	if errdefs.KindOf(gerr) == errdefs.KindNotFound {
		return newError(CodeUnknownContainer, "unknown container", gerr.Error())
	}
	if gerr != nil {
		return engineError("CHECK failed", gerr)
	}
	var diffs []string
	if cerr := e.CNICheck(p.inv.ContainerID, p.inv.IfName, p.inv.Netns); cerr != nil {
		if errdefs.KindOf(cerr) != errdefs.KindConflict {
			return engineError("CHECK failed", cerr)
		}
		diffs = append(diffs, cerr.Error())
	}
	if prev != nil {
		diffs = append(diffs, checkPrevResult(prev, a)...)
	}
	if len(diffs) > 0 {
		return newError(CodeCheckFailed, "the attachment is not as knit made it", strings.Join(diffs, "; "))
	}
	return nil
}

// gc removes every attachment on the network that is not in the valid
// list, and every one whose ADD died half-way. The list's key is
// cni.dev/valid-attachments; the spec's first text of 1.1.0 named it
// cni.dev/attachments, which libcni sends too (containernetworking/cni
// #1101): a runtime that sends only that one must not lose every
// attachment. With neither, nothing is valid, as for libcni, which has
// then already deleted every attachment it cached.
func (p *plugin) gc(data []byte) *Error {
	var c struct {
		BaseConf
		ValidAttachments *[]types.GCAttachment `json:"cni.dev/valid-attachments"`
		Attachments      *[]types.GCAttachment `json:"cni.dev/attachments"`
	}
	if err := decode(data, &c, &c.BaseConf); err != nil {
		return err
	}
	valid := c.ValidAttachments
	if valid == nil {
		valid = c.Attachments
	}
	keep := map[types.GCAttachment]bool{}
	if valid != nil {
		for _, a := range *valid {
			keep[a] = true
		}
	}
	e, err := p.engine(&c.BaseConf)
	if err != nil {
		return err
	}
	_, gerr := e.CNIGC(c.NetworkName(), c.Name, func(containerID, ifname string) bool {
		return keep[types.GCAttachment{ContainerID: containerID, IfName: ifname}]
	})
	if gerr != nil {
		return engineError("GC could not remove every stale attachment", gerr)
	}
	return nil
}

// status says whether ADD can succeed on the network now: 50 when it
// cannot (no free address, network being removed, configuration knit
// refuses), 51 when knit's engine cannot even start here.
func (p *plugin) status(data []byte) *Error {
	c, err := ParseConfig(data)
	if err != nil {
		return err
	}
	if err := c.Unsupported(); err != nil {
		return err
	}
	o, err := c.NetworkOptions()
	if err != nil {
		return err
	}
	e, err := p.engine(&c.BaseConf)
	if err != nil {
		if err.Code != CodeInvalidConfig {
			err.Code = CodeLimitedConnectivity
		} else {
			err.Code = CodeNotAvailable
		}
		return err
	}
	// A configuration that disagrees with the network ADD would find is
	// refused by ADD: STATUS says so first.
	if merr := checkNetwork(e, o); merr != nil {
		merr.Code = CodeNotAvailable
		return merr
	}
	if serr := e.CNIStatus(o); serr != nil {
		if errors.Is(serr, engine.ErrNetworkDamaged) {
			return newError(CodeLimitedConnectivity, "knit's network is damaged", serr.Error())
		}
		if errors.Is(serr, engine.ErrFirewallUnusable) {
			return newError(CodeLimitedConnectivity, "knit's firewall cannot be used here", serr.Error())
		}
		return newError(CodeNotAvailable, "knit cannot add containers to this network now", serr.Error())
	}
	return nil
}

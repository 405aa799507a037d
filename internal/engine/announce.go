package engine

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/knit-dev/knit/internal/link"
	"github.com/knit-dev/knit/internal/netns"
)

// AnnounceArg is the hidden command that announces a connect's or a CNI
// ADD's addresses once its port forwards, after the command returned
// (announceLater).
const AnnounceArg = "_announce"

// announceWait bounds the wait for a new port to forward (a second at
// most with the bridge's STP off, ~30 s on an administrator's bridge with
// it on, which gets none): it holds up no command.
const announceWait = 10 * time.Second

// announcement is what one endpoint announces: addrs on the container's
// interface ifName, once the host's port hostIf forwards.
type announcement struct {
	HostIf string       `json:"hostIf"`
	IfName string       `json:"ifName"`
	Addrs  []netip.Addr `json:"addrs"`
}

// announcements are those of eps: the addresses whose MAC does not follow
// them (driver.Endpoint.Unforeseen), on a bridge port. The containers on
// the bridge keep their entries for such an address given again at its
// last holder's MAC for tens of seconds otherwise. (Join made the host
// forget its own.)
func announcements(eps []Endpoint) []announcement {
	var todo []announcement
	for _, ep := range eps {
		if addrs := ep.Unforeseen(); len(addrs) > 0 && ep.HostIf != "" {
			todo = append(todo, announcement{HostIf: ep.HostIf, IfName: ep.IfName, Addrs: addrs})
		}
	}
	return todo
}

// announce sends todo from the namespace at nsPath, each once its port
// forwards: the kernel's link watch enables a new port once it has seen
// its carrier, up to a second after the join, and drops what the port is
// given until then. At best, and silent (nobody waits for it): a
// container whose entry stays wrong asks again once it times out.
func announce(todo []announcement, nsPath string) {
	for _, a := range todo {
		if !link.WaitForwarding(a.HostIf, announceWait) {
			continue
		}
		_ = netns.Do(nsPath, func() error { return link.Announce(a.IfName, a.Addrs) })
	}
}

// announceLater leaves eps' announcements to a process of its own, `knit
// _announce NETNS SPEC`, in a session of its own, that outlives this
// command by a second or so: a `network connect` or a CNI ADD returns
// before its port forwards, and a CNI runtime must not wait for more
// than the plugin. (A container's supervisor announces its endpoints
// itself.) It starts nothing when there is nothing to announce; a
// process that does not start costs the announcement only.
func (e *Engine) announceLater(eps []Endpoint, nsPath string) {
	todo := announcements(eps)
	if len(todo) == 0 {
		return
	}
	spec, err := json.Marshal(todo)
	if err != nil {
		return
	}
	cmd := exec.Command(e.self, AnnounceArg, "--", nsPath, string(spec))
	// Not a CNI plugin's invocation: a runtime's variables stay behind.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(v string) bool { return strings.HasPrefix(v, "CNI_") })
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if cmd.Start() == nil {
		_ = cmd.Process.Release()
	}
}

// Announce is the body of `knit _announce NETNS SPEC` (announceLater).
func Announce(nsPath, spec string) error {
	var todo []announcement
	if err := json.Unmarshal([]byte(spec), &todo); err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	announce(todo, nsPath)
	return nil
}

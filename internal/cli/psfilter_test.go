package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/driver"
	"github.com/knit-dev/knit/internal/engine"
	"github.com/knit-dev/knit/internal/firewall"
	"github.com/knit-dev/knit/internal/portmap"
)

func TestPSFilter(t *testing.T) {
	web := &engine.Container{ID: "aaaa1111", Name: "web", State: engine.State{Status: engine.StatusRunning},
		Endpoints: []engine.Endpoint{{Network: "front", Endpoint: driver.Endpoint{}}},
		Ports:     []firewall.PortMapping{{Proto: "tcp", ContainerPort: 80, HostPort: 8080}},
		Spec: engine.Spec{Exposed: []portmap.Spec{{Proto: "udp", ContainerFirst: 5000, ContainerLast: 5010}},
			Labels: map[string]string{"tier": "front", "team": "", "owner": "ann=b"}}}
	db := &engine.Container{ID: "bbbb2222", Name: "db", State: engine.State{Status: engine.StatusExited, ExitCode: 3},
		Spec: engine.Spec{NetworkMode: "host", Labels: map[string]string{"tier": "back"}}}
	for _, tc := range []struct {
		filters []string
		want    string // names that pass
	}{
		{nil, "web db"},
		{[]string{"name=web"}, "web"},
		{[]string{"name=^/d"}, "db"},
		{[]string{"name=we", "name=db"}, "web db"},
		{[]string{"id=^bbbb"}, "db"},
		{[]string{"status=exited"}, "db"},
		{[]string{"exited=3"}, "db"},
		{[]string{"exited=0"}, ""},
		{[]string{"network=front"}, "web"},
		{[]string{"network=host"}, "db"},
		{[]string{"publish=8080"}, "web"}, // the host port, as Docker's since 20.10
		{[]string{"publish=80"}, ""},
		{[]string{"publish=8080/udp"}, ""},
		{[]string{"publish=8079-8081"}, "web"},
		{[]string{"expose=80"}, "web"}, // a published port is exposed too
		{[]string{"expose=5005/udp"}, "web"},
		{[]string{"expose=5011/udp"}, ""},
		{[]string{"publish=1", "expose=80"}, "web"}, // either matches
		{[]string{"name=web", "status=exited"}, ""},
		{[]string{"status=running"}, "web"},
		{[]string{"status=restarting"}, ""},
		{[]string{"label=tier"}, "web db"},
		{[]string{"label=tier=back"}, "db"},
		{[]string{"label=team"}, "web"},
		{[]string{"label=team="}, "web"},              // an empty value, given
		{[]string{"label=owner=ann=b"}, "web"},        // the first = splits
		{[]string{"label=tier", "label=team"}, "web"}, // every label must match
		{[]string{"label=tier=side"}, ""},
		{[]string{"ancestor=/"}, "web db"}, // the host's root
		{[]string{"ancestor=/srv/bb/"}, ""},
		{[]string{"volume=data"}, ""}, // knit mounts no volume: none has it
	} {
		f, err := parsePSFilter(tc.filters)
		if err != nil {
			t.Errorf("%q: %v", tc.filters, err)
			continue
		}
		var got []string
		for _, c := range []*engine.Container{web, db} {
			if f.match(c) {
				got = append(got, c.Name)
			}
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%q: %q pass, want %q", tc.filters, got, tc.want)
		}
	}
	for _, bad := range []string{"color=red", "status=sleeping", "exited=x", "publish=http", "name=(", "nokey"} {
		if _, err := parsePSFilter([]string{bad}); err == nil {
			t.Errorf("filter %q accepted", bad)
		}
	}
	// ancestor= is the root filesystem, ps's IMAGE; network= takes an ID
	// or its prefix.
	web.Spec.Rootfs = "/srv/bb"
	if f, _ := parsePSFilter([]string{"ancestor=/srv/bb/"}); !f.match(web) || f.match(db) {
		t.Error("ancestor=/srv/bb/ does not pick the container with that rootfs")
	}
	nets := []*engine.Network{{Network: driver.Network{Name: "front", ID: "f00d1234"}}}
	if f, _ := parsePSFilter([]string{"network=f00d"}); f.resolve(nil, nets) != nil || !f.match(web) || f.match(db) {
		t.Error("network= by an ID prefix does not pick the container on that network")
	}
	// Between runs of --restart, a running container is restarting.
	web.State.Restarting = true
	for filter, want := range map[string]bool{"status=running": false, "status=restarting": true} {
		if f, _ := parsePSFilter([]string{filter}); f.match(web) != want {
			t.Errorf("%s on a restarting container: %v, want %v", filter, !want, want)
		}
	}
	if f, _ := parsePSFilter([]string{"status=running"}); !f.impliesAll {
		t.Error("a status filter does not look at every state")
	}
}

// before= and since= name a container by name or ID and keep those created
// before or after it.
func TestPSFilterBeforeSince(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	a := &engine.Container{ID: "aaaa", Name: "a", Created: t0}
	b := &engine.Container{ID: "bbbb", Name: "b", Created: t0.Add(time.Second)}
	c := &engine.Container{ID: "cccc", Name: "c", Created: t0.Add(2 * time.Second)}
	all := []*engine.Container{c, b, a}
	for _, tc := range []struct {
		filters []string
		want    string
	}{
		{[]string{"before=c"}, "b a"},
		{[]string{"since=a"}, "c b"},
		{[]string{"since=aaaa", "before=cc"}, "b"},
	} {
		f, err := parsePSFilter(tc.filters)
		if err == nil {
			err = f.resolve(all, nil)
		}
		if err != nil {
			t.Errorf("%q: %v", tc.filters, err)
			continue
		}
		var got []string
		for _, x := range all {
			if f.match(x) {
				got = append(got, x.Name)
			}
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%q: %q pass, want %q", tc.filters, got, tc.want)
		}
	}
	f, _ := parsePSFilter([]string{"before=nosuch"})
	if err := f.resolve(all, nil); err == nil {
		t.Error("before=nosuch: no error")
	}
}

package e2e

import (
	"strings"
	"testing"

	"github.com/knit-dev/knit/internal/testutil"
)

// Containers reach the world through the host, masqueraded to the host's
// address on the outgoing interface; the world never sees the bridge subnet.
func TestEgressIsMasqueraded(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ping", "-c1", "-W2", "203.0.113.1")
	// The reply tuple of the connection shows the address the world answered.
	ct := s.MustRun(t, "conntrack", "-L", "-p", "icmp", "-d", "203.0.113.1")
	if !strings.Contains(ct, "src=172.17.0.2") || !strings.Contains(ct, "dst=198.51.100.1") {
		t.Errorf("conntrack: want 172.17.0.2 translated to 198.51.100.1:\n%s", ct)
	}
	rules := s.MustRun(t, "nft", "list", "table", "inet", "knit")
	if !strings.Contains(rules, `ip saddr 172.17.0.0/16 oifname != "knit0" masquerade`) {
		t.Errorf("knit's table lacks the masquerade rule:\n%s", rules)
	}
}

func TestEgressWithoutMasquerade(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.WriteConfig(t, `{"ip-masq": false}`)
	// The world routes 172.17.0.0/16 back through the sandbox host, so the
	// ping succeeds with the container's own address as its source.
	s.World("ip", "route", "add", "172.17.0.0/16", "via", "198.51.100.1")
	s.MustKnit(t, "run", "--rm", "--rootfs", bb, "ping", "-c1", "-W2", "203.0.113.1")
	ct := s.MustRun(t, "conntrack", "-L", "-p", "icmp", "-d", "203.0.113.1")
	if !strings.Contains(ct, "dst=172.17.0.2") {
		t.Errorf("with ip-masq false the world should answer 172.17.0.2:\n%s", ct)
	}
	if rules := s.MustRun(t, "nft", "list", "table", "inet", "knit"); strings.Contains(rules, `oifname != "knit0" masquerade`) {
		t.Errorf("masquerade rule present although ip-masq is false:\n%s", rules)
	}
}

// With the firewall off knit leaves nftables alone.
func TestFirewallOff(t *testing.T) {
	s := sandbox(t)
	bb := testutil.Busybox(t)
	s.WriteConfig(t, `{"iptables": false}`)
	before := s.MustRun(t, "nft", "list", "ruleset") // iptables-nft's tables show here too
	s.MustKnit(t, "run", "--rm", "--rootfs", bb, "true")
	s.MustKnit(t, "network", "create", "-o", "icc=false", "quiet")
	s.MustKnit(t, "run", "--rm", "--network", "quiet", "--rootfs", bb, "true")
	if after := s.MustRun(t, "nft", "list", "ruleset"); after != before {
		t.Errorf("the ruleset changed although the firewall is off:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

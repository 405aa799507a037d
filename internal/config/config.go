// Package config reads /etc/knit/config.json: the subset of dockerd's
// daemon.json network settings that knit honours, under the same keys.
//
// Invariants: a missing file is the zero Config, which means Docker's
// defaults; a Config returned by Load has passed Validate; unknown keys are
// errors (a typo must not silently fall back to a default); every error
// about the file's contents is errdefs.Invalid and names the file and key.
// The accessors resolve unset settings to Docker's defaults, so callers
// never look at the raw fields' zero values for those.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/ipam"
)

// AddressPool is one entry of default-address-pools: Base split into
// subnets of prefix length Size.
type AddressPool struct {
	Base string `json:"base"`
	Size int    `json:"size"`
}

// Config is the contents of config.json.
type Config struct {
	Bip                 string        `json:"bip"`        // default bridge: gateway address and subnet, e.g. "172.26.0.1/16"
	FixedCIDR           string        `json:"fixed-cidr"` // optional ip-range of the default network
	MTU                 int           `json:"mtu"`
	Bridge              string        `json:"bridge"` // use this existing bridge; knit never creates or deletes it
	DefaultAddressPools []AddressPool `json:"default-address-pools"`
	IPForward           *bool         `json:"ip-forward"`
	// IPForwardNoDrop: when knit turns forwarding on, it does not drop
	// what the host forwards between its other interfaces (dockerd's
	// ip-forward-no-drop).
	IPForwardNoDrop bool   `json:"ip-forward-no-drop"`
	ICC             *bool  `json:"icc"`
	IPMasq          *bool  `json:"ip-masq"`
	IP              string `json:"ip"`       // default host address for published ports
	IPTables        *bool  `json:"iptables"` // firewall on/off (name kept from dockerd)
	DefaultGateway  string `json:"default-gateway"`
}

// Load reads the config file at path. A missing or empty file gives the
// zero Config (Docker's defaults).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// parse decodes and validates a config file's contents.
func parse(data []byte) (*Config, error) {
	c := &Config{}
	if len(bytes.TrimSpace(data)) == 0 {
		return c, nil
	}
	if err := checkKeys(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, jsonError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errdefs.Invalid("unexpected data after the JSON object")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// checkKeys reports the first key that Config does not know, in the
// top-level object or in an address pool, naming the keys it does know.
// (encoding/json's own error for this has no type to inspect.)
func checkKeys(data []byte) error {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return nil // not an object: Decode reports it
	}
	if err := unknownKey(top, reflect.TypeFor[Config](), ""); err != nil {
		return err
	}
	var pools []map[string]json.RawMessage
	if json.Unmarshal(top["default-address-pools"], &pools) != nil {
		return nil
	}
	for i, p := range pools {
		if err := unknownKey(p, reflect.TypeFor[AddressPool](), fmt.Sprintf("default-address-pools[%d].", i)); err != nil {
			return err
		}
	}
	return nil
}

func unknownKey(obj map[string]json.RawMessage, t reflect.Type, where string) error {
	var known []string
	for f := range t.Fields() {
		known = append(known, strings.Split(f.Tag.Get("json"), ",")[0])
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(known, k) {
			return errdefs.Invalid("unknown key %q; known keys are %s", where+k, strings.Join(known, ", "))
		}
	}
	return nil
}

// jsonError turns a decoding error into one naming the line and key.
func jsonError(data []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := position(data, syn.Offset)
		return errdefs.Invalid("invalid JSON at line %d, column %d: %v", line, col, err)
	case errors.As(err, &typ) && typ.Field == "":
		return errdefs.Invalid("the file must hold one JSON object, not a JSON %s", typ.Value)
	case errors.As(err, &typ):
		line, _ := position(data, typ.Offset)
		return errdefs.Invalid("key %q at line %d: expected %s, got JSON %s", typ.Field, line, typ.Type, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errdefs.Invalid("invalid JSON: unexpected end of file")
	}
	return errdefs.Invalid("invalid JSON: %v", err)
}

func position(data []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// BridgeName is the default network's bridge: Bridge, or "knit0".
func (c *Config) BridgeName() string {
	if c.Bridge != "" {
		return c.Bridge
	}
	return "knit0"
}

// ForwardingOn reports whether knit turns on IP forwarding (default true).
func (c *Config) ForwardingOn() bool { return on(c.IPForward) }

// ICCOn reports whether containers on one network may talk (default true).
func (c *Config) ICCOn() bool { return on(c.ICC) }

// MasqueradeOn reports whether outgoing traffic is masqueraded (default true).
func (c *Config) MasqueradeOn() bool { return on(c.IPMasq) }

// FirewallOn reports whether knit manages firewall rules (default true).
func (c *Config) FirewallOn() bool { return on(c.IPTables) }

func on(b *bool) bool { return b == nil || *b }

// MTUOrDefault is the MTU of new networks: MTU, or 1500.
func (c *Config) MTUOrDefault() int {
	if c.MTU != 0 {
		return c.MTU
	}
	return 1500
}

// Pools returns the IPv4 address pools new networks take subnets from:
// default-address-pools' IPv4 entries in order, or ipam.DefaultPools().
// Entries that do not parse are skipped (Load has rejected them already).
func (c *Config) Pools() []ipam.PoolSpec {
	if out := c.pools(false); len(out) > 0 {
		return out
	}
	return ipam.DefaultPools()
}

// Pools6 is Pools for IPv6 subnets (--ipv6 without one): the IPv6 entries,
// or ipam.DefaultULAPools().
func (c *Config) Pools6() []ipam.PoolSpec {
	if out := c.pools(true); len(out) > 0 {
		return out
	}
	return ipam.DefaultULAPools()
}

func (c *Config) pools(v6 bool) []ipam.PoolSpec {
	var out []ipam.PoolSpec
	for _, p := range c.DefaultAddressPools {
		if base, err := netip.ParsePrefix(p.Base); err == nil && base.Addr().Is6() == v6 {
			out = append(out, ipam.PoolSpec{Base: base.Masked(), Size: p.Size})
		}
	}
	return out
}

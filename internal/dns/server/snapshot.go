package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
)

// SnapshotFile is the name of the snapshot in the server's directory.
const SnapshotFile = "records.json"

// Snapshot is everything the server answers from.
type Snapshot struct {
	Port      uint16           `json:"port,omitempty"`      // 0 means 53
	Upstreams []netip.AddrPort `json:"upstreams,omitempty"` // for clients not in any Endpoint
	Networks  []Network        `json:"networks"`
}

// Network is one DNS-enabled network: where the server listens for it and
// the containers attached to it.
type Network struct {
	Name   string       `json:"name"`
	Listen []netip.Addr `json:"listen"` // gateway addresses, one per family
	// Subnets, when given, are the only client addresses served on Listen:
	// anyone else (another host that routes to the gateway) is refused, so
	// the server is never an open resolver.
	Subnets []netip.Prefix `json:"subnets,omitempty"`
	// Internal networks have no way out: a client that is not a known
	// container asking on them gets no name forwarded upstream.
	Internal  bool       `json:"internal,omitempty"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one container's attachment to a network.
type Endpoint struct {
	Container string `json:"container"` // container ID
	Name      string `json:"name"`      // container name
	Hostname  string `json:"hostname,omitempty"`
	// ShortID is the container's ID cut to 12 characters, a name of it
	// too, as in Docker ("" for a CNI attachment, which has no knit ID).
	ShortID string       `json:"shortId,omitempty"`
	Aliases []string     `json:"aliases,omitempty"` // --network-alias on this network
	Addrs   []netip.Addr `json:"addrs"`
	// Links are names only this container resolves: a --link alias →
	// the target's container ID, answered with the target's addresses on
	// this endpoint's network, the link's (Docker's --link on a
	// user-defined network).
	Links map[string]string `json:"links,omitempty"`
	// Upstreams are where this container's other queries go: its --dns;
	// none: the snapshot's (the host's resolv.conf's).
	Upstreams []netip.AddrPort `json:"upstreams,omitempty"`
	// Netns is the container's network namespace file: its queries go
	// upstream from there, as Docker's, so that its own routes, firewall
	// and loopback apply (--dns 127.0.0.1 is the container's own). Only a
	// server of the host's it could not reach (files.AskedFromHost: a
	// stub such as systemd-resolved's, for a container without --dns) is
	// asked from the host. "": everything from the host.
	Netns string `json:"netns,omitempty"`
	// IPv6: the container has IPv6 addresses; NoIPv4: it has no IPv4
	// ones (IPv6-only networks) (files.AskedFromHost).
	IPv6   bool `json:"ipv6,omitempty"`
	NoIPv4 bool `json:"noIPv4,omitempty"`
	// Isolated is a container on internal networks only: its names are
	// answered, and other names go only to a server on the network asked
	// (askFrom), from its own namespace, never from the host, which would
	// be a way out.
	Isolated bool `json:"isolated,omitempty"`
	// NdotsSet is a container whose resolv.conf options (its
	// --dns-option, else the host's) set ndots: an unknown single-label
	// name is answered empty instead of forwarded, as Docker's.
	NdotsSet bool `json:"ndotsSet,omitempty"`
}

// port returns the port the server listens on.
func (s *Snapshot) port() uint16 {
	if s.Port == 0 {
		return 53
	}
	return s.Port
}

// Save writes s to dir/records.json atomically (a temporary file renamed
// over it), so the server never reads half a snapshot. It creates dir
// (mode 0755) if needed.
func Save(dir string, s *Snapshot) (err error) {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode dns snapshot: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save dns snapshot: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+SnapshotFile+"-*")
	if err != nil {
		return fmt.Errorf("save dns snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, SnapshotFile))
	}
	if err != nil {
		return fmt.Errorf("save dns snapshot: %w", err)
	}
	wanted := filepath.Join(dir, WantedFile)
	if len(s.Networks) == 0 {
		err = os.Remove(wanted)
	} else if !Wanted(dir) {
		err = os.WriteFile(wanted, nil, 0o644)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("save dns snapshot: %w", err)
	}
	return nil
}

// Load reads dir/records.json. A missing file is an empty snapshot.
func Load(dir string) (*Snapshot, error) {
	data, err := os.ReadFile(filepath.Join(dir, SnapshotFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &Snapshot{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load dns snapshot: %w", err)
	}
	var s Snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("load dns snapshot %s: %w", filepath.Join(dir, SnapshotFile), err)
	}
	return &s, nil
}

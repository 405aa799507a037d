package nftables

import (
	"errors"
	"io/fs"
	"os"
)

// The loss marker says that knit's base (table, chains, sets, shared
// rules) was found not in place and made again: whatever the table held
// for every network, port and link was gone with it (`nft flush ruleset`,
// a firewall service's restart), and the engine must put it back. Any
// call that rebuilds the base notes it, before its batch (a crash after
// the note only costs a restore that finds nothing missing); only
// MarkRestored, once everything is back, clears it. A file beside the
// stamp, so that every knit process sees it, and the loss is not
// forgotten when the process that rebuilt the base is not the one that
// restores: an AddPorts may rebuild it, and only EnsureNetworkReport
// reports it. Without a stamp (tests), the marker is the Firewall's own.

func (f *Firewall) lostPath() string {
	if f.stamp == "" {
		return ""
	}
	return f.stamp + ".lost"
}

// noteLost sets the marker; the caller holds f.mu.
func (f *Firewall) noteLost() error {
	p := f.lostPath()
	if p == "" {
		f.lostMem = true
		return nil
	}
	return os.WriteFile(p, nil, 0o600)
}

// lost reports the marker.
func (f *Firewall) lost() bool {
	p := f.lostPath()
	if p == "" {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.lostMem
	}
	_, err := os.Stat(p)
	return err == nil
}

// MarkRestored clears the loss marker: the caller has put back what the
// base's loss took.
func (f *Firewall) MarkRestored() error {
	p := f.lostPath()
	if p == "" {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.lostMem = false
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

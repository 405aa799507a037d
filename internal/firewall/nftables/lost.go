package nftables

import (
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// The loss marker says that knit's base (table, chains, sets, shared
// rules) was found not in place and made again: whatever the table held
// for every network, port and link was gone with it (`nft flush ruleset`,
// a firewall service's restart), and the engine must put it back. Any
// call that rebuilds the base notes it, before its batch (a crash after
// the note only costs a restore that finds nothing missing); MarkRestored,
// once everything was put back, clears it. A file beside the stamp, so
// that every knit process sees it, and the loss is not forgotten when the
// process that rebuilt the base is not the one that restores: an AddPorts
// may rebuild it, and only EnsureNetworkReport reports it. Each note
// writes a new token, and MarkRestored clears only the one its report saw:
// a loss during the restore is kept for the next. Without a stamp (tests),
// or where the file cannot be written, the marker is the Firewall's own.

func (f *Firewall) lostPath() string {
	if f.stamp == "" {
		return ""
	}
	return f.stamp + ".lost"
}

// noteLost sets the marker; the caller holds f.mu. Best effort: a marker
// that cannot be written (no exec-root yet) stays in memory.
func (f *Firewall) noteLost() {
	f.lostMem = true
	p := f.lostPath()
	if p == "" {
		return
	}
	token := rand.Text()
	if os.MkdirAll(filepath.Dir(p), 0o755) == nil && os.WriteFile(p, []byte(token), 0o600) == nil {
		f.lostMem = false
	}
}

// NoteLost sets the marker for a caller that could not put back elements
// it removed: see firewall.Firewall.
func (f *Firewall) NoteLost() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noteLost()
	return nil
}

// lost reports the marker, and remembers the token it saw for
// MarkRestored.
func (f *Firewall) lost() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lostSeen = ""
	if p := f.lostPath(); p != "" {
		if b, err := os.ReadFile(p); err == nil {
			f.lostSeen = string(b)
			return true
		}
	}
	return f.lostMem
}

// MarkRestored clears the loss marker that the last report saw: the caller
// has put back what that loss took. A newer loss stays.
func (f *Firewall) MarkRestored() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lostMem = false
	p := f.lostPath()
	if p == "" || f.lostSeen == "" {
		return nil
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != f.lostSeen {
		return nil // gone, or a newer loss
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f.lostSeen = ""
	return nil
}

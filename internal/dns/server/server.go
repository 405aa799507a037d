// Package server is knit's embedded DNS resolver: containers on
// user-defined networks resolve each other's names, hostnames and network
// aliases within the networks they share, as with Docker; other names go
// upstream.
//
// One server process per host serves all networks. It listens (UDP and TCP)
// on every DNS-enabled network's gateway addresses and answers from a
// Snapshot that the engine rewrites with Save whenever containers or
// networks change; the server notices the new file within milliseconds
// (inotify) and swaps its tables without dropping a query.
//
// Invariants:
//   - A query is answered from one snapshot's tables, never a mix; a
//     snapshot that fails to parse is logged and the previous one kept.
//   - A client sees only the networks its container is attached to (an
//     unknown client: the networks of the address it asked). A name known
//     there is never forwarded and never NXDOMAIN; anything else is
//     forwarded (but an unknown single-label name's address, for a client
//     that set ndots itself: answered empty, as Docker's), never to the
//     server's own addresses, and a query that no upstream answers but
//     with SERVFAIL or REFUSED gets SERVFAIL. No input makes the server
//     panic.
//   - A container's query goes upstream from its own network namespace
//     (sockets opened there), but to a server of the host's that the
//     container could not reach (files.AskedFromHost); nothing asked on
//     an internal network's gateway goes out through the host or a
//     namespace with a way out (askFrom). No socket in a namespace
//     outlives the container's leaving the snapshot (forwarder.keep).
//   - At most one server holds dir/server.lock, and only a server holding
//     it listens.
//
// Starting and stopping, without a daemon (the protocol between the engine
// and the server):
//
//  1. The engine calls Save, then Running. If Running is false it starts a
//     server process that calls Serve; if that server finds the lock taken
//     (for longer than a probe of Running holds it) it returns, since
//     another server is serving.
//  2. Serve takes the lock, opens the listeners, then writes dir/server.pid
//     (for a caller waiting until DNS works), and serves.
//  3. When a snapshot has no networks, Serve closes its listeners, removes
//     server.pid and releases the lock; then it loads the snapshot once
//     more. If that has networks again, the engine saved it while the
//     server was stopping: Serve takes the lock again (or returns if a new
//     server has it) and serves on.
//  4. A server whose binary has been replaced since it started (knit
//     upgraded in place) is stopped by the next engine that syncs records
//     from that path, which then starts its own (engine stopReplacedDNS);
//     Serve returns on SIGTERM as in 3.
//
// A change saved by the engine is thus never lost: either the engine's
// Running saw no lock and it starts a server, or the server's load after
// releasing the lock sees the change.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Files in the server's directory besides the snapshot.
const (
	LockFile   = "server.lock" // flocked by the running server
	PIDFile    = "server.pid"  // the running server's PID, once it listens
	WantedFile = "wanted"      // present while the snapshot has networks (Save)
	// ListenErrorsFile lists the listeners the server could not open
	// (ADDR: ERROR, a line each) while there are any.
	ListenErrorsFile = "listen-errors"
)

// upstreamTimeout is how long one upstream has to answer a forwarded query.
const upstreamTimeout = 2 * time.Second

// retryListen is how soon listeners that failed to open are tried again.
const retryListen = time.Second

// Serve answers DNS queries for the networks in dir's snapshot until the
// snapshot has no networks or ctx is done, and then returns nil; see the
// package comment for how it starts and stops. It returns nil at once if
// another server holds dir's lock, and an error if it cannot make dir,
// watch it, take the lock, or parse the first snapshot it serves. A nil log
// discards messages; forwarding failures are logged at debug level.
func Serve(ctx context.Context, dir string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := newForwarder(upstreamTimeout, log)
	defer f.close()
	return (&server{dir: dir, log: log, exchange: f.exchange, keepNetns: f.keep}).serve(ctx)
}

// Wanted reports whether the last snapshot saved in dir has networks, so
// that a server should run: one stat, for a check in every command.
func Wanted(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, WantedFile))
	return err == nil
}

// Running reports whether a server holds dir's lock. It probes with a
// shared non-blocking flock and releases at once. A server starting during
// the probe may fail to take the lock and exit; Running then returns false,
// and the caller starts another.
func Running(dir string) bool {
	f, err := os.Open(filepath.Join(dir, LockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB) != nil
}

// server is one Serve call's state.
type server struct {
	dir      string
	log      *slog.Logger
	exchange exchangeFunc
	// keepNetns, if set, is told which namespaces the snapshot still
	// forwards from (forwarder.keep).
	keepNetns func(wanted func(netns string) bool)
	tables    atomic.Pointer[tables]
	listeners map[netip.AddrPort]*listener
}

func (s *server) serve(ctx context.Context) error {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("dns server: %w", err)
	}
	// Watch before the first load, so no change falls between the two.
	w, err := watch(s.dir)
	if err != nil {
		return fmt.Errorf("dns server: %w", err)
	}
	defer w.close()
	for {
		lock, err := tryLock(s.dir)
		if err != nil {
			return err
		}
		if lock == nil {
			s.log.Info("dns server: another server holds the lock")
			return nil
		}
		err = s.run(ctx, w)
		_ = lock.Close() // releases the lock
		if err != nil || ctx.Err() != nil {
			return err
		}
		snap, err := Load(s.dir)
		if err != nil {
			return fmt.Errorf("dns server: %w", err)
		}
		if len(snap.Networks) == 0 {
			s.log.Info("dns server stopped: no networks")
			return nil
		}
		s.log.Info("dns server: networks added while stopping, serving on")
	}
}

// run serves while the lock is held: it loads the snapshot, opens the
// listeners and follows changes until a snapshot has no networks or ctx is
// done. It closes the listeners and removes the PID file before returning.
func (s *server) run(ctx context.Context, w *watcher) error {
	snap, err := Load(s.dir)
	if err != nil {
		return fmt.Errorf("dns server: %w", err)
	}
	if len(snap.Networks) == 0 {
		return nil
	}
	s.listeners = make(map[netip.AddrPort]*listener)
	defer s.closeAll()
	retry := s.apply(snap)
	if err := writePID(s.dir); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(s.dir, PIDFile))
	defer s.noteListenErrors(nil)
	s.log.Info("dns server started", "networks", len(snap.Networks), "listeners", len(s.listeners))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-retry:
			retry = s.apply(snap)
		case <-w.changed:
			next, err := Load(s.dir)
			if err != nil {
				s.log.Warn("dns snapshot ignored", "err", err)
				continue
			}
			if len(next.Networks) == 0 {
				return nil
			}
			snap = next
			retry = s.apply(snap)
			s.log.Debug("dns snapshot loaded", "networks", len(snap.Networks), "listeners", len(s.listeners))
		}
	}
}

// apply makes snap's tables current, then closes the listeners of
// addresses gone and opens those of addresses new. It returns a timer when
// a listener failed to open (the port may be busy for a moment), nil
// otherwise.
func (s *server) apply(snap *Snapshot) <-chan time.Time {
	t := newTables(snap)
	// Before the tables: a container's new namespace at a reused path
	// must not get the old one's sockets.
	if s.keepNetns != nil {
		s.keepNetns(func(netns string) bool { return t.netns[netns] })
	}
	s.tables.Store(t)
	for addr, l := range s.listeners {
		if !t.listen[addr] {
			l.close()
			delete(s.listeners, addr)
			s.log.Info("dns listener closed", "addr", addr)
		}
	}
	var failed []string
	for addr := range t.listen {
		if s.listeners[addr] != nil {
			continue
		}
		l, err := listen(addr, &s.tables, s.exchange, s.log)
		if err != nil {
			s.log.Warn("dns listener", "err", err)
			failed = append(failed, fmt.Sprintf("%s: %v", addr, err))
			continue
		}
		s.listeners[addr] = l
		s.log.Info("dns listener opened", "addr", addr)
	}
	s.noteListenErrors(failed)
	if len(failed) > 0 {
		return time.After(retryListen)
	}
	return nil
}

// noteListenErrors keeps ListenErrorsFile in step with failed, for knit's
// commands to say why a network's containers get no answers.
func (s *server) noteListenErrors(failed []string) {
	path := filepath.Join(s.dir, ListenErrorsFile)
	if len(failed) == 0 {
		_ = os.Remove(path)
		return
	}
	slices.Sort(failed)
	// Renamed into place: a command reading it never sees half of it.
	tmp := path + ".tmp"
	err := os.WriteFile(tmp, []byte(strings.Join(failed, "\n")+"\n"), 0o644)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		s.log.Warn("dns listen errors", "err", err)
	}
}

// ListenErrors returns what the server in dir failed to open when it last
// applied a snapshot, if anything (ADDR: ERROR each): a snapshot saved a
// moment ago may not be applied yet, so a new network's failure shows from
// the next command on.
func ListenErrors(dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, ListenErrorsFile))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func (s *server) closeAll() {
	for addr, l := range s.listeners {
		l.close()
		delete(s.listeners, addr)
	}
}

// lockTries is how many times tryLock tries, a millisecond apart.
const lockTries = 50

// tryLock takes dir's server lock, or returns nil, nil if another server
// holds it; a command's probe (Running) holding it for a moment is waited
// out. Equivalent to: `flock -w 0.05 DIR/server.lock`.
func tryLock(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("dns server lock: %w", err)
	}
	// Running's probe holds a shared lock for a moment: a few tries ride
	// it out, where a serving server holds the lock for good.
	for range lockTries {
		if err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		return f, nil
	}
	f.Close()
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, nil
	}
	return nil, fmt.Errorf("dns server lock %s: %w", f.Name(), err)
}

// writePID writes the process's PID to dir/server.pid, atomically so a
// reader never sees a partial number.
func writePID(dir string) error {
	tmp := filepath.Join(dir, "."+PIDFile)
	err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, PIDFile))
	}
	if err != nil {
		return fmt.Errorf("dns server pid: %w", err)
	}
	return nil
}

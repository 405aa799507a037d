// Package bolt implements store.Store over a bbolt file.
//
// bbolt holds an exclusive flock on its file for as long as it is open
// read-write, and many knit processes (CLI commands, long-lived container
// supervisors) share one store. So a Store never keeps the file open: every
// View and Update opens it, runs one bbolt transaction and closes it again.
// Invariants:
//   - no lock is held between calls; a caller waits at most 30s for another
//     process's transaction, then gets a "store is busy" conflict error;
//   - values handed to and returned from a Tx are copies, safe to keep and
//     modify after the call;
//   - View never creates the file or its directory; a missing file is an
//     empty store;
//   - errors returned by the caller's function come back unchanged.
package bolt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/faults"
	"github.com/knit-dev/knit/internal/flock"
	"github.com/knit-dev/knit/internal/store"
	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// lockTimeout is how long a transaction waits for another process's.
const lockTimeout = 30 * time.Second

// Store is a store.Store kept in one bbolt file.
type Store struct {
	path    string
	timeout time.Duration
	// mu orders this process's transactions on the file: bbolt polls a busy
	// flock every 50ms, so waiting here hands over at once instead. Other
	// processes are kept out by the flock alone.
	mu sync.RWMutex
}

var _ store.Store = (*Store)(nil)

// Open returns a Store kept at path. It touches nothing: the file (mode
// 0600) and its directory (0700) are created by the first Update.
func Open(path string) *Store { return &Store{path: path, timeout: lockTimeout} }

// View runs fn in a read-only transaction. Other readers may run at the
// same time; writers wait.
func (s *Store) View(fn func(store.Tx) error) (err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	unlock, err := s.lock(unix.LOCK_SH)
	if err != nil {
		return err
	}
	defer unlock()
	// A missing or empty file holds nothing yet. An empty file is one being
	// created by an Update that still holds its lock; opening it read-only
	// would fail, and nothing in it is committed anyway.
	if fi, err := os.Stat(s.path); errors.Is(err, os.ErrNotExist) || (err == nil && fi.Size() == 0) {
		return fn(emptyTx{})
	}
	defer s.damaged(&err) // bbolt panics on a bad page, opening too
	db, err := s.open(true)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(btx *bbolt.Tx) error { return callerPanics(fn, &tx{btx}) })
}

// callerPanic carries a panic of the caller's function through bbolt, so
// that damaged tells it from bbolt's own.
type callerPanic struct{ v any }

// callerPanics runs fn, marking a panic in it as the caller's unless bbolt
// raised it (reading a page for one of fn's calls).
func callerPanics(fn func(store.Tx) error, t store.Tx) error {
	defer func() {
		if v := recover(); v != nil {
			if raisedByBbolt(debug.Stack()) {
				panic(v)
			}
			panic(callerPanic{v})
		}
	}()
	return fn(t)
}

// raisedByBbolt reports whether the innermost panic in stack (a
// goroutine's trace taken while it panics) was raised in bbolt: the first
// panic( from the top, and the function below it, past the runtime's own
// frames (runtime.goPanicIndex, runtime.sigpanic, ..., which
// GOTRACEBACK=system shows).
func raisedByBbolt(stack []byte) bool {
	lines := strings.Split(string(stack), "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "panic(") {
			continue
		}
		for _, f := range lines[i+1:] {
			if f != "" && !strings.HasPrefix(f, "\t") && !strings.HasPrefix(f, "runtime.") {
				return strings.HasPrefix(f, "go.etcd.io/bbolt")
			}
		}
		return false
	}
	return false
}

// damaged turns a panic of bbolt's (it panics on a page it cannot make
// sense of) into an error that names the file and what to do, instead of
// crashing every command and supervisor alike; the caller's own panics go
// on as they were.
func (s *Store) damaged(err *error) {
	v := recover()
	if v == nil {
		return
	}
	if cp, ok := v.(callerPanic); ok {
		panic(cp.v)
	}
	*err = fmt.Errorf("store %s is damaged (%v): move it aside, then `knit system prune` removes what it described", s.path, v)
}

// Update runs fn in a read-write transaction, committed if fn returns nil
// and rolled back otherwise (also when fn panics).
func (s *Store) Update(fn func(store.Tx) error) (err error) {
	fn = faults.After("store.commit", fn)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("create store directory: %w", err)
	}
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	defer s.damaged(&err) // bbolt panics on a bad page, opening too
	db, err := s.open(false)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store %s: %w", s.path, cerr)
		}
	}()
	return db.Update(func(btx *bbolt.Tx) error { return callerPanics(fn, &tx{btx}) })
}

// lock takes a flock on a lock file beside the store (flock.Poll: bbolt's
// own flock is retried every 50 ms, so commands queued behind one another
// would each lose up to 50 ms). A missing directory means there is no
// store yet, and nothing to lock.
func (s *Store) lock(how int) (unlock func(), err error) {
	f, err := os.OpenFile(s.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, os.ErrNotExist) && how == unix.LOCK_SH {
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open store lock: %w", err)
	}
	switch err := flock.Poll(int(f.Fd()), how, s.timeout); {
	case err == nil:
		return func() { f.Close() }, nil // closing releases the lock
	case errors.Is(err, flock.ErrBusy):
		f.Close()
		return nil, s.busy()
	default:
		f.Close()
		return nil, fmt.Errorf("lock store: %w", err)
	}
}

func (s *Store) busy() error {
	return errdefs.Unavailable("store %s is busy: another knit process has held it for over %s; retry, or look for a stuck knit process (fuser %s)", s.path, s.timeout, s.path)
}

func (s *Store) open(readOnly bool) (*bbolt.DB, error) {
	// bbolt.Open panics on a damaged page (loading the freelist) after it
	// has taken its flock on the file and mapped it, and the *DB that would
	// close both is never returned. The mapping keeps the file, and so the
	// flock, alive: the flock is released here (the mapping, of a file of
	// a few MB, is left), or a long-lived process (a supervisor) that met
	// the damage would keep every other knit out of the store.
	var file *os.File
	defer func() {
		if v := recover(); v != nil {
			if file != nil {
				_ = unix.Flock(int(file.Fd()), unix.LOCK_UN)
				file.Close()
			}
			panic(v)
		}
	}()
	openFile := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		file = f
		return f, err
	}
	db, err := bbolt.Open(s.path, 0o600, &bbolt.Options{Timeout: s.timeout, ReadOnly: readOnly, OpenFile: openFile})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, s.busy()
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", s.path, err)
	}
	return db, nil
}

// tx adapts a bbolt transaction. bbolt's slices point into the file's
// memory map, which is gone once the file is closed, so every value that
// leaves is copied, and every value that enters is copied because bbolt
// keeps it until commit.
type tx struct{ b *bbolt.Tx }

func (t *tx) Get(bucket, key string) ([]byte, error) {
	b := t.b.Bucket([]byte(bucket))
	if b == nil {
		return nil, store.ErrNotFound
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil, store.ErrNotFound
	}
	return clone(v), nil
}

func (t *tx) Put(bucket, key string, value []byte) error {
	if !t.b.Writable() {
		return fmt.Errorf("put %s/%s: read-only transaction", bucket, key)
	}
	b, err := t.b.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("create bucket %q: %w", bucket, err)
	}
	if err := b.Put([]byte(key), clone(value)); err != nil {
		return fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	return nil
}

func (t *tx) Delete(bucket, key string) error {
	if !t.b.Writable() {
		return fmt.Errorf("delete %s/%s: read-only transaction", bucket, key)
	}
	b := t.b.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	if err := b.Delete([]byte(key)); err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
	}
	// A bucket is a page of its own in the file: an empty one (the host
	// port of a container gone, the addresses of a network removed) goes
	// too, so the file does not grow with every name ever used. A missing
	// bucket reads as empty, so nobody can tell.
	if k, _ := b.Cursor().First(); k == nil {
		if err := t.b.DeleteBucket([]byte(bucket)); err != nil {
			return fmt.Errorf("delete empty bucket %s: %w", bucket, err)
		}
	}
	return nil
}

// List reads the whole bucket before calling fn, so fn may Put or Delete
// keys of the same bucket (bbolt cursors skip keys after a delete) and sees
// every key as it was when List began.
func (t *tx) List(bucket string, fn func(key string, value []byte) error) error {
	// Copied first, so that fn may change the bucket it lists.
	type kv struct {
		k string
		v []byte
	}
	var all []kv
	if err := t.Scan(bucket, func(k, v []byte) error {
		all = append(all, kv{string(k), clone(v)})
		return nil
	}); err != nil {
		return err
	}
	for _, e := range all {
		if err := fn(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}

// clone copies b; a nil or empty b becomes a non-nil empty slice, because
// bbolt stores a nil value as an empty one.
func clone(b []byte) []byte { return append([]byte{}, b...) }

func (t *tx) Scan(bucket string, fn func(key, value []byte) error) error {
	b := t.b.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		if v == nil { // a nested bucket, which knit never makes
			return nil
		}
		return fn(k, v)
	})
}

// emptyTx is the view of a store whose file does not exist yet.
type emptyTx struct{}

func (emptyTx) Get(string, string) ([]byte, error)            { return nil, store.ErrNotFound }
func (emptyTx) List(string, func(string, []byte) error) error { return nil }
func (emptyTx) Scan(string, func(_, _ []byte) error) error    { return nil }
func (emptyTx) Put(bucket, key string, _ []byte) error {
	return fmt.Errorf("put %s/%s: read-only transaction", bucket, key)
}
func (emptyTx) Delete(bucket, key string) error {
	return fmt.Errorf("delete %s/%s: read-only transaction", bucket, key)
}

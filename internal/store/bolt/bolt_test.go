package bolt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knit-dev/knit/internal/errdefs"
	"github.com/knit-dev/knit/internal/store"
	"github.com/knit-dev/knit/internal/store/storetest"
	bbolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return Open(filepath.Join(t.TempDir(), "knit.db"))
	})
}

func TestFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "knit.db")
	s := Open(path)
	// View of a store that was never written sees nothing and creates nothing.
	err := s.View(func(tx store.Tx) error {
		_, err := tx.Get("b", "k")
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("View of a missing file: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("View created %s (stat err %v)", dir, err)
	}
	// An empty file is one being created by another process: also empty.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(store.Tx) error { return nil }); err != nil {
		t.Fatalf("View of an empty file: %v", err)
	}
	if err := os.RemoveAll(filepath.Dir(dir)); err != nil {
		t.Fatal(err)
	}

	if err := s.Update(func(tx store.Tx) error { return tx.Put("b", "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700 | os.ModeDir}, {filepath.Dir(dir), 0o700 | os.ModeDir}, {path, 0o600}} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() &^ (os.FileMode(0o077) &^ tc.mode); got != tc.mode { // tolerate a stricter umask
			t.Errorf("%s: mode %v, want %v", tc.path, fi.Mode(), tc.mode)
		}
	}
	// A second Store on the same file (another process) sees the data.
	if err := Open(path).View(func(tx store.Tx) error {
		v, err := tx.Get("b", "k")
		if err == nil && string(v) != "v" {
			err = errors.New("wrong value " + string(v))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "knit.db")
	s := Open(path)
	if err := s.Update(func(tx store.Tx) error { return tx.Put("b", "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	// Another process holding the file read-write, as bbolt does.
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s.timeout = 150 * time.Millisecond
	for name, run := range map[string]func(func(store.Tx) error) error{"View": s.View, "Update": s.Update} {
		err := run(func(store.Tx) error { return nil })
		if errdefs.KindOf(err) != errdefs.KindUnavailable || !strings.Contains(err.Error(), "store "+path+" is busy") {
			t.Errorf("%s while locked: %v (kind %v), want a busy store (unavailable)", name, err, errdefs.KindOf(err))
		}
	}
}

func TestCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "knit.db")
	if err := os.WriteFile(path, []byte("this is not a bbolt file, but it is long enough to be read as one....."), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Open(path).View(func(store.Tx) error { return nil })
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("View of a corrupt file: %v, want an error naming %s", err, path)
	}
}

// A file whose pages bbolt cannot make sense of (it panics on them) gives
// every command an error naming the file, not a crash; also where
// tracebacks show the runtime's frames (GOTRACEBACK=system, as a service
// that wants core dumps sets it), between panic( and bbolt's function.
func TestDamagedPage(t *testing.T) {
	for _, level := range []string{"single", "system"} {
		t.Run(level, func(t *testing.T) {
			debug.SetTraceback(level)
			defer debug.SetTraceback("single")
			damagedPage(t)
		})
	}
}

func damagedPage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "knit.db")
	s := Open(path)
	if err := s.Update(func(tx store.Tx) error {
		for i := range 200 {
			if err := tx.Put("b", fmt.Sprintf("k%03d", i), []byte("value")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every page past the two meta pages and the freelist: their headers
	// (page ID, flags) become garbage.
	for off := 3 * 4096; off+16 <= len(b); off += 4096 {
		copy(b[off:off+16], bytes.Repeat([]byte{0xa5}, 16))
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	read := func(tx store.Tx) error {
		_, err := tx.Get("b", "k100")
		return err
	}
	// Update first: its bbolt.Open panics after taking the file's flock,
	// which must not outlive the panic (a View after it would wait for it).
	s.timeout = 2 * time.Second
	for _, c := range []struct {
		name string
		run  func() error
	}{
		{"Update", func() error { return s.Update(read) }},
		{"View", func() error { return s.View(read) }},
		{"Update again", func() error { return s.Update(read) }},
	} {
		if err := c.run(); err == nil || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), path) {
			t.Errorf("%s of a damaged file: %v, want an error saying %s is damaged", c.name, err, path)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Errorf("after %s, the file is still locked: %v", c.name, err)
		}
		f.Close()
	}
}

// TestPanicRollsBack checks that a panicking Update neither commits nor
// leaves the file locked.
func TestPanicRollsBack(t *testing.T) {
	s := Open(filepath.Join(t.TempDir(), "knit.db"))
	func() {
		defer func() { _ = recover() }()
		_ = s.Update(func(tx store.Tx) error {
			_ = tx.Put("b", "k", []byte("v"))
			panic("boom")
		})
	}()
	s.timeout = time.Second
	err := s.Update(func(tx store.Tx) error {
		if _, err := tx.Get("b", "k"); !errors.Is(err, store.ErrNotFound) {
			return errors.New("panicking Update was committed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

const helperEnv = "KNIT_BOLT_TEST_INCREMENT"

// TestProcessIncrements runs several processes that each increment one
// counter many times; none of the updates may be lost.
func TestProcessIncrements(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	const procs, each = 4, 15
	path := filepath.Join(t.TempDir(), "knit.db")
	var wg sync.WaitGroup
	errs := make(chan error, procs)
	for range procs {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestIncrementHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperEnv+"="+path+","+strconv.Itoa(each))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- errors.New(err.Error() + ": " + string(out))
			}
		})
	}
	// This process takes part too, through a second Store.
	for range each {
		if err := storetest.Increment(Open(path), "counters", "n"); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var got []byte
	if err := Open(path).View(func(tx store.Tx) (err error) { got, err = tx.Get("counters", "n"); return err }); err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa((procs + 1) * each); string(got) != want {
		t.Errorf("counter = %s, want %s: updates were lost", got, want)
	}
}

// TestIncrementHelper is the child of TestProcessIncrements.
func TestIncrementHelper(t *testing.T) {
	arg := os.Getenv(helperEnv)
	if arg == "" {
		t.Skip("helper process for TestProcessIncrements")
	}
	path, n, _ := strings.Cut(arg, ",")
	count, err := strconv.Atoi(n)
	if err != nil {
		t.Fatal(err)
	}
	s := Open(path)
	for range count {
		if err := storetest.Increment(s, "counters", "n"); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkUpdate measures one Update: open, lock, transaction, fsync, close.
func BenchmarkUpdate(b *testing.B) {
	s := Open(filepath.Join(b.TempDir(), "knit.db"))
	v := []byte(`{"id":"0123456789abcdef","addr":"172.17.0.2"}`)
	i := 0
	for b.Loop() {
		i++
		if err := s.Update(func(tx store.Tx) error { return tx.Put("containers", strconv.Itoa(i%100), v) }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkView measures one read-only View of a populated store.
func BenchmarkView(b *testing.B) {
	s := Open(filepath.Join(b.TempDir(), "knit.db"))
	if err := s.Update(func(tx store.Tx) error { return tx.Put("b", "k", []byte("v")) }); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := s.View(func(tx store.Tx) error { _, err := tx.Get("b", "k"); return err }); err != nil {
			b.Fatal(err)
		}
	}
}

// A file cut short (an interrupted copy, a partial restore) gives an
// error naming it, not a crash.
func TestTruncatedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "knit.db")
	s := Open(path)
	if err := s.Update(func(tx store.Tx) error {
		for i := range 4000 {
			if err := tx.Put("b", fmt.Sprintf("k%05d", i), bytes.Repeat([]byte("v"), 200)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 16*4096); err != nil {
		t.Fatal(err)
	}
	s.timeout = 2 * time.Second
	for _, c := range []struct {
		name string
		run  func() error
	}{
		{"View", func() error {
			return s.View(func(tx store.Tx) error { return tx.Scan("b", func(_, _ []byte) error { return nil }) })
		}},
		{"Update", func() error { return s.Update(func(tx store.Tx) error { return tx.Put("b", "k99999", []byte("v")) }) }},
	} {
		if err := c.run(); err == nil || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), path) {
			t.Errorf("%s of a truncated file: %v, want an error saying %s is damaged", c.name, err, path)
		}
	}
}

// raisedByBbolt reads the innermost panic, past the runtime's frames.
func TestRaisedByBbolt(t *testing.T) {
	const top = "goroutine 1 [running]:\nruntime/debug.Stack()\n\t/go/src/runtime/debug/stack.go:26 +0x5e\ngithub.com/knit-dev/knit/internal/store/bolt.callerPanics.func1()\n\t/x/bolt.go:90 +0x45\n"
	const bboltFrame = "go.etcd.io/bbolt.(*Tx).page(...)\n\t/m/bbolt/tx.go:600\n"
	const knitFrame = "github.com/knit-dev/knit/internal/engine.getJSON(...)\n\t/x/state.go:290\n"
	for _, c := range []struct {
		name, stack string
		want        bool
	}{
		{"bbolt's", top + "panic({0x1, 0x2})\n\t/go/src/runtime/panic.go:787 +0x132\n" + bboltFrame, true},
		{"the caller's", top + "panic({0x1, 0x2})\n\t/go/src/runtime/panic.go:787\n" + knitFrame, false},
		{"bbolt's index error, GOTRACEBACK=system", top + "panic({0x1, 0x2})\n\t/go/src/runtime/panic.go:787\nruntime.goPanicIndex(0x1c5, 0x10)\n\t/go/src/runtime/panic.go:115 +0x74\n" + bboltFrame, true},
		{"the caller's, during another panic's deferred call into bbolt", top + "panic({0x1, 0x2})\n\t/go/src/runtime/panic.go:787\n" + knitFrame +
			"panic({0x3, 0x4})\n\t/go/src/runtime/panic.go:787\n" + bboltFrame, false},
	} {
		if got := raisedByBbolt([]byte(c.stack)); got != c.want {
			t.Errorf("%s: raisedByBbolt = %v, want %v", c.name, got, c.want)
		}
	}
}

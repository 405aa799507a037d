// Package storetest is the conformance suite every store.Store backend
// passes: the behaviour of Get, Put, Delete and List, rollback, atomicity
// and serialised read-modify-write. A backend's test calls Run with a
// function that returns a new, empty store.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/knit-dev/knit/internal/store"
)

// Run runs the suite; open must return a new, empty store for each subtest.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"GetMissing", testGetMissing},
		{"PutGet", testPutGet},
		{"ValuesAreCopies", testValuesAreCopies},
		{"Delete", testDelete},
		{"ListOrder", testListOrder},
		{"ListError", testListError},
		{"ListWhileDeleting", testListWhileDeleting},
		{"ScanIsList", testScanIsList},
		{"BucketsAreSeparate", testBucketsAreSeparate},
		{"ReadYourWrites", testReadYourWrites},
		{"Rollback", testRollback},
		{"AtomicMultiKey", testAtomicMultiKey},
		{"ViewIsReadOnly", testViewIsReadOnly},
		{"ConcurrentIncrements", testConcurrentIncrements},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func put(t *testing.T, s store.Store, bucket string, kv ...string) {
	t.Helper()
	err := s.Update(func(tx store.Tx) error {
		for i := 0; i+1 < len(kv); i += 2 {
			if err := tx.Put(bucket, kv[i], []byte(kv[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// get returns the value of key, or "<missing>".
func get(t *testing.T, s store.Store, bucket, key string) string {
	t.Helper()
	var out string
	err := s.View(func(tx store.Tx) error {
		v, err := tx.Get(bucket, key)
		if errors.Is(err, store.ErrNotFound) {
			out = "<missing>"
			return nil
		}
		out = string(v)
		return err
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	return out
}

func list(t *testing.T, s store.Store, bucket string) []string {
	t.Helper()
	var out []string
	err := s.View(func(tx store.Tx) error {
		return tx.List(bucket, func(k string, v []byte) error {
			out = append(out, k+"="+string(v))
			return nil
		})
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	return out
}

func testGetMissing(t *testing.T, s store.Store) {
	if got := get(t, s, "nobucket", "k"); got != "<missing>" {
		t.Errorf("Get in a missing bucket = %q", got)
	}
	if got := list(t, s, "nobucket"); got != nil {
		t.Errorf("List of a missing bucket = %q", got)
	}
	put(t, s, "b", "k", "v")
	if got := get(t, s, "b", "other"); got != "<missing>" {
		t.Errorf("Get of a missing key = %q", got)
	}
	err := s.Update(func(tx store.Tx) error {
		_, err := tx.Get("b", "other")
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a missing key in Update: err = %v, want ErrNotFound", err)
	}
}

func testPutGet(t *testing.T, s store.Store) {
	big := bytes.Repeat([]byte("x"), 100_000)
	for _, tc := range []struct{ key, value string }{
		{"k", "v"},
		{"k", "overwritten"},
		{"empty", ""},
		{"json", `{"a":[1,2,3]}`},
		{"10.0.0.2", "container-id"},
		{"fd00::2", "binary\x00\xff"},
		{"big", string(big)},
		{"ключ", "значение"},
	} {
		put(t, s, "b", tc.key, tc.value)
		if got := get(t, s, "b", tc.key); got != tc.value {
			t.Errorf("Get(%q) = %.40q, want %.40q", tc.key, got, tc.value)
		}
	}
}

func testValuesAreCopies(t *testing.T, s store.Store) {
	err := s.Update(func(tx store.Tx) error {
		v := []byte("before")
		if err := tx.Put("b", "k", v); err != nil {
			return err
		}
		copy(v, "AFTER!") // must not reach the store
		got, err := tx.Get("b", "k")
		if err != nil {
			return err
		}
		copy(got, "XXXXXX") // must not reach the store either
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var kept []byte
	err = s.View(func(tx store.Tx) error {
		v, err := tx.Get("b", "k")
		kept = v
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "b", "k", "later")
	if string(kept) != "before" {
		t.Errorf("value kept after View = %q, want %q", kept, "before")
	}
}

func testDelete(t *testing.T, s store.Store) {
	put(t, s, "b", "a", "1", "b", "2")
	err := s.Update(func(tx store.Tx) error {
		return errors.Join(tx.Delete("b", "a"), tx.Delete("b", "missing"), tx.Delete("nobucket", "k"))
	})
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got, want := list(t, s, "b"), []string{"b=2"}; !slices.Equal(got, want) {
		t.Errorf("after Delete, List = %q, want %q", got, want)
	}
	put(t, s, "b", "a", "again")
	if got := get(t, s, "b", "a"); got != "again" {
		t.Errorf("Put after Delete: Get = %q", got)
	}
}

func testListOrder(t *testing.T, s store.Store) {
	keys := []string{"b", "a", "10", "9", "A", "a/b", "a-b", "172.17.0.10", "172.17.0.9", "é", "~"}
	var kv []string
	for _, k := range keys {
		kv = append(kv, k, "v"+k)
	}
	put(t, s, "b", kv...)
	want := slices.Clone(keys)
	slices.Sort(want) // Go compares strings bytewise
	for i, k := range want {
		want[i] = k + "=v" + k
	}
	if got := list(t, s, "b"); !slices.Equal(got, want) {
		t.Errorf("List = %q\nwant   %q", got, want)
	}
}

func testListError(t *testing.T, s store.Store) {
	put(t, s, "b", "a", "1", "b", "2", "c", "3")
	stop := errors.New("stop")
	var seen []string
	err := s.View(func(tx store.Tx) error {
		return tx.List("b", func(k string, _ []byte) error {
			seen = append(seen, k)
			if k == "b" {
				return fmt.Errorf("at %s: %w", k, stop)
			}
			return nil
		})
	})
	if !errors.Is(err, stop) {
		t.Errorf("List error = %v, want it to wrap %v", err, stop)
	}
	if !slices.Equal(seen, []string{"a", "b"}) {
		t.Errorf("List visited %q after an error, want [a b]", seen)
	}
}

// Scan visits what List visits, in the same order, stops at an error, and
// sees nothing of a missing bucket.
func testScanIsList(t *testing.T, s store.Store) {
	put(t, s, "b", "b", "2", "a", "1", "172.17.0.10", "x", "172.17.0.9", "y")
	var got []string
	stop := errors.New("stop")
	err := s.View(func(tx store.Tx) error {
		if err := tx.Scan("missing", func(k, _ []byte) error { return fmt.Errorf("visited %s", k) }); err != nil {
			return err
		}
		if err := tx.Scan("b", func(k, v []byte) error { got = append(got, string(k)+"="+string(v)); return nil }); err != nil {
			return err
		}
		return tx.Scan("b", func(k, _ []byte) error { return stop })
	})
	if !errors.Is(err, stop) {
		t.Errorf("Scan error = %v, want it to wrap %v", err, stop)
	}
	if want := list(t, s, "b"); !slices.Equal(got, want) {
		t.Errorf("Scan = %q\nList = %q", got, want)
	}
}

func testListWhileDeleting(t *testing.T, s store.Store) {
	var kv []string
	for i := range 50 {
		kv = append(kv, fmt.Sprintf("k%02d", i), "v")
	}
	put(t, s, "b", kv...)
	var seen int
	err := s.Update(func(tx store.Tx) error {
		return tx.List("b", func(k string, _ []byte) error {
			seen++
			return tx.Delete("b", k)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != 50 {
		t.Errorf("List visited %d of 50 keys while deleting them", seen)
	}
	if got := list(t, s, "b"); len(got) != 0 {
		t.Errorf("keys left after deleting all: %q", got)
	}
}

func testBucketsAreSeparate(t *testing.T, s store.Store) {
	put(t, s, "ipam/one", "10.0.0.2", "x")
	put(t, s, "ipam/two", "10.0.0.2", "y")
	put(t, s, "ipam", "10.0.0.3", "z")
	for _, tc := range []struct{ bucket, want string }{{"ipam/one", "x"}, {"ipam/two", "y"}, {"ipam", "<missing>"}} {
		if got := get(t, s, tc.bucket, "10.0.0.2"); got != tc.want {
			t.Errorf("Get(%s, 10.0.0.2) = %q, want %q", tc.bucket, got, tc.want)
		}
	}
	if got := list(t, s, "ipam"); !slices.Equal(got, []string{"10.0.0.3=z"}) {
		t.Errorf("List(ipam) = %q", got)
	}
}

func testReadYourWrites(t *testing.T, s store.Store) {
	put(t, s, "b", "old", "1")
	err := s.Update(func(tx store.Tx) error {
		if err := tx.Put("b", "new", []byte("2")); err != nil {
			return err
		}
		if err := tx.Delete("b", "old"); err != nil {
			return err
		}
		if v, err := tx.Get("b", "new"); err != nil || string(v) != "2" {
			return fmt.Errorf("Get of a key put in the same transaction = %q, %v", v, err)
		}
		if _, err := tx.Get("b", "old"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("Get of a key deleted in the same transaction: err = %v", err)
		}
		var keys []string
		err := tx.List("b", func(k string, _ []byte) error { keys = append(keys, k); return nil })
		if err != nil || !slices.Equal(keys, []string{"new"}) {
			return fmt.Errorf("List in the same transaction = %q, %v", keys, err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func testRollback(t *testing.T, s store.Store) {
	put(t, s, "b", "k", "committed")
	boom := errors.New("boom")
	err := s.Update(func(tx store.Tx) error {
		if err := tx.Put("b", "k", []byte("rolled back")); err != nil {
			return err
		}
		if err := tx.Put("new-bucket", "k", []byte("v")); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Errorf("Update returned %v, want fn's error unchanged", err)
	}
	if got := get(t, s, "b", "k"); got != "committed" {
		t.Errorf("after rollback Get = %q, want %q", got, "committed")
	}
	if got := list(t, s, "new-bucket"); got != nil {
		t.Errorf("after rollback a new bucket holds %q", got)
	}
	wantErr := errors.New("view error")
	if err := s.View(func(store.Tx) error { return wantErr }); err != wantErr {
		t.Errorf("View returned %v, want fn's error unchanged", err)
	}
}

func testAtomicMultiKey(t *testing.T, s store.Store) {
	// A name reservation touches two buckets; either both keys exist or
	// neither does, whatever another reader sees.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errc := make(chan error, 1)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			err := s.View(func(tx store.Tx) error {
				_, e1 := tx.Get("names", "web")
				_, e2 := tx.Get("containers", "id1")
				if (e1 == nil) != (e2 == nil) {
					return fmt.Errorf("saw half a transaction: names %v, containers %v", e1, e2)
				}
				return nil
			})
			if err != nil {
				errc <- err
				return
			}
		}
	})
	for i := range 20 {
		err := s.Update(func(tx store.Tx) error {
			if i%2 == 1 {
				return errors.Join(tx.Delete("names", "web"), tx.Delete("containers", "id1"))
			}
			return errors.Join(tx.Put("names", "web", []byte("id1")), tx.Put("containers", "id1", []byte("{}")))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Error(err)
	default:
	}
}

func testViewIsReadOnly(t *testing.T, s store.Store) {
	for _, populated := range []bool{false, true} {
		if populated {
			put(t, s, "b", "k", "v")
		}
		err := s.View(func(tx store.Tx) error {
			if tx.Put("b", "k2", []byte("x")) == nil {
				return errors.New("Put in View succeeded")
			}
			if tx.Delete("b", "k") == nil && populated {
				return errors.New("Delete in View succeeded")
			}
			return nil
		})
		if err != nil {
			t.Errorf("populated=%v: %v", populated, err)
		}
		if got := get(t, s, "b", "k2"); got != "<missing>" {
			t.Errorf("populated=%v: Put in View stored %q", populated, got)
		}
	}
}

// Increment adds one to the decimal counter at bucket/key in one Update; the
// process test of a backend calls it from several processes at once.
func Increment(s store.Store, bucket, key string) error {
	return s.Update(func(tx store.Tx) error {
		n := 0
		v, err := tx.Get(bucket, key)
		switch {
		case err == nil:
			if n, err = strconv.Atoi(string(v)); err != nil {
				return fmt.Errorf("counter %q: %w", v, err)
			}
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		return tx.Put(bucket, key, []byte(strconv.Itoa(n+1)))
	})
}

func testConcurrentIncrements(t *testing.T, s store.Store) {
	const goroutines, each = 32, 10
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Go(func() {
			for range each {
				if err := Increment(s, "counters", "n"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got, want := get(t, s, "counters", "n"), strconv.Itoa(goroutines*each); got != want {
		t.Errorf("counter = %s after %d increments: updates were lost", got, goroutines*each)
	}
}

// Package store holds knit's persistent state as JSON values in named buckets.
//
// A Store runs short transactions: each Update is atomic across every key it
// touches and serialised against every other process using the same store,
// so policy code (IPAM, name reservation) can read-then-write without races.
// Implementations must not hold any lock between transactions: a detached
// supervisor and many CLI processes share one store.
package store

import "errors"

// ErrNotFound is returned by Get when the key does not exist.
var ErrNotFound = errors.New("not found")

// Tx is one transaction's view of the store.
type Tx interface {
	// Get returns the value of key in bucket, or ErrNotFound.
	Get(bucket, key string) ([]byte, error)
	// Put sets key in bucket, creating the bucket if needed.
	Put(bucket, key string, value []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(bucket, key string) error
	// List calls fn for every key of bucket in byte order; a missing bucket is empty.
	List(bucket string, fn func(key string, value []byte) error) error
	// Scan is List without copies, for reads of every entry of a large
	// bucket: key and value are valid only until fn returns, and fn must
	// not change the store.
	Scan(bucket string, fn func(key, value []byte) error) error
}

// Store runs transactions.
type Store interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction, committed if fn returns nil.
	Update(fn func(Tx) error) error
}

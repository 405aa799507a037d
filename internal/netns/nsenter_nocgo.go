//go:build !cgo

package netns

// Without cgo there is no constructor, and a child told to join namespaces
// would silently run in its parent's: refuse to build instead.
var _ = netns_needs_cgo_for_its_namespace_joining_constructor

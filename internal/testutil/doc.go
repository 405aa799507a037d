// Package testutil holds what knit's tests share: throwaway network
// namespaces for package tests (NewNetns) and whole sandboxes for end-to-end
// tests (NewSandbox), plus the artifacts those need (KnitBinary, Busybox).
//
// Invariants:
//   - Root tests never change the machine's own network namespace or leave
//     mounts in its mount namespace. Every link, address, route and mount
//     they make lives in a namespace that is created for the test and dies
//     with it: a NewNetns namespace is deleted at cleanup, and a sandbox is
//     a PID namespace whose init the cleanup kills, which takes every
//     process, and so every namespace and mount made inside, with it.
//   - Traffic goes only to loopback or to namespaces the test created.
//   - Cleanups kill only processes the test started, by PID.
//   - Helpers that need root skip the test, with the reason, when it is
//     missing; they never change process-global state of the test binary.
package testutil

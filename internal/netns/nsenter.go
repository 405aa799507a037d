package netns

// Linking this file pulls nsenter.c's constructor into every binary that
// imports netns; it does nothing unless EnvJoin is set.

// #cgo CFLAGS: -Wall -Werror
import "C"

import (
	"fmt"
	"os"
)

// The constructor renames EnvJoin (to EnvJoined) once it has joined; finding it here means
// it never ran, and going on would run the process in the wrong namespaces.
func init() {
	if v, ok := os.LookupEnv(EnvJoin); ok {
		fmt.Fprintf(os.Stderr, "knit: %s=%s was not handled before the Go runtime started\n", EnvJoin, v)
		os.Exit(125)
	}
}

// Package errdefs names the few kinds of error the CLI turns into messages and
// exit codes. Code anywhere wraps an error with a kind; callers test the kind
// with errors.As, never by matching text.
package errdefs

import (
	"errors"
	"fmt"
)

// Kind classifies an error for the user.
type Kind int

const (
	KindUnknown     Kind = iota
	KindInvalid          // bad input: flags, addresses, names
	KindNotFound         // no such container or network
	KindConflict         // name taken, address in use, object busy
	KindUnavailable      // try again later: the store stayed locked by another command
)

type kindError struct {
	kind Kind
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

func wrap(k Kind, format string, args ...any) error {
	return &kindError{kind: k, err: fmt.Errorf(format, args...)}
}

// Invalid returns an error of kind KindInvalid; format is as for fmt.Errorf.
func Invalid(format string, args ...any) error { return wrap(KindInvalid, format, args...) }

// NotFound returns an error of kind KindNotFound.
func NotFound(format string, args ...any) error { return wrap(KindNotFound, format, args...) }

// Conflict returns an error of kind KindConflict.
func Conflict(format string, args ...any) error { return wrap(KindConflict, format, args...) }

// Unavailable wraps a failure that retrying later may cure.
func Unavailable(format string, args ...any) error { return wrap(KindUnavailable, format, args...) }

// KindOf reports the outermost kind in err's chain.
func KindOf(err error) Kind {
	var ke *kindError
	if errors.As(err, &ke) {
		return ke.kind
	}
	return KindUnknown
}

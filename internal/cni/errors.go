package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/knit-dev/knit/internal/errdefs"
)

// Error codes (see the package doc).
const (
	CodeIncompatibleVersion = 1
	CodeUnsupportedField    = 2
	CodeUnknownContainer    = 3
	CodeInvalidEnv          = 4
	CodeIOFailure           = 5
	CodeDecodingFailure     = 6
	CodeInvalidConfig       = 7
	CodeTryAgainLater       = 11
	CodeNotAvailable        = 50
	CodeLimitedConnectivity = 51
	CodeKnitFailed          = 100
	CodeConflict            = 101
	CodeNotFound            = 102
	CodeCheckFailed         = 103
)

// Error is the spec's error result. Msg is short and fixed per situation;
// Details carries the specifics (the engine's message, the offending value).
type Error struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details == "" {
		return e.Msg
	}
	return e.Msg + ": " + e.Details
}

// newError returns an error result; details is formatted as by fmt.Sprintf.
func newError(code uint, msg, details string, args ...any) *Error {
	if len(args) > 0 {
		details = fmt.Sprintf(details, args...)
	}
	return &Error{Code: code, Msg: msg, Details: details}
}

// writeError prints e as the spec's error JSON for version.
func writeError(w io.Writer, e *Error, version string) {
	e.CNIVersion = version
	data, _ := json.MarshalIndent(e, "", "    ")
	_, _ = w.Write(append(data, '\n'))
}

// engineError turns an engine error into an error result: its kind chooses
// the code, its message becomes the details, msg says what failed.
func engineError(msg string, err error) *Error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	code := uint(CodeKnitFailed)
	switch errdefs.KindOf(err) {
	case errdefs.KindInvalid:
		code = CodeInvalidConfig
	case errdefs.KindConflict:
		code = CodeConflict
	case errdefs.KindNotFound:
		code = CodeNotFound
	case errdefs.KindUnavailable:
		code = CodeTryAgainLater
	}
	return newError(code, msg, err.Error())
}

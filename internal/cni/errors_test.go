package cni

import (
	"errors"
	"testing"

	"github.com/knit-dev/knit/internal/errdefs"
)

// Each kind of engine error gets its code; a store that stays locked is
// the spec's "try again later".
func TestEngineErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code uint
	}{
		{errdefs.Invalid("bad"), CodeInvalidConfig},
		{errdefs.Conflict("taken"), CodeConflict},
		{errdefs.NotFound("gone"), CodeNotFound},
		{errdefs.Unavailable("store busy"), CodeTryAgainLater},
		{errors.New("kernel said no"), CodeKnitFailed},
	} {
		if got := engineError("ADD failed", tc.err); got.Code != tc.code {
			t.Errorf("%v: code %d, want %d", tc.err, got.Code, tc.code)
		}
	}
}

package apiclient

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

// Error is a response outside 2xx. Problem is the server's RFC 9457
// problem document; for a response that carried none (a proxy's error
// page, say) it is filled from the status line, so Title is never empty.
type Error struct {
	Status  int
	Problem apitypes.Problem
}

// Error reads like "403 Forbidden: this route needs the admin role".
func (e *Error) Error() string {
	title := e.Problem.Title
	if title == "" {
		title = http.StatusText(e.Status)
	}
	s := fmt.Sprintf("%d %s", e.Status, title)
	if e.Problem.Detail != "" {
		s += ": " + e.Problem.Detail
	}
	return s
}

// StatusCode returns the HTTP status of an *Error in err's chain, or 0
// when err did not come from a non-2xx response.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// IsNotFound reports whether err is a 404 from the API.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// IsConflict reports whether err is a 409 from the API, e.g. importing a
// certificate that is already recorded.
func IsConflict(err error) bool { return StatusCode(err) == http.StatusConflict }

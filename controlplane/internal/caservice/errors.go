package caservice

import (
	"errors"
	"fmt"
)

// Kind classifies a service error for the API layer.
type Kind int

// Error kinds, mapped to HTTP statuses by the API.
const (
	KindInvalid      Kind = iota + 1 // 400: the request is wrong
	KindNotFound                     // 404
	KindConflict                     // 409: already exists / wrong state
	KindForbidden                    // 403: allowed role, forbidden target
	KindUnauthorized                 // 401: a credential in the body was refused
	KindGone                         // 410: a one-time credential already used or expired
)

// Error is a failure the caller can act on. Message is safe to show.
type Error struct {
	Kind    Kind
	Field   string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func invalid(field, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) *Error {
	return &Error{Kind: KindConflict, Message: fmt.Sprintf(format, args...)}
}

// AsError returns the *Error in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

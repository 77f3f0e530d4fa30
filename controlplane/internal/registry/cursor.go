package registry

import (
	"encoding/base64"
	"encoding/json"
	"time"
)

// cursor is the sort key of the last row of a page. It is opaque to
// clients (base64 JSON); tampering only moves the page boundary, it cannot
// reach rows the caller could not list anyway.
type cursor struct {
	T time.Time `json:"t,omitempty"`
	K string    `json:"k"`
	N int64     `json:"n,omitempty"`
}

// maxCursorLen caps what is decoded from a client.
const maxCursorLen = 512

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > maxCursorLen {
		return nil, ErrBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrBadCursor
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, ErrBadCursor
	}
	return &c, nil
}

// Limits of a page.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// ClampLimit returns a usable page size.
func ClampLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}

package registry

import (
	"errors"
	"testing"
	"time"
)

// FuzzDecodeCursor fuzzes the page cursors clients send back
// (?cursor= on every list endpoint): decodeCursor never panics, refuses
// only with ErrBadCursor, and a cursor it accepts re-encodes to one that
// decodes to the same sort key.
func FuzzDecodeCursor(f *testing.F) {
	at := time.Date(2026, 11, 22, 17, 0, 0, 123456789, time.UTC)
	for _, c := range []cursor{{K: "0b0c5f3e-8a1d-4f7e-9d43-6a7c1e2f3a4b"}, {T: at, K: "dev-1"}, {T: at, K: "ab12", N: 42}, {K: "", N: -1}} {
		f.Add(c.encode())
	}
	for _, s := range []string{"", "e30", "bnVsbA", "W10", "eyJrIjoxfQ", "eyJ0IjoieCJ9", "e30=", "!!", "eyJrIjoiYSIsImsiOiJiIn0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decodeCursor(s)
		if err != nil {
			if !errors.Is(err, ErrBadCursor) || c != nil {
				t.Fatalf("decodeCursor(%q) = %v, %v; want nil, ErrBadCursor", s, c, err)
			}
			return
		}
		if c == nil {
			if s != "" {
				t.Fatalf("decodeCursor(%q) = nil, nil", s)
			}
			return
		}
		again, err := decodeCursor(c.encode())
		if err != nil {
			if len(c.encode()) > maxCursorLen {
				return // a cursor at the limit may re-encode longer (escapes, time format)
			}
			t.Fatalf("re-encoded cursor %q of %q refused: %v", c.encode(), s, err)
		}
		if again == nil {
			t.Fatalf("cursor %q re-encoded to %q, which is no cursor", s, c.encode())
		}
		if !again.T.Equal(c.T) || again.K != c.K || again.N != c.N {
			t.Fatalf("cursor %q: round trip gave %+v, want %+v", s, *again, *c)
		}
	})
}

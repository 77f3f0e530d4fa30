// Package secret reads secrets (PINs, passphrases, tokens) from where
// operators keep them: a file, an environment variable or, for tests and
// demos, the configuration itself. A Secret never prints its value.
package secret

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// MaxSize caps a secret read from a file: PINs and passphrases are short,
// and a cap stops a misconfigured path (a device, a log) from being read
// whole into memory.
const MaxSize = 64 << 10

// ErrMissing is returned when no source holds the secret.
var ErrMissing = errors.New("secret: not configured")

// Source says where a secret comes from. The first of File, Env and Value
// that is set wins, in that order.
type Source struct {
	// File is a path whose content (trailing newlines removed) is the
	// secret. Preferred: it keeps the secret out of the environment and
	// the process list.
	File string `json:"file,omitempty"`
	// Env names an environment variable holding the secret.
	Env string `json:"env,omitempty"`
	// Value is the secret itself. Only for tests and demos.
	Value Secret `json:"value,omitempty"`
}

// Secret is a sensitive string. Its String, GoString and slog value are
// redacted, so it cannot leak through fmt or a logger by accident.
type Secret string

// String returns a placeholder, never the value.
func (Secret) String() string { return "[redacted]" }

// GoString returns a placeholder, never the value.
func (Secret) GoString() string { return "[redacted]" }

// LogValue keeps the value out of structured logs.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Reveal returns the value, for handing to the library that needs it.
func (s Secret) Reveal() string { return string(s) }

// IsSet reports whether the source names any location.
func (s Source) IsSet() bool { return s.File != "" || s.Env != "" || s.Value != "" }

// Resolve reads the secret. what names it in errors, e.g. "pkcs11 pin".
func (s Source) Resolve(what string) (Secret, error) {
	switch {
	case s.File != "":
		f, err := os.Open(s.File)
		if err != nil {
			return "", fmt.Errorf("reading %s from file: %w", what, err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
		if err != nil {
			return "", fmt.Errorf("reading %s from %s: %w", what, s.File, err)
		}
		if len(b) > MaxSize {
			return "", fmt.Errorf("reading %s from %s: larger than %d bytes", what, s.File, MaxSize)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("%w: %s file %s is empty", ErrMissing, what, s.File)
		}
		return Secret(v), nil
	case s.Env != "":
		v, ok := os.LookupEnv(s.Env)
		if !ok || v == "" {
			return "", fmt.Errorf("%w: %s: environment variable %s is not set", ErrMissing, what, s.Env)
		}
		return Secret(v), nil
	case s.Value != "":
		return s.Value, nil
	}
	return "", fmt.Errorf("%w: %s (set a file, an environment variable or a value)", ErrMissing, what)
}

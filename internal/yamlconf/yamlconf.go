// Package yamlconf holds what the binaries' YAML configuration files
// share: a size-capped read, strict decoding (unknown fields are errors),
// and durations written as "90s", "15m", "720h".
package yamlconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// ReadFile reads a configuration file of at most max bytes.
func ReadFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading config %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("config %s is larger than %d bytes", path, max)
	}
	return b, nil
}

// DecodeStrict decodes one YAML document into v; unknown fields are
// errors, and an empty document leaves v as it is.
func DecodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// Duration is a time.Duration written as a Go duration string.
type Duration time.Duration

// UnmarshalYAML parses "90s", "15m", "720h".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 90s, 15m or 720h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

package secret

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pin")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), MaxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OUTPOST_TEST_PIN", "from-env")

	tests := []struct {
		name    string
		src     Source
		want    string
		wantErr string
	}{
		{name: "file wins", src: Source{File: file, Env: "OUTPOST_TEST_PIN", Value: "v"}, want: "from-file"},
		{name: "env before value", src: Source{Env: "OUTPOST_TEST_PIN", Value: "v"}, want: "from-env"},
		{name: "value", src: Source{Value: "v"}, want: "v"},
		{name: "nothing", src: Source{}, wantErr: "not configured"},
		{name: "unset env", src: Source{Env: "OUTPOST_TEST_NOPE"}, wantErr: "OUTPOST_TEST_NOPE is not set"},
		{name: "missing file", src: Source{File: filepath.Join(dir, "nope")}, wantErr: "no such file"},
		{name: "empty file", src: Source{File: empty}, wantErr: "is empty"},
		{name: "oversized file", src: Source{File: big}, wantErr: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.src.Resolve("test pin")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Reveal() != tt.want {
				t.Errorf("got %q, want %q", got.Reveal(), tt.want)
			}
		})
	}
	if _, err := (Source{}).Resolve("x"); !errors.Is(err, ErrMissing) {
		t.Errorf("got %v, want ErrMissing", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "pin", s)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), fmt.Sprintf("%v", Source{Value: s}), logs.String()} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("secret leaked: %s", out)
		}
	}
}

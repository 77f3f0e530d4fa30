package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/outpost-pki/outpost/internal/buildinfo"
)

func TestApp(t *testing.T) {
	buildinfo.Version, buildinfo.Commit = "v9.8.7-test", "c0ffee123456"
	app := App{
		Name:    "outpost-test",
		Summary: "a test binary",
		Commands: []Command{
			{Name: "ok", Summary: "succeeds", Run: func(context.Context, []string, io.Writer, io.Writer) error { return nil }},
			{Name: "fail", Summary: "fails", Run: func(context.Context, []string, io.Writer, io.Writer) error { return errors.New("boom") }},
			{Name: "bad", Summary: "rejects its arguments", Run: func(context.Context, []string, io.Writer, io.Writer) error {
				return errors.Join(ErrUsage, errors.New("missing --x"))
			}},
		},
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{"version flag", []string{"--version"}, ExitOK, []string{"outpost-test v9.8.7-test", "commit c0ffee123456"}, nil},
		{"version command", []string{"version"}, ExitOK, []string{"v9.8.7-test", "c0ffee123456"}, nil},
		{"help flag", []string{"--help"}, ExitOK, []string{"a test binary", "ok", "succeeds", "fail", "version"}, nil},
		{"short help", []string{"-h"}, ExitOK, []string{"Commands:"}, nil},
		{"help command", []string{"help"}, ExitOK, []string{"Commands:"}, nil},
		{"no command", nil, ExitUsage, nil, []string{"no command given"}},
		{"unknown command", []string{"frobnicate"}, ExitUsage, nil, []string{`unknown command "frobnicate"`}},
		{"unknown flag", []string{"--frob"}, ExitUsage, nil, []string{"flag provided but not defined: -frob"}},
		{"command ok", []string{"ok"}, ExitOK, nil, nil},
		{"command fails", []string{"fail"}, ExitError, nil, []string{"outpost-test fail: boom"}},
		{"command usage", []string{"bad"}, ExitUsage, nil, []string{"missing --x"}},
		{"version with args", []string{"version", "x"}, ExitUsage, nil, []string{"takes no arguments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := app.Main(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("got exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout %q lacks %q", stdout.String(), w)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q lacks %q", stderr.String(), w)
				}
			}
		})
	}
}

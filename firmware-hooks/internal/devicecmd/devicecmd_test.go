package devicecmd

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestMainUsage(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"help", []string{"--help"}, 0, "Exit codes: 0 done"},
		{"version", []string{"--version"}, 0, "outpost-device"},
		{"unknown command", []string{"enroll"}, 2, `unknown command "enroll"`},
		{"two commands", []string{"run", "status"}, 2, "one command at most"},
		{"unknown flag", []string{"--bogus"}, 2, "flag provided but not defined"},
		{"no url", []string{"--config", "/dev/null"}, 2, "OUTPOST_EST_URL is not set"},
		{"status without a certificate", []string{"--config", "/dev/null", "--cert", "/nonexistent/device.pem", "status"}, 0, "not enrolled"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := Main(context.Background(), tt.args, none, &out, &out)
			if code != tt.code || !strings.Contains(out.String(), tt.want) {
				t.Errorf("got exit %d and %q, want %d and %q", code, out.String(), tt.code, tt.want)
			}
		})
	}
}

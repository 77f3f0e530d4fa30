package devicecmd

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
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

// TestStaticCrossBuild: outpost-device, TPM code included, builds with
// CGO_ENABLED=0 for a 32-bit ARM device, as make build does: a cgo
// dependency creeping in fails here rather than at release.
func TestStaticCrossBuild(t *testing.T) {
	// make puts /usr/local/go/bin on PATH; a bare go test may not have it.
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(gobin, "build", "-o", filepath.Join(t.TempDir(), "outpost-device"), "github.com/outpost-pki/outpost/firmware-hooks/cmd/outpost-device")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm", "GOARM=7", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 GOARCH=arm GOARM=7 go build: %v\n%s", err, out)
	}
}

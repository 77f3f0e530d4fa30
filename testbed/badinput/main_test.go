package badinput

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binDir holds the built outpost binaries (the repository's bin/); TestMain
// sets it before any test runs.
var binDir string

// TestMain builds the binaries once (make build-host at the repository
// root, under bin/.build-lock like testbed/up and testbed/scenarios), then
// runs the tests. A failed build fails the package loudly.
func TestMain(m *testing.M) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "Makefile"))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "badinput: finding the repository root: %v\n", err)
		os.Exit(2)
	}
	binDir = filepath.Join(root, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "badinput: %v\n", err)
		os.Exit(2)
	}
	build := exec.Command("flock", filepath.Join(binDir, ".build-lock"), "make", "-s", "build-host")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "badinput: `make build-host` failed: %v\n%s\n", err, out)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

package system

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testBin is the directory of the binaries RunTests built.
var testBin string

// RunTests is the body of the TestMain of a package whose tests start the
// system (testbed/scenarios, testbed/badinput): it builds the binaries
// once (make build-host at the repository root, under bin/.build-lock
// like testbed/up, so no other package runs a binary while it is being
// written), runs the tests and exits. A failed build fails the package
// loudly, never skips it.
func RunTests(m *testing.M) {
	bin, err := BuildHost()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	testBin = bin
	os.Exit(m.Run())
}

// BuildHost builds the host binaries into the repository's bin/ and
// returns that directory. The repository root is the nearest directory
// above the working directory holding both go.mod and Makefile.
func BuildHost() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("testbed: %w", err)
	}
	root := wd
	for {
		if isFile(filepath.Join(root, "go.mod")) && isFile(filepath.Join(root, "Makefile")) {
			break
		}
		up := filepath.Dir(root)
		if up == root {
			return "", fmt.Errorf("testbed: no repository root (go.mod and Makefile) above %s", wd)
		}
		root = up
	}
	bin := filepath.Join(root, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", fmt.Errorf("testbed: %w", err)
	}
	build := exec.Command("flock", filepath.Join(bin, ".build-lock"), "make", "-s", "build-host")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testbed: `make build-host` in %s failed: %v\n%s", root, err, out)
	}
	return bin, nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// StartT starts the system for t: in a directory of t.TempDir() unless
// o.Dir is set, from the binaries RunTests built unless o.Bin is set, with
// its progress lines in the test log unless o.Logf is set. It stops the
// system when t ends; when t failed (or Start did) it first puts the tails
// of logs/*.log (control plane, agent, broker) in the test log.
func StartT(t testing.TB, o Options) *System {
	t.Helper()
	if o.Dir == "" {
		o.Dir = filepath.Join(t.TempDir(), "system")
	}
	if o.Bin == "" {
		if testBin == "" {
			t.Fatal("testbed/system: no binaries; call system.RunTests from TestMain or set Options.Bin")
		}
		o.Bin = testBin
	}
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := Start(ctx, o)
	if err != nil {
		DumpLogs(t, o.Dir)
		t.Fatalf("starting the system: %v", err)
	}
	t.Logf("system up in %v (DMS %s, EST %s)", time.Since(start).Round(time.Millisecond), s.DMSID, s.ESTURL)
	t.Cleanup(func() {
		if t.Failed() {
			DumpLogs(t, o.Dir)
		}
		s.Stop()
	})
	return s
}

// DumpLogs puts the last 60 lines of every logs/*.log under dir in the
// test log.
func DumpLogs(t testing.TB, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Logf("reading %s: %v", f, err)
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		t.Logf("---- last %d lines of %s\n%s", len(lines), f, strings.Join(lines, "\n"))
	}
}

// WaitHTTPStatus polls url until it answers with status; it fails t after
// within, naming the last answer.
func WaitHTTPStatus(t testing.TB, url string, status int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == status {
				return
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d within %v (last: %v)", url, status, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

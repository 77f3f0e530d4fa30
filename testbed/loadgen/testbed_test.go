package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// logWriter sends progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestLoadgenAgainstTestbed brings the system up with testbed/up (as
// testbed/cmd/outpost-testbed's TestUpDown does), runs each mode in
// process through runCommand with small numbers, and checks the
// summaries against the registry.
func TestLoadgenAgainstTestbed(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := func(name string) string {
		cmd := exec.Command(filepath.Join(root, "testbed", name))
		cmd.Env = append(os.Environ(), "OUTPOST_TESTBED_DIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("testbed/%s: %v\n%s", name, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { t.Log(script("down")) })
	start := time.Now()
	t.Log(script("up"))
	t.Logf("testbed up in %.1f s", time.Since(start).Seconds())
	envPath := filepath.Join(dir, "outpost.env")
	env, err := loadEnv(envPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, env.get(envDatabaseURL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	count := func() int {
		t.Helper()
		n, err := registryCount(ctx, conn, env.get(envDMSID))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// run runs one mode with --json and checks that stdout holds the
	// same summary runCommand returned.
	run := func(args ...string) *Summary {
		t.Helper()
		var stdout bytes.Buffer
		args = append(args, "--env", envPath, "--json")
		sum, err := runCommand(ctx, args, &stdout, logWriter{t})
		if err != nil {
			t.Fatalf("loadgen %s: %v\n%s", strings.Join(args, " "), err, stdout.String())
		}
		var printed Summary
		if err := json.Unmarshal(stdout.Bytes(), &printed); err != nil {
			t.Fatalf("loadgen %s --json: %v\n%s", args[0], err, stdout.String())
		}
		if printed.Mode != sum.Mode || printed.OK != sum.OK || printed.Done != sum.Done {
			t.Errorf("--json printed %+v, runCommand returned %+v", printed, sum)
		}
		t.Logf("loadgen %s:\n%s", strings.Join(args, " "), stdout.String())
		return sum
	}

	before := count()
	enrolled := 0
	for _, reuse := range []string{"--reuse=true", "--reuse=false"} {
		s := run("est", "-n", "40", "-c", "8", reuse)
		if s.Done != 40 || s.OK != 40 || s.Failed != 0 || s.Outcomes[outcomeOK] != 40 {
			t.Errorf("est %s: got done %d ok %d failed %d %v, want 40 ok", reuse, s.Done, s.OK, s.Failed, s.Outcomes)
		}
		if s.Latency.P50 <= 0 || s.Latency.Max < s.Latency.P99 || s.Throughput <= 0 {
			t.Errorf("est %s: implausible figures %+v, %v/s", reuse, s.Latency, s.Throughput)
		}
		enrolled += s.OK
	}
	// With the bootstrap certificate: within the per-device burst.
	s := run("est", "-n", "5", "-c", "2", "--auth", "cert")
	if s.OK != 5 || s.Failed != 0 {
		t.Errorf("est --auth cert: got ok %d failed %d %v %v, want 5 ok", s.OK, s.Failed, s.Outcomes, s.Errors)
	}
	enrolled += s.OK
	// The registry catches up with exactly what was enrolled.
	deadline := time.Now().Add(60 * time.Second)
	for count() < before+enrolled && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if got := count(); got != before+enrolled {
		t.Errorf("after est: the registry grew by %d, want %d", got-before, enrolled)
	}

	s = run("sync-backlog", "-n", "30", "-c", "8")
	b := s.Backlog
	switch {
	case s.OK != 30 || s.Failed != 0:
		t.Errorf("sync-backlog: got ok %d failed %d %v %v, want 30 ok", s.OK, s.Failed, s.Outcomes, s.Errors)
	case b == nil:
		t.Fatal("sync-backlog: no backlog figures")
	case !b.Drained || b.Records != 30:
		t.Errorf("sync-backlog: got %+v, want 30 records drained", b)
	case b.RegistryAfter-b.RegistryBefore != 30:
		t.Errorf("sync-backlog: the registry grew by %d, want 30 (%+v)", b.RegistryAfter-b.RegistryBefore, b)
	case b.QueueDepthCut < 30:
		t.Errorf("sync-backlog: queue_depth %d with the uplink cut, want at least the 30 records", b.QueueDepthCut)
	case b.DrainRate <= 0 || b.DrainSec <= 0 || b.ReconnectSec > b.DrainSec:
		t.Errorf("sync-backlog: implausible drain figures %+v", b)
	}
	if got := count(); got != before+enrolled+30 {
		t.Errorf("after sync-backlog: the registry grew by %d in all, want %d", got-before, enrolled+30)
	}

	s = run("ocsp", "-n", "200", "-c", "8", "--certs", "20")
	total := 0
	for _, n := range s.Outcomes {
		total += n
	}
	if s.Done != 200 || total != 200 {
		t.Errorf("ocsp: got %d done, %d counted (%v), want 200", s.Done, total, s.Outcomes)
	}
	for _, bad := range []string{outcomeTransport, outcomeTimeout, outcomeHTTP5xx} {
		if s.Outcomes[bad] > 0 {
			t.Errorf("ocsp: %d %s (%s)", s.Outcomes[bad], bad, s.Errors[bad])
		}
	}
	if s.Settings["certs"] != 20 {
		t.Errorf("ocsp: asked about %v certificates, want 20", s.Settings["certs"])
	}
}

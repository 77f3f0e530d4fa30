package cpcmd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/internal/sdnotify/sdnotifytest"
	"github.com/outpost-pki/outpost/testbed"
)

// TestSystemdNotify runs `outpost-controlplane serve` and `outpost-agent
// run` the way systemd runs a Type=notify unit with WatchdogSec=1s: each
// says READY=1 once serving and pings the watchdog while its health check
// passes. The agent's pings stop when its TPM (swtpm) stops answering,
// the control plane's when PostgreSQL is stopped (systemd would restart
// them); SIGTERM says STOPPING=1.
func TestSystemdNotify(t *testing.T) {
	bin, agentBin := cptest.BuildControlPlane(t), cptest.BuildAgent(t)
	pg := testbed.NewPostgres(t)
	dsn := pg.NewDatabase(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	token := cptest.RandomToken()
	doc := fmt.Sprintf("version: 1\ndatabase:\n  url: %q\nkeystore:\n  file:\n    dir: %q\n    passphrase:\n      value: notify-test\nadmin_token:\n  value: %q\nsync:\n  broker:\n    enabled: false\n",
		dsn, filepath.Join(dir, "keys"), token)
	if err := os.WriteFile(config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := sdnotifytest.Listen(t)
	p := start(t, bin, config, "NOTIFY_SOCKET="+sock.Path, "WATCHDOG_USEC=1000000")
	if got := sock.Next(t, 60*time.Second); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1; log:\n%s", got, p.log())
	}
	if n := sock.Count("WATCHDOG=1", 2500*time.Millisecond); n < 2 {
		t.Fatalf("%d watchdog pings in 2.5 s with WatchdogSec=1s, want one every 0.5 s", n)
	}

	// The agent, its identity key in swtpm; no broker (READY does not
	// wait for the uplink).
	p.waitReady(t)
	e := cptest.Remote(t, "http://"+p.addr, token, dsn)
	tpm := testbed.NewSwtpm(t)
	agentSock := sdnotifytest.Listen(t)
	ag := cptest.NewAgent(t, agentBin, e, cptest.Broker{URL: fmt.Sprintf("mqtts://127.0.0.1:%d", cptest.FreePort(t))}, "gw-systemd",
		"keystore:\n  backend: tpm\n  tpm:\n    swtpm_addr: "+tpm.Addr(), "", []string{"NOTIFY_SOCKET=" + agentSock.Path, "WATCHDOG_USEC=1000000"})
	ag.Start()
	if got := agentSock.Next(t, 60*time.Second); got != "READY=1" {
		t.Fatalf("agent: first notification %q, want READY=1; log:\n%s", got, ag.Tail())
	}
	if n := agentSock.Count("WATCHDOG=1", 2500*time.Millisecond); n < 2 {
		t.Fatalf("agent: %d watchdog pings in 2.5 s with WatchdogSec=1s, want one every 0.5 s; log:\n%s", n, ag.Tail())
	}
	if err := tpm.Close(); err != nil {
		t.Fatal(err)
	}
	agentSock.Drain(1500 * time.Millisecond)
	if n := agentSock.Count("WATCHDOG=1", 3*time.Second); n != 0 {
		t.Errorf("agent: %d watchdog pings with its TPM gone, want none; log:\n%s", n, ag.Tail())
	}
	if !strings.Contains(ag.Tail(), "health check failed") {
		t.Errorf("agent: no health check failure in the log:\n%s", ag.Tail())
	}
	ag.Kill(syscall.SIGTERM)
	agentSock.WaitFor(t, "STOPPING=1", 5*time.Second)
	if err := pg.Close(); err != nil {
		t.Fatal(err)
	}
	sock.Drain(1500 * time.Millisecond) // a ping already on its way
	if n := sock.Count("WATCHDOG=1", 3*time.Second); n != 0 {
		t.Errorf("%d watchdog pings with the database down, want none; log:\n%s", n, p.log())
	}
	p.stop()
	sock.WaitFor(t, "STOPPING=1", 5*time.Second)
}

package cpcmd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/internal/sdnotify/sdnotifytest"
	"github.com/outpost-pki/outpost/testbed"
)

// TestSystemdNotify runs `outpost-controlplane serve` the way systemd
// runs a Type=notify unit with WatchdogSec=1s: it says READY=1 once
// serving and pings the watchdog while its health check passes; with
// PostgreSQL stopped the pings stop (systemd would restart it); SIGTERM
// says STOPPING=1.
func TestSystemdNotify(t *testing.T) {
	bin := cptest.BuildControlPlane(t)
	pg := testbed.NewPostgres(t)
	dsn := pg.NewDatabase(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	doc := fmt.Sprintf("version: 1\ndatabase:\n  url: %q\nkeystore:\n  file:\n    dir: %q\n    passphrase:\n      value: notify-test\nadmin_token:\n  value: %q\nsync:\n  broker:\n    enabled: false\n",
		dsn, filepath.Join(dir, "keys"), cptest.RandomToken())
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

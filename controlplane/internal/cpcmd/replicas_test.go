package cpcmd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/testbed"
)

type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	ready chan struct{}
	// addr is the API's address, from the "control plane serving" line.
	addr string
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// start runs `outpost-controlplane serve` and collects its log.
func start(t *testing.T, bin, config string, env ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, "serve", "--config", config), ready: make(chan struct{})}
	p.cmd.Env = append(append(os.Environ(), "OUTPOST_LISTEN=127.0.0.1:0"), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			if strings.Contains(sc.Text(), "control plane serving") {
				var line struct{ Addr string }
				_ = json.Unmarshal(sc.Bytes(), &line)
				once.Do(func() {
					p.mu.Lock()
					p.addr = line.Addr
					p.mu.Unlock()
					close(p.ready)
				})
			}
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *proc) stop() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	}
}

func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-p.ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("control plane did not start; log:\n%s", p.log())
	}
}

// TestReplicasBootstrapOnce starts two control plane processes at the
// same moment against one empty database and one key store: exactly one
// bootstrap happens. A restart then creates nothing.
func TestReplicasBootstrapOnce(t *testing.T) {
	bin := cptest.BuildControlPlane(t)
	pg := testbed.NewPostgres(t)
	dsn := pg.NewDatabase(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	// Two processes on one machine: no embedded broker (it would be one
	// per process, on one port).
	doc := fmt.Sprintf("version: 1\ndatabase:\n  url: %q\nkeystore:\n  file:\n    dir: %q\n    passphrase:\n      value: replica-test\nadmin_token:\n  value: %q\nlog_level: debug\nsync:\n  broker:\n    enabled: false\n",
		dsn, filepath.Join(dir, "keys"), cptest.RandomToken())
	if err := os.WriteFile(config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}

	a, b := start(t, bin, config), start(t, bin, config)
	a.waitReady(t)
	b.waitReady(t)

	created := 0
	for _, p := range []*proc{a, b} {
		if strings.Contains(p.log(), "bootstrap: created") {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d processes report creating the bootstrap CAs, want exactly 1\nA:\n%s\nB:\n%s", created, a.log(), b.log())
	}
	counts := func() (cas, audits, keys int) {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM cas WHERE role IS NOT NULL`).Scan(&cas); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'ca.bootstrap'`).Scan(&audits); err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "keys", "*.key.pem"))
		return cas, audits, len(files)
	}
	if cas, audits, keys := counts(); cas != 3 || audits != 1 || keys != 3 {
		t.Errorf("after two concurrent starts: %d bootstrap CAs, %d bootstrap audit rows, %d keys; want 3, 1, 3", cas, audits, keys)
	}

	a.stop()
	b.stop()
	c := start(t, bin, config)
	c.waitReady(t)
	if strings.Contains(c.log(), "bootstrap: created") {
		t.Error("a restart bootstrapped again")
	}
	if cas, audits, keys := counts(); cas != 3 || audits != 1 || keys != 3 {
		t.Errorf("after a restart: %d, %d, %d; want 3, 1, 3", cas, audits, keys)
	}
	c.stop()
	if c.cmd.ProcessState == nil || !c.cmd.ProcessState.Success() {
		t.Errorf("SIGTERM did not shut the control plane down cleanly: %v\n%s", c.cmd.ProcessState, c.log())
	}
}

func TestCheckConfig(t *testing.T) {
	bin := cptest.BuildControlPlane(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check-config", "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "database.url: required") {
		t.Errorf("check-config on an incomplete file: %v\n%s", err, out)
	}
}

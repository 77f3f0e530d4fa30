package syncsvc_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/syncsvc"
	"github.com/outpost-pki/outpost/testbed"
)

func buildAgent(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "outpost-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/outpost-pki/outpost/agent/cmd/outpost-agent").CombinedOutput(); err != nil {
		t.Fatalf("building outpost-agent: %v\n%s", err, out)
	}
	return bin
}

func dmsManagerPEM(t testing.TB, e *cptest.Env) []byte {
	t.Helper()
	var cas apitypes.Page[apitypes.CA]
	e.MustDo("GET", "/api/v1/cas", e.AdminToken, nil, &cas, 200)
	// The DMS manager CA and the root above it: OpenSSL (mosquitto)
	// needs the chain up to a self-signed anchor.
	var out []byte
	for _, ca := range cas.Items {
		if ca.Role == "dms_manager" || ca.Role == "bootstrap_root" {
			out = append(out, ca.CertPEM...)
		}
	}
	if len(out) == 0 {
		t.Fatal("no DMS manager CA")
	}
	return out
}

// mosquittoFor starts a TLS mosquitto that trusts DMS certificates and
// confines each DMS to its own topics.
func mosquittoFor(t testing.TB, e *cptest.Env) *testbed.Mosquitto {
	t.Helper()
	acl := filepath.Join(t.TempDir(), "acl")
	if err := os.WriteFile(acl, []byte(
		"user outpost-controlplane\ntopic readwrite outpost/v1/dms/#\ntopic read $share/outpost-controlplane/outpost/v1/dms/+/up\n\n"+
			"pattern write outpost/v1/dms/%u/up\npattern read outpost/v1/dms/%u/down\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return testbed.NewMosquitto(t, testbed.MosquittoOptions{TLS: true, RequireClientCert: true, Persistent: true,
		ExtraClientCAs: dmsManagerPEM(t, e), Config: "acl_file " + acl + "\nmax_packet_size 1052672\n"})
}

// startConsumer runs a sync consumer until the returned stop is called.
func startConsumer(t testing.TB, e *cptest.Env, m *testbed.Mosquitto, id string) (stop func()) {
	stop, _ = startConsumerC(t, e, m, id)
	return stop
}

func startConsumerC(t testing.TB, e *cptest.Env, m *testbed.Mosquitto, id string) (func(), *syncsvc.Consumer) {
	t.Helper()
	tlsCfg, err := m.ClientTLS("outpost-controlplane")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &syncsvc.Consumer{Applier: &syncsvc.Applier{Reg: e.App.Svc.Reg}, BrokerURL: "mqtts://" + m.Addr(), TLS: tlsCfg, ClientID: id, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	return func() { cancel(); <-done }, c
}

// testAgent is an outpost-agent process with its data directory.
type testAgent struct {
	t      testing.TB
	bin    string
	config string
	dmsID  string
	cmd    *exec.Cmd
	env    []string
	log    lockedBuffer
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newAgent(t testing.TB, bin string, e *cptest.Env, m *testbed.Mosquitto, name, keystoreYAML string, env []string) *testAgent {
	t.Helper()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "broker-ca.pem")
	if err := os.WriteFile(caFile, m.CA.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &testAgent{t: t, bin: bin, config: filepath.Join(dir, "config.yaml")}
	doc := fmt.Sprintf("version: 1\ndata_dir: %s\ncontrol_plane_url: %s\nadmin_addr: 127.0.0.1:%d\nlog_level: debug\n%s\nsync:\n  broker_url: mqtts://%s\n  broker_ca_file: %s\n  heartbeat: 1s\n",
		filepath.Join(dir, "data"), e.URL, freePort(t), keystoreYAML, m.Addr(), caFile)
	if err := os.WriteFile(a.config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var dms apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", e.AdminToken, apitypes.CreateDMSRequest{Name: name}, &dms, 201)
	cmd := exec.Command(bin, "bootstrap", "--config", a.config, "--token", dms.BootstrapToken)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("outpost-agent bootstrap: %v\n%s", err, out)
	}
	a.dmsID = dms.DMS.ID
	a.cmd = nil
	t.Cleanup(func() { a.kill(syscall.SIGTERM) })
	a.env = env
	return a
}

func (a *testAgent) start() {
	a.t.Helper()
	cmd := exec.Command(a.bin, "run", "--config", a.config)
	cmd.Env = append(os.Environ(), a.env...)
	cmd.Stderr = &a.log
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.cmd = cmd
}

func (a *testAgent) kill(sig syscall.Signal) {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(sig)
	_ = a.cmd.Wait()
	a.cmd = nil
}

func (a *testAgent) run(args ...string) string {
	a.t.Helper()
	cmd := exec.Command(a.bin, append(args, "--config", a.config)...)
	cmd.Env = append(os.Environ(), a.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		a.t.Fatalf("outpost-agent %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (a *testAgent) runQuiet(args ...string) string {
	cmd := exec.Command(a.bin, append(args, "--config", a.config)...)
	cmd.Env = append(os.Environ(), a.env...)
	out, err := cmd.CombinedOutput()
	return fmt.Sprintf("%s (err %v)", out, err)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*netTCPAddr).Port
}

func countEvents(t testing.TB, e *cptest.Env, dmsID string) int {
	t.Helper()
	var n int
	if err := e.App.Pool.QueryRow(context.Background(), `SELECT count(*) FROM sync_events WHERE dms_id = $1`, uuid.MustParse(dmsID)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitEvents(t testing.TB, e *cptest.Env, a *testAgent, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := countEvents(t, e, a.dmsID)
		if got == n {
			return
		}
		if got > n {
			t.Fatalf("%d records in Postgres, want %d: duplicates", got, n)
		}
		if time.Now().After(deadline) {
			log := a.log.String()
			if a.cmd != nil {
				log += fmt.Sprintf("\n(process %v, state %v)\n", a.cmd.Process.Pid, a.cmd.ProcessState)
			}
			log += "\nstatus: " + a.runQuiet("status")
			if len(log) > 4000 {
				log = log[len(log)-4000:]
			}
			t.Fatalf("%d of %d records in Postgres after %v; agent log ends:\n%s", got, n, within, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAgentsBootstrapAndSync: one agent with its identity key in swtpm
// and one in SoftHSM2 bootstrap with one-time tokens and sync through
// mosquitto into Postgres.
func TestAgentsBootstrapAndSync(t *testing.T) {
	bin := buildAgent(t)
	e := cptest.Start(t, nil)
	m := mosquittoFor(t, e)
	stop := startConsumer(t, e, m, "cp-1")
	defer stop()

	tpm := testbed.NewSwtpm(t)
	hsm := testbed.NewSoftHSM(t)
	agents := []*testAgent{
		newAgent(t, bin, e, m, "gw-tpm", "keystore:\n  backend: tpm\n  tpm:\n    swtpm_addr: "+tpm.Addr(), nil),
		newAgent(t, bin, e, m, "gw-hsm", fmt.Sprintf("keystore:\n  backend: pkcs11\n  pkcs11:\n    module: %s\n    token_label: %s\n    pin:\n      env: TEST_PIN", hsm.Module, hsm.Label),
			append(hsm.Env(), "TEST_PIN="+hsm.PIN)),
	}
	for _, a := range agents {
		a.start()
		a.run("selftest", "--records", "300")
	}
	for _, a := range agents {
		waitEvents(t, e, a, 300, 60*time.Second)
		out := a.run("status")
		if !strings.Contains(out, a.dmsID) || !strings.Contains(out, "queue depth") {
			t.Errorf("status output:\n%s", out)
		}
	}
	// The registry shows the agents online, from their heartbeats.
	time.Sleep(1500 * time.Millisecond)
	for _, a := range agents {
		var d apitypes.DMS
		e.MustDo("GET", "/api/v1/dmss/"+a.dmsID, e.AdminToken, nil, &d, 200)
		if !d.Online || d.LastSeenAt == nil || d.AgentVersion == "" {
			t.Errorf("DMS %s in the registry: online %v, last seen %v, version %q", a.dmsID, d.Online, d.LastSeenAt, d.AgentVersion)
		}
	}
}

// TestCrashRecovery: while 10,000 records flow from agent to control
// plane, the agent is killed with SIGKILL 20 times at random moments and
// restarted, and the broker and the sync consumer are each restarted once:
// Postgres ends with exactly the 10,000 records.
func TestCrashRecovery(t *testing.T) {
	bin := buildAgent(t)
	e := cptest.Start(t, nil)
	m := mosquittoFor(t, e)
	stop := startConsumer(t, e, m, "cp-1")
	defer func() { stop() }()
	a := newAgent(t, bin, e, m, "gw-crash", "keystore:\n  backend: file\n  file:\n    passphrase:\n      value: crash-test", nil)

	const total = 10_000
	// Enqueue before starting: the records are durable in the outbox.
	a.run("selftest", "--records", fmt.Sprint(total), "--prefix", "crash")
	a.start()
	rng := rand.New(rand.NewPCG(1, 2))
	midFlight := 0
	for i := 0; i < 20; i++ {
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		a.kill(syscall.SIGKILL)
		if n := countEvents(t, e, a.dmsID); n > 0 && n < total {
			midFlight++
		}
		switch i {
		case 7:
			if err := m.Restart(context.Background()); err != nil {
				t.Fatal(err)
			}
		case 13:
			// The control plane restarts: consumer, pool, API.
			stop()
			e.Restart()
			stop = startConsumer(t, e, m, "cp-1")
		}
		a.start()
	}
	if midFlight < 5 {
		t.Errorf("only %d of 20 kills happened while records were flowing; the test proves too little", midFlight)
	}
	waitEvents(t, e, a, total, 3*time.Minute)
	var distinct int
	if err := e.App.Pool.QueryRow(context.Background(), `SELECT count(DISTINCT record_id) FROM sync_events WHERE dms_id = $1 AND record_id LIKE 'crash-%'`, uuid.MustParse(a.dmsID)).Scan(&distinct); err != nil {
		t.Fatal(err)
	}
	if distinct != total {
		t.Errorf("%d distinct records, want %d", distinct, total)
	}
}

// TestTwoReplicasShareTheLoad: two control plane consumers on one shared
// subscription apply every record exactly once between them.
func TestTwoReplicasShareTheLoad(t *testing.T) {
	bin := buildAgent(t)
	e := cptest.Start(t, nil)
	m := mosquittoFor(t, e)
	stop1, c1 := startConsumerC(t, e, m, "cp-1")
	defer stop1()
	stop2, c2 := startConsumerC(t, e, m, "cp-2")
	defer stop2()
	agents := []*testAgent{
		newAgent(t, bin, e, m, "gw-a", "keystore:\n  backend: file\n  file:\n    passphrase:\n      value: a", nil),
		newAgent(t, bin, e, m, "gw-b", "keystore:\n  backend: file\n  file:\n    passphrase:\n      value: b", nil),
	}
	const n = 3000
	for _, a := range agents {
		a.run("selftest", "--records", fmt.Sprint(n))
		a.start()
	}
	for _, a := range agents {
		waitEvents(t, e, a, n, 2*time.Minute)
	}
	var applied int
	if err := e.App.Pool.QueryRow(context.Background(), `SELECT count(*) FROM sync_records`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != 2*n {
		t.Errorf("%d records applied, want %d", applied, 2*n)
	}
	if c1.Applied.Load() == 0 || c2.Applied.Load() == 0 {
		t.Errorf("messages applied per replica: %d and %d; want both to share the load", c1.Applied.Load(), c2.Applied.Load())
	}
}

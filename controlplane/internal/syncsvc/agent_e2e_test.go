package syncsvc_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/syncsvc"
	"github.com/outpost-pki/outpost/testbed"
)

func dmsManagerPEM(t testing.TB, e *cptest.Env) []byte {
	t.Helper()
	_, trust := e.DMSTrust()
	return trust
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

// newAgent bootstraps an agent that syncs through mosquitto m.
func newAgent(t testing.TB, bin string, e *cptest.Env, m *testbed.Mosquitto, name, keystoreYAML string, env []string) *cptest.Agent {
	t.Helper()
	return cptest.NewAgent(t, bin, e, cptest.Broker{URL: "mqtts://" + m.Addr(), CAPEM: m.CA.CertPEM()}, name, keystoreYAML, "", env)
}

// TestAgentsBootstrapAndSync: one agent with its identity key in swtpm
// and one in SoftHSM2 bootstrap with one-time tokens and sync through
// mosquitto into Postgres.
func TestAgentsBootstrapAndSync(t *testing.T) {
	bin := cptest.BuildAgent(t)
	e := cptest.Start(t, nil)
	m := mosquittoFor(t, e)
	stop := startConsumer(t, e, m, "cp-1")
	defer stop()

	tpm := testbed.NewSwtpm(t)
	hsm := testbed.NewSoftHSM(t)
	agents := []*cptest.Agent{
		newAgent(t, bin, e, m, "gw-tpm", "keystore:\n  backend: tpm\n  tpm:\n    swtpm_addr: "+tpm.Addr(), nil),
		newAgent(t, bin, e, m, "gw-hsm", fmt.Sprintf("keystore:\n  backend: pkcs11\n  pkcs11:\n    module: %s\n    token_label: %s\n    pin:\n      env: TEST_PIN", hsm.Module, hsm.Label),
			append(hsm.Env(), "TEST_PIN="+hsm.PIN)),
	}
	for _, a := range agents {
		a.Start()
		a.Run("selftest", "--records", "300")
	}
	for _, a := range agents {
		e.WaitEvents(a, 300, 60*time.Second)
		out := a.Run("status")
		if !strings.Contains(out, a.DMSID) || !strings.Contains(out, "queue depth") {
			t.Errorf("status output:\n%s", out)
		}
	}
	// The registry shows the agents online, from their heartbeats.
	time.Sleep(1500 * time.Millisecond)
	for _, a := range agents {
		var d apitypes.DMS
		e.MustDo("GET", "/api/v1/dmss/"+a.DMSID, e.AdminToken, nil, &d, 200)
		if !d.Online || d.LastSeenAt == nil || d.AgentVersion == "" {
			t.Errorf("DMS %s in the registry: online %v, last seen %v, version %q", a.DMSID, d.Online, d.LastSeenAt, d.AgentVersion)
		}
	}
}

// TestCrashRecovery: while 10,000 records flow from agent to control
// plane, the agent is killed with SIGKILL 20 times at random moments and
// restarted, and the broker and the sync consumer are each restarted once:
// Postgres ends with exactly the 10,000 records.
func TestCrashRecovery(t *testing.T) {
	bin := cptest.BuildAgent(t)
	e := cptest.Start(t, nil)
	m := mosquittoFor(t, e)
	stop := startConsumer(t, e, m, "cp-1")
	defer func() { stop() }()
	a := newAgent(t, bin, e, m, "gw-crash", "keystore:\n  backend: file\n  file:\n    passphrase:\n      value: crash-test", nil)

	const total = 10_000
	// Enqueue before starting: the records are durable in the outbox.
	a.Run("selftest", "--records", fmt.Sprint(total), "--prefix", "crash")
	a.Start()
	rng := rand.New(rand.NewPCG(1, 2))
	midFlight := 0
	for i := 0; i < 20; i++ {
		// Kill while records flow: wait until this run delivered some
		// (a loaded machine takes seconds to start the agent), then a
		// random moment later.
		before := e.CountEvents(a.DMSID)
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if n := e.CountEvents(a.DMSID); n > before || n >= total {
				break
			}
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		a.Kill(syscall.SIGKILL)
		if n := e.CountEvents(a.DMSID); n > 0 && n < total {
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
		a.Start()
	}
	if midFlight < 5 {
		t.Errorf("only %d of 20 kills happened while records were flowing; the test proves too little", midFlight)
	}
	e.WaitEvents(a, total, 3*time.Minute)
	var distinct int
	if err := e.App.Pool.QueryRow(context.Background(), `SELECT count(DISTINCT record_id) FROM sync_events WHERE dms_id = $1 AND record_id LIKE 'crash-%'`, uuid.MustParse(a.DMSID)).Scan(&distinct); err != nil {
		t.Fatal(err)
	}
	if distinct != total {
		t.Errorf("%d distinct records, want %d", distinct, total)
	}
}

// TestTwoReplicasShareTheLoad: two control plane consumers on one shared
// subscription apply every record exactly once between them.
func TestTwoReplicasShareTheLoad(t *testing.T) {
	bin := cptest.BuildAgent(t)
	e := cptest.Start(t, nil)
	m := mosquittoFor(t, e)
	stop1, c1 := startConsumerC(t, e, m, "cp-1")
	defer stop1()
	stop2, c2 := startConsumerC(t, e, m, "cp-2")
	defer stop2()
	agents := []*cptest.Agent{
		newAgent(t, bin, e, m, "gw-a", "keystore:\n  backend: file\n  file:\n    passphrase:\n      value: a", nil),
		newAgent(t, bin, e, m, "gw-b", "keystore:\n  backend: file\n  file:\n    passphrase:\n      value: b", nil),
	}
	const n = 3000
	for _, a := range agents {
		a.Run("selftest", "--records", fmt.Sprint(n))
		a.Start()
	}
	for _, a := range agents {
		e.WaitEvents(a, n, 2*time.Minute)
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

package cptest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

// Real agents for end-to-end tests: outpost-agent processes bootstrapped
// against a control plane and syncing through a broker.

// Build compiles a main package of the module into a test directory and
// returns the binary's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// The main packages end-to-end tests run.
const (
	AgentPkg        = "github.com/outpost-pki/outpost/agent/cmd/outpost-agent"
	ControlPlanePkg = "github.com/outpost-pki/outpost/controlplane/cmd/outpost-controlplane"
)

// BuildAgent compiles outpost-agent.
func BuildAgent(t testing.TB) string { return Build(t, AgentPkg) }

// BuildControlPlane compiles outpost-controlplane.
func BuildControlPlane(t testing.TB) string { return Build(t, ControlPlanePkg) }

// Main is the body of the TestMain of a package whose tests share
// binaries: it builds each main package of bins (package path -> where to
// put the binary's path) once into a temporary directory, runs m, removes
// the directory and exits. A failed build fails the package loudly.
func Main(m *testing.M, bins map[string]*string) {
	dir, err := os.MkdirTemp("", "outpost-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for pkg, path := range bins {
		*path = filepath.Join(dir, filepath.Base(pkg))
		if out, err := exec.Command("go", "build", "-o", *path, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(2)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Remote is an Env for a control plane running as its own process at url
// (admin token token) on database dsn: Do, MustDo and DB work; App is nil.
func Remote(t testing.TB, url, token, dsn string) *Env {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &Env{t: t, URL: url, AdminToken: token, DSN: dsn, pool: pool}
}

// DB is a pool on the control plane's database.
func (e *Env) DB() *pgxpool.Pool {
	if e.pool != nil {
		return e.pool
	}
	return e.App.Pool
}

// Broker is what an agent needs to reach a broker.
type Broker struct {
	// URL is mqtts://host:port.
	URL string
	// CAPEM verifies the broker's certificate; nil: the agent's own
	// identity chain does (the embedded broker's certificate comes from
	// the DMS manager CA).
	CAPEM []byte
}

// Agent is an outpost-agent process with its data directory.
type Agent struct {
	t       testing.TB
	bin     string
	Config  string
	DataDir string
	DMSID   string
	cmd     *exec.Cmd
	env     []string
	Log     LockedBuffer
}

// LockedBuffer collects a process's output.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// NewAgent creates DMS name in the control plane and bootstraps an agent
// for it with its one-time token. keystoreYAML is the agent config's
// keystore section, extra more config lines, env the agent's extra
// environment.
func NewAgent(t testing.TB, bin string, e *Env, b Broker, name, keystoreYAML, extra string, env []string) *Agent {
	t.Helper()
	return NewAgentFor(t, bin, e, b, apitypes.CreateDMSRequest{Name: name}, keystoreYAML, extra, env)
}

// NewAgentFor is NewAgent for a DMS created with req (policy, authorized
// CAs).
func NewAgentFor(t testing.TB, bin string, e *Env, b Broker, req apitypes.CreateDMSRequest, keystoreYAML, extra string, env []string) *Agent {
	t.Helper()
	dir := t.TempDir()
	a := &Agent{t: t, bin: bin, Config: filepath.Join(dir, "config.yaml"), DataDir: filepath.Join(dir, "data"), env: env}
	brokerCA := ""
	if b.CAPEM != nil {
		caFile := filepath.Join(dir, "broker-ca.pem")
		if err := os.WriteFile(caFile, b.CAPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		brokerCA = "  broker_ca_file: " + caFile + "\n"
	}
	doc := fmt.Sprintf("version: 1\ndata_dir: %s\ncontrol_plane_url: %s\nadmin_addr: 127.0.0.1:%d\nlog_level: debug\n%s\nsync:\n  broker_url: %s\n%s  heartbeat: 1s\n%s",
		a.DataDir, e.URL, FreePort(t), keystoreYAML, b.URL, brokerCA, extra)
	if err := os.WriteFile(a.Config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var dms apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", e.AdminToken, req, &dms, 201)
	cmd := exec.Command(bin, "bootstrap", "--config", a.Config, "--token", dms.BootstrapToken)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("outpost-agent bootstrap: %v\n%s", err, out)
	}
	a.DMSID = dms.DMS.ID
	t.Cleanup(func() { a.Kill(syscall.SIGTERM) })
	return a
}

// Start runs `outpost-agent run`.
func (a *Agent) Start() {
	a.t.Helper()
	cmd := exec.Command(a.bin, "run", "--config", a.Config)
	cmd.Env = append(os.Environ(), a.env...)
	cmd.Stderr = &a.Log
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.cmd = cmd
}

// Kill sends sig to the running agent and waits for it to exit.
func (a *Agent) Kill(sig syscall.Signal) {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(sig)
	_ = a.cmd.Wait()
	a.cmd = nil
}

// Run runs an outpost-agent subcommand and fails the test if it fails.
func (a *Agent) Run(args ...string) string {
	a.t.Helper()
	out, err := a.exec(args...)
	if err != nil {
		a.t.Fatalf("outpost-agent %v: %v\n%s", args, err, out)
	}
	return out
}

// RunQuiet runs a subcommand and returns its output and error as text.
func (a *Agent) RunQuiet(args ...string) string {
	out, err := a.exec(args...)
	return fmt.Sprintf("%s (err %v)", out, err)
}

func (a *Agent) exec(args ...string) (string, error) {
	cmd := exec.Command(a.bin, append(args, "--config", a.Config)...)
	cmd.Env = append(os.Environ(), a.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Tail is the end of the agent's log, its process state and status, for
// failure messages.
func (a *Agent) Tail() string {
	log := a.Log.String()
	if a.cmd != nil {
		log += fmt.Sprintf("\n(process %v, state %v)\n", a.cmd.Process.Pid, a.cmd.ProcessState)
	}
	log += "\nstatus: " + a.RunQuiet("status")
	if len(log) > 4000 {
		log = log[len(log)-4000:]
	}
	return log
}

// FreePort returns a TCP port free on 127.0.0.1 right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// CountEvents counts the synced selftest records of a DMS (what
// `outpost-agent selftest` sends).
func (e *Env) CountEvents(dmsID string) int {
	e.t.Helper()
	var n int
	if err := e.DB().QueryRow(context.Background(), `SELECT count(*) FROM sync_events WHERE dms_id = $1 AND kind = 'agent.selftest'`, uuid.MustParse(dmsID)).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// WaitEvents waits until exactly n selftest records of a's DMS are in
// Postgres; more is a failure (duplicates).
func (e *Env) WaitEvents(a *Agent, n int, within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := e.CountEvents(a.DMSID)
		if got == n {
			return
		}
		if got > n {
			e.t.Fatalf("%d records in Postgres, want %d: duplicates", got, n)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d of %d records in Postgres after %v; agent log ends:\n%s", got, n, within, a.Tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Eventually polls cond every 200 ms until it holds, and fails the test
// with what and tail() (if not nil: a log to show) when within passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool, tail func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			extra := ""
			if tail != nil {
				extra = tail()
			}
			t.Fatalf("%s: not within %v\n%s", what, within, extra)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

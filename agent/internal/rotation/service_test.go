package rotation

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/testpki"
)

// fakeLAN plays the devices: what each presents, and a hook runner that
// makes CSRs and installs chains in memory.
type fakeLAN struct {
	t       *testing.T
	ca      *testpki.CA
	mu      sync.Mutex
	present map[string][]*x509.Certificate
	// installNothing: devices whose install phase does nothing.
	installNothing map[string]bool
	// failCSR: devices whose csr phase exits with this code.
	failCSR map[string]int
	// hold, if set, blocks each hook run until closed.
	hold chan struct{}
	// running counts hook runs in progress, overall and per device.
	running, maxRunning int
	perDevice           map[string]int
	maxPerDevice        int
	runs                atomic.Int64
}

func newFakeLAN(t *testing.T, ca *testpki.CA) *fakeLAN {
	return &fakeLAN{t: t, ca: ca, present: map[string][]*x509.Certificate{}, installNothing: map[string]bool{}, failCSR: map[string]int{}, perDevice: map[string]int{}}
}

func (l *fakeLAN) Probe(_ context.Context, d Device) ([]*x509.Certificate, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.present[d.ID]
	if !ok {
		return nil, errors.New("connection refused")
	}
	return c, nil
}

func (l *fakeLAN) RunHook(ctx context.Context, r Route, d Device, phase string, stdin []byte) ([]byte, string, error) {
	l.runs.Add(1)
	l.mu.Lock()
	l.running++
	l.perDevice[d.ID]++
	l.maxRunning = max(l.maxRunning, l.running)
	l.maxPerDevice = max(l.maxPerDevice, l.perDevice[d.ID])
	hold := l.hold
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.running--
		l.perDevice[d.ID]--
		l.mu.Unlock()
	}()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
		}
	}
	switch phase {
	case PhaseCSR:
		l.mu.Lock()
		code := l.failCSR[d.ID]
		l.mu.Unlock()
		if code != 0 {
			return nil, "device refused: no space left\n", &HookError{Phase: phase, ExitCode: code, Stderr: "device refused: no space left\n"}
		}
		csr, _, err := testpki.CSR(d.ID)
		if err != nil {
			l.t.Error(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}), "", nil
	case PhaseInstall:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.installNothing[d.ID] {
			return nil, "", nil
		}
		var chain []*x509.Certificate
		for rest := stdin; ; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				l.t.Error(err)
			}
			chain = append(chain, c)
		}
		l.present[d.ID] = chain
		return nil, "", nil
	}
	return nil, "", fmt.Errorf("phase %s", phase)
}

// fakeSigner signs with a test CA (or says pending).
type fakeSigner struct {
	ca      *testpki.CA
	pending atomic.Bool
	signed  atomic.Int64
	csrs    sync.Map // device -> number of distinct CSRs seen
}

func (s *fakeSigner) Sign(_ context.Context, req SignRequest) ([]*x509.Certificate, error) {
	if v, _ := s.csrs.LoadOrStore(req.DeviceID, map[string]bool{}); v != nil {
		v.(map[string]bool)[string(req.CSR.Raw)] = true
	}
	if s.pending.Load() {
		return nil, ErrPending
	}
	c, err := s.ca.SignCSR(req.CSR, testpki.Validity(90*24*time.Hour))
	if err != nil {
		return nil, err
	}
	s.signed.Add(1)
	return append([]*x509.Certificate{c}, s.ca.Chain()...), nil
}

type fakeRecorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *fakeRecorder) Record(_ context.Context, e Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

func (r *fakeRecorder) kinds(device string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.DeviceID == device {
			out = append(out, e.Kind)
		}
	}
	return out
}

type poolTrust struct{ ca *testpki.CA }

func (p poolTrust) Roots() (*x509.CertPool, []*x509.Certificate) {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	return pool, nil
}

type serviceEnv struct {
	svc    *Service
	lan    *fakeLAN
	signer *fakeSigner
	rec    *fakeRecorder
	edge   *testpki.CA
	inv    string
}

func newServiceEnv(t *testing.T, devices []Device, concurrency int) *serviceEnv {
	t.Helper()
	pki := testpki.NewT(t, testpki.WithClock(time.Now))
	edge := pki.Root("Root").Intermediate("Edge CA", testpki.PathLen(0))
	env := &serviceEnv{lan: newFakeLAN(t, edge), signer: &fakeSigner{ca: edge}, rec: &fakeRecorder{}, edge: edge}
	env.inv = filepath.Join(t.TempDir(), "devices.json")
	var b strings.Builder
	b.WriteString(`{"devices": [`)
	for i, d := range devices {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id": %q, "address": %q, "platform": %q, "os_version": %q}`, d.ID, d.Address, d.Platform, d.OSVersion)
	}
	b.WriteString("]}")
	if err := os.WriteFile(env.inv, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	table, err := NewTable([]Route{{Name: "cams", Match: Match{Platform: "cam"}, Hook: "/bin/true", Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	env.svc, err = New(Config{Inventory: &InventoryFile{Path: env.inv}, Routes: table, Concurrency: concurrency, VerifyTimeout: 300 * time.Millisecond,
		BackoffMin: time.Minute, BackoffMax: time.Hour, Signer: env.signer, Recorder: env.rec, Trust: poolTrust{edge}, Prober: env.lan, Runner: env.lan})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func cams(n int) []Device {
	var out []Device
	for i := 0; i < n; i++ {
		out = append(out, Device{ID: fmt.Sprintf("cam-%02d", i), Address: fmt.Sprintf("10.0.0.%d:443", i+1), Platform: "cam"})
	}
	return out
}

func byDevice(res []Result) map[string]Result {
	m := map[string]Result{}
	for _, r := range res {
		m[r.DeviceID] = r
	}
	return m
}

func TestServiceRotates(t *testing.T) {
	devs := append(cams(3), Device{ID: "printer-1", Address: "10.0.0.9:443", Platform: "printer"})
	env := newServiceEnv(t, devs, 4)
	selfSigned := testpki.NewT(t, testpki.WithClock(time.Now)).Root("cam-00 self-signed")
	env.lan.present["cam-00"] = []*x509.Certificate{selfSigned.Cert}
	env.lan.installNothing["cam-01"] = true
	env.lan.failCSR["cam-02"] = 1

	res, err := env.svc.Scan(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := byDevice(res)
	if r := m["cam-00"]; r.Outcome != OutcomeSucceeded || r.Serial == "" || r.OldSerial != serialHex(selfSigned.Cert) || !r.Due {
		t.Errorf("cam-00: got %+v, want succeeded", r)
	}
	if got := env.lan.present["cam-00"][0]; got.Subject.CommonName != "cam-00" || serialHex(got) != m["cam-00"].Serial || got.CheckSignatureFrom(env.edge.Cert) != nil {
		t.Errorf("cam-00 presents %v", got.Subject)
	}
	if r := m["cam-01"]; r.Outcome != OutcomeFailed || r.Phase != PhaseVerify || !strings.Contains(r.Error, "connecting to the device") {
		t.Errorf("cam-01 (installs nothing): got %+v, want failed in verify", r)
	}
	if r := m["cam-02"]; r.Outcome != OutcomeFailed || r.Phase != PhaseCSR || r.Stderr != "device refused: no space left\n" || r.BackoffUntil.IsZero() {
		t.Errorf("cam-02 (csr fails): got %+v", r)
	}
	if r := m["printer-1"]; r.Outcome != OutcomeNoRoute {
		t.Errorf("printer-1: got %+v, want no_route", r)
	}
	for dev, want := range map[string]string{"cam-00": EventSucceeded, "cam-01": EventFailed, "cam-02": EventFailed, "printer-1": EventNoRoute} {
		if got := env.rec.kinds(dev); len(got) != 1 || got[0] != want {
			t.Errorf("%s: events %v, want [%s]", dev, got, want)
		}
	}
	env.rec.mu.Lock()
	for _, e := range env.rec.events {
		if e.DeviceID == "cam-02" && (e.Detail.Stderr != "device refused: no space left\n" || e.Detail.ExitCode == nil || *e.Detail.ExitCode != 1 || e.Detail.Phase != "csr" || e.Detail.Route != "cams") {
			t.Errorf("cam-02 event detail: %s", e.Detail.JSON())
		}
		if !strings.HasPrefix(e.ID, "rotation-") || len(e.ID) > 64 {
			t.Errorf("event id %q", e.ID)
		}
	}
	env.rec.mu.Unlock()

	// Again: cam-00 is not due; the failed ones wait (backoff); the
	// unrouted device is not reported twice.
	res, _ = env.svc.Scan(context.Background(), Options{})
	m = byDevice(res)
	if m["cam-00"].Outcome != OutcomeNotDue || m["cam-01"].Outcome != OutcomeBackoff || m["cam-02"].Outcome != OutcomeBackoff {
		t.Errorf("second scan: %+v", res)
	}
	if got := env.rec.kinds("printer-1"); len(got) != 1 {
		t.Errorf("no_route reported %d times", len(got))
	}
	// An operator's run ignores the backoff; --force rotates a device
	// that is not due.
	env.lan.failCSR["cam-02"] = 0
	res, _ = env.svc.Scan(context.Background(), Options{DeviceID: "cam-02", IgnoreBackoff: true})
	if len(res) != 1 || res[0].Outcome != OutcomeSucceeded {
		t.Errorf("operator run: %+v", res)
	}
	res, _ = env.svc.Scan(context.Background(), Options{DeviceID: "cam-00", Force: true})
	if len(res) != 1 || res[0].Outcome != OutcomeSucceeded || res[0].Due {
		t.Errorf("forced run: %+v", res)
	}
	if _, err := env.svc.Scan(context.Background(), Options{DeviceID: "nope"}); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("unknown device: got %v", err)
	}
	// Dry run: routes and due, nothing rotated.
	before := env.lan.runs.Load()
	res, _ = env.svc.Scan(context.Background(), Options{DryRun: true, IgnoreBackoff: true})
	m = byDevice(res)
	if m["cam-00"].Due || m["cam-00"].Route != "cams" || !m["cam-01"].Due || m["printer-1"].Route != "" || env.lan.runs.Load() != before {
		t.Errorf("dry run: %+v (hook runs %d -> %d)", res, before, env.lan.runs.Load())
	}
	var metrics bytes.Buffer
	env.svc.WriteMetrics(&metrics)
	if !strings.Contains(metrics.String(), `outpost_agent_rotations_total{outcome="succeeded"} 3`) || !strings.Contains(metrics.String(), "outpost_agent_rotation_devices 4") {
		t.Errorf("metrics:\n%s", metrics.String())
	}
}

// TestServiceConcurrency: at most Concurrency devices at once, and never
// two rotations of one device, however many runs ask at the same time.
func TestServiceConcurrency(t *testing.T) {
	env := newServiceEnv(t, cams(12), 3)
	env.lan.hold = make(chan struct{})
	var wg sync.WaitGroup
	results := make([][]Result, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = env.svc.Scan(context.Background(), Options{IgnoreBackoff: true})
		}()
	}
	// Let the runs pile up on the held hooks, then release them.
	deadline := time.Now().Add(5 * time.Second)
	for {
		env.lan.mu.Lock()
		n := env.lan.running
		env.lan.mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(env.lan.hold)
	wg.Wait()
	if env.lan.maxRunning != 3 {
		t.Errorf("at most %d hooks ran at once, want 3", env.lan.maxRunning)
	}
	if env.lan.maxPerDevice != 1 {
		t.Errorf("a device had %d hook runs at once", env.lan.maxPerDevice)
	}
	if n := env.signer.signed.Load(); n != 12 {
		t.Errorf("signed %d certificates for 12 devices", n)
	}
	for i, res := range results {
		for _, r := range res {
			// Every run reports each device as rotated: a run that found
			// a rotation in flight reports its result.
			if r.Outcome != OutcomeSucceeded && r.Outcome != OutcomeNotDue {
				t.Errorf("run %d: %s: %+v", i, r.DeviceID, r)
			}
		}
	}
}

// TestServicePending: when the control plane has not answered, the next
// attempt asks again with the same CSR (no new key on the device).
func TestServicePending(t *testing.T) {
	env := newServiceEnv(t, cams(1), 1)
	env.signer.pending.Store(true)
	res, _ := env.svc.Scan(context.Background(), Options{})
	if res[0].Outcome != OutcomeDeferred || res[0].BackoffUntil.IsZero() {
		t.Fatalf("got %+v, want deferred", res[0])
	}
	env.signer.pending.Store(false)
	res, _ = env.svc.Scan(context.Background(), Options{IgnoreBackoff: true})
	if res[0].Outcome != OutcomeSucceeded {
		t.Fatalf("got %+v, want succeeded", res[0])
	}
	v, _ := env.signer.csrs.Load("cam-00")
	if n := len(v.(map[string]bool)); n != 1 {
		t.Errorf("the signer saw %d CSRs, want the same one twice", n)
	}
	if got := env.rec.kinds("cam-00"); strings.Join(got, ",") != EventDeferred+","+EventSucceeded {
		t.Errorf("events %v", got)
	}
}

func TestBackoff(t *testing.T) {
	for _, tt := range []struct {
		n    int
		want time.Duration
	}{{1, time.Minute}, {2, 2 * time.Minute}, {3, 4 * time.Minute}, {7, 60 * time.Minute}, {100, 60 * time.Minute}} {
		if got := Backoff(tt.n, time.Minute, time.Hour); got != tt.want {
			t.Errorf("Backoff(%d): got %v, want %v", tt.n, got, tt.want)
		}
	}
}

func TestParseHookCSR(t *testing.T) {
	csr, _, err := testpki.CSR("cam-1")
	if err != nil {
		t.Fatal(err)
	}
	pemCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})
	b64 := bytes.TrimSpace(bytes.Join(bytes.Split(pemCSR, []byte("\n"))[1:len(bytes.Split(pemCSR, []byte("\n")))-2], []byte("\n")))
	sanOnly, _, _ := testpki.CSR("", testpki.DNSNames("cam-1"))
	for _, tt := range []struct {
		name string
		out  []byte
		want string
	}{
		{"pem", pemCSR, ""},
		{"base64 der", b64, ""},
		{"san only", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: sanOnly.Raw}), ""},
		{"other device", pemCSR, `common name "cam-1" is not the device id "cam-2"`},
		{"empty", nil, "printed no CSR"},
		{"garbage", []byte("hello!"), "neither a PEM CSR nor base64 DER"},
		{"bad der", []byte("aGVsbG8="), "bad CSR"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := "cam-1"
			if tt.name == "other device" {
				id = "cam-2"
			}
			_, err := ParseHookCSR(tt.out, id)
			if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// TestServiceRun: the loop scans at start (once ready), and retries a
// failed device when its backoff ends, before the next scan.
func TestServiceRun(t *testing.T) {
	env := newServiceEnv(t, cams(1), 1)
	env.svc.cfg.BackoffMin, env.svc.cfg.BackoffMax = 300*time.Millisecond, time.Second
	var ready atomic.Bool
	env.svc.cfg.Ready = func() error {
		if !ready.Load() {
			return errors.New("no policy yet")
		}
		return nil
	}
	env.lan.mu.Lock()
	env.lan.failCSR["cam-00"] = ExitTemporary
	env.lan.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		env.svc.Run(ctx)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()
	time.Sleep(300 * time.Millisecond)
	if got := env.rec.kinds("cam-00"); len(got) != 0 {
		t.Fatalf("scanned before ready: %v", got)
	}
	ready.Store(true)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s (events %v)", what, env.rec.kinds("cam-00"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the first scan fails", func() bool { return len(env.rec.kinds("cam-00")) >= 1 })
	env.lan.mu.Lock()
	env.lan.failCSR["cam-00"] = 0
	env.lan.mu.Unlock()
	waitFor("the retry after the backoff succeeds", func() bool {
		k := env.rec.kinds("cam-00")
		return len(k) > 0 && k[len(k)-1] == EventSucceeded
	})
}

func FuzzParseHookCSR(f *testing.F) {
	csr, _, err := testpki.CSR("cam-1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
	f.Add([]byte("MIIB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseHookCSR(b, "cam-1")
		if err == nil && c.Subject.CommonName != "cam-1" && !NamesDevice("", c.DNSNames, nil, "cam-1") && len(c.URIs) == 0 {
			t.Fatal("accepted a CSR that does not name the device")
		}
	})
}

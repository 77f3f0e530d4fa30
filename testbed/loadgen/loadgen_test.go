package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/outpost-pki/outpost/internal/testpki"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestParseEnv(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
		err  string
	}{
		{"as outpost-testbed writes it", "# Outpost testbed: source this file\nOUTPOST_API_URL='http://127.0.0.1:8080'\nOUTPOST_DMS_ID='d1'\n",
			map[string]string{"OUTPOST_API_URL": "http://127.0.0.1:8080", "OUTPOST_DMS_ID": "d1"}, ""},
		{"quote inside a value", `OUTPOST_ADMIN_TOKEN='it'\''s'` + "\n", map[string]string{"OUTPOST_ADMIN_TOKEN": "it's"}, ""},
		{"empty value", "A=''\nB=\n", map[string]string{"A": "", "B": ""}, ""},
		{"export, blank lines, spaces", "\n  export A='x y'  \n\n", map[string]string{"A": "x y"}, ""},
		{"unquoted and double-quoted", "A=plain\nB=\"dq\"\n", map[string]string{"A": "plain", "B": "dq"}, ""},
		{"equals sign in a value", "OUTPOST_DATABASE_URL='postgres://u@h:1/db?sslmode=disable'\n",
			map[string]string{"OUTPOST_DATABASE_URL": "postgres://u@h:1/db?sslmode=disable"}, ""},
		{"no assignment", "just words\n", nil, "line 1: not a KEY=value assignment"},
		{"bad name", "1A='x'\n", nil, "line 1: not a KEY=value assignment"},
		{"unterminated quote", "A='x\n", nil, "line 1 (A): unterminated single quote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseEnv(strings.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("got error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLoadEnv(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadEnv(filepath.Join(dir, "outpost.env")); err == nil || !strings.Contains(err.Error(), "is the testbed up?") {
		t.Errorf("missing file: got %v, want a hint to run testbed/up", err)
	}
	path := filepath.Join(dir, "outpost.env")
	if err := os.WriteFile(path, []byte("OUTPOST_EST_URL='https://x'\nOUTPOST_EST_CA=''\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env, err := loadEnv(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := env.get(envESTURL); got != "https://x" {
		t.Errorf("got %q, want https://x", got)
	}
	err = env.require(envESTURL, envESTCA, envOCSPURL)
	if err == nil || !strings.Contains(err.Error(), "has no OUTPOST_EST_CA, OUTPOST_OCSP_URL") {
		t.Errorf("got %v, want the two missing variables named", err)
	}
}

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	var hundred []int
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, i)
	}
	tests := []struct {
		name string
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one value", ms(7), 0.99, 7 * time.Millisecond},
		{"p50 of 1..100", ms(hundred...), 0.50, 50 * time.Millisecond},
		{"p90 of 1..100", ms(hundred...), 0.90, 90 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 0.99, 99 * time.Millisecond},
		{"p100 of 1..100", ms(hundred...), 1, 100 * time.Millisecond},
		{"p50 of four rounds up the rank", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of ten is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.in, tt.q); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLatencyOf(t *testing.T) {
	got := latencyOf([]time.Duration{4 * time.Millisecond, 1 * time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond})
	want := Latency{P50: 2, P90: 4, P99: 4, Max: 4, Mean: 2.5}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := latencyOf(nil); got != (Latency{}) {
		t.Errorf("no values: got %+v, want zero", got)
	}
}

func TestRecorderSummary(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := newRecorder(start)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.record(outcomeOK, true, time.Duration(i+1)*time.Millisecond, nil)
		}()
	}
	wg.Wait()
	r.record("http_401", false, 0, errors.New("first 401"))
	r.record("http_401", false, 0, errors.New("second 401"))
	r.record(outcomeTransport, false, 0, errors.New("connection refused"))
	r.retry("429")
	r.retry("429")
	s := r.summary("est", 20, start.Add(2*time.Second))
	if s.Done != 13 || s.OK != 10 || s.Failed != 3 || s.Requested != 20 {
		t.Errorf("got done %d ok %d failed %d requested %d, want 13 10 3 20", s.Done, s.OK, s.Failed, s.Requested)
	}
	if want := map[string]int{"ok": 10, "http_401": 2, "transport": 1}; !reflect.DeepEqual(s.Outcomes, want) {
		t.Errorf("outcomes: got %v, want %v", s.Outcomes, want)
	}
	if want := map[string]string{"http_401": "first 401", "transport": "connection refused"}; !reflect.DeepEqual(s.Errors, want) {
		t.Errorf("errors: got %v, want %v", s.Errors, want)
	}
	if s.Retries["429"] != 2 {
		t.Errorf("retries: got %v, want 429: 2", s.Retries)
	}
	if s.ElapsedSec != 2 || s.Throughput != 6.5 {
		t.Errorf("got elapsed %v s, %v/s, want 2 s, 6.5/s", s.ElapsedSec, s.Throughput)
	}
	if s.Latency.P50 != 5 || s.Latency.Max != 10 {
		t.Errorf("latency: got %+v, want p50 5 max 10 (successes only)", s.Latency)
	}
}

func TestParseArgs(t *testing.T) {
	t.Setenv("OUTPOST_TESTBED_DIR", "")
	tests := []struct {
		name  string
		args  []string
		err   string // substring; "" for success
		check func(t *testing.T, o options)
	}{
		{"est defaults", []string{"est"}, "", func(t *testing.T, o options) {
			if o.n != 100 || o.c != 16 || !o.reuse || o.auth != "secret" || o.json || o.envPath != "testbed/run/outpost.env" {
				t.Errorf("got %+v", o)
			}
		}},
		{"est all flags", []string{"est", "-n", "40", "-c", "8", "--reuse=false", "--auth", "cert", "--json", "--env", "/x/outpost.env", "--timeout", "5s"}, "", func(t *testing.T, o options) {
			if o.n != 40 || o.c != 8 || o.reuse || o.auth != "cert" || !o.json || o.envPath != "/x/outpost.env" || o.timeout != 5*time.Second {
				t.Errorf("got %+v", o)
			}
		}},
		{"sync-backlog defaults", []string{"sync-backlog"}, "", func(t *testing.T, o options) {
			if o.n != 500 || o.drainTimeout != 5*time.Minute {
				t.Errorf("got %+v", o)
			}
		}},
		{"ocsp defaults", []string{"ocsp"}, "", func(t *testing.T, o options) {
			if o.n != 1000 || o.certs != 50 || o.hash != "sha1" || o.duration != 0 {
				t.Errorf("got %+v", o)
			}
		}},
		{"ocsp duration alone is unbounded in count", []string{"ocsp", "--duration", "10s"}, "", func(t *testing.T, o options) {
			if o.n != 0 || o.duration != 10*time.Second {
				t.Errorf("got n %d duration %v, want 0 and 10s", o.n, o.duration)
			}
		}},
		{"ocsp duration and n", []string{"ocsp", "--duration", "10s", "-n", "5"}, "", func(t *testing.T, o options) {
			if o.n != 5 {
				t.Errorf("got n %d, want 5", o.n)
			}
		}},
		{"no mode", nil, "no mode given", nil},
		{"unknown mode", []string{"crl"}, `unknown mode "crl"`, nil},
		{"n zero", []string{"est", "-n", "0"}, "-n must be at least 1 (got 0)", nil},
		{"n too big", []string{"sync-backlog", "-n", "100001"}, "-n must be at most 100000", nil},
		{"c zero", []string{"est", "-c", "0"}, "-c must be between 1 and 4096 (got 0)", nil},
		{"bad auth", []string{"est", "--auth", "token"}, `--auth must be secret or cert (got "token")`, nil},
		{"bad reuse", []string{"est", "--reuse=maybe"}, "invalid boolean value", nil},
		{"negative timeout", []string{"est", "--timeout", "-1s"}, "--timeout must be positive", nil},
		{"drain timeout zero", []string{"sync-backlog", "--drain-timeout", "0"}, "--drain-timeout must be positive", nil},
		{"ocsp nothing to send", []string{"ocsp", "-n", "0"}, "-n must be at least 1, or give --duration", nil},
		{"ocsp negative duration", []string{"ocsp", "--duration", "-1s"}, "--duration must not be negative", nil},
		{"ocsp certs", []string{"ocsp", "--certs", "0"}, "--certs must be between 1 and 10000", nil},
		{"ocsp hash", []string{"ocsp", "--hash", "md5"}, `--hash must be sha1 or sha256 (got "md5")`, nil},
		{"flag of another mode", []string{"est", "--duration", "1s"}, "flag provided but not defined: -duration", nil},
		{"stray argument", []string{"est", "-n", "3", "extra"}, `unexpected argument "extra"`, nil},
		{"empty env", []string{"est", "--env", ""}, "--env must name the outpost.env file", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, err := parseArgs(tt.args, &stderr)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, errUsage) {
					t.Fatalf("got %v, want a usage error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

func TestDefaultEnvPath(t *testing.T) {
	t.Setenv("OUTPOST_TESTBED_DIR", "/tmp/tb")
	if got := defaultEnvPath(); got != "/tmp/tb/outpost.env" {
		t.Errorf("got %q, want /tmp/tb/outpost.env", got)
	}
}

func TestHelp(t *testing.T) {
	var stderr bytes.Buffer
	if _, err := parseArgs([]string{"ocsp", "-h"}, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("got %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(stderr.String(), "-duration") {
		t.Errorf("ocsp -h does not list --duration:\n%s", stderr.String())
	}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		name string
		s    Summary
		err  string
	}{
		{"est all ok", Summary{Mode: "est", Done: 3, OK: 3}, ""},
		{"est failures", Summary{Mode: "est", Done: 3, OK: 2, Failed: 1}, "1 of 3 enrollments failed"},
		{"backlog drained", Summary{Mode: "sync-backlog", Done: 3, OK: 3, Backlog: &Backlog{Records: 3, Drained: true}}, ""},
		{"backlog not drained", Summary{Mode: "sync-backlog", Done: 3, OK: 3, Backlog: &Backlog{Records: 3, RegistryBefore: 10, RegistryAfter: 11}},
			"the registry holds 1 of the 3 certificates"},
		{"ocsp unauthorized is reported, not failed", Summary{Mode: "ocsp", Done: 5, Failed: 5, Outcomes: map[string]int{outcomeUnauthorized: 5}}, ""},
		{"ocsp transport", Summary{Mode: "ocsp", Outcomes: map[string]int{outcomeGood: 5, outcomeTransport: 1, outcomeTimeout: 1}}, "2 transport errors"},
		{"ocsp 5xx", Summary{Mode: "ocsp", Outcomes: map[string]int{outcomeHTTP5xx: 3}}, "3 HTTP 5xx answers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.verdict()
			if tt.err == "" {
				if err != nil {
					t.Errorf("got %v, want none", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("got %v, want %q", err, tt.err)
			}
		})
	}
}

func TestParseSecrets(t *testing.T) {
	devs, err := parseSecrets([]byte("loadgen-ab-20260101-000001:s3cret\nloadgen-ab-20260101-000002:a:b\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []device{{"loadgen-ab-20260101-000001", "s3cret"}, {"loadgen-ab-20260101-000002", "a:b"}}
	if !reflect.DeepEqual(devs, want) {
		t.Errorf("got %v, want %v", devs, want)
	}
	if _, err := parseSecrets([]byte("minted 3 enrollment secrets into f\n")); err == nil {
		t.Error("a line without a colon: got no error")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{" 1 ", time.Second},
		{"soon", 0},
		{now.Add(5 * time.Second).Format(httpTimeFormat), 5 * time.Second},
		{now.Add(-5 * time.Second).Format(httpTimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q): got %v, want %v", tt.in, got, tt.want)
		}
	}
}

const httpTimeFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

func TestPool(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	workers := 0
	pool(context.Background(), 7, 100, time.Time{}, func() int {
		mu.Lock()
		defer mu.Unlock()
		workers++
		return workers
	}, func(_ context.Context, _ int, i int) {
		mu.Lock()
		seen[i]++
		mu.Unlock()
	})
	if len(seen) != 100 || workers != 7 {
		t.Fatalf("got %d operations on %d workers, want 100 on 7", len(seen), workers)
	}
	for i, n := range seen {
		if n != 1 || i < 0 || i >= 100 {
			t.Errorf("operation %d ran %d times", i, n)
		}
	}
	// More workers than operations: only as many as needed.
	workers = 0
	pool(context.Background(), 50, 3, time.Time{}, func() int { mu.Lock(); defer mu.Unlock(); workers++; return 0 }, func(context.Context, int, int) {})
	if workers != 3 {
		t.Errorf("got %d workers for 3 operations, want 3", workers)
	}
	// Past the stop time or cancelled: nothing starts.
	ran := false
	pool(context.Background(), 2, 0, time.Now().Add(-time.Second), func() int { return 0 }, func(context.Context, int, int) { ran = true })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	pool(ctx, 2, 10, time.Time{}, func() int { return 0 }, func(context.Context, int, int) { ran = true })
	if ran {
		t.Error("an operation ran after the stop time or a cancel")
	}
}

func TestClassifyOCSP(t *testing.T) {
	pki := testpki.NewT(t)
	ca := pki.Root("Test Edge CA")
	leaf := ca.Leaf("device-1")
	other := pki.Root("Another CA")
	now := pki.Now()
	respond := func(status int, serial *big.Int, signer *testpki.CA) []byte {
		t.Helper()
		der, err := ocsp.CreateResponse(signer.Cert, signer.Cert, ocsp.Response{Status: status, SerialNumber: serial, ThisUpdate: now, NextUpdate: now.Add(time.Hour),
			RevokedAt: now, RevocationReason: ocsp.KeyCompromise}, signer.Key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	target := ocspTarget{cert: leaf.Cert, issuer: ca.Cert}
	tests := []struct {
		name    string
		body    []byte
		outcome string
		ok      bool
	}{
		{"good", respond(ocsp.Good, leaf.Cert.SerialNumber, ca), outcomeGood, true},
		{"revoked", respond(ocsp.Revoked, leaf.Cert.SerialNumber, ca), outcomeRevoked, true},
		{"unknown", respond(ocsp.Unknown, leaf.Cert.SerialNumber, ca), outcomeUnknown, true},
		{"unauthorized", ocsp.UnauthorizedErrorResponse, outcomeUnauthorized, false},
		{"malformed request", ocsp.MalformedRequestErrorResponse, outcomeMalformed, false},
		{"internal error", ocsp.InternalErrorErrorResponse, outcomeInternal, false},
		{"try later", ocsp.TryLaterErrorResponse, outcomeTryLater, false},
		{"signed by another CA", respond(ocsp.Good, leaf.Cert.SerialNumber, other), outcomeBadSignature, false},
		{"another serial", respond(ocsp.Good, big.NewInt(424242), ca), outcomeBadResponse, false},
		{"garbage", []byte("<html>not ocsp</html>"), outcomeBadResponse, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outcome, ok, err := classifyOCSP(tt.body, target)
			if outcome != tt.outcome || ok != tt.ok {
				t.Errorf("got %s %v (%v), want %s %v", outcome, ok, err, tt.outcome, tt.ok)
			}
			if !ok && err == nil {
				t.Error("a failed outcome without its error")
			}
		})
	}
}

func TestFindIssuer(t *testing.T) {
	pki := testpki.NewT(t)
	root := pki.Root("Root")
	mid := root.Intermediate("Edge CA")
	leaf := mid.Leaf("device-1")
	if got := findIssuer(leaf.Cert, []*x509.Certificate{root.Cert, mid.Cert}); got != mid.Cert {
		t.Errorf("got %v, want the intermediate", got)
	}
	if got := findIssuer(leaf.Cert, []*x509.Certificate{root.Cert}); got != nil {
		t.Errorf("got %v, want none", got.Subject)
	}
}

// TestSummaryText checks the text summary against testdata/*.golden
// (go test -run TestSummaryText -update rewrites them).
func TestSummaryText(t *testing.T) {
	tests := map[string]*Summary{
		"est": {Mode: "est", Settings: map[string]any{"concurrency": 16, "reuse": true, "auth": "secret"}, Requested: 500, Done: 500, OK: 498, Failed: 2,
			Outcomes: map[string]int{"ok": 498, "http_401": 2}, Errors: map[string]string{"http_401": "device x: est: server answered 401 Unauthorized: secret already used"},
			Retries: map[string]int{"429": 3}, ElapsedSec: 1.43, Throughput: 349.65, Latency: Latency{P50: 44.5, P90: 56.4, P99: 68.5, Max: 99, Mean: 44.9}},
		"sync-backlog": {Mode: "sync-backlog", Settings: map[string]any{"concurrency": 16, "reuse": true, "auth": "secret"}, Requested: 2000, Done: 2000, OK: 2000,
			Outcomes: map[string]int{"ok": 2000}, ElapsedSec: 3.57, Throughput: 560.1, Latency: Latency{P50: 25.8, P90: 41.7, P99: 77.6, Max: 132.9, Mean: 28.2},
			Backlog: &Backlog{Records: 2000, QueueDepthCut: 2000, CutSec: 3.67, RegistryBefore: 1080, RegistryAfter: 3080, ReconnectSec: 2.32, DrainSec: 6.06, Drained: true,
				DrainRate: 330.3, DrainRateFromOnline: 535.8}},
		"ocsp-interrupted": {Mode: "ocsp", Settings: map[string]any{"concurrency": 16, "certs": 50, "hash": "sha1", "reuse": true, "duration": "30s"}, Done: 2000, Failed: 2000,
			Outcomes: map[string]int{"unauthorized": 2000}, ElapsedSec: 0.37, Throughput: 5471.1, Latency: Latency{P50: 2.6, P90: 5.2, P99: 8.1, Max: 13.6, Mean: 2.9},
			Interrupted: true, Notes: []string{"unauthorized: the responder does not answer for the certificates' issuer"}},
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			s.writeText(&b)
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestSummaryText -update)", err)
			}
			if b.String() != string(want) {
				t.Errorf("got\n%s\nwant\n%s", b.String(), want)
			}
		})
	}
}

// TestSyncBacklogNeedsControlURL: an outpost.env from a testbed/up that
// predates the control endpoint gets a clear message, before anything is
// touched.
func TestSyncBacklogNeedsControlURL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outpost.env")
	if err := os.WriteFile(path, []byte("OUTPOST_EST_URL='https://127.0.0.1:1/.well-known/est'\nOUTPOST_AGENT_ADMIN_URL='http://127.0.0.1:1'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	sum, err := runCommand(context.Background(), []string{"sync-backlog", "--env", path, "-n", "3"}, &stdout, &stderr)
	if sum != nil || err == nil || !strings.Contains(err.Error(), "has no OUTPOST_TESTBED_CONTROL_URL: the testbed was started by a testbed/up too old") {
		t.Errorf("got %v, %v; want the too-old-testbed message", sum, err)
	}
}

func TestRunCommandUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	_, err := runCommand(context.Background(), []string{"est", "-n", "-3"}, &stdout, &stderr)
	if !errors.Is(err, errUsage) {
		t.Errorf("got %v, want a usage error", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("a usage error printed a summary: %q", stdout.String())
	}
}

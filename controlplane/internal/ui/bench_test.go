package ui_test

// Server time of each dashboard page for a logged-in admin, over a
// registry of 1,000,000 certificates (OUTPOST_BENCH_CERTS), built once per
// test binary the way controlplane/internal/cpbench builds its fixture:
// a throwaway PostgreSQL, the control plane's schema and bootstrap, real
// CAs, a DMS, a device with real certificates and a subscription made
// through the CA service, then seed.CertificatesUnder for the bulk (under
// a real intermediate CA) and 100,000 devices.

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/cpserver"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/notify"
	"github.com/outpost-pki/outpost/controlplane/internal/seed"
	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/testbed"
)

const (
	// defaultBenchCerts is the table size when OUTPOST_BENCH_CERTS is unset.
	defaultBenchCerts = 1_000_000
	// benchDevices are the device rows besides the real one.
	benchDevices = 100_000
)

type benchFixture struct {
	pg     *testbed.Postgres
	app    *cpserver.App
	dir    string
	certs  int
	cookie string
	pages  []benchPage
}

type benchPage struct{ name, path string }

var (
	benchOnce sync.Once
	benchFix  *benchFixture
	benchErr  error
)

func closeBench() {
	if benchFix == nil {
		return
	}
	if benchFix.app != nil {
		benchFix.app.Close()
	}
	if err := benchFix.pg.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "ui bench: stopping postgres: %v\n", err)
	}
	os.RemoveAll(benchFix.dir)
}

// benchCerts reads OUTPOST_BENCH_CERTS as cpbench does.
func benchCerts() (int, error) {
	s := os.Getenv("OUTPOST_BENCH_CERTS")
	if s == "" {
		return defaultBenchCerts, nil
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("OUTPOST_BENCH_CERTS=%q: want a positive number of certificates", s)
	}
	return int(n), nil
}

func benchData(b *testing.B) *benchFixture {
	b.Helper()
	benchOnce.Do(func() { benchFix, benchErr = startBench(context.Background()) })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchFix
}

func startBench(ctx context.Context) (_ *benchFixture, err error) {
	n, err := benchCerts()
	if err != nil {
		return nil, err
	}
	pg, err := testbed.StartPostgres(ctx, testbed.PostgresOptions{})
	if err != nil {
		return nil, err
	}
	f := &benchFixture{pg: pg, certs: n}
	benchFix = f // closed by TestMain whatever happens next
	if f.dir, err = os.MkdirTemp("", "outpost-uibench-"); err != nil {
		return nil, err
	}
	dsn, err := pg.CreateDatabase(ctx)
	if err != nil {
		return nil, err
	}
	admin := cptest.RandomToken()
	if f.app, err = cpserver.Build(ctx, cptest.Config(dsn, filepath.Join(f.dir, "keys"), admin), slog.New(slog.DiscardHandler)); err != nil {
		return nil, err
	}
	svc, pool := f.app.Svc, f.app.Pool

	// Real objects, made as the API would make them.
	root, err := svc.CreateCA(ctx, "bench", caservice.CreateCARequest{Name: "factory-root", CommonName: "Factory Root"})
	if err != nil {
		return nil, err
	}
	line, err := svc.CreateCA(ctx, "bench", caservice.CreateCARequest{Name: "line1", ParentID: &root.ID, CommonName: "Line 1 CA"})
	if err != nil {
		return nil, err
	}
	dms, _, _, err := svc.CreateDMS(ctx, "bench", "gw-hall-3", caservice.DefaultDMSPolicy(), nil, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `UPDATE dmss SET last_seen_at = now(), queue_depth = 17, agent_version = 'v0.4.1' WHERE id = $1`, dms.ID); err != nil {
		return nil, err
	}
	if _, err := svc.RegisterDevice(ctx, "bench", "plc-7", &dms.ID, map[string]string{"line": "1"}); err != nil {
		return nil, err
	}
	var serial string
	for range 3 {
		csr, _, err := testpki.CSR("plc-7", testpki.DNSNames("plc-7.line1.example"))
		if err != nil {
			return nil, err
		}
		c, err := svc.Issue(ctx, "bench", caservice.IssueRequest{CAID: line.ID, CSR: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}), DeviceID: "plc-7", DMSID: &dms.ID})
		if err != nil {
			return nil, err
		}
		serial = c.Serial
	}
	if err := notify.Create(ctx, pool, &notify.Subscription{Name: "ops-hook", Channel: notify.ChannelWebhook, Target: "https://hooks.example/outpost"}); err != nil {
		return nil, err
	}

	// The bulk: certificates under line1, devices spread over the DMSs.
	fmt.Fprintf(os.Stderr, "ui bench: seeding %d certificates\n", n)
	t0 := time.Now()
	if err := seed.CertificatesUnder(ctx, pool, line.ID, n, nil); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "ui bench: seeded %d certificates in %v\n", n, time.Since(t0).Round(100*time.Millisecond))
	if err := seedDevices(ctx, f.app, benchDevices); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
		return nil, err
	}
	var seededSAN string
	if err := pool.QueryRow(ctx, `SELECT sans[1] FROM certificates WHERE issuer_id = $1 AND profile = 'device' AND cardinality(sans) = 1 ORDER BY created_at DESC LIMIT 1 OFFSET 1000`, line.ID).Scan(&seededSAN); err != nil {
		return nil, err
	}
	var seedDMS string
	if err := pool.QueryRow(ctx, `SELECT id::text FROM dmss WHERE name LIKE 'seed-%' ORDER BY name LIMIT 1`).Scan(&seedDMS); err != nil {
		return nil, err
	}

	// Log in as the admin, as a browser would.
	h := f.app.Handler()
	if f.cookie, err = benchLogin(h, admin); err != nil {
		return nil, err
	}
	soon := time.Now().UTC().AddDate(0, 0, 30).Format("2006-01-02")
	today := time.Now().UTC().Format("2006-01-02")
	f.pages = []benchPage{
		// The overview as people see it (aggregates at most 30 s old, kept
		// by this replica) and with its aggregates computed for the
		// request ("Refresh now").
		{"overview", "/ui"},
		{"overview_fresh", "/ui?fresh=1"},
		{"cas", "/ui/cas"},
		{"ca", "/ui/cas/" + line.ID.String()},
		{"dmss", "/ui/dmss"},
		{"dms", "/ui/dmss/" + dms.ID.String()},
		{"devices", "/ui/devices"},
		{"devices_filtered", "/ui/devices?q=bench-dev-05&status=with_warnings&dms_id=" + seedDMS},
		{"device", "/ui/devices/plc-7"},
		{"certificates", "/ui/certificates"},
		{"certificates_status", "/ui/certificates?status=revoked"},
		{"certificates_cn", "/ui/certificates?cn=device-0005"},
		{"certificates_san", "/ui/certificates?san=" + url.QueryEscape(seededSAN)},
		{"certificates_expiry", "/ui/certificates?expires_after=" + today + "&expires_before=" + soon},
		{"certificates_dms", "/ui/certificates?dms_id=" + seedDMS},
		{"certificate", "/ui/certificates/" + serial},
		{"audit", "/ui/audit"},
		{"subscriptions", "/ui/subscriptions"},
	}
	// Each page once, so a failure shows before the timed loops.
	for _, p := range f.pages {
		if code, body := benchGet(h, p.path, f.cookie); code != http.StatusOK {
			return nil, fmt.Errorf("%s: %d: %.500s", p.path, code, body)
		}
	}
	return f, nil
}

// seedDevices copies n devices, statuses spread as a fleet's, over the
// seeded DMSs.
func seedDevices(ctx context.Context, app *cpserver.App, n int) error {
	rows, err := app.Pool.Query(ctx, `SELECT id FROM dmss ORDER BY name`)
	if err != nil {
		return err
	}
	dmss, err := pgx.CollectRows(rows, pgx.RowTo[[16]byte])
	if err != nil {
		return err
	}
	statuses := []string{"fully_provisioned", "fully_provisioned", "fully_provisioned", "fully_provisioned", "fully_provisioned", "fully_provisioned",
		"pending_provisioning", "with_warnings", "requires_action", "decommissioned"}
	now := time.Now()
	_, err = app.Pool.CopyFrom(ctx, pgx.Identifier{"devices"}, []string{"id", "dms_id", "status", "labels", "created_at"},
		pgx.CopyFromSlice(n, func(i int) ([]any, error) {
			return []any{fmt.Sprintf("bench-dev-%06d", i), dmss[i%len(dmss)], statuses[i%len(statuses)], "{}", now.Add(-time.Duration(n-i) * time.Minute)}, nil
		}))
	if err != nil {
		return err
	}
	_, err = app.Pool.Exec(ctx, "VACUUM (ANALYZE) devices")
	return err
}

var benchCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// benchLogin logs in through the handler and returns the Cookie header of
// the session.
func benchLogin(h http.Handler, token string) (string, error) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/login", nil))
	m := benchCSRF.FindStringSubmatch(rec.Body.String())
	if m == nil {
		return "", fmt.Errorf("login page without csrf: %d", rec.Code)
	}
	var loginCookie string
	for _, c := range rec.Result().Cookies() {
		if c.Name == "outpost_ui_login" {
			loginCookie = c.Name + "=" + c.Value
		}
	}
	req := httptest.NewRequest("POST", "/ui/login", strings.NewReader(url.Values{"csrf": {m[1]}, "token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Cookie", loginCookie)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	for _, c := range rec.Result().Cookies() {
		if c.Name == "outpost_ui_session" && c.Value != "" {
			return c.Name + "=" + c.Value, nil
		}
	}
	return "", fmt.Errorf("login: %d without a session cookie", rec.Code)
}

func benchGet(h http.Handler, path, cookie string) (int, string) {
	req := httptest.NewRequest("GET", path, nil)
	req.Header.Set("Cookie", cookie)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

// BenchmarkUIPage renders each dashboard page for a logged-in admin, over
// the 1M-certificate fixture, through the control plane's handler (server
// time: session check, queries, charts, templates). ms/page is the mean.
func BenchmarkUIPage(b *testing.B) {
	f := benchData(b)
	h := f.app.Handler()
	for _, p := range f.pages {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				if code, body := benchGet(h, p.path, f.cookie); code != http.StatusOK {
					b.Fatalf("%s: %d: %.300s", p.path, code, body)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/page")
		})
	}
}

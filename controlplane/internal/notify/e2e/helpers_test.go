package e2e

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/outpost-pki/outpost/controlplane/internal/notify"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-pki/outpost/controlplane/internal/db"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/testbed"
)

// pg is one PostgreSQL cluster for the package; each test gets its own
// database.
var pg *testbed.Postgres

func TestMain(m *testing.M) {
	var err error
	pg, err = testbed.StartPostgres(context.Background(), testbed.PostgresOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting postgres:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := pg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping postgres:", err)
	}
	os.Exit(code)
}

// openPool opens (and migrates) a pool on dsn, closed when t ends.
func openPool(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := db.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func mustCreate(t *testing.T, q registry.DBTX, s *notify.Subscription) *notify.Subscription {
	t.Helper()
	if err := notify.Create(context.Background(), q, s); err != nil {
		t.Fatalf("creating subscription %q: %v", s.Name, err)
	}
	return s
}

// receiver is a webhook endpoint that records what it gets.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string
	// status decides the answer to the call-th request (1-based); nil
	// means 200.
	status func(call int) int
	// anyTime skips the timestamp tolerance (dispatchers on a fake clock).
	anyTime bool
	// onDelivered runs after a request answered 2xx, with the number of
	// distinct keys received so far.
	onDelivered func(distinct int)

	mu      sync.Mutex
	calls   int
	ok      map[string]int // delivery key -> 2xx answers
	events  map[string]notify.Event
	paths   map[string][]string // path -> keys answered 2xx
	badSigs int                 // requests with any problem
	bad     []string
	changed chan struct{}
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, secret: secret, ok: map[string]int{}, events: map[string]notify.Event{}, paths: map[string][]string{}, changed: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(400)
		return
	}
	r.mu.Lock()
	r.calls++
	call := r.calls
	r.mu.Unlock()

	var problems []string
	if r.secret != "" {
		tolerance := 5 * time.Minute
		if r.anyTime {
			tolerance = 0
		}
		if err := notify.Verify(r.secret, req.Header, body, time.Now(), tolerance); err != nil {
			problems = append(problems, err.Error())
		}
	}
	var wb notify.WebhookBody
	if err := json.Unmarshal(body, &wb); err != nil {
		problems = append(problems, "body: "+err.Error())
	}
	key := req.Header.Get(notify.HeaderDelivery)
	if key == "" || key != wb.ID {
		problems = append(problems, fmt.Sprintf("delivery header %q, body id %q", key, wb.ID))
	}
	if req.Header.Get(notify.HeaderEvent) != wb.Event.Kind || req.Header.Get("Content-Type") != "application/json" {
		problems = append(problems, fmt.Sprintf("headers %v for kind %q", req.Header, wb.Event.Kind))
	}
	status := 200
	if r.status != nil {
		status = r.status(call)
	}
	r.mu.Lock()
	if len(problems) > 0 {
		r.badSigs++
		r.bad = append(r.bad, problems...)
	}
	distinct := 0
	if status/100 == 2 {
		r.ok[key]++
		r.events[key] = wb.Event
		r.paths[req.URL.Path] = append(r.paths[req.URL.Path], key)
		close(r.changed)
		r.changed = make(chan struct{})
		distinct = len(r.ok)
	}
	r.mu.Unlock()
	w.WriteHeader(status)
	_, _ = w.Write([]byte("answer body is discarded"))
	if distinct > 0 && r.onDelivered != nil {
		r.onDelivered(distinct)
	}
}

func (r *receiver) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ok)
}

func (r *receiver) keys() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.ok {
		out[k] = v
	}
	return out
}

func (r *receiver) checkSignatures(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.badSigs != 0 {
		t.Errorf("%d requests failed verification: %v", r.badSigs, r.bad)
	}
}

// tickUntil calls d.Tick until cond holds or the timeout passes.
func tickUntil(t *testing.T, d *notify.Dispatcher, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		if err := d.Tick(ctx); err != nil {
			t.Fatalf("tick: %v", err)
		}
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stats(t *testing.T, d *notify.Dispatcher) notify.Stats {
	t.Helper()
	s, err := d.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func csrPEM(t *testing.T, cn string) string {
	t.Helper()
	csr, _, err := testpki.CSR(cn)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
}

func eventIDs(t *testing.T, q registry.DBTX, where string, args ...any) []int64 {
	t.Helper()
	rows, err := q.Query(context.Background(), `SELECT id FROM events WHERE `+where+` ORDER BY id`, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// fanoutState mirrors the fan-out's job_state document (the fields
// these tests read).
type fanoutState struct {
	Watermark int64 `json:"watermark"`
	High      int64 `json:"high"`
	Horizon   int64 `json:"horizon,omitempty"`
}

func readState(t *testing.T, q registry.DBTX) fanoutState {
	t.Helper()
	var raw string
	var st fanoutState
	if err := q.QueryRow(context.Background(), `SELECT value FROM job_state WHERE name = 'notify.fanout'`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func keysFor(sub uuid.UUID, ids []int64) map[string]bool {
	out := map[string]bool{}
	for _, id := range ids {
		out[notify.DeliveryKey(sub, id)] = true
	}
	return out
}

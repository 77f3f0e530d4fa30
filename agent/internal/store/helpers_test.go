package store

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// t0 is the fixed clock the tests start from.
var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable clock safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testOptions(clock *fakeClock, logs *logBuffer) Options {
	o := Options{Now: clock.Now, Timeout: 2 * time.Second}
	if logs != nil {
		o.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return o
}

// openTemp opens a store in a fresh temporary directory and closes it at
// the end of the test.
func openTemp(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.db")
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func rec(id, device, payload string) OutboxRecord {
	return OutboxRecord{ID: id, DeviceID: device, Payload: []byte(payload)}
}

func mustEnqueue(t testing.TB, s *Store, recs ...OutboxRecord) {
	t.Helper()
	for _, r := range recs {
		if err := s.Enqueue(context.Background(), r); err != nil {
			t.Fatalf("Enqueue(%s): %v", r.ID, err)
		}
	}
}

// peekAll returns the whole outbox.
func peekAll(t testing.TB, s *Store) []OutboxRecord {
	t.Helper()
	recs, err := s.Peek(1 << 30)
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	return recs
}

func ids(recs []OutboxRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func mustDepth(t testing.TB, s *Store) int {
	t.Helper()
	n, err := s.Depth()
	if err != nil {
		t.Fatalf("Depth: %v", err)
	}
	return n
}

// rawUpdate edits a closed database file directly with bbolt.
func rawUpdate(t testing.TB, path string, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("bbolt.Open: %v", err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatalf("raw update: %v", err)
	}
}

// replaceMigrations swaps the migration list for the test.
func replaceMigrations(t testing.TB, steps ...func(tx *bbolt.Tx) error) {
	t.Helper()
	saved := migrations
	migrations = steps
	t.Cleanup(func() { migrations = saved })
}

// seqsIncreasing reports whether the records' Seq strictly increase.
func seqsIncreasing(recs []OutboxRecord) error {
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq <= recs[i-1].Seq {
			return fmt.Errorf("seq %d at %d after %d", recs[i].Seq, i, recs[i-1].Seq)
		}
	}
	return nil
}

package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestOutboxOrderAckIdempotency(t *testing.T) {
	type step struct {
		enqueue []OutboxRecord
		ack     []string
		wantAck int
	}
	tests := []struct {
		name      string
		steps     []step
		wantIDs   []string
		wantDepth int
	}{
		{
			name:    "fifo",
			steps:   []step{{enqueue: []OutboxRecord{rec("a", "d1", "1"), rec("b", "d2", "2"), rec("c", "d1", "3")}}},
			wantIDs: []string{"a", "b", "c"}, wantDepth: 3,
		},
		{
			name:    "duplicate id ignored, first payload kept",
			steps:   []step{{enqueue: []OutboxRecord{rec("a", "d1", "first"), rec("b", "d1", "x"), rec("a", "d1", "second")}}},
			wantIDs: []string{"a", "b"}, wantDepth: 2,
		},
		{
			name: "ack head, middle, unknown and twice",
			steps: []step{
				{enqueue: []OutboxRecord{rec("a", "", "1"), rec("b", "", "2"), rec("c", "", "3"), rec("d", "", "4")}},
				{ack: []string{"a", "c", "nope", "a"}, wantAck: 2},
				{ack: []string{"c"}, wantAck: 0},
			},
			wantIDs: []string{"b", "d"}, wantDepth: 2,
		},
		{
			name: "ack everything then enqueue again",
			steps: []step{
				{enqueue: []OutboxRecord{rec("a", "", "1"), rec("b", "", "2")}},
				{ack: []string{"b", "a"}, wantAck: 2},
				{enqueue: []OutboxRecord{rec("c", "", "3"), rec("a", "", "again")}},
			},
			wantIDs: []string{"c", "a"}, wantDepth: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			s, _ := openTemp(t, testOptions(clock, nil))
			for _, st := range tt.steps {
				for _, r := range st.enqueue {
					mustEnqueue(t, s, r)
					clock.Advance(time.Second)
				}
				if st.ack != nil {
					n, err := s.Ack(st.ack...)
					if err != nil {
						t.Fatalf("Ack: %v", err)
					}
					if n != st.wantAck {
						t.Errorf("Ack(%v) = %d, want %d", st.ack, n, st.wantAck)
					}
				}
			}
			got := peekAll(t, s)
			if !slices.Equal(ids(got), tt.wantIDs) {
				t.Errorf("outbox ids: got %v, want %v", ids(got), tt.wantIDs)
			}
			if err := seqsIncreasing(got); err != nil {
				t.Error(err)
			}
			if d := mustDepth(t, s); d != tt.wantDepth {
				t.Errorf("Depth: got %d, want %d", d, tt.wantDepth)
			}
		})
	}
}

func TestOutboxRecordFields(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))
	if _, ok, err := s.OldestEnqueuedAt(); err != nil || ok {
		t.Fatalf("OldestEnqueuedAt on an empty outbox: ok=%v err=%v, want false, nil", ok, err)
	}
	payload := bytes.Repeat([]byte{0, 1, 2, 0xff}, 1000)
	mustEnqueue(t, s, OutboxRecord{ID: "r1", DeviceID: "dev-1", Payload: payload})
	clock.Advance(time.Minute)
	mustEnqueue(t, s, OutboxRecord{ID: "r2"}) // no device, empty payload

	got := peekAll(t, s)
	if len(got) != 2 {
		t.Fatalf("got %d records, want 2", len(got))
	}
	if got[0].ID != "r1" || got[0].DeviceID != "dev-1" || !bytes.Equal(got[0].Payload, payload) || !got[0].EnqueuedAt.Equal(t0) {
		t.Errorf("first record: got %+v (payload %d bytes), want r1/dev-1 with the payload at %v", got[0].ID, len(got[0].Payload), t0)
	}
	if got[1].ID != "r2" || got[1].DeviceID != "" || len(got[1].Payload) != 0 || !got[1].EnqueuedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("second record: got %+v", got[1])
	}
	oldest, ok, err := s.OldestEnqueuedAt()
	if err != nil || !ok || !oldest.Equal(t0) {
		t.Errorf("OldestEnqueuedAt: got %v %v %v, want %v true nil", oldest, ok, err, t0)
	}

	// Peek limits and PeekAfter continue where the last one stopped.
	if one, _ := s.Peek(1); len(one) != 1 || one[0].ID != "r1" {
		t.Errorf("Peek(1): got %v, want [r1]", ids(one))
	}
	if none, _ := s.Peek(0); len(none) != 0 {
		t.Errorf("Peek(0): got %v, want none", ids(none))
	}
	after, err := s.PeekAfter(got[0].Seq, 10)
	if err != nil || !slices.Equal(ids(after), []string{"r2"}) {
		t.Errorf("PeekAfter(%d): got %v %v, want [r2]", got[0].Seq, ids(after), err)
	}
	// A returned payload is a copy: changing it changes nothing stored.
	got[0].Payload[0] = 42
	again, _ := s.Peek(1)
	if again[0].Payload[0] != 0 {
		t.Errorf("payload aliased the database: got first byte %d, want 0", again[0].Payload[0])
	}
}

func TestEnqueueRejects(t *testing.T) {
	s, _ := openTemp(t, testOptions(newClock(), nil))
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		rec  OutboxRecord
		want error
	}{
		{"empty id", context.Background(), OutboxRecord{Payload: []byte("x")}, ErrInvalidArgument},
		{"long id", context.Background(), OutboxRecord{ID: strings.Repeat("i", MaxRecordIDLen+1)}, ErrInvalidArgument},
		{"long device", context.Background(), OutboxRecord{ID: "a", DeviceID: strings.Repeat("d", MaxRecordIDLen+1)}, ErrInvalidArgument},
		{"big payload", context.Background(), OutboxRecord{ID: "a", Payload: make([]byte, MaxPayloadSize+1)}, ErrInvalidArgument},
		{"canceled context", canceled, rec("a", "", "x"), context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Enqueue(tt.ctx, tt.rec); !errors.Is(err, tt.want) {
				t.Errorf("Enqueue: got %v, want %v", err, tt.want)
			}
			if err := s.EnqueueMany(tt.ctx, []OutboxRecord{rec("ok", "", ""), tt.rec}); !errors.Is(err, tt.want) {
				t.Errorf("EnqueueMany: got %v, want %v", err, tt.want)
			}
		})
	}
	if d := mustDepth(t, s); d != 0 {
		t.Errorf("Depth after rejected writes: got %d, want 0", d)
	}
}

func TestEnqueueMany(t *testing.T) {
	s, _ := openTemp(t, testOptions(newClock(), nil))
	mustEnqueue(t, s, rec("a", "", "1"))
	batch := []OutboxRecord{rec("b", "", "2"), rec("a", "", "dup of stored"), rec("c", "", "3"), rec("b", "", "dup in batch")}
	if err := s.EnqueueMany(context.Background(), batch); err != nil {
		t.Fatalf("EnqueueMany: %v", err)
	}
	got := peekAll(t, s)
	if want := []string{"a", "b", "c"}; !slices.Equal(ids(got), want) {
		t.Errorf("got %v, want %v", ids(got), want)
	}
	if string(got[0].Payload) != "1" || string(got[1].Payload) != "2" {
		t.Errorf("duplicates overwrote payloads: got %q %q", got[0].Payload, got[1].Payload)
	}
	if d := mustDepth(t, s); d != 3 {
		t.Errorf("Depth: got %d, want 3", d)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	clock := newClock()
	opts := testOptions(clock, nil)
	s, path := openTemp(t, opts)

	mustEnqueue(t, s, rec("a", "d", "1"), rec("b", "d", "2"), rec("c", "d", "3"))
	if _, err := s.Ack("b"); err != nil {
		t.Fatal(err)
	}
	enr := Enrollment{RequestID: "req-1", DeviceID: "d", Status: EnrollmentPending, CSR: []byte("csr")}
	if err := s.PutEnrollment(enr); err != nil {
		t.Fatal(err)
	}
	if err := s.PutIssued("0A", IssuedRecord{Data: []byte("cert")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPolicy(7, []byte("policy")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCABundle("root", []byte("pem")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutCRL("ca-1", []byte("der"), t0, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkUpdateApplied("u-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetKVTime(KeyLastSync, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if _, err := s.Depth(); !errors.Is(err, ErrClosed) {
		t.Errorf("Depth after Close: got %v, want ErrClosed", err)
	}
	if err := s.Enqueue(context.Background(), rec("z", "", "")); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close: got %v, want ErrClosed", err)
	}

	s2, err := Open(path, opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if got := ids(peekAll(t, s2)); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("outbox after reopen: got %v, want [a c]", got)
	}
	if d := mustDepth(t, s2); d != 2 {
		t.Errorf("Depth after reopen: got %d, want 2", d)
	}
	// Sequences keep growing across restarts: a new record goes last.
	mustEnqueue(t, s2, rec("d", "d", "4"))
	if got := ids(peekAll(t, s2)); !slices.Equal(got, []string{"a", "c", "d"}) {
		t.Errorf("outbox after reopen and enqueue: got %v, want [a c d]", got)
	}
	if e, err := s2.GetEnrollment("req-1"); err != nil || string(e.CSR) != "csr" || e.Status != EnrollmentPending {
		t.Errorf("enrollment after reopen: got %+v %v", e, err)
	}
	if r, err := s2.GetIssued("a"); err != nil || string(r.Data) != "cert" {
		t.Errorf("issued after reopen: got %+v %v", r, err)
	}
	if p, err := s2.GetPolicy(); err != nil || p.Version != 7 || string(p.Data) != "policy" {
		t.Errorf("policy after reopen: got %+v %v", p, err)
	}
	if b, err := s2.GetCABundle("root"); err != nil || string(b) != "pem" {
		t.Errorf("CA bundle after reopen: got %q %v", b, err)
	}
	if der, _, _, err := s2.GetCRL("ca-1"); err != nil || string(der) != "der" {
		t.Errorf("CRL after reopen: got %q %v", der, err)
	}
	if already, err := s2.MarkUpdateApplied("u-1"); err != nil || !already {
		t.Errorf("MarkUpdateApplied after reopen: got %v %v, want true nil", already, err)
	}
	if ts, ok, err := s2.GetKVTime(KeyLastSync); err != nil || !ok || !ts.Equal(t0) {
		t.Errorf("kv time after reopen: got %v %v %v", ts, ok, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode: got %v, want 0600", perm)
	}
}

func TestConcurrentEnqueue(t *testing.T) {
	const writers, perWriter = 64, 40
	s, path := openTemp(t, testOptions(newClock(), nil))
	id := func(w, i int) string { return fmt.Sprintf("w%02d-%03d", w, i) }

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if err := s.Enqueue(context.Background(), rec(id(w, i), fmt.Sprint("dev-", w), id(w, i))); err != nil {
					errs <- err
					return
				}
				// Every writer also re-sends a record of its neighbour:
				// the duplicates must not show up.
				if i%4 == 0 {
					n := (w + 1) % writers
					if err := s.Enqueue(context.Background(), rec(id(n, i), fmt.Sprint("dev-", n), id(n, i))); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Enqueue: %v", err)
	}

	check := func(s *Store) {
		t.Helper()
		got := peekAll(t, s)
		if len(got) != writers*perWriter {
			t.Errorf("got %d records, want %d", len(got), writers*perWriter)
		}
		seen := map[string]int{}
		last := map[string]int{} // per device, the index of its last record
		for _, r := range got {
			seen[r.ID]++
			if string(r.Payload) != r.ID {
				t.Errorf("record %s has payload %q", r.ID, r.Payload)
			}
			var w, i int
			if _, err := fmt.Sscanf(r.ID, "w%d-%d", &w, &i); err != nil {
				t.Fatalf("bad id %q", r.ID)
			}
			// Order per device: a writer's own records are enqueued one
			// after another, so their sequence follows their index.
			if prev, ok := last[r.DeviceID]; ok && i <= prev && i%4 != 0 {
				t.Errorf("device %s: record %d after %d", r.DeviceID, i, prev)
			}
			if i%4 != 0 {
				last[r.DeviceID] = i
			}
		}
		for w := range writers {
			for i := range perWriter {
				if n := seen[id(w, i)]; n != 1 {
					t.Errorf("record %s present %d times, want 1", id(w, i), n)
				}
			}
		}
		if err := seqsIncreasing(got); err != nil {
			t.Error(err)
		}
		if d := mustDepth(t, s); d != writers*perWriter {
			t.Errorf("Depth: got %d, want %d", d, writers*perWriter)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, Options{VerifyOnOpen: VerifyAlways})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	check(s2)
}

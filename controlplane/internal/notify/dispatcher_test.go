package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/testbed/smtpsink"
)

func TestWebhookRetriesUntilDeliveredOnce(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	rcv := newReceiver(t, "")
	rcv.status = func(call int) int {
		if call <= 3 {
			return 500
		}
		return 200
	}
	sub := mustCreate(t, pool, &Subscription{Name: "hook", Channel: ChannelWebhook, Target: rcv.srv.URL + "/hook"})
	if !strings.HasPrefix(sub.Secret, "whsec_") || len(sub.Secret) < 40 {
		t.Fatalf("generated secret %q", sub.Secret)
	}
	rcv.secret = sub.Secret
	if got, err := Get(ctx, pool, sub.ID); err != nil || got.Secret != "" {
		t.Fatalf("Get: secret %q, err %v; want the secret hidden", got.Secret, err)
	}

	const n = 20
	ids := addEvents(t, pool, n, "test.ping", nil)
	d := &Dispatcher{DisableDigest: true, Pool: pool, Backoff: fastBackoff, Concurrency: 4}
	tickUntil(t, d, 30*time.Second, "every delivery", func() bool { return stats(t, d).Delivered == n })

	rcv.checkSignatures(t)
	want := keysFor(sub.ID, ids)
	got := rcv.keys()
	if len(got) != n {
		t.Errorf("receiver got %d distinct deliveries, want %d", len(got), n)
	}
	for k, c := range got {
		if !want[k] {
			t.Errorf("unexpected delivery key %s", k)
		}
		if c != 1 {
			t.Errorf("delivery %s accepted %d times, want 1", k, c)
		}
	}
	// The event in the body is the one recorded.
	for i, id := range ids {
		ev := rcv.events[DeliveryKey(sub.ID, id)]
		var detail struct{ N int }
		if err := json.Unmarshal(ev.Detail, &detail); err != nil || ev.ID != id || ev.Kind != "test.ping" || detail.N != i || ev.At.IsZero() {
			t.Errorf("event %d in the body: %+v (detail %s, %v)", id, ev, ev.Detail, err)
		}
	}
	// 3 failures and n successes, no duplicate sends.
	if c := rcv.totalCalls(); c != n+3 {
		t.Errorf("receiver got %d calls, want %d", c, n+3)
	}
	if s := stats(t, d); s != (Stats{Delivered: n}) {
		t.Errorf("stats: got %+v, want %+v", s, Stats{Delivered: n})
	}
	var attempts, withErr int
	if err := pool.QueryRow(ctx, `SELECT sum(attempts), count(*) FILTER (WHERE last_error <> '') FROM deliveries`).Scan(&attempts, &withErr); err != nil {
		t.Fatal(err)
	}
	if attempts != n+3 || withErr != 0 {
		t.Errorf("attempts recorded: %d (want %d), rows with last_error: %d (want 0)", attempts, n+3, withErr)
	}
	// Receipts list the deliveries, newest first.
	recs, err := ListDeliveries(ctx, pool, DeliveryFilter{SubscriptionID: sub.ID, Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 5 || recs[0].EventID != ids[n-1] || recs[0].Status != "delivered" || recs[0].DeliveredAt == nil {
		t.Errorf("receipts: %+v", recs)
	}
	more, err := ListDeliveries(ctx, pool, DeliveryFilter{SubscriptionID: sub.ID, BeforeEventID: recs[4].EventID, Limit: 100})
	if err != nil || len(more) != n-5 {
		t.Errorf("second page: %d receipts (%v), want %d", len(more), err, n-5)
	}
}

func TestEmailOnePerEvent(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	sink := smtpsink.New(t)
	if _, err := pool.Exec(ctx, `INSERT INTO devices (id) VALUES ('dev-1')`); err != nil {
		t.Fatal(err)
	}
	sub := mustCreate(t, pool, &Subscription{Name: "ops mail", Channel: ChannelEmail, Target: "ops@example.com", EventKinds: []string{"test.*"}})
	if sub.Secret != "" {
		t.Errorf("email subscription got a secret %q", sub.Secret)
	}
	dev := "dev-1"
	ids := addEvents(t, pool, 5, "test.mail", &dev)
	addEvents(t, pool, 2, "other.kind", &dev) // not subscribed

	sink.FailNext(2) // two temporary failures, retried
	d := &Dispatcher{DisableDigest: true, Pool: pool, Backoff: fastBackoff, SMTP: SMTPConfig{Addr: sink.Addr, From: "outpost@pki.example.com"}}
	tickUntil(t, d, 30*time.Second, "emails", func() bool { return stats(t, d).Delivered == len(ids) })
	for range 3 {
		if err := d.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	msgs := sink.Messages()
	if len(msgs) != len(ids) {
		t.Fatalf("got %d emails, want %d", len(msgs), len(ids))
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		if m.From != "outpost@pki.example.com" || len(m.To) != 1 || m.To[0] != "ops@example.com" {
			t.Errorf("envelope: from %q to %v", m.From, m.To)
		}
		if got, want := m.Subject(), "[Outpost] test.mail device dev-1"; got != want {
			t.Errorf("subject: got %q, want %q", got, want)
		}
		key := m.Header().Get("X-Outpost-Delivery")
		seen[key] = true
		body, err := m.Body()
		if err != nil {
			t.Fatal(err)
		}
		var evID string
		if _, after, ok := strings.Cut(key, ":"); ok {
			evID = after
		}
		for _, want := range []string{"Event: test.mail", "Event ID: " + evID, "Device: dev-1", "serial: abc0", "Delivery: " + key} {
			if !strings.Contains(body, want) {
				t.Errorf("body lacks %q:\n%s", want, body)
			}
		}
		if mid := m.Header().Get("Message-ID"); mid != "<"+evID+"."+sub.ID.String()+"@pki.example.com>" {
			t.Errorf("Message-ID %q for delivery %s", mid, key)
		}
	}
	if want := keysFor(sub.ID, ids); len(seen) != len(want) {
		t.Errorf("distinct deliveries by email: %v, want %v", seen, want)
	}
}

func TestChatMessage(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	var mu sync.Mutex
	var texts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct{ Text string }
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(400)
			return
		}
		mu.Lock()
		texts = append(texts, m.Text)
		mu.Unlock()
	}))
	defer srv.Close()
	if _, err := pool.Exec(ctx, `INSERT INTO devices (id) VALUES ('gw-7')`); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, pool, &Subscription{Name: "chat", Channel: ChannelChat, Target: srv.URL + "/services/T000/B000/XXXX"})
	dev := "gw-7"
	ids := addEvents(t, pool, 1, "certificate.revoked", &dev)
	d := &Dispatcher{DisableDigest: true, Pool: pool}
	tickUntil(t, d, 10*time.Second, "the chat message", func() bool { return stats(t, d).Delivered == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(texts) != 1 {
		t.Fatalf("got %d chat messages, want 1", len(texts))
	}
	for _, want := range []string{"[Outpost] certificate.revoked", "device=gw-7", "serial=abc00", fmt.Sprintf("(event %d)", ids[0])} {
		if !strings.Contains(texts[0], want) || strings.Contains(texts[0], "\n") {
			t.Errorf("chat text %q lacks %q", texts[0], want)
		}
	}
}

func TestOutOfOrderCommitIsNotLost(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	rcv := newReceiver(t, "")
	sub := mustCreate(t, pool, &Subscription{Name: "hook", Channel: ChannelWebhook, Target: rcv.srv.URL})
	rcv.secret = sub.Secret
	d := &Dispatcher{DisableDigest: true, Pool: pool, Backoff: fastBackoff}

	// A transaction draws the lower id and commits last.
	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	low := addEvents(t, slow, 1, "test.slow", nil)[0]
	high := addEvents(t, pool, 1, "test.fast", nil)[0]
	if low >= high {
		t.Fatalf("ids %d, %d: want the slow one lower", low, high)
	}
	tickUntil(t, d, 10*time.Second, "the committed event", func() bool { return rcv.distinct() == 1 })
	if st := readState(t, pool); st.Watermark >= low || st.Horizon == 0 {
		t.Errorf("while the lower id is open: state %+v, want the watermark below %d and a pending horizon", st, low)
	}
	// More ticks while it stays open change nothing.
	for range 3 {
		if err := d.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tickUntil(t, d, 10*time.Second, "the late event", func() bool { return rcv.distinct() == 2 })
	if rcv.keys()[DeliveryKey(sub.ID, low)] != 1 {
		t.Errorf("late-committed event %d not delivered: %v", low, rcv.keys())
	}

	// A rolled-back id leaves a gap that does not hold the watermark.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gone := addEvents(t, tx, 1, "test.gone", nil)[0]
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	last := addEvents(t, pool, 1, "test.after", nil)[0]
	tickUntil(t, d, 10*time.Second, "the watermark past the gap", func() bool {
		st := readState(t, pool)
		return st.Watermark >= last && st.Horizon == 0
	})
	if rcv.distinct() != 3 || rcv.keys()[DeliveryKey(sub.ID, gone)] != 0 {
		t.Errorf("after the gap: deliveries %v", rcv.keys())
	}
	rcv.checkSignatures(t)
}

func TestParallelDispatchers(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	rcv := newReceiver(t, "")
	sub := mustCreate(t, pool, &Subscription{Name: "hook", Channel: ChannelWebhook, Target: rcv.srv.URL})
	rcv.secret = sub.Secret
	// Every transition to delivered, logged by a trigger: a key marked
	// delivered twice would show twice.
	if _, err := pool.Exec(ctx, `
		CREATE TABLE delivered_log (subscription_id uuid, event_id bigint, at timestamptz DEFAULT clock_timestamp());
		CREATE FUNCTION log_delivered() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO delivered_log (subscription_id, event_id) VALUES (NEW.subscription_id, NEW.event_id); RETURN NEW; END $$;
		CREATE TRIGGER deliveries_log AFTER UPDATE ON deliveries FOR EACH ROW
			WHEN (NEW.status = 'delivered') EXECUTE FUNCTION log_delivered();`); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 2 {
		d := &Dispatcher{DisableDigest: true, Pool: openPool(t, pool.Config().ConnString()), Backoff: fastBackoff, BatchSize: 50}
		wg.Go(func() { d.Run(runCtx, 5*time.Millisecond) })
	}

	// Writers commit out of order: each holds its transaction open for a
	// moment after drawing ids.
	const writers, perWriter = 4, 50
	var wwg sync.WaitGroup
	for range writers {
		wwg.Go(func() {
			for range perWriter / 2 {
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					q := registry.On(tx)
					if err := q.AddEvent(ctx, &registry.Event{Kind: "test.par"}); err != nil {
						return err
					}
					time.Sleep(time.Duration(rand.IntN(10000)) * time.Microsecond)
					return q.AddEvent(ctx, &registry.Event{Kind: "test.par"})
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wwg.Wait()
	const total = writers * perWriter
	waitFor(t, 60*time.Second, "every delivery", func() bool { return rcv.distinct() == total })
	// Let in-flight records land, then stop.
	d := &Dispatcher{DisableDigest: true, Pool: pool}
	waitFor(t, 10*time.Second, "stats", func() bool { return stats(t, d).Delivered == total })
	stop()
	wg.Wait()

	ids := eventIDs(t, pool, `kind = 'test.par'`)
	want := keysFor(sub.ID, ids)
	got := rcv.keys()
	if len(ids) != total || len(got) != total {
		t.Fatalf("%d events, %d distinct deliveries; want %d", len(ids), len(got), total)
	}
	for k, n := range got {
		if !want[k] || n != 1 {
			t.Errorf("delivery %s received %d times (expected key: %v)", k, n, want[k])
		}
	}
	if c := rcv.totalCalls(); c != total {
		t.Errorf("receiver got %d calls, want %d (a delivery was sent twice)", c, total)
	}
	var logged, distinctLogged, maxAttempts int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT (subscription_id, event_id)) FROM delivered_log`).Scan(&logged, &distinctLogged); err != nil {
		t.Fatal(err)
	}
	if logged != total || distinctLogged != total {
		t.Errorf("transitions to delivered: %d for %d keys, want %d for %d", logged, distinctLogged, total, total)
	}
	if err := pool.QueryRow(ctx, `SELECT max(attempts) FROM deliveries`).Scan(&maxAttempts); err != nil || maxAttempts != 1 {
		t.Errorf("max attempts %d (%v), want 1", maxAttempts, err)
	}
	rcv.checkSignatures(t)
}

func TestDeadLetterAndRedeliver(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	var healthy atomic.Bool
	rcv := newReceiver(t, "")
	rcv.status = func(int) int {
		if healthy.Load() {
			return 200
		}
		return 500
	}
	sub := mustCreate(t, pool, &Subscription{Name: "down", Channel: ChannelWebhook, Target: rcv.srv.URL})
	rcv.secret = sub.Secret
	ids := addEvents(t, pool, 2, "test.dead", nil)
	d := &Dispatcher{DisableDigest: true, Pool: pool, Backoff: fastBackoff, MaxAttempts: 3}
	tickUntil(t, d, 20*time.Second, "dead letters", func() bool { return stats(t, d).Dead == 2 })
	for range 5 {
		if err := d.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c := rcv.totalCalls(); c != 6 {
		t.Errorf("receiver got %d calls, want 6 (3 attempts x 2)", c)
	}
	recs, err := ListDeliveries(ctx, pool, DeliveryFilter{SubscriptionID: sub.ID, Status: "dead"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Attempts != 3 || !strings.Contains(r.LastError, "500") || r.DeliveredAt != nil {
			t.Errorf("dead delivery %s: attempts %d, last error %q", r.Key(), r.Attempts, r.LastError)
		}
	}
	if len(recs) != 2 {
		t.Errorf("%d dead receipts, want 2", len(recs))
	}

	if err := d.Redeliver(ctx, sub.ID, ids[0]); err != nil {
		t.Fatalf("Redeliver: %v", err)
	}
	if err := d.Redeliver(ctx, sub.ID, ids[0]); !errors.Is(err, ErrNotDead) {
		t.Errorf("Redeliver of a pending delivery: got %v, want ErrNotDead", err)
	}
	if err := d.Redeliver(ctx, sub.ID, ids[1]+1000); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Redeliver of a missing delivery: got %v, want ErrNotFound", err)
	}
	healthy.Store(true)
	tickUntil(t, d, 10*time.Second, "the revived delivery", func() bool { return stats(t, d).Delivered == 1 })
	if s := stats(t, d); s != (Stats{Delivered: 1, Dead: 1}) {
		t.Errorf("stats: got %+v, want %+v", s, Stats{Delivered: 1, Dead: 1})
	}
	if got := rcv.keys(); len(got) != 1 || got[DeliveryKey(sub.ID, ids[0])] != 1 {
		t.Errorf("accepted deliveries: %v", got)
	}
	rcv.checkSignatures(t)
}

// A process that dies after claiming leaves the delivery to its lease;
// once it expires another dispatcher sends it.
func TestCrashedClaimIsRetriedAfterLease(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	rcv := newReceiver(t, "")
	sub := mustCreate(t, pool, &Subscription{Name: "hook", Channel: ChannelWebhook, Target: rcv.srv.URL})
	rcv.secret = sub.Secret
	ids := addEvents(t, pool, 1, "test.crash", nil)

	crashed := &Dispatcher{DisableDigest: true, Pool: pool, Lease: 300 * time.Millisecond}
	crashed.init()
	if _, err := crashed.fanout(ctx); err != nil {
		t.Fatal(err)
	}
	claimed, err := crashed.claim(ctx, 10)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %d deliveries, %v", len(claimed), err)
	}
	// ... and dies. Another dispatcher does not send it during the lease.
	other := &Dispatcher{DisableDigest: true, Pool: pool}
	if err := other.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if rcv.totalCalls() != 0 {
		t.Fatal("a leased delivery was sent by another dispatcher")
	}
	time.Sleep(350 * time.Millisecond)
	tickUntil(t, other, 10*time.Second, "the delivery after the lease", func() bool { return rcv.distinct() == 1 })
	if rcv.keys()[DeliveryKey(sub.ID, ids[0])] != 1 {
		t.Errorf("got %v", rcv.keys())
	}
	var attempts int
	if err := pool.QueryRow(ctx, `SELECT attempts FROM deliveries`).Scan(&attempts); err != nil || attempts != 2 {
		t.Errorf("attempts %d (%v), want 2 (the crashed one counts)", attempts, err)
	}

	// A crash on the last allowed attempt ends as dead, not as a retry
	// beyond the limit.
	ids2 := addEvents(t, pool, 1, "test.crash", nil)
	last := &Dispatcher{DisableDigest: true, Pool: pool, Lease: 100 * time.Millisecond, MaxAttempts: 1}
	if _, err := last.fanout(ctx); err != nil {
		t.Fatal(err)
	}
	if claimed, err := last.claim(ctx, 10); err != nil || len(claimed) != 1 || claimed[0].Event.ID != ids2[0] {
		t.Fatalf("claim: %v, %v", claimed, err)
	}
	time.Sleep(150 * time.Millisecond)
	if err := last.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if s := stats(t, last); s.Dead != 1 || s.Pending != 0 {
		t.Errorf("stats after a crash on the last attempt: %+v", s)
	}
}

func TestBackoffDefault(t *testing.T) {
	tests := []struct {
		attempt int
		lo, hi  time.Duration
	}{
		{1, time.Second, 2 * time.Second},
		{2, 2 * time.Second, 4 * time.Second},
		{3, 4 * time.Second, 8 * time.Second},
		{12, 30 * time.Minute, time.Hour},
		{40, 30 * time.Minute, time.Hour},
	}
	for _, tc := range tests {
		for range 50 {
			if got := DefaultBackoff(tc.attempt); got < tc.lo || got >= tc.hi {
				t.Errorf("DefaultBackoff(%d) = %v, want in [%v, %v)", tc.attempt, got, tc.lo, tc.hi)
			}
		}
	}
}

// Small batches exercise the partial rescan and scan paths.
func TestFanoutInSmallBatches(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	rcv := newReceiver(t, "")
	sub := mustCreate(t, pool, &Subscription{Name: "hook", Channel: ChannelWebhook, Target: rcv.srv.URL})
	rcv.secret = sub.Secret
	d := &Dispatcher{DisableDigest: true, Pool: pool, BatchSize: 3}

	open1, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer open1.Rollback(ctx)
	low := addEvents(t, open1, 1, "test.low", nil)
	mid := addEvents(t, pool, 10, "test.mid", nil)
	open2, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer open2.Rollback(ctx)
	low2 := addEvents(t, open2, 1, "test.low", nil)
	mid2 := addEvents(t, pool, 4, "test.mid", nil)
	tickUntil(t, d, 10*time.Second, "the committed events", func() bool { return rcv.distinct() == 14 })
	if st := readState(t, pool); st.Watermark >= low[0] {
		t.Errorf("state %+v with event %d open", st, low[0])
	}
	if err := open1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The horizon waits for both open transactions (it does not know
	// which holds which id).
	for range 3 {
		if err := d.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st := readState(t, pool); st.Watermark >= low[0] || len(st.Waiting) != 1 {
		t.Errorf("state %+v with event %d open", st, low2[0])
	}
	if err := open2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	more := addEvents(t, pool, 7, "test.more", nil)
	all := slices.Concat(low, mid, low2, mid2, more)
	tickUntil(t, d, 10*time.Second, "everything", func() bool {
		return rcv.distinct() == len(all) && readState(t, pool).Watermark == slices.Max(all)
	})
	want := keysFor(sub.ID, all)
	for k, n := range rcv.keys() {
		if !want[k] || n != 1 {
			t.Errorf("delivery %s: %d times (expected: %v)", k, n, want[k])
		}
	}
	if c := rcv.totalCalls(); c != len(all) {
		t.Errorf("%d calls for %d events", c, len(all))
	}
}

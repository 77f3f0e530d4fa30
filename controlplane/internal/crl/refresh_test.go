package crl

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/internal/testpki"
)

// generated returns, per CA, how many CRLs were ever issued (numbers are
// dense per CA, and the newest rows are never pruned) and the latest
// full and delta numbers.
type counts struct{ issued, full, delta int64 }

func crlCounts(t *testing.T, e *env) map[uuid.UUID]counts {
	t.Helper()
	rows, err := e.App.Pool.Query(e.ctx, `SELECT ca_id, max(crl_number),
		coalesce(max(crl_number) FILTER (WHERE NOT is_delta), 0), coalesce(max(crl_number) FILTER (WHERE is_delta), 0)
		FROM crls GROUP BY ca_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[uuid.UUID]counts{}
	for rows.Next() {
		var id uuid.UUID
		var c counts
		if err := rows.Scan(&id, &c.issued, &c.full, &c.delta); err != nil {
			t.Fatal(err)
		}
		out[id] = c
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func totalIssued(m map[uuid.UUID]counts) (n int64) {
	for _, c := range m {
		n += c.issued
	}
	return n
}

// TestRefresh walks a clock through a CRL's life and checks that Refresh
// issues exactly what is due.
func TestRefresh(t *testing.T) {
	t.Parallel()
	t0 := time.Now().Truncate(time.Second)
	clock := &fakeClock{t: t0}
	e := newEnv(t, clock)
	issuing := e.caByRole(t, "bootstrap_issuing")
	issuingCert := mustCert(t, issuing.CertDER)
	// A CA without a key is left alone, without an error.
	keyless, err := e.App.Svc.ImportCA(e.ctx, "test", "refresh-keyless", testpki.NewT(t, testpki.WithClock(time.Now)).Root("Keyless").Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, ok := crlCounts(t, e)[keyless.ID]; ok {
			t.Errorf("keyless ca: got %+v, want no crls", c)
		}
	})

	for _, tc := range []struct {
		name      string
		at        time.Duration
		revoke    bool // record a revocation that no OnRevoked announced
		wantFull  int64
		wantDelta int64
	}{
		{"first run: full and delta", 0, false, 1, 1},
		{"nothing due", time.Minute, false, 0, 0},
		{"missed revocation: a delta", 2 * time.Minute, true, 0, 1},
		{"nothing due again", 3 * time.Minute, false, 0, 0},
		// The last delta (at 2m) is due 15m before its nextUpdate (62m).
		{"delta not yet due", 46 * time.Minute, false, 0, 0},
		{"delta due", 48 * time.Minute, false, 0, 1},
		{"delta fresh", 50 * time.Minute, false, 0, 0},
		// The full CRL (0m) is due 6h before its nextUpdate (24h).
		{"full not yet due", 17*time.Hour + 59*time.Minute, false, 0, 1},
		{"full due: full and delta", 18*time.Hour + time.Minute, false, 1, 1},
		{"all fresh", 18*time.Hour + 2*time.Minute, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.Set(t0.Add(tc.at))
			if tc.revoke {
				at := clock.Now()
				seed(t, e.App.Pool, issuing.ID, []seedRow{{serial: randomSerial(t), notAfter: at.Add(24 * time.Hour), status: "revoked", revokedAt: &at}})
			}
			before := crlCounts(t, e)[issuing.ID]
			if err := e.svc.Refresh(e.ctx); err != nil {
				t.Fatal(err)
			}
			after := crlCounts(t, e)[issuing.ID]
			gotFull := int64(0)
			if after.full != before.full {
				gotFull = 1
			}
			gotDelta := after.issued - before.issued - gotFull
			if gotFull != tc.wantFull || gotDelta != tc.wantDelta {
				t.Errorf("issued: got %d full and %d delta, want %d and %d", gotFull, gotDelta, tc.wantFull, tc.wantDelta)
			}
			f, err := e.svc.Latest(e.ctx, issuing.ID, false)
			if err != nil {
				t.Fatal(err)
			}
			d, err := e.svc.Latest(e.ctx, issuing.ID, true)
			if err != nil {
				t.Fatal(err)
			}
			if d.BaseNumber != f.Number {
				t.Errorf("latest delta base: got %d, want the latest full crl %d", d.BaseNumber, f.Number)
			}
			checkCRL(t, e.svc.BaseURL, issuingCert, issuing.ID, d)
		})
	}
}

// TestRefreshOneAtATime: Refresh backs off while another replica holds
// its lock, and two at once do not both generate.
func TestRefreshOneAtATime(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Now().Truncate(time.Second)}
	e := newEnv(t, clock)
	// Another replica holds the refresh lock.
	conn, err := e.App.Pool.Acquire(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(e.ctx, `SELECT pg_advisory_lock($1, 0)`, lockNamespaceRefresh); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.svc.Refresh(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := totalIssued(crlCounts(t, e)); n != 0 {
		t.Errorf("while another replica holds the lock: got %d crls issued, want 0", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Refresh waited %v for the lock, want it to return at once", d)
	}
	if _, err := conn.Exec(e.ctx, `SELECT pg_advisory_unlock($1, 0)`, lockNamespaceRefresh); err != nil {
		t.Fatal(err)
	}
	conn.Release()

	cas := 0
	if err := e.App.Pool.QueryRow(e.ctx, `SELECT count(*) FROM cas WHERE key_ref IS NOT NULL`).Scan(&cas); err != nil {
		t.Fatal(err)
	}
	for round, at := range []time.Duration{0, 19 * time.Hour} {
		clock.Set(clock.Now().Add(at))
		before := totalIssued(crlCounts(t, e))
		// Replicas: separate Services on the same database and keys.
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			r := &Service{Reg: e.svc.Reg, Keys: e.svc.Keys, BaseURL: e.svc.BaseURL, Now: clock.Now}
			wg.Go(func() { errs[i] = r.Refresh(e.ctx) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		// Each CA: one full and one delta, whichever replica made them.
		if got, want := totalIssued(crlCounts(t, e))-before, int64(2*cas); got != want {
			t.Errorf("round %d: got %d crls issued by 4 concurrent Refresh calls, want %d (a full and a delta for each of %d CAs)", round, got, want, cas)
		}
	}
}

// TestRun: Run refreshes at once and stops with its context.
func TestRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		e.svc.Run(ctx, 20*time.Millisecond)
		close(done)
	}()
	issuing := e.caByRole(t, "bootstrap_issuing")
	// A bound for a stuck loop, not a speed requirement: a loaded
	// machine signs the first CRLs of every CA slowly.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := e.svc.Latest(e.ctx, issuing.ID, true); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not issue crls within 2 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

package cpbench_test

// Lifecycle sweep over the whole data set: Outpost's set-based statements
// next to a per-certificate loop (select all, update one by one), the way
// Lamassu IoT's daily status check works, on the same rows in the same run.

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/lifecycle"
	"github.com/outpost-pki/outpost/internal/certstatus"
)

// sweepAhead is how far in the future the benchmark sweeps "now": far
// enough that some certificates expire and more are about to expire.
const sweepAhead = 20 * 24 * time.Hour

// sweepThreshold is the about-to-expire threshold of both sides.
const sweepThreshold = 30 * 24 * time.Hour

// prepareSweep snapshots the statuses once; resetSweep restores them (and
// drops the events a sweep wrote) between iterations, outside the timer.
func prepareSweep(b *testing.B, f *pagingFixture) {
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_status AS SELECT serial, status FROM certificates`); err != nil {
		b.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `CREATE UNIQUE INDEX IF NOT EXISTS bench_status_serial ON bench_status (serial)`); err != nil {
		b.Fatal(err)
	}
}

func resetSweep(b *testing.B, f *pagingFixture) {
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, `UPDATE certificates c SET status = s.status FROM bench_status s WHERE c.serial = s.serial AND c.status <> s.status`); err != nil {
		b.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `DELETE FROM events WHERE kind IN ('certificate.expired', 'certificate.about_to_expire')`); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSetSweep runs Outpost's lifecycle sweep (one statement per
// transition, events written by the same statements).
func BenchmarkSetSweep(b *testing.B) {
	f := pagingData(b)
	prepareSweep(b, f)
	b.Run("all_certificates", func(b *testing.B) {
		sw := &lifecycle.Sweeper{Pool: f.pool, DefaultThreshold: sweepThreshold, Now: func() time.Time { return time.Now().Add(sweepAhead) }}
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			resetSweep(b, f)
			b.StartTimer()
			res, err := sw.Sweep(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(res.Expired+res.AboutToExpire), "transitions/op")
		}
	})
}

// BenchmarkLoopSweep is the per-certificate loop: read every
// certificate, compute its status, and update (and record an event for)
// each one that changed, one statement at a time.
func BenchmarkLoopSweep(b *testing.B) {
	f := pagingData(b)
	prepareSweep(b, f)
	b.Run("all_certificates", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			resetSweep(b, f)
			b.StartTimer()
			n, err := loopSweep(context.Background(), f, time.Now().Add(sweepAhead))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(n), "transitions/op")
		}
	})
}

func loopSweep(ctx context.Context, f *pagingFixture, now time.Time) (int, error) {
	type row struct {
		Serial    string
		Status    string
		NotBefore time.Time
		NotAfter  time.Time
	}
	rows, err := f.pool.Query(ctx, `SELECT serial, status, not_before, not_after FROM certificates`)
	if err != nil {
		return 0, err
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range all {
		if r.Status == "revoked" || r.Status == "expired" {
			continue
		}
		st := string(certstatus.Of(now, r.NotBefore, r.NotAfter, certstatus.Threshold{Before: sweepThreshold}))
		if st == "not_yet_valid" || st == r.Status {
			continue
		}
		if _, err := f.pool.Exec(ctx, `UPDATE certificates SET status = $1 WHERE serial = $2`, st, r.Serial); err != nil {
			return n, err
		}
		if _, err := f.pool.Exec(ctx, `INSERT INTO events (ca_id, kind, detail) VALUES ($1, $2, jsonb_build_object('serial', $3::text))`,
			f.caID, "certificate."+st, r.Serial); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

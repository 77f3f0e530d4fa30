package syncsvc_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
)

// BenchmarkDrainBacklog measures how long an agent that comes back online
// with 100,000 records in its outbox takes to get them all applied in
// Postgres (through mosquitto, one control plane consumer): one op is one
// whole drain; records/s is reported beside it.
func BenchmarkDrainBacklog(b *testing.B) {
	const backlog = 100_000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		bin := cptest.BuildAgent(b)
		e := cptest.Start(b, nil)
		m := mosquittoFor(b, e)
		stop := startConsumer(b, e, m, "cp-bench")
		a := newAgent(b, bin, e, m, fmt.Sprintf("gw-drain-%d", i), "keystore:\n  backend: file\n  file:\n    passphrase:\n      value: bench", nil)
		a.Run("selftest", "--records", fmt.Sprint(backlog), "--prefix", "drain")
		b.StartTimer()
		start := time.Now()
		a.Start()
		for {
			var n int
			if err := e.App.Pool.QueryRow(context.Background(), `SELECT count(*) FROM sync_records WHERE dms_id = $1`, uuid.MustParse(a.DMSID)).Scan(&n); err != nil {
				b.Fatal(err)
			}
			if n == backlog {
				break
			}
			if time.Since(start) > 10*time.Minute {
				b.Fatalf("drained %d of %d in 10 minutes", n, backlog)
			}
			time.Sleep(50 * time.Millisecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(backlog)/elapsed.Seconds(), "records/s")
		stop()
		a.Kill(syscall.SIGTERM)
		b.StartTimer()
	}
}

package store

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"go.etcd.io/bbolt"
)

// benchPayload is the size of a typical sync record: a certificate or a
// CSR with its envelope.
const benchPayload = 1024

func openBench(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// commits returns the id of the last committed write transaction.
func commits(b *testing.B, s *Store) int {
	b.Helper()
	var id int
	if err := s.db.View(func(tx *bbolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		b.Fatal(err)
	}
	return id
}

func reportCommits(b *testing.B, s *Store, before int) {
	b.Helper()
	if n := commits(b, s) - before; n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "records/commit")
	}
}

// BenchmarkEnqueue measures durable enqueues (each one fsynced before it
// returns) of 1 KiB records: one writer through Enqueue (each call waits
// BatchDelay for company that never comes), 64 concurrent writers through
// Enqueue (sharing commits), and the naive baseline of one bbolt
// transaction per record.
func BenchmarkEnqueue(b *testing.B) {
	payload := make([]byte, benchPayload)
	ctx := context.Background()

	b.Run("durable-1writer", func(b *testing.B) {
		s := openBench(b)
		before := commits(b, s)
		b.ResetTimer()
		for i := range b.N {
			if err := s.Enqueue(ctx, OutboxRecord{ID: fmt.Sprint("r-", i), DeviceID: "dev", Payload: payload}); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		reportCommits(b, s, before)
	})

	b.Run("durable-64writers", func(b *testing.B) {
		s := openBench(b)
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((64 + procs - 1) / procs) // RunParallel starts parallelism*GOMAXPROCS goroutines
		var next atomic.Int64
		before := commits(b, s)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				id := next.Add(1)
				if err := s.Enqueue(ctx, OutboxRecord{ID: fmt.Sprint("r-", id), DeviceID: "dev", Payload: payload}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		reportCommits(b, s, before)
	})

	b.Run("single-tx-no-batch", func(b *testing.B) {
		s := openBench(b)
		before := commits(b, s)
		b.ResetTimer()
		for i := range b.N {
			rec := OutboxRecord{ID: fmt.Sprint("r-", i), DeviceID: "dev", Payload: payload}
			err := s.db.Update(func(tx *bbolt.Tx) error {
				_, err := enqueueTx(tx, rec.ID, encodeOutbox(rec, s.now()))
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		reportCommits(b, s, before)
	})
}

package store

import (
	"fmt"
	"os"
	"time"

	"go.etcd.io/bbolt"
)

// Stats is a snapshot for the status command and the metrics, read in one
// transaction.
type Stats struct {
	SchemaVersion uint64
	OutboxDepth   int
	// OutboxOldest is when the head of the outbox was enqueued; zero when
	// the outbox is empty.
	OutboxOldest time.Time
	// Enrollments counts queued enrollments by status; every status is
	// present.
	Enrollments map[EnrollmentStatus]int
	Issued      int
	SeenUpdates int
	// FileSize is the size of the file on disk; DataSize the part bbolt
	// uses (the rest is preallocated or free).
	FileSize int64
	DataSize int64
}

// Stats returns counters about the store. Its cost grows with the number
// of queued enrollments only (one index walk); the rest are lookups.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		if st.SchemaVersion, err = schemaVersion(tx); err != nil {
			return err
		}
		st.OutboxDepth = int(readCounter(tx, keyOutboxDepth))
		if st.OutboxOldest, _, err = oldestTx(tx); err != nil {
			return err
		}
		if st.Enrollments, err = countEnrollmentsTx(tx); err != nil {
			return err
		}
		st.Issued = int(readCounter(tx, keyIssuedCount))
		st.SeenUpdates = seenCountTx(tx)
		st.DataSize = tx.Size()
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("store: stats: %w", err)
	}
	if fi, err := os.Stat(s.path); err == nil {
		st.FileSize = fi.Size()
	}
	return st, nil
}

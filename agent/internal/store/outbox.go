package store

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Limits on outbox records, checked before anything is written.
const (
	// MaxRecordIDLen bounds record and device ids: they are keys, and a
	// UUID or a serial number is far shorter.
	MaxRecordIDLen = 256
	// MaxPayloadSize bounds one record: a sync record carries a CSR or a
	// certificate (a few KiB), and the MQTT link has a message size
	// limit of its own; larger payloads are a caller bug.
	MaxPayloadSize = 1 << 20
)

// OutboxRecord is one message for the control plane.
type OutboxRecord struct {
	// Seq is the record's position in the outbox, set by Peek; ignored
	// by Enqueue.
	Seq uint64
	// ID identifies the record end to end: the control plane acks by it,
	// and Enqueue ignores a second record with an ID already queued.
	ID string
	// DeviceID is the device the record is about (may be empty).
	DeviceID string
	// Payload is the serialized sync record, opaque to the store.
	Payload []byte
	// EnqueuedAt is set by Enqueue from Options.Now; ignored on input.
	EnqueuedAt time.Time
}

func validateRecord(rec OutboxRecord) error {
	switch {
	case rec.ID == "":
		return fmt.Errorf("%w: outbox record without id", ErrInvalidArgument)
	case len(rec.ID) > MaxRecordIDLen:
		return fmt.Errorf("%w: outbox record id is %d bytes, limit %d", ErrInvalidArgument, len(rec.ID), MaxRecordIDLen)
	case len(rec.DeviceID) > MaxRecordIDLen:
		return fmt.Errorf("%w: outbox device id is %d bytes, limit %d", ErrInvalidArgument, len(rec.DeviceID), MaxRecordIDLen)
	case len(rec.Payload) > MaxPayloadSize:
		return fmt.Errorf("%w: outbox payload is %d bytes, limit %d", ErrInvalidArgument, len(rec.Payload), MaxPayloadSize)
	}
	return nil
}

// outbox value: format, enqueued-at (Unix ns), id, device id, payload.
func encodeOutbox(rec OutboxRecord, now time.Time) []byte {
	e := newEncoder(len(rec.ID) + len(rec.DeviceID) + len(rec.Payload) + 16)
	e.timeNanos(now)
	e.str(rec.ID)
	e.str(rec.DeviceID)
	e.rest(rec.Payload)
	return e.b
}

func decodeOutbox(seq uint64, v []byte) (OutboxRecord, error) {
	d := newDecoder("outbox record", v)
	rec := OutboxRecord{Seq: seq}
	rec.EnqueuedAt = d.timeNanos("enqueued_at")
	rec.ID = d.str("id")
	rec.DeviceID = d.str("device_id")
	rec.Payload = d.rest()
	if err := d.done("outbox record"); err != nil {
		return OutboxRecord{}, fmt.Errorf("store: seq %d: %w", seq, err)
	}
	return rec, nil
}

// enqueueTx adds one encoded record unless its id is queued already.
func enqueueTx(tx *bbolt.Tx, id string, val []byte) (added bool, err error) {
	ids := tx.Bucket(bucketOutboxIDs)
	if ids.Get([]byte(id)) != nil {
		return false, nil
	}
	ob := tx.Bucket(bucketOutbox)
	// Keys only ever grow: pack pages fuller than bbolt's default of
	// half, which suits random inserts.
	ob.FillPercent = 0.9
	seq, err := ob.NextSequence()
	if err != nil {
		return false, err
	}
	key := u64key(seq)
	if err := ob.Put(key, val); err != nil {
		return false, err
	}
	if err := ids.Put([]byte(id), key); err != nil {
		return false, err
	}
	_, err = addCounter(tx, keyOutboxDepth, 1)
	return err == nil, err
}

// Enqueue appends rec to the outbox. When it returns nil the record is on
// stable storage. Concurrent calls share commits (bbolt DB.Batch), so a
// call takes up to Options.BatchDelay plus one commit. A record whose ID is
// already in the outbox is ignored and Enqueue returns nil.
//
// ctx is checked before the record is handed to the batch; after that,
// Enqueue waits for the commit, so that a nil error always means durable
// and any other error means not written.
func (s *Store) Enqueue(ctx context.Context, rec OutboxRecord) error {
	if err := validateRecord(rec); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	val := encodeOutbox(rec, s.now())
	// Batch may run the function more than once (on retry after another
	// call in the batch failed); enqueueTx is idempotent.
	err := s.batch(func(tx *bbolt.Tx) error {
		_, err := enqueueTx(tx, rec.ID, val)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: enqueue %q: %w", rec.ID, err)
	}
	return nil
}

// EnqueueMany appends recs in order in one transaction: all of them or
// none. Records whose ID is already queued, or repeated within recs, are
// skipped.
func (s *Store) EnqueueMany(ctx context.Context, recs []OutboxRecord) error {
	for _, rec := range recs {
		if err := validateRecord(rec); err != nil {
			return err
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	vals := make([][]byte, len(recs))
	for i, rec := range recs {
		vals[i] = encodeOutbox(rec, now)
	}
	err := s.update(func(tx *bbolt.Tx) error {
		for i, rec := range recs {
			if _, err := enqueueTx(tx, rec.ID, vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: enqueue %d records: %w", len(recs), err)
	}
	return nil
}

// Peek returns up to n records from the head of the outbox, oldest first,
// without removing them; the payloads are copies the caller may keep.
// Records leave the outbox only through Ack.
func (s *Store) Peek(n int) ([]OutboxRecord, error) {
	return s.PeekAfter(0, n)
}

// PeekAfter returns up to n records with Seq > after, oldest first. A sync
// loop that keeps several records in flight passes the Seq of the last
// record it sent.
func (s *Store) PeekAfter(after uint64, n int) ([]OutboxRecord, error) {
	if n <= 0 {
		return nil, nil
	}
	var out []OutboxRecord
	err := s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Seek(u64key(after + 1)); k != nil && len(out) < n; k, v = c.Next() {
			seq, ok := getU64(k)
			if !ok {
				return fmt.Errorf("%w: outbox key is %d bytes, want 8", ErrCorruptValue, len(k))
			}
			rec, err := decodeOutbox(seq, v)
			if err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: peek: %w", err)
	}
	return out, nil
}

// Ack deletes the records with the given ids in one transaction and
// returns how many it deleted; unknown (or already acked) ids are ignored.
// Every Ack is a commit and an fsync: a sync loop should pass the ids of
// all the acks it has received at once rather than call Ack per id.
func (s *Store) Ack(ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	deleted := 0
	err := s.update(func(tx *bbolt.Tx) error {
		deleted = 0
		idx, ob := tx.Bucket(bucketOutboxIDs), tx.Bucket(bucketOutbox)
		for _, id := range ids {
			key := idx.Get([]byte(id))
			if key == nil {
				continue
			}
			// key points into the page that the deletes below may
			// change: copy it first.
			key = append([]byte(nil), key...)
			if err := ob.Delete(key); err != nil {
				return err
			}
			if err := idx.Delete([]byte(id)); err != nil {
				return err
			}
			deleted++
		}
		if deleted == 0 {
			return nil
		}
		_, err := addCounter(tx, keyOutboxDepth, -int64(deleted))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: ack: %w", err)
	}
	return deleted, nil
}

// Depth returns the number of records in the outbox. It reads a counter
// kept in the same transactions as the records, so it costs one lookup.
func (s *Store) Depth() (int, error) {
	var n uint64
	err := s.view(func(tx *bbolt.Tx) error {
		n = readCounter(tx, keyOutboxDepth)
		return nil
	})
	return int(n), err
}

// OldestEnqueuedAt returns when the record at the head of the outbox was
// enqueued; ok is false when the outbox is empty.
func (s *Store) OldestEnqueuedAt() (t time.Time, ok bool, err error) {
	err = s.view(func(tx *bbolt.Tx) error {
		t, ok, err = oldestTx(tx)
		return err
	})
	return t, ok, err
}

func oldestTx(tx *bbolt.Tx) (time.Time, bool, error) {
	k, v := tx.Bucket(bucketOutbox).Cursor().First()
	if k == nil {
		return time.Time{}, false, nil
	}
	d := newDecoder("outbox record", v)
	t := d.timeNanos("enqueued_at")
	if d.err != nil {
		return time.Time{}, false, fmt.Errorf("store: %w", d.err)
	}
	return t, true, nil
}

package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

// IssuedRecord is a certificate the agent issued itself in local mode,
// kept for the quota and until the registry has it.
type IssuedRecord struct {
	// Serial is the normalized serial (see PutIssued), set by GetIssued.
	Serial string
	// IssuedAt is when it was issued; PutIssued uses Options.Now when it
	// is zero. CountIssuedSince counts by it.
	IssuedAt time.Time
	// Data is opaque to the store (the certificate, its device, ...).
	Data []byte
}

// maxSerialHex is 20 octets (RFC 5280 4.1.2.2) in hex, with room for a
// sign octet.
const maxSerialHex = 42

// normalizeSerial returns serial as lowercase hex without leading zeros,
// the form big.Int.Text(16) gives, so "00AB" and "ab" are the same
// certificate.
func normalizeSerial(serial string) (string, error) {
	s := strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(serial, "0x"), "0X"))
	if s == "" || len(s) > maxSerialHex {
		return "", fmt.Errorf("%w: serial %q must be 1 to %d hex digits", ErrInvalidArgument, serial, maxSerialHex)
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("%w: serial %q is not hex", ErrInvalidArgument, serial)
		}
	}
	if s = strings.TrimLeft(s, "0"); s == "" {
		s = "0"
	}
	return s, nil
}

func encodeIssued(r IssuedRecord) []byte {
	e := newEncoder(len(r.Data) + 10)
	e.timeNanos(r.IssuedAt)
	e.rest(r.Data)
	return e.b
}

func decodeIssued(serial string, v []byte) (IssuedRecord, error) {
	d := newDecoder("issued record", v)
	r := IssuedRecord{Serial: serial}
	r.IssuedAt = d.timeNanos("issued_at")
	r.Data = d.rest()
	if err := d.done("issued record"); err != nil {
		return IssuedRecord{}, fmt.Errorf("store: issued %s: %w", serial, err)
	}
	return r, nil
}

func issuedTimeKey(t time.Time, serial string) []byte {
	return append(timeKey(t), serial...)
}

// PutIssued records a locally issued certificate under its serial (hex,
// any case, optional 0x; stored lowercase without leading zeros),
// replacing an earlier record with the same serial. The record and its
// issued-at index entry are written in one transaction.
func (s *Store) PutIssued(serial string, rec IssuedRecord) error {
	serial, err := normalizeSerial(serial)
	if err != nil {
		return err
	}
	if rec.IssuedAt.IsZero() {
		rec.IssuedAt = s.now()
	}
	val := encodeIssued(rec)
	err = s.update(func(tx *bbolt.Tx) error { return putIssuedTx(tx, serial, rec, val) })
	if err != nil {
		return fmt.Errorf("store: put issued %s: %w", serial, err)
	}
	return nil
}

// putIssuedTx stores an issued record (serial normalized, val its
// encoding) in tx; idempotent.
func putIssuedTx(tx *bbolt.Tx, serial string, rec IssuedRecord, val []byte) error {
	b, idx := tx.Bucket(bucketIssued), tx.Bucket(bucketIssuedByTime)
	if old := b.Get([]byte(serial)); old != nil {
		prev, err := decodeIssued(serial, old)
		if err != nil {
			return err
		}
		if err := idx.Delete(issuedTimeKey(prev.IssuedAt, serial)); err != nil {
			return err
		}
	} else if _, err := addCounter(tx, keyIssuedCount, 1); err != nil {
		return err
	}
	if err := b.Put([]byte(serial), val); err != nil {
		return err
	}
	return idx.Put(issuedTimeKey(rec.IssuedAt, serial), nil)
}

// EnqueueIssued records a certificate the agent issued (local mode) and
// queues its record for the control plane, in one commit shared with
// concurrent callers: when it returns nil, both are durable.
func (s *Store) EnqueueIssued(ctx context.Context, rec OutboxRecord, serial string, issued IssuedRecord) error {
	if err := validateRecord(rec); err != nil {
		return err
	}
	serial, err := normalizeSerial(serial)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	if issued.IssuedAt.IsZero() {
		issued.IssuedAt = now
	}
	ival, oval := encodeIssued(issued), encodeOutbox(rec, now)
	err = s.batch(func(tx *bbolt.Tx) error {
		if err := putIssuedTx(tx, serial, issued, ival); err != nil {
			return err
		}
		_, err := enqueueTx(tx, rec.ID, oval)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: enqueue issued %s: %w", serial, err)
	}
	return nil
}

// GetIssued returns the record for serial, or ErrNotFound.
func (s *Store) GetIssued(serial string) (IssuedRecord, error) {
	serial, err := normalizeSerial(serial)
	if err != nil {
		return IssuedRecord{}, err
	}
	var r IssuedRecord
	err = s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketIssued).Get([]byte(serial))
		if v == nil {
			return ErrNotFound
		}
		var err error
		r, err = decodeIssued(serial, v)
		return err
	})
	if err != nil {
		return IssuedRecord{}, fmt.Errorf("store: get issued %s: %w", serial, err)
	}
	return r, nil
}

// CountIssuedSince returns how many recorded certificates were issued at
// or after t, for the local issuance quota. It walks the issued-at index
// from t onwards, so it costs the number of certificates counted (the
// quota window), not the number ever issued.
func (s *Store) CountIssuedSince(t time.Time) (int, error) {
	n := 0
	err := s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketIssuedByTime).Cursor()
		for k, _ := c.Seek(timeKey(t)); k != nil; k, _ = c.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: count issued: %w", err)
	}
	return n, nil
}

// PruneIssuedBefore deletes the records of certificates issued before t
// (once the registry has them and they are outside every quota window),
// in one transaction, and returns how many it deleted.
func (s *Store) PruneIssuedBefore(t time.Time) (int, error) {
	n := 0
	err := s.update(func(tx *bbolt.Tx) error {
		n = 0
		b, idx := tx.Bucket(bucketIssued), tx.Bucket(bucketIssuedByTime)
		end := timeKey(t)
		c := idx.Cursor()
		for k, _ := c.First(); k != nil && string(k[:min(len(k), 8)]) < string(end); k, _ = c.First() {
			if len(k) <= 8 {
				return fmt.Errorf("%w: issued index key is %d bytes", ErrCorruptValue, len(k))
			}
			serial := string(k[8:])
			if err := c.Delete(); err != nil {
				return err
			}
			if err := b.Delete([]byte(serial)); err != nil {
				return err
			}
			n++
		}
		if n == 0 {
			return nil
		}
		_, err := addCounter(tx, keyIssuedCount, -int64(n))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: prune issued: %w", err)
	}
	return n, nil
}

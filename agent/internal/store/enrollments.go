package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// EnrollmentStatus is where a queued EST enrollment stands.
type EnrollmentStatus string

// Enrollment statuses.
const (
	EnrollmentPending  EnrollmentStatus = "pending"  // CSR stored, waiting for the control plane
	EnrollmentIssued   EnrollmentStatus = "issued"   // certificate received, the device can collect it
	EnrollmentRejected EnrollmentStatus = "rejected" // the control plane refused it; Reason says why
)

// EnrollmentStatuses lists every status, in Stats order.
var EnrollmentStatuses = []EnrollmentStatus{EnrollmentPending, EnrollmentIssued, EnrollmentRejected}

func (st EnrollmentStatus) valid() bool {
	switch st {
	case EnrollmentPending, EnrollmentIssued, EnrollmentRejected:
		return true
	}
	return false
}

// Enrollment is a queued EST enrollment (RFC 7030 4.2.3: the device got
// 202 Accepted and polls with the same request).
type Enrollment struct {
	RequestID   string
	DeviceID    string
	Status      EnrollmentStatus
	CSR         []byte // DER
	Certificate []byte // DER, once issued
	Reason      string // why it was rejected; safe to show the device
	// CreatedAt is kept from the first Put when left zero; UpdatedAt is
	// set by every Put.
	CreatedAt time.Time
	UpdatedAt time.Time
}

func encodeEnrollment(e Enrollment) []byte {
	enc := newEncoder(len(e.RequestID) + len(e.DeviceID) + len(e.CSR) + len(e.Certificate) + len(e.Reason) + 40)
	enc.str(string(e.Status))
	enc.timeNanos(e.CreatedAt)
	enc.timeNanos(e.UpdatedAt)
	enc.str(e.DeviceID)
	enc.bytes(e.CSR)
	enc.bytes(e.Certificate)
	enc.str(e.Reason)
	return enc.b
}

func decodeEnrollment(requestID string, v []byte) (Enrollment, error) {
	d := newDecoder("enrollment", v)
	e := Enrollment{RequestID: requestID}
	e.Status = EnrollmentStatus(d.str("status"))
	e.CreatedAt = d.timeNanos("created_at")
	e.UpdatedAt = d.timeNanos("updated_at")
	e.DeviceID = d.str("device_id")
	e.CSR = d.bytes("csr")
	e.Certificate = d.bytes("certificate")
	e.Reason = d.str("reason")
	if err := d.done("enrollment"); err != nil {
		return Enrollment{}, fmt.Errorf("store: enrollment %q: %w", requestID, err)
	}
	return e, nil
}

// statusKey orders an enrollment within its status by creation time, so
// ListEnrollments returns the oldest pending request first.
func statusKey(st EnrollmentStatus, created time.Time, requestID string) []byte {
	k := make([]byte, 0, len(st)+1+8+len(requestID))
	k = append(k, st...)
	k = append(k, 0)
	k = append(k, timeKey(created)...)
	return append(k, requestID...)
}

func statusPrefix(st EnrollmentStatus) []byte { return append([]byte(st), 0) }

// PutEnrollment stores e, replacing the enrollment with the same
// RequestID, in one transaction.
func (s *Store) PutEnrollment(e Enrollment) error {
	if err := checkEnrollment(e); err != nil {
		return err
	}
	now := s.now()
	err := s.update(func(tx *bbolt.Tx) error { return putEnrollmentTx(tx, e, now) })
	if err != nil {
		return fmt.Errorf("store: put enrollment %q: %w", e.RequestID, err)
	}
	return nil
}

func checkEnrollment(e Enrollment) error {
	switch {
	case e.RequestID == "" || len(e.RequestID) > MaxRecordIDLen:
		return fmt.Errorf("%w: enrollment request id must be 1 to %d bytes", ErrInvalidArgument, MaxRecordIDLen)
	case !e.Status.valid():
		return fmt.Errorf("%w: enrollment status %q", ErrInvalidArgument, e.Status)
	}
	return nil
}

// putEnrollmentTx stores e in tx (e is a copy: the caller's survives a
// batch retry unchanged); idempotent.
func putEnrollmentTx(tx *bbolt.Tx, e Enrollment, now time.Time) error {
	b, idx := tx.Bucket(bucketEnrollments), tx.Bucket(bucketEnrollmentsByStatus)
	if old := b.Get([]byte(e.RequestID)); old != nil {
		prev, err := decodeEnrollment(e.RequestID, old)
		if err != nil {
			return err
		}
		if e.CreatedAt.IsZero() {
			e.CreatedAt = prev.CreatedAt
		}
		if err := idx.Delete(statusKey(prev.Status, prev.CreatedAt, prev.RequestID)); err != nil {
			return err
		}
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = now
	}
	e.UpdatedAt = now
	if err := b.Put([]byte(e.RequestID), encodeEnrollment(e)); err != nil {
		return err
	}
	return idx.Put(statusKey(e.Status, e.CreatedAt, e.RequestID), nil)
}

// EnqueueEnrollment stores enrollment e and queues rec (its request to
// the control plane) in one commit shared with concurrent callers: when it
// returns nil, both are durable.
func (s *Store) EnqueueEnrollment(ctx context.Context, e Enrollment, rec OutboxRecord) error {
	if err := checkEnrollment(e); err != nil {
		return err
	}
	if err := validateRecord(rec); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	oval := encodeOutbox(rec, now)
	err := s.batch(func(tx *bbolt.Tx) error {
		if err := putEnrollmentTx(tx, e, now); err != nil {
			return err
		}
		_, err := enqueueTx(tx, rec.ID, oval)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: enqueue enrollment %q: %w", e.RequestID, err)
	}
	return nil
}

// GetEnrollment returns the enrollment with the given request id, or
// ErrNotFound.
func (s *Store) GetEnrollment(requestID string) (Enrollment, error) {
	var e Enrollment
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketEnrollments).Get([]byte(requestID))
		if v == nil {
			return ErrNotFound
		}
		var err error
		e, err = decodeEnrollment(requestID, v)
		return err
	})
	if err != nil {
		return Enrollment{}, fmt.Errorf("store: get enrollment %q: %w", requestID, err)
	}
	return e, nil
}

// DeleteEnrollment removes an enrollment (once the device has collected
// its certificate, or the rejection has been reported). It reports
// whether there was one.
func (s *Store) DeleteEnrollment(requestID string) (bool, error) {
	found := false
	err := s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketEnrollments)
		v := b.Get([]byte(requestID))
		found = v != nil
		if !found {
			return nil
		}
		prev, err := decodeEnrollment(requestID, v)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketEnrollmentsByStatus).Delete(statusKey(prev.Status, prev.CreatedAt, requestID)); err != nil {
			return err
		}
		return b.Delete([]byte(requestID))
	})
	if err != nil {
		return false, fmt.Errorf("store: delete enrollment %q: %w", requestID, err)
	}
	return found, nil
}

// ListEnrollments returns the enrollments with the given status, oldest
// first, through an index on (status, created-at): its cost is that of
// the enrollments returned, not of all of them.
func (s *Store) ListEnrollments(status EnrollmentStatus) ([]Enrollment, error) {
	if !status.valid() {
		return nil, fmt.Errorf("%w: enrollment status %q", ErrInvalidArgument, status)
	}
	var out []Enrollment
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketEnrollments)
		prefix := statusPrefix(status)
		c := tx.Bucket(bucketEnrollmentsByStatus).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) < len(prefix)+8 {
				return fmt.Errorf("%w: enrollment index key %q", ErrCorruptValue, k)
			}
			id := string(k[len(prefix)+8:])
			v := b.Get([]byte(id))
			if v == nil {
				return fmt.Errorf("%w: enrollment index names %q, which is missing", ErrCorruptValue, id)
			}
			e, err := decodeEnrollment(id, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list enrollments %s: %w", status, err)
	}
	return out, nil
}

// countEnrollmentsTx counts index entries per status.
func countEnrollmentsTx(tx *bbolt.Tx) (map[EnrollmentStatus]int, error) {
	out := make(map[EnrollmentStatus]int, len(EnrollmentStatuses))
	for _, st := range EnrollmentStatuses {
		out[st] = 0
	}
	err := tx.Bucket(bucketEnrollmentsByStatus).ForEach(func(k, _ []byte) error {
		i := bytes.IndexByte(k, 0)
		if i < 0 {
			return errors.New("enrollment index key without separator")
		}
		out[EnrollmentStatus(k[:i])]++
		return nil
	})
	return out, err
}

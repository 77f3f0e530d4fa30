package store

import (
	"fmt"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

// Revoked serials are what the control plane's Revocation updates told the
// agent, ahead of the next CRL, so it can refuse a revoked certificate's
// re-enrollment while offline. Each is a key of the revoked bucket: the CA
// id, a 0x00 byte, and the normalized serial (see normalizeSerial).

// revokedKey builds the key of serial (normalized) of caID.
func revokedKey(caID, serial string) []byte {
	k := make([]byte, 0, len(caID)+1+len(serial))
	k = append(k, caID...)
	k = append(k, 0)
	return append(k, serial...)
}

func checkCAID(caID string) error {
	switch {
	case caID == "" || len(caID) > MaxRecordIDLen:
		return fmt.Errorf("%w: CA id must be 1 to %d bytes", ErrInvalidArgument, MaxRecordIDLen)
	case strings.IndexByte(caID, 0) >= 0:
		return fmt.Errorf("%w: CA id %q contains a NUL byte", ErrInvalidArgument, caID)
	}
	return nil
}

// validCRLReason reports whether reason is an RFC 5280 5.3.1 CRLReason:
// 0 to 10, 7 being unassigned.
func validCRLReason(reason int) bool {
	return reason >= 0 && reason <= 10 && reason != 7
}

// revoked value: format, reason, revoked-at (Unix ns).
func encodeRevoked(reason int, at time.Time) []byte {
	e := newEncoder(12)
	e.uvarint(uint64(reason))
	e.timeNanos(at)
	return e.b
}

func decodeRevoked(v []byte) (reason int, at time.Time, err error) {
	d := newDecoder("revoked serial", v)
	r := d.uvarint("reason")
	at = d.timeNanos("revoked_at")
	if err := d.done("revoked serial"); err != nil {
		return 0, time.Time{}, err
	}
	if r > 10 || !validCRLReason(int(r)) {
		return 0, time.Time{}, fmt.Errorf("revoked serial: %w: reason %d", ErrCorruptValue, r)
	}
	return int(r), at, nil
}

// PutRevoked records that serial of the CA caID is revoked, for reason (an
// RFC 5280 CRLReason: 0 to 10 except 7) at at. The serial is hex (the
// sync protocol sends lowercase without leading zeros; other spellings are
// normalized as PutIssued does). Recording the same serial again is
// harmless and replaces the reason and time: a redelivered or corrected
// update.
func (s *Store) PutRevoked(caID, serial string, reason int, at time.Time) error {
	key, norm, err := revokedLookup(caID, serial)
	if err != nil {
		return err
	}
	if !validCRLReason(reason) {
		return fmt.Errorf("%w: revocation reason %d is not an RFC 5280 CRLReason", ErrInvalidArgument, reason)
	}
	val := encodeRevoked(reason, at)
	err = s.update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketRevoked).Put(key, val) })
	if err != nil {
		return fmt.Errorf("store: put revoked %s/%s: %w", caID, norm, err)
	}
	return nil
}

// IsRevoked reports whether PutRevoked recorded serial of caID. An
// invalid CA id or serial is ErrInvalidArgument. The answer rests on the
// key alone, so a damaged value still reads as revoked.
func (s *Store) IsRevoked(caID, serial string) (bool, error) {
	key, norm, err := revokedLookup(caID, serial)
	if err != nil {
		return false, err
	}
	found := false
	err = s.view(func(tx *bbolt.Tx) error {
		found = tx.Bucket(bucketRevoked).Get(key) != nil
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: is revoked %s/%s: %w", caID, norm, err)
	}
	return found, nil
}

// GetRevoked returns the reason and time PutRevoked recorded for serial of
// caID, or ErrNotFound.
func (s *Store) GetRevoked(caID, serial string) (reason int, at time.Time, err error) {
	key, norm, err := revokedLookup(caID, serial)
	if err != nil {
		return 0, time.Time{}, err
	}
	err = s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketRevoked).Get(key)
		if v == nil {
			return ErrNotFound
		}
		var err error
		reason, at, err = decodeRevoked(v)
		return err
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("store: get revoked %s/%s: %w", caID, norm, err)
	}
	return reason, at, nil
}

// revokedLookup checks caID and serial and returns the key and the
// normalized serial.
func revokedLookup(caID, serial string) (key []byte, norm string, err error) {
	if err := checkCAID(caID); err != nil {
		return nil, "", err
	}
	if norm, err = normalizeSerial(serial); err != nil {
		return nil, "", err
	}
	return revokedKey(caID, norm), norm, nil
}

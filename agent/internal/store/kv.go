package store

import (
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Well-known keys of the kv bucket.
const (
	KeyIdentityExpiry = "identity_expiry" // notAfter of the agent's DMS identity certificate
	KeyEdgeCAExpiry   = "edge_ca_expiry"  // notAfter of the delegated issuing CA (local mode)
	KeyLastSync       = "last_sync"       // last successful exchange with the control plane
)

// SetKV stores value under key, replacing what was there.
func (s *Store) SetKV(key string, value []byte) error {
	if key == "" || len(key) > MaxRecordIDLen {
		return fmt.Errorf("%w: kv key must be 1 to %d bytes", ErrInvalidArgument, MaxRecordIDLen)
	}
	e := newEncoder(len(value))
	e.rest(value)
	err := s.update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketKV).Put([]byte(key), e.b) })
	if err != nil {
		return fmt.Errorf("store: set %q: %w", key, err)
	}
	return nil
}

// GetKV returns the value under key, or ErrNotFound.
func (s *Store) GetKV(key string) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketKV).Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		d := newDecoder("kv value", v)
		out = d.rest()
		return d.done("kv value")
	})
	if err != nil {
		return nil, fmt.Errorf("store: get %q: %w", key, err)
	}
	return out, nil
}

// SetKVTime stores t (nanosecond precision) under key.
func (s *Store) SetKVTime(key string, t time.Time) error {
	return s.SetKV(key, u64key(uint64(nanos(t))))
}

// GetKVTime returns the time stored by SetKVTime under key; ok is false
// when there is none.
func (s *Store) GetKVTime(key string) (t time.Time, ok bool, err error) {
	v, err := s.GetKV(key)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return time.Time{}, false, nil
		}
		return time.Time{}, false, err
	}
	n, good := getU64(v)
	if !good {
		return time.Time{}, false, fmt.Errorf("store: get %q: %w: not a time", key, ErrCorruptValue)
	}
	if n == 0 {
		return time.Time{}, true, nil
	}
	return time.Unix(0, int64(n)).UTC(), true, nil
}

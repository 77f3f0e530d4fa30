package store

import (
	"bytes"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// What the control plane sends down the sync link. Every Put here is
// idempotent and refuses to go backwards (an older policy version, an
// older CRL), so a redelivered or reordered update is harmless even once
// MarkUpdateApplied has forgotten its id.

// Policy is the DMS policy the control plane sent, opaque to the store.
type Policy struct {
	Version   uint64
	Data      []byte
	UpdatedAt time.Time // set by PutPolicy
}

var keyPolicyCurrent = []byte("current")

// PutPolicy stores the policy unless the stored one has a higher version,
// and reports whether it stored it. The same version again replaces it
// (a redelivery).
func (s *Store) PutPolicy(version uint64, data []byte) (stored bool, err error) {
	now := s.now()
	err = s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketPolicy)
		if v := b.Get(keyPolicyCurrent); v != nil {
			cur, err := decodePolicy(v)
			if err != nil {
				return err
			}
			if cur.Version > version {
				stored = false
				return nil
			}
		}
		e := newEncoder(len(data) + 20)
		e.uvarint(version)
		e.timeNanos(now)
		e.rest(data)
		stored = true
		return b.Put(keyPolicyCurrent, e.b)
	})
	if err != nil {
		return false, fmt.Errorf("store: put policy: %w", err)
	}
	return stored, nil
}

// GetPolicy returns the stored policy, or ErrNotFound before the first
// one arrived.
func (s *Store) GetPolicy() (Policy, error) {
	var p Policy
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketPolicy).Get(keyPolicyCurrent)
		if v == nil {
			return ErrNotFound
		}
		var err error
		p, err = decodePolicy(v)
		return err
	})
	if err != nil {
		return Policy{}, fmt.Errorf("store: get policy: %w", err)
	}
	return p, nil
}

func decodePolicy(v []byte) (Policy, error) {
	d := newDecoder("policy", v)
	p := Policy{Version: d.uvarint("version"), UpdatedAt: d.timeNanos("updated_at"), Data: d.rest()}
	return p, d.done("policy")
}

// PutCABundle stores a CA bundle (PEM or DER, opaque) under name,
// replacing the previous one.
func (s *Store) PutCABundle(name string, bundle []byte) error {
	if name == "" || len(name) > MaxRecordIDLen {
		return fmt.Errorf("%w: CA bundle name must be 1 to %d bytes", ErrInvalidArgument, MaxRecordIDLen)
	}
	e := newEncoder(len(bundle))
	e.rest(bundle)
	err := s.update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketCABundles).Put([]byte(name), e.b) })
	if err != nil {
		return fmt.Errorf("store: put CA bundle %q: %w", name, err)
	}
	return nil
}

// GetCABundle returns the bundle stored under name, or ErrNotFound.
func (s *Store) GetCABundle(name string) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketCABundles).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		d := newDecoder("CA bundle", v)
		out = d.rest()
		return d.done("CA bundle")
	})
	if err != nil {
		return nil, fmt.Errorf("store: get CA bundle %q: %w", name, err)
	}
	return out, nil
}

// CABundleNames lists the stored bundle names in byte order.
func (s *Store) CABundleNames() ([]string, error) {
	var out []string
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketCABundles).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}

// CRL value: format, thisUpdate and nextUpdate (Unix seconds), DER.
func decodeCRL(v []byte) (der []byte, thisUpdate, nextUpdate time.Time, err error) {
	d := newDecoder("CRL", v)
	this, next := d.varint("this_update"), d.varint("next_update")
	der = d.rest()
	if err := d.done("CRL"); err != nil {
		return nil, time.Time{}, time.Time{}, err
	}
	return der, time.Unix(this, 0).UTC(), time.Unix(next, 0).UTC(), nil
}

// PutCRL caches the CRL (DER) of the CA caID so revoked devices are
// refused while offline. It keeps the stored CRL when that one has a later
// thisUpdate, and reports whether it stored this one. Times are kept to
// the second, as in the CRL itself.
func (s *Store) PutCRL(caID string, der []byte, thisUpdate, nextUpdate time.Time) (stored bool, err error) {
	if caID == "" || len(caID) > MaxRecordIDLen {
		return false, fmt.Errorf("%w: CA id must be 1 to %d bytes", ErrInvalidArgument, MaxRecordIDLen)
	}
	e := newEncoder(len(der) + 20)
	e.varint(thisUpdate.Unix())
	e.varint(nextUpdate.Unix())
	e.rest(der)
	err = s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketCRLs)
		if v := b.Get([]byte(caID)); v != nil {
			_, curThis, _, err := decodeCRL(v)
			if err != nil {
				return err
			}
			if curThis.Unix() > thisUpdate.Unix() {
				stored = false
				return nil
			}
		}
		stored = true
		return b.Put([]byte(caID), e.b)
	})
	if err != nil {
		return false, fmt.Errorf("store: put CRL %q: %w", caID, err)
	}
	return stored, nil
}

// GetCRL returns the cached CRL of caID with its thisUpdate and
// nextUpdate, or ErrNotFound.
func (s *Store) GetCRL(caID string) (der []byte, thisUpdate, nextUpdate time.Time, err error) {
	err = s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketCRLs).Get([]byte(caID))
		if v == nil {
			return ErrNotFound
		}
		var err error
		der, thisUpdate, nextUpdate, err = decodeCRL(v)
		return err
	})
	if err != nil {
		return nil, time.Time{}, time.Time{}, fmt.Errorf("store: get CRL %q: %w", caID, err)
	}
	return der, thisUpdate, nextUpdate, nil
}

// Keys of the inbox bucket. seen/<id> holds the id's sequence number and
// order/<seq> the id, so the oldest id is the first order/ key.
var (
	keyInboxPosition  = []byte("position")
	keyInboxSeenCount = []byte("seen_count")
	prefixInboxSeen   = []byte("seen/")
	prefixInboxOrder  = []byte("order/")
)

// MarkUpdateApplied records that the down update updateID has been
// applied and makes it the inbox position (LastAppliedUpdate). It returns
// alreadyApplied true, and changes nothing, when the id was marked before.
//
// The set of ids is bounded: it keeps the last Options.SeenUpdatesLimit
// (default 10,000) distinct ids and forgets the oldest past that, so the
// file does not grow with every update over years. An update redelivered
// after 10,000 newer ones would be applied again; the Put methods above
// refuse to go backwards, which makes that harmless.
//
// Call it after the update's effect is stored: a crash in between makes
// the update look new on redelivery, and it is applied again, which the
// Put methods absorb.
func (s *Store) MarkUpdateApplied(updateID string) (alreadyApplied bool, err error) {
	if updateID == "" || len(updateID) > MaxRecordIDLen {
		return false, fmt.Errorf("%w: update id must be 1 to %d bytes", ErrInvalidArgument, MaxRecordIDLen)
	}
	seenKey := append(bytes.Clone(prefixInboxSeen), updateID...)
	err = s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketInbox)
		if alreadyApplied = b.Get(seenKey) != nil; alreadyApplied {
			return nil
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := b.Put(seenKey, u64key(seq)); err != nil {
			return err
		}
		if err := b.Put(append(bytes.Clone(prefixInboxOrder), u64key(seq)...), []byte(updateID)); err != nil {
			return err
		}
		if err := b.Put(keyInboxPosition, []byte(updateID)); err != nil {
			return err
		}
		count, _ := getU64(b.Get(keyInboxSeenCount))
		count++
		for ; count > uint64(s.seenLimit); count-- {
			if err := evictOldestSeen(b); err != nil {
				return err
			}
		}
		return b.Put(keyInboxSeenCount, u64key(count))
	})
	if err != nil {
		return false, fmt.Errorf("store: mark update %q applied: %w", updateID, err)
	}
	return alreadyApplied, nil
}

func evictOldestSeen(b *bbolt.Bucket) error {
	c := b.Cursor()
	k, v := c.Seek(prefixInboxOrder)
	if k == nil || !bytes.HasPrefix(k, prefixInboxOrder) {
		return fmt.Errorf("%w: inbox seen_count above the ids it has", ErrCorruptValue)
	}
	seen := append(bytes.Clone(prefixInboxSeen), v...)
	if err := c.Delete(); err != nil {
		return err
	}
	return b.Delete(seen)
}

// LastAppliedUpdate returns the id most recently passed to
// MarkUpdateApplied for the first time, or ErrNotFound.
func (s *Store) LastAppliedUpdate() (string, error) {
	var id string
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketInbox).Get(keyInboxPosition)
		if v == nil {
			return ErrNotFound
		}
		id = string(v)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("store: last applied update: %w", err)
	}
	return id, nil
}

func seenCountTx(tx *bbolt.Tx) int {
	n, _ := getU64(tx.Bucket(bucketInbox).Get(keyInboxSeenCount))
	return int(n)
}

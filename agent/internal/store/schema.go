package store

import (
	"errors"
	"fmt"

	"go.etcd.io/bbolt"
)

// SchemaVersion is the layout this package reads and writes: the number of
// entries in migrations.
//
// Changelog:
//   - 1 (2026-11-22): first layout; buckets meta, outbox, outbox_ids,
//     enrollments, enrollments_by_status, inbox, policy, ca_bundles, crls,
//     issued, issued_by_time, kv.
//   - 2 (2026-11-29): buckets secrets, secrets_unused (enrollment
//     secrets) and revoked (revoked serials learnt from the control plane).
const SchemaVersion = 2

// Bucket names. The meta bucket holds the schema version and the counters
// that make Depth and the issued count O(1).
var (
	bucketMeta                = []byte("meta")
	bucketOutbox              = []byte("outbox")                // 8-byte big-endian sequence -> outbox value
	bucketOutboxIDs           = []byte("outbox_ids")            // record id -> sequence key
	bucketEnrollments         = []byte("enrollments")           // request id -> enrollment value
	bucketEnrollmentsByStatus = []byte("enrollments_by_status") // status 0x00 created-at 0x00 request id -> nil
	bucketInbox               = []byte("inbox")                 // position, seen/<id>, order/<seq>, seen_count
	bucketPolicy              = []byte("policy")                // "current" -> policy value
	bucketCABundles           = []byte("ca_bundles")            // name -> bundle value
	bucketCRLs                = []byte("crls")                  // CA id -> CRL value
	bucketIssued              = []byte("issued")                // serial (lowercase hex) -> issued value
	bucketIssuedByTime        = []byte("issued_by_time")        // time key + serial -> nil
	bucketKV                  = []byte("kv")                    // key -> value
	bucketSecrets             = []byte("secrets")               // username -> secret value (v2)
	bucketSecretsUnused       = []byte("secrets_unused")        // expiry key + username -> nil, unused secrets only (v2)
	bucketRevoked             = []byte("revoked")               // CA id 0x00 serial -> revoked value (v2)
)

// allBuckets are the buckets every method may assume exist once Open has
// run the migrations.
var allBuckets = [][]byte{
	bucketMeta, bucketOutbox, bucketOutboxIDs, bucketEnrollments,
	bucketEnrollmentsByStatus, bucketInbox, bucketPolicy, bucketCABundles,
	bucketCRLs, bucketIssued, bucketIssuedByTime, bucketKV,
	bucketSecrets, bucketSecretsUnused, bucketRevoked,
}

// bucketsV2 are the buckets schema version 2 added.
var bucketsV2 = [][]byte{bucketSecrets, bucketSecretsUnused, bucketRevoked}

// Keys in the meta bucket.
var (
	keySchemaVersion = []byte("schema_version") // 8-byte big-endian
	keyOutboxDepth   = []byte("outbox_depth")   // 8-byte big-endian count of outbox records
	keyIssuedCount   = []byte("issued_count")   // 8-byte big-endian count of issued records
)

// migrations[i] takes the database from schema version i to i+1. Each runs
// in its own transaction, which also stores the new version, so a crash
// mid-upgrade resumes at the first step that did not commit. A file with
// no meta/schema_version is version 0: a new, empty file, or one written
// before versioning. Tests replace this variable to exercise the
// framework; append to it, never edit a released step.
var migrations = []func(tx *bbolt.Tx) error{
	migrateCreateV1,
	migrateV1toV2,
}

// migrateCreateV1 creates the buckets of a new file: every bucket of
// allBuckets, so a new file has the whole current layout after this step
// and the later steps find their buckets already there. A file written at
// version 1 lacks the later buckets; their own steps create them.
func migrateCreateV1(tx *bbolt.Tx) error {
	return createBuckets(tx, allBuckets)
}

// migrateV1toV2 creates the enrollment secret and revoked serial buckets.
func migrateV1toV2(tx *bbolt.Tx) error {
	return createBuckets(tx, bucketsV2)
}

func createBuckets(tx *bbolt.Tx, names [][]byte) error {
	for _, name := range names {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("creating bucket %s: %w", name, err)
		}
	}
	return nil
}

// ErrSchemaTooNew is returned by Open for a file written by a newer
// binary. The file is left as it is: this binary cannot know what the
// newer layout means, and a downgrade must not damage it.
var ErrSchemaTooNew = errors.New("store: database schema is newer than this binary supports")

// schemaVersion reads meta/schema_version; a missing bucket or key is 0.
func schemaVersion(tx *bbolt.Tx) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, nil
	}
	raw := meta.Get(keySchemaVersion)
	if raw == nil {
		return 0, nil
	}
	v, ok := getU64(raw)
	if !ok {
		return 0, fmt.Errorf("%w: meta/schema_version is %d bytes, want 8", ErrCorruptValue, len(raw))
	}
	return v, nil
}

func setSchemaVersion(tx *bbolt.Tx, v uint64) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	return meta.Put(keySchemaVersion, u64key(v))
}

// migrate brings the database to len(migrations), one transaction per
// step. It returns the version it found.
func (s *Store) migrate() (from uint64, err error) {
	target := uint64(len(migrations))
	if err := s.db.View(func(tx *bbolt.Tx) error {
		from, err = schemaVersion(tx)
		return err
	}); err != nil {
		return 0, fmt.Errorf("store: reading schema version: %w", err)
	}
	if from > target {
		return from, fmt.Errorf("%w: %s has schema version %d, this binary knows up to %d; refusing to open it (upgrade the agent, or move the file away)",
			ErrSchemaTooNew, s.path, from, target)
	}
	for v := from; v < target; v++ {
		step := migrations[v]
		err := s.db.Update(func(tx *bbolt.Tx) error {
			// Re-read inside the transaction: the version must not
			// have moved since the step was chosen.
			cur, err := schemaVersion(tx)
			if err != nil {
				return err
			}
			if cur != v {
				return fmt.Errorf("schema version changed under the migration: %d, want %d", cur, v)
			}
			if err := step(tx); err != nil {
				return err
			}
			return setSchemaVersion(tx, v+1)
		})
		if err != nil {
			return from, fmt.Errorf("store: migrating schema %d -> %d: %w", v, v+1, err)
		}
		s.log.Info("store: schema migrated", logPath, s.path, logFromVersion, v, logToVersion, v+1)
	}
	// Every method assumes its buckets exist.
	return from, s.db.View(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("store: bucket %s missing after migrating to schema %d", name, target)
			}
		}
		return nil
	})
}

// addCounter adds delta to an 8-byte counter in the meta bucket, clamping
// at zero, and returns the new value.
func addCounter(tx *bbolt.Tx, key []byte, delta int64) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	cur, _ := getU64(meta.Get(key))
	var next uint64
	switch {
	case delta >= 0:
		next = cur + uint64(delta)
	case uint64(-delta) > cur:
		next = 0
	default:
		next = cur - uint64(-delta)
	}
	return next, meta.Put(key, u64key(next))
}

func readCounter(tx *bbolt.Tx, key []byte) uint64 {
	v, _ := getU64(tx.Bucket(bucketMeta).Get(key))
	return v
}

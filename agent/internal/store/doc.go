// Package store is the agent's durable local state: the sync outbox, queued
// EST enrollments, certificates issued in local mode, and what the control
// plane sent down (policy, CA bundles, CRLs, applied update ids). It is one
// bbolt file, opened by one process at a time.
//
// # Durability model
//
// Every write is a bbolt read-write transaction, and bbolt fsyncs
// (fdatasync) the file on every commit before the commit returns: first the
// data pages, then the meta page that makes them reachable. A method that
// writes returns only after that, so what it wrote is on stable storage
// when it returns nil.
//
// Enqueue goes through bbolt's DB.Batch: concurrent callers that arrive
// within Options.BatchDelay (default 2ms) of each other, up to
// Options.BatchSize (default 256) of them, share one transaction and one
// fsync, and each of them returns only after that shared commit. A single
// caller therefore waits BatchDelay plus one commit; 64 concurrent callers
// get many times the throughput of one transaction per record
// (BenchmarkEnqueue). EnqueueMany writes a whole slice in one transaction.
//
// A record is in the outbox once Enqueue (or EnqueueMany) has returned nil,
// and stays there, across restarts and power loss, until Ack deletes it by
// id. Ack is one transaction; a crash before it commits leaves the records
// in the outbox and they are sent again, which the control plane's
// idempotent consumer absorbs (at-least-once delivery, exactly-once
// effect). Enqueue is idempotent by record id while the record is in the
// outbox; once it has been acked, the same id can be enqueued again.
//
// # Power-loss guarantee
//
// After a power cut at any moment, the file opens to the state of the last
// committed transaction: every write whose method returned nil is present,
// no write is half applied (bbolt's copy-on-write pages and its two
// alternating meta pages make a commit atomic), and a write whose method
// had not returned may or may not be present, as a whole. This rests on the
// storage honouring fsync: a disk or SD card with a volatile write cache
// that ignores flushes can lose acknowledged writes, and no software on top
// can prevent that. A newly created file's directory entry is fsynced too.
//
// The tests check the process-crash half of this by SIGKILLing a writer
// child at random moments and verifying every record it had reported as
// enqueued (TestCrashDurability). A kill keeps the page cache, so the
// fsync half is bbolt's and the hardware's, not something a unit test can
// show.
//
// # Corruption
//
// bbolt has no checksums on data pages, so Open checks the file: the meta
// pages (bbolt), that the file is as long as its meta page says
// (truncation), and, when the file is small enough to do it quickly or
// Options.VerifyOnOpen says so, a full walk of every bucket plus
// bbolt's Tx.Check. A file that fails is moved aside to
// <path>.corrupt-<unix seconds> (never deleted) and Open returns a
// *CorruptError; the agent decides whether to start again with OpenFresh.
//
// # Schema
//
// The schema version is meta/schema_version. Open runs the migrations from
// the stored version to SchemaVersion, one transaction each, each one
// storing its new version in the same transaction, so a crash during an
// upgrade resumes at the step that did not commit. A file written by a
// newer binary (a higher version) is refused with ErrSchemaTooNew and left
// untouched.
//
// All methods of Store are safe for concurrent use.
package store

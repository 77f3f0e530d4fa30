// Package notify delivers control plane events to subscribers: signed
// webhooks, chat incoming webhooks (Slack/Teams style) and email.
//
// # Outbox
//
// Every change writes its row in table events in the same transaction,
// so an event exists if and only if its change committed: the events
// table is the transactional outbox. Nothing is published from the
// request path, so nothing is lost when a send fails or a process dies
// (Lamassu publishes directly and loses events on failure).
//
// # Fan-out
//
// A Dispatcher turns events into rows of table deliveries, one per
// (subscription, event), with one set-based INSERT ... SELECT ... ON
// CONFLICT DO NOTHING per batch. The delivery key "subscription:event" is
// the idempotency key receivers see, so fanning an event out twice is
// harmless.
//
// Event ids come from an identity sequence, which hands out ids in
// insertion order but not commit order: a transaction holding id 10 can
// commit after one holding id 11 was fanned out. A plain "id > watermark"
// scan would skip 10 forever. Instead of guessing how long a transaction
// may stay open (a fixed safety delay loses an event whose transaction
// outlives the delay), the fan-out proves which ids are final:
//
//   - it reads the sequence's last value S, then lists the transactions
//     that hold a RowExclusiveLock on events (every INSERT takes it
//     before drawing an id and keeps it until commit or rollback);
//   - any id <= S that is not yet visible belongs to one of those
//     transactions, so once none of them is still running, every id <= S
//     is either committed (and visible to the next statement) or gone;
//   - the state in job_state 'notify.fanout' keeps a watermark (every
//     event <= it fanned out, and no other can ever appear), the highest
//     id fanned out, and the pending horizon S with the transactions it
//     waits for. New events are fanned out at once (scan above "high");
//     when a horizon resolves, the range between the watermark and it is
//     scanned again to pick up late commits (ON CONFLICT makes the rescan
//     free of side effects), and the watermark moves up.
//
// Writers never wait for the fan-out. A transaction that stays open while
// holding an uncommitted event holds the watermark back, and with it the
// rescan that picks up events committing late around it; newer events
// still flow. The dispatcher logs such a transaction after a minute. This relies on
// the identity sequence's default CACHE 1 (a per-session cache would let
// a session use an id long after drawing it).
//
// Fan-out runs in one READ COMMITTED transaction under
// pg_advisory_xact_lock, so replicas take turns and none skips or doubles
// a range.
//
// A subscription receives events committed after it was created (plus
// any from up to ten minutes before that which had not been fanned out
// yet): creating one does not replay history.
//
// # Delivery
//
// Due deliveries are claimed with SELECT ... FOR UPDATE SKIP LOCKED in a
// single statement that pushes next_attempt_at forward by a lease and
// counts the attempt, so replicas share the work and no transaction is
// open while sending. The result is recorded afterwards: delivered
// (delivered_at; only a pending row can become delivered, so a key is
// marked delivered once), or failed (next_attempt_at = now + backoff,
// last_error, status 'dead' after MaxAttempts). A process that dies
// mid-send leaves the lease to expire and the delivery is retried:
// delivery is at-least-once and receivers deduplicate by the key (header
// X-Outpost-Delivery, body "id", email Message-ID).
//
// # Digest
//
// Once per UTC day the dispatcher inserts one "digest.expiry" event that
// lists the certificates expiring within 30 days (counts per CA and the
// first 100 by not_after). It flows to subscribers like any event.
package notify

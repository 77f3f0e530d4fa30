// Package audit keeps the control plane's append-only, hash-chained audit
// log. Each row's hash covers its content and the previous row's hash, so
// editing, deleting or reordering any row breaks the chain from there on;
// Verify names the first row that does not match.
//
// Appends take a transaction-scoped advisory lock, so replicas writing at
// the same time still build one chain. Write the audit row in the same
// transaction as the change it records: both commit, or neither.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// lockKey is the advisory lock serialising appends ("OUTPAUDT").
const lockKey int64 = 0x4f55545041554454

// Entry is one audit row.
type Entry struct {
	Seq      int64
	At       time.Time
	Actor    string
	Action   string
	Target   string
	Detail   map[string]any
	PrevHash []byte
	Hash     []byte

	detailJSON string
}

// genesis is the prev_hash of the first row.
var genesis = make([]byte, sha256.Size)

// hash computes a row's hash from its content and the previous hash.
func hash(prev []byte, seq int64, at time.Time, actor, action, target, detail string) []byte {
	h := sha256.New()
	h.Write(prev)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(seq))
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(at.UnixMicro()))
	h.Write(b[:])
	for _, s := range []string{actor, action, target, detail} {
		binary.BigEndian.PutUint64(b[:], uint64(len(s)))
		h.Write(b[:])
		h.Write([]byte(s))
	}
	return h.Sum(nil)
}

// Append adds an entry in the caller's transaction. At is set to now
// (microsecond precision, as Postgres stores it).
func Append(ctx context.Context, db registry.DBTX, now time.Time, actor, action, target string, detail map[string]any) (*Entry, error) {
	if detail == nil {
		detail = map[string]any{}
	}
	dj, err := json.Marshal(detail) // map keys come out sorted: canonical
	if err != nil {
		return nil, fmt.Errorf("audit: encoding detail: %w", err)
	}
	if _, err := db.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey); err != nil {
		return nil, fmt.Errorf("audit: locking: %w", err)
	}
	var lastSeq int64
	prev := genesis
	err = db.QueryRow(ctx, `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&lastSeq, &prev)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("audit: reading the chain head: %w", err)
	}
	e := &Entry{Seq: lastSeq + 1, At: now.UTC().Truncate(time.Microsecond), Actor: actor, Action: action, Target: target, Detail: detail, PrevHash: prev, detailJSON: string(dj)}
	e.Hash = hash(prev, e.Seq, e.At, actor, action, target, e.detailJSON)
	_, err = db.Exec(ctx, `INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
		e.Seq, e.At, actor, action, target, e.detailJSON, prev, e.Hash)
	if err != nil {
		return nil, fmt.Errorf("audit: appending: %w", err)
	}
	return e, nil
}

// List pages through entries, newest first.
func List(ctx context.Context, db registry.DBTX, beforeSeq int64, limit int) ([]Entry, error) {
	limit = registry.ClampLimit(limit)
	if beforeSeq <= 0 {
		beforeSeq = 1<<62 - 1
	}
	rows, err := db.Query(ctx, `SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT $2`, beforeSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("audit: listing: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		if err := rows.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Target, &e.detailJSON, &e.PrevHash, &e.Hash); err != nil {
			return nil, fmt.Errorf("audit: reading: %w", err)
		}
		_ = json.Unmarshal([]byte(e.detailJSON), &e.Detail)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Result is the outcome of Verify.
type Result struct {
	Checked     int64
	FirstBadSeq int64 // 0 when the chain is intact
	Problem     string
}

// OK reports whether the chain verified.
func (r Result) OK() bool { return r.FirstBadSeq == 0 }

// Verify recomputes the whole chain in order and reports the first row
// whose sequence, link or hash does not match.
func Verify(ctx context.Context, db registry.DBTX) (Result, error) {
	rows, err := db.Query(ctx, `SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log ORDER BY seq`)
	if err != nil {
		return Result{}, fmt.Errorf("audit: reading: %w", err)
	}
	defer rows.Close()
	var res Result
	prev := genesis
	want := int64(1)
	for rows.Next() {
		var e Entry
		if err := rows.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Target, &e.detailJSON, &e.PrevHash, &e.Hash); err != nil {
			return Result{}, fmt.Errorf("audit: reading: %w", err)
		}
		res.Checked++
		switch {
		case e.Seq != want:
			return fail(res, want, fmt.Sprintf("row %d is missing (next row is %d)", want, e.Seq)), nil
		case !bytes.Equal(e.PrevHash, prev):
			return fail(res, e.Seq, fmt.Sprintf("row %d does not link to row %d", e.Seq, e.Seq-1)), nil
		case !bytes.Equal(hash(prev, e.Seq, e.At, e.Actor, e.Action, e.Target, e.detailJSON), e.Hash):
			return fail(res, e.Seq, fmt.Sprintf("row %d was modified: its content does not match its hash", e.Seq)), nil
		}
		prev = e.Hash
		want++
	}
	return res, rows.Err()
}

func fail(r Result, seq int64, problem string) Result {
	r.FirstBadSeq = seq
	r.Problem = problem
	return r
}

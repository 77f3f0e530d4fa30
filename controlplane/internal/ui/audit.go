package ui

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-pki/outpost/controlplane/internal/audit"
)

// verifyWait is how long the audit page waits for a verification of the
// chain it started; past it, the page shows the last finished result and
// says that a newer one is on its way.
const verifyWait = 150 * time.Millisecond

// verifyForcedWait is the wait when the person asked for a fresh
// verification (?verify=1).
const verifyForcedWait = 5 * time.Second

// verifyMaxAge is how long a result stands before a page view starts a
// new verification: tampering with a row changes no count, so a result is
// not kept just because no entry was added.
const verifyMaxAge = time.Minute

// verifyTimeout bounds one verification of the whole chain.
const verifyTimeout = 10 * time.Minute

// chainResult is one finished verification.
type chainResult struct {
	audit.Result
	// Head is the newest entry when the verification started: the
	// result covers the chain up to it.
	Head int64
	At   time.Time
	Err  string
}

// chainVerifier verifies the audit hash chain off the request path.
// audit.Verify reads the whole chain (it grows with every change), so
// this replica runs at most one verification at a time, in the
// background, and pages show the newest result, waiting briefly for one
// that covers the current head.
type chainVerifier struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	mu      sync.Mutex
	last    *chainResult
	running chan struct{} // closed when the running verification ends
}

func newChainVerifier(pool *pgxpool.Pool, log *slog.Logger) *chainVerifier {
	return &chainVerifier{pool: pool, log: log}
}

// status returns the newest result. When it does not cover head, is older
// than verifyMaxAge or force is set, it starts a verification (unless one
// runs) and waits up to wait for it.
func (v *chainVerifier) status(ctx context.Context, head int64, now func() time.Time, force bool, wait time.Duration) (last *chainResult, pending bool) {
	v.mu.Lock()
	if l := v.last; !force && l != nil && l.Head >= head && l.Err == "" && now().Sub(l.At) < verifyMaxAge {
		v.mu.Unlock()
		return l, false
	}
	done := v.running
	if done == nil {
		done = make(chan struct{})
		v.running = done
		go v.run(head, now, done)
	}
	v.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.last, v.last == nil || v.last.Head < head || v.last.Err != ""
}

func (v *chainVerifier) run(head int64, now func() time.Time, done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), verifyTimeout)
	defer cancel()
	res, err := audit.Verify(ctx, v.pool)
	r := &chainResult{Result: res, Head: head, At: now()}
	if err != nil {
		v.log.Error("verifying the audit chain", "err", err)
		r.Err = "the verification could not run; the cause is in the control plane's log"
	}
	v.mu.Lock()
	if err == nil || v.last == nil {
		v.last = r
	}
	v.running = nil
	v.mu.Unlock()
	close(done)
}

type auditRow struct {
	audit.Entry
	DetailText string
	HashHex    string
}

type auditData struct {
	Rows    []auditRow
	Next    string
	First   string
	Paged   bool
	Head    int64
	Chain   *chainResult
	Pending bool
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	ctx := r.Context()
	var before int64
	if cur := r.URL.Query().Get("cursor"); cur != "" {
		n, err := strconv.ParseInt(cur, 10, 64)
		if err != nil || n < 1 {
			return badField("cursor", "The page cursor is not one this server made: start again from the first page.")
		}
		before = n
	}
	var head int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM audit_log`).Scan(&head); err != nil {
		return err
	}
	es, err := audit.List(ctx, s.pool, before, pageSize)
	if err != nil {
		return err
	}
	d := &auditData{Head: head, Paged: before != 0, First: withQuery(r, "cursor", "")}
	for _, e := range es {
		row := auditRow{Entry: e, HashHex: hex.EncodeToString(e.Hash)}
		if len(e.Detail) > 0 {
			b, _ := json.Marshal(e.Detail)
			row.DetailText = string(b)
		}
		d.Rows = append(d.Rows, row)
	}
	if len(es) == pageSize && es[len(es)-1].Seq > 1 {
		d.Next = withQuery(r, "cursor", strconv.FormatInt(es[len(es)-1].Seq, 10))
	}
	force := r.URL.Query().Get("verify") != ""
	wait := verifyWait
	if force {
		wait = verifyForcedWait
	}
	d.Chain, d.Pending = s.audit.status(ctx, head, s.clock, force, wait)
	s.render(w, r, http.StatusOK, "audit", &page{Title: "Audit log", Nav: "audit", Data: d})
	return nil
}

package ui

import (
	"context"
	"errors"
	"html/template"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
)

// chartDays is the span of both overview charts.
const chartDays = 90

// Statuses in the order the overview shows them.
var (
	certStatuses   = []string{"active", "about_to_expire", "expired", "revoked"}
	deviceStatuses = []string{"pending_provisioning", "fully_provisioned", "with_warnings", "requires_action", "decommissioned"}
)

type statusCount struct {
	Status string
	N      int64
}

type dmsSummary struct {
	ID            uuid.UUID
	Name          string
	Status        string
	Mode          string
	Online        bool
	LastSeenAt    *time.Time
	QueueDepth    int64
	AgentVersion  string
	EdgeCANotAfer *time.Time
}

type overviewData struct {
	Stats            *overviewStats
	Certs            []statusCount
	CertTotal        int64
	Devices          []statusCount
	DeviceTotal      int64
	Expiries         *dayChart
	Enrollments      *dayChart
	ExpiriesSVG      template.HTML
	EnrollmentsSVG   template.HTML
	DMSs             []dmsSummary
	DMSOnline        int64
	DMSOffline       int64
	DMSDisabled      int64
	OnlineWindowText string
}

// The overview's aggregate queries. Each reads one index only:
//   - counts by status: an index-only scan of certificates_status
//     (status, not_after) and devices_status (status, id);
//   - expiries per day: certificates_status again, two short ranges
//     (active, about_to_expire) per day;
//   - enrollments per day: certificates_created (created_at, serial), one
//     range per day.
//
// The per-day counts are 90 small index-only range counts rather than one
// GROUP BY over an expression: Postgres counts index entries in a range
// much faster than it computes a day for each row.
const (
	certCountsSQL   = `SELECT status, count(*) FROM certificates GROUP BY status`
	deviceCountsSQL = `SELECT status, count(*) FROM devices GROUP BY status`
	expiriesSQL     = `SELECT n, (SELECT count(*) FROM certificates
			WHERE status IN ('active', 'about_to_expire')
			AND not_after >= $1::timestamptz + make_interval(days => n) AND not_after < $1::timestamptz + make_interval(days => n + 1))
		FROM generate_series(0, $2::int - 1) AS n ORDER BY n`
	enrollmentsSQL = `SELECT n, (SELECT count(*) FROM certificates
			WHERE created_at >= $1::timestamptz + make_interval(days => n) AND created_at < $1::timestamptz + make_interval(days => n + 1))
		FROM generate_series(0, $2::int - 1) AS n ORDER BY n`
	dmsCountsSQL = `SELECT count(*) FILTER (WHERE status <> 'disabled' AND last_seen_at >= $1),
			count(*) FILTER (WHERE status <> 'disabled' AND (last_seen_at IS NULL OR last_seen_at < $1)),
			count(*) FILTER (WHERE status = 'disabled')
		FROM dmss`
	// The DMSs that need attention first: offline, then the longest
	// queues. dmss holds one row per gateway (thousands, not millions).
	dmsAttentionSQL = `SELECT id, name, status, mode, last_seen_at, queue_depth, agent_version, edge_ca_not_after
		FROM dmss WHERE status <> 'disabled'
		ORDER BY (last_seen_at IS NOT NULL AND last_seen_at >= $1), queue_depth DESC, name LIMIT 20`
)

// overviewStats are the overview's aggregates over the big tables.
type overviewStats struct {
	Certs       []statusCount
	CertTotal   int64
	Devices     []statusCount
	DeviceTotal int64
	Expiries    []int64 // per day from Day
	Enrollments []int64 // per day up to Day
	Day         time.Time
	At          time.Time
	Took        time.Duration
}

// Freshness of the overview's aggregates in this replica: younger than
// statsFresh they are shown as they are; up to statsStale they are shown
// while a refresh runs in the background; older (or from another day, or
// after a change made in this dashboard) the page computes them first.
const (
	statsFresh = 30 * time.Second
	statsStale = 5 * time.Minute
	// statsTimeout bounds one computation (it runs detached from the
	// request that started it, which others may be waiting on too).
	statsTimeout = time.Minute
)

// statsCache holds the newest aggregates and runs at most one
// computation at a time.
type statsCache struct {
	mu       sync.Mutex
	cur      *overviewStats
	gen      int // moved by invalidate: older computations are dropped
	inflight *statsCall
	compute  func(ctx context.Context, day time.Time) (*overviewStats, error)
	log      interface{ Error(string, ...any) }
}

type statsCall struct {
	gen  int
	done chan struct{}
	st   *overviewStats
	err  error
}

// invalidate drops the aggregates after a change made in this dashboard.
func (c *statsCache) invalidate() {
	c.mu.Lock()
	c.cur = nil
	c.gen++
	c.mu.Unlock()
}

// get returns aggregates for day as described at statsFresh; force
// computes new ones.
func (c *statsCache) get(ctx context.Context, now, day time.Time, force bool) (*overviewStats, error) {
	c.mu.Lock()
	if force {
		c.cur = nil
		c.gen++
	}
	cur := c.cur
	if cur != nil && cur.Day.Equal(day) {
		age := now.Sub(cur.At)
		if age < statsFresh {
			c.mu.Unlock()
			return cur, nil
		}
		if age < statsStale {
			c.startLocked(day)
			c.mu.Unlock()
			return cur, nil
		}
	}
	call := c.startLocked(day)
	c.mu.Unlock()
	select {
	case <-call.done:
		return call.st, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *statsCache) startLocked(day time.Time) *statsCall {
	if c.inflight != nil && c.inflight.gen == c.gen {
		return c.inflight
	}
	call := &statsCall{gen: c.gen, done: make(chan struct{})}
	c.inflight = call
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
		defer cancel()
		st, err := c.compute(ctx, day)
		if err != nil {
			c.log.Error("computing the dashboard overview", "err", err)
		}
		c.mu.Lock()
		call.st, call.err = st, err
		if err == nil && call.gen == c.gen {
			c.cur = st
		}
		if c.inflight == call {
			c.inflight = nil
		}
		c.mu.Unlock()
		close(call.done)
	}()
	return call
}

// computeStats runs the aggregate queries. The certificate counts read
// every index entry of certificates_status (in parallel workers, where
// Postgres has cores for them); the other queries, each much cheaper, run
// one after the other beside it: two lanes keep the time near that of the
// counts without crowding a small database server.
func (s *Server) computeStats(ctx context.Context, day time.Time) (*overviewStats, error) {
	t0 := time.Now()
	st := &overviewStats{Day: day, At: s.clock()}
	lanes := [][]func(context.Context) error{
		{func(ctx context.Context) error {
			var err error
			st.Certs, st.CertTotal, err = s.countBy(ctx, certCountsSQL, certStatuses)
			return err
		}},
		{func(ctx context.Context) error {
			var err error
			st.Devices, st.DeviceTotal, err = s.countBy(ctx, deviceCountsSQL, deviceStatuses)
			return err
		}, func(ctx context.Context) error {
			var err error
			st.Expiries, err = s.perDay(ctx, expiriesSQL, day)
			return err
		}, func(ctx context.Context) error {
			var err error
			st.Enrollments, err = s.perDay(ctx, enrollmentsSQL, day.AddDate(0, 0, -(chartDays-1)))
			return err
		}},
	}
	errs := make([]error, len(lanes))
	var wg sync.WaitGroup
	for i, lane := range lanes {
		wg.Go(func() {
			for _, q := range lane {
				if errs[i] = q(ctx); errs[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	st.Took = time.Since(t0)
	return st, nil
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, sess *session) error {
	ctx := r.Context()
	now := s.clock().UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	onlineSince := now.Add(-s.opts.OnlineWindow)
	st, err := s.stats.get(ctx, now, today, r.URL.Query().Get("fresh") != "")
	if err != nil {
		return err
	}
	d := &overviewData{
		Stats:            st,
		Certs:            st.Certs,
		CertTotal:        st.CertTotal,
		Devices:          st.Devices,
		DeviceTotal:      st.DeviceTotal,
		Expiries:         &dayChart{Hook: "chart-expiries", Title: "Certificates expiring per day, next 90 days", YUnit: "certificates", Start: today, Count: st.Expiries},
		Enrollments:      &dayChart{Hook: "chart-enrollments", Title: "Certificates issued per day, last 90 days", YUnit: "certificates", Start: today.AddDate(0, 0, -(chartDays - 1)), Count: st.Enrollments},
		OnlineWindowText: roughDuration(s.opts.OnlineWindow),
	}
	// The DMS part is small (one row per gateway) and always live.
	if err := s.pool.QueryRow(ctx, dmsCountsSQL, onlineSince).Scan(&d.DMSOnline, &d.DMSOffline, &d.DMSDisabled); err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, dmsAttentionSQL, onlineSince)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var m dmsSummary
		if err := rows.Scan(&m.ID, &m.Name, &m.Status, &m.Mode, &m.LastSeenAt, &m.QueueDepth, &m.AgentVersion, &m.EdgeCANotAfer); err != nil {
			return err
		}
		m.Online = m.LastSeenAt != nil && !m.LastSeenAt.Before(onlineSince)
		d.DMSs = append(d.DMSs, m)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if d.ExpiriesSVG, err = d.Expiries.SVG(); err != nil {
		return err
	}
	if d.EnrollmentsSVG, err = d.Enrollments.SVG(); err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "overview", &page{Title: "Overview", Nav: "overview", Data: d})
	return nil
}

// countBy runs a "status, count" query and returns the counts in order
// (statuses with no rows count 0; unknown ones are appended).
func (s *Server) countBy(ctx context.Context, sql string, order []string) ([]statusCount, int64, error) {
	rows, err := s.pool.Query(ctx, sql)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	got := map[string]int64{}
	var extra []string
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, 0, err
		}
		got[st] = n
		known := false
		for _, o := range order {
			known = known || o == st
		}
		if !known {
			extra = append(extra, st)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	var out []statusCount
	var total int64
	for _, st := range append(append([]string{}, order...), extra...) {
		out = append(out, statusCount{Status: st, N: got[st]})
		total += got[st]
	}
	return out, total, nil
}

// perDay runs a per-day count query from start over chartDays days.
func (s *Server) perDay(ctx context.Context, sql string, start time.Time) ([]int64, error) {
	rows, err := s.pool.Query(ctx, sql, start, chartDays)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]int64, chartDays)
	for rows.Next() {
		var i int
		var n int64
		if err := rows.Scan(&i, &n); err != nil {
			return nil, err
		}
		if i >= 0 && i < chartDays {
			out[i] = n
		}
	}
	return out, rows.Err()
}

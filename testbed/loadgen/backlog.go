package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Backlog is what sync-backlog measures once the uplink is back. Times
// are seconds after the restore.
type Backlog struct {
	// Records is the enrollments that succeeded with the uplink cut: the
	// certificates the registry must receive.
	Records int `json:"records"`
	// QueueDepthCut is the agent's queue_depth once they were enrolled;
	// CutSec how long the uplink was cut.
	QueueDepthCut int     `json:"queue_depth_cut"`
	CutSec        float64 `json:"cut_s"`
	// RegistryBefore and RegistryAfter count the certificates of the
	// DMS's CAs before the run and once it settled.
	RegistryBefore int `json:"registry_before"`
	RegistryAfter  int `json:"registry_after"`
	// ReconnectSec is when the agent reported itself online again,
	// QueueEmptySec when its queue_depth was 0, DrainSec when the registry
	// held every record (0 when not Drained).
	ReconnectSec  float64 `json:"reconnect_s"`
	QueueEmptySec float64 `json:"queue_empty_s,omitempty"`
	DrainSec      float64 `json:"drain_s"`
	Drained       bool    `json:"drained"`
	// DrainRate is Records / DrainSec; DrainRateFromOnline counts from
	// the reconnect instead of the restore.
	DrainRate           float64 `json:"drain_rate_per_s"`
	DrainRateFromOnline float64 `json:"drain_rate_from_online_per_s"`
}

// agentStatus is the part of the agent's GET /status loadgen reads.
type agentStatus struct {
	Online     bool `json:"online"`
	QueueDepth int  `json:"queue_depth"`
}

// statusClient reads the agent's admin status.
type statusClient struct {
	url string
	hc  *http.Client
}

func (c *statusClient) get(ctx context.Context) (agentStatus, error) {
	var st agentStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.url, "/")+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("agent status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("agent status: %s", resp.Status)
	}
	// The status is a few hundred bytes; the cap is against a wrong URL.
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("agent status: %w", err)
	}
	return st, nil
}

// waitStatus polls the agent until cond holds, for at most within.
func (c *statusClient) waitStatus(ctx context.Context, within time.Duration, cond func(agentStatus) bool) (agentStatus, error) {
	deadline := time.Now().Add(within)
	for {
		st, err := c.get(ctx)
		if err == nil && cond(st) {
			return st, nil
		}
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		if time.Now().After(deadline) {
			if err != nil {
				return st, err
			}
			return st, fmt.Errorf("timed out after %v (online=%v, queue_depth=%d)", within, st.Online, st.QueueDepth)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// uplinkControl drives the testbed's control endpoint.
type uplinkControl struct {
	url string
	hc  *http.Client
}

// post calls POST <url>/uplink/<action> and wants 204.
func (u *uplinkControl) post(ctx context.Context, action string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(u.url, "/")+"/uplink/"+action, nil)
	if err != nil {
		return err
	}
	resp, err := u.hc.Do(req)
	if err != nil {
		return fmt.Errorf("uplink %s: %w", action, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("uplink %s: testbed answered %s: %s", action, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// registryQuery counts the certificates of the DMS's CAs (its edge CAs).
const registryQuery = `SELECT count(*) FROM certificates c JOIN cas ON cas.id = c.issuer_id WHERE cas.dms_id = $1`

func registryCount(ctx context.Context, conn *pgx.Conn, dmsID string) (int, error) {
	var n int
	if err := conn.QueryRow(ctx, registryQuery, dmsID).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting the DMS's certificates in the registry: %w", err)
	}
	return n, nil
}

// errOldTestbed is the message for an outpost.env without the control
// endpoint.
func errOldTestbed(env *sysEnv) error {
	return fmt.Errorf("%s has no %s: the testbed was started by a testbed/up too old for sync-backlog, which needs its control endpoint (POST /uplink/cut, /uplink/restore); update the checkout, then testbed/down && testbed/up", env.path, envControlURL)
}

// runSyncBacklog is the sync-backlog mode: cut the uplink, enroll o.n
// devices (local mode signs them offline, each a queued sync record),
// restore the uplink and time until the registry holds them all.
func runSyncBacklog(ctx context.Context, env *sysEnv, o options, stderr io.Writer) (*Summary, error) {
	if env.get(envControlURL) == "" {
		return nil, errOldTestbed(env)
	}
	if err := env.require(envAgentAdminURL, envDatabaseURL, envDMSID); err != nil {
		return nil, err
	}
	e, cn, err := newEnroller(env, o.auth, o.reuse, o.timeout)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	agent := &statusClient{url: env.get(envAgentAdminURL), hc: hc}
	ctl := &uplinkControl{url: env.get(envControlURL), hc: hc}
	dmsID := env.get(envDMSID)
	conn, err := pgx.Connect(ctx, env.get(envDatabaseURL))
	if err != nil {
		return nil, fmt.Errorf("connecting to the registry database: %w", err)
	}
	defer conn.Close(context.Background())

	// A quiet start: the agent online with nothing queued, so the count
	// below does not move by itself. A run killed before it could restore
	// the uplink leaves it cut: restore is idempotent, so ask for it.
	if st, err := agent.get(ctx); err != nil {
		return nil, err
	} else if !st.Online {
		fmt.Fprintln(stderr, "loadgen sync-backlog: the agent is offline; restoring the uplink in case a previous run left it cut")
		if err := ctl.post(ctx, "restore"); err != nil {
			return nil, err
		}
	}
	if _, err := agent.waitStatus(ctx, time.Minute, func(st agentStatus) bool { return st.Online && st.QueueDepth == 0 }); err != nil {
		return nil, fmt.Errorf("the agent is not online with an empty queue (%v): if a killed run left the uplink cut, curl -X POST %s/uplink/restore", err, strings.TrimRight(ctl.url, "/"))
	}
	before, err := registryCount(ctx, conn, dmsID)
	if err != nil {
		return nil, err
	}
	devs, err := prepareDevices(ctx, env, o.auth, cn, o.n)
	if err != nil {
		return nil, err
	}

	fmt.Fprintf(stderr, "loadgen sync-backlog: registry holds %d certificates of the DMS; cutting the uplink\n", before)
	if err := ctl.post(ctx, "cut"); err != nil {
		return nil, err
	}
	cutAt := time.Now()
	restored := false
	restore := func(ctx context.Context) error {
		if restored {
			return nil
		}
		if err := ctl.post(ctx, "restore"); err != nil {
			return err
		}
		restored = true
		return nil
	}
	// Whatever happens (an error, Ctrl-C), leave the uplink up.
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := restore(rctx); err != nil {
			fmt.Fprintf(stderr, "loadgen sync-backlog: restoring the uplink: %v (curl -X POST %s/uplink/restore)\n", err, strings.TrimRight(ctl.url, "/"))
		}
	}()
	if _, err := agent.waitStatus(ctx, time.Minute, func(st agentStatus) bool { return !st.Online }); err != nil {
		return nil, fmt.Errorf("the agent did not go offline after the uplink was cut: %w", err)
	}

	rec := newRecorder(time.Now())
	e.run(ctx, devs, o.c, rec, "sync-backlog (uplink cut)", stderr)
	s := rec.summary("sync-backlog", o.n, time.Now())
	s.Settings = map[string]any{"concurrency": min(o.c, o.n), "reuse": o.reuse, "auth": o.auth}
	if o.auth == "cert" {
		s.Notes = append(s.Notes, certAuthNote(cn))
	}
	b := &Backlog{Records: s.OK, RegistryBefore: before, RegistryAfter: before}
	s.Backlog = b
	if ctx.Err() != nil {
		return s, nil
	}
	if st, err := agent.get(ctx); err == nil {
		b.QueueDepthCut = st.QueueDepth
		if st.Online {
			s.Notes = append(s.Notes, "the agent reported itself online while the uplink was cut")
		}
	}

	fmt.Fprintf(stderr, "loadgen sync-backlog: %d enrolled offline, queue_depth %d; restoring the uplink\n", b.Records, b.QueueDepthCut)
	if err := restore(ctx); err != nil {
		return s, err
	}
	restoredAt := time.Now()
	b.CutSec = round3(restoredAt.Sub(cutAt).Seconds())
	target := before + b.Records
	var (
		onlineAt, emptyAt time.Time
		mu                sync.Mutex // guards last and count, read by the progress line
		last              agentStatus
		count             = before
	)
	stop := progress(stderr, time.Second, func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("loadgen sync-backlog: registry %d/%d (+%d of %d), agent online=%v queue_depth=%d, %.1f s since the restore",
			count, target, count-before, b.Records, last.Online, last.QueueDepth, time.Since(restoredAt).Seconds())
	})
	deadline := restoredAt.Add(o.drainTimeout)
	err = func() error {
		defer stop()
		for {
			st, serr := agent.get(ctx)
			if serr == nil {
				mu.Lock()
				last = st
				mu.Unlock()
				if st.Online && onlineAt.IsZero() {
					onlineAt = time.Now()
				}
				if st.Online && st.QueueDepth == 0 && emptyAt.IsZero() {
					emptyAt = time.Now()
				}
			}
			n, err := registryCount(ctx, conn, dmsID)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			mu.Lock()
			count = n
			mu.Unlock()
			if n >= target {
				b.Drained = true
				b.DrainSec = round3(time.Since(restoredAt).Seconds())
				return nil
			}
			if time.Now().After(deadline) {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	if err != nil {
		return s, err
	}
	if !onlineAt.IsZero() {
		b.ReconnectSec = round3(onlineAt.Sub(restoredAt).Seconds())
	}
	if !emptyAt.IsZero() {
		b.QueueEmptySec = round3(emptyAt.Sub(restoredAt).Seconds())
	}
	if b.Drained && b.DrainSec > 0 {
		b.DrainRate = round3(float64(b.Records) / b.DrainSec)
		if d := b.DrainSec - b.ReconnectSec; !onlineAt.IsZero() && d > 0 {
			b.DrainRateFromOnline = round3(float64(b.Records) / d)
		}
	}
	// Settle: a count past the target means certificates from elsewhere
	// (other load on the DMS) landed too.
	if b.Drained && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	// After stop: the progress line no longer reads count.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if n, err := registryCount(cctx, conn, dmsID); err == nil {
		count = n
	}
	b.RegistryAfter = count
	if b.RegistryAfter > target {
		s.Notes = append(s.Notes, fmt.Sprintf("the registry grew by %d, more than the %d enrolled: other certificates of the DMS arrived meanwhile", b.RegistryAfter-before, b.Records))
	}
	return s, nil
}

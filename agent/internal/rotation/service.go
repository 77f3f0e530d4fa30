package rotation

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/outpost-pki/outpost/internal/csrcheck"
)

// Signer gets a CSR signed for a device, the way an EST enrollment of
// that device would be. The agent implements it.
type Signer interface {
	// Sign returns the certificate then its chain (issuer first), or
	// ErrPending when the control plane has not answered before ctx's
	// deadline (queued and online modes; asking again with the same CSR
	// later returns the answer), or another error (refused, no policy,
	// quota, ...) whose text is safe to put in an event. Safe for
	// concurrent use.
	Sign(ctx context.Context, req SignRequest) ([]*x509.Certificate, error)
}

// SignRequest is one CSR to sign.
type SignRequest struct {
	DeviceID string
	// Label is the route's EST label ("" for the default).
	Label string
	CSR   *x509.CertificateRequest
}

// ErrPending: the CSR is waiting for the control plane.
var ErrPending = errors.New("rotation: the control plane has not answered yet")

// Recorder records an event for the control plane (the agent's durable
// outbox). Safe for concurrent use.
type Recorder interface {
	Record(ctx context.Context, e Event) error
}

// Trust returns the CAs whose certificates count as this gateway's (the
// edge CA and the DMS's authorized CAs) as verification roots, and
// further certificates usable as intermediates (their ancestors, for
// devices that send an incomplete chain). Safe for concurrent use.
type Trust interface {
	Roots() (roots *x509.CertPool, intermediates []*x509.Certificate)
}

// Event kinds.
const (
	EventSucceeded = "rotation.succeeded"
	EventFailed    = "rotation.failed"
	EventNoRoute   = "rotation.no_route"
	// EventDeferred: the CSR waits for the control plane (queued or
	// online mode); the next attempt asks again with the same CSR.
	EventDeferred = "rotation.deferred"
)

// Event is a rotation result for the control plane.
type Event struct {
	// ID is unique per event (the sync record id): "rotation-<hex>".
	ID       string
	Kind     string
	DeviceID string
	At       time.Time
	Detail   EventDetail
}

// EventDetail is the event's detail_json.
type EventDetail struct {
	Device    string `json:"device"`
	Address   string `json:"address,omitempty"`
	Platform  string `json:"platform,omitempty"`
	OSVersion string `json:"os_version,omitempty"`
	Model     string `json:"model,omitempty"`
	Route     string `json:"route,omitempty"`
	// Serial is the new certificate's serial (lowercase hex), OldSerial
	// the one the device presented before ("" when none or unreadable).
	Serial    string `json:"serial,omitempty"`
	OldSerial string `json:"old_serial,omitempty"`
	NotAfter  string `json:"not_after,omitempty"`
	// Phase is where a rotation failed: csr, sign, install or verify.
	Phase    string `json:"phase,omitempty"`
	Error    string `json:"error,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Stderr   string `json:"stderr,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// JSON is the detail as JSON (at most a few KiB: stderr and the error
// are capped).
func (d EventDetail) JSON() string {
	b, _ := json.Marshal(d)
	return string(b)
}

// Outcomes of a device in a run.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
	OutcomeDeferred  = "deferred"
	OutcomeNoRoute   = "no_route"
	OutcomeNotDue    = "not_due"
	OutcomeBackoff   = "backoff"
)

// Result is what happened to one device in a run (or, in a plan, what
// would).
type Result struct {
	DeviceID string `json:"device_id"`
	Route    string `json:"route,omitempty"`
	Hook     string `json:"hook,omitempty"`
	// Outcome is one of the Outcome constants; a plan leaves it empty.
	Outcome string `json:"outcome,omitempty"`
	Due     bool   `json:"due"`
	// Reason says why the device is (not) due.
	Reason       string    `json:"reason,omitempty"`
	OldSerial    string    `json:"old_serial,omitempty"`
	Serial       string    `json:"serial,omitempty"`
	Phase        string    `json:"phase,omitempty"`
	Error        string    `json:"error,omitempty"`
	Stderr       string    `json:"stderr,omitempty"`
	BackoffUntil time.Time `json:"backoff_until,omitzero"`
	DurationMS   int64     `json:"duration_ms,omitempty"`
}

// Config configures a Service.
type Config struct {
	Inventory *InventoryFile
	Routes    *Table
	// Interval between scans. Default 1h.
	Interval time.Duration
	// Concurrency bounds the devices probed or rotated at once. Default 4.
	Concurrency int
	// VerifyTimeout is how long after the install phase the device may
	// take to present the new certificate. Default 10s.
	VerifyTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait after a failure: BackoffMin
	// after the first, doubling, at most BackoffMax. Default 5m and 6h.
	BackoffMin, BackoffMax time.Duration

	Signer   Signer
	Recorder Recorder
	Trust    Trust
	// Ready, if set, is polled before the first scan until it returns nil
	// (the agent has its policy and, in local mode, its edge CA).
	Ready func() error
	// Prober and Runner default to TLSProber and ExecRunner.
	Prober Prober
	Runner HookRunner
	Log    *slog.Logger
	Now    func() time.Time
}

// Service runs rotations. Its methods are safe for concurrent use.
type Service struct {
	cfg Config
	sem chan struct{}

	mu       sync.Mutex
	flights  map[string]*flight
	backoff  map[string]backoffState
	pending  map[string]pendingCSR
	noRoute  map[string]uint64 // device -> inventory generation reported
	counts   map[string]int64  // outcome -> count
	running  int
	devices  int
	lastScan time.Time
}

type flight struct {
	done chan struct{}
	res  Result
}

type backoffState struct {
	failures int
	until    time.Time
}

// pendingCSR is a CSR waiting for the control plane: the next attempt
// asks for it again instead of having the device make another key.
type pendingCSR struct {
	csr   *x509.CertificateRequest
	route string
	since time.Time
}

// pendingMaxAge: a CSR the control plane has not answered in this long is
// given up (the device made a new key since, or will).
const pendingMaxAge = 24 * time.Hour

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Inventory == nil || cfg.Signer == nil || cfg.Recorder == nil || cfg.Trust == nil {
		return nil, errors.New("rotation: inventory, signer, recorder and trust are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = 10 * time.Second
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 5 * time.Minute
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(cfg.BackoffMin, 6*time.Hour)
	}
	if cfg.Prober == nil {
		cfg.Prober = TLSProber{}
	}
	if cfg.Runner == nil {
		cfg.Runner = ExecRunner{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, sem: make(chan struct{}, cfg.Concurrency), flights: map[string]*flight{},
		backoff: map[string]backoffState{}, pending: map[string]pendingCSR{}, noRoute: map[string]uint64{}, counts: map[string]int64{}}, nil
}

// Run scans every Interval (and when a device's backoff ends) until ctx
// ends. The first scan waits for Ready.
func (s *Service) Run(ctx context.Context) {
	if s.cfg.Ready != nil {
		logged := false
		for {
			err := s.cfg.Ready()
			if err == nil {
				break
			}
			if !logged {
				s.cfg.Log.Info("rotation waits for the gateway to be ready", "reason", err.Error())
				logged = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
	next := s.cfg.Now()
	for {
		now := s.cfg.Now()
		if !now.Before(next) {
			if _, err := s.Scan(ctx, Options{}); err != nil {
				s.cfg.Log.Error("rotation scan", "err", err)
			}
			next = s.cfg.Now().Add(s.cfg.Interval)
		} else if _, err := s.Scan(ctx, Options{OnlyBackoffEnded: true}); err != nil {
			s.cfg.Log.Error("rotation retry", "err", err)
		}
		wake := next
		if t, ok := s.nextBackoffEnd(); ok && t.Before(wake) {
			wake = t
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wake.Sub(s.cfg.Now()), time.Second)):
		}
	}
}

// Options select what a Scan does.
type Options struct {
	// DeviceID limits the run to one device.
	DeviceID string
	// Force rotates even when the device is not due.
	Force bool
	// IgnoreBackoff runs devices whose backoff has not ended (an
	// operator's request).
	IgnoreBackoff bool
	// OnlyBackoffEnded limits the run to devices whose backoff has ended
	// (retries between scans).
	OnlyBackoffEnded bool
	// DryRun only reports each device's route and whether it is due.
	DryRun bool
}

// ErrUnknownDevice: Options.DeviceID is not in the inventory.
var ErrUnknownDevice = errors.New("rotation: no such device in the inventory")

// Scan loads the inventory (again, if it changed) and handles its devices
// with at most Concurrency at once, one rotation per device at a time (a
// device being rotated already is waited for, and its result reported).
// Results are in inventory order.
func (s *Service) Scan(ctx context.Context, o Options) ([]Result, error) {
	devs, gen, err := s.cfg.Inventory.Load()
	if err != nil {
		s.cfg.Log.Error("rotation inventory (keeping the previous one)", "err", err)
		if o.DeviceID != "" || o.DryRun {
			return nil, err
		}
	}
	s.mu.Lock()
	s.devices = len(devs)
	s.lastScan = s.cfg.Now()
	s.mu.Unlock()
	if o.DeviceID != "" {
		i := slices.IndexFunc(devs, func(d Device) bool { return d.ID == o.DeviceID })
		if i < 0 {
			return nil, fmt.Errorf("%w: %q", ErrUnknownDevice, o.DeviceID)
		}
		devs = devs[i : i+1]
	}
	if o.OnlyBackoffEnded {
		now := s.cfg.Now()
		s.mu.Lock()
		devs = slices.DeleteFunc(slices.Clone(devs), func(d Device) bool {
			b, ok := s.backoff[d.ID]
			return !ok || b.until.After(now)
		})
		s.mu.Unlock()
	}
	if o.DeviceID == "" && !o.OnlyBackoffEnded && !o.DryRun && err == nil {
		s.forgetRemoved(devs)
	}
	// Concurrency workers per run (not a goroutine per device: inventories
	// run to thousands); the semaphore bounds all runs together.
	results := make([]Result, len(devs))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(s.cfg.Concurrency, len(devs)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] = s.device(ctx, devs[i], gen, o)
			}
		}()
	}
	for i := range devs {
		next <- i
	}
	close(next)
	wg.Wait()
	return results, nil
}

// forgetRemoved drops the state of devices no longer in the inventory.
func (s *Service) forgetRemoved(devs []Device) {
	in := make(map[string]bool, len(devs))
	for _, d := range devs {
		in[d.ID] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.backoff {
		if !in[id] {
			delete(s.backoff, id)
		}
	}
	for id := range s.pending {
		if !in[id] {
			delete(s.pending, id)
		}
	}
	for id := range s.noRoute {
		if !in[id] {
			delete(s.noRoute, id)
		}
	}
}

// device handles one device: route, due check, rotation.
func (s *Service) device(ctx context.Context, d Device, gen uint64, o Options) Result {
	r, ok := s.cfg.Routes.Lookup(d)
	if !ok {
		res := Result{DeviceID: d.ID, Outcome: OutcomeNoRoute, Reason: "no route matches its platform, os_version and model"}
		if o.DryRun {
			res.Outcome = ""
			return res
		}
		s.mu.Lock()
		report := s.noRoute[d.ID] != gen
		s.noRoute[d.ID] = gen
		s.counts[OutcomeNoRoute]++
		s.mu.Unlock()
		if report { // once per device and inventory version
			s.cfg.Log.Warn("rotation: no route for device", "device_id", d.ID, "platform", d.Platform, "os_version", d.OSVersion, "model", d.Model)
			s.record(ctx, EventNoRoute, d, EventDetail{Reason: res.Reason})
		}
		return res
	}
	res := Result{DeviceID: d.ID, Route: r.Name, Hook: r.Hook}
	if !o.DryRun && !o.IgnoreBackoff {
		s.mu.Lock()
		b := s.backoff[d.ID]
		s.mu.Unlock()
		if b.until.After(s.cfg.Now()) {
			res.Outcome, res.BackoffUntil = OutcomeBackoff, b.until
			res.Reason = fmt.Sprintf("%d failures; next attempt at %s", b.failures, b.until.UTC().Format(time.RFC3339))
			return res
		}
	}
	if o.DryRun {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			res.Error = ctx.Err().Error()
			return res
		}
		defer func() { <-s.sem }()
		v := s.probe(ctx, d, r)
		res.Due, res.Reason, res.OldSerial = v.Due, v.Reason, v.Serial
		s.mu.Lock()
		res.BackoffUntil = s.backoff[d.ID].until
		s.mu.Unlock()
		return res
	}
	// One rotation per device: join a running one.
	s.mu.Lock()
	if f, ok := s.flights[d.ID]; ok {
		s.mu.Unlock()
		select {
		case <-f.done:
			return f.res
		case <-ctx.Done():
			res.Outcome, res.Error = OutcomeFailed, ctx.Err().Error()
			return res
		}
	}
	f := &flight{done: make(chan struct{})}
	s.flights[d.ID] = f
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.flights, d.ID)
		s.mu.Unlock()
		close(f.done)
	}()
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		res.Outcome, res.Error = OutcomeFailed, ctx.Err().Error()
		f.res = res
		return res
	}
	defer func() { <-s.sem }()
	s.mu.Lock()
	s.running++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running--
		s.mu.Unlock()
	}()
	start := s.cfg.Now()
	f.res = s.rotate(ctx, d, r, o, res)
	f.res.DurationMS = s.cfg.Now().Sub(start).Milliseconds()
	return f.res
}

// probe reads what the device presents and decides whether it is due.
func (s *Service) probe(ctx context.Context, d Device, r Route) Verdict {
	chain, err := s.cfg.Prober.Probe(ctx, d)
	roots, inter := s.cfg.Trust.Roots()
	if len(inter) > 0 && len(chain) > 0 {
		// The gateway's own intermediates help chains the device sends
		// incomplete.
		chain = append(slices.Clone(chain), inter...)
	}
	return CheckDue(s.cfg.Now(), d.ID, chain, err, roots, r.RenewBefore)
}

// rotate runs one rotation of d, if due (or forced).
func (s *Service) rotate(ctx context.Context, d Device, r Route, o Options, res Result) Result {
	v := s.probe(ctx, d, r)
	res.Due, res.Reason, res.OldSerial = v.Due, v.Reason, v.Serial
	if !v.Due && !o.Force {
		res.Outcome = OutcomeNotDue
		s.mu.Lock()
		s.counts[OutcomeNotDue]++
		delete(s.backoff, d.ID) // fixed by other means
		delete(s.pending, d.ID)
		s.mu.Unlock()
		return res
	}
	log := s.cfg.Log.With("device_id", d.ID, "route", r.Name)
	log.Info("rotating a device certificate", "reason", v.Reason, "old_serial", v.Serial)
	detail := EventDetail{Route: r.Name, OldSerial: v.Serial}
	fail := func(phase string, err error, stderr string) Result {
		res.Outcome, res.Phase, res.Error, res.Stderr = OutcomeFailed, phase, clip(err.Error(), 1024), stderr
		detail.Phase, detail.Error, detail.Stderr = phase, res.Error, stderr
		var he *HookError
		if errors.As(err, &he) && he.ExitCode >= 0 {
			code := he.ExitCode
			detail.ExitCode = &code
		}
		res.BackoffUntil = s.failed(d.ID, errors.As(err, &he) && he.Unsupported())
		log.Warn("rotation failed", "phase", phase, "err", err, "stderr", stderr, "retry_at", res.BackoffUntil)
		s.count(OutcomeFailed)
		s.record(ctx, EventFailed, d, detail)
		return res
	}

	// Phase csr, unless a CSR from an earlier attempt still waits for
	// the control plane.
	var csr *x509.CertificateRequest
	s.mu.Lock()
	p, havePending := s.pending[d.ID]
	if havePending && (p.route != r.Name || s.cfg.Now().Sub(p.since) > pendingMaxAge) {
		delete(s.pending, d.ID)
		havePending = false
	}
	s.mu.Unlock()
	if havePending {
		csr = p.csr
	} else {
		out, stderr, err := s.cfg.Runner.RunHook(ctx, r, d, PhaseCSR, nil)
		if err != nil {
			return fail(PhaseCSR, err, stderr)
		}
		if csr, err = ParseHookCSR(out, d.ID); err != nil {
			return fail(PhaseCSR, err, stderr)
		}
	}

	// Phase sign, bounded by the route's timeout.
	sctx, cancel := context.WithTimeout(ctx, r.Timeout)
	chain, err := s.cfg.Signer.Sign(sctx, SignRequest{DeviceID: d.ID, Label: r.Label, CSR: csr})
	cancel()
	if errors.Is(err, ErrPending) {
		s.mu.Lock()
		if _, ok := s.pending[d.ID]; !ok {
			s.pending[d.ID] = pendingCSR{csr: csr, route: r.Name, since: s.cfg.Now()}
		}
		s.mu.Unlock()
		res.Outcome, res.Phase, res.Error = OutcomeDeferred, PhaseSign, err.Error()
		res.BackoffUntil = s.failed(d.ID, false)
		detail.Phase, detail.Reason = PhaseSign, "waiting for the control plane; the next attempt asks again with the same CSR"
		log.Info("rotation deferred: the control plane has not signed yet", "retry_at", res.BackoffUntil)
		s.count(OutcomeDeferred)
		s.record(ctx, EventDeferred, d, detail)
		return res
	}
	s.mu.Lock()
	delete(s.pending, d.ID)
	s.mu.Unlock()
	if err != nil {
		return fail(PhaseSign, err, "")
	}
	if len(chain) == 0 || !samePublicKey(chain[0], csr) {
		return fail(PhaseSign, errors.New("the signer returned a certificate for another key"), "")
	}
	leaf := chain[0]
	res.Serial, detail.Serial = serialHex(leaf), serialHex(leaf)
	detail.NotAfter = leaf.NotAfter.UTC().Format(time.RFC3339)

	// Phase install: the chain on stdin, the self-signed root left out.
	var pemChain bytes.Buffer
	for _, c := range chain {
		if len(pemChain.Bytes()) > 0 && isSelfSigned(c) {
			continue
		}
		_ = pem.Encode(&pemChain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	if _, stderr, err := s.cfg.Runner.RunHook(ctx, r, d, PhaseInstall, pemChain.Bytes()); err != nil {
		return fail(PhaseInstall, err, stderr)
	}

	// Phase verify: the device must present exactly the new certificate.
	deadline := s.cfg.Now().Add(s.cfg.VerifyTimeout)
	var last string
	for {
		got, err := s.cfg.Prober.Probe(ctx, d)
		switch {
		case err != nil || len(got) == 0:
			last = fmt.Sprintf("connecting to the device: %v", err)
		case bytes.Equal(got[0].Raw, leaf.Raw):
			last = ""
		default:
			last = fmt.Sprintf("the device presents serial %s, not the new certificate's %s", serialHex(got[0]), res.Serial)
		}
		if last == "" {
			break
		}
		if !s.cfg.Now().Before(deadline) || ctx.Err() != nil {
			return fail(PhaseVerify, errors.New(last), "")
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	s.mu.Lock()
	delete(s.backoff, d.ID)
	s.mu.Unlock()
	res.Outcome = OutcomeSucceeded
	log.Info("rotated a device certificate", "serial", res.Serial, "not_after", leaf.NotAfter)
	s.count(OutcomeSucceeded)
	s.record(ctx, EventSucceeded, d, detail)
	return res
}

// failed records a failure of device id and returns the end of its
// backoff: BackoffMin doubled per failure in a row, at most BackoffMax
// (at once when the hook said it cannot rotate the device).
func (s *Service) failed(id string, longest bool) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.backoff[id]
	b.failures++
	b.until = s.cfg.Now().Add(Backoff(b.failures, s.cfg.BackoffMin, s.cfg.BackoffMax))
	if longest {
		b.until = s.cfg.Now().Add(s.cfg.BackoffMax)
	}
	s.backoff[id] = b
	return b.until
}

// Backoff is the wait after n failures in a row: min, doubling, capped.
func Backoff(n int, minWait, maxWait time.Duration) time.Duration {
	d := minWait
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait)
}

// nextBackoffEnd is the earliest end of a backoff still to come (one that
// ended is retried then, or at the next scan).
func (s *Service) nextBackoffEnd() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var t time.Time
	for _, b := range s.backoff {
		if b.until.After(now) && (t.IsZero() || b.until.Before(t)) {
			t = b.until
		}
	}
	return t, !t.IsZero()
}

func (s *Service) count(outcome string) {
	s.mu.Lock()
	s.counts[outcome]++
	s.mu.Unlock()
}

// record sends an event; a failure to record is logged (the rotation's
// result stands).
func (s *Service) record(ctx context.Context, kind string, d Device, detail EventDetail) {
	detail.Device, detail.Address, detail.Platform, detail.OSVersion, detail.Model = d.ID, d.Address, d.Platform, d.OSVersion, d.Model
	var rnd [16]byte
	_, _ = rand.Read(rnd[:])
	e := Event{ID: "rotation-" + hex.EncodeToString(rnd[:]), Kind: kind, DeviceID: d.ID, At: s.cfg.Now(), Detail: detail}
	// The event must be recorded even when the run's context ended.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.cfg.Recorder.Record(rctx, e); err != nil {
		s.cfg.Log.Error("recording a rotation event", "kind", kind, "device_id", d.ID, "err", err)
	}
}

// ParseHookCSR reads what the csr phase printed: one PEM CSR, or base64
// DER. It must pass the project's CSR checks (csrcheck) and name the
// device: a common name, if any, that is the device id, and the id among
// the common name or subjectAltNames.
func ParseHookCSR(out []byte, deviceID string) (*x509.CertificateRequest, error) {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return nil, errors.New("the hook printed no CSR")
	}
	var csr *x509.CertificateRequest
	var err error
	if bytes.HasPrefix(out, []byte("-----BEGIN ")) {
		csr, err = csrcheck.ParsePEMOrDER(out, csrcheck.DefaultPolicy())
	} else {
		// base64 DER, possibly wrapped over lines.
		compact := bytes.Join(bytes.Fields(out), nil)
		der := make([]byte, base64.StdEncoding.DecodedLen(len(compact)))
		n, derr := base64.StdEncoding.Decode(der, compact)
		if derr != nil {
			return nil, fmt.Errorf("the hook's output is neither a PEM CSR nor base64 DER: %w", derr)
		}
		csr, err = csrcheck.Parse(der[:n], csrcheck.DefaultPolicy())
	}
	if err != nil {
		var ce *csrcheck.Error
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("bad CSR: %s", ce.Error())
		}
		return nil, fmt.Errorf("bad CSR: %w", err)
	}
	uris := make([]string, 0, len(csr.URIs))
	for _, u := range csr.URIs {
		uris = append(uris, u.String())
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != deviceID {
		return nil, fmt.Errorf("the CSR's common name %q is not the device id %q", cn, deviceID)
	}
	if !NamesDevice(csr.Subject.CommonName, csr.DNSNames, uris, deviceID) {
		return nil, fmt.Errorf("the CSR does not name the device id %q (common name or subjectAltName)", deviceID)
	}
	return csr, nil
}

func samePublicKey(c *x509.Certificate, csr *x509.CertificateRequest) bool {
	return bytes.Equal(c.RawSubjectPublicKeyInfo, csr.RawSubjectPublicKeyInfo)
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "[...]"
}

// WriteMetrics writes the Prometheus text format of the rotation
// counters.
func (s *Service) WriteMetrics(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(w, "# HELP outpost_agent_rotations_total Agentless device rotations by outcome.\n# TYPE outpost_agent_rotations_total counter\n")
	for _, o := range []string{OutcomeSucceeded, OutcomeFailed, OutcomeDeferred, OutcomeNoRoute, OutcomeNotDue} {
		fmt.Fprintf(w, "outpost_agent_rotations_total{outcome=%q} %d\n", o, s.counts[o])
	}
	fmt.Fprintf(w, "# HELP outpost_agent_rotation_devices Devices in the rotation inventory.\n# TYPE outpost_agent_rotation_devices gauge\noutpost_agent_rotation_devices %d\n", s.devices)
	fmt.Fprintf(w, "# HELP outpost_agent_rotations_running Rotations running now.\n# TYPE outpost_agent_rotations_running gauge\noutpost_agent_rotations_running %d\n", s.running)
	fmt.Fprintf(w, "# HELP outpost_agent_rotation_backoff_devices Devices waiting after a failed rotation.\n# TYPE outpost_agent_rotation_backoff_devices gauge\noutpost_agent_rotation_backoff_devices %d\n", len(s.backoff))
	if !s.lastScan.IsZero() {
		fmt.Fprintf(w, "# HELP outpost_agent_rotation_last_scan_seconds Last rotation scan.\n# TYPE outpost_agent_rotation_last_scan_seconds gauge\noutpost_agent_rotation_last_scan_seconds %d\n", s.lastScan.Unix())
	}
}

package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/agent/internal/rotation"
	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/proto/syncpb"
)

// Agentless rotation (docs/ROTATION.md) wired into the agent: the
// rotation package decides and runs; the agent signs the devices' CSRs
// the way its EST server would (enroll in the policy's mode), records the
// results as events in its outbox, and tells which CAs are its own. The
// admin endpoints POST /rotate and GET /rotate (dry run) serve
// `outpost-agent rotate`; /metrics gets the rotation counters.

// rotationWiring is the rotation service of a running agent (nil service
// when rotation is not configured).
type rotationWiring struct {
	a   *Agent
	svc *rotation.Service
	// ctx is the agent's: a rotation an operator asked for finishes even
	// when the command goes away (a half-done install is worse).
	ctx context.Context
}

// startRotation builds the rotation service and starts its loop (when
// rotation.inventory_file is set).
func (a *Agent) startRotation(ctx context.Context) *rotationWiring {
	w := &rotationWiring{a: a, ctx: ctx}
	rc := a.cfg.Rotation
	if !rc.Enabled() {
		return w
	}
	table, err := rc.Table()
	if err != nil { // Validate refused it already
		a.log.Error("rotation routes", "err", err)
		return w
	}
	svc, err := rotation.New(rotation.Config{
		Inventory: &rotation.InventoryFile{Path: rc.InventoryFile}, Routes: table,
		Interval: rc.Interval.D(), Concurrency: rc.Concurrency, VerifyTimeout: rc.VerifyTimeout.D(),
		BackoffMin: rc.BackoffMin.D(), BackoffMax: rc.BackoffMax.D(),
		Signer: rotationSigner{a}, Recorder: rotationRecorder{a}, Trust: rotationTrust{a}, Ready: a.rotationReady,
		Log: a.log.With("component", "rotation"),
	})
	if err != nil {
		a.log.Error("rotation", "err", err)
		return w
	}
	w.svc = svc
	a.log.Info("agentless rotation on", "inventory", rc.InventoryFile, "routes", table.Len(), "interval", rc.Interval.D().String(), "concurrency", rc.Concurrency)
	go svc.Run(ctx)
	return w
}

// rotationReady: signing needs the policy and, in local mode, a valid
// edge CA.
func (a *Agent) rotationReady() error {
	if a.disabled() {
		return errors.New(DisabledMessage)
	}
	ps := a.state.policy.Load()
	if ps == nil {
		return errors.New("no policy from the control plane yet")
	}
	if ps.Policy.GetMode() == "local" {
		if e := a.edge.current(); e == nil || time.Now().After(e.Cert.NotAfter) {
			return errors.New("no valid edge CA yet")
		}
	}
	return nil
}

// rotationSigner signs like an EST simpleenroll of the device would.
type rotationSigner struct{ a *Agent }

func (s rotationSigner) Sign(ctx context.Context, req rotation.SignRequest) ([]*x509.Certificate, error) {
	a := s.a
	if err := a.rotationReady(); err != nil {
		return nil, err
	}
	ps := a.state.policy.Load()
	caID, profile, ok := ps.caFor(req.Label)
	if !ok {
		return nil, fmt.Errorf("unknown EST label %q", req.Label)
	}
	er := enrollRequest{DeviceID: req.DeviceID, Label: req.Label, CAID: caID, Profile: profile, CSR: req.CSR}
	out := a.enroll(ctx, ps, er)
	if out.Later {
		// Queued (or online past its wait): wait for the answer until
		// the route's timeout.
		wait := 5 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			wait = time.Until(dl)
		}
		e, ok := a.waiters.wait(ctx, er.id(), wait, a.store)
		if !ok {
			return nil, rotation.ErrPending
		}
		if out, _ = enrollmentOutcome(e, req.DeviceID); out.Err == nil && out.Cert == nil {
			return nil, rotation.ErrPending
		}
	}
	if out.Err != nil {
		return nil, errors.New(out.Err.Message)
	}
	leaf, err := x509.ParseCertificate(out.Cert)
	if err != nil {
		return nil, fmt.Errorf("reading the signed certificate: %w", err)
	}
	return append([]*x509.Certificate{leaf}, a.chainFor(leaf, ps)...), nil
}

// chainFor is the issuer of leaf and its ancestors: the edge CA's chain,
// or the bundle of the authorized CA that signed it.
func (a *Agent) chainFor(leaf *x509.Certificate, ps *policyState) []*x509.Certificate {
	if e := a.edge.current(); e != nil && leaf.CheckSignatureFrom(e.Cert) == nil {
		return append([]*x509.Certificate{e.Cert}, e.Chain...)
	}
	for _, b := range ps.Bundles {
		if len(b) > 0 && bytes.Equal(leaf.RawIssuer, b[0].RawSubject) && leaf.CheckSignatureFrom(b[0]) == nil {
			return b
		}
	}
	return nil
}

// rotationRecorder queues events in the outbox.
type rotationRecorder struct{ a *Agent }

func (r rotationRecorder) Record(ctx context.Context, e rotation.Event) error {
	b, err := proto.Marshal(&syncpb.Record{RecordId: e.ID, DeviceId: e.DeviceID, Payload: &syncpb.Record_Event{Event: &syncpb.Event{
		Kind: e.Kind, AtUnixMs: e.At.UnixMilli(), DetailJson: e.Detail.JSON(),
	}}})
	if err != nil {
		return err
	}
	if err := r.a.store.Enqueue(ctx, store.OutboxRecord{ID: e.ID, DeviceID: e.DeviceID, Payload: b}); err != nil {
		return err
	}
	r.a.sync.Kick()
	return nil
}

// rotationTrust: this gateway's certificates chain to its edge CA or to
// one of the DMS's authorized CAs; their ancestors are intermediates.
type rotationTrust struct{ a *Agent }

func (t rotationTrust) Roots() (*x509.CertPool, []*x509.Certificate) {
	roots := x509.NewCertPool()
	var inter []*x509.Certificate
	if e := t.a.edge.current(); e != nil {
		roots.AddCert(e.Cert)
		inter = append(inter, e.Chain...)
	}
	if ps := t.a.state.policy.Load(); ps != nil {
		for _, b := range ps.Bundles {
			if len(b) > 0 {
				roots.AddCert(b[0])
				inter = append(inter, b[1:]...)
			}
		}
	}
	return roots, inter
}

// admin adds /rotate and the rotation metrics to the admin handler h.
func (w *rotationWiring) admin(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	run := func(rw http.ResponseWriter, r *http.Request, o rotation.Options) {
		if w.svc == nil {
			http.Error(rw, "rotation is not configured (rotation.inventory_file)", http.StatusNotFound)
			return
		}
		q := r.URL.Query()
		o.DeviceID, o.Force = q.Get("device"), q.Get("force") == "1"
		res, err := w.svc.Scan(w.ctx, o)
		switch {
		case errors.Is(err, rotation.ErrUnknownDevice):
			http.Error(rw, err.Error(), http.StatusNotFound)
			return
		case err != nil:
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if res == nil {
			res = []rotation.Result{}
		}
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(res)
	}
	// An operator's request: due devices now, backoff or not.
	mux.HandleFunc("POST /rotate", func(rw http.ResponseWriter, r *http.Request) {
		run(rw, r, rotation.Options{IgnoreBackoff: true})
	})
	mux.HandleFunc("GET /rotate", func(rw http.ResponseWriter, r *http.Request) {
		run(rw, r, rotation.Options{DryRun: true})
	})
	mux.HandleFunc("GET /metrics", func(rw http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(rw, r)
		if w.svc != nil {
			w.svc.WriteMetrics(rw)
		}
	})
	return mux
}

var (
	_ rotation.Signer   = rotationSigner{}
	_ rotation.Recorder = rotationRecorder{}
	_ rotation.Trust    = rotationTrust{}
)

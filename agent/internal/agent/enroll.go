package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/proto/syncpb"
)

// Enrollment in the three modes of the DMS policy. The caller (est.go)
// has parsed the CSR and authenticated the device.

// enrollRequest is one authenticated enrollment.
type enrollRequest struct {
	DeviceID string
	Label    string
	CAID     string
	Profile  string
	CSR      *x509.CertificateRequest
	// ReenrollSerial is the serial (lowercase hex) of the certificate a
	// re-enrollment authenticated with.
	ReenrollSerial string
	// LocalOnly: the request must be answered now (serverkeygen: the key
	// cannot wait for the control plane).
	LocalOnly bool
}

// requestID identifies an enrollment by the CSR's public key, so a device
// that retries a queued request with the same key finds it.
func requestID(csr *x509.CertificateRequest) string {
	sum := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	return "enr-" + hex.EncodeToString(sum[:20])
}

// id identifies a forwarded (queued or online) request: the CSR's public
// key, and for a re-enrollment also the certificate it renews, so that a
// device renewing with the same key (RFC 7030 4.2.2 allows it) gets a new
// certificate, and a retry of the same renewal finds the same request.
func (r enrollRequest) id() string {
	if r.ReenrollSerial == "" {
		return requestID(r.CSR)
	}
	h := sha256.New()
	h.Write(r.CSR.RawSubjectPublicKeyInfo)
	h.Write([]byte("\x00reenroll\x00" + r.ReenrollSerial))
	return "ren-" + hex.EncodeToString(h.Sum(nil)[:20])
}

// enrollOutcome is a certificate, a "come back later", or an error.
type enrollOutcome struct {
	Cert  []byte
	Later bool
	Err   *est.Error
	// Retryable: the refusal is not about the device or its request (the
	// gateway is out of quota or unavailable); its one-time secret stays
	// usable.
	Retryable bool
}

func refused(status int, format string, args ...any) enrollOutcome {
	return enrollOutcome{Err: &est.Error{Status: status, Message: fmt.Sprintf(format, args...)}}
}

// enroll runs an authenticated enrollment in the policy's mode.
func (a *Agent) enroll(ctx context.Context, ps *policyState, r enrollRequest) enrollOutcome {
	mode := ps.Policy.GetMode()
	if r.LocalOnly && mode != "local" {
		return refused(http.StatusNotImplemented, "serverkeygen needs local mode on this gateway (policy mode is %s)", mode)
	}
	if mode == "local" {
		return a.enrollLocal(ctx, ps, r)
	}
	return a.enrollRemote(ctx, ps, r, mode == "online")
}

// enrollLocal signs with the edge CA, within the quota, and queues the
// certificate for the registry in the same commit that records it.
func (a *Agent) enrollLocal(ctx context.Context, ps *policyState, r enrollRequest) enrollOutcome {
	edge := a.edge.current()
	if edge == nil || time.Now().After(edge.Cert.NotAfter) {
		return refused(http.StatusServiceUnavailable, "this gateway has no valid edge CA yet; retry when it has synced with the control plane")
	}
	quota := ps.Policy.GetLocalQuota()
	a.syncedNow() // an ack alone restarts the quota too
	if n := a.issuedSinceSync.Add(1); quota > 0 && n > quota {
		a.issuedSinceSync.Add(-1)
		out := refused(http.StatusForbidden, "local issuance quota exhausted: %d certificates issued since the last sync with the control plane", quota)
		out.Retryable = true
		return out
	}
	prof := a.localProfile(r.Profile)
	cert, err := (&issuer.Issuer{Cert: edge.Cert, Signer: edge.Key}).Issue(r.CSR, prof, issuer.Request{DeviceID: r.DeviceID})
	if err != nil {
		a.issuedSinceSync.Add(-1)
		var ie *issuer.Error
		if errors.As(err, &ie) && ie.Reason.ClientFault() {
			return refused(http.StatusBadRequest, "%s", ie.Public())
		}
		a.log.Error("local issuance", "device_id", r.DeviceID, "err", err)
		return refused(http.StatusServiceUnavailable, "the gateway could not sign the certificate; retry later")
	}
	serial := strings.ToLower(cert.SerialNumber.Text(16))
	recID := "issued-" + serial
	b, err := proto.Marshal(&syncpb.Record{RecordId: recID, DeviceId: r.DeviceID, Payload: &syncpb.Record_IssuedCertificate{IssuedCertificate: &syncpb.IssuedCertificate{
		CertificateDer: cert.Raw, CaId: edge.edgeCAID(), DeviceId: r.DeviceID, RequestId: requestID(r.CSR), IssuedAtUnixMs: time.Now().UnixMilli(),
	}}})
	if err == nil {
		err = a.store.EnqueueIssued(ctx, store.OutboxRecord{ID: recID, DeviceID: r.DeviceID, Payload: b}, serial, store.IssuedRecord{Data: []byte(r.DeviceID)})
	}
	if err != nil {
		a.issuedSinceSync.Add(-1)
		a.log.Error("recording a locally issued certificate", "device_id", r.DeviceID, "err", err)
		return refused(http.StatusServiceUnavailable, "the gateway could not record the certificate; retry later")
	}
	a.sync.Kick()
	return enrollOutcome{Cert: cert.Raw}
}

// localProfile is how the edge CA issues: the device profile with the
// configured validity (clipped to the edge CA's), the CSR's subjectAltNames
// allowed (the edge CA's name constraints bound them).
func (a *Agent) localProfile(name string) *issuer.Profile {
	a.profMu.Lock()
	defer a.profMu.Unlock()
	if p, ok := a.profiles[name]; ok {
		return p
	}
	p := issuer.DefaultDeviceProfile()
	if name != "" {
		p.Name = name
	}
	p.Validity = time.Duration(a.cfg.EST.DeviceValidity)
	p.SANs = issuer.SANPolicy{DNS: []string{"**"}, URI: []string{"spiffe://**/**", "urn://**/**"}, Email: []string{"**"}, IPRanges: allIPs}
	if a.profiles == nil {
		a.profiles = map[string]*issuer.Profile{}
	}
	a.profiles[name] = p
	return p
}

// enrollRemote forwards the request to the control plane (queued), and in
// online mode waits a bounded time for the answer.
func (a *Agent) enrollRemote(ctx context.Context, ps *policyState, r enrollRequest, online bool) enrollOutcome {
	id := r.id()
	e, err := a.store.GetEnrollment(id)
	switch {
	case err == nil:
		if out, done := enrollmentOutcome(e, r.DeviceID); done {
			return out
		}
	case errors.Is(err, store.ErrNotFound):
		rec := &syncpb.Record{RecordId: id, DeviceId: r.DeviceID, Payload: &syncpb.Record_EnrollmentRequest{EnrollmentRequest: &syncpb.EnrollmentRequest{
			RequestId: id, CsrDer: r.CSR.Raw, Label: r.Label, Profile: r.Profile, CaId: r.CAID, DeviceId: r.DeviceID,
			ReceivedAtUnixMs: time.Now().UnixMilli(), ReenrollSerialHex: r.ReenrollSerial,
		}}}
		b, err := proto.Marshal(rec)
		if err == nil {
			err = a.store.EnqueueEnrollment(ctx, store.Enrollment{RequestID: id, DeviceID: r.DeviceID, Status: store.EnrollmentPending, CSR: r.CSR.Raw},
				store.OutboxRecord{ID: id, DeviceID: r.DeviceID, Payload: b})
		}
		if err != nil {
			a.log.Error("queueing an enrollment", "device_id", r.DeviceID, "err", err)
			return refused(http.StatusServiceUnavailable, "the gateway could not store the request; retry later")
		}
		a.sync.Kick()
	default:
		a.log.Error("reading an enrollment", "request_id", id, "err", err)
		return refused(http.StatusServiceUnavailable, "the gateway could not read its store; retry later")
	}
	if online {
		wait := time.Duration(ps.Policy.GetOnlineWaitMs()) * time.Millisecond
		if wait <= 0 {
			wait = 5 * time.Second
		}
		if e, ok := a.waiters.wait(ctx, id, wait, a.store); ok {
			if out, done := enrollmentOutcome(e, r.DeviceID); done {
				return out
			}
		}
	}
	return enrollOutcome{Later: true}
}

// enrollmentOutcome answers from a stored enrollment; done is false while
// it is pending.
func enrollmentOutcome(e store.Enrollment, deviceID string) (enrollOutcome, bool) {
	if e.DeviceID != deviceID {
		return refused(http.StatusForbidden, "this key was already used by another device"), true
	}
	switch e.Status {
	case store.EnrollmentIssued:
		return enrollOutcome{Cert: e.Certificate}, true
	case store.EnrollmentRejected:
		return refused(http.StatusForbidden, "the control plane refused the request: %s", e.Reason), true
	}
	return enrollOutcome{}, false
}

// applyEnrollmentResult stores the control plane's answer to a queued
// request and wakes an online request waiting for it.
func (a *Agent) applyEnrollmentResult(u *syncpb.EnrollmentResult) error {
	e, err := a.store.GetEnrollment(u.GetRequestId())
	if errors.Is(err, store.ErrNotFound) {
		return nil // answered before and collected, or not ours
	} else if err != nil {
		return err
	}
	if e.Status != store.EnrollmentPending {
		return nil
	}
	if u.GetError() != "" {
		e.Status, e.Reason = store.EnrollmentRejected, u.GetError()
	} else {
		e.Status, e.Certificate = store.EnrollmentIssued, u.GetCertificateDer()
	}
	if err := a.store.PutEnrollment(e); err != nil {
		return err
	}
	a.waiters.wake(e.RequestID)
	return nil
}

// waiters lets online requests wait for their result.
type waiters struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (w *waiters) wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.m[id]; ok {
		close(ch)
		delete(w.m, id)
	}
}

// wait waits up to d for request id to be answered and returns it.
func (w *waiters) wait(ctx context.Context, id string, d time.Duration, st *store.Store) (store.Enrollment, bool) {
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string]chan struct{}{}
	}
	ch, ok := w.m[id]
	if !ok {
		ch = make(chan struct{})
		w.m[id] = ch
	}
	w.mu.Unlock()
	// The answer may have arrived before the channel existed.
	if e, err := st.GetEnrollment(id); err == nil && e.Status != store.EnrollmentPending {
		return e, true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
	e, err := st.GetEnrollment(id)
	return e, err == nil && e.Status != store.EnrollmentPending
}

// initQuota counts the local issuances since the last sync recorded in
// the store.
func (a *Agent) initQuota() error {
	since, ok, err := a.store.GetKVTime(store.KeyLastSync)
	if err != nil {
		return err
	}
	if !ok {
		since = time.Time{}
	}
	n, err := a.store.CountIssuedSince(since)
	if err != nil {
		return err
	}
	a.issuedSinceSync.Store(int64(n))
	return nil
}

// syncedNow restarts the local quota, once per message from the control
// plane: the sync client's LastSync, which every down message moves. It
// runs from onDown, which sees only down messages with updates, and
// before each local issuance and status, which catch the others: after an
// outage the acks of what was issued offline are often the only messages
// (an up-to-date agent's heartbeats get no answer), and a gateway that
// spent its quota offline must not keep refusing once they arrived. The
// time is stored at most every 10 seconds.
func (a *Agent) syncedNow() {
	if a.sync == nil {
		return
	}
	at := a.sync.LastSync()
	if at.IsZero() {
		return
	}
	ms := at.UnixMilli()
	for {
		seen := a.quotaSyncSeen.Load()
		if ms <= seen {
			return // this message restarted the quota already
		}
		if a.quotaSyncSeen.CompareAndSwap(seen, ms) {
			break
		}
	}
	a.issuedSinceSync.Store(0)
	if last := a.lastSyncStored.Load(); ms-last < 10_000 {
		return
	}
	a.lastSyncStored.Store(ms)
	if err := a.store.SetKVTime(store.KeyLastSync, at); err != nil {
		a.log.Warn("recording the last sync", "err", err)
	}
}

package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/proto/syncpb"
)

// minResponderValidity: an edge CA with less life left than this does not
// certify a responder (its renewal is due; the next edge CA will).
const minResponderValidity = time.Hour

// signResponder answers the control plane's ResponderRequest: the edge CA
// certifies the control plane's OCSP responder key (RFC 6960 4.2.2.2), so
// that the control plane answers OCSP for the certificates this gateway
// issued while the edge CA key stays here. The certificate goes back as a
// ResponderCertificate record through the outbox. The agent, not the
// request, chooses the subject and the validity (the issuer's default,
// clipped to the edge CA's). A request for another CA than the installed
// edge CA is ignored: there is no key to sign with.
func (a *Agent) signResponder(ctx context.Context, u *syncpb.ResponderRequest) error {
	edge := a.edge.current()
	if edge == nil || edge.edgeCAID() != u.GetCaId() {
		a.log.Info("ignoring an ocsp responder request for a CA that is not this gateway's current edge CA", "ca_id", u.GetCaId())
		return nil
	}
	now := time.Now()
	if edge.Cert.NotAfter.Sub(now) < minResponderValidity {
		a.log.Warn("not certifying an ocsp responder: the edge CA expires within the hour", "ca_id", u.GetCaId(), "not_after", edge.Cert.NotAfter)
		return nil
	}
	// Heartbeat replies offer the request again until the control plane
	// installed the answer; an answer still in the outbox needs no new
	// signature.
	sum := sha256.Sum256(u.GetCsrDer())
	recID := "responder-" + hex.EncodeToString(sum[:16])
	if a.responderAnswered(recID, now) {
		return nil
	}
	csr, err := x509.ParseCertificateRequest(u.GetCsrDer())
	if err != nil {
		return fmt.Errorf("ocsp responder request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("ocsp responder request: csr signature: %w", err)
	}
	cert, err := issuer.CreateOCSPResponder(edge.Cert, edge.Key, csr.PublicKey, issuer.OCSPResponderOptions{
		Subject: pkix.Name{CommonName: "OCSP responder for " + edge.Cert.Subject.CommonName}, Now: now,
	})
	if err != nil {
		return fmt.Errorf("certifying the ocsp responder: %w", err)
	}
	// One record per request: a request offered again maps to the same
	// record id, which the outbox and the control plane each take once.
	b, err := proto.Marshal(&syncpb.Record{RecordId: recID, Payload: &syncpb.Record_ResponderCertificate{ResponderCertificate: &syncpb.ResponderCertificate{
		CaId: u.GetCaId(), CertificateDer: cert.Raw,
	}}})
	if err != nil {
		return err
	}
	if err := a.store.Enqueue(ctx, store.OutboxRecord{ID: recID, Payload: b}); err != nil {
		return fmt.Errorf("queueing the ocsp responder certificate: %w", err)
	}
	a.answeredMu.Lock()
	a.answered[recID] = now
	a.answeredMu.Unlock()
	a.log.Info("certified the control plane's ocsp responder for the edge CA", "ca_id", u.GetCaId(), "serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter)
	a.sync.Kick()
	return nil
}

// answerAgainAfter is how long a responder request already answered is
// not signed again (the answer is in the outbox or applied; after this, a
// request still offered is answered anew in case the record was lost).
const answerAgainAfter = 10 * time.Minute

// responderAnswered reports whether recID was answered within
// answerAgainAfter, and forgets older answers.
func (a *Agent) responderAnswered(recID string, now time.Time) bool {
	a.answeredMu.Lock()
	defer a.answeredMu.Unlock()
	if a.answered == nil {
		a.answered = map[string]time.Time{}
	}
	for id, at := range a.answered {
		if now.Sub(at) > answerAgainAfter {
			delete(a.answered, id)
		}
	}
	_, ok := a.answered[recID]
	return ok
}

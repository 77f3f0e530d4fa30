package ocspresponder

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/internal/keystore"
)

// Responses for certificates of CAs whose key the control plane does not
// hold (edge CAs on gateways): the control plane keeps the responder key,
// the CA signs the responder certificate.

// ErrNotDelegated is returned by InstallDelegated without a pending request.
var ErrNotDelegated = errors.New("ocsp: no pending responder request for this CA")

// PrepareDelegated makes a responder key for CA caID and returns a CSR for
// it (subject "OCSP responder for <CA>"), to be signed by the CA as an
// OCSP responder certificate (id-kp-OCSPSigning, id-pkix-ocsp-nocheck).
// Calling it again replaces a pending request.
func (r *Responder) PrepareDelegated(ctx context.Context, caID uuid.UUID) ([]byte, error) {
	var caDER []byte
	if err := r.Reg.Pool().QueryRow(ctx, `SELECT cert_der FROM cas WHERE id = $1`, caID).Scan(&caDER); err != nil {
		return nil, fmt.Errorf("ocsp: ca %s: %w", caID, err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("ocsp-%s-%d", caID, r.now().UnixNano())
	key, err := r.Keys.Generate(ctx, name, keystore.ECDSAP256)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "OCSP responder for " + ca.Subject.CommonName},
	}, key)
	if err != nil {
		_ = r.Keys.Delete(ctx, name)
		return nil, err
	}
	var old *string
	err = r.Reg.Tx(ctx, func(tx pgx.Tx) error {
		_ = tx.QueryRow(ctx, `SELECT key_ref FROM ocsp_responder_requests WHERE ca_id = $1`, caID).Scan(&old)
		_, err := tx.Exec(ctx, `INSERT INTO ocsp_responder_requests (ca_id, key_ref, csr_der) VALUES ($1,$2,$3)
			ON CONFLICT (ca_id) DO UPDATE SET key_ref = EXCLUDED.key_ref, csr_der = EXCLUDED.csr_der, created_at = now()`, caID, name, csr)
		return err
	})
	if err != nil {
		_ = r.Keys.Delete(ctx, name)
		return nil, err
	}
	if old != nil {
		_ = r.Keys.Delete(ctx, *old)
	}
	return csr, nil
}

// pendingReuse is how long a pending responder request is offered again
// (on every heartbeat of the CA's gateway) before a fresh key replaces it.
const pendingReuse = time.Hour

// DelegationRequest returns the CSR that edge CA caID should sign as its
// OCSP responder, or nil when the CA's responder certificate has more
// than a third of its lifetime left. A pending request younger than an
// hour is returned again (its key is kept); an older one is replaced.
// Safe for concurrent use; two replicas racing may each prepare a
// request, the later one wins and a certificate for the earlier key is
// refused by InstallDelegated (the gateway is asked again).
func (r *Responder) DelegationRequest(ctx context.Context, caID uuid.UUID) ([]byte, error) {
	now := r.now()
	var der []byte
	err := r.Reg.Pool().QueryRow(ctx, `SELECT cert_der FROM ocsp_responders WHERE ca_id = $1`, caID).Scan(&der)
	if err == nil {
		if cert, perr := x509.ParseCertificate(der); perr == nil {
			life := cert.NotAfter.Sub(cert.NotBefore)
			if cert.NotAfter.Sub(now) > life/3 {
				return nil, nil
			}
		}
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("ocsp: responder of ca %s: %w", caID, err)
	}
	var csr []byte
	var created time.Time
	err = r.Reg.Pool().QueryRow(ctx, `SELECT csr_der, created_at FROM ocsp_responder_requests WHERE ca_id = $1`, caID).Scan(&csr, &created)
	if err == nil && now.Sub(created) < pendingReuse {
		return csr, nil
	} else if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("ocsp: pending responder request of ca %s: %w", caID, err)
	}
	return r.PrepareDelegated(ctx, caID)
}

// InstallDelegated accepts the responder certificate the CA signed for
// the pending request: it must be issued by the CA, be for the pending
// key, carry id-kp-OCSPSigning, and be valid now.
func (r *Responder) InstallDelegated(ctx context.Context, caID uuid.UUID, certDER []byte) error {
	return r.Reg.Tx(ctx, func(tx pgx.Tx) error { return r.InstallDelegatedTx(ctx, tx, caID, certDER) })
}

// InstallDelegatedTx is InstallDelegated in the caller's transaction. A
// certificate that is not acceptable is an *InvalidResponderError; no
// pending request is ErrNotDelegated.
func (r *Responder) InstallDelegatedTx(ctx context.Context, tx pgx.Tx, caID uuid.UUID, certDER []byte) error {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return &InvalidResponderError{Reason: "does not parse: " + err.Error()}
	}
	var keyRef string
	var caDER []byte
	err = tx.QueryRow(ctx, `SELECT q.key_ref, c.cert_der FROM ocsp_responder_requests q JOIN cas c ON c.id = q.ca_id WHERE q.ca_id = $1`, caID).Scan(&keyRef, &caDER)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotDelegated
	} else if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return &InvalidResponderError{Reason: "not signed by the CA: " + err.Error()}
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return &InvalidResponderError{Reason: "lacks id-kp-OCSPSigning"}
	}
	now := r.now()
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return &InvalidResponderError{Reason: "not valid now"}
	}
	pub, err := r.Keys.Public(ctx, keyRef)
	if err != nil {
		return err
	}
	want, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	if !bytes.Equal(want, cert.RawSubjectPublicKeyInfo) {
		return &InvalidResponderError{Reason: "for another key than the pending request's (a newer request replaced it)"}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO ocsp_responders (ca_id, key_ref, cert_der, not_after) VALUES ($1,$2,$3,$4)
		ON CONFLICT (ca_id) DO UPDATE SET key_ref = EXCLUDED.key_ref, cert_der = EXCLUDED.cert_der, not_after = EXCLUDED.not_after, created_at = now()`,
		caID, keyRef, cert.Raw, cert.NotAfter); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `DELETE FROM ocsp_responder_requests WHERE ca_id = $1`, caID)
	r.mu.Lock()
	delete(r.responders, caID)
	r.casLoaded = time.Time{}
	r.mu.Unlock()
	return err
}

// InvalidResponderError: a responder certificate InstallDelegated refuses.
type InvalidResponderError struct{ Reason string }

func (e *InvalidResponderError) Error() string { return "ocsp: responder certificate " + e.Reason }

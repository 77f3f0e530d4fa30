package caservice

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/audit"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/csrcheck"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/keystore"
)

// DMS identities: issuance (bootstrap and renewal over the sync link),
// the check every mTLS entry point (API, embedded broker) makes, and the
// control plane's own service certificates from the DMS manager CA.

// Revocation reasons used here (RFC 5280 5.3.1).
const (
	reasonSuperseded         = 4
	reasonPrivilegeWithdrawn = 9
)

// ErrIdentityRefused wraps every reason CheckDMSIdentity refuses a
// certificate for (as opposed to a database error).
var ErrIdentityRefused = errors.New("DMS identity refused")

// ErrDMSDisabled is CheckDMSIdentity's refusal of a DMS an operator
// disabled; it wraps ErrIdentityRefused. It is checked before the
// certificate (disabling revokes it), so a disabled DMS is told so.
var ErrDMSDisabled = fmt.Errorf("%w: the DMS is disabled", ErrIdentityRefused)

// CheckDMSIdentity decides whether cert, already verified against the DMS
// manager CA, may act as DMS dmsID: the DMS is active and cert is one of
// its identity certificates in the registry, not revoked. During an
// identity renewal the old and the new certificate are both accepted until
// the agent reports the new one installed (then the old one is revoked as
// superseded). Refusals wrap ErrIdentityRefused; other errors mean the
// registry could not be asked.
func (s *Service) CheckDMSIdentity(ctx context.Context, dmsID uuid.UUID, cert *x509.Certificate) error {
	d, err := s.Reg.GetDMS(ctx, dmsID)
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("%w: unknown DMS", ErrIdentityRefused)
	} else if err != nil {
		return err
	}
	if d.Status == "disabled" {
		return ErrDMSDisabled
	}
	if d.Status != "active" {
		return fmt.Errorf("%w: the DMS is %s", ErrIdentityRefused, d.Status)
	}
	c, err := s.Reg.GetCertificate(ctx, hexSerial(cert))
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("%w: the certificate is not in the registry", ErrIdentityRefused)
	} else if err != nil {
		return err
	}
	switch {
	case c.Profile != "dms" || c.DMSID == nil || *c.DMSID != dmsID || !bytes.Equal(c.DER, cert.Raw):
		return fmt.Errorf("%w: the certificate is not an identity of this DMS", ErrIdentityRefused)
	case c.Status == "revoked":
		return fmt.Errorf("%w: the DMS certificate is revoked", ErrIdentityRefused)
	}
	return nil
}

// issueDMSIdentity issues an identity certificate for dmsID from the DMS
// manager CA in transaction q and records it. It returns the certificate
// and its chain (issuing CA first).
func (s *Service) issueDMSIdentity(ctx context.Context, q *registry.Queries, dmsID uuid.UUID, csr *x509.CertificateRequest, now time.Time) (*registry.Certificate, []*registry.CA, error) {
	ca, iss, err := s.managerIssuer(ctx, q, now)
	if err != nil {
		return nil, nil, err
	}
	// The identity carries the manager CA's OCSP and CRL URLs like any
	// certificate the control plane issues: a relying party other than
	// our broker (an external broker, a peer) can see it revoked when the
	// DMS is disabled.
	prof, _ := s.profile("dms")
	prof = s.withURLs(prof, ca.ID)
	cert, err := iss.Issue(csr, prof, issuer.Request{DeviceID: dmsID.String()})
	if err != nil {
		var ie *issuer.Error
		if errors.As(err, &ie) && ie.Reason.ClientFault() {
			return nil, nil, &Error{Kind: KindInvalid, Field: "csr_pem", Message: ie.Public(), Err: err}
		}
		return nil, nil, err
	}
	rec := recordFor(cert, ca.ID, prof.Name, "", &dmsID)
	if err := q.InsertCertificate(ctx, rec); err != nil {
		return nil, nil, err
	}
	chain, err := ChainOf(ctx, q, ca)
	if err != nil {
		return nil, nil, err
	}
	return rec, chain, nil
}

// managerIssuer is the DMS manager CA (it issues DMS identities and the
// control plane's and agents' TLS server certificates) with its key, as
// an issuer at now.
func (s *Service) managerIssuer(ctx context.Context, q *registry.Queries, now time.Time) (*registry.CA, *issuer.Issuer, error) {
	mgr, err := q.GetCAByRole(ctx, "dms_manager")
	if err != nil {
		return nil, nil, err
	}
	ca, key, err := s.activeCAWithKey(ctx, q, mgr.ID, "")
	if err != nil {
		return nil, nil, err
	}
	caCert, err := x509.ParseCertificate(ca.CertDER)
	if err != nil {
		return nil, nil, err
	}
	return ca, &issuer.Issuer{Cert: caCert, Signer: key, Now: func() time.Time { return now }}, nil
}

// ChainOf returns ca and its ancestors, ca first.
func ChainOf(ctx context.Context, q *registry.Queries, ca *registry.CA) ([]*registry.CA, error) {
	chain := []*registry.CA{ca}
	for p := ca.ParentID; p != nil; {
		pc, err := q.GetCA(ctx, *p)
		if err != nil {
			return nil, err
		}
		chain = append(chain, pc)
		p = pc.ParentID
	}
	return chain, nil
}

// RenewDMSIdentityTx issues a new identity certificate for DMS dmsID
// (already known to be active) from a CSR the agent sent over the sync
// link, inside the caller's transaction. The CSR must carry a fresh key:
// one no identity certificate of this DMS was issued for. A refusal is an
// *Error of kind invalid; other errors abort the transaction.
func (s *Service) RenewDMSIdentityTx(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, csrDER []byte, now time.Time) (*registry.Certificate, []*registry.CA, error) {
	csr, err := csrcheck.Parse(csrDER, csrcheck.DefaultPolicy())
	if err != nil {
		var ce *csrcheck.Error
		if errors.As(err, &ce) {
			return nil, nil, &Error{Kind: KindInvalid, Field: "csr", Message: ce.Public(), Err: err}
		}
		return nil, nil, invalid("csr", "the CSR could not be read")
	}
	q := registry.On(tx)
	spki, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	if err != nil {
		return nil, nil, invalid("csr", "the CSR's public key cannot be encoded")
	}
	reused, err := keyUsedBefore(ctx, tx, dmsID, spki)
	if err != nil {
		return nil, nil, err
	}
	if reused {
		return nil, nil, invalid("csr", "an identity renewal needs a fresh key; this one was certified before")
	}
	rec, chain, err := s.issueDMSIdentity(ctx, q, dmsID, csr, now)
	if err != nil {
		return nil, nil, err
	}
	if err := q.AddEvent(ctx, &registry.Event{DMSID: &dmsID, Kind: "dms.identity_renewed", Detail: map[string]any{"serial": rec.Serial}}); err != nil {
		return nil, nil, err
	}
	if _, err := audit.Append(ctx, tx, now, "dms:"+dmsID.String(), "dms.identity_renew", dmsID.String(), map[string]any{"serial": rec.Serial}); err != nil {
		return nil, nil, err
	}
	return rec, chain, nil
}

// keyUsedBefore reports whether an identity certificate of dmsID was
// issued for the public key spki (a DMS has a handful of them).
func keyUsedBefore(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, spki []byte) (bool, error) {
	rows, err := tx.Query(ctx, `SELECT der FROM certificates WHERE dms_id = $1 AND profile = 'dms'`, dmsID)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	for rows.Next() {
		var der []byte
		if err := rows.Scan(&der); err != nil {
			return false, err
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			continue
		}
		if bytes.Equal(c.RawSubjectPublicKeyInfo, spki) {
			return true, nil
		}
	}
	return false, rows.Err()
}

// IdentityInstalledTx records that the agent of dmsID now uses identity
// certificate serial (it said so over the sync link): the DMS's identity
// becomes that certificate, and every other unrevoked identity
// certificate of the DMS is revoked as superseded. It returns the revoked
// serials and their CAs (for the post-commit hooks). Idempotent.
func (s *Service) IdentityInstalledTx(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, serial string, now time.Time) (revoked []string, cas []uuid.UUID, err error) {
	q := registry.On(tx)
	c, err := q.GetCertificate(ctx, serial)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, nil, invalid("serial", "no identity certificate %s", serial)
	} else if err != nil {
		return nil, nil, err
	}
	if c.Profile != "dms" || c.DMSID == nil || *c.DMSID != dmsID || c.Status == "revoked" {
		return nil, nil, invalid("serial", "certificate %s is not a valid identity of this DMS", serial)
	}
	if err := q.SetDMSIdentity(ctx, dmsID, c.Serial, c.NotAfter); err != nil {
		return nil, nil, err
	}
	rows, err := tx.Query(ctx, `SELECT serial FROM certificates WHERE dms_id = $1 AND profile = 'dms' AND status <> 'revoked' AND serial <> $2`, dmsID, c.Serial)
	if err != nil {
		return nil, nil, err
	}
	var old []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return nil, nil, err
		}
		old = append(old, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	for _, o := range old {
		rc, err := q.RevokeCertificate(ctx, o, reasonSuperseded, now)
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return nil, nil, err
		}
		if rc != nil {
			revoked = append(revoked, rc.Serial)
			cas = append(cas, rc.IssuerID)
		}
	}
	if len(revoked) > 0 {
		if _, err := audit.Append(ctx, tx, now, "dms:"+dmsID.String(), "dms.identity_installed", dmsID.String(), map[string]any{"serial": c.Serial, "superseded": revoked}); err != nil {
			return nil, nil, err
		}
	}
	return revoked, cas, nil
}

// RevokedAfterCommit runs the revocation hooks (OCSP caches, delta CRLs)
// for revocations a caller committed in its own transaction.
func (s *Service) RevokedAfterCommit(ctx context.Context, cas []uuid.UUID, serials []string) {
	if len(serials) > 0 {
		s.revoked(ctx, cas, serials)
	}
}

// ServiceCertificate issues one of the control plane's own TLS
// certificates from the DMS manager CA (the anchor agents already hold):
// the embedded broker's server certificate, or the sync consumer's client
// certificate. The key is keyName in the key store (created on first use,
// never exported); the certificate is recorded in the registry (profile
// "service") so it can be found and revoked like any other. hosts become
// DNS or IP subjectAltNames.
func (s *Service) ServiceCertificate(ctx context.Context, keyName, commonName string, hosts []string, usage x509.ExtKeyUsage, validity time.Duration) (*tls.Certificate, error) {
	key, err := s.Keys.Load(ctx, keyName)
	if errors.Is(err, keystore.ErrNotFound) {
		key, err = s.Keys.Generate(ctx, keyName, keystore.ECDSAP256)
		if errors.Is(err, keystore.ErrExists) { // another replica was first
			key, err = s.Keys.Load(ctx, keyName)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("service key %s: %w", keyName, err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("service certificate request: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	prof := issuer.DefaultDeviceProfile()
	prof.Name = "service"
	prof.Validity = validity
	prof.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	prof.Subject = issuer.SubjectTemplate{CommonName: commonName}
	prof.SANs = issuer.SANPolicy{DNS: []string{"**"}, IPRanges: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	var out *tls.Certificate
	err = s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		now := s.now()
		ca, iss, err := s.managerIssuer(ctx, q, now)
		if err != nil {
			return err
		}
		cert, err := iss.Issue(csr, prof, issuer.Request{})
		if err != nil {
			return err
		}
		if err := q.InsertCertificate(ctx, recordFor(cert, ca.ID, prof.Name, "", nil)); err != nil {
			return err
		}
		if _, err := audit.Append(ctx, tx, now, "controlplane", "certificate.issue", hexSerial(cert), map[string]any{"ca_id": ca.ID.String(), "profile": prof.Name, "common_name": commonName}); err != nil {
			return err
		}
		chain, err := ChainOf(ctx, q, ca)
		if err != nil {
			return err
		}
		out = &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: crypto.Signer(key), Leaf: cert}
		for _, c := range chain {
			out.Certificate = append(out.Certificate, c.CertDER)
		}
		return nil
	})
	return out, err
}

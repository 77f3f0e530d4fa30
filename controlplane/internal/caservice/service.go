// Package caservice is the control plane's CA service: bootstrap of its own
// CAs, CA hierarchy management, issuance, revocation, DMSs, devices and
// API tokens. Every change and its audit row commit in one transaction.
//
// It holds no state of its own: several replicas can run it against one
// database and one shared key store (a network HSM, or a key directory on
// shared storage).
package caservice

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/audit"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/csrcheck"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/keystore"
)

// Service is the CA service.
type Service struct {
	Reg  *registry.Registry
	Keys keystore.Store
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// Profiles by name; "device" and "dms" are always present.
	Profiles map[string]*issuer.Profile
	Log      *slog.Logger
	// KeyAlgorithm for generated CA keys; default ecdsa-p256.
	KeyAlgorithm keystore.Algorithm
	// PublicURL is the control plane's base URL as relying parties reach
	// it (e.g. http://pki.example.com). When set, issued certificates
	// carry its OCSP URL (PublicURL/ocsp) and their CA's CRL distribution
	// point (PublicURL/crl/<ca-id>.crl).
	PublicURL string
	// OnRevoked, if set, is called after a revocation committed, with
	// the CAs whose CRLs changed and the serials revoked (for caches).
	OnRevoked func(ctx context.Context, caIDs []uuid.UUID, serials []string)
	// OnDMSDisabled, if set, is called after a DMS was disabled (the
	// embedded broker drops its connection).
	OnDMSDisabled func(id uuid.UUID)
}

// withURLs returns a copy of p with the revocation URLs of CA caID.
func (s *Service) withURLs(p *issuer.Profile, caID uuid.UUID) *issuer.Profile {
	if s.PublicURL == "" {
		return p
	}
	cp := *p
	base := strings.TrimRight(s.PublicURL, "/")
	cp.OCSPServers = []string{base + "/ocsp"}
	cp.CRLDistributionPoints = []string{base + "/crl/" + caID.String() + ".crl"}
	return &cp
}

func (s *Service) revoked(ctx context.Context, cas []uuid.UUID, serials []string) {
	if s.OnRevoked != nil {
		s.OnRevoked(ctx, cas, serials)
	}
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Service) profile(name string) (*issuer.Profile, error) {
	if name == "" {
		name = "device"
	}
	if p, ok := s.Profiles[name]; ok {
		return p, nil
	}
	switch name {
	case "device":
		return defaultDeviceProfile(), nil
	case "dms":
		return dmsProfile(), nil
	}
	return nil, invalid("profile", "unknown profile %q", name)
}

// defaultDeviceProfile allows any well-formed DNS, IP, URI or email SAN:
// the CA's own name constraints and per-DMS policy narrow it.
func defaultDeviceProfile() *issuer.Profile {
	p := issuer.DefaultDeviceProfile()
	p.SANs = issuer.SANPolicy{DNS: []string{"**"}, URI: []string{"spiffe://**/**", "urn://**/**"}, Email: []string{"**"}, IPRanges: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	return p
}

// dmsProfile issues DMS identity certificates: the common name is the DMS
// id, nothing the CSR asks for is copied.
func dmsProfile() *issuer.Profile {
	p := issuer.DefaultDeviceProfile()
	p.Name = "dms"
	p.Validity = 365 * 24 * time.Hour
	p.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	p.HonourExtensions = []string{issuer.ExtensionNone}
	p.Subject = issuer.SubjectTemplate{CommonName: "{{.DeviceID}}", Organization: []string{"Outpost DMS"}}
	return p
}

// Actor is who asks for a change, recorded in the audit log.
type Actor string

func hexSerial(c *x509.Certificate) string { return strings.ToLower(c.SerialNumber.Text(16)) }

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// CertPEM encodes DER as PEM.
func CertPEM(der []byte) string { return certPEM(der) }

// --- bootstrap --------------------------------------------------------

// BootstrapConfig names the CAs created at first start.
type BootstrapConfig struct {
	Organization         string
	RootCommonName       string
	IssuingCommonName    string
	DMSManagerCommonName string
}

// bootstrapLock is the advisory lock key of the bootstrap ("OUTPBOOT").
const bootstrapLock int64 = 0x4f555450424f4f54

// Bootstrap creates, once per database, the root CA, the issuing CA and
// the DMS manager CA. It runs under an advisory lock: replicas starting
// together wait for the first, then find the CAs and create nothing. It
// reports whether this call created them.
func (s *Service) Bootstrap(ctx context.Context, cfg BootstrapConfig) (bool, error) {
	created := false
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		created = false
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, bootstrapLock); err != nil {
			return err
		}
		q := registry.On(tx)
		if _, err := q.GetCAByRole(ctx, "bootstrap_root"); err == nil {
			return nil
		} else if !errors.Is(err, registry.ErrNotFound) {
			return err
		}
		now := s.now()
		org := []string{cfg.Organization}
		root, rootKey, err := s.newCA(ctx, q, nil, nil, "bootstrap-root", "bootstrap_root", pkix.Name{CommonName: cfg.RootCommonName, Organization: org}, 20*365*24*time.Hour, -1, now)
		if err != nil {
			return fmt.Errorf("bootstrap root ca: %w", err)
		}
		if _, _, err := s.newCA(ctx, q, root, rootKey, "bootstrap-issuing", "bootstrap_issuing", pkix.Name{CommonName: cfg.IssuingCommonName, Organization: org}, 10*365*24*time.Hour, 0, now); err != nil {
			return fmt.Errorf("bootstrap issuing ca: %w", err)
		}
		if _, _, err := s.newCA(ctx, q, root, rootKey, "dms-manager", "dms_manager", pkix.Name{CommonName: cfg.DMSManagerCommonName, Organization: org}, 10*365*24*time.Hour, 0, now); err != nil {
			return fmt.Errorf("bootstrap dms manager ca: %w", err)
		}
		if _, err := audit.Append(ctx, tx, now, "system", "ca.bootstrap", root.Name, map[string]any{"root_id": root.ID.String()}); err != nil {
			return err
		}
		created = true
		return nil
	})
	if err == nil && created {
		s.log().Info("bootstrapped the control plane CAs")
	}
	return created, err
}

// newCA generates a key and a certificate and records the CA. parent nil
// makes a root.
func (s *Service) newCA(ctx context.Context, q *registry.Queries, parent *registry.CA, parentKey crypto.Signer, name, role string, subject pkix.Name, validity time.Duration, maxPathLen int, now time.Time) (*registry.CA, crypto.Signer, error) {
	alg := s.KeyAlgorithm
	if alg == "" {
		alg = keystore.ECDSAP256
	}
	id := uuid.New()
	keyName := "ca-" + id.String()
	key, err := s.Keys.Generate(ctx, keyName, alg)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ca key: %w", err)
	}
	opts := issuer.CAOptions{Subject: subject, Now: now, Validity: validity, MaxPathLen: maxPathLen}
	if parent != nil && s.PublicURL != "" {
		// A sub-CA's status is on its parent's CRL and OCSP.
		base := strings.TrimRight(s.PublicURL, "/")
		opts.OCSPServers = []string{base + "/ocsp"}
		opts.CRLDistributionPoints = []string{base + "/crl/" + parent.ID.String() + ".crl"}
	}
	var cert *x509.Certificate
	kind := "root"
	var parentID *uuid.UUID
	if parent == nil {
		cert, err = issuer.CreateRoot(key, opts)
	} else {
		pc, perr := x509.ParseCertificate(parent.CertDER)
		if perr != nil {
			return nil, nil, perr
		}
		cert, err = issuer.CreateIntermediate(pc, parentKey, key.Public(), opts)
		kind = "intermediate"
		parentID = &parent.ID
	}
	if err != nil {
		_ = s.Keys.Delete(ctx, keyName)
		return nil, nil, err
	}
	ca := &registry.CA{
		ID: id, Name: name, ParentID: parentID, Kind: kind, KeyRef: &keyName, Status: "active",
		Subject: cert.Subject.String(), Serial: hexSerial(cert), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, CertDER: cert.Raw,
	}
	if role != "" {
		ca.Role = &role
	}
	if err := q.InsertCA(ctx, ca); err != nil {
		_ = s.Keys.Delete(ctx, keyName)
		if errors.Is(err, registry.ErrConflict) {
			return nil, nil, conflict("a CA named %q already exists", name)
		}
		return nil, nil, err
	}
	return ca, key, nil
}

// --- CAs ----------------------------------------------------------------

// CreateCARequest creates a root (ParentID nil) or an intermediate.
type CreateCARequest struct {
	Name         string
	ParentID     *uuid.UUID
	CommonName   string
	KeyAlgorithm string
	ValidityDays int
	MaxPathLen   *int
}

// CreateCA creates a CA with a new key in the key store.
func (s *Service) CreateCA(ctx context.Context, actor Actor, r CreateCARequest) (*registry.CA, error) {
	if strings.TrimSpace(r.Name) == "" {
		return nil, invalid("name", "name is required")
	}
	if strings.TrimSpace(r.CommonName) == "" {
		return nil, invalid("common_name", "common_name is required")
	}
	svc := *s
	if r.KeyAlgorithm != "" {
		alg, err := keystore.ParseAlgorithm(r.KeyAlgorithm)
		if err != nil {
			return nil, invalid("key_algorithm", "%v", err)
		}
		svc.KeyAlgorithm = alg
	}
	days := r.ValidityDays
	maxPath := -1
	if r.ParentID != nil {
		maxPath = 0
	}
	if r.MaxPathLen != nil {
		maxPath = *r.MaxPathLen
	}
	if days == 0 {
		days = 3650
		if r.ParentID != nil {
			days = 1825
		}
	}
	if days < 1 || days > 36500 {
		return nil, invalid("validity_days", "validity_days must be between 1 and 36500")
	}
	var out *registry.CA
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		now := s.now()
		var parent *registry.CA
		var parentKey crypto.Signer
		if r.ParentID != nil {
			var err error
			parent, parentKey, err = s.activeCAWithKey(ctx, q, *r.ParentID, "parent_id")
			if err != nil {
				return err
			}
		}
		ca, _, err := svc.newCA(ctx, q, parent, parentKey, r.Name, "", pkix.Name{CommonName: r.CommonName}, time.Duration(days)*24*time.Hour, maxPath, now)
		if err != nil {
			var ie *issuer.Error
			if errors.As(err, &ie) || strings.Contains(err.Error(), "path length") {
				return invalid("max_path_len", "%v", err)
			}
			return err
		}
		if _, err := audit.Append(ctx, tx, now, string(actor), "ca.create", ca.ID.String(), map[string]any{"name": ca.Name, "kind": ca.Kind}); err != nil {
			return err
		}
		out = ca
		return nil
	})
	return out, err
}

// activeCAWithKey loads a CA that can sign.
func (s *Service) activeCAWithKey(ctx context.Context, q *registry.Queries, id uuid.UUID, field string) (*registry.CA, crypto.Signer, error) {
	ca, err := q.GetCA(ctx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, nil, &Error{Kind: KindInvalid, Field: field, Message: fmt.Sprintf("CA %s does not exist", id)}
	}
	if err != nil {
		return nil, nil, err
	}
	if ca.Status != "active" {
		return nil, nil, conflict("CA %q is %s and cannot sign", ca.Name, ca.Status)
	}
	if ca.KeyRef == nil {
		return nil, nil, conflict("CA %q was imported without its key and cannot sign", ca.Name)
	}
	key, err := s.Keys.Load(ctx, *ca.KeyRef)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the key of CA %q: %w", ca.Name, err)
	}
	return ca, key, nil
}

// ImportCA records an existing CA certificate, with its key if given.
func (s *Service) ImportCA(ctx context.Context, actor Actor, name string, cert *x509.Certificate, key crypto.Signer) (*registry.CA, error) {
	if strings.TrimSpace(name) == "" {
		return nil, invalid("name", "name is required")
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, invalid("certificate_pem", "the certificate is not a CA certificate (basic constraints cA is not set)")
	}
	if key != nil {
		type equaler interface{ Equal(crypto.PublicKey) bool }
		if pk, ok := cert.PublicKey.(equaler); !ok || !pk.Equal(key.Public()) {
			return nil, invalid("key_pem", "the private key does not belong to the certificate")
		}
	}
	var out *registry.CA
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		now := s.now()
		ca := &registry.CA{ID: uuid.New(), Name: name, Status: "active", Subject: cert.Subject.String(), Serial: hexSerial(cert),
			NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, CertDER: cert.Raw}
		switch parent, err := s.findIssuer(ctx, q, cert); {
		case err != nil:
			return err
		case parent != nil:
			ca.ParentID, ca.Kind = &parent.ID, "intermediate"
		case cert.CheckSignatureFrom(cert) == nil:
			ca.Kind = "root"
		default:
			ca.Kind = "external"
		}
		if !now.Before(cert.NotAfter) {
			ca.Status = "expired"
		}
		if key != nil {
			ki, ok := s.Keys.(keystore.Importer)
			if !ok {
				return &Error{Kind: KindInvalid, Field: "key_pem", Message: "the configured key store (an HSM) cannot import private keys: import the certificate alone, or load the key with the HSM vendor's tools"}
			}
			keyName := "ca-" + ca.ID.String()
			if err := ki.Import(ctx, keyName, key); err != nil {
				return err
			}
			ca.KeyRef = &keyName
		}
		if err := q.InsertCA(ctx, ca); err != nil {
			if errors.Is(err, registry.ErrConflict) {
				return conflict("a CA named %q already exists", name)
			}
			return err
		}
		if _, err := audit.Append(ctx, tx, now, string(actor), "ca.import", ca.ID.String(), map[string]any{"name": name, "with_key": key != nil}); err != nil {
			return err
		}
		out = ca
		return nil
	})
	return out, err
}

// findIssuer finds the known CA that signed cert, or nil.
func (s *Service) findIssuer(ctx context.Context, q *registry.Queries, cert *x509.Certificate) (*registry.CA, error) {
	cands, err := q.FindCAsBySubject(ctx, cert.Issuer.String())
	if err != nil {
		return nil, err
	}
	for _, c := range cands {
		pc, err := x509.ParseCertificate(c.CertDER)
		if err != nil {
			continue
		}
		if pc.Equal(cert) {
			continue
		}
		if cert.CheckSignatureFrom(pc) == nil {
			return c, nil
		}
	}
	return nil, nil
}

// RevokeCA revokes a CA and, in the same transaction, every CA below it
// and every certificate they issued.
func (s *Service) RevokeCA(ctx context.Context, actor Actor, id uuid.UUID, reason int) ([]uuid.UUID, int64, error) {
	var ids []uuid.UUID
	var n int64
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		ca, err := q.GetCA(ctx, id)
		if err != nil {
			return err
		}
		if ca.Role != nil {
			return &Error{Kind: KindForbidden, Message: fmt.Sprintf("CA %q is one of the control plane's own CAs (%s) and cannot be revoked through the API", ca.Name, *ca.Role)}
		}
		now := s.now()
		if ids, err = q.CASubtree(ctx, id); err != nil {
			return err
		}
		if n, err = q.RevokeCAs(ctx, ids, reason, now); err != nil {
			return err
		}
		strs := make([]string, len(ids))
		for i, u := range ids {
			strs[i] = u.String()
		}
		_, err = audit.Append(ctx, tx, now, string(actor), "ca.revoke", id.String(), map[string]any{"cas": strs, "certificates": n, "reason": ReasonName(reason)})
		return err
	})
	if err == nil {
		s.revoked(ctx, ids, nil)
	}
	return ids, n, err
}

// --- certificates -----------------------------------------------------

// IssueRequest issues a certificate from a CSR.
type IssueRequest struct {
	CAID     uuid.UUID
	CSR      []byte // PEM or DER
	Profile  string
	DeviceID string
	DMSID    *uuid.UUID
}

// Issue validates the CSR, signs it with the CA under the profile, and
// records the certificate (and the device slot) with its audit row.
func (s *Service) Issue(ctx context.Context, actor Actor, r IssueRequest) (*registry.Certificate, error) {
	csr, err := parseIssueCSR(r.CSR)
	if err != nil {
		return nil, err
	}
	if _, err := s.profile(r.Profile); err != nil {
		return nil, err
	}
	var out *registry.Certificate
	err = s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		rec, _, err := s.issueTx(ctx, tx, actor, r, csr, s.now())
		out = rec
		return err
	})
	return out, err
}

// IssueTx is Issue inside the caller's transaction, at time now: it
// signs, records the certificate, puts it into the device's slot with a
// "certificate.issued" device event, and appends the audit row. It
// returns the certificate and the CA that signed it. A refusal is an
// *Error (invalid: the CSR, the profile, an unknown device; conflict: the
// CA cannot sign, the device is decommissioned); other errors abort the
// transaction.
func (s *Service) IssueTx(ctx context.Context, tx pgx.Tx, actor Actor, r IssueRequest, now time.Time) (*registry.Certificate, *registry.CA, error) {
	csr, err := parseIssueCSR(r.CSR)
	if err != nil {
		return nil, nil, err
	}
	return s.issueTx(ctx, tx, actor, r, csr, now)
}

func parseIssueCSR(b []byte) (*x509.CertificateRequest, error) {
	csr, err := csrcheck.ParsePEMOrDER(b, csrcheck.DefaultPolicy())
	if err != nil {
		var ce *csrcheck.Error
		if errors.As(err, &ce) {
			return nil, &Error{Kind: KindInvalid, Field: "csr_pem", Message: ce.Public(), Err: err}
		}
		return nil, invalid("csr_pem", "the CSR could not be read")
	}
	return csr, nil
}

func (s *Service) issueTx(ctx context.Context, tx pgx.Tx, actor Actor, r IssueRequest, csr *x509.CertificateRequest, now time.Time) (*registry.Certificate, *registry.CA, error) {
	prof, err := s.profile(r.Profile)
	if err != nil {
		return nil, nil, err
	}
	q := registry.On(tx)
	ca, key, err := s.activeCAWithKey(ctx, q, r.CAID, "ca_id")
	if err != nil {
		return nil, nil, err
	}
	if r.DeviceID != "" {
		d, err := q.LockDevice(ctx, r.DeviceID)
		if errors.Is(err, registry.ErrNotFound) {
			return nil, nil, invalid("device_id", "device %q is not registered", r.DeviceID)
		} else if err != nil {
			return nil, nil, err
		}
		if d.Status == "decommissioned" {
			return nil, nil, conflict("device %q is decommissioned", r.DeviceID)
		}
	}
	if r.DMSID != nil {
		if _, err := q.GetDMS(ctx, *r.DMSID); errors.Is(err, registry.ErrNotFound) {
			return nil, nil, invalid("dms_id", "DMS %s does not exist", r.DMSID)
		} else if err != nil {
			return nil, nil, err
		}
	}
	caCert, err := x509.ParseCertificate(ca.CertDER)
	if err != nil {
		return nil, nil, err
	}
	iss := &issuer.Issuer{Cert: caCert, Signer: key, Now: func() time.Time { return now }}
	cert, err := iss.Issue(csr, s.withURLs(prof, ca.ID), issuer.Request{DeviceID: r.DeviceID})
	if err != nil {
		var ie *issuer.Error
		if errors.As(err, &ie) && ie.Reason.ClientFault() {
			return nil, nil, &Error{Kind: KindInvalid, Field: "csr_pem", Message: ie.Public(), Err: err}
		}
		return nil, nil, err
	}
	rec := recordFor(cert, ca.ID, prof.Name, r.DeviceID, r.DMSID)
	if err := q.InsertCertificate(ctx, rec); err != nil {
		return nil, nil, err
	}
	if r.DeviceID != "" {
		if err := q.AddToSlot(ctx, r.DeviceID, ca.ID, rec.Serial); err != nil {
			return nil, nil, err
		}
		if err := q.AddEvent(ctx, &registry.Event{DeviceID: &r.DeviceID, DMSID: r.DMSID, CAID: &ca.ID, Kind: "certificate.issued", Detail: map[string]any{"serial": rec.Serial, "ca_id": ca.ID.String()}}); err != nil {
			return nil, nil, err
		}
	}
	if _, err := audit.Append(ctx, tx, now, string(actor), "certificate.issue", rec.Serial, map[string]any{"ca_id": ca.ID.String(), "profile": prof.Name, "device_id": r.DeviceID}); err != nil {
		return nil, nil, err
	}
	return rec, ca, nil
}

func recordFor(cert *x509.Certificate, caID uuid.UUID, profile, deviceID string, dmsID *uuid.UUID) *registry.Certificate {
	rec := &registry.Certificate{
		Serial: hexSerial(cert), IssuerID: caID, Subject: cert.Subject.String(), CommonName: cert.Subject.CommonName,
		SANs: sansOf(cert), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Status: "active", DMSID: dmsID, Profile: profile, DER: cert.Raw,
	}
	if deviceID != "" {
		rec.DeviceID = &deviceID
	}
	return rec
}

// sansOf lists a certificate's SANs as strings (DNS names, IPs, URIs,
// emails) for search.
func sansOf(c *x509.Certificate) []string {
	out := append([]string{}, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return append(out, c.EmailAddresses...)
}

// ImportCertificate records an existing certificate issued by a known CA.
func (s *Service) ImportCertificate(ctx context.Context, actor Actor, cert *x509.Certificate, deviceID string, dmsID *uuid.UUID) (*registry.Certificate, error) {
	if cert.IsCA {
		return nil, invalid("certificate_pem", "this is a CA certificate: import it as a CA")
	}
	var out *registry.Certificate
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		ca, err := s.findIssuer(ctx, q, cert)
		if err != nil {
			return err
		}
		if ca == nil {
			return invalid("certificate_pem", "the issuer %q is not a known CA: import the CA first", cert.Issuer.String())
		}
		if deviceID != "" {
			if _, err := q.GetDevice(ctx, deviceID); errors.Is(err, registry.ErrNotFound) {
				return invalid("device_id", "device %q is not registered", deviceID)
			} else if err != nil {
				return err
			}
		}
		rec := recordFor(cert, ca.ID, "imported", deviceID, dmsID)
		now := s.now()
		if now.After(cert.NotAfter) {
			rec.Status = "expired"
		}
		if err := q.InsertCertificate(ctx, rec); err != nil {
			if errors.Is(err, registry.ErrConflict) {
				return conflict("certificate %s is already recorded", rec.Serial)
			}
			return err
		}
		if deviceID != "" && rec.Status == "active" {
			if err := q.AddToSlot(ctx, deviceID, ca.ID, rec.Serial); err != nil {
				return err
			}
		}
		if _, err := audit.Append(ctx, tx, now, string(actor), "certificate.import", rec.Serial, map[string]any{"ca_id": ca.ID.String()}); err != nil {
			return err
		}
		out = rec
		return nil
	})
	return out, err
}

// RevokeCertificate revokes one certificate.
func (s *Service) RevokeCertificate(ctx context.Context, actor Actor, serial string, reason int) (*registry.Certificate, error) {
	var out *registry.Certificate
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		now := s.now()
		c, err := q.RevokeCertificate(ctx, serial, reason, now)
		if err != nil {
			return err
		}
		if err := q.AddEvent(ctx, &registry.Event{DeviceID: c.DeviceID, DMSID: c.DMSID, CAID: &c.IssuerID, Kind: "certificate.revoked", Detail: map[string]any{"serial": serial, "reason": ReasonName(reason)}}); err != nil {
			return err
		}
		if _, err := audit.Append(ctx, tx, now, string(actor), "certificate.revoke", serial, map[string]any{"reason": ReasonName(reason)}); err != nil {
			return err
		}
		out = c
		return nil
	})
	if err == nil {
		s.revoked(ctx, []uuid.UUID{out.IssuerID}, []string{out.Serial})
	}
	return out, err
}

// --- tokens --------------------------------------------------------------

// NewSecret returns a random token with a readable prefix and its SHA-256.
func NewSecret(prefix string) (string, []byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	tok := prefix + base64.RawURLEncoding.EncodeToString(b[:])
	h := HashSecret(tok)
	return tok, h, nil
}

// HashSecret is how tokens are stored and looked up: SHA-256. Tokens carry
// 256 random bits, so a fast hash is enough (no dictionary to attack).
func HashSecret(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// ShortHash is a log-safe token fingerprint.
func ShortHash(tok string) string { return hex.EncodeToString(HashSecret(tok)[:4]) }

package caservice

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/audit"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/csrcheck"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/keystore"
)

// What a DMS's agent asks over the sync link besides its identity: the
// delegated edge CA of local mode, and the TLS server certificate of its
// EST endpoint.

// Edge name constraints (DMSPolicy.EdgeNameConstraints), one string each:
//
//	line1.example, .line1.example    DNS domain (and its subdomains)
//	10.1.0.0/16, fd00::/8            IP range, masked CIDR
//	@example.com, ops@example.com    email domain or mailbox (contains "@")
//	uri:example.com                  URI host domain
type nameConstraint struct {
	kind   string // dns | ip | email | uri
	value  string // for dns, email, uri: what goes into the certificate
	prefix netip.Prefix
}

// parseNameConstraint reads one policy name constraint. The domain and
// mailbox rules are the issuer's (issuer.ValidDomainConstraint,
// ValidEmailConstraint), so that a policy that validates always gives an
// edge CA that can be issued (FuzzDMSPolicy checks it).
func parseNameConstraint(s string) (nameConstraint, error) {
	switch {
	case s == "":
		return nameConstraint{}, errors.New("empty")
	case len(s) > maxPolicyString:
		return nameConstraint{}, fmt.Errorf("longer than %d characters", maxPolicyString)
	case strings.HasPrefix(s, "uri:"):
		d := strings.TrimPrefix(s, "uri:")
		if !issuer.ValidDomainConstraint(d) {
			return nameConstraint{}, errors.New(`"uri:" must be followed by a domain, e.g. uri:devices.example`)
		}
		return nameConstraint{kind: "uri", value: d}, nil
	case strings.Contains(s, "@"):
		local, domain, _ := strings.Cut(s, "@")
		if local == "" {
			// A domain: every mailbox at that host (RFC 5280 4.2.1.10).
			if !issuer.ValidEmailConstraint(domain) || strings.Contains(domain, "@") {
				return nameConstraint{}, errors.New("is not an email domain (@example.com, @.example.com) or mailbox (ops@example.com)")
			}
			return nameConstraint{kind: "email", value: domain}, nil
		}
		if !issuer.ValidEmailConstraint(s) {
			return nameConstraint{}, errors.New("is not an email domain (@example.com, @.example.com) or mailbox (ops@example.com)")
		}
		return nameConstraint{kind: "email", value: s}, nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() || p.Addr().Zone() != "" || p.Masked() != p {
			return nameConstraint{}, fmt.Errorf("is not a masked IP range (e.g. %s)", p.Masked())
		}
		return nameConstraint{kind: "ip", prefix: p}, nil
	}
	if !issuer.ValidDomainConstraint(s) {
		return nameConstraint{}, errors.New("is neither a DNS domain, an IP range (CIDR), an email domain (with @) nor a URI domain (uri:...)")
	}
	return nameConstraint{kind: "dns", value: s}, nil
}

// edgeOptions puts the policy's name constraints into opts.
func edgeOptions(opts *issuer.EdgeCAOptions, constraints []string) error {
	for _, s := range constraints {
		c, err := parseNameConstraint(s)
		if err != nil {
			return fmt.Errorf("edge name constraint %q: %w", s, err)
		}
		switch c.kind {
		case "dns":
			opts.PermittedDNSDomains = append(opts.PermittedDNSDomains, c.value)
		case "ip":
			opts.PermittedIPRanges = append(opts.PermittedIPRanges, c.prefix)
		case "email":
			opts.PermittedEmailAddresses = append(opts.PermittedEmailAddresses, c.value)
		case "uri":
			opts.PermittedURIDomains = append(opts.PermittedURIDomains, c.value)
		}
	}
	return nil
}

// CreateEdgeCATx certifies the edge CA key of DMS dmsID (local mode) from
// the CSR its agent sent, inside the caller's transaction: a CA with path
// length 0, the policy's name constraints and validity, signed by the
// DMS's first authorized CA (whose key must be in the key store), recorded
// in the registry as an edge CA held by the DMS, with its audit row and a
// DMS event. reason is "initial" or "renewal" (recorded). It returns the
// new CA and the chain above it (parent first).
//
// Refusals are *Error values (invalid: bad CSR, a key certified as an
// edge CA of this DMS before, not local mode, no authorized CA; conflict:
// the parent cannot sign); other errors abort the transaction.
func (s *Service) CreateEdgeCATx(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, csrDER []byte, reason string, now time.Time) (*registry.CA, []*registry.CA, error) {
	q := registry.On(tx)
	d, err := q.GetDMS(ctx, dmsID)
	if err != nil {
		return nil, nil, err
	}
	pol := PolicyOf(d)
	if pol.Mode != "local" {
		return nil, nil, invalid("policy.mode", "the DMS is in %s mode: only local mode has an edge CA", pol.Mode)
	}
	if len(d.AuthorizedCAs) == 0 {
		return nil, nil, invalid("authorized_cas", "the DMS has no authorized CA to certify an edge CA")
	}
	csr, err := csrcheck.Parse(csrDER, csrcheck.DefaultPolicy())
	if err != nil {
		var ce *csrcheck.Error
		if errors.As(err, &ce) {
			return nil, nil, &Error{Kind: KindInvalid, Field: "csr", Message: ce.Public(), Err: err}
		}
		return nil, nil, invalid("csr", "the CSR could not be read")
	}
	spki, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	if err != nil {
		return nil, nil, invalid("csr", "the CSR's public key cannot be encoded")
	}
	if reused, err := edgeKeyUsedBefore(ctx, tx, dmsID, spki); err != nil {
		return nil, nil, err
	} else if reused {
		return nil, nil, invalid("csr", "this key was certified as an edge CA of this DMS before: an edge CA needs a fresh key")
	}
	parent, parentKey, err := s.activeCAWithKey(ctx, q, d.AuthorizedCAs[0], "authorized_cas")
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, nil, conflict("the key of the DMS's first authorized CA is not in the control plane's key store")
	} else if err != nil {
		return nil, nil, err
	}
	parentCert, err := x509.ParseCertificate(parent.CertDER)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case parentCert.MaxPathLen == 0 && parentCert.MaxPathLenZero:
		return nil, nil, conflict("the DMS's first authorized CA %q has path length 0 and cannot certify an edge CA", parent.Name)
	case now.Before(parentCert.NotBefore) || !now.Before(parentCert.NotAfter):
		return nil, nil, conflict("the DMS's first authorized CA %q is not valid now", parent.Name)
	}
	opts := issuer.EdgeCAOptions{CAOptions: issuer.CAOptions{
		Subject:  pkix.Name{CommonName: clipCN("Outpost Edge CA " + d.Name), Organization: []string{"Outpost DMS"}, SerialNumber: dmsID.String()},
		Now:      now,
		Validity: pol.EdgeCAValidity,
	}}
	if s.PublicURL != "" {
		// The edge CA's status is on its parent's CRL and OCSP.
		base := strings.TrimRight(s.PublicURL, "/")
		opts.OCSPServers = []string{base + "/ocsp"}
		opts.CRLDistributionPoints = []string{base + "/crl/" + parent.ID.String() + ".crl"}
	}
	if err := edgeOptions(&opts, pol.EffectiveNameConstraints()); err != nil {
		return nil, nil, invalid("policy.edge_name_constraints", "%v", err)
	}
	cert, err := issuer.CreateEdgeCA(parentCert, parentKey, csr.PublicKey, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("edge ca for dms %s: %w", dmsID, err)
	}
	id := uuid.New()
	ca := &registry.CA{ID: id, Name: "edge-" + d.Name + "-" + id.String()[:8], ParentID: &parent.ID, Kind: "edge", Status: "active", DMSID: &dmsID,
		Subject: cert.Subject.String(), Serial: hexSerial(cert), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, CertDER: cert.Raw}
	if err := q.InsertCA(ctx, ca); err != nil {
		return nil, nil, err
	}
	detail := map[string]any{"ca_id": id.String(), "serial": ca.Serial, "parent_id": parent.ID.String(), "reason": reason, "not_after": ca.NotAfter.UTC().Format(time.RFC3339)}
	if err := q.AddEvent(ctx, &registry.Event{DMSID: &dmsID, CAID: &id, Kind: "dms.edge_ca_issued", Detail: detail}); err != nil {
		return nil, nil, err
	}
	if _, err := audit.Append(ctx, tx, now, "dms:"+dmsID.String(), "ca.edge_create", id.String(), detail); err != nil {
		return nil, nil, err
	}
	chain, err := ChainOf(ctx, q, parent)
	if err != nil {
		return nil, nil, err
	}
	return ca, chain, nil
}

// clipCN keeps a common name within the 64 characters X.509 allows
// (ub-common-name), on a rune boundary.
func clipCN(s string) string {
	for len(s) > 64 {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// edgeKeyUsedBefore reports whether an edge CA of dmsID was certified for
// the public key spki.
func edgeKeyUsedBefore(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, spki []byte) (bool, error) {
	rows, err := tx.Query(ctx, `SELECT cert_der FROM cas WHERE dms_id = $1`, dmsID)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	for rows.Next() {
		var der []byte
		if err := rows.Scan(&der); err != nil {
			return false, err
		}
		if c, err := x509.ParseCertificate(der); err == nil && bytes.Equal(c.RawSubjectPublicKeyInfo, spki) {
			return true, nil
		}
	}
	return false, rows.Err()
}

// ESTServerValidity is the lifetime of an agent's EST server certificate.
const ESTServerValidity = 90 * 24 * time.Hour

// MaxESTServerNames caps the DNS and IP names of an EST server
// certificate.
const MaxESTServerNames = 20

// estServerProfile issues the TLS server certificate of an agent's EST
// endpoint: the common name is the DMS id, the names are the CSR's DNS
// and IP subjectAltNames (passed as ExtraSANs; nothing else of the CSR
// is copied).
func estServerProfile() *issuer.Profile {
	p := issuer.DefaultDeviceProfile()
	p.Name = "est-server"
	p.Validity = ESTServerValidity
	p.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	p.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	p.HonourExtensions = []string{issuer.ExtensionNone}
	p.MaxSANs = MaxESTServerNames
	p.Subject = issuer.SubjectTemplate{CommonName: "{{.DeviceID}}", Organization: []string{"Outpost DMS"}}
	p.SANs = issuer.SANPolicy{DNS: []string{"**"}, IPRanges: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	return p
}

// ESTServerCertificateTx issues the EST server certificate of DMS dmsID
// from the DMS manager CA (the anchor agents and, through /cacerts, their
// devices know) inside the caller's transaction: common name the DMS id,
// the CSR's DNS and IP names (1 to MaxESTServerNames), serverAuth, 90
// days. It is recorded with profile "est-server" and the DMS. It returns
// the certificate and its chain (issuing CA first). Refusals are *Error
// values of kind invalid; other errors abort the transaction.
func (s *Service) ESTServerCertificateTx(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, csrDER []byte, now time.Time) (*registry.Certificate, []*registry.CA, error) {
	csr, err := csrcheck.Parse(csrDER, csrcheck.DefaultPolicy())
	if err != nil {
		var ce *csrcheck.Error
		if errors.As(err, &ce) {
			return nil, nil, &Error{Kind: KindInvalid, Field: "csr", Message: ce.Public(), Err: err}
		}
		return nil, nil, invalid("csr", "the CSR could not be read")
	}
	switch n := len(csr.DNSNames) + len(csr.IPAddresses); {
	case n == 0:
		return nil, nil, invalid("csr", "the CSR names no DNS or IP subjectAltName: devices could not verify the server")
	case n > MaxESTServerNames:
		return nil, nil, invalid("csr", "the CSR names %d DNS and IP subjectAltNames, at most %d are allowed", n, MaxESTServerNames)
	}
	q := registry.On(tx)
	ca, iss, err := s.managerIssuer(ctx, q, now)
	if err != nil {
		return nil, nil, err
	}
	prof := s.withURLs(estServerProfile(), ca.ID)
	cert, err := iss.Issue(csr, prof, issuer.Request{DeviceID: dmsID.String(), ExtraSANs: issuer.AltNames{DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses}})
	if err != nil {
		var ie *issuer.Error
		if errors.As(err, &ie) && ie.Reason.ClientFault() {
			return nil, nil, &Error{Kind: KindInvalid, Field: "csr", Message: ie.Public(), Err: err}
		}
		return nil, nil, err
	}
	rec := recordFor(cert, ca.ID, prof.Name, "", &dmsID)
	if err := q.InsertCertificate(ctx, rec); err != nil {
		return nil, nil, err
	}
	if err := q.AddEvent(ctx, &registry.Event{DMSID: &dmsID, CAID: &ca.ID, Kind: "dms.server_certificate_issued", Detail: map[string]any{"serial": rec.Serial, "sans": rec.SANs}}); err != nil {
		return nil, nil, err
	}
	if _, err := audit.Append(ctx, tx, now, "dms:"+dmsID.String(), "certificate.issue", rec.Serial, map[string]any{"ca_id": ca.ID.String(), "profile": prof.Name, "dms_id": dmsID.String()}); err != nil {
		return nil, nil, err
	}
	chain, err := ChainOf(ctx, q, ca)
	if err != nil {
		return nil, nil, err
	}
	return rec, chain, nil
}

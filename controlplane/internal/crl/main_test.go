package crl

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"log/slog"
	"math/big"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/testbed"
)

// One Postgres cluster for the package; every test gets its own database.
var (
	pgOnce   sync.Once
	pgShared *testbed.Postgres
	pgErr    error
)

func cluster(t testing.TB) *testbed.Postgres {
	t.Helper()
	pgOnce.Do(func() {
		pgShared, pgErr = testbed.StartPostgres(context.Background(), testbed.PostgresOptions{})
	})
	if pgErr != nil {
		t.Fatalf("starting postgres: %v", pgErr)
	}
	return pgShared
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pgShared != nil {
		if err := pgShared.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "crl: stopping postgres: %v\n", err)
		}
	}
	os.Exit(code)
}

// syncBuffer collects logs from any goroutine; dumped when a test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fakeClock is a settable clock safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// env is a control plane plus a CRL service served over HTTP.
type env struct {
	*cptest.Env
	svc *Service
	srv *httptest.Server
	ctx context.Context
}

// newEnv starts a control plane (cptest) and a CRL Service on its
// database and key store, with Handler on an httptest server. BaseURL is
// the control plane's URL, which caservice puts into certificates as
// PublicURL: the CRLs' IDP must name what certificates carry. clock may
// be nil (wall clock).
func newEnv(t *testing.T, clock *fakeClock) *env {
	t.Helper()
	e := cptest.Start(t, cluster(t))
	logs := &syncBuffer{}
	svc := &Service{Reg: e.App.Svc.Reg, Keys: e.App.Keys, Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if clock != nil {
		svc.Now = clock.Now
	}
	svc.BaseURL = e.URL
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(func() {
		srv.Close()
		if t.Failed() {
			t.Logf("crl service log:\n%s", logs.String())
		}
	})
	return &env{Env: e, svc: svc, srv: srv, ctx: context.Background()}
}

// url is where this test's Handler serves a CRL (BaseURL is the control
// plane's, which does not serve them).
func (e *env) url(caID uuid.UUID, delta bool) string {
	u := FullURL(e.srv.URL, caID)
	if delta {
		u = DeltaURL(e.srv.URL, caID)
	}
	return u
}

func (e *env) caByRole(t *testing.T, role string) *registry.CA {
	t.Helper()
	ca, err := e.App.Svc.Reg.GetCAByRole(e.ctx, role)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// createCA makes a CA through the CA service: a root when parent is nil.
func (e *env) createCA(t *testing.T, name string, parent *uuid.UUID) (*registry.CA, *x509.Certificate) {
	t.Helper()
	ca, err := e.App.Svc.CreateCA(e.ctx, "test", caservice.CreateCARequest{Name: name, ParentID: parent, CommonName: name})
	if err != nil {
		t.Fatalf("creating ca %s: %v", name, err)
	}
	return ca, mustCert(t, ca.CertDER)
}

// issue issues a certificate from caID through the CA service, with the
// named profile ("" = default).
func (e *env) issue(t *testing.T, caID uuid.UUID, cn, profile string) *x509.Certificate {
	t.Helper()
	csr, _, err := testpki.CSR(cn)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := e.App.Svc.Issue(e.ctx, "test", caservice.IssueRequest{CAID: caID, CSR: csr.Raw, Profile: profile})
	if err != nil {
		t.Fatalf("issuing %s: %v", cn, err)
	}
	return mustCert(t, rec.DER)
}

func (e *env) revoke(t *testing.T, c *x509.Certificate, reason int) {
	t.Helper()
	if _, err := e.App.Svc.RevokeCertificate(e.ctx, "test", hexSerial(c.SerialNumber), reason); err != nil {
		t.Fatalf("revoking %s: %v", c.Subject.CommonName, err)
	}
}

func hexSerial(n *big.Int) string { return n.Text(16) }

func mustCert(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustParseCRL(t testing.TB, der []byte) *x509.RevocationList {
	t.Helper()
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("parsing crl: %v", err)
	}
	return l
}

func findExt(l *x509.RevocationList, oid asn1.ObjectIdentifier) *pkix.Extension {
	for i := range l.Extensions {
		if l.Extensions[i].Id.Equal(oid) {
			return &l.Extensions[i]
		}
	}
	return nil
}

// deltaIndicator returns the deltaCRLIndicator's base number, or -1.
func deltaIndicator(t testing.TB, l *x509.RevocationList) (int64, bool) {
	t.Helper()
	ext := findExt(l, oidDeltaCRLIndicator)
	if ext == nil {
		return -1, false
	}
	var n *big.Int
	if rest, err := asn1.Unmarshal(ext.Value, &n); err != nil || len(rest) != 0 {
		t.Fatalf("deltaCRLIndicator %x: %v", ext.Value, err)
	}
	return n.Int64(), ext.Critical
}

func entrySerials(l *x509.RevocationList) map[string]x509.RevocationListEntry {
	out := make(map[string]x509.RevocationListEntry, len(l.RevokedCertificateEntries))
	for _, e := range l.RevokedCertificateEntries {
		out[e.SerialNumber.Text(16)] = e
	}
	return out
}

// checkCRL checks what every CRL of ca must have: signature, number,
// AKI, IDP (unless a root), and per kind deltaCRLIndicator or
// freshestCRL.
func checkCRL(t *testing.T, base string, ca *x509.Certificate, caID uuid.UUID, c *CRL) *x509.RevocationList {
	t.Helper()
	l := mustParseCRL(t, c.DER)
	if err := l.CheckSignatureFrom(ca); err != nil {
		t.Errorf("signature: got %v, want it to verify against the CA", err)
	}
	if l.Number == nil || l.Number.Int64() != c.Number {
		t.Errorf("crl number: got %v, want %d", l.Number, c.Number)
	}
	if !bytes.Equal(l.AuthorityKeyId, ca.SubjectKeyId) || len(l.AuthorityKeyId) == 0 {
		t.Errorf("aki: got %x, want %x", l.AuthorityKeyId, ca.SubjectKeyId)
	}
	if !l.ThisUpdate.Equal(c.ThisUpdate) || !l.NextUpdate.Equal(c.NextUpdate) {
		t.Errorf("times: got %v..%v, want %v..%v", l.ThisUpdate, l.NextUpdate, c.ThisUpdate, c.NextUpdate)
	}
	idp := findExt(l, oidIssuingDistributionPoint)
	if isSelfSigned(ca) {
		if idp != nil {
			t.Errorf("root crl: got an IDP, want none")
		}
	} else {
		if idp == nil || !idp.Critical {
			t.Fatalf("idp: got %+v, want a critical extension", idp)
		}
		uri, err := parseDistributionPointURI(idp.Value, false)
		if err != nil || uri != FullURL(base, caID) {
			t.Errorf("idp uri: got %q (%v), want %q", uri, err, FullURL(base, caID))
		}
	}
	fresh := findExt(l, oidFreshestCRL)
	baseNum, critical := deltaIndicator(t, l)
	if c.Delta {
		if baseNum != c.BaseNumber || !critical {
			t.Errorf("deltaCRLIndicator: got %d critical %v, want %d critical", baseNum, critical, c.BaseNumber)
		}
		if fresh != nil {
			t.Error("delta crl: got freshestCRL, want none (RFC 5280 5.2.6)")
		}
	} else {
		if baseNum != -1 {
			t.Errorf("full crl: got deltaCRLIndicator %d, want none", baseNum)
		}
		if fresh == nil || fresh.Critical {
			t.Fatalf("freshestCRL: got %+v, want a non-critical extension", fresh)
		}
		uri, err := parseDistributionPointURI(fresh.Value, true)
		if err != nil || uri != DeltaURL(base, caID) {
			t.Errorf("freshestCRL uri: got %q (%v), want %q", uri, err, DeltaURL(base, caID))
		}
	}
	return l
}

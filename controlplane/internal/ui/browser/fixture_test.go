package browser

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// fleet is what seedFleet made: a small factory with enough history that
// every page and chart of the dashboard has something to show.
type fleet struct {
	// root is an offline root (imported without its key); line1 and line2
	// are intermediates below it whose keys the control plane holds.
	root, line1, line2 apitypes.CA
	// hall1 is bootstrapped and online, hall2 bootstrapped and offline with
	// a queue, hall3 never bootstrapped (pending), retired disabled.
	hall1, hall2, hall3, retired apitypes.DMS
	// plc is a device of hall1 issued through the API, with two slots:
	// line1 with three certificates (two renewals; the newest is active)
	// and line2 with one.
	plc      string
	plcLine1 []apitypes.Certificate
	plcLine2 apitypes.Certificate
	// target is an active service certificate with a SAN that no other
	// step of the fixture touches.
	target    apitypes.Certificate
	targetSAN string
	// spare is another active service certificate (the viewer tries to
	// revoke it).
	spare apitypes.Certificate
	// plcs and sensors are the device ids of hall1 and hall2.
	plcs, sensors []string
}

// seedFleet fills a control plane through its API. Most certificates
// are signed here by CAs whose keys the test holds and recorded with the
// API's certificate import, with issue and expiry dates spread over the
// last and next three months; the control plane issues only those of one
// device (its file key store derives a key from a passphrase for every
// signature, which takes a second under the race detector). A lifecycle
// sweep then sets statuses as the control plane does every few minutes.
func seedFleet(t *testing.T, env *cptest.Env) *fleet {
	t.Helper()
	adm := env.AdminToken
	f := &fleet{plc: "plc-0002", targetSAN: "svc-03.ops.factory.example"}
	now := time.Now().UTC().Truncate(time.Second)
	day := 24 * time.Hour

	root := newLocalCA(t, nil, "Factory Root CA", now.Add(-400*day), now.Add(3650*day))
	line1 := newLocalCA(t, root, "Line 1 Devices CA", now.Add(-300*day), now.Add(1825*day))
	line2 := newLocalCA(t, root, "Line 2 Devices CA", now.Add(-200*day), now.Add(1825*day))
	env.MustDo("POST", "/api/v1/cas/import", adm, apitypes.ImportCARequest{Name: "factory-root", CertificatePEM: root.certPEM()}, &f.root, 201)
	env.MustDo("POST", "/api/v1/cas/import", adm, apitypes.ImportCARequest{Name: "line1", CertificatePEM: line1.certPEM(), KeyPEM: line1.keyPEM(t)}, &f.line1, 201)
	env.MustDo("POST", "/api/v1/cas/import", adm, apitypes.ImportCARequest{Name: "line2", CertificatePEM: line2.certPEM(), KeyPEM: line2.keyPEM(t)}, &f.line2, 201)

	dms := func(name, mode string, cas ...string) (apitypes.DMS, string) {
		var r apitypes.CreateDMSResponse
		env.MustDo("POST", "/api/v1/dmss", adm, apitypes.CreateDMSRequest{Name: name, AuthorizedCAs: cas, Policy: &apitypes.DMSPolicy{Mode: mode, DeviceAuth: "client_cert", Profile: "device", ReenrollWindowDays: 14}}, &r, 201)
		return r.DMS, r.BootstrapToken
	}
	var tok1, tok2 string
	f.hall1, tok1 = dms("gw-hall-1", "online", f.line1.ID, f.line2.ID)
	f.hall2, tok2 = dms("gw-hall-2", "queued", f.line1.ID)
	f.hall3, _ = dms("gw-hall-3", "queued", f.line2.ID)
	f.retired, _ = dms("gw-retired", "online", f.line1.ID)
	bootstrapDMS(t, env, tok1)
	bootstrapDMS(t, env, tok2)
	env.MustDo("POST", "/api/v1/dmss/"+f.retired.ID+"/disable", adm, nil, nil, 200)

	device := func(id, dmsID string, labels map[string]string) {
		env.MustDo("POST", "/api/v1/devices", adm, apitypes.RegisterDeviceRequest{ID: id, DMSID: dmsID, Labels: labels}, nil, 201)
	}
	for i := 1; i <= 6; i++ {
		id := fmt.Sprintf("plc-%04d", i)
		f.plcs = append(f.plcs, id)
		device(id, f.hall1.ID, map[string]string{"line": "1", "kind": "plc"})
	}
	for i := 101; i <= 105; i++ {
		id := fmt.Sprintf("sensor-%04d", i)
		f.sensors = append(f.sensors, id)
		device(id, f.hall2.ID, map[string]string{"line": "1", "kind": "sensor"})
	}
	for i := 301; i <= 303; i++ {
		device(fmt.Sprintf("meter-%04d", i), f.hall3.ID, map[string]string{"line": "2", "kind": "meter"})
	}

	// plc-0002 enrolls through the control plane, renews twice, and gets
	// a second slot under line2.
	for range 3 {
		f.plcLine1 = append(f.plcLine1, issueCert(t, env, f.line1.ID, f.plc, f.hall1.ID, f.plc+".line1.factory.example"))
	}
	f.plcLine2 = issueCert(t, env, f.line2.ID, f.plc, f.hall1.ID, f.plc+".line2.factory.example")

	// The other devices' certificates: a year each, enrolled over the
	// last two months; plc-0005's expires in 12 days (its device then
	// requires action).
	record := func(ca *localCA, cn, san, device, dmsID string, notBefore, notAfter time.Time) apitypes.Certificate {
		var c apitypes.Certificate
		env.MustDo("POST", "/api/v1/certificates/import", adm, apitypes.ImportCertificateRequest{CertificatePEM: ca.leafPEM(t, cn, san, notBefore, notAfter), DeviceID: device, DMSID: dmsID}, &c, 201)
		return c
	}
	var plc6 apitypes.Certificate
	for j, id := range append(slices.Clone(f.plcs), f.sensors...) {
		if id == f.plc {
			continue
		}
		dmsID := f.hall1.ID
		if strings.HasPrefix(id, "sensor-") {
			dmsID = f.hall2.ID
		}
		nb := now.Add(-time.Duration(8+4*j) * day)
		na := nb.Add(365 * day)
		if id == "plc-0005" {
			na = now.Add(12 * day)
		}
		c := record(line1, id, id+".line1.factory.example", id, dmsID, nb, na)
		if id == "plc-0006" {
			plc6 = c
		}
	}
	// Services enrolled without a device, issued 2 to 85 days ago: a
	// quarter expire in 5 to 11 days (about to expire), a quarter in 30
	// to 50 days, a quarter have expired, the rest live a year.
	var svc []apitypes.Certificate
	for i := range 24 {
		ca := line1
		if i%3 == 2 {
			ca = line2
		}
		age := time.Duration(2+i*83/23) * day
		nb := now.Add(-age)
		var na time.Time
		switch i % 4 {
		case 0:
			na = now.Add(time.Duration(5+3*(i/8)) * day)
		case 1:
			na = now.Add(time.Duration(30+10*(i%3)) * day)
		case 2:
			na = now.Add(-age / 2)
		case 3:
			na = nb.Add(365 * day)
		}
		san := fmt.Sprintf("svc-%02d.ops.factory.example", i)
		svc = append(svc, record(ca, san, san, "", "", nb, na))
	}
	f.target, f.spare = svc[3], svc[15]

	env.MustDo("POST", "/api/v1/certificates/"+svc[7].Serial+"/revoke", adm, apitypes.RevokeRequest{Reason: "superseded"}, nil, 200)
	env.MustDo("POST", "/api/v1/certificates/"+plc6.Serial+"/revoke", adm, apitypes.RevokeRequest{Reason: "keyCompromise"}, nil, 200)
	env.MustDo("POST", "/api/v1/devices/sensor-0105/decommission", adm, nil, nil, 200)

	env.MustDo("POST", "/api/v1/subscriptions", adm, apitypes.CreateSubscriptionRequest{Name: "pki-team", Channel: "email", Target: "pki-team@factory.example", EventKinds: []string{"certificate.revoked", "ca.*"}}, nil, 201)
	env.MustDo("POST", "/api/v1/subscriptions", adm, apitypes.CreateSubscriptionRequest{Name: "ops-webhook", Channel: "webhook", Target: "https://hooks.factory.example/outpost", DMSID: f.hall1.ID}, nil, 201)

	// Imported certificates were enrolled when they start.
	ctx := context.Background()
	db := env.DB()
	exec := func(stmt string, args ...any) {
		t.Helper()
		if _, err := db.Exec(ctx, stmt, args...); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	exec(`UPDATE certificates SET created_at = not_before WHERE profile = 'imported'`)
	res, err := env.App.Sweeper.Sweep(ctx)
	if err != nil || res.Skipped {
		t.Fatalf("lifecycle sweep: %+v, %v", res, err)
	}

	// Sync state as the agents would report it: hall1 heard from now,
	// hall2 three hours ago with a backlog.
	exec(`UPDATE dmss SET last_seen_at = now(), last_sync_at = now(), agent_version = '1.4.2', queue_depth = 3 WHERE id = $1`, f.hall1.ID)
	exec(`UPDATE dmss SET last_seen_at = now() - interval '3 hours', last_sync_at = now() - interval '3 hours', agent_version = '1.3.9', queue_depth = 42 WHERE id = $1`, f.hall2.ID)
	return f
}

// localCA is a CA whose key the test holds, to sign certificates without
// the control plane.
type localCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newLocalCA makes a root (parent nil) or an intermediate.
func newLocalCA(t *testing.T, parent *localCA, cn string, notBefore, notAfter time.Time) *localCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Factory Example"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
		tmpl.MaxPathLenZero = true
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &localCA{cert: cert, key: key}
}

func (ca *localCA) certPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
}

func (ca *localCA) keyPEM(t *testing.T) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// leafPEM signs a client certificate for a new key with one DNS SAN.
func (ca *localCA) leafPEM(t *testing.T, cn, san string, notBefore, notAfter time.Time) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(t),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{san},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// randomSerial is a positive 159-bit serial, as the control plane makes.
func randomSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159))
	if err != nil {
		t.Fatal(err)
	}
	return n.SetBit(n, 0, 1)
}

// bootstrapDMS exchanges a bootstrap token for a DMS identity
// certificate, as the agent does on its first start.
func bootstrapDMS(t *testing.T, env *cptest.Env, token string) apitypes.DMSBootstrapResponse {
	t.Helper()
	csr, _, err := testpki.CSR("outpost-agent")
	if err != nil {
		t.Fatal(err)
	}
	var r apitypes.DMSBootstrapResponse
	env.MustDo("POST", "/api/v1/dms/bootstrap", "", apitypes.DMSBootstrapRequest{Token: token, CSRPEM: csrPEM(csr.Raw)}, &r, 200)
	return r
}

// issueCert issues a certificate for a new key with one DNS SAN, for a
// device of a DMS when device is not empty.
func issueCert(t *testing.T, env *cptest.Env, caID, device, dmsID, san string) apitypes.Certificate {
	t.Helper()
	cn := device
	if cn == "" {
		cn = san
	}
	csr, _, err := testpki.CSR(cn, testpki.DNSNames(san))
	if err != nil {
		t.Fatal(err)
	}
	var c apitypes.Certificate
	env.MustDo("POST", "/api/v1/certificates", env.AdminToken, apitypes.IssueRequest{CAID: caID, CSRPEM: csrPEM(csr.Raw), DeviceID: device, DMSID: dmsID}, &c, 201)
	return c
}

// csrFor is a PEM CSR for a new key.
func csrFor(t *testing.T, cn string) string {
	t.Helper()
	csr, _, err := testpki.CSR(cn)
	if err != nil {
		t.Fatal(err)
	}
	return csrPEM(csr.Raw)
}

func csrPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// certificate reads a certificate through the API.
func certificate(t *testing.T, env *cptest.Env, serial string) apitypes.Certificate {
	t.Helper()
	var c apitypes.Certificate
	env.MustDo("GET", "/api/v1/certificates/"+serial, env.AdminToken, nil, &c, 200)
	return c
}

// viewerToken creates a principal with the viewer role and returns its
// API token.
func viewerToken(t *testing.T, env *cptest.Env, name string) string {
	t.Helper()
	var tok apitypes.CreateTokenResponse
	env.MustDo("POST", "/api/v1/tokens", env.AdminToken, apitypes.CreateTokenRequest{Principal: name, Role: "viewer", Description: "browser test"}, &tok, 201)
	return tok.Token
}

package api_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/internal/testpki"
	"github.com/outpost-pki/outpost/testbed"
)

func csrPEM(t *testing.T, cn string, dns ...string) string {
	t.Helper()
	csr, _, err := testpki.CSR(cn, testpki.DNSNames(dns...))
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
}

func parsePEM(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM in %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestControlPlaneFlows(t *testing.T) {
	e := cptest.Start(t, nil)
	admin := e.AdminToken

	// Bootstrap: the three CAs exist, once.
	var cas apitypes.Page[apitypes.CA]
	e.MustDo("GET", "/api/v1/cas", admin, nil, &cas, 200)
	roles := map[string]apitypes.CA{}
	for _, ca := range cas.Items {
		roles[ca.Role] = ca
	}
	for _, r := range []string{"bootstrap_root", "bootstrap_issuing", "dms_manager"} {
		if _, ok := roles[r]; !ok {
			t.Fatalf("bootstrap CA %s missing: %+v", r, cas.Items)
		}
	}
	if roles["bootstrap_issuing"].ParentID != roles["bootstrap_root"].ID {
		t.Error("issuing CA is not under the root")
	}

	// An operator token.
	var tok apitypes.CreateTokenResponse
	e.MustDo("POST", "/api/v1/tokens", admin, apitypes.CreateTokenRequest{Principal: "line-op", Role: "operator"}, &tok, 201)
	op := tok.Token

	// CA hierarchy: a root (admin) and an intermediate (operator).
	var root, inter apitypes.CA
	e.MustDo("POST", "/api/v1/cas", admin, apitypes.CreateCARequest{Name: "factory-root", CommonName: "Factory Root"}, &root, 201)
	e.MustDo("POST", "/api/v1/cas", op, apitypes.CreateCARequest{Name: "line1", ParentID: root.ID, CommonName: "Line 1 CA"}, &inter, 201)
	status, body := e.Do("POST", "/api/v1/cas", op, apitypes.CreateCARequest{Name: "rogue-root", CommonName: "Rogue"}, nil)
	if status != 403 || !strings.Contains(string(body), "admin role") {
		t.Errorf("operator creating a root: got %d %s, want 403", status, body)
	}
	var chain string
	_, raw := e.Do("GET", "/api/v1/cas/"+inter.ID+"/chain", op, nil, nil)
	chain = string(raw)
	if strings.Count(chain, "BEGIN CERTIFICATE") != 2 {
		t.Errorf("chain of the intermediate has %d certificates, want 2", strings.Count(chain, "BEGIN CERTIFICATE"))
	}

	// Import: an external root (certificate only) and its intermediate
	// with the key, which then issues.
	pki := testpki.New(testpki.WithClock(time.Now))
	extRoot := pki.Root("Legacy Root")
	extInter := extRoot.Intermediate("Legacy Issuing", testpki.PathLen(0))
	var impRoot, impInter apitypes.CA
	e.MustDo("POST", "/api/v1/cas/import", admin, apitypes.ImportCARequest{Name: "legacy-root", CertificatePEM: string(extRoot.CertPEM())}, &impRoot, 201)
	e.MustDo("POST", "/api/v1/cas/import", admin, apitypes.ImportCARequest{Name: "legacy-issuing", CertificatePEM: string(extInter.CertPEM()), KeyPEM: string(extInter.KeyPEM())}, &impInter, 201)
	if impRoot.Kind != "root" || impRoot.HasKey || impInter.ParentID != impRoot.ID || !impInter.HasKey {
		t.Errorf("imports: root %+v, intermediate %+v", impRoot, impInter)
	}
	status, _ = e.Do("POST", "/api/v1/cas/import", admin, apitypes.ImportCARequest{Name: "bad-key", CertificatePEM: string(extInter.CertPEM()), KeyPEM: string(extRoot.KeyPEM())}, nil)
	if status != 400 {
		t.Errorf("import with a mismatched key: got %d, want 400", status)
	}

	// Devices and issuance.
	e.MustDo("POST", "/api/v1/devices", op, apitypes.RegisterDeviceRequest{ID: "sensor-0001", Labels: map[string]string{"line": "1"}}, nil, 201)
	var issued []apitypes.Certificate
	for i, caID := range []string{inter.ID, impInter.ID, inter.ID} {
		var c apitypes.Certificate
		e.MustDo("POST", "/api/v1/certificates", op, apitypes.IssueRequest{CAID: caID, CSRPEM: csrPEM(t, fmt.Sprintf("sensor-0001-%d", i), "sensor-0001.line1.example"), DeviceID: "sensor-0001"}, &c, 201)
		issued = append(issued, c)
	}
	leaf := parsePEM(t, issued[1].CertPEM)
	if err := leaf.CheckSignatureFrom(extInter.Cert); err != nil {
		t.Errorf("certificate from the imported CA does not verify: %v", err)
	}
	var dev apitypes.Device
	e.MustDo("GET", "/api/v1/devices/sensor-0001", op, nil, &dev, 200)
	if len(dev.Slots) != 2 {
		t.Fatalf("device has %d slots, want 2 (one per CA): %+v", len(dev.Slots), dev.Slots)
	}
	for _, s := range dev.Slots {
		if s.CAID == inter.ID && (s.ActiveSerial != issued[2].Serial || len(s.Certificates) != 2) {
			t.Errorf("slot of line1: active %s with %d certificates, want %s with 2", s.ActiveSerial, len(s.Certificates), issued[2].Serial)
		}
	}
	if len(dev.Timeline) < 4 {
		t.Errorf("device timeline has %d events, want at least 4", len(dev.Timeline))
	}

	// Bad CSR: a clear 400 naming the field.
	status, body = e.Do("POST", "/api/v1/certificates", op, apitypes.IssueRequest{CAID: inter.ID, CSRPEM: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}, nil)
	if status != 400 || !strings.Contains(string(body), `"field":"csr_pem"`) {
		t.Errorf("bad csr: got %d %s", status, body)
	}

	// Search.
	search := func(q string) []apitypes.Certificate {
		var p apitypes.Page[apitypes.Certificate]
		e.MustDo("GET", "/api/v1/certificates?"+q, op, nil, &p, 200)
		return p.Items
	}
	if got := search("cn=sensor-0001-"); len(got) != 3 {
		t.Errorf("search by cn prefix: %d results, want 3", len(got))
	}
	if got := search("san=sensor-0001.line1.example&issuer_id=" + impInter.ID); len(got) != 1 || got[0].Serial != issued[1].Serial {
		t.Errorf("search by san and issuer: %+v", got)
	}
	if got := search("serial=" + issued[0].Serial); len(got) != 1 {
		t.Errorf("search by serial: %d results", len(got))
	}
	in := url.QueryEscape(time.Now().Add(200 * 24 * time.Hour).UTC().Format(time.RFC3339))
	if got := search("device_id=sensor-0001&expires_before=" + in); len(got) != 3 {
		t.Errorf("expiry window: %d results, want 3", len(got))
	}

	// Pagination walks every row exactly once.
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		var p apitypes.Page[apitypes.Certificate]
		e.MustDo("GET", "/api/v1/certificates?limit=1&cursor="+url.QueryEscape(cursor), op, nil, &p, 200)
		for _, c := range p.Items {
			if seen[c.Serial] {
				t.Fatalf("serial %s on two pages", c.Serial)
			}
			seen[c.Serial] = true
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if len(seen) != 3 {
		t.Errorf("paging saw %d certificates, want 3", len(seen))
	}
	status, _ = e.Do("GET", "/api/v1/certificates?cursor=not-a-cursor", op, nil, nil)
	if status != 400 {
		t.Errorf("forged cursor: got %d, want 400", status)
	}

	// Revoke one certificate, then the imported CA subtree.
	var rc apitypes.Certificate
	e.MustDo("POST", "/api/v1/certificates/"+issued[0].Serial+"/revoke", op, apitypes.RevokeRequest{Reason: "keyCompromise"}, &rc, 200)
	if rc.Status != "revoked" || rc.RevocationReason != "keyCompromise" {
		t.Errorf("revoked certificate: %+v", rc)
	}
	status, _ = e.Do("POST", "/api/v1/certificates/"+issued[2].Serial+"/revoke", op, apitypes.RevokeRequest{Reason: "bogus"}, nil)
	if status != 400 {
		t.Errorf("unknown reason: got %d, want 400", status)
	}
	var rca apitypes.RevokeCAResponse
	e.MustDo("POST", "/api/v1/cas/"+impRoot.ID+"/revoke", admin, apitypes.RevokeRequest{Reason: "cACompromise"}, &rca, 200)
	if len(rca.RevokedCAs) != 2 || rca.RevokedCertificates != 1 {
		t.Errorf("cascade: %+v, want 2 CAs and 1 certificate", rca)
	}
	var after apitypes.Certificate
	e.MustDo("GET", "/api/v1/certificates/"+issued[1].Serial, op, nil, &after, 200)
	if after.Status != "revoked" {
		t.Errorf("certificate under a revoked CA is %s", after.Status)
	}
	status, _ = e.Do("POST", "/api/v1/certificates", op, apitypes.IssueRequest{CAID: impInter.ID, CSRPEM: csrPEM(t, "x")}, nil)
	if status != 409 {
		t.Errorf("issuing from a revoked CA: got %d, want 409", status)
	}
	status, _ = e.Do("POST", "/api/v1/cas/"+roles["bootstrap_root"].ID+"/revoke", admin, apitypes.RevokeRequest{}, nil)
	if status != 403 {
		t.Errorf("revoking the bootstrap root through the API: got %d, want 403", status)
	}

	// Decommission: active certificates revoked with cessationOfOperation.
	var dec apitypes.DecommissionResponse
	e.MustDo("POST", "/api/v1/devices/sensor-0001/decommission", op, nil, &dec, 200)
	if len(dec.RevokedSerials) != 1 || dec.RevokedSerials[0] != issued[2].Serial {
		t.Errorf("decommission revoked %v, want [%s]", dec.RevokedSerials, issued[2].Serial)
	}
	var c2 apitypes.Certificate
	e.MustDo("GET", "/api/v1/certificates/"+issued[2].Serial, op, nil, &c2, 200)
	if c2.RevocationReason != "cessationOfOperation" {
		t.Errorf("decommissioned device's certificate reason %q", c2.RevocationReason)
	}
	status, _ = e.Do("POST", "/api/v1/certificates", op, apitypes.IssueRequest{CAID: inter.ID, CSRPEM: csrPEM(t, "y"), DeviceID: "sensor-0001"}, nil)
	if status != 409 {
		t.Errorf("issuing to a decommissioned device: got %d, want 409", status)
	}

	// DMS: create, bootstrap once, second use refused.
	var dms apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", op, apitypes.CreateDMSRequest{Name: "gw-hall-3", AuthorizedCAs: []string{inter.ID},
		Policy: &apitypes.DMSPolicy{Mode: "local", LocalQuota: 1000, ReenrollWindowDays: 30}}, &dms, 201)
	if !strings.HasPrefix(dms.BootstrapToken, "obt_") || dms.DMS.Status != "pending" {
		t.Fatalf("create dms: %+v", dms)
	}
	var boot apitypes.DMSBootstrapResponse
	e.MustDo("POST", "/api/v1/dms/bootstrap", "", apitypes.DMSBootstrapRequest{Token: dms.BootstrapToken, CSRPEM: csrPEM(t, "ignored")}, &boot, 200)
	dmsCert := parsePEM(t, boot.CertificatePEM)
	if dmsCert.Subject.CommonName != dms.DMS.ID {
		t.Errorf("DMS certificate CN %q, want the DMS id %s", dmsCert.Subject.CommonName, dms.DMS.ID)
	}
	mgr := parsePEM(t, boot.ChainPEM)
	if err := dmsCert.CheckSignatureFrom(mgr); err != nil || mgr.Subject.CommonName != "Test DMS Manager CA" {
		t.Errorf("DMS certificate not from the DMS manager CA: %v (%s)", err, mgr.Subject)
	}
	status, body = e.Do("POST", "/api/v1/dms/bootstrap", "", apitypes.DMSBootstrapRequest{Token: dms.BootstrapToken, CSRPEM: csrPEM(t, "again")}, nil)
	if status != http.StatusGone || !strings.Contains(string(body), "already used") {
		t.Errorf("second use of the token: got %d %s, want 410", status, body)
	}
	var d2 apitypes.DMS
	e.MustDo("GET", "/api/v1/dmss/"+dms.DMS.ID, op, nil, &d2, 200)
	if d2.Status != "active" || d2.IdentitySerial == "" || len(d2.AuthorizedCAs) != 1 {
		t.Errorf("dms after bootstrap: %+v", d2)
	}
	// An expired token.
	var dms2 apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", op, apitypes.CreateDMSRequest{Name: "gw-late", TokenTTLHours: 1}, &dms2, 201)
	e.App.Svc.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	status, body = e.Do("POST", "/api/v1/dms/bootstrap", "", apitypes.DMSBootstrapRequest{Token: dms2.BootstrapToken, CSRPEM: csrPEM(t, "late")}, nil)
	e.App.Svc.Now = nil
	if status != http.StatusGone || !strings.Contains(string(body), "expired") {
		t.Errorf("expired token: got %d %s, want 410", status, body)
	}
	status, _ = e.Do("POST", "/api/v1/dms/bootstrap", "", apitypes.DMSBootstrapRequest{Token: "obt_forged", CSRPEM: csrPEM(t, "x")}, nil)
	if status != 401 {
		t.Errorf("forged token: got %d, want 401", status)
	}
	var upd apitypes.DMS
	e.MustDo("PATCH", "/api/v1/dmss/"+dms.DMS.ID, op, apitypes.UpdateDMSRequest{AuthorizedCAs: &[]string{inter.ID, root.ID}}, &upd, 200)
	if len(upd.AuthorizedCAs) != 2 || upd.Policy.Mode != "local" {
		t.Errorf("dms update: %+v", upd)
	}
	e.MustDo("POST", "/api/v1/dmss/"+dms.DMS.ID+"/disable", op, nil, &upd, 200)
	if upd.Status != "disabled" {
		t.Errorf("disabled dms status %s", upd.Status)
	}

	// Audit chain intact, then restart keeps everything.
	var v apitypes.AuditVerifyResponse
	e.MustDo("GET", "/api/v1/audit/verify", admin, nil, &v, 200)
	if !v.OK || v.Checked < 15 {
		t.Errorf("audit: %+v", v)
	}
	before := v.Checked
	e.Restart()
	if e.App.Bootstrapped {
		t.Error("restart bootstrapped again")
	}
	var cas2 apitypes.Page[apitypes.CA]
	e.MustDo("GET", "/api/v1/cas", admin, nil, &cas2, 200)
	if len(cas2.Items) != len(cas.Items)+4 {
		t.Errorf("after restart: %d CAs, want %d", len(cas2.Items), len(cas.Items)+4)
	}
	e.MustDo("GET", "/api/v1/certificates/"+issued[0].Serial, op, nil, &after, 200)
	if after.Status != "revoked" {
		t.Error("revocation lost across restart")
	}
	// The CA key created before the restart still signs.
	e.MustDo("POST", "/api/v1/certificates", op, apitypes.IssueRequest{CAID: inter.ID, CSRPEM: csrPEM(t, "after-restart")}, nil, 201)
	e.MustDo("GET", "/api/v1/audit/verify", op, nil, &v, 200)
	if !v.OK || v.Checked != before+1 {
		t.Errorf("audit after restart: %+v, want %d rows OK", v, before+1)
	}
}

func TestProblemDetails(t *testing.T) {
	e := cptest.Start(t, nil)
	tests := []struct {
		name, method, path, body string
		want                     int
		field                    string
	}{
		{"unknown field", "POST", "/api/v1/devices", `{"id":"a","colour":"red"}`, 400, "colour"},
		{"wrong type", "POST", "/api/v1/devices", `{"id":5}`, 400, "id"},
		{"not json", "POST", "/api/v1/devices", `{`, 400, ""},
		{"empty body", "POST", "/api/v1/devices", ``, 400, ""},
		{"two values", "POST", "/api/v1/devices", `{"id":"a"} {"id":"b"}`, 400, ""},
		{"bad uuid", "GET", "/api/v1/cas/not-a-uuid", ``, 400, "id"},
		{"missing ca", "GET", "/api/v1/cas/00000000-0000-0000-0000-000000000000", ``, 404, ""},
		{"bad limit", "GET", "/api/v1/certificates?limit=100000", ``, 400, "limit"},
		{"bad time", "GET", "/api/v1/certificates?expires_before=tomorrow", ``, 400, "expires_before"},
		{"no route", "GET", "/api/v1/nope", ``, 404, ""},
		{"wrong method", "PUT", "/api/v1/cas", `{}`, 405, ""},
		{"huge body", "POST", "/api/v1/devices", `{"id":"` + strings.Repeat("a", 2<<20) + `"}`, 413, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, e.URL+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+e.AdminToken)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p apitypes.Problem
			_ = jsonDecode(resp, &p)
			if resp.StatusCode != tt.want || p.Status != tt.want || p.Detail == "" {
				t.Errorf("got %d %+v, want %d with a detail", resp.StatusCode, p, tt.want)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
				t.Errorf("content type %q", ct)
			}
			if p.Field != tt.field {
				t.Errorf("field %q, want %q", p.Field, tt.field)
			}
		})
	}
}

var _ = testbed.NewPostgres

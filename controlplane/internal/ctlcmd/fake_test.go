package ctlcmd

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
)

// fakeAPI is a minimal in-memory stand-in for the control plane's REST
// API: just the routes these tests drive. The end-to-end test against the
// real control plane lives with the server.
type fakeAPI struct {
	token string

	mu       sync.Mutex
	queries  []string // RawQuery of each certificate list request
	certs    []apitypes.Certificate
	known    map[string]bool // serials already recorded
	audit    apitypes.AuditVerifyResponse
	dms      apitypes.DMS
	patched  *apitypes.UpdateDMSRequest
	pageSize int // default page size
}

const fakeToken = "opt_0123456789abcdef-SECRET"

func newFakeAPI(t *testing.T) (*fakeAPI, *httptest.Server) {
	f := &fakeAPI{token: fakeToken, known: map[string]bool{}, pageSize: 2}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func problem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apitypes.Problem{Type: "about:blank", Title: title, Status: status, Detail: detail})
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		problem(w, http.StatusUnauthorized, "Unauthorized", "missing or unknown API token")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch route := r.Method + " " + r.URL.Path; route {
	case "GET /api/v1/whoami":
		reply(w, http.StatusOK, apitypes.WhoAmI{Principal: apitypes.Principal{ID: "p1", Name: "alice", Role: "admin"}, TokenID: "tok1"})
	case "GET /api/v1/cas":
		problem(w, http.StatusForbidden, "Forbidden", "this route needs the admin role")
	case "GET /api/v1/certificates":
		f.queries = append(f.queries, r.URL.RawQuery)
		f.listCerts(w, r)
	case "POST /api/v1/certificates/import":
		f.importCert(w, r)
	case "GET /api/v1/audit/verify":
		reply(w, http.StatusOK, f.audit)
	case "GET /api/v1/dmss/d1":
		reply(w, http.StatusOK, f.dms)
	case "PATCH /api/v1/dmss/d1":
		var req apitypes.UpdateDMSRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			problem(w, http.StatusBadRequest, "Bad Request", err.Error())
			return
		}
		f.patched = &req
		if req.Policy != nil {
			f.dms.Policy = *req.Policy
		}
		if req.AuthorizedCAs != nil {
			f.dms.AuthorizedCAs = *req.AuthorizedCAs
		}
		reply(w, http.StatusOK, f.dms)
	default:
		problem(w, http.StatusNotFound, "Not Found", "no route "+route)
	}
}

func (f *fakeAPI) listCerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size := f.pageSize
	if l := q.Get("limit"); l != "" {
		size, _ = strconv.Atoi(l)
	}
	start := 0
	if c := q.Get("cursor"); c != "" {
		start, _ = strconv.Atoi(c)
	}
	page := apitypes.Page[apitypes.Certificate]{Items: []apitypes.Certificate{}}
	for i := start; i < len(f.certs) && i < start+size; i++ {
		page.Items = append(page.Items, f.certs[i])
	}
	if start+size < len(f.certs) {
		page.NextCursor = strconv.Itoa(start + size)
	}
	reply(w, http.StatusOK, page)
}

func (f *fakeAPI) importCert(w http.ResponseWriter, r *http.Request) {
	var req apitypes.ImportCertificateRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		problem(w, http.StatusBadRequest, "Bad Request", err.Error())
		return
	}
	b, _ := pem.Decode([]byte(req.CertificatePEM))
	if b == nil {
		problem(w, http.StatusUnprocessableEntity, "Invalid certificate", "no PEM block")
		return
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		problem(w, http.StatusUnprocessableEntity, "Invalid certificate", err.Error())
		return
	}
	serial := cert.SerialNumber.Text(16)
	if f.known[serial] {
		problem(w, http.StatusConflict, "Conflict", "certificate "+serial+" is already recorded")
		return
	}
	f.known[serial] = true
	reply(w, http.StatusCreated, apitypes.Certificate{Serial: serial, CommonName: cert.Subject.CommonName, NotAfter: cert.NotAfter})
}

// sampleCerts returns n certificates with fixed times and PEMs.
func sampleCerts(n int) []apitypes.Certificate {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var out []apitypes.Certificate
	for i := range n {
		out = append(out, apitypes.Certificate{
			Serial:     fmt.Sprintf("%02x", i+1),
			IssuerID:   "ca-edge",
			Subject:    fmt.Sprintf("CN=dev-%d", i+1),
			CommonName: fmt.Sprintf("dev-%d", i+1),
			SANs:       []string{fmt.Sprintf("dev-%d.example", i+1)},
			NotBefore:  base,
			NotAfter:   base.Add(time.Duration(i+1) * 24 * time.Hour),
			Status:     "active",
			DeviceID:   fmt.Sprintf("dev-%d", i+1),
			DMSID:      "dms-1",
			CertPEM:    "-----BEGIN CERTIFICATE-----\n" + strings.Repeat("QUFB", 16) + "\n-----END CERTIFICATE-----\n",
		})
	}
	return out
}

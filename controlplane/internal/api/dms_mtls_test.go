package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
)

// TestDMSMutualTLSIdentity: a DMS that bootstrapped authenticates with
// its certificate over mutual TLS, reaches only DMS routes, and loses
// access when disabled.
func TestDMSMutualTLSIdentity(t *testing.T) {
	e := cptest.Start(t, nil)
	var dms apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", e.AdminToken, apitypes.CreateDMSRequest{Name: "gw-mtls"}, &dms, 201)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	var boot apitypes.DMSBootstrapResponse
	e.MustDo("POST", "/api/v1/dms/bootstrap", "", apitypes.DMSBootstrapRequest{Token: dms.BootstrapToken,
		CSRPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))}, &boot, 200)
	block, _ := pem.Decode([]byte(boot.CertificatePEM))
	clientCert := tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}

	srv := httptest.NewUnstartedServer(e.App.API.Handler())
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: e.App.API.ClientCAs(), MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{clientCert}}}}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	get := func(c *http.Client, path string) (int, apitypes.WhoAmI) {
		t.Helper()
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var w apitypes.WhoAmI
		_ = json.NewDecoder(resp.Body).Decode(&w)
		return resp.StatusCode, w
	}
	status, who := get(client, "/api/v1/whoami")
	if status != 200 || who.Principal.Role != "dms" || who.Principal.Name != "dms:"+dms.DMS.ID {
		t.Fatalf("whoami with the DMS certificate: %d %+v", status, who)
	}
	if status, _ := get(client, "/api/v1/cas"); status != 403 {
		t.Errorf("DMS identity on an admin route: got %d, want 403", status)
	}
	if status, _ := get(anon, "/api/v1/whoami"); status != 401 {
		t.Errorf("no certificate and no token: got %d, want 401", status)
	}
	e.MustDo("POST", "/api/v1/dmss/"+dms.DMS.ID+"/disable", e.AdminToken, nil, nil, 200)
	if status, _ := get(client, "/api/v1/whoami"); status != 401 {
		t.Errorf("disabled DMS: got %d, want 401", status)
	}
}

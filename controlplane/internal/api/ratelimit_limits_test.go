package api_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-pki/outpost/controlplane/internal/api"
	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
)

// TestRatePerIdentity: each API token gets RatePerIdentity requests per
// second in bursts of BurstPerIdentity; past that a 429 problem with
// Retry-After, while another identity is still served. Unauthenticated
// requests are refused before the limiter (401, they spend nothing).
func TestRatePerIdentity(t *testing.T) {
	e := cptest.Start(t, nil)
	srv := httptest.NewServer(api.New(e.App.Svc, api.Options{RatePerIdentity: 0.5, BurstPerIdentity: 3}).Handler())
	defer srv.Close()
	var other apitypes.CreateTokenResponse
	e.MustDo("POST", "/api/v1/tokens", e.AdminToken, apitypes.CreateTokenRequest{Principal: "limits-viewer", Role: "viewer"}, &other, 201)

	get := func(token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/cas", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := 0; i < 5; i++ {
		if resp := get(""); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unauthenticated request %d: %d, want 401", i, resp.StatusCode)
		}
	}
	for i := 0; i < 3; i++ {
		if resp := get(e.AdminToken); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d within the burst: %d", i+1, resp.StatusCode)
		}
	}
	resp := get(e.AdminToken)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(resp.Header.Get("Content-Type"), "problem+json") {
		t.Fatalf("request past the burst: %d %s, want a 429 problem", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || secs < 1 || secs > 2 {
		t.Errorf("Retry-After %q, want 1 or 2 seconds at 0.5 requests per second", resp.Header.Get("Retry-After"))
	}
	if resp := get(other.Token); resp.StatusCode != http.StatusOK {
		t.Errorf("another identity: %d, want 200 (limits are per identity)", resp.StatusCode)
	}
}

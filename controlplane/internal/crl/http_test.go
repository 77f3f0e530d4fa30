package crl

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/internal/testpki"
)

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, body}
}

func maxAge(t *testing.T, h http.Header) time.Duration {
	t.Helper()
	for _, part := range strings.Split(h.Get("Cache-Control"), ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "max-age="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("Cache-Control %q: %v", h.Get("Cache-Control"), err)
			}
			return time.Duration(n) * time.Second
		}
	}
	t.Fatalf("Cache-Control %q: no max-age", h.Get("Cache-Control"))
	return 0
}

func TestHandler(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Now().Truncate(time.Second)}
	e := newEnv(t, clock)
	issuing := e.caByRole(t, "bootstrap_issuing")
	issuingCert := mustCert(t, issuing.CertDER)
	p := testpki.NewT(t, testpki.WithClock(time.Now))
	keyless, err := e.App.Svc.ImportCA(e.ctx, "test", "keyless", p.Root("Keyless Root").Cert, nil)
	if err != nil {
		t.Fatal(err)
	}

	// No CRL yet: the first GET generates one (and its delta).
	if _, err := e.svc.Latest(e.ctx, issuing.ID, false); err == nil {
		t.Fatal("a crl exists before the first request")
	}
	full := do(t, "GET", e.url(issuing.ID, false), nil)
	if full.status != http.StatusOK {
		t.Fatalf("GET full: got %d %s, want 200", full.status, full.body)
	}
	stored, err := e.svc.Latest(e.ctx, issuing.ID, false)
	if err != nil || string(stored.DER) != string(full.body) {
		t.Fatalf("GET full: got a body that is not the stored crl (%v)", err)
	}
	checkCRL(t, e.svc.BaseURL, issuingCert, issuing.ID, stored)
	sum := sha256.Sum256(full.body)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	for name, want := range map[string]string{
		"Content-Type":   ContentType,
		"ETag":           etag,
		"Last-Modified":  stored.ThisUpdate.UTC().Format(http.TimeFormat),
		"Content-Length": strconv.Itoa(len(full.body)),
	} {
		if got := full.header.Get(name); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	if age := maxAge(t, full.header); age <= 0 || age > DefaultValidity {
		t.Errorf("max-age: got %v, want in (0, %v]", age, DefaultValidity)
	}
	delta := do(t, "GET", e.url(issuing.ID, true), nil)
	if delta.status != http.StatusOK {
		t.Fatalf("GET delta: got %d %s", delta.status, delta.body)
	}
	if n, _ := deltaIndicator(t, mustParseCRL(t, delta.body)); n != stored.Number {
		t.Errorf("delta base: got %d, want %d", n, stored.Number)
	}
	if age := maxAge(t, delta.header); age <= 0 || age > DefaultDeltaValidity {
		t.Errorf("delta max-age: got %v, want in (0, %v]", age, DefaultDeltaValidity)
	}

	lastMod := full.header.Get("Last-Modified")
	for _, tc := range []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		status int
		body   string // substring; "" for no check
	}{
		{"etag matches", "GET", e.url(issuing.ID, false), map[string]string{"If-None-Match": etag}, 304, ""},
		{"etag in a list", "GET", e.url(issuing.ID, false), map[string]string{"If-None-Match": `"x", ` + etag}, 304, ""},
		{"etag differs", "GET", e.url(issuing.ID, false), map[string]string{"If-None-Match": `"0000"`}, 200, ""},
		{"not modified since", "GET", e.url(issuing.ID, false), map[string]string{"If-Modified-Since": lastMod}, 304, ""},
		{"modified since", "GET", e.url(issuing.ID, false), map[string]string{"If-Modified-Since": stored.ThisUpdate.Add(-time.Hour).UTC().Format(http.TimeFormat)}, 200, ""},
		{"If-None-Match wins over If-Modified-Since", "GET", e.url(issuing.ID, false), map[string]string{"If-None-Match": `"0000"`, "If-Modified-Since": lastMod}, 200, ""},
		{"head", "HEAD", e.url(issuing.ID, false), nil, 200, ""},
		{"unknown ca", "GET", e.url(uuid.New(), false), nil, 404, "no CRL for this CA"},
		{"unknown ca delta", "GET", e.url(uuid.New(), true), nil, 404, "no CRL for this CA"},
		{"ca without key", "GET", e.url(keyless.ID, false), nil, 404, "no CRL for this CA"},
		{"not a uuid", "GET", e.srv.URL + "/crl/not-a-uuid.crl", nil, 400, "malformed"},
		{"empty name", "GET", e.srv.URL + "/crl/.crl", nil, 400, "malformed"},
		{"no name", "GET", e.srv.URL + "/crl/", nil, 400, "malformed"},
		{"wrong extension", "GET", e.srv.URL + "/crl/" + issuing.ID.String() + ".pem", nil, 400, "malformed"},
		{"delta without extension", "GET", e.srv.URL + "/crl/" + issuing.ID.String() + "-delta", nil, 400, "malformed"},
		{"double delta", "GET", e.srv.URL + "/crl/" + issuing.ID.String() + "-delta-delta.crl", nil, 400, "malformed"},
		{"bare hex uuid", "GET", e.srv.URL + "/crl/" + strings.ReplaceAll(issuing.ID.String(), "-", "") + ".crl", nil, 400, "malformed"},
		{"urn uuid", "GET", e.srv.URL + "/crl/urn:uuid:" + issuing.ID.String() + ".crl", nil, 400, "malformed"},
		{"sub path", "GET", e.srv.URL + "/crl/a/" + issuing.ID.String() + ".crl", nil, 400, "malformed"},
		{"trailing path", "GET", e.srv.URL + "/crl/" + issuing.ID.String() + ".crl/x", nil, 400, "malformed"},
		{"post", "POST", e.url(issuing.ID, false), nil, 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, tc.path, tc.hdr)
			if r.status != tc.status {
				t.Fatalf("got %d %s, want %d", r.status, r.body, tc.status)
			}
			if tc.body != "" && !strings.Contains(string(r.body), tc.body) {
				t.Errorf("body: got %q, want it to contain %q", r.body, tc.body)
			}
			if r.status == 304 && len(r.body) != 0 {
				t.Errorf("304 with a body of %d bytes", len(r.body))
			}
			if r.status == 200 && tc.method == "GET" && string(r.body) != string(full.body) {
				t.Error("200 with a different body")
			}
		})
	}

	// Time passes: max-age shrinks towards nextUpdate; past it, the next
	// request brings a new CRL (Refresh was not running).
	clock.Set(stored.ThisUpdate.Add(20 * time.Hour))
	r := do(t, "GET", e.url(issuing.ID, false), map[string]string{"If-None-Match": etag})
	if r.status != 304 || maxAge(t, r.header) != 4*time.Hour {
		t.Errorf("after 20h: got %d max-age %v, want 304 with 4h", r.status, maxAge(t, r.header))
	}
	clock.Set(stored.NextUpdate.Add(time.Minute))
	r = do(t, "GET", e.url(issuing.ID, false), map[string]string{"If-None-Match": etag})
	if r.status != 200 {
		t.Fatalf("expired: got %d, want 200 with a new crl", r.status)
	}
	if l := mustParseCRL(t, r.body); l.Number.Int64() <= stored.Number || !l.ThisUpdate.Equal(clock.Now()) {
		t.Errorf("expired: got crl %d from %v, want a number above %d from %v", l.Number, l.ThisUpdate, stored.Number, clock.Now())
	}
	if age := maxAge(t, r.header); age != DefaultValidity {
		t.Errorf("new crl max-age: got %v, want %v", age, DefaultValidity)
	}
}

func TestParsePath(t *testing.T) {
	id := uuid.MustParse("0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64")
	for _, tc := range []struct {
		path  string
		ok    bool
		delta bool
	}{
		{"/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64.crl", true, false},
		{"/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64-delta.crl", true, true},
		{"/crl/0B9E6F7A-8D5C-4C8E-9A51-3F2A1D0C7B64.crl", true, false},
		{"/crl/0b9e6f7a8d5c4c8e9a513f2a1d0c7b64.crl", false, false},
		{"/crl/{0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64}.crl", false, false},
		{"/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64", false, false},
		{"/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64.crl.crl", false, false},
		{"/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b6z.crl", false, false},
		{"/crl/-delta.crl", false, false},
		{"/ocsp/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64.crl", false, false},
		{"", false, false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			got, delta, err := parsePath(tc.path)
			if (err == nil) != tc.ok {
				t.Fatalf("got err %v, want ok %v", err, tc.ok)
			}
			if tc.ok && (got != id || delta != tc.delta) {
				t.Errorf("got %s delta %v, want %s delta %v", got, delta, id, tc.delta)
			}
		})
	}
}

// FuzzParsePath: anything parsePath accepts is a canonical CRL path
// (modulo the case of the hex digits).
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64.crl", "/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64-delta.crl", "/crl/", "/crl/x-delta.crl", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		id, delta, err := parsePath(p)
		if err != nil {
			return
		}
		want := FullURL("", id)
		if delta {
			want = DeltaURL("", id)
		}
		if !strings.EqualFold(p, want) {
			t.Errorf("parsePath(%q) = %s, %v: not the canonical %q", p, id, delta, want)
		}
	})
}

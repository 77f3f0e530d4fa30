package est

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-pki/outpost/internal/pkcs7"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// testChain returns a leaf, its issuing CA and the root, in that order,
// and the leaf's PKCS#8 key.
func testChain(tb testing.TB) ([]*x509.Certificate, []byte) {
	tb.Helper()
	p := testpki.NewT(tb)
	root := p.Root("Outpost EST Test Root")
	issuing := root.Intermediate("Outpost EST Test Issuing CA", testpki.PathLen(0))
	leaf := issuing.Leaf("device-1.outpost.test", testpki.DNSNames("device-1.outpost.test"))
	key, err := x509.MarshalPKCS8PrivateKey(leaf.Key)
	if err != nil {
		tb.Fatal(err)
	}
	return []*x509.Certificate{leaf.Cert, issuing.Cert, root.Cert}, key
}

// raws returns the DER of certs.
func raws(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// checkBase64Lines fails unless body is base64 in CRLF-ended lines of at
// most 64 characters.
func checkBase64Lines(t *testing.T, body []byte) {
	t.Helper()
	if !bytes.HasSuffix(body, []byte("\r\n")) {
		t.Errorf("body does not end in CRLF")
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\r\n"), "\r\n")
	for i, l := range lines {
		if len(l) > 64 || (i < len(lines)-1 && len(l) != 64) {
			t.Errorf("line %d has %d characters, want 64 (at most 64 for the last)", i, len(l))
		}
		if strings.ContainsAny(l, "\r\n") {
			t.Errorf("line %d holds a bare CR or LF", i)
		}
	}
}

// checkHeaders fails unless rec has the wanted status, Content-Type and
// Content-Transfer-Encoding, and a Content-Length matching its body.
func checkHeaders(t *testing.T, rec *httptest.ResponseRecorder, status int, contentType, cte string) {
	t.Helper()
	if rec.Code != status {
		t.Errorf("got status %d, want %d", rec.Code, status)
	}
	h := rec.Header()
	if got := h.Get("Content-Type"); got != contentType {
		t.Errorf("got Content-Type %q, want %q", got, contentType)
	}
	if got := h.Get("Content-Transfer-Encoding"); got != cte {
		t.Errorf("got Content-Transfer-Encoding %q, want %q", got, cte)
	}
	if got, want := h.Get("Content-Length"), strconv.Itoa(rec.Body.Len()); got != want {
		t.Errorf("got Content-Length %q, want %q", got, want)
	}
}

func TestWriteCerts(t *testing.T) {
	certs, _ := testChain(t)
	for n := 1; n <= len(certs); n++ {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			rec := httptest.NewRecorder()
			if err := WriteCerts(rec, raws(certs[:n])...); err != nil {
				t.Fatalf("WriteCerts: %v", err)
			}
			checkHeaders(t, rec, http.StatusOK, "application/pkcs7-mime; smime-type=certs-only", "base64")
			checkBase64Lines(t, rec.Body.Bytes())
			got, err := pkcs7.DecodeBase64CertsOnly(rec.Body.Bytes())
			if err != nil {
				t.Fatalf("decoding what was written: %v", err)
			}
			if len(got) != n {
				t.Fatalf("got %d certificates, want %d", len(got), n)
			}
			for i := range got {
				if !bytes.Equal(got[i].Raw, certs[i].Raw) {
					t.Errorf("certificate %d: got %q, want %q", i, got[i].Subject, certs[i].Subject)
				}
			}
		})
	}
}

func TestWriteCertsErrors(t *testing.T) {
	tests := []struct {
		name  string
		certs [][]byte
		want  error
	}{
		{"none", nil, pkcs7.ErrNoCertificates},
		{"not der", [][]byte{[]byte("hello")}, pkcs7.ErrMalformed},
		{"empty cert", [][]byte{nil}, pkcs7.ErrMalformed},
		{"trailing data", [][]byte{{0x30, 0x00, 0x00}}, pkcs7.ErrMalformed},
		{"too many", make([][]byte, pkcs7.MaxCerts+1), pkcs7.ErrTooManyCerts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := WriteCerts(rec, tt.certs...)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			checkNothingWritten(t, rec)
		})
	}
}

// checkNothingWritten fails if anything was written to rec, so the caller
// could still answer with WriteError.
func checkNothingWritten(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if len(rec.Header()) != 0 || rec.Body.Len() != 0 {
		t.Errorf("got headers %v and %d body bytes, want nothing written", rec.Header(), rec.Body.Len())
	}
}

func TestWriteCSRAttrs(t *testing.T) {
	der, err := EncodeCSRAttrs(DefaultCSRAttrs())
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if err := WriteCSRAttrs(rec, der); err != nil {
		t.Fatalf("WriteCSRAttrs: %v", err)
	}
	checkHeaders(t, rec, http.StatusOK, "application/csrattrs", "base64")
	checkBase64Lines(t, rec.Body.Bytes())
	got, err := DecodeBase64(rec.Body.Bytes())
	if err != nil {
		t.Fatalf("decoding base64: %v", err)
	}
	attrs, err := ParseCSRAttrs(got)
	if err != nil {
		t.Fatalf("parsing: %v", err)
	}
	sameAttrs(t, attrs, DefaultCSRAttrs())

	t.Run("empty", func(t *testing.T) {
		rec := httptest.NewRecorder()
		if err := WriteCSRAttrs(rec, nil); err != nil {
			t.Fatalf("WriteCSRAttrs: %v", err)
		}
		if rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
			t.Errorf("got %d with %d bytes, want 204 and no body", rec.Code, rec.Body.Len())
		}
	})
	t.Run("not der", func(t *testing.T) {
		rec := httptest.NewRecorder()
		if err := WriteCSRAttrs(rec, []byte{0x06, 0x01, 0x2a}); !errors.Is(err, ErrCSRAttrsMalformed) {
			t.Errorf("got %v, want %v", err, ErrCSRAttrsMalformed)
		}
		checkNothingWritten(t, rec)
	})
}

func TestWriteServerKeygen(t *testing.T) {
	certs, key := testChain(t)
	rec := httptest.NewRecorder()
	if err := WriteServerKeygen(rec, key, raws(certs[:2])...); err != nil {
		t.Fatalf("WriteServerKeygen: %v", err)
	}
	if rec.Code != http.StatusOK {
		t.Errorf("got status %d, want 200", rec.Code)
	}
	if got, want := rec.Header().Get("Content-Length"), strconv.Itoa(rec.Body.Len()); got != want {
		t.Errorf("got Content-Length %q, want %q", got, want)
	}
	mt, params, err := mime.ParseMediaType(rec.Header().Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		t.Fatalf("got Content-Type %q (%v), want multipart/mixed with a boundary", rec.Header().Get("Content-Type"), err)
	}
	mr := multipart.NewReader(bytes.NewReader(rec.Body.Bytes()), params["boundary"])
	readPart := func(wantType string) []byte {
		t.Helper()
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("reading part %s: %v", wantType, err)
		}
		if got := p.Header.Get("Content-Type"); got != wantType {
			t.Errorf("got part Content-Type %q, want %q", got, wantType)
		}
		if got := p.Header.Get("Content-Transfer-Encoding"); got != "base64" {
			t.Errorf("got part Content-Transfer-Encoding %q, want base64", got)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		checkBase64Lines(t, b)
		return b
	}
	keyPart := readPart("application/pkcs8")
	certPart := readPart("application/pkcs7-mime; smime-type=certs-only")
	if _, err := mr.NextPart(); err != io.EOF {
		t.Errorf("got %v after two parts, want io.EOF", err)
	}

	gotKey, err := DecodeBase64(keyPart)
	if err != nil || !bytes.Equal(gotKey, key) {
		t.Errorf("key part decodes to %x (%v), want the key", gotKey, err)
	}
	if _, err := x509.ParsePKCS8PrivateKey(gotKey); err != nil {
		t.Errorf("parsing key: %v", err)
	}
	gotCerts, err := pkcs7.DecodeBase64CertsOnly(certPart)
	if err != nil {
		t.Fatalf("decoding certificates: %v", err)
	}
	if len(gotCerts) != 2 || !bytes.Equal(gotCerts[0].Raw, certs[0].Raw) || !bytes.Equal(gotCerts[1].Raw, certs[1].Raw) {
		t.Errorf("got %d certificates, want leaf and issuing CA", len(gotCerts))
	}

	// Two answers use different boundaries.
	rec2 := httptest.NewRecorder()
	if err := WriteServerKeygen(rec2, key, certs[0].Raw); err != nil {
		t.Fatal(err)
	}
	if rec2.Header().Get("Content-Type") == rec.Header().Get("Content-Type") {
		t.Errorf("two answers share the boundary %q", rec.Header().Get("Content-Type"))
	}

	t.Run("errors", func(t *testing.T) {
		for name, args := range map[string]struct {
			key   []byte
			certs [][]byte
		}{
			"no key":      {nil, raws(certs)},
			"bad key":     {[]byte("key"), raws(certs)},
			"key garbage": {append(bytes.Clone(key), 0), raws(certs)},
			"no certs":    {key, nil},
			"bad cert":    {key, [][]byte{{1, 2, 3}}},
		} {
			t.Run(name, func(t *testing.T) {
				rec := httptest.NewRecorder()
				if err := WriteServerKeygen(rec, args.key, args.certs...); err == nil {
					t.Errorf("got no error")
				}
				checkNothingWritten(t, rec)
			})
		}
	})
}

func TestWriteError(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		msg        string
		wantStatus int
		wantBody   string
		wantAuth   string
	}{
		{"bad request", 400, "invalid csr", 400, "invalid csr\n", ""},
		{"forbidden", 403, "csr subject does not match current certificate", 403, "csr subject does not match current certificate\n", ""},
		{"unsupported media type", 415, "content type must be application/pkcs10", 415, "content type must be application/pkcs10\n", ""},
		{"unauthorized default realm", 401, "credentials required", 401, "credentials required\n", `Basic realm="EST"`},
		{"empty message", 404, "", 404, "not found\n", ""},
		{"multi-line message", 400, "line one\r\nline two\n", 400, "line one  line two\n", ""},
		{"control characters", 400, "a\x00b\x1bc\x7fd", 400, "a b c d\n", ""},
		{"invalid utf-8", 400, "bad \xff byte", 400, "bad ? byte\n", ""},
		{"long message", 400, strings.Repeat("x", 300), 400, strings.Repeat("x", 256) + "\n", ""},
		{"long multibyte message", 400, strings.Repeat("é", 200), 400, strings.Repeat("é", 128) + "\n", ""},
		{"success status", 200, "not an error", 500, "not an error\n", ""},
		{"informational status", 100, "x", 500, "x\n", ""},
		{"invalid status", -1, "x", 500, "x\n", ""},
		{"huge status", 10000, "x", 500, "x\n", ""},
		{"server error", 503, "issuer unavailable", 503, "issuer unavailable\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			rec.Header().Set("Content-Transfer-Encoding", "base64") // left over from a writer
			WriteError(rec, tt.status, tt.msg)
			checkHeaders(t, rec, tt.wantStatus, "text/plain; charset=utf-8", "")
			if got := rec.Body.String(); got != tt.wantBody {
				t.Errorf("got body %q, want %q", got, tt.wantBody)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tt.wantAuth {
				t.Errorf("got WWW-Authenticate %q, want %q", got, tt.wantAuth)
			}
			if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("got X-Content-Type-Options %q, want nosniff", got)
			}
		})
	}
}

func TestWriteUnauthorized(t *testing.T) {
	tests := []struct {
		realm string
		want  string
	}{
		{"outpost-est", `Basic realm="outpost-est"`},
		{"", `Basic realm="EST"`},
		{`a "quoted" \ realm`, `Basic realm="a \"quoted\" \\ realm"`},
		{"line\r\nbreak", `Basic realm="linebreak"`},
		{"café", `Basic realm="caf??"`},
	}
	for _, tt := range tests {
		t.Run(tt.realm, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteUnauthorized(rec, tt.realm, "credentials required")
			checkHeaders(t, rec, http.StatusUnauthorized, "text/plain; charset=utf-8", "")
			if got := rec.Header().Get("WWW-Authenticate"); got != tt.want {
				t.Errorf("got WWW-Authenticate %q, want %q", got, tt.want)
			}
			if got := rec.Body.String(); got != "credentials required\n" {
				t.Errorf("got body %q, want %q", got, "credentials required\n")
			}
		})
	}
	t.Run("error keeps retry-after", func(t *testing.T) {
		rec := httptest.NewRecorder()
		rec.Header().Set("Retry-After", "5")
		WriteError(rec, http.StatusTooManyRequests, "too many requests")
		if got := rec.Header().Get("Retry-After"); got != "5" {
			t.Errorf("got Retry-After %q, want 5", got)
		}
	})
	t.Run("error keeps a realm set by the caller", func(t *testing.T) {
		rec := httptest.NewRecorder()
		rec.Header().Set("WWW-Authenticate", `Basic realm="mine"`)
		WriteError(rec, http.StatusUnauthorized, "no")
		if got := rec.Header().Get("WWW-Authenticate"); got != `Basic realm="mine"` {
			t.Errorf("got %q, want the caller's realm", got)
		}
	})
}

func TestWriteRetryLater(t *testing.T) {
	tests := []struct {
		seconds   int
		msg       string
		wantAfter string
		wantBody  string
	}{
		{30, "awaiting approval", "30", "awaiting approval\n"},
		{3600, "", "3600", "request accepted, retry later\n"},
		{0, "queued", "1", "queued\n"},
		{-5, "queued", "1", "queued\n"},
	}
	for _, tt := range tests {
		t.Run(tt.wantAfter, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteRetryLater(rec, tt.seconds, tt.msg)
			checkHeaders(t, rec, http.StatusAccepted, "text/plain; charset=utf-8", "")
			if got := rec.Header().Get("Retry-After"); got != tt.wantAfter {
				t.Errorf("got Retry-After %q, want %q", got, tt.wantAfter)
			}
			if got := rec.Body.String(); got != tt.wantBody {
				t.Errorf("got body %q, want %q", got, tt.wantBody)
			}
		})
	}
}

// TestWritersOverHTTP checks the answers through a real server, so
// net/http's own handling of Content-Length and status codes is included.
func TestWritersOverHTTP(t *testing.T) {
	certs, key := testChain(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, op, ok := ParsePath(r.URL.Path)
		switch {
		case !ok:
			WriteError(w, http.StatusNotFound, "unknown est operation")
		case op == OpCACerts:
			_ = WriteCerts(w, certs[1].Raw, certs[2].Raw)
		case op == OpServerKeygen:
			_ = WriteServerKeygen(w, key, certs[0].Raw, certs[1].Raw)
		case op == OpCSRAttrs:
			WriteUnauthorized(w, "outpost", "credentials required")
		default:
			WriteRetryLater(w, 10, "awaiting approval")
		}
	}))
	defer srv.Close()
	tests := []struct {
		path       string
		wantStatus int
	}{
		{"/.well-known/est/cacerts", 200},
		{"/.well-known/est/serverkeygen", 200},
		{"/.well-known/est/csrattrs", 401},
		{"/.well-known/est/simpleenroll", 202},
		{"/.well-known/est/nothing", 404},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := srv.Client().Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("got status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) != 0 {
				t.Errorf("got Content-Length %d and Transfer-Encoding %v for %d bytes, want a plain Content-Length",
					resp.ContentLength, resp.TransferEncoding, len(body))
			}
		})
	}
}

package est

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReadCSR(t *testing.T) {
	der := newCSR(t)
	b64 := EncodeBase64(der)
	tests := []struct {
		name        string
		contentType string // "-" for none
		header      map[string]string
		body        []byte
		want        []byte
	}{
		{name: "base64 crlf", contentType: "application/pkcs10", body: b64, want: der},
		{name: "base64 lf", contentType: "application/pkcs10", body: lfLines(der), want: der},
		{name: "base64 no breaks", contentType: "application/pkcs10", body: noBreaks(der), want: der},
		{name: "base64 no trailing newline", contentType: "application/pkcs10", body: bytes.TrimSpace(b64), want: der},
		{name: "surrounding whitespace", contentType: "application/pkcs10", body: append(append([]byte("\r\n \t"), b64...), " \n\n"...), want: der},
		{name: "76 char lines", contentType: "application/pkcs10", body: rewrap(noBreaks(der), 76, "\r\n"), want: der},
		{name: "unpadded", contentType: "application/pkcs10", body: bytes.TrimRight(noBreaks(der), "="), want: der},
		{name: "pem", contentType: "application/pkcs10", body: pemCSR(der, "CERTIFICATE REQUEST", "\n"), want: der},
		{name: "pem crlf", contentType: "application/pkcs10", body: pemCSR(der, "CERTIFICATE REQUEST", "\r\n"), want: der},
		{name: "pem new certificate request", contentType: "application/pkcs10", body: pemCSR(der, "NEW CERTIFICATE REQUEST", "\n"), want: der},
		{name: "pem surrounded by whitespace", contentType: "application/pkcs10", body: append([]byte("\n\n"), pemCSR(der, "CERTIFICATE REQUEST", "\n")...), want: der},
		{name: "raw der", contentType: "application/pkcs10", body: der, want: der},
		{name: "no content type", contentType: "-", body: b64, want: der},
		{name: "content type with parameter", contentType: "application/pkcs10; charset=us-ascii", body: b64, want: der},
		{name: "content type upper case", contentType: "Application/PKCS10", body: b64, want: der},
		{name: "content type with bad parameter", contentType: "application/pkcs10; foo", body: b64, want: der},
		{name: "content transfer encoding base64", contentType: "application/pkcs10",
			header: map[string]string{"Content-Transfer-Encoding": "base64"}, body: b64, want: der},
		{name: "content transfer encoding ignored", contentType: "application/pkcs10",
			header: map[string]string{"Content-Transfer-Encoding": "binary"}, body: b64, want: der},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := enrollRequest(tt.body, tt.contentType)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			got, err := ReadCSR(r, MaxRequestBody)
			if err != nil {
				t.Fatalf("ReadCSR: %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %x, want %x", got, tt.want)
			}
		})
	}
}

// rewrap breaks b into lines of n characters ended by eol.
func rewrap(b []byte, n int, eol string) []byte {
	var out []byte
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, b[:k]...)
		out = append(out, eol...)
		b = b[k:]
	}
	return out
}

func TestReadCSRErrors(t *testing.T) {
	der := newCSR(t)
	b64 := EncodeBase64(der)
	notSeq, _ := hex.DecodeString("020101") // INTEGER 1
	tests := []struct {
		name        string
		contentType string
		body        []byte
		limit       int64
		wantStatus  int
		wantMsg     string // substring of Message
	}{
		{"wrong content type", "application/json", b64, 0, 415, "application/pkcs10"},
		{"text plain", "text/plain", b64, 0, 415, "application/pkcs10"},
		{"pkcs7 mime", "application/pkcs7-mime", b64, 0, 415, "application/pkcs10"},
		{"unparsable content type", "//", b64, 0, 415, "application/pkcs10"},
		{"oversize", "application/pkcs10", b64, int64(len(b64) - 1), 413, "request body too large"},
		{"oversize default limit", "application/pkcs10", bytes.Repeat([]byte("QUFB\r\n"), MaxRequestBody/6+1), 0, 413, "request body too large"},
		{"empty", "application/pkcs10", nil, 0, 400, "empty request body"},
		{"whitespace only", "application/pkcs10", []byte(" \r\n\t\n"), 0, 400, "empty request body"},
		{"garbage", "application/pkcs10", []byte("hello, world!"), 0, 400, "not a base64 csr"},
		{"bad base64 character", "application/pkcs10", append(bytes.Clone(b64[:20]), '*'), 0, 400, "invalid base64 at byte 20"},
		{"misplaced padding", "application/pkcs10", []byte("QQ==QUFB"), 0, 400, "invalid base64"},
		{"base64 of non-sequence", "application/pkcs10", EncodeBase64(notSeq), 0, 400, "not a der-encoded csr"},
		{"base64 of truncated csr", "application/pkcs10", EncodeBase64(der[:len(der)-1]), 0, 400, "not a der-encoded csr"},
		{"base64 with trailing data", "application/pkcs10", EncodeBase64(append(bytes.Clone(der), 0x05, 0x00)), 0, 400, "not a der-encoded csr"},
		{"truncated raw der", "application/pkcs10", der[:len(der)-3], 0, 400, "not a base64 csr"},
		{"pem wrong type", "application/pkcs10", pemCSR(der, "CERTIFICATE", "\n"), 0, 400, "pem block type"},
		{"pem trailing data", "application/pkcs10", append(pemCSR(der, "CERTIFICATE REQUEST", "\n"), "junk"...), 0, 400, "after the pem block"},
		{"pem broken", "application/pkcs10", []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"), 0, 400, "invalid pem armour"},
		{"pem empty", "application/pkcs10", []byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"), 0, 400, "empty csr"},
		{"pem headers", "application/pkcs10", []byte("-----BEGIN CERTIFICATE REQUEST-----\nProc-Type: 4,ENCRYPTED\n\n" + string(b64) + "-----END CERTIFICATE REQUEST-----\n"), 0, 400, "pem headers"},
		{"pem not a sequence", "application/pkcs10", pemCSR(notSeq, "CERTIFICATE REQUEST", "\n"), 0, 400, "not a der-encoded csr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadCSR(enrollRequest(tt.body, tt.contentType), tt.limit)
			if err == nil {
				t.Fatalf("got %x, want error %d", got, tt.wantStatus)
			}
			e := asError(t, err)
			if e.Status != tt.wantStatus {
				t.Errorf("got status %d, want %d (%v)", e.Status, tt.wantStatus, e)
			}
			if !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("got message %q, want it to contain %q", e.Message, tt.wantMsg)
			}
		})
	}
}

func TestReadCSRNilBody(t *testing.T) {
	r := enrollRequest(nil, "application/pkcs10")
	r.Body = nil
	_, err := ReadCSR(r, 0)
	if e := asError(t, err); e.Status != http.StatusBadRequest || e.Message != "empty request body" {
		t.Errorf("got %v, want 400 empty request body", e)
	}
}

// TestReadCSRStopsReading checks that an oversize body is refused without
// reading it all, both when Content-Length announces it and when it does
// not.
func TestReadCSRStopsReading(t *testing.T) {
	const limit = 100
	t.Run("content length", func(t *testing.T) {
		body := &countingReader{r: bytes.NewReader(make([]byte, 1000))}
		r := enrollRequest(nil, "application/pkcs10")
		r.Body = io.NopCloser(body)
		r.ContentLength = 1000
		_, err := ReadCSR(r, limit)
		if e := asError(t, err); e.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("got %v, want 413", e)
		}
		if body.n != 0 {
			t.Errorf("read %d bytes, want 0", body.n)
		}
	})
	t.Run("unknown length", func(t *testing.T) {
		body := &countingReader{r: bytes.NewReader(make([]byte, 1000))}
		r := enrollRequest(nil, "application/pkcs10")
		r.Body = io.NopCloser(body)
		r.ContentLength = -1
		_, err := ReadCSR(r, limit)
		if e := asError(t, err); e.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("got %v, want 413", e)
		}
		if body.n > limit+1 {
			t.Errorf("read %d bytes, want at most %d", body.n, limit+1)
		}
	})
	t.Run("max bytes reader", func(t *testing.T) {
		b64 := EncodeBase64(newCSR(t))
		r := enrollRequest(b64, "application/pkcs10")
		r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, 10)
		_, err := ReadCSR(r, MaxRequestBody)
		if e := asError(t, err); e.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("got %v, want 413", e)
		}
	})
	t.Run("read error", func(t *testing.T) {
		r := enrollRequest(nil, "application/pkcs10")
		r.Body = io.NopCloser(errReader{})
		_, err := ReadCSR(r, MaxRequestBody)
		if e := asError(t, err); e.Status != http.StatusBadRequest || e.Message != "reading request body failed" {
			t.Errorf("got %v, want 400 reading request body failed", e)
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// TestReadCSRChunked sends bodies with chunked transfer encoding over a
// real connection, as the globalsign EST client always does.
func TestReadCSRChunked(t *testing.T) {
	der := newCSR(t)
	type result struct {
		chunked bool
		der     []byte
		err     error
	}
	results := make(chan result, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, err := ReadCSR(r, 1024)
		results <- result{
			chunked: len(r.TransferEncoding) == 1 && r.TransferEncoding[0] == "chunked",
			der:     got,
			err:     err,
		}
		if err != nil {
			e := asError(t, err)
			WriteError(w, e.Status, e.Message)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	post := func(t *testing.T, body []byte) (result, int) {
		t.Helper()
		// A reader of unknown length makes net/http send the body chunked;
		// io.MultiReader also splits it into several chunks.
		half := len(body) / 2
		rd := io.MultiReader(bytes.NewReader(body[:half]), bytes.NewReader(body[half:]))
		req, err := http.NewRequest(http.MethodPost, srv.URL+PathPrefix+OpSimpleEnroll, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/pkcs10")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("post: %v", err)
		}
		resp.Body.Close()
		return <-results, resp.StatusCode
	}

	t.Run("accepted", func(t *testing.T) {
		res, status := post(t, lfLines(der))
		if !res.chunked {
			t.Fatalf("request was not chunked")
		}
		if res.err != nil || status != http.StatusNoContent {
			t.Fatalf("got status %d, error %v, want 204", status, res.err)
		}
		if !bytes.Equal(res.der, der) {
			t.Errorf("got %x, want %x", res.der, der)
		}
	})
	t.Run("oversize", func(t *testing.T) {
		res, status := post(t, bytes.Repeat([]byte("QUFB\n"), 1000))
		if !res.chunked {
			t.Fatalf("request was not chunked")
		}
		if status != http.StatusRequestEntityTooLarge {
			t.Errorf("got status %d, want 413 (%v)", status, res.err)
		}
	})
}

func TestErrorString(t *testing.T) {
	e := &Error{Status: 415, Message: "content type must be application/pkcs10"}
	if got, want := e.Error(), "est: 415 content type must be application/pkcs10"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

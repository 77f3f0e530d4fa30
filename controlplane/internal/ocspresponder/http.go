package ocspresponder

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// PathPrefix is where the responder is mounted; issued certificates carry
// BaseURL + PathPrefix as their OCSP URL.
const PathPrefix = "/ocsp"

// Handler serves OCSP over HTTP: POST PathPrefix with an
// application/ocsp-request body, or GET PathPrefix/<base64 request> with
// standard base64, URL-encoded (RFC 6960 A.1). Answers carry RFC 5019
// caching headers.
func (r *Responder) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var der []byte
		switch req.Method {
		case http.MethodPost:
			b, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxRequestSize))
			if err != nil {
				http.Error(w, "request larger than 8 KiB", http.StatusRequestEntityTooLarge)
				return
			}
			der = b
		case http.MethodGet:
			raw := strings.TrimPrefix(req.URL.EscapedPath(), PathPrefix)
			raw = strings.TrimPrefix(raw, "/")
			if len(raw) > 2*MaxRequestSize {
				http.Error(w, "request larger than 8 KiB", http.StatusRequestURITooLong)
				return
			}
			der = decodeGET(raw)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "use GET or POST", http.StatusMethodNotAllowed)
			return
		}
		a := r.Respond(req.Context(), der)
		h := w.Header()
		h.Set("Content-Type", "application/ocsp-response")
		h.Set("Content-Length", strconv.Itoa(len(a.DER)))
		if a.Cacheable {
			now := r.now()
			maxAge := int(a.NextUpdate.Sub(now).Seconds())
			if maxAge < 0 {
				maxAge = 0
			}
			sum := sha256.Sum256(a.DER)
			etag := `"` + hex.EncodeToString(sum[:16]) + `"`
			h.Set("Cache-Control", "max-age="+strconv.Itoa(maxAge)+", public, no-transform, must-revalidate")
			h.Set("Last-Modified", a.ThisUpdate.UTC().Format(http.TimeFormat))
			h.Set("Expires", a.NextUpdate.UTC().Format(http.TimeFormat))
			h.Set("ETag", etag)
			if req.Method == http.MethodGet && req.Header.Get("If-None-Match") == etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		} else {
			h.Set("Cache-Control", "no-cache, no-store")
		}
		if req.Method == http.MethodGet && r.responsesSinceIMS(req, a) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = w.Write(a.DER)
	})
}

func (r *Responder) responsesSinceIMS(req *http.Request, a Answer) bool {
	ims := req.Header.Get("If-Modified-Since")
	if ims == "" || !a.Cacheable || req.Header.Get("If-None-Match") != "" {
		return false
	}
	t, err := http.ParseTime(ims)
	return err == nil && !a.ThisUpdate.Truncate(time.Second).After(t)
}

// decodeGET turns the path segment of a GET request into DER: URL
// decoding, then standard base64 (padding optional); base64url is
// accepted too, as some clients send it. Garbage decodes to nil, which
// Respond answers with malformedRequest.
func decodeGET(raw string) []byte {
	s, err := url.PathUnescape(raw)
	if err != nil {
		return nil
	}
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b
		}
	}
	return nil
}

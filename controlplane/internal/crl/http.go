package crl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ContentType is the media type of a DER CRL (RFC 2585 section 4.2).
const ContentType = "application/pkix-crl"

// errBadPath is a request path that is not a CRL name.
var errBadPath = errors.New("crl: not a crl path")

// maxPathLen caps what parsePath looks at: the longest valid path is
// PathPrefix + 36 + len("-delta.crl").
const maxPathLen = len(PathPrefix) + 36 + len("-delta.crl")

// parsePath reads /crl/{uuid}.crl (full) or /crl/{uuid}-delta.crl.
func parsePath(p string) (id uuid.UUID, delta bool, err error) {
	if len(p) > maxPathLen || !strings.HasPrefix(p, PathPrefix) {
		return uuid.Nil, false, errBadPath
	}
	name := p[len(PathPrefix):]
	switch {
	case strings.HasSuffix(name, "-delta.crl"):
		name, delta = strings.TrimSuffix(name, "-delta.crl"), true
	case strings.HasSuffix(name, ".crl"):
		name = strings.TrimSuffix(name, ".crl")
	default:
		return uuid.Nil, false, errBadPath
	}
	// Only the canonical 8-4-4-4-12 form: uuid.Parse also takes urn:,
	// braces and bare hex, which would give one CRL many names.
	if len(name) != 36 {
		return uuid.Nil, false, errBadPath
	}
	id, err = uuid.Parse(name)
	if err != nil {
		return uuid.Nil, false, errBadPath
	}
	return id, delta, nil
}

// Handler serves GET and HEAD PathPrefix{uuid}.crl (the full CRL) and
// PathPrefix{uuid}-delta.crl (the delta) as DER, with Cache-Control
// max-age up to nextUpdate, Last-Modified (thisUpdate) and a strong ETag
// (SHA-256 of the DER), answering If-None-Match and If-Modified-Since
// with 304. A CA with a key that has no CRL yet, or only an expired one,
// gets one generated on the spot. Malformed paths get 400, unknown CAs
// and CAs without a key 404; errors are short plain text. Mount it at
// PathPrefix on the server's root (the paths it matches include the
// prefix).
func (s *Service) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		id, delta, err := parsePath(r.URL.Path)
		if err != nil {
			http.Error(w, "malformed crl path: want "+PathPrefix+"<ca uuid>.crl or "+PathPrefix+"<ca uuid>-delta.crl", http.StatusBadRequest)
			return
		}
		c, err := s.current(r.Context(), id, delta)
		var nk *NoKeyError
		switch {
		case errors.Is(err, ErrNotFound), errors.As(err, &nk):
			http.Error(w, "no CRL for this CA", http.StatusNotFound)
			return
		case err != nil:
			s.log().Error("crl: serving", "ca_id", id, "delta", delta, "err", err)
			w.Header().Set("Retry-After", "5")
			http.Error(w, "CRL temporarily unavailable", http.StatusServiceUnavailable)
			return
		}
		maxAge := int64(c.NextUpdate.Sub(s.now()) / time.Second)
		if maxAge < 0 {
			maxAge = 0
		}
		sum := sha256.Sum256(c.DER)
		h := w.Header()
		h.Set("Content-Type", ContentType)
		h.Set("Cache-Control", "max-age="+strconv.FormatInt(maxAge, 10)+", public, no-transform, must-revalidate")
		h.Set("Expires", c.NextUpdate.UTC().Format(http.TimeFormat))
		h.Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
		// ServeContent sets Last-Modified and Content-Length and answers
		// If-None-Match (before If-Modified-Since, RFC 9110 13.2.2), HEAD
		// and ranges.
		http.ServeContent(w, r, "", c.ThisUpdate, bytes.NewReader(c.DER))
	})
}

// current returns the CRL to serve, generating it when it is missing or
// expired. An expired CRL is served when a new one cannot be made.
func (s *Service) current(ctx context.Context, id uuid.UUID, delta bool) (*CRL, error) {
	c, err := s.Latest(ctx, id, delta)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	fresh := c != nil && s.now().Before(c.NextUpdate)
	if fresh && delta {
		// A delta must be on the newest full CRL to be of use.
		full, err := s.Latest(ctx, id, false)
		fresh = err == nil && full.Number == c.BaseNumber
	}
	if fresh {
		return c, nil
	}
	if _, gerr := s.regenerate(ctx, id, trigServe, delta); gerr != nil {
		if c != nil {
			s.log().Warn("crl: serving an expired crl", "ca_id", id, "delta", delta, "err", gerr)
			return c, nil
		}
		return nil, gerr
	}
	return s.Latest(ctx, id, delta)
}

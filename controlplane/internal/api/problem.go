package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// MaxBodySize caps request bodies: the largest legitimate request is a CA
// import with a certificate and a key, a few KiB.
const MaxBodySize = 1 << 20

const problemBase = "https://outpost.dev/problems/"

// problem writes an RFC 9457 problem details response.
func problem(c *gin.Context, status int, slug, detail, field string) {
	c.Header("Content-Type", "application/problem+json")
	c.AbortWithStatusJSON(status, apitypes.Problem{
		Type:     problemBase + slug,
		Title:    http.StatusText(status),
		Status:   status,
		Detail:   detail,
		Instance: c.Request.URL.Path,
		Field:    field,
	})
}

// fail maps an error from the service or registry to a problem. Unknown
// errors become 500 with a generic message; the cause goes to the log.
func (s *Server) fail(c *gin.Context, err error) {
	if se, ok := caservice.AsError(err); ok {
		status := map[caservice.Kind]int{
			caservice.KindInvalid:      http.StatusBadRequest,
			caservice.KindNotFound:     http.StatusNotFound,
			caservice.KindConflict:     http.StatusConflict,
			caservice.KindForbidden:    http.StatusForbidden,
			caservice.KindUnauthorized: http.StatusUnauthorized,
			caservice.KindGone:         http.StatusGone,
		}[se.Kind]
		if status == 0 {
			status = http.StatusBadRequest
		}
		problem(c, status, strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "-")), se.Message, se.Field)
		return
	}
	switch {
	case errors.Is(err, registry.ErrNotFound):
		problem(c, http.StatusNotFound, "not-found", strings.TrimPrefix(err.Error(), "registry: not found: ")+" does not exist", "")
	case errors.Is(err, registry.ErrConflict):
		problem(c, http.StatusConflict, "conflict", "it already exists", "")
	case errors.Is(err, registry.ErrBadCursor):
		problem(c, http.StatusBadRequest, "bad-cursor", "the cursor is not one this server returned: start again without it", "cursor")
	case errors.Is(err, context.Canceled):
		c.Abort()
	default:
		s.log.Error("request failed", "method", c.Request.Method, "path", c.FullPath(), "err", err)
		problem(c, http.StatusInternalServerError, "internal", "the control plane could not complete the request; the cause is in its log", "")
	}
}

// bind decodes a JSON body strictly: size-capped, unknown fields refused.
func bind(c *gin.Context, v any) bool {
	if ct := c.ContentType(); ct != "application/json" && ct != "" {
		problem(c, http.StatusUnsupportedMediaType, "unsupported-media-type", "send the body as application/json", "")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, MaxBodySize))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &mbe):
			problem(c, http.StatusRequestEntityTooLarge, "too-large", fmt.Sprintf("the body is larger than %d bytes", MaxBodySize), "")
		case errors.As(err, &ute) && ute.Field == "":
			problem(c, http.StatusBadRequest, "invalid-json", "the body must be a JSON object", "")
		case errors.As(err, &ute):
			problem(c, http.StatusBadRequest, "invalid-json", fmt.Sprintf("field %q must be %s", ute.Field, jsonKind(ute.Type)), ute.Field)
		case errors.As(err, &se):
			problem(c, http.StatusBadRequest, "invalid-json", fmt.Sprintf("the body is not valid JSON (at byte %d)", se.Offset), "")
		case errors.Is(err, io.ErrUnexpectedEOF):
			problem(c, http.StatusBadRequest, "invalid-json", "the body is not valid JSON (it ends in the middle of a value)", "")
		case errors.Is(err, io.EOF):
			problem(c, http.StatusBadRequest, "invalid-json", "the body is empty: send a JSON object", "")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			problem(c, http.StatusBadRequest, "invalid-json", fmt.Sprintf("unknown field %q", f), f)
		default:
			problem(c, http.StatusBadRequest, "invalid-json", "the body could not be read as JSON", "")
		}
		return false
	}
	// Only whitespace may follow the value. dec.More() is not enough: it
	// reports false for a stray ']' or '}', so "{}]" got through.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		problem(c, http.StatusBadRequest, "invalid-json", "the body holds more than one JSON value", "")
		return false
	}
	return true
}

// textParams refuses path and query parameters that are not valid UTF-8
// or hold a NUL byte: PostgreSQL can neither store nor compare such text,
// so they would reach the registry only to fail as a 500.
func textParams(c *gin.Context) {
	bad := func(name, v string) bool {
		msg := ""
		switch {
		case !utf8.ValidString(v):
			msg = name + " must be valid UTF-8"
		case strings.IndexByte(v, 0) >= 0:
			msg = name + " must not hold a NUL byte"
		default:
			return false
		}
		problem(c, http.StatusBadRequest, "invalid-parameter", msg, name)
		return true
	}
	for _, p := range c.Params {
		if bad(p.Key, p.Value) {
			return
		}
	}
	for k, vs := range c.Request.URL.Query() {
		if bad(k, k) {
			return
		}
		for _, v := range vs {
			if bad(k, v) {
				return
			}
		}
	}
}

// jsonKind names what a Go type is in JSON, for a client that sent the
// wrong kind of value ("a number", not "a int64").
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a JSON object"
}

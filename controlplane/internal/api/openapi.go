package api

import (
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/outpost-pki/outpost/internal/buildinfo"
)

// OpenAPI builds the OpenAPI 3.0 document from the route table: paths,
// methods, the role each route needs, request and response schemas
// (derived from the Go types by reflection).
func (s *Server) OpenAPI() map[string]any {
	schemas := map[string]any{}
	paths := map[string]map[string]any{}
	for _, r := range s.routes {
		p := ginToOpenAPIPath(r.Path)
		if paths[p] == nil {
			paths[p] = map[string]any{}
		}
		status := r.Status
		if status == 0 {
			status = http.StatusOK
		}
		op := map[string]any{
			"operationId": operationID(r),
			"summary":     r.Summary,
			"x-outpost-role": func() string {
				if r.DMSAllowed {
					return r.Role.String() + " (or a DMS identity)"
				}
				return r.Role.String()
			}(),
			"responses": map[string]any{},
		}
		resp := map[string]any{"description": http.StatusText(status)}
		if r.Response != nil {
			resp["content"] = map[string]any{"application/json": map[string]any{"schema": schemaRef(reflect.TypeOf(r.Response), schemas)}}
		}
		responses := op["responses"].(map[string]any)
		responses[itoa(status)] = resp
		responses["default"] = map[string]any{"description": "Problem details (RFC 9457)", "content": map[string]any{
			"application/problem+json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Problem"}}}}
		if r.Role == RolePublic {
			op["security"] = []any{}
		}
		if r.Request != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": schemaRef(reflect.TypeOf(r.Request), schemas)}}}
		}
		var params []any
		for _, m := range pathParamRE.FindAllStringSubmatch(r.Path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		if r.Method == "GET" && r.Response != nil && strings.HasPrefix(reflect.TypeOf(r.Response).Name(), "Page[") {
			params = append(params,
				map[string]any{"name": "limit", "in": "query", "schema": map[string]any{"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
				map[string]any{"name": "cursor", "in": "query", "schema": map[string]any{"type": "string"}, "description": "next_cursor of the previous page"})
		}
		if params != nil {
			op["parameters"] = params
		}
		paths[p][strings.ToLower(r.Method)] = op
	}
	schemaRef(reflect.TypeOf(problemSchema{}), schemas)
	schemas["Problem"] = schemas["problemSchema"]
	delete(schemas, "problemSchema")
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":       "Outpost control plane API",
			"version":     buildinfo.Version,
			"description": "Every route but the public ones needs 'Authorization: Bearer <token>'. Roles: viewer < operator < admin. Errors are RFC 9457 problem details. Lists use keyset pagination: pass next_cursor back as cursor.",
		},
		"servers":    []any{map[string]any{"url": "/"}},
		"security":   []any{map[string]any{"bearer": []any{}}},
		"paths":      paths,
		"components": map[string]any{"schemas": schemas, "securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}}},
	}
}

type problemSchema struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	Field    string `json:"field,omitempty"`
}

var (
	pathParamRE = regexp.MustCompile(`:([A-Za-z_]+)`)
)

func ginToOpenAPIPath(p string) string { return pathParamRE.ReplaceAllString(p, "{$1}") }

func operationID(r Route) string {
	parts := strings.FieldsFunc(strings.TrimPrefix(r.Path, "/api/v1/"), func(c rune) bool { return c == '/' || c == '.' || c == ':' })
	return strings.ToLower(r.Method) + "_" + strings.Join(parts, "_")
}

func itoa(n int) string { return strconv.Itoa(n) }

var timeType = reflect.TypeOf(time.Time{})

// schemaRef returns a JSON schema for t, registering named structs under
// components/schemas.
func schemaRef(t reflect.Type, schemas map[string]any) map[string]any {
	if t.Kind() == reflect.Pointer {
		return schemaRef(t.Elem(), schemas)
	}
	if t == timeType {
		return map[string]any{"type": "string", "format": "date-time"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaRef(t.Elem(), schemas)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaRef(t.Elem(), schemas)}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		name := schemaName(t)
		if _, ok := schemas[name]; !ok {
			schemas[name] = map[string]any{} // break cycles
			props := map[string]any{}
			var required []string
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				tag := f.Tag.Get("json")
				if tag == "-" || !f.IsExported() {
					continue
				}
				fname, opts, _ := strings.Cut(tag, ",")
				if fname == "" {
					fname = f.Name
				}
				props[fname] = schemaRef(f.Type, schemas)
				if !strings.Contains(opts, "omitempty") {
					required = append(required, fname)
				}
			}
			sort.Strings(required)
			sch := map[string]any{"type": "object", "properties": props}
			if len(required) > 0 {
				sch["required"] = required
			}
			schemas[name] = sch
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

var nonIdent = regexp.MustCompile(`[^A-Za-z0-9]+`)

func schemaName(t reflect.Type) string {
	n := t.Name()
	if i := strings.IndexByte(n, '['); i >= 0 {
		// Page[github.com/.../apitypes.CA] -> PageCA
		inner := n[i+1 : len(n)-1]
		if j := strings.LastIndexByte(inner, '.'); j >= 0 {
			inner = inner[j+1:]
		}
		n = n[:i] + inner
	}
	return nonIdent.ReplaceAllString(n, "")
}

func (s *Server) openapi(c *gin.Context) {
	s.openapiOnce.Do(func() { s.openapiDoc = s.OpenAPI() })
	c.JSON(http.StatusOK, s.openapiDoc)
}

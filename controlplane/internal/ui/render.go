package ui

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
)

// page is what every template gets.
type page struct {
	Title string
	// Nav is the active navigation entry.
	Nav  string
	User *session
	// Flash is a one-line confirmation after a change.
	Flash   string
	Data    any
	Now     time.Time
	Version string
	// Asset is the query string that versions the CSS and script URLs.
	Asset string
}

// Can reports whether the logged-in person's role is at least role:
// templates show mutating controls only then (the server checks again).
func (p *page) Can(role string) bool {
	r, ok := parseRole(role)
	return ok && p.User != nil && p.User.Role >= r
}

// CSRF is the token every form carries.
func (p *page) CSRF() string {
	if p.User == nil {
		return ""
	}
	return p.User.CSRF
}

// templates holds one parsed set per page: the layout, shared partials and
// the page's own "content".
type templates struct {
	sets  map[string]*template.Template
	asset string
}

var pageNames = []string{"login", "error", "overview", "cas", "ca", "dmss", "dms_new", "dms_created", "dms",
	"devices", "device", "certificates", "certificate", "audit", "subscriptions", "subscription_created"}

func loadTemplates() (*templates, error) {
	t := &templates{sets: map[string]*template.Template{}}
	h := sha256.New()
	for _, f := range []string{"static/app.css", "static/app.js"} {
		b, err := fs.ReadFile(staticFS, f)
		if err != nil {
			return nil, err
		}
		h.Write(b)
	}
	t.asset = hex.EncodeToString(h.Sum(nil)[:6])
	for _, name := range pageNames {
		set, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("ui: parsing template %s: %w", name, err)
		}
		t.sets[name] = set
	}
	return t, nil
}

// render executes a page into a buffer first, so a template failure is a
// clean error page and never half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page) {
	if p.User == nil {
		if sess, ok := r.Context().Value(sessionKey{}).(*session); ok {
			p.User = sess
		}
	}
	p.Now = s.clock()
	p.Version = s.opts.Version
	p.Asset = s.pages.asset
	if p.Flash == "" {
		p.Flash = flashes[r.URL.Query().Get("msg")]
	}
	var buf bytes.Buffer
	if err := s.pages.sets[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		s.log.Error("rendering a dashboard page", "page", name, "err", err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("The page could not be rendered; the cause is in the control plane's log.\n"))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if w.Header().Get("Cache-Control") == "" {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type errorData struct {
	Status  int
	Text    string
	Message string
	Field   string
	Back    string
}

func (s *Server) renderError(w http.ResponseWriter, r *http.Request, sess *session, e *httpError) {
	d := errorData{Status: e.Status, Text: http.StatusText(e.Status), Message: e.Message, Field: e.Field}
	if ref := r.Header.Get("Referer"); ref != "" {
		if u, err := url.Parse(ref); err == nil && strings.EqualFold(u.Host, r.Host) && strings.HasPrefix(u.Path, PathPrefix) {
			d.Back = u.RequestURI()
		}
	}
	s.render(w, r, e.Status, "error", &page{Title: d.Text, User: sess, Data: d})
}

// flashes are the confirmations a redirect after a change may show
// (?msg=...): fixed texts, so nothing from the URL reaches the page.
var flashes = map[string]string{
	"logged-out":     "You are logged out.",
	"ca-created":     "The CA was created.",
	"ca-imported":    "The CA was imported.",
	"ca-revoked":     "The CA, the CAs below it and the certificates they issued are revoked.",
	"dms-updated":    "The DMS policy was saved; the agent receives it on its next sync.",
	"dms-disabled":   "The DMS is disabled; its identity and edge CAs are revoked.",
	"decommissioned": "The device is decommissioned; its active certificates are revoked.",
	"revoked":        "The certificate is revoked.",
	"sub-deleted":    "The subscription was deleted.",
}

var funcs = template.FuncMap{
	"ts":      fmtTime,
	"date":    fmtDate,
	"since":   since,
	"until":   until,
	"badge":   badge,
	"pathEsc": url.PathEscape,
	"qEsc":    url.QueryEscape,
	"join":    strings.Join,
	"num":     fmtNum,
	"short":   shortText,
	"reason": func(code *int) string {
		if code == nil {
			return ""
		}
		return caservice.ReasonName(*code)
	},
	"derefStr": func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	},
}

// fmtTime shows an instant in UTC to the minute; nil or zero is a dash.
func fmtTime(v any) string {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x == nil {
			return "—"
		}
		t = *x
	}
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func fmtDate(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02")
}

// timeOf reads a time.Time or *time.Time template value; ok is false
// for nil, the zero time and anything else.
func timeOf(v any) (t time.Time, ok bool) {
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x != nil {
			t = *x
		}
	}
	return t, !t.IsZero()
}

// since says how long ago t was, roughly.
func since(now time.Time, v any) string {
	t, ok := timeOf(v)
	if !ok {
		return "never"
	}
	return roughDuration(now.Sub(t)) + " ago"
}

// until says how long until t, or how long since it passed.
func until(now time.Time, v any) string {
	t, ok := timeOf(v)
	if !ok {
		return "—"
	}
	if d := t.Sub(now); d >= 0 {
		return "in " + roughDuration(d)
	}
	return roughDuration(now.Sub(t)) + " ago"
}

func roughDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "less than a minute"
	case d < time.Hour:
		return plural(int(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return plural(int(d/time.Hour), "hour")
	default:
		return plural(int(d/(24*time.Hour)), "day")
	}
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

func fmtNum(v any) string {
	var n int64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int64:
		n = x
	default:
		return fmt.Sprint(v)
	}
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func shortText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// badgeStyles give each status a colour class and a symbol, so the status
// reads without colour too.
var badgeStyles = map[string][2]string{
	"active":               {"ok", "●"},
	"fully_provisioned":    {"ok", "●"},
	"online":               {"ok", "●"},
	"delivered":            {"ok", "●"},
	"about_to_expire":      {"warn", "▲"},
	"with_warnings":        {"warn", "▲"},
	"pending":              {"info", "◌"},
	"pending_provisioning": {"info", "◌"},
	"requires_action":      {"bad", "!"},
	"revoked":              {"bad", "✕"},
	"disabled":             {"muted", "■"},
	"offline":              {"bad", "○"},
	"expired":              {"muted", "■"},
	"decommissioned":       {"muted", "■"},
	"dead":                 {"bad", "✕"},
}

// badge renders a status with its colour, symbol and text; hook is its
// data-test name.
func badge(hook, status string) template.HTML {
	st, ok := badgeStyles[status]
	if !ok {
		st = [2]string{"muted", "•"}
	}
	label := strings.ReplaceAll(status, "_", " ")
	return template.HTML(fmt.Sprintf(`<span class="badge b-%s" data-test="%s" data-status="%s"><span aria-hidden="true">%s</span> %s</span>`,
		st[0], html.EscapeString(hook), html.EscapeString(status), st[1], html.EscapeString(label)))
}

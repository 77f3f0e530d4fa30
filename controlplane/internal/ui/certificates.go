package ui

import (
	"cmp"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// pageSize is the rows per list page.
const pageSize = registry.DefaultLimit

// maxSANMatches bounds a search by SAN (see certificatesBySAN).
const maxSANMatches = 100

// maxSearchText caps free-text filters (a serial is 40 hex digits, a SAN
// or common name at most a few hundred characters).
const maxSearchText = 512

type option struct {
	ID   string
	Name string
}

type certRow struct {
	*registry.Certificate
	IssuerName string
	DMSName    string
}

type certsData struct {
	Q        url.Values // the filters, to fill the form again
	Rows     []certRow
	Next     string
	First    string
	Paged    bool
	DMSs     []option
	Statuses []string
	// SANCapped: more certificates carry the SAN than the page shows.
	SANCapped bool
	Filtered  bool
}

// dmsOptions lists DMSs for a filter's drop-down (by name, first 500).
func (s *Server) dmsOptions(ctx context.Context) ([]option, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name FROM dmss ORDER BY name LIMIT 500`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []option
	for rows.Next() {
		var id uuid.UUID
		var n string
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out = append(out, option{ID: id.String(), Name: n})
	}
	return out, rows.Err()
}

// certFilter reads the certificate search from the query string.
func certFilter(r *http.Request) (registry.CertFilter, error) {
	q := r.URL.Query()
	for _, k := range []string{"serial", "cn", "san", "device_id", "cursor"} {
		if len(q.Get(k)) > maxSearchText {
			return registry.CertFilter{}, badField(k, k+" is too long.")
		}
	}
	f := registry.CertFilter{Serial: strings.ToLower(strings.TrimSpace(q.Get("serial"))), CommonName: strings.TrimSpace(q.Get("cn")),
		SAN: strings.TrimSpace(q.Get("san")), Status: q.Get("status"), DeviceID: strings.TrimSpace(q.Get("device_id"))}
	switch f.Status {
	case "", "active", "about_to_expire", "expired", "revoked":
	default:
		return f, badField("status", "status must be one of active, about_to_expire, expired, revoked.")
	}
	if f.Serial != "" {
		hex := strings.TrimSuffix(f.Serial, "*")
		for _, c := range hex {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return f, badField("serial", "serial must be hexadecimal (a trailing * searches by prefix).")
			}
		}
	}
	var err error
	if f.IssuerID, err = optUUID("issuer_id", q.Get("issuer_id")); err != nil {
		return f, err
	}
	if f.DMSID, err = optUUID("dms_id", q.Get("dms_id")); err != nil {
		return f, err
	}
	if f.ExpiresAfter, err = queryDate(r, "expires_after"); err != nil {
		return f, err
	}
	if f.ExpiresBefore, err = queryDate(r, "expires_before"); err != nil {
		return f, err
	}
	if !f.ExpiresAfter.IsZero() && !f.ExpiresBefore.IsZero() && !f.ExpiresAfter.Before(f.ExpiresBefore) {
		return f, badField("expires_before", "expires_before must be later than expires_after.")
	}
	return f, nil
}

func (s *Server) certificatesPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	f, err := certFilter(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	q := r.URL.Query()
	d := &certsData{Q: q, Statuses: certStatuses, Paged: q.Get("cursor") != ""}
	d.Filtered = f.Serial != "" || f.CommonName != "" || f.SAN != "" || f.Status != "" || f.DeviceID != "" || f.IssuerID != nil || f.DMSID != nil ||
		!f.ExpiresAfter.IsZero() || !f.ExpiresBefore.IsZero()
	var certs []*registry.Certificate
	if f.SAN != "" {
		certs, d.SANCapped, err = s.certificatesBySAN(ctx, f)
	} else {
		var next string
		certs, next, err = s.reg.SearchCertificates(ctx, f, q.Get("cursor"), pageSize)
		if next != "" {
			d.Next = withQuery(r, "cursor", next)
		}
	}
	if err != nil {
		return err
	}
	d.First = withQuery(r, "cursor", "")
	if d.Rows, err = s.certRows(ctx, certs); err != nil {
		return err
	}
	if d.DMSs, err = s.dmsOptions(ctx); err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "certificates", &page{Title: "Certificates", Nav: "certificates", Data: d})
	return nil
}

// certificatesBySAN finds certificates carrying a SAN. The registry's
// search orders by creation and Postgres, which cannot estimate how rare
// one SAN is, would walk that order filtering a million rows; so the
// serials come first from the GIN index on sans (a SAN is on a handful
// of certificates: a device and its renewals), then each is checked
// against the other filters by the registry's own search.
func (s *Server) certificatesBySAN(ctx context.Context, f registry.CertFilter) ([]*registry.Certificate, bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT serial FROM certificates WHERE sans @> ARRAY[$1::text] LIMIT $2`, f.SAN, maxSANMatches+1)
	if err != nil {
		return nil, false, err
	}
	var serials []string
	for rows.Next() {
		var sr string
		if err := rows.Scan(&sr); err != nil {
			rows.Close()
			return nil, false, err
		}
		serials = append(serials, sr)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	capped := len(serials) > maxSANMatches
	if capped {
		serials = serials[:maxSANMatches]
	}
	var out []*registry.Certificate
	for _, sr := range serials {
		if f.Serial != "" && !strings.HasPrefix(sr, strings.TrimSuffix(f.Serial, "*")) {
			continue
		}
		one := f
		one.Serial, one.SAN = sr, ""
		got, _, err := s.reg.SearchCertificates(ctx, one, "", 1)
		if err != nil {
			return nil, false, err
		}
		out = append(out, got...)
	}
	byExpiry := !f.ExpiresAfter.IsZero() || !f.ExpiresBefore.IsZero()
	slices.SortFunc(out, func(a, b *registry.Certificate) int {
		if byExpiry {
			if c := a.NotAfter.Compare(b.NotAfter); c != 0 {
				return c
			}
		} else if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Serial, b.Serial)
	})
	return out, capped, nil
}

// certRows adds the issuer and DMS names to a page of certificates.
func (s *Server) certRows(ctx context.Context, certs []*registry.Certificate) ([]certRow, error) {
	var cas, dmss []uuid.UUID
	for _, c := range certs {
		cas = append(cas, c.IssuerID)
		if c.DMSID != nil {
			dmss = append(dmss, *c.DMSID)
		}
	}
	caNames, err := s.names(ctx, "cas", uniq(cas))
	if err != nil {
		return nil, err
	}
	dmsNames, err := s.names(ctx, "dmss", uniq(dmss))
	if err != nil {
		return nil, err
	}
	out := make([]certRow, 0, len(certs))
	for _, c := range certs {
		row := certRow{Certificate: c, IssuerName: caNames[c.IssuerID]}
		if c.DMSID != nil {
			row.DMSName = dmsNames[*c.DMSID]
		}
		out = append(out, row)
	}
	return out, nil
}

func uniq(ids []uuid.UUID) []uuid.UUID {
	seen := map[uuid.UUID]bool{}
	var out []uuid.UUID
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// withQuery returns the request's path and query with one parameter set
// (or removed when v is empty).
func withQuery(r *http.Request, k, v string) string {
	q := r.URL.Query()
	q.Del("msg")
	if v == "" {
		q.Del(k)
	} else {
		q.Set(k, v)
	}
	if len(q) == 0 {
		return r.URL.Path
	}
	return r.URL.Path + "?" + q.Encode()
}

type certData struct {
	Cert      *registry.Certificate
	Info      *certInfo
	Issuer    *registry.CA
	DMSName   string
	Reasons   []string
	Revocable bool
}

func serialParam(r *http.Request) (string, error) {
	sr := strings.ToLower(r.PathValue("serial"))
	if sr == "" || len(sr) > 128 {
		return "", &httpError{Status: http.StatusNotFound, Field: "serial", Message: "There is no certificate with this serial."}
	}
	for _, c := range sr {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", &httpError{Status: http.StatusNotFound, Field: "serial", Message: "A serial is hexadecimal; there is no certificate " + strconvQuote(sr) + "."}
		}
	}
	return sr, nil
}

func (s *Server) certificatePage(w http.ResponseWriter, r *http.Request, sess *session) error {
	sr, err := serialParam(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	c, err := s.reg.GetCertificate(ctx, sr)
	if err != nil {
		return err
	}
	d := &certData{Cert: c, Info: decodeCert(c.DER), Reasons: reasons, Revocable: c.Status != "revoked"}
	if d.Issuer, err = s.reg.GetCA(ctx, c.IssuerID); err != nil {
		return err
	}
	if c.DMSID != nil {
		n, err := s.names(ctx, "dmss", []uuid.UUID{*c.DMSID})
		if err != nil {
			return err
		}
		d.DMSName = n[*c.DMSID]
	}
	title := "Certificate " + shortText(c.Serial, 16)
	s.render(w, r, http.StatusOK, "certificate", &page{Title: title, Nav: "certificates", Data: d})
	return nil
}

func (s *Server) certificateFile(format string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, sess *session) error {
		sr, err := serialParam(r)
		if err != nil {
			return err
		}
		c, err := s.reg.GetCertificate(r.Context(), sr)
		if err != nil {
			return err
		}
		if format == "der" {
			w.Header().Set("Content-Type", "application/pkix-cert")
			w.Header().Set("Content-Disposition", `attachment; filename="`+c.Serial+`.der"`)
			_, _ = w.Write(c.DER)
			return nil
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Header().Set("Content-Disposition", `attachment; filename="`+c.Serial+`.pem"`)
		_, _ = w.Write([]byte(caservice.CertPEM(c.DER)))
		return nil
	}
}

func (s *Server) revokeCertificate(w http.ResponseWriter, r *http.Request, sess *session) error {
	sr, err := serialParam(r)
	if err != nil {
		return err
	}
	reason, err := caservice.ParseReason(r.PostFormValue("reason"))
	if err != nil {
		return err
	}
	if _, err := s.svc.RevokeCertificate(r.Context(), sess.actor(), sr, reason); err != nil {
		return err
	}
	redirect(w, r, PathPrefix+"/certificates/"+sr, "revoked")
	return nil
}

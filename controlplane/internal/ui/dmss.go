package ui

import (
	"context"
	"encoding/pem"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

type dmsRow struct {
	*registry.DMS
	Online bool
}

type dmssData struct {
	Rows  []dmsRow
	Next  string
	First string
	Paged bool
}

func (s *Server) online(d *registry.DMS) bool {
	return d.Status != "disabled" && d.LastSeenAt != nil && s.clock().Sub(*d.LastSeenAt) < s.opts.OnlineWindow
}

func (s *Server) dmssPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	cur := r.URL.Query().Get("cursor")
	if len(cur) > maxSearchText {
		return badField("cursor", "cursor is too long.")
	}
	ds, next, err := s.reg.ListDMSs(r.Context(), cur, pageSize)
	if err != nil {
		return err
	}
	d := &dmssData{Paged: cur != "", First: withQuery(r, "cursor", "")}
	if next != "" {
		d.Next = withQuery(r, "cursor", next)
	}
	for _, dm := range ds {
		d.Rows = append(d.Rows, dmsRow{DMS: dm, Online: s.online(dm)})
	}
	s.render(w, r, http.StatusOK, "dmss", &page{Title: "DMSs", Nav: "dmss", Data: d})
	return nil
}

// policyForm is a DMS policy as the form shows it (text fields).
type policyForm struct {
	Name                string
	Mode                string
	DeviceAuth          string
	Profile             string
	ReenrollWindowDays  int
	LocalQuota          int
	AuthorizedCAs       string // one CA (id or name) per line, in order
	Labels              string // one "NAME CA [profile=P] [device_auth=A]" per line
	EdgeCAValidityDays  int
	EdgeNameConstraints string // one per line
	BootstrapCAPEMs     string
	WebhookURL          string
	OnlineWaitMs        int
	JIT                 bool
	TokenTTLHours       int
}

func defaultPolicyForm() policyForm {
	p := caservice.DefaultDMSPolicy()
	return policyForm{Mode: p.Mode, DeviceAuth: p.DeviceAuth, Profile: p.Profile, ReenrollWindowDays: int(p.ReenrollWindow / (24 * time.Hour)),
		EdgeCAValidityDays: int(p.EdgeCAValidity / (24 * time.Hour)), OnlineWaitMs: int(p.OnlineWait / time.Millisecond), JIT: p.JITRegistration, TokenTTLHours: 24}
}

// formFromDMS shows a DMS's policy in the form, CAs by name.
func formFromDMS(d *registry.DMS, caNames map[uuid.UUID]string) policyForm {
	f := policyForm{Name: d.Name, Mode: d.Mode, DeviceAuth: d.DeviceAuth, Profile: d.Profile, ReenrollWindowDays: int(d.ReenrollWindow / (24 * time.Hour)),
		LocalQuota: d.LocalQuota, EdgeCAValidityDays: int(d.EdgeCAValidity / (24 * time.Hour)), EdgeNameConstraints: strings.Join(d.EdgeNameConstraints, "\n"),
		BootstrapCAPEMs: strings.Join(d.BootstrapCAPEMs, ""), WebhookURL: d.WebhookURL, OnlineWaitMs: int(d.OnlineWait / time.Millisecond), JIT: d.JITRegistration}
	name := func(id uuid.UUID) string {
		if n, ok := caNames[id]; ok && !strings.ContainsAny(n, " \t,") {
			return n
		}
		return id.String()
	}
	var cas []string
	for _, id := range d.AuthorizedCAs {
		cas = append(cas, name(id))
	}
	f.AuthorizedCAs = strings.Join(cas, "\n")
	var labels []string
	for _, l := range d.Labels {
		line := l.Name + " " + name(l.CAID)
		if l.Profile != "" {
			line += " profile=" + l.Profile
		}
		if l.DeviceAuth != "" {
			line += " device_auth=" + l.DeviceAuth
		}
		labels = append(labels, line)
	}
	f.Labels = strings.Join(labels, "\n")
	return f
}

// parsePolicy reads the policy form. Values are checked here for their
// form (numbers, ids, PEM); the CA service checks what they mean.
func (s *Server) parsePolicy(ctx context.Context, r *http.Request) (caservice.DMSPolicy, []uuid.UUID, error) {
	p := caservice.DefaultDMSPolicy()
	if v := strings.TrimSpace(r.PostFormValue("mode")); v != "" {
		p.Mode = v
	}
	if v := strings.TrimSpace(r.PostFormValue("device_auth")); v != "" {
		p.DeviceAuth = v
	}
	if v := strings.TrimSpace(r.PostFormValue("profile")); v != "" {
		p.Profile = v
	}
	days, err := formInt(r, "reenroll_window_days", 14, 0, 3650)
	if err != nil {
		return p, nil, err
	}
	p.ReenrollWindow = time.Duration(days) * 24 * time.Hour
	if p.LocalQuota, err = formInt(r, "local_quota", 0, 0, 1_000_000_000); err != nil {
		return p, nil, err
	}
	edgeDays, err := formInt(r, "edge_ca_validity_days", 30, 1, 3650)
	if err != nil {
		return p, nil, err
	}
	p.EdgeCAValidity = time.Duration(edgeDays) * 24 * time.Hour
	wait, err := formInt(r, "online_wait_ms", 5000, 0, 60000)
	if err != nil {
		return p, nil, err
	}
	p.OnlineWait = time.Duration(wait) * time.Millisecond
	p.JITRegistration = r.PostFormValue("jit_registration") != ""
	p.WebhookURL = strings.TrimSpace(r.PostFormValue("webhook_url"))
	p.EdgeNameConstraints = lines(r.PostFormValue("edge_name_constraints"))
	if p.BootstrapCAPEMs, err = pemBlocks("bootstrap_ca_pems", r.PostFormValue("bootstrap_ca_pems")); err != nil {
		return p, nil, err
	}
	var cas []uuid.UUID
	for _, l := range lines(r.PostFormValue("authorized_cas")) {
		id, err := s.resolveCA(ctx, "authorized_cas", l)
		if err != nil {
			return p, nil, err
		}
		cas = append(cas, id)
	}
	for i, l := range strings.Split(r.PostFormValue("labels"), "\n") {
		fields := strings.Fields(l)
		if len(fields) == 0 {
			continue
		}
		lineErr := badField("labels", "labels, line "+strconv.Itoa(i+1)+": write NAME CA [profile=PROFILE] [device_auth=AUTH], the CA by name or id.")
		if len(fields) > 4 || len(fields) < 2 {
			return p, nil, lineErr
		}
		id, err := s.resolveCA(ctx, "labels", fields[1])
		if err != nil {
			return p, nil, err
		}
		lb := caservice.DMSLabel{Name: fields[0], CAID: id}
		for j, opt := range fields[2:] {
			switch k, v, ok := strings.Cut(opt, "="); {
			case ok && k == "profile" && lb.Profile == "":
				lb.Profile = v
			case ok && k == "device_auth" && lb.DeviceAuth == "":
				lb.DeviceAuth = v
			case !ok && j == 0:
				lb.Profile = opt // NAME CA PROFILE
			default:
				return p, nil, lineErr
			}
		}
		p.Labels = append(p.Labels, lb)
	}
	return p, cas, nil
}

// pemBlocks splits pasted PEM certificates; anything else is refused.
func pemBlocks(field, text string) ([]string, error) {
	var out []string
	rest := []byte(strings.TrimSpace(text))
	for len(rest) > 0 {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, badField(field, field+" must hold PEM certificates (-----BEGIN CERTIFICATE----- …) and nothing else.")
		}
		if b.Type != "CERTIFICATE" {
			return nil, badField(field, field+" holds a PEM block of type "+strconvQuote(b.Type)+"; only certificates belong here.")
		}
		out = append(out, string(pem.EncodeToMemory(b)))
		rest = []byte(strings.TrimSpace(string(rest)))
	}
	return out, nil
}

type dmsFormData struct {
	Form       policyForm
	CAs        []option
	Modes      []string
	DeviceAuth []string
}

var (
	dmsModes       = []string{"queued", "online", "local"}
	dmsDeviceAuths = []string{"client_cert", "basic_secret", "client_cert_or_secret", "webhook"}
)

// caOptions lists the CAs a DMS may be authorized for (active, with their
// key in the control plane), as a reference beside the form.
func (s *Server) caOptions(r *http.Request) ([]option, error) {
	rows, err := s.pool.Query(r.Context(), `SELECT id, name FROM cas WHERE status = 'active' AND key_ref IS NOT NULL AND kind <> 'edge' AND role IS DISTINCT FROM 'dms_manager' ORDER BY name LIMIT 500`)
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

func (s *Server) newDMSPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	cas, err := s.caOptions(r)
	if err != nil {
		return err
	}
	d := &dmsFormData{Form: defaultPolicyForm(), CAs: cas, Modes: dmsModes, DeviceAuth: dmsDeviceAuths}
	s.render(w, r, http.StatusOK, "dms_new", &page{Title: "New DMS", Nav: "dmss", Data: d})
	return nil
}

type dmsCreatedData struct {
	DMS       *registry.DMS
	Token     string
	ExpiresAt time.Time
}

func (s *Server) createDMS(w http.ResponseWriter, r *http.Request, sess *session) error {
	pol, cas, err := s.parsePolicy(r.Context(), r)
	if err != nil {
		return err
	}
	ttl, err := formInt(r, "token_ttl_hours", 24, 1, 720)
	if err != nil {
		return err
	}
	d, tok, exp, err := s.svc.CreateDMS(r.Context(), sess.actor(), strings.TrimSpace(r.PostFormValue("name")), pol, cas, time.Duration(ttl)*time.Hour)
	if err != nil {
		return err
	}
	// The one-time token is on this response only: never stored in
	// clear, never shown again, and not kept by the browser's cache.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", PathPrefix+"/dmss/"+d.ID.String())
	s.render(w, r, http.StatusCreated, "dms_created", &page{Title: "DMS " + d.Name + " created", Nav: "dmss", Data: &dmsCreatedData{DMS: d, Token: tok, ExpiresAt: exp}})
	return nil
}

type dmsData struct {
	DMS            *registry.DMS
	Online         bool
	EdgeCANotAfter *time.Time
	LastSyncAt     *time.Time
	AuthorizedCAs  []option
	Labels         []labelView
	dmsFormData
}

type labelView struct {
	Name, CAName, CAID, Profile, DeviceAuth string
}

func (s *Server) dmsPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	ctx := r.Context()
	dm, err := s.reg.GetDMS(ctx, id)
	if err != nil {
		return err
	}
	d := &dmsData{DMS: dm, Online: s.online(dm)}
	if err := s.pool.QueryRow(ctx, `SELECT edge_ca_not_after, last_sync_at FROM dmss WHERE id = $1`, id).Scan(&d.EdgeCANotAfter, &d.LastSyncAt); err != nil {
		return err
	}
	ids := append([]uuid.UUID{}, dm.AuthorizedCAs...)
	for _, l := range dm.Labels {
		ids = append(ids, l.CAID)
	}
	names, err := s.names(ctx, "cas", uniq(ids))
	if err != nil {
		return err
	}
	for _, ca := range dm.AuthorizedCAs {
		d.AuthorizedCAs = append(d.AuthorizedCAs, option{ID: ca.String(), Name: names[ca]})
	}
	for _, l := range dm.Labels {
		d.Labels = append(d.Labels, labelView{Name: l.Name, CAName: names[l.CAID], CAID: l.CAID.String(), Profile: l.Profile, DeviceAuth: l.DeviceAuth})
	}
	d.Form = formFromDMS(dm, names)
	d.Modes, d.DeviceAuth = dmsModes, dmsDeviceAuths
	if sess.Role >= RoleOperator {
		if d.CAs, err = s.caOptions(r); err != nil {
			return err
		}
	}
	s.render(w, r, http.StatusOK, "dms", &page{Title: "DMS " + dm.Name, Nav: "dmss", Data: d})
	return nil
}

func (s *Server) updateDMS(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	pol, cas, err := s.parsePolicy(r.Context(), r)
	if err != nil {
		return err
	}
	if cas == nil {
		cas = []uuid.UUID{}
	}
	if _, err := s.svc.UpdateDMS(r.Context(), sess.actor(), id, &pol, &cas); err != nil {
		return err
	}
	redirect(w, r, PathPrefix+"/dmss/"+id.String(), "dms-updated")
	return nil
}

func (s *Server) disableDMS(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	if _, err := s.svc.DisableDMS(r.Context(), sess.actor(), id); err != nil {
		return err
	}
	redirect(w, r, PathPrefix+"/dmss/"+id.String(), "dms-disabled")
	return nil
}

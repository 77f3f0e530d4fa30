package caservice

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/audit"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/csrcheck"
)

// DMSPolicy is the enrollment policy of a DMS. The agent receives it over
// the sync link (syncpb.Policy) whenever it changes.
type DMSPolicy struct {
	Mode            string
	DeviceAuth      string
	Profile         string
	ReenrollWindow  time.Duration
	LocalQuota      int
	BootstrapCAPEMs []string
	// Labels are the EST labels (/.well-known/est/<name>/...), each
	// mapping to one of the DMS's authorized CAs and, optionally, a
	// profile other than Profile.
	Labels []DMSLabel
	// EdgeCAValidity is the lifetime of the delegated edge CA (local
	// mode), in whole days: 1 to 3650, default 30.
	EdgeCAValidity time.Duration
	// EdgeNameConstraints are the permitted names of the edge CA: DNS
	// domains ("line1.example", ".line1.example"), IP ranges in CIDR
	// ("10.1.0.0/16"), email domains or mailboxes (containing "@":
	// "@example.com", "ops@example.com") and URI domains ("uri:" +
	// domain). Empty in local mode: the DNS domain "local".
	EdgeNameConstraints []string
	// WebhookURL is the HTTPS URL the agent asks to authenticate devices;
	// required with DeviceAuth "webhook".
	WebhookURL string
	// OnlineWait is how long a device's request waits for the control
	// plane in online mode before it degrades to queued: 0 to 60 s,
	// default 5 s.
	OnlineWait time.Duration
	// JITRegistration lets devices the registry does not know enroll
	// (they are registered to the DMS on the way); default true.
	JITRegistration bool
}

// DMSLabel is one EST label of a DMS policy.
type DMSLabel struct {
	Name string
	// CAID is the CA that signs under the label: one of the DMS's
	// authorized CAs.
	CAID uuid.UUID
	// Profile is the issuance profile; empty: the policy's.
	Profile string
	// DeviceAuth is how devices authenticate under this label
	// (client_cert, basic_secret, webhook); empty: the policy's.
	DeviceAuth string
}

// Policy limits.
const (
	DefaultEdgeCAValidity = 30 * 24 * time.Hour
	MaxEdgeCAValidity     = 3650 * 24 * time.Hour
	DefaultOnlineWait     = 5 * time.Second
	MaxOnlineWait         = 60 * time.Second
	// MaxDMSLabels and MaxEdgeNameConstraints keep a policy small enough
	// to travel in one sync message with room to spare.
	MaxDMSLabels           = 100
	MaxEdgeNameConstraints = 64
	// maxPolicyString is syncproto.MaxStringLength: every string of the
	// policy travels in a sync message.
	maxPolicyString = 256
)

// DefaultDMSPolicy is the policy of a DMS created without one.
func DefaultDMSPolicy() DMSPolicy {
	return DMSPolicy{Mode: "queued", DeviceAuth: "client_cert", Profile: "device", ReenrollWindow: 14 * 24 * time.Hour,
		EdgeCAValidity: DefaultEdgeCAValidity, OnlineWait: DefaultOnlineWait, JITRegistration: true}
}

// PolicyOf returns the policy stored with a DMS.
func PolicyOf(d *registry.DMS) DMSPolicy {
	p := DMSPolicy{Mode: d.Mode, DeviceAuth: d.DeviceAuth, Profile: d.Profile, ReenrollWindow: d.ReenrollWindow, LocalQuota: d.LocalQuota,
		BootstrapCAPEMs: d.BootstrapCAPEMs, EdgeCAValidity: d.EdgeCAValidity, EdgeNameConstraints: d.EdgeNameConstraints,
		WebhookURL: d.WebhookURL, OnlineWait: d.OnlineWait, JITRegistration: d.JITRegistration}
	for _, l := range d.Labels {
		p.Labels = append(p.Labels, DMSLabel{Name: l.Name, CAID: l.CAID, Profile: l.Profile, DeviceAuth: l.DeviceAuth})
	}
	return p
}

// EffectiveNameConstraints returns the edge CA's name constraints: the
// configured ones, or in local mode without any the DNS domain "local".
func (p DMSPolicy) EffectiveNameConstraints() []string {
	if len(p.EdgeNameConstraints) == 0 && p.Mode == "local" {
		return []string{"local"}
	}
	return p.EdgeNameConstraints
}

// labelRE is an EST label: what fits a URL path segment (RFC 7030 3.2.2
// leaves the syntax open); the sync protocol checks the same.
var labelRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (p DMSPolicy) validate() error {
	switch p.Mode {
	case "online", "queued", "local":
	default:
		return invalid("policy.mode", "mode %q is not one of online, queued, local", p.Mode)
	}
	switch p.DeviceAuth {
	case "client_cert", "basic_secret", "client_cert_or_secret", "webhook":
	default:
		return invalid("policy.device_auth", "device_auth %q is not one of client_cert, basic_secret, client_cert_or_secret, webhook", p.DeviceAuth)
	}
	if len(p.Profile) > maxPolicyString {
		return invalid("policy.profile", "profile must be at most %d characters", maxPolicyString)
	}
	if p.ReenrollWindow < 0 || p.ReenrollWindow > 3650*24*time.Hour {
		return invalid("policy.reenroll_window_days", "reenroll_window_days must be between 0 and 3650")
	}
	if p.LocalQuota < 0 {
		return invalid("policy.local_quota", "local_quota must not be negative")
	}
	if p.Mode == "local" && p.LocalQuota == 0 {
		return invalid("policy.local_quota", "local mode needs a local_quota above 0 (certificates the gateway may sign offline)")
	}
	for _, pemText := range p.BootstrapCAPEMs {
		if _, err := ParseCertificatePEM([]byte(pemText)); err != nil {
			return invalid("policy.bootstrap_ca_pems", "a bootstrap CA is not a PEM certificate: %v", err)
		}
	}
	if p.EdgeCAValidity < 24*time.Hour || p.EdgeCAValidity > MaxEdgeCAValidity || p.EdgeCAValidity%(24*time.Hour) != 0 {
		return invalid("policy.edge_ca_validity_days", "edge_ca_validity_days must be between 1 and 3650")
	}
	if len(p.EdgeNameConstraints) > MaxEdgeNameConstraints {
		return invalid("policy.edge_name_constraints", "at most %d edge name constraints", MaxEdgeNameConstraints)
	}
	for i, c := range p.EdgeNameConstraints {
		if _, err := parseNameConstraint(c); err != nil {
			return invalid(fmt.Sprintf("policy.edge_name_constraints[%d]", i), "edge name constraint %q: %v", truncateText(c, 80), err)
		}
	}
	if p.WebhookURL != "" {
		if err := checkWebhookURL(p.WebhookURL); err != nil {
			return invalid("policy.webhook_url", "webhook_url %v", err)
		}
	} else if p.DeviceAuth == "webhook" {
		return invalid("policy.webhook_url", "device_auth webhook needs a webhook_url (the HTTPS URL the agent asks)")
	}
	if p.OnlineWait < 0 || p.OnlineWait > MaxOnlineWait {
		return invalid("policy.online_wait_ms", "online_wait_ms must be between 0 and 60000")
	}
	if len(p.Labels) > MaxDMSLabels {
		return invalid("policy.labels", "at most %d labels", MaxDMSLabels)
	}
	seen := map[string]bool{}
	for i, l := range p.Labels {
		f := fmt.Sprintf("policy.labels[%d]", i)
		// "." and ".." match labelRE but no EST request can name them: the
		// agent's path parser refuses them, as proxies treat them as
		// directory references.
		if !labelRE.MatchString(l.Name) || l.Name == "." || l.Name == ".." {
			return invalid(f+".name", "label name %q must be 1 to 64 of A-Z a-z 0-9 . _ -, other than . and ..", truncateText(l.Name, 80))
		}
		if seen[l.Name] {
			return invalid(f+".name", "label %q is given twice", l.Name)
		}
		seen[l.Name] = true
		if len(l.Profile) > maxPolicyString {
			return invalid(f+".profile", "profile must be at most %d characters", maxPolicyString)
		}
		switch l.DeviceAuth {
		case "", "client_cert", "basic_secret", "client_cert_or_secret", "webhook":
		default:
			return invalid(f+".device_auth", "device_auth %q is not one of client_cert, basic_secret, client_cert_or_secret, webhook", truncateText(l.DeviceAuth, 40))
		}
		if l.DeviceAuth == "webhook" && p.WebhookURL == "" {
			return invalid(f+".device_auth", "label %q uses the webhook, but the policy has no webhook_url", l.Name)
		}
	}
	return nil
}

// checkPolicy validates p for a DMS whose authorized CAs are cas (already
// known to exist): p itself, each label's CA among cas and its profile
// known, and in local mode at least one CA (the edge CA's parent).
func (s *Service) checkPolicy(p DMSPolicy, cas []uuid.UUID) error {
	if err := p.validate(); err != nil {
		return err
	}
	for i, l := range p.Labels {
		if !slices.Contains(cas, l.CAID) {
			return invalid(fmt.Sprintf("policy.labels[%d].ca_id", i), "label %q names CA %s, which is not one of the DMS's authorized_cas", l.Name, l.CAID)
		}
		if l.Profile != "" {
			if _, err := s.profile(l.Profile); err != nil {
				return invalid(fmt.Sprintf("policy.labels[%d].profile", i), "label %q: unknown profile %q", l.Name, l.Profile)
			}
		}
	}
	if p.Mode == "local" && len(cas) == 0 {
		return invalid("authorized_cas", "local mode needs at least one authorized CA: the first one certifies the gateway's edge CA")
	}
	return nil
}

// withDefaults fills in what an empty field means, so the stored policy
// is the one in force.
func (p DMSPolicy) withDefaults() DMSPolicy {
	p.EdgeNameConstraints = p.EffectiveNameConstraints()
	return p
}

func checkWebhookURL(s string) error {
	if len(s) > maxPolicyString {
		return fmt.Errorf("must be at most %d characters", maxPolicyString)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("is not a URL")
	case u.Scheme != "https":
		return errors.New("must be an https URL")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("must not carry credentials")
	case u.Fragment != "":
		return errors.New("must not have a fragment")
	}
	return nil
}

func truncateText(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (s *Service) checkCAs(ctx context.Context, q *registry.Queries, ids []uuid.UUID) error {
	seen := map[uuid.UUID]bool{}
	for _, id := range ids {
		if seen[id] {
			return invalid("authorized_cas", "CA %s is listed twice", id)
		}
		seen[id] = true
		if _, err := q.GetCA(ctx, id); errors.Is(err, registry.ErrNotFound) {
			return invalid("authorized_cas", "CA %s does not exist", id)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// CreateDMS creates a DMS and its one-time bootstrap token. The token is
// returned once; only its hash is stored.
func (s *Service) CreateDMS(ctx context.Context, actor Actor, name string, p DMSPolicy, cas []uuid.UUID, ttl time.Duration) (*registry.DMS, string, time.Time, error) {
	if strings.TrimSpace(name) == "" {
		return nil, "", time.Time{}, invalid("name", "name is required")
	}
	if err := s.checkPolicy(p, cas); err != nil {
		return nil, "", time.Time{}, err
	}
	p = p.withDefaults()
	if ttl <= 0 || ttl > 30*24*time.Hour {
		return nil, "", time.Time{}, invalid("token_ttl_hours", "token_ttl_hours must be between 1 and 720")
	}
	tok, hash, err := NewSecret("obt_")
	if err != nil {
		return nil, "", time.Time{}, err
	}
	var out *registry.DMS
	var expires time.Time
	err = s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		if err := s.checkCAs(ctx, q, cas); err != nil {
			return err
		}
		now := s.now()
		d := &registry.DMS{ID: uuid.New(), Name: name, Status: "pending", AuthorizedCAs: cas}
		setPolicy(d, p)
		if err := q.InsertDMS(ctx, d); err != nil {
			if errors.Is(err, registry.ErrConflict) {
				return conflict("a DMS named %q already exists", name)
			}
			return err
		}
		expires = now.Add(ttl)
		if err := q.InsertBootstrapToken(ctx, hash, d.ID, expires); err != nil {
			return err
		}
		if err := q.AddEvent(ctx, &registry.Event{DMSID: &d.ID, Kind: "dms.created"}); err != nil {
			return err
		}
		if _, err := audit.Append(ctx, tx, now, string(actor), "dms.create", d.ID.String(), map[string]any{"name": name, "mode": p.Mode}); err != nil {
			return err
		}
		out = d
		return nil
	})
	if err != nil {
		return nil, "", time.Time{}, err
	}
	return out, tok, expires, nil
}

// UpdateDMS changes a DMS's policy and/or authorized CAs (nil: unchanged).
func (s *Service) UpdateDMS(ctx context.Context, actor Actor, id uuid.UUID, p *DMSPolicy, cas *[]uuid.UUID) (*registry.DMS, error) {
	var out *registry.DMS
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		d, err := q.GetDMS(ctx, id)
		if err != nil {
			return err
		}
		// Check the result as a whole: new CAs against the labels of the
		// policy kept, a new policy against the CAs kept.
		pol := PolicyOf(d)
		if p != nil {
			pol = *p
		}
		if cas != nil {
			if err := s.checkCAs(ctx, q, *cas); err != nil {
				return err
			}
			d.AuthorizedCAs = *cas
		}
		if err := s.checkPolicy(pol, d.AuthorizedCAs); err != nil {
			return err
		}
		setPolicy(d, pol.withDefaults())
		if err := q.UpdateDMS(ctx, d); err != nil {
			return err
		}
		now := s.now()
		if err := q.AddEvent(ctx, &registry.Event{DMSID: &d.ID, Kind: "dms.updated"}); err != nil {
			return err
		}
		if _, err := audit.Append(ctx, tx, now, string(actor), "dms.update", id.String(), nil); err != nil {
			return err
		}
		out, err = q.GetDMS(ctx, id)
		return err
	})
	return out, err
}

// setPolicy copies p into d's policy fields.
func setPolicy(d *registry.DMS, p DMSPolicy) {
	d.Mode, d.DeviceAuth, d.Profile, d.ReenrollWindow, d.LocalQuota, d.BootstrapCAPEMs = p.Mode, p.DeviceAuth, p.Profile, p.ReenrollWindow, p.LocalQuota, p.BootstrapCAPEMs
	d.EdgeCAValidity, d.EdgeNameConstraints, d.WebhookURL, d.OnlineWait, d.JITRegistration = p.EdgeCAValidity, p.EdgeNameConstraints, p.WebhookURL, p.OnlineWait, p.JITRegistration
	d.Labels = nil
	for _, l := range p.Labels {
		d.Labels = append(d.Labels, registry.DMSLabel{Name: l.Name, CAID: l.CAID, Profile: l.Profile, DeviceAuth: l.DeviceAuth})
	}
}

// DisableDMS disables a DMS: its identity is no longer accepted, and in
// the same transaction its identity certificate and its delegated edge
// CAs (with everything they issued) are revoked (privilegeWithdrawn).
func (s *Service) DisableDMS(ctx context.Context, actor Actor, id uuid.UUID) (*registry.DMS, error) {
	var out *registry.DMS
	var revokedCAs []uuid.UUID
	var revokedSerials []string
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		revokedCAs, revokedSerials = nil, nil
		q := registry.On(tx)
		d, err := q.GetDMS(ctx, id)
		if err != nil {
			return err
		}
		if err := q.SetDMSStatus(ctx, id, "disabled"); err != nil {
			return err
		}
		now := s.now()
		if d.IdentitySerial != nil {
			c, err := q.RevokeCertificate(ctx, *d.IdentitySerial, reasonPrivilegeWithdrawn, now)
			if err != nil && !errors.Is(err, registry.ErrNotFound) {
				return err
			}
			if c != nil {
				revokedSerials = append(revokedSerials, c.Serial)
				revokedCAs = append(revokedCAs, c.IssuerID)
			}
		}
		edges, err := q.EdgeCAsOf(ctx, id)
		if err != nil {
			return err
		}
		for _, e := range edges {
			sub, err := q.CASubtree(ctx, e)
			if err != nil {
				return err
			}
			if _, err := q.RevokeCAs(ctx, sub, reasonPrivilegeWithdrawn, now); err != nil {
				return err
			}
			revokedCAs = append(revokedCAs, sub...)
			if ca, err := q.GetCA(ctx, e); err == nil && ca.ParentID != nil {
				revokedCAs = append(revokedCAs, *ca.ParentID) // the parent's CRL lists the edge CA
			}
		}
		if err := q.AddEvent(ctx, &registry.Event{DMSID: &id, Kind: "dms.disabled"}); err != nil {
			return err
		}
		if _, err := audit.Append(ctx, tx, now, string(actor), "dms.disable", id.String(), map[string]any{"revoked_identity": revokedSerials, "revoked_edge_cas": len(edges)}); err != nil {
			return err
		}
		out, err = q.GetDMS(ctx, id)
		return err
	})
	if err == nil && (len(revokedCAs) > 0 || len(revokedSerials) > 0) {
		s.revoked(ctx, revokedCAs, revokedSerials)
	}
	if err == nil && s.OnDMSDisabled != nil {
		s.OnDMSDisabled(id)
	}
	return out, err
}

// BootstrapResult is the DMS identity.
type BootstrapResult struct {
	DMSID uuid.UUID
	Cert  *registry.Certificate
	Chain []*registry.CA // issuing CA first, root last
}

// BootstrapDMS exchanges a one-time token and a CSR for the DMS identity
// certificate from the DMS manager CA. The token is consumed in the same
// transaction: a second use, or a use after expiry, is refused.
func (s *Service) BootstrapDMS(ctx context.Context, token string, csrPEM []byte) (*BootstrapResult, error) {
	if !strings.HasPrefix(token, "obt_") || len(token) > 128 {
		return nil, &Error{Kind: KindUnauthorized, Field: "token", Message: "the bootstrap token is not valid"}
	}
	csr, err := csrcheck.ParsePEMOrDER(csrPEM, csrcheck.DefaultPolicy())
	if err != nil {
		var ce *csrcheck.Error
		if errors.As(err, &ce) {
			return nil, &Error{Kind: KindInvalid, Field: "csr_pem", Message: ce.Public(), Err: err}
		}
		return nil, invalid("csr_pem", "the CSR could not be read")
	}
	var res BootstrapResult
	err = s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		now := s.now()
		dmsID, err := q.ConsumeBootstrapToken(ctx, HashSecret(token), now)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			return &Error{Kind: KindUnauthorized, Field: "token", Message: "the bootstrap token is not valid"}
		case errors.Is(err, registry.ErrTokenUsed):
			return &Error{Kind: KindGone, Field: "token", Message: "the bootstrap token was already used: ask an admin for a new DMS token"}
		case errors.Is(err, registry.ErrTokenExpired):
			return &Error{Kind: KindGone, Field: "token", Message: "the bootstrap token has expired: ask an admin for a new DMS token"}
		case err != nil:
			return err
		}
		d, err := q.GetDMS(ctx, dmsID)
		if err != nil {
			return err
		}
		if d.Status == "disabled" {
			return &Error{Kind: KindForbidden, Message: "this DMS is disabled"}
		}
		rec, chain, err := s.issueDMSIdentity(ctx, q, dmsID, csr, now)
		if err != nil {
			return err
		}
		if err := q.SetDMSIdentity(ctx, dmsID, rec.Serial, rec.NotAfter); err != nil {
			return err
		}
		if err := q.AddEvent(ctx, &registry.Event{DMSID: &dmsID, Kind: "dms.bootstrapped", Detail: map[string]any{"serial": rec.Serial}}); err != nil {
			return err
		}
		if _, err := audit.Append(ctx, tx, now, "dms:"+dmsID.String(), "dms.bootstrap", dmsID.String(), map[string]any{"serial": rec.Serial}); err != nil {
			return err
		}
		res = BootstrapResult{DMSID: dmsID, Cert: rec, Chain: chain}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// --- devices ------------------------------------------------------------

// RegisterDevice pre-registers a device.
func (s *Service) RegisterDevice(ctx context.Context, actor Actor, id string, dmsID *uuid.UUID, labels map[string]string) (*registry.Device, error) {
	if id == "" || len(id) > 128 || strings.ContainsAny(id, "/\\ \t\r\n") {
		return nil, invalid("id", "device id must be 1-128 characters without spaces or slashes")
	}
	if len(labels) > 64 {
		return nil, invalid("labels", "at most 64 labels")
	}
	var out *registry.Device
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		if dmsID != nil {
			if _, err := q.GetDMS(ctx, *dmsID); errors.Is(err, registry.ErrNotFound) {
				return invalid("dms_id", "DMS %s does not exist", dmsID)
			} else if err != nil {
				return err
			}
		}
		d := &registry.Device{ID: id, DMSID: dmsID, Status: "pending_provisioning", Labels: labels}
		if err := q.InsertDevice(ctx, d); err != nil {
			if errors.Is(err, registry.ErrConflict) {
				return conflict("device %q is already registered", id)
			}
			return err
		}
		now := s.now()
		if err := q.AddEvent(ctx, &registry.Event{DeviceID: &id, DMSID: dmsID, Kind: "device.registered"}); err != nil {
			return err
		}
		if _, err := audit.Append(ctx, tx, now, string(actor), "device.register", id, nil); err != nil {
			return err
		}
		out = d
		return nil
	})
	return out, err
}

// DecommissionDevice marks a device decommissioned and revokes its active
// certificates with reason cessationOfOperation, in one transaction.
func (s *Service) DecommissionDevice(ctx context.Context, actor Actor, id string) ([]string, error) {
	var revoked []string
	err := s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		revoked = nil
		q := registry.On(tx)
		d, err := q.LockDevice(ctx, id)
		if err != nil {
			return err
		}
		if d.Status == "decommissioned" {
			return conflict("device %q is already decommissioned", id)
		}
		now := s.now()
		serials, err := q.ActiveSerials(ctx, id)
		if err != nil {
			return err
		}
		for _, serial := range serials {
			if _, err := q.RevokeCertificate(ctx, serial, ReasonCessationOfOperation, now); err != nil {
				return err
			}
			revoked = append(revoked, serial)
		}
		if err := q.SetDeviceStatus(ctx, id, "decommissioned"); err != nil {
			return err
		}
		if err := q.AddEvent(ctx, &registry.Event{DeviceID: &id, Kind: "device.decommissioned", Detail: map[string]any{"revoked": revoked}}); err != nil {
			return err
		}
		_, err = audit.Append(ctx, tx, now, string(actor), "device.decommission", id, map[string]any{"revoked": revoked})
		return err
	})
	if err == nil && len(revoked) > 0 {
		s.revokedSerials(ctx, revoked)
	}
	return revoked, err
}

// revokedSerials reports revoked serials to OnRevoked with their CAs.
func (s *Service) revokedSerials(ctx context.Context, serials []string) {
	if s.OnRevoked == nil {
		return
	}
	seen := map[uuid.UUID]bool{}
	var cas []uuid.UUID
	for _, sr := range serials {
		if c, err := s.Reg.GetCertificate(ctx, sr); err == nil && !seen[c.IssuerID] {
			seen[c.IssuerID] = true
			cas = append(cas, c.IssuerID)
		}
	}
	s.revoked(ctx, cas, serials)
}

// --- tokens -------------------------------------------------------------

// CreateToken creates (or reuses) a principal and gives it a new token.
func (s *Service) CreateToken(ctx context.Context, actor Actor, principal, role, description string, ttl time.Duration) (string, *registry.Token, error) {
	switch role {
	case "admin", "operator", "viewer":
	default:
		return "", nil, invalid("role", "role %q is not one of admin, operator, viewer", role)
	}
	if strings.TrimSpace(principal) == "" || len(principal) > 128 {
		return "", nil, invalid("principal", "principal name must be 1-128 characters")
	}
	tok, hash, err := NewSecret("opk_")
	if err != nil {
		return "", nil, err
	}
	var t *registry.Token
	err = s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		p, err := q.UpsertPrincipal(ctx, principal, role)
		if err != nil {
			return err
		}
		if p.Role != role {
			return conflict("principal %q exists with role %s", principal, p.Role)
		}
		now := s.now()
		t = &registry.Token{ID: uuid.New(), PrincipalID: p.ID, Description: description}
		if ttl > 0 {
			exp := now.Add(ttl)
			t.ExpiresAt = &exp
		}
		if err := q.InsertToken(ctx, t, hash); err != nil {
			return err
		}
		_, err = audit.Append(ctx, tx, now, string(actor), "token.create", t.ID.String(), map[string]any{"principal": principal, "role": role})
		return err
	})
	if err != nil {
		return "", nil, err
	}
	return tok, t, nil
}

// RevokeToken revokes an API token.
func (s *Service) RevokeToken(ctx context.Context, actor Actor, id uuid.UUID) error {
	return s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		now := s.now()
		if err := q.RevokeToken(ctx, id, now); err != nil {
			return err
		}
		_, err := audit.Append(ctx, tx, now, string(actor), "token.revoke", id.String(), nil)
		return err
	})
}

// EnsureAdminToken installs a configured admin token (idempotent): the
// way operators get their first credential.
func (s *Service) EnsureAdminToken(ctx context.Context, token string) error {
	if len(token) < 24 {
		return errors.New("the configured admin token is too short: use at least 24 random characters")
	}
	return s.Reg.Tx(ctx, func(tx pgx.Tx) error {
		q := registry.On(tx)
		p, err := q.UpsertPrincipal(ctx, "admin", "admin")
		if err != nil {
			return err
		}
		return q.EnsureToken(ctx, p.ID, HashSecret(token), "configured admin token")
	})
}

package caservice

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/audit"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/csrcheck"
)

// DMSPolicy is the enrollment policy of a DMS.
type DMSPolicy struct {
	Mode            string
	DeviceAuth      string
	Profile         string
	ReenrollWindow  time.Duration
	LocalQuota      int
	BootstrapCAPEMs []string
}

// DefaultDMSPolicy is the policy of a DMS created without one.
func DefaultDMSPolicy() DMSPolicy {
	return DMSPolicy{Mode: "queued", DeviceAuth: "client_cert", Profile: "device", ReenrollWindow: 14 * 24 * time.Hour}
}

func (p DMSPolicy) validate() error {
	switch p.Mode {
	case "online", "queued", "local":
	default:
		return invalid("policy.mode", "mode %q is not one of online, queued, local", p.Mode)
	}
	switch p.DeviceAuth {
	case "client_cert", "basic_secret", "webhook":
	default:
		return invalid("policy.device_auth", "device_auth %q is not one of client_cert, basic_secret, webhook", p.DeviceAuth)
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
	return nil
}

func (s *Service) checkCAs(ctx context.Context, q *registry.Queries, ids []uuid.UUID) error {
	for _, id := range ids {
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
	if err := p.validate(); err != nil {
		return nil, "", time.Time{}, err
	}
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
		d := &registry.DMS{ID: uuid.New(), Name: name, Status: "pending", Mode: p.Mode, DeviceAuth: p.DeviceAuth, Profile: p.Profile,
			ReenrollWindow: p.ReenrollWindow, LocalQuota: p.LocalQuota, BootstrapCAPEMs: p.BootstrapCAPEMs, AuthorizedCAs: cas}
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
		if p != nil {
			if err := p.validate(); err != nil {
				return err
			}
			d.Mode, d.DeviceAuth, d.Profile, d.ReenrollWindow, d.LocalQuota, d.BootstrapCAPEMs = p.Mode, p.DeviceAuth, p.Profile, p.ReenrollWindow, p.LocalQuota, p.BootstrapCAPEMs
		}
		if cas != nil {
			if err := s.checkCAs(ctx, q, *cas); err != nil {
				return err
			}
			d.AuthorizedCAs = *cas
		}
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

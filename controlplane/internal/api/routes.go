package api

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/youmark/pkcs8"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/audit"
	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

func (s *Server) routeTable() []Route {
	type page[T any] = apitypes.Page[T]
	return []Route{
		{Method: "GET", Path: "/api/v1/openapi.json", Role: RolePublic, Summary: "This API's OpenAPI 3 document", handler: s.openapi},
		{Method: "GET", Path: "/api/v1/whoami", Role: RoleViewer, DMSAllowed: true, Summary: "Describe the caller", Response: apitypes.WhoAmI{}, handler: s.whoami},

		{Method: "GET", Path: "/api/v1/cas", Role: RoleViewer, Summary: "List CAs", Response: page[apitypes.CA]{}, handler: s.listCAs},
		{Method: "POST", Path: "/api/v1/cas", Role: RoleOperator, Summary: "Create a CA (a root needs the admin role)", Request: apitypes.CreateCARequest{}, Response: apitypes.CA{}, Status: 201, handler: s.createCA},
		{Method: "POST", Path: "/api/v1/cas/import", Role: RoleAdmin, Summary: "Import a CA certificate, with or without its key", Request: apitypes.ImportCARequest{}, Response: apitypes.CA{}, Status: 201, handler: s.importCA},
		{Method: "GET", Path: "/api/v1/cas/:id", Role: RoleViewer, Summary: "Get a CA", Response: apitypes.CA{}, handler: s.getCA},
		{Method: "GET", Path: "/api/v1/cas/:id/chain", Role: RoleViewer, Summary: "Download a CA's chain (PEM, CA first, root last)", handler: s.caChain},
		{Method: "POST", Path: "/api/v1/cas/:id/revoke", Role: RoleAdmin, Summary: "Revoke a CA, every CA below it and every certificate they issued", Request: apitypes.RevokeRequest{}, Response: apitypes.RevokeCAResponse{}, handler: s.revokeCA},

		{Method: "GET", Path: "/api/v1/certificates", Role: RoleViewer, Summary: "Search certificates (keyset pagination)", Response: page[apitypes.Certificate]{}, handler: s.searchCertificates},
		{Method: "POST", Path: "/api/v1/certificates", Role: RoleOperator, Summary: "Issue a certificate from a CSR", Request: apitypes.IssueRequest{}, Response: apitypes.Certificate{}, Status: 201, handler: s.issue},
		{Method: "POST", Path: "/api/v1/certificates/import", Role: RoleOperator, Summary: "Record an existing certificate issued by a known CA", Request: apitypes.ImportCertificateRequest{}, Response: apitypes.Certificate{}, Status: 201, handler: s.importCertificate},
		{Method: "GET", Path: "/api/v1/certificates/:serial", Role: RoleViewer, Summary: "Get a certificate", Response: apitypes.Certificate{}, handler: s.getCertificate},
		{Method: "GET", Path: "/api/v1/certificates/:serial/pem", Role: RoleViewer, Summary: "Download a certificate as PEM", handler: s.exportCertificate("pem")},
		{Method: "GET", Path: "/api/v1/certificates/:serial/der", Role: RoleViewer, Summary: "Download a certificate as DER", handler: s.exportCertificate("der")},
		{Method: "POST", Path: "/api/v1/certificates/:serial/revoke", Role: RoleOperator, Summary: "Revoke a certificate", Request: apitypes.RevokeRequest{}, Response: apitypes.Certificate{}, handler: s.revokeCertificate},

		{Method: "GET", Path: "/api/v1/dmss", Role: RoleViewer, Summary: "List DMSs", Response: page[apitypes.DMS]{}, handler: s.listDMSs},
		{Method: "POST", Path: "/api/v1/dmss", Role: RoleOperator, Summary: "Create a DMS; returns its one-time bootstrap token", Request: apitypes.CreateDMSRequest{}, Response: apitypes.CreateDMSResponse{}, Status: 201, handler: s.createDMS},
		{Method: "GET", Path: "/api/v1/dmss/:id", Role: RoleViewer, Summary: "Get a DMS", Response: apitypes.DMS{}, handler: s.getDMS},
		{Method: "PATCH", Path: "/api/v1/dmss/:id", Role: RoleOperator, Summary: "Update a DMS's policy and authorized CAs", Request: apitypes.UpdateDMSRequest{}, Response: apitypes.DMS{}, handler: s.updateDMS},
		{Method: "POST", Path: "/api/v1/dmss/:id/disable", Role: RoleOperator, Summary: "Disable a DMS", Response: apitypes.DMS{}, handler: s.disableDMS},
		{Method: "POST", Path: "/api/v1/dms/bootstrap", Role: RolePublic, Summary: "Exchange a one-time bootstrap token and a CSR for the DMS identity certificate", Request: apitypes.DMSBootstrapRequest{}, Response: apitypes.DMSBootstrapResponse{}, handler: s.bootstrapDMS},

		{Method: "GET", Path: "/api/v1/devices", Role: RoleViewer, Summary: "Search devices", Response: page[apitypes.Device]{}, handler: s.searchDevices},
		{Method: "POST", Path: "/api/v1/devices", Role: RoleOperator, Summary: "Register a device", Request: apitypes.RegisterDeviceRequest{}, Response: apitypes.Device{}, Status: 201, handler: s.registerDevice},
		{Method: "GET", Path: "/api/v1/devices/:id", Role: RoleViewer, Summary: "Get a device with its slots and timeline", Response: apitypes.Device{}, handler: s.getDevice},
		{Method: "POST", Path: "/api/v1/devices/:id/decommission", Role: RoleOperator, Summary: "Decommission a device, revoking its active certificates", Response: apitypes.DecommissionResponse{}, handler: s.decommission},

		{Method: "GET", Path: "/api/v1/audit", Role: RoleOperator, Summary: "List audit entries, newest first", Response: page[apitypes.AuditEntry]{}, handler: s.listAudit},
		{Method: "GET", Path: "/api/v1/audit/verify", Role: RoleOperator, Summary: "Verify the audit hash chain", Response: apitypes.AuditVerifyResponse{}, handler: s.verifyAudit},

		{Method: "POST", Path: "/api/v1/tokens", Role: RoleAdmin, Summary: "Create an API token (and its principal)", Request: apitypes.CreateTokenRequest{}, Response: apitypes.CreateTokenResponse{}, Status: 201, handler: s.createToken},
		{Method: "DELETE", Path: "/api/v1/tokens/:id", Role: RoleAdmin, Summary: "Revoke an API token", Status: 204, handler: s.revokeToken},
	}
}

// --- helpers -------------------------------------------------------------

func pathUUID(c *gin.Context, name string) (uuid.UUID, bool) {
	id, err := uuid.Parse(c.Param(name))
	if err != nil {
		problem(c, http.StatusBadRequest, "invalid-id", name+" must be a UUID", name)
		return uuid.Nil, false
	}
	return id, true
}

func optUUID(c *gin.Context, field, v string) (*uuid.UUID, bool) {
	if v == "" {
		return nil, true
	}
	id, err := uuid.Parse(v)
	if err != nil {
		problem(c, http.StatusBadRequest, "invalid-id", field+" must be a UUID", field)
		return nil, false
	}
	return &id, true
}

func limitParam(c *gin.Context) (int, bool) {
	v := c.Query("limit")
	if v == "" {
		return registry.DefaultLimit, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > registry.MaxLimit {
		problem(c, http.StatusBadRequest, "invalid-limit", "limit must be a number from 1 to 500", "limit")
		return 0, false
	}
	return n, true
}

func toCA(ca *registry.CA) apitypes.CA {
	out := apitypes.CA{ID: ca.ID.String(), Name: ca.Name, Kind: ca.Kind, HasKey: ca.KeyRef != nil, Status: ca.Status, Subject: ca.Subject,
		Serial: ca.Serial, NotBefore: ca.NotBefore.UTC(), NotAfter: ca.NotAfter.UTC(), CertPEM: caservice.CertPEM(ca.CertDER), RevokedAt: ca.RevokedAt}
	if ca.ParentID != nil {
		out.ParentID = ca.ParentID.String()
	}
	if ca.Role != nil {
		out.Role = *ca.Role
	}
	return out
}

func toCert(c *registry.Certificate, withPEM bool) apitypes.Certificate {
	out := apitypes.Certificate{Serial: c.Serial, IssuerID: c.IssuerID.String(), Subject: c.Subject, CommonName: c.CommonName, SANs: c.SANs,
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), Status: c.Status, RevokedAt: c.RevokedAt, Profile: c.Profile}
	if c.RevocationReason != nil {
		out.RevocationReason = caservice.ReasonName(*c.RevocationReason)
	}
	if c.DMSID != nil {
		out.DMSID = c.DMSID.String()
	}
	if c.DeviceID != nil {
		out.DeviceID = *c.DeviceID
	}
	if withPEM {
		out.CertPEM = caservice.CertPEM(c.DER)
	}
	return out
}

func toDMS(d *registry.DMS) apitypes.DMS {
	out := apitypes.DMS{ID: d.ID.String(), Name: d.Name, Status: d.Status, CreatedAt: d.CreatedAt.UTC(), IdentityNotAfter: d.IdentityNotAfter,
		Policy: apitypes.DMSPolicy{Mode: d.Mode, DeviceAuth: d.DeviceAuth, Profile: d.Profile, ReenrollWindowDays: int(d.ReenrollWindow / (24 * time.Hour)),
			LocalQuota: d.LocalQuota, BootstrapCAPEMs: d.BootstrapCAPEMs, EdgeCAValidityDays: int(d.EdgeCAValidity / (24 * time.Hour)),
			EdgeNameConstraints: d.EdgeNameConstraints, WebhookURL: d.WebhookURL, OnlineWaitMs: new(int(d.OnlineWait.Milliseconds())),
			JITRegistration: new(d.JITRegistration)}, AuthorizedCAs: []string{}}
	for _, l := range d.Labels {
		out.Policy.Labels = append(out.Policy.Labels, apitypes.DMSLabel{Name: l.Name, CAID: l.CAID.String(), Profile: l.Profile, DeviceAuth: l.DeviceAuth})
	}
	for _, ca := range d.AuthorizedCAs {
		out.AuthorizedCAs = append(out.AuthorizedCAs, ca.String())
	}
	if d.IdentitySerial != nil {
		out.IdentitySerial = *d.IdentitySerial
	}
	out.LastSeenAt, out.AgentVersion, out.QueueDepth = d.LastSeenAt, d.AgentVersion, d.QueueDepth
	out.Online = d.LastSeenAt != nil && time.Since(*d.LastSeenAt) < OnlineWindow
	return out
}

// OnlineWindow: a DMS is online when its last heartbeat (sent every 30 s
// by default) is more recent than this.
const OnlineWindow = 2 * time.Minute

func toDevice(d *registry.Device) apitypes.Device {
	out := apitypes.Device{ID: d.ID, Status: d.Status, Labels: d.Labels, CreatedAt: d.CreatedAt.UTC()}
	if d.DMSID != nil {
		out.DMSID = d.DMSID.String()
	}
	return out
}

// policyFrom converts a policy from a request, defaults filled in. It
// writes a problem and returns false for a label CA that is not an id;
// everything else is checked by the service.
func policyFrom(c *gin.Context, p *apitypes.DMSPolicy) (caservice.DMSPolicy, bool) {
	out := caservice.DefaultDMSPolicy()
	if p == nil {
		return out, true
	}
	if p.Mode != "" {
		out.Mode = p.Mode
	}
	if p.DeviceAuth != "" {
		out.DeviceAuth = p.DeviceAuth
	}
	if p.Profile != "" {
		out.Profile = p.Profile
	}
	out.ReenrollWindow = durationOf(p.ReenrollWindowDays, 24*time.Hour)
	out.LocalQuota = p.LocalQuota
	out.BootstrapCAPEMs = p.BootstrapCAPEMs
	for i, l := range p.Labels {
		id, err := uuid.Parse(l.CAID)
		if err != nil {
			field := fmt.Sprintf("policy.labels[%d].ca_id", i)
			problem(c, http.StatusBadRequest, "invalid-id", field+" must be a CA id (UUID)", field)
			return out, false
		}
		out.Labels = append(out.Labels, caservice.DMSLabel{Name: l.Name, CAID: id, Profile: l.Profile, DeviceAuth: l.DeviceAuth})
	}
	if p.EdgeCAValidityDays != 0 {
		out.EdgeCAValidity = durationOf(p.EdgeCAValidityDays, 24*time.Hour)
	}
	out.EdgeNameConstraints = p.EdgeNameConstraints
	out.WebhookURL = p.WebhookURL
	if p.OnlineWaitMs != nil {
		out.OnlineWait = durationOf(*p.OnlineWaitMs, time.Millisecond)
	}
	if p.JITRegistration != nil {
		out.JITRegistration = *p.JITRegistration
	}
	return out, true
}

// durationOf returns n units. A count too large for a Duration becomes the
// largest Duration of its sign, which every range check refuses, instead of
// wrapping around into one it might accept (213504 days wrapped to 25
// minutes; 2562048 hours to a negative TTL, which meant no expiry).
func durationOf(n int, unit time.Duration) time.Duration {
	limit := int64(math.MaxInt64) / int64(unit)
	switch {
	case int64(n) > limit:
		return math.MaxInt64
	case int64(n) < -limit:
		return math.MinInt64
	}
	return time.Duration(n) * unit
}

func uuids(c *gin.Context, field string, in []string) ([]uuid.UUID, bool) {
	out := make([]uuid.UUID, 0, len(in))
	for _, s := range in {
		id, err := uuid.Parse(s)
		if err != nil {
			problem(c, http.StatusBadRequest, "invalid-id", field+" must hold CA ids (UUIDs)", field)
			return nil, false
		}
		out = append(out, id)
	}
	return out, true
}

// --- handlers ------------------------------------------------------------

func (s *Server) whoami(c *gin.Context) {
	cl := callerOf(c)
	c.JSON(http.StatusOK, apitypes.WhoAmI{Principal: apitypes.Principal{Name: cl.name, Role: cl.role.String()}, TokenID: cl.tokenID})
}

func (s *Server) listCAs(c *gin.Context) {
	limit, ok := limitParam(c)
	if !ok {
		return
	}
	cas, next, err := s.reg.ListCAs(c, c.Query("cursor"), limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := apitypes.Page[apitypes.CA]{Items: []apitypes.CA{}, NextCursor: next}
	for _, ca := range cas {
		out.Items = append(out.Items, toCA(ca))
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) getCA(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	ca, err := s.reg.GetCA(c, id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, toCA(ca))
}

func (s *Server) caChain(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	var b strings.Builder
	for next := &id; next != nil; {
		ca, err := s.reg.GetCA(c, *next)
		if err != nil {
			s.fail(c, err)
			return
		}
		b.WriteString(caservice.CertPEM(ca.CertDER))
		next = ca.ParentID
	}
	c.Data(http.StatusOK, "application/x-pem-file", []byte(b.String()))
}

func (s *Server) createCA(c *gin.Context) {
	var req apitypes.CreateCARequest
	if !bind(c, &req) {
		return
	}
	parent, ok := optUUID(c, "parent_id", req.ParentID)
	if !ok {
		return
	}
	if parent == nil && callerOf(c).role < RoleAdmin {
		problem(c, http.StatusForbidden, "forbidden", "creating a root CA needs the admin role; operators may create intermediates (set parent_id)", "parent_id")
		return
	}
	ca, err := s.svc.CreateCA(c, actorOf(c), caservice.CreateCARequest{Name: req.Name, ParentID: parent, CommonName: req.CommonName,
		KeyAlgorithm: req.KeyAlgorithm, ValidityDays: req.ValidityDays, MaxPathLen: req.MaxPathLen})
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, toCA(ca))
}

func (s *Server) importCA(c *gin.Context) {
	var req apitypes.ImportCARequest
	if !bind(c, &req) {
		return
	}
	cert, err := caservice.ParseCertificatePEM([]byte(req.CertificatePEM))
	if err != nil {
		problem(c, http.StatusBadRequest, "invalid-certificate", "certificate_pem: "+err.Error(), "certificate_pem")
		return
	}
	var key crypto.Signer
	if req.KeyPEM != "" {
		block, _ := pem.Decode([]byte(req.KeyPEM))
		if block == nil {
			problem(c, http.StatusBadRequest, "invalid-key", "key_pem holds no PEM block", "key_pem")
			return
		}
		var k any
		if block.Type == "ENCRYPTED PRIVATE KEY" {
			k, err = pkcs8.ParsePKCS8PrivateKey(block.Bytes, []byte(req.KeyPassphrase))
		} else {
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				if ek, e2 := x509.ParseECPrivateKey(block.Bytes); e2 == nil {
					k, err = ek, nil
				} else if rk, e3 := x509.ParsePKCS1PrivateKey(block.Bytes); e3 == nil {
					k, err = rk, nil
				}
			}
		}
		if err != nil {
			problem(c, http.StatusBadRequest, "invalid-key", "key_pem could not be read (wrong passphrase, or not a PKCS#8, SEC 1 or PKCS#1 key)", "key_pem")
			return
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			problem(c, http.StatusBadRequest, "invalid-key", "key_pem is not a signing key", "key_pem")
			return
		}
		key = signer
	}
	ca, err := s.svc.ImportCA(c, actorOf(c), req.Name, cert, key)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, toCA(ca))
}

func (s *Server) revokeCA(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	var req apitypes.RevokeRequest
	if !bind(c, &req) {
		return
	}
	reason, err := caservice.ParseReason(req.Reason)
	if err != nil {
		s.fail(c, err)
		return
	}
	ids, n, err := s.svc.RevokeCA(c, actorOf(c), id, reason)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := apitypes.RevokeCAResponse{RevokedCertificates: n, RevokedCAs: []string{}}
	for _, u := range ids {
		out.RevokedCAs = append(out.RevokedCAs, u.String())
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) searchCertificates(c *gin.Context) {
	limit, ok := limitParam(c)
	if !ok {
		return
	}
	f := registry.CertFilter{Serial: c.Query("serial"), CommonName: c.Query("cn"), SAN: c.Query("san"), Status: c.Query("status"), DeviceID: c.Query("device_id")}
	switch f.Status {
	case "", "active", "about_to_expire", "expired", "revoked":
	default:
		problem(c, http.StatusBadRequest, "invalid-status", "status must be one of active, about_to_expire, expired, revoked", "status")
		return
	}
	for _, p := range []struct {
		name string
		dst  **uuid.UUID
	}{{"issuer_id", &f.IssuerID}, {"dms_id", &f.DMSID}} {
		if *p.dst, ok = optUUID(c, p.name, c.Query(p.name)); !ok {
			return
		}
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"expires_after", &f.ExpiresAfter}, {"expires_before", &f.ExpiresBefore}} {
		if v := c.Query(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				problem(c, http.StatusBadRequest, "invalid-time", p.name+" must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z", p.name)
				return
			}
			*p.dst = t
		}
	}
	certs, next, err := s.reg.SearchCertificates(c, f, c.Query("cursor"), limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := apitypes.Page[apitypes.Certificate]{Items: []apitypes.Certificate{}, NextCursor: next}
	for _, cert := range certs {
		out.Items = append(out.Items, toCert(cert, false))
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) getCertificate(c *gin.Context) {
	cert, err := s.reg.GetCertificate(c, strings.ToLower(c.Param("serial")))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, toCert(cert, true))
}

func (s *Server) exportCertificate(format string) gin.HandlerFunc {
	return func(c *gin.Context) {
		cert, err := s.reg.GetCertificate(c, strings.ToLower(c.Param("serial")))
		if err != nil {
			s.fail(c, err)
			return
		}
		if format == "der" {
			c.Data(http.StatusOK, "application/pkix-cert", cert.DER)
			return
		}
		c.Data(http.StatusOK, "application/x-pem-file", []byte(caservice.CertPEM(cert.DER)))
	}
}

func (s *Server) issue(c *gin.Context) {
	var req apitypes.IssueRequest
	if !bind(c, &req) {
		return
	}
	caID, err := uuid.Parse(req.CAID)
	if err != nil {
		problem(c, http.StatusBadRequest, "invalid-id", "ca_id must be a CA id (UUID)", "ca_id")
		return
	}
	dmsID, ok := optUUID(c, "dms_id", req.DMSID)
	if !ok {
		return
	}
	if req.CSRPEM == "" {
		problem(c, http.StatusBadRequest, "missing-field", "csr_pem is required", "csr_pem")
		return
	}
	cert, err := s.svc.Issue(c, actorOf(c), caservice.IssueRequest{CAID: caID, CSR: []byte(req.CSRPEM), Profile: req.Profile, DeviceID: req.DeviceID, DMSID: dmsID})
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, toCert(cert, true))
}

func (s *Server) importCertificate(c *gin.Context) {
	var req apitypes.ImportCertificateRequest
	if !bind(c, &req) {
		return
	}
	cert, err := caservice.ParseCertificatePEM([]byte(req.CertificatePEM))
	if err != nil {
		problem(c, http.StatusBadRequest, "invalid-certificate", "certificate_pem: "+err.Error(), "certificate_pem")
		return
	}
	dmsID, ok := optUUID(c, "dms_id", req.DMSID)
	if !ok {
		return
	}
	rec, err := s.svc.ImportCertificate(c, actorOf(c), cert, req.DeviceID, dmsID)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, toCert(rec, true))
}

func (s *Server) revokeCertificate(c *gin.Context) {
	var req apitypes.RevokeRequest
	if !bind(c, &req) {
		return
	}
	reason, err := caservice.ParseReason(req.Reason)
	if err != nil {
		s.fail(c, err)
		return
	}
	cert, err := s.svc.RevokeCertificate(c, actorOf(c), strings.ToLower(c.Param("serial")), reason)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, toCert(cert, false))
}

func (s *Server) listDMSs(c *gin.Context) {
	limit, ok := limitParam(c)
	if !ok {
		return
	}
	ds, next, err := s.reg.ListDMSs(c, c.Query("cursor"), limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := apitypes.Page[apitypes.DMS]{Items: []apitypes.DMS{}, NextCursor: next}
	for _, d := range ds {
		out.Items = append(out.Items, toDMS(d))
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) getDMS(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	d, err := s.reg.GetDMS(c, id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, toDMS(d))
}

func (s *Server) createDMS(c *gin.Context) {
	var req apitypes.CreateDMSRequest
	if !bind(c, &req) {
		return
	}
	cas, ok := uuids(c, "authorized_cas", req.AuthorizedCAs)
	if !ok {
		return
	}
	ttl := 24 * time.Hour
	if req.TokenTTLHours != 0 {
		ttl = durationOf(req.TokenTTLHours, time.Hour)
	}
	pol, ok := policyFrom(c, req.Policy)
	if !ok {
		return
	}
	d, tok, exp, err := s.svc.CreateDMS(c, actorOf(c), req.Name, pol, cas, ttl)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, apitypes.CreateDMSResponse{DMS: toDMS(d), BootstrapToken: tok, TokenExpiresAt: exp.UTC()})
}

func (s *Server) updateDMS(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	var req apitypes.UpdateDMSRequest
	if !bind(c, &req) {
		return
	}
	var pol *caservice.DMSPolicy
	if req.Policy != nil {
		p, ok := policyFrom(c, req.Policy)
		if !ok {
			return
		}
		pol = &p
	}
	var cas *[]uuid.UUID
	if req.AuthorizedCAs != nil {
		ids, ok := uuids(c, "authorized_cas", *req.AuthorizedCAs)
		if !ok {
			return
		}
		cas = &ids
	}
	d, err := s.svc.UpdateDMS(c, actorOf(c), id, pol, cas)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, toDMS(d))
}

func (s *Server) disableDMS(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	d, err := s.svc.DisableDMS(c, actorOf(c), id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, toDMS(d))
}

func (s *Server) bootstrapDMS(c *gin.Context) {
	var req apitypes.DMSBootstrapRequest
	if !bind(c, &req) {
		return
	}
	res, err := s.svc.BootstrapDMS(c, req.Token, []byte(req.CSRPEM))
	if err != nil {
		s.fail(c, err)
		return
	}
	var chain strings.Builder
	for _, ca := range res.Chain {
		chain.WriteString(caservice.CertPEM(ca.CertDER))
	}
	c.JSON(http.StatusOK, apitypes.DMSBootstrapResponse{DMSID: res.DMSID.String(), CertificatePEM: caservice.CertPEM(res.Cert.DER), ChainPEM: chain.String()})
}

func (s *Server) searchDevices(c *gin.Context) {
	limit, ok := limitParam(c)
	if !ok {
		return
	}
	switch c.Query("status") {
	case "", "pending_provisioning", "fully_provisioned", "with_warnings", "requires_action", "decommissioned":
	default:
		problem(c, http.StatusBadRequest, "invalid-status", "status must be one of pending_provisioning, fully_provisioned, with_warnings, requires_action, decommissioned", "status")
		return
	}
	dms, ok := optUUID(c, "dms_id", c.Query("dms_id"))
	if !ok {
		return
	}
	ds, next, err := s.reg.SearchDevices(c, registry.DeviceFilter{IDPrefix: c.Query("q"), Status: c.Query("status"), DMSID: dms}, c.Query("cursor"), limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := apitypes.Page[apitypes.Device]{Items: []apitypes.Device{}, NextCursor: next}
	for _, d := range ds {
		out.Items = append(out.Items, toDevice(d))
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) registerDevice(c *gin.Context) {
	var req apitypes.RegisterDeviceRequest
	if !bind(c, &req) {
		return
	}
	dms, ok := optUUID(c, "dms_id", req.DMSID)
	if !ok {
		return
	}
	d, err := s.svc.RegisterDevice(c, actorOf(c), req.ID, dms, req.Labels)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, toDevice(d))
}

func (s *Server) getDevice(c *gin.Context) {
	id := c.Param("id")
	d, err := s.reg.GetDevice(c, id)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := toDevice(d)
	slots, err := s.reg.DeviceSlots(c, id)
	if err != nil {
		s.fail(c, err)
		return
	}
	byCA := map[uuid.UUID]int{}
	for _, sc := range slots {
		i, ok := byCA[sc.CAID]
		if !ok {
			i = len(out.Slots)
			byCA[sc.CAID] = i
			out.Slots = append(out.Slots, apitypes.DeviceSlot{CAID: sc.CAID.String()})
		}
		if sc.Active {
			out.Slots[i].ActiveSerial = sc.Cert.Serial
		}
		out.Slots[i].Certificates = append(out.Slots[i].Certificates, toCert(sc.Cert, false))
	}
	events, err := s.reg.DeviceEvents(c, id, 100)
	if err != nil {
		s.fail(c, err)
		return
	}
	for _, e := range events {
		out.Timeline = append(out.Timeline, apitypes.Event{ID: e.ID, Kind: e.Kind, At: e.At.UTC(), Detail: e.Detail})
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) decommission(c *gin.Context) {
	revoked, err := s.svc.DecommissionDevice(c, actorOf(c), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	if revoked == nil {
		revoked = []string{}
	}
	c.JSON(http.StatusOK, apitypes.DecommissionResponse{RevokedSerials: revoked})
}

func (s *Server) listAudit(c *gin.Context) {
	limit, ok := limitParam(c)
	if !ok {
		return
	}
	var before int64
	if cur := c.Query("cursor"); cur != "" {
		n, err := strconv.ParseInt(cur, 10, 64)
		if err != nil || n < 1 {
			problem(c, http.StatusBadRequest, "bad-cursor", "the cursor is not one this server returned: start again without it", "cursor")
			return
		}
		before = n
	}
	es, err := audit.List(c, s.reg.Pool(), before, limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := apitypes.Page[apitypes.AuditEntry]{Items: []apitypes.AuditEntry{}}
	for _, e := range es {
		out.Items = append(out.Items, apitypes.AuditEntry{Seq: e.Seq, At: e.At.UTC(), Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail, Hash: hex.EncodeToString(e.Hash)})
	}
	if len(es) == limit && es[len(es)-1].Seq > 1 {
		out.NextCursor = strconv.FormatInt(es[len(es)-1].Seq, 10)
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) verifyAudit(c *gin.Context) {
	res, err := audit.Verify(c, s.reg.Pool())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, apitypes.AuditVerifyResponse{OK: res.OK(), Checked: res.Checked, FirstBadSeq: res.FirstBadSeq, Problem: res.Problem})
}

func (s *Server) createToken(c *gin.Context) {
	var req apitypes.CreateTokenRequest
	if !bind(c, &req) {
		return
	}
	if req.TTLHours < 0 {
		problem(c, http.StatusBadRequest, "invalid-ttl", "ttl_hours must not be negative", "ttl_hours")
		return
	}
	tok, t, err := s.svc.CreateToken(c, actorOf(c), req.Principal, req.Role, req.Description, durationOf(req.TTLHours, time.Hour))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, apitypes.CreateTokenResponse{TokenID: t.ID.String(), Token: tok, ExpiresAt: t.ExpiresAt})
}

func (s *Server) revokeToken(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	if err := s.svc.RevokeToken(c, actorOf(c), id); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

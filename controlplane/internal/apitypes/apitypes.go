// Package apitypes holds the JSON shapes of the control plane's REST API
// (/api/v1), shared by the server, the Go client and outpostctl.
//
// Conventions: field names are snake_case; times are RFC 3339 UTC;
// certificate serials are lowercase hex without separators; list
// endpoints return {"items": [...], "next_cursor": "..."} and take
// ?limit= (1-500, default 50) and ?cursor= (opaque, from next_cursor;
// empty when there is no further page). Errors are RFC 9457 problem
// details (application/problem+json).
package apitypes

import "time"

// Problem is an RFC 9457 problem details body.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Field names the request field at fault, when there is one.
	Field string `json:"field,omitempty"`
}

// Page is the envelope of every list response.
type Page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// CA is a certificate authority.
type CA struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	ParentID  string     `json:"parent_id,omitempty"`
	Kind      string     `json:"kind"`           // root | intermediate | edge | external
	Role      string     `json:"role,omitempty"` // bootstrap_root | bootstrap_issuing | dms_manager
	HasKey    bool       `json:"has_key"`
	Status    string     `json:"status"` // active | revoked | expired
	Subject   string     `json:"subject"`
	Serial    string     `json:"serial"`
	NotBefore time.Time  `json:"not_before"`
	NotAfter  time.Time  `json:"not_after"`
	CertPEM   string     `json:"certificate_pem"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// CreateCARequest creates a root (no parent_id) or an intermediate.
type CreateCARequest struct {
	Name       string `json:"name"`
	ParentID   string `json:"parent_id,omitempty"`
	CommonName string `json:"common_name"`
	// KeyAlgorithm: ecdsa-p256 (default), ecdsa-p384, rsa-2048, rsa-3072.
	KeyAlgorithm string `json:"key_algorithm,omitempty"`
	// ValidityDays defaults to 3650 for roots and 1825 for intermediates.
	ValidityDays int `json:"validity_days,omitempty"`
	// MaxPathLen: -1 unconstrained (default for roots), 0 for an issuing CA.
	MaxPathLen *int `json:"max_path_len,omitempty"`
}

// ImportCARequest imports an existing CA certificate, optionally with its
// private key (PKCS#8 PEM, encrypted with key_passphrase or not), which is
// then stored in the control plane's key store.
type ImportCARequest struct {
	Name           string `json:"name"`
	CertificatePEM string `json:"certificate_pem"`
	KeyPEM         string `json:"key_pem,omitempty"`
	KeyPassphrase  string `json:"key_passphrase,omitempty"`
}

// RevokeRequest revokes a CA (and its subtree) or a certificate.
type RevokeRequest struct {
	// Reason is an RFC 5280 reason name: unspecified, keyCompromise,
	// cACompromise, affiliationChanged, superseded, cessationOfOperation,
	// certificateHold, privilegeWithdrawn, aACompromise.
	Reason string `json:"reason"`
}

// RevokeCAResponse reports what a cascading revocation touched.
type RevokeCAResponse struct {
	RevokedCAs          []string `json:"revoked_cas"`
	RevokedCertificates int64    `json:"revoked_certificates"`
}

// Certificate is an issued end-entity certificate.
type Certificate struct {
	Serial           string     `json:"serial"`
	IssuerID         string     `json:"issuer_id"`
	Subject          string     `json:"subject"`
	CommonName       string     `json:"common_name"`
	SANs             []string   `json:"sans"`
	NotBefore        time.Time  `json:"not_before"`
	NotAfter         time.Time  `json:"not_after"`
	Status           string     `json:"status"` // active | about_to_expire | expired | revoked
	RevocationReason string     `json:"revocation_reason,omitempty"`
	RevokedAt        *time.Time `json:"revoked_at,omitempty"`
	DMSID            string     `json:"dms_id,omitempty"`
	DeviceID         string     `json:"device_id,omitempty"`
	Profile          string     `json:"profile,omitempty"`
	CertPEM          string     `json:"certificate_pem,omitempty"`
}

// IssueRequest issues a certificate from a CSR under a CA and profile.
type IssueRequest struct {
	CAID     string `json:"ca_id"`
	CSRPEM   string `json:"csr_pem"`
	Profile  string `json:"profile,omitempty"` // default "device"
	DeviceID string `json:"device_id,omitempty"`
	DMSID    string `json:"dms_id,omitempty"`
}

// ImportCertificateRequest records an existing certificate (bulk import
// from PEM files). The issuer must be a known CA.
type ImportCertificateRequest struct {
	CertificatePEM string `json:"certificate_pem"`
	DeviceID       string `json:"device_id,omitempty"`
	DMSID          string `json:"dms_id,omitempty"`
}

// DMS is a device manufacturing system: an agent on a gateway.
type DMS struct {
	ID               string     `json:"id"`
	Name             string     `json:"name"`
	Status           string     `json:"status"` // pending | active | disabled
	Policy           DMSPolicy  `json:"policy"`
	AuthorizedCAs    []string   `json:"authorized_cas"`
	IdentitySerial   string     `json:"identity_serial,omitempty"`
	IdentityNotAfter *time.Time `json:"identity_not_after,omitempty"`
	CreatedAt        time.Time  `json:"created_at"`
	// Online is true when a heartbeat arrived in the last two minutes.
	Online       bool       `json:"online"`
	LastSeenAt   *time.Time `json:"last_seen_at,omitempty"`
	AgentVersion string     `json:"agent_version,omitempty"`
	QueueDepth   int64      `json:"queue_depth"`
}

// DMSPolicy is the enrollment policy of a DMS. Its agent receives it over
// the sync link. A PATCH replaces it whole; absent fields take their
// defaults.
type DMSPolicy struct {
	Mode               string   `json:"mode"`        // online | queued | local
	DeviceAuth         string   `json:"device_auth"` // client_cert | basic_secret | client_cert_or_secret | webhook
	Profile            string   `json:"profile"`
	ReenrollWindowDays int      `json:"reenroll_window_days"`
	LocalQuota         int      `json:"local_quota"`
	BootstrapCAPEMs    []string `json:"bootstrap_ca_pems,omitempty"`
	// Labels are the EST labels (/.well-known/est/<name>/...), each
	// mapping to one of the DMS's authorized CAs.
	Labels []DMSLabel `json:"labels,omitempty"`
	// EdgeCAValidityDays is the lifetime of the delegated edge CA (local
	// mode): 1 to 3650; 0 or absent: 30.
	EdgeCAValidityDays int `json:"edge_ca_validity_days,omitempty"`
	// EdgeNameConstraints are the names the edge CA may certify: DNS
	// domains ("line1.example"), IP ranges ("10.1.0.0/16"), email
	// domains or mailboxes (with "@": "@example.com") and URI domains
	// ("uri:example.com"). Empty in local mode: the DNS domain "local".
	EdgeNameConstraints []string `json:"edge_name_constraints,omitempty"`
	// WebhookURL is the HTTPS URL the agent asks to authenticate devices;
	// required with device_auth "webhook".
	WebhookURL string `json:"webhook_url,omitempty"`
	// OnlineWaitMs is how long a device waits for the control plane in
	// online mode before its request is queued: 0 to 60000; absent: 5000.
	OnlineWaitMs *int `json:"online_wait_ms,omitempty"`
	// JITRegistration lets unknown devices enroll, registering them to
	// the DMS (just in time); absent: true.
	JITRegistration *bool `json:"jit_registration,omitempty"`
}

// DMSLabel is one EST label of a DMS policy.
type DMSLabel struct {
	// Name is 1 to 64 of A-Z a-z 0-9 . _ -, unique in the policy.
	Name string `json:"name"`
	// CAID is the CA that signs under the label: one of the DMS's
	// authorized CAs.
	CAID string `json:"ca_id"`
	// Profile is the issuance profile; empty: the policy's.
	Profile string `json:"profile,omitempty"`
	// DeviceAuth overrides the policy's device_auth for this label:
	// client_cert, basic_secret or webhook; empty: the policy's.
	DeviceAuth string `json:"device_auth,omitempty"`
}

// CreateDMSRequest creates a DMS.
type CreateDMSRequest struct {
	Name          string     `json:"name"`
	Policy        *DMSPolicy `json:"policy,omitempty"`
	AuthorizedCAs []string   `json:"authorized_cas,omitempty"`
	// TokenTTLHours is the bootstrap token lifetime; default 24.
	TokenTTLHours int `json:"token_ttl_hours,omitempty"`
}

// CreateDMSResponse returns the one-time bootstrap token, shown once.
type CreateDMSResponse struct {
	DMS            DMS       `json:"dms"`
	BootstrapToken string    `json:"bootstrap_token"`
	TokenExpiresAt time.Time `json:"token_expires_at"`
}

// UpdateDMSRequest changes policy and authorized CAs (nil: unchanged).
type UpdateDMSRequest struct {
	Policy        *DMSPolicy `json:"policy,omitempty"`
	AuthorizedCAs *[]string  `json:"authorized_cas,omitempty"`
}

// DMSBootstrapRequest exchanges a one-time token and a CSR for the DMS
// identity certificate. No bearer token: the bootstrap token authenticates.
type DMSBootstrapRequest struct {
	Token  string `json:"token"`
	CSRPEM string `json:"csr_pem"`
}

// DMSBootstrapResponse carries the DMS certificate and the CA chain.
type DMSBootstrapResponse struct {
	DMSID          string `json:"dms_id"`
	CertificatePEM string `json:"certificate_pem"`
	ChainPEM       string `json:"chain_pem"`
}

// Device is a registered device.
type Device struct {
	ID        string            `json:"id"`
	DMSID     string            `json:"dms_id,omitempty"`
	Status    string            `json:"status"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	Slots     []DeviceSlot      `json:"slots,omitempty"`
	Timeline  []Event           `json:"timeline,omitempty"`
}

// DeviceSlot is a device's history of certificates under one CA.
type DeviceSlot struct {
	CAID         string        `json:"ca_id"`
	ActiveSerial string        `json:"active_serial,omitempty"`
	Certificates []Certificate `json:"certificates"`
}

// Event is a device or DMS event.
type Event struct {
	ID     int64          `json:"id"`
	Kind   string         `json:"kind"`
	At     time.Time      `json:"at"`
	Detail map[string]any `json:"detail,omitempty"`
}

// RegisterDeviceRequest pre-registers a device.
type RegisterDeviceRequest struct {
	ID     string            `json:"id"`
	DMSID  string            `json:"dms_id,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// DecommissionResponse reports the certificates revoked.
type DecommissionResponse struct {
	RevokedSerials []string `json:"revoked_serials"`
}

// AuditEntry is one row of the hash-chained audit log.
type AuditEntry struct {
	Seq    int64          `json:"seq"`
	At     time.Time      `json:"at"`
	Actor  string         `json:"actor"`
	Action string         `json:"action"`
	Target string         `json:"target,omitempty"`
	Detail map[string]any `json:"detail,omitempty"`
	Hash   string         `json:"hash"`
}

// AuditVerifyResponse is the result of verifying the whole chain.
type AuditVerifyResponse struct {
	OK      bool  `json:"ok"`
	Checked int64 `json:"checked"`
	// FirstBadSeq is the first row whose hash or link does not match.
	FirstBadSeq int64  `json:"first_bad_seq,omitempty"`
	Problem     string `json:"problem,omitempty"`
}

// Principal is an API identity.
type Principal struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role string `json:"role"` // admin | operator | viewer
}

// CreateTokenRequest creates a principal (if new) and an API token.
type CreateTokenRequest struct {
	Principal   string `json:"principal"`
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
	TTLHours    int    `json:"ttl_hours,omitempty"` // 0: no expiry
}

// CreateTokenResponse returns the token, shown once.
type CreateTokenResponse struct {
	TokenID   string     `json:"token_id"`
	Token     string     `json:"token"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// WhoAmI describes the caller.
type WhoAmI struct {
	Principal Principal `json:"principal"`
	TokenID   string    `json:"token_id,omitempty"`
}

// Subscription is a notification subscription.
type Subscription struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Channel    string     `json:"channel"` // webhook | email | chat
	Target     string     `json:"target"`
	EventKinds []string   `json:"event_kinds,omitempty"`
	CAID       string     `json:"ca_id,omitempty"`
	DMSID      string     `json:"dms_id,omitempty"`
	DeviceID   string     `json:"device_id,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	DisabledAt *time.Time `json:"disabled_at,omitempty"`
}

// CreateSubscriptionRequest creates a subscription. EventKinds: exact
// kinds, "prefix.*" or "*"; empty means every kind.
type CreateSubscriptionRequest struct {
	Name       string   `json:"name"`
	Channel    string   `json:"channel"`
	Target     string   `json:"target"`
	Secret     string   `json:"secret,omitempty"`
	EventKinds []string `json:"event_kinds,omitempty"`
	CAID       string   `json:"ca_id,omitempty"`
	DMSID      string   `json:"dms_id,omitempty"`
	DeviceID   string   `json:"device_id,omitempty"`
}

// CreateSubscriptionResponse returns the webhook secret, shown once.
type CreateSubscriptionResponse struct {
	Subscription Subscription `json:"subscription"`
	Secret       string       `json:"secret,omitempty"`
}

// Delivery is one notification delivery (receipt).
type Delivery struct {
	Key           string     `json:"key"`
	EventID       int64      `json:"event_id"`
	EventKind     string     `json:"event_kind"`
	Status        string     `json:"status"` // pending | delivered | dead
	Attempts      int        `json:"attempts"`
	NextAttemptAt time.Time  `json:"next_attempt_at"`
	LastError     string     `json:"last_error,omitempty"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
}

// Package crl publishes certificate revocation lists (RFC 5280) for every
// CA the control plane holds a key for: a full CRL per CA, refreshed well
// before its nextUpdate, and a delta CRL on top of it that a revocation
// regenerates within the same second, reading only what was revoked since
// the full CRL. Lamassu rebuilds its whole CRL, in pages of 15, on every
// revocation; here a revocation costs an index range scan over the
// entries since the base and one signature.
//
// CRLs live in the crls table, shared by every replica; numbers grow per
// CA across full and delta CRLs. Generation for one CA is serialised by a
// transaction-level advisory lock, so replicas never hand out a number
// twice, and the periodic Refresh runs on one replica at a time under a
// session-level advisory lock.
//
// # What a CRL contains
//
// A full CRL lists every certificate the CA issued (table certificates)
// and every CA certificate it signed (table cas) that is revoked, minus
// those whose certificate expired more than [ExpiredRetention] before
// thisUpdate: RFC 5280 3.3 allows an entry to go once it has appeared on
// one regularly scheduled CRL after the certificate's expiry, and the
// retention is at least one full validity period, so it always has.
//
// Extensions: CRL number, authority key identifier (the CA certificate's
// subject key identifier), and on full CRLs freshestCRL (non-critical)
// naming [DeltaURL]. Delta CRLs carry the critical deltaCRLIndicator with
// the number of their base.
//
// The issuingDistributionPoint extension (critical) names [FullURL] as
// the distribution point on both the full and the delta CRL: RFC 5280
// 6.3.3 (c)(ii) requires a delta's IDP to equal its base's, and OpenSSL
// silently ignores a delta whose IDP differs (a delta naming its own URL
// would never be applied). Verifiers such as OpenSSL use a CRL with an
// IDP distribution point only for certificates whose CRL distribution
// points name the same URL; certificates, CA certificates signed by an
// intermediate included, must therefore carry their issuer's [FullURL].
// Self-signed CAs (roots) get no IDP: nothing names a root's own CRL in a
// CRL distribution point, and "openssl verify -crl_check_all" checks the
// root against its own CRL, which a scoped CRL never covers ("different
// CRL scope").
//
// # Completeness of deltas
//
// A delta lists what was revoked after its base's covers_until, read with
// an index range scan (certificates_revoked), never the whole revoked
// set. covers_until is a watermark, not the newest revocation time read:
// revoked_at is stamped by the revoking replica when its transaction
// starts, so a revocation can commit after a full CRL read the table
// although its revoked_at is older than revocations the CRL did see (a
// slow transaction such as revoking a CA subtree, or a replica's clock).
// When it reads the revoked set, a full CRL therefore takes the database
// time, pulls it back to the start of the oldest client transaction then
// in progress in the database, and subtracts [ClockSkew]. Every
// revocation stamped before that watermark was visible to the read, as
// long as the replicas' clocks are within ClockSkew of the database's. The
// first deltas after a full CRL may repeat the revocations of the few
// seconds before it, which RFC 5280 permits.
//
// A revocation recorded with a revoked_at older than the latest full CRL's
// watermark (for example a time reported by a gateway that revoked while
// offline) reaches the delta only when the next full CRL is issued: call
// GenerateFull after recording such revocations.
package crl

import (
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/keystore"
)

// Defaults applied to zero Service fields, and fixed policy.
const (
	// DefaultValidity is nextUpdate - thisUpdate of full CRLs.
	DefaultValidity = 24 * time.Hour
	// DefaultDeltaValidity is nextUpdate - thisUpdate of delta CRLs.
	DefaultDeltaValidity = time.Hour
	// DefaultMaxDeltaEntries: past this many entries since the base,
	// OnRevoked and Refresh issue a new full CRL instead of a delta.
	DefaultMaxDeltaEntries = 10_000
	// DefaultRefreshInterval is Run's period when given none.
	DefaultRefreshInterval = time.Minute
	// ClockSkew is how far the clocks of the replicas that stamp
	// revocations may be behind the database's (see the package
	// documentation).
	ClockSkew = 10 * time.Second
	// ExpiredRetention is the least time an entry stays after its
	// certificate expired; it is raised to the full CRL validity when that
	// is longer.
	ExpiredRetention = 7 * 24 * time.Hour
	// PathPrefix is where Handler serves CRLs.
	PathPrefix = "/crl/"
)

// How many CRLs of each kind are kept per CA; older rows are deleted in
// the transaction that adds a new one.
const (
	keepFull  = 2
	keepDelta = 2
)

// signerTTL bounds how long a CA key handle is reused before it is
// loaded from the key store again (file keys cost a PBKDF2 per load).
const signerTTL = 10 * time.Minute

// ErrNotFound is returned when there is no CRL (Latest) or no such CA.
// Check with errors.Is.
var ErrNotFound = errors.New("crl: not found")

// NoKeyError is returned for a CA without a key in the key store (one
// imported without its key, or an edge CA whose key lives on a gateway):
// the control plane cannot sign its CRLs. Check with errors.As.
type NoKeyError struct {
	CAID uuid.UUID
	Name string
}

func (e *NoKeyError) Error() string {
	return fmt.Sprintf("crl: CA %q (%s) has no key in the key store and cannot sign CRLs", e.Name, e.CAID)
}

// CRL is a stored, signed CRL.
type CRL struct {
	CAID   uuid.UUID
	Number int64
	Delta  bool
	// BaseNumber is the number of the full CRL a delta applies to; 0 for
	// a full CRL.
	BaseNumber int64
	DER        []byte
	ThisUpdate time.Time
	NextUpdate time.Time
	// CoversUntil: for a full CRL, the watermark of its read: every
	// revocation stamped before it is on the CRL, and its deltas list
	// what was revoked after it. For a delta, the later of its watermark
	// and the newest revocation it lists; Refresh issues a new delta when
	// something was revoked after it.
	CoversUntil time.Time
}

// Service generates, stores and serves CRLs. Set the exported fields
// before first use and do not change them afterwards; its methods are
// safe for concurrent use, also across replicas sharing the database.
type Service struct {
	Reg  *registry.Registry
	Keys keystore.Store
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// BaseURL is the public URL prefix the CRLs are served under, e.g.
	// http://cp.example:8443 (no trailing slash needed). Required. Use
	// plain http: relying parties fetch CRLs without TLS so as not to
	// depend on the revocation status of the server's own certificate.
	BaseURL string
	// Validity is the full CRL's nextUpdate distance; default 24h.
	Validity time.Duration
	// DeltaValidity is the delta CRL's nextUpdate distance; default 1h.
	DeltaValidity time.Duration
	// MaxDeltaEntries: see DefaultMaxDeltaEntries.
	MaxDeltaEntries int
	Log             *slog.Logger

	mu      sync.Mutex
	signers map[string]cachedSigner // by key_ref
}

type cachedSigner struct {
	signer crypto.Signer
	loaded time.Time
}

// FullURL is where the full CRL of a CA is served: the URL issued
// certificates carry as their CRL distribution point and that full and
// delta CRLs name in their issuingDistributionPoint. Keep it stable.
func FullURL(base string, caID uuid.UUID) string {
	return strings.TrimRight(base, "/") + PathPrefix + caID.String() + ".crl"
}

// DeltaURL is where the delta CRL of a CA is served, named by the full
// CRL's freshestCRL extension.
func DeltaURL(base string, caID uuid.UUID) string {
	return strings.TrimRight(base, "/") + PathPrefix + caID.String() + "-delta.crl"
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Service) validity() time.Duration {
	if s.Validity > 0 {
		return s.Validity
	}
	return DefaultValidity
}

func (s *Service) deltaValidity() time.Duration {
	if s.DeltaValidity > 0 {
		return s.DeltaValidity
	}
	return DefaultDeltaValidity
}

func (s *Service) maxDeltaEntries() int {
	if s.MaxDeltaEntries > 0 {
		return s.MaxDeltaEntries
	}
	return DefaultMaxDeltaEntries
}

// retention is how long after expiry entries stay on CRLs.
func (s *Service) retention() time.Duration {
	return max(ExpiredRetention, s.validity())
}

// checkBaseURL makes sure the URLs put into CRLs are absolute http(s)
// URLs in ASCII (the IA5String of a GeneralName).
func checkBaseURL(base string) error {
	if base == "" {
		return errors.New("crl: BaseURL is not set")
	}
	for i := 0; i < len(base); i++ {
		if base[i] < 0x21 || base[i] > 0x7e {
			return fmt.Errorf("crl: BaseURL %q must be printable ASCII without spaces", base)
		}
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("crl: BaseURL %q must be an absolute http or https URL without query", base)
	}
	return nil
}

// SetBaseURL sets the URL prefix CRLs are published under (it must equal
// the prefix of the CRL distribution points in issued certificates).
func (s *Service) SetBaseURL(u string) { s.BaseURL = u }

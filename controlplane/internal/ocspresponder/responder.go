// Package ocspresponder answers OCSP (RFC 6960) for every CA the control
// plane holds a key for, with RFC 5019 behaviour for HTTP caching.
//
// Responses are signed by a delegated responder per CA (id-kp-OCSPSigning,
// id-pkix-ocsp-nocheck), issued and renewed automatically, so CA keys sign
// only responder certificates. Responses are pre-signed and shared by
// every replica through the ocsp_responses table, kept for a short while
// in memory, refreshed before nextUpdate, and dropped in the revoking
// transaction itself, so a revocation shows at once. A request with a
// nonce gets a fresh response that echoes it. Unknown serials get
// "unknown", malformed requests malformedRequest, CAs we do not hold
// unauthorized: never an HTTP 500.
package ocspresponder

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ocsp"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/keystore"
)

// Defaults.
const (
	DefaultValidity          = 24 * time.Hour
	DefaultCacheTTL          = 2 * time.Second
	DefaultResponderValidity = 7 * 24 * time.Hour
)

// Responder answers OCSP requests.
type Responder struct {
	Reg  *registry.Registry
	Keys keystore.Store
	Now  func() time.Time
	// Validity is nextUpdate - thisUpdate of pre-signed responses.
	Validity time.Duration
	// CacheTTL bounds how long a replica serves a response from memory
	// before looking at the shared table again; it bounds how stale a
	// revocation can be on another replica.
	CacheTTL time.Duration
	// ResponderValidity is the lifetime of delegated responder certificates.
	ResponderValidity time.Duration
	Log               *slog.Logger

	mu         sync.Mutex
	cas        map[string]*caEntry // by issuer key hash (SHA-1 and SHA-256), hex
	casByID    map[uuid.UUID]*caEntry
	casLoaded  time.Time
	responders map[uuid.UUID]*responderKey
	cache      map[cacheKey]*cached
}

type caEntry struct {
	id       uuid.UUID
	cert     *x509.Certificate
	nameHash map[crypto.Hash][]byte
}

type responderKey struct {
	cert   *x509.Certificate
	signer crypto.Signer
}

type cacheKey struct {
	ca     uuid.UUID
	serial string
	hash   crypto.Hash
}

type cached struct {
	der                    []byte
	thisUpdate, nextUpdate time.Time
	loaded                 time.Time
}

func (r *Responder) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Responder) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (r *Responder) validity() time.Duration {
	if r.Validity > 0 {
		return r.Validity
	}
	return DefaultValidity
}

func (r *Responder) cacheTTL() time.Duration {
	if r.CacheTTL > 0 {
		return r.CacheTTL
	}
	return DefaultCacheTTL
}

// Answer is a response ready to send.
type Answer struct {
	DER        []byte
	ThisUpdate time.Time
	NextUpdate time.Time
	// Cacheable is false for error responses and nonce responses.
	Cacheable bool
}

// Respond answers one DER OCSP request.
func (r *Responder) Respond(ctx context.Context, der []byte) Answer {
	req, err := parseRequest(der)
	if err != nil {
		return Answer{DER: ocsp.MalformedRequestErrorResponse}
	}
	ca, err := r.findCA(ctx, req)
	if err != nil {
		r.log().Error("ocsp: looking up the issuer", "err", err)
		return Answer{DER: ocsp.InternalErrorErrorResponse}
	}
	if ca == nil {
		return Answer{DER: ocsp.UnauthorizedErrorResponse}
	}
	serial := strings.ToLower(req.SerialNumber.Text(16))
	if req.nonce == nil {
		if a, ok := r.cachedAnswer(ctx, ca.id, serial, req.HashAlgorithm); ok {
			return a
		}
	}
	a, err := r.sign(ctx, ca, req.SerialNumber, serial, req.HashAlgorithm, req.nonce)
	if errors.Is(err, errNeedsDelegation) {
		// An edge CA whose responder certificate expired and was not yet
		// renewed by its gateway.
		r.log().Warn("ocsp: edge CA responder certificate missing or expired; waiting for the gateway", "ca_id", ca.id)
		return Answer{DER: ocsp.TryLaterErrorResponse}
	}
	if err != nil {
		r.log().Error("ocsp: signing", "ca_id", ca.id, "serial", serial, "err", err)
		return Answer{DER: ocsp.InternalErrorErrorResponse}
	}
	return a
}

// findCA matches the request's issuer name and key hashes against the CAs
// we hold keys for, reloading the list when nothing matches (a new CA).
func (r *Responder) findCA(ctx context.Context, req *request) (*caEntry, error) {
	for attempt := 0; attempt < 2; attempt++ {
		r.mu.Lock()
		fresh := time.Since(r.casLoaded) < 30*time.Second
		e := r.cas[fmt.Sprintf("%d:%x", req.HashAlgorithm, req.IssuerKeyHash)]
		r.mu.Unlock()
		if e != nil {
			if bytes.Equal(e.nameHash[req.HashAlgorithm], req.IssuerNameHash) {
				return e, nil
			}
			return nil, nil
		}
		if fresh && attempt > 0 {
			break
		}
		if err := r.loadCAs(ctx); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func (r *Responder) loadCAs(ctx context.Context) error {
	// CAs we hold keys for, and CAs (edge CAs) that delegated a responder
	// whose key we hold.
	rows, err := r.Reg.Pool().Query(ctx, `SELECT id, cert_der FROM cas WHERE key_ref IS NOT NULL OR id IN (SELECT ca_id FROM ocsp_responders)`)
	if err != nil {
		return err
	}
	type row struct {
		ID  uuid.UUID
		DER []byte
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return err
	}
	m := map[string]*caEntry{}
	byID := map[uuid.UUID]*caEntry{}
	for _, c := range list {
		cert, err := x509.ParseCertificate(c.DER)
		if err != nil {
			continue
		}
		var spki struct {
			Algorithm pkix.AlgorithmIdentifier
			PublicKey asn1.BitString
		}
		if _, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil {
			continue
		}
		e := &caEntry{id: c.ID, cert: cert, nameHash: map[crypto.Hash][]byte{}}
		byID[c.ID] = e
		for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
			kh := h.New()
			kh.Write(spki.PublicKey.RightAlign())
			nh := h.New()
			nh.Write(cert.RawSubject)
			e.nameHash[h] = nh.Sum(nil)
			m[fmt.Sprintf("%d:%x", h, kh.Sum(nil))] = e
		}
	}
	r.mu.Lock()
	r.cas, r.casByID, r.casLoaded = m, byID, time.Now()
	r.mu.Unlock()
	return nil
}

// cachedAnswer returns a pre-signed response from memory or the shared
// table when it is still fresh.
func (r *Responder) cachedAnswer(ctx context.Context, ca uuid.UUID, serial string, h crypto.Hash) (Answer, bool) {
	now := r.now()
	// Serve only responses with at least a quarter of their validity
	// left; the refresher replaces older ones.
	margin := r.validity() / 4
	k := cacheKey{ca, serial, h}
	r.mu.Lock()
	c := r.cache[k]
	r.mu.Unlock()
	if c != nil && time.Since(c.loaded) < r.cacheTTL() && c.nextUpdate.Sub(now) > margin {
		return Answer{DER: c.der, ThisUpdate: c.thisUpdate, NextUpdate: c.nextUpdate, Cacheable: true}, true
	}
	if h != crypto.SHA1 {
		// The shared table holds SHA-1 CertIDs (what clients send by
		// default); others are signed and kept in memory only.
		return Answer{}, false
	}
	var der []byte
	var tu, nu time.Time
	err := r.Reg.Pool().QueryRow(ctx, `SELECT der, this_update, next_update FROM ocsp_responses WHERE issuer_id = $1 AND serial = $2`, ca, serial).Scan(&der, &tu, &nu)
	if err != nil || nu.Sub(now) <= margin {
		return Answer{}, false
	}
	r.remember(k, der, tu, nu)
	return Answer{DER: der, ThisUpdate: tu, NextUpdate: nu, Cacheable: true}, true
}

func (r *Responder) remember(k cacheKey, der []byte, tu, nu time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil || len(r.cache) > 100_000 {
		r.cache = map[cacheKey]*cached{}
	}
	r.cache[k] = &cached{der: der, thisUpdate: tu, nextUpdate: nu, loaded: time.Now()}
}

// Forget drops cached responses of a CA's serials on this replica (the
// revoking transaction already deleted the shared rows).
func (r *Responder) Forget(ca uuid.UUID, serials ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range serials {
		for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
			delete(r.cache, cacheKey{ca, s, h})
		}
	}
}

// status looks the certificate up.
func (r *Responder) status(ctx context.Context, ca uuid.UUID, serial string) (int, time.Time, int, error) {
	var st string
	var revokedAt *time.Time
	var reason *int
	var issuerID uuid.UUID
	// End-entity certificates, then CA certificates (a sub-CA's status
	// is asked of its parent).
	err := r.Reg.Pool().QueryRow(ctx, `SELECT status, revoked_at, revocation_reason, issuer_id FROM certificates WHERE serial = $1
		UNION ALL
		SELECT status, revoked_at, revocation_reason, parent_id FROM cas WHERE serial = $1 AND parent_id IS NOT NULL
		LIMIT 1`, serial).Scan(&st, &revokedAt, &reason, &issuerID)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && issuerID != ca) {
		return ocsp.Unknown, time.Time{}, 0, nil
	}
	if err != nil {
		return 0, time.Time{}, 0, err
	}
	if st == "revoked" && revokedAt != nil {
		rr := ocsp.Unspecified
		if reason != nil {
			rr = *reason
		}
		return ocsp.Revoked, *revokedAt, rr, nil
	}
	return ocsp.Good, time.Time{}, 0, nil
}

func (r *Responder) sign(ctx context.Context, ca *caEntry, serialNum *big.Int, serial string, h crypto.Hash, nonce *pkix.Extension) (Answer, error) {
	st, revokedAt, reason, err := r.status(ctx, ca.id, serial)
	if err != nil {
		return Answer{}, err
	}
	rk, err := r.responder(ctx, ca)
	if err != nil {
		return Answer{}, err
	}
	now := r.now().UTC().Truncate(time.Second)
	tmpl := ocsp.Response{
		Status:       st,
		SerialNumber: serialNum,
		ThisUpdate:   now,
		NextUpdate:   now.Add(r.validity()),
		Certificate:  rk.cert,
		IssuerHash:   h,
	}
	if tmpl.NextUpdate.After(rk.cert.NotAfter) {
		tmpl.NextUpdate = rk.cert.NotAfter
	}
	if st == ocsp.Revoked {
		tmpl.RevokedAt = revokedAt.UTC().Truncate(time.Second)
		tmpl.RevocationReason = reason
	}
	der, err := ocsp.CreateResponse(ca.cert, rk.cert, tmpl, rk.signer)
	if err != nil {
		return Answer{}, err
	}
	if nonce != nil {
		if der, err = withNonce(der, *nonce, rk.signer); err != nil {
			return Answer{}, err
		}
	}
	a := Answer{DER: der, ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate, Cacheable: nonce == nil}
	if nonce == nil && h == crypto.SHA1 {
		if _, err := r.Reg.Pool().Exec(ctx, `INSERT INTO ocsp_responses (issuer_id, serial, der, this_update, next_update) VALUES ($1,$2,$3,$4,$5)
			ON CONFLICT (issuer_id, serial) DO UPDATE SET der = EXCLUDED.der, this_update = EXCLUDED.this_update, next_update = EXCLUDED.next_update`,
			ca.id, serial, der, tmpl.ThisUpdate, tmpl.NextUpdate); err != nil {
			r.log().Warn("ocsp: storing a pre-signed response", "err", err)
		}
	}
	if nonce == nil {
		r.remember(cacheKey{ca.id, serial, h}, der, tmpl.ThisUpdate, tmpl.NextUpdate)
	}
	return a, nil
}

// errNeedsDelegation: the CA's key is elsewhere (an edge CA) and its
// delegated responder certificate is missing or expiring.
var errNeedsDelegation = errors.New("ocsp: the CA's responder certificate must be signed by the CA's holder")

// responderLock namespaces the advisory locks of this package ("OCSPRESP").
const responderLock int64 = 0x4f43535052455350

// lockFor is the advisory lock key of one CA's responder issuance.
func lockFor(ca uuid.UUID) int64 {
	h := fnv.New64a()
	h.Write([]byte("outpost-ocsp-responder"))
	h.Write(ca[:])
	return int64(h.Sum64())
}

// responder returns the CA's delegated responder, issuing or renewing it
// when missing or within a third of its lifetime of expiry.
func (r *Responder) responder(ctx context.Context, ca *caEntry) (*responderKey, error) {
	now := r.now()
	life := r.ResponderValidity
	if life <= 0 {
		life = DefaultResponderValidity
	}
	r.mu.Lock()
	if r.responders == nil {
		r.responders = map[uuid.UUID]*responderKey{}
	}
	rk := r.responders[ca.id]
	r.mu.Unlock()
	if rk != nil && rk.cert.NotAfter.Sub(now) > life/3 {
		return rk, nil
	}
	err := r.Reg.Tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockFor(ca.id)); err != nil {
			return err
		}
		var keyRef string
		var der []byte
		var current *responderKey // a still-valid responder, even if due for renewal
		err := tx.QueryRow(ctx, `SELECT key_ref, cert_der FROM ocsp_responders WHERE ca_id = $1`, ca.id).Scan(&keyRef, &der)
		if err == nil {
			cert, perr := x509.ParseCertificate(der)
			if perr == nil && now.Before(cert.NotAfter) {
				if signer, lerr := r.Keys.Load(ctx, keyRef); lerr == nil {
					current = &responderKey{cert: cert, signer: signer}
					if cert.NotAfter.Sub(now) > life/3 {
						rk = current
						return nil
					}
				}
			}
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// Issue a new responder with a fresh key.
		var caKeyRef *string
		if err := tx.QueryRow(ctx, `SELECT key_ref FROM cas WHERE id = $1`, ca.id).Scan(&caKeyRef); err != nil || caKeyRef == nil {
			if current != nil {
				// An edge CA: keep answering with the current responder
				// until its gateway signs the next one.
				r.log().Warn("ocsp: edge CA responder certificate due for renewal", "ca_id", ca.id, "not_after", current.cert.NotAfter)
				rk = current
				return nil
			}
			return errNeedsDelegation
		}
		caKey, err := r.Keys.Load(ctx, *caKeyRef)
		if err != nil {
			return err
		}
		alg, err := keystore.AlgorithmOf(caKey.Public())
		if err != nil || alg.RSABits() != 0 {
			alg = keystore.ECDSAP256
		}
		name := fmt.Sprintf("ocsp-%s-%d", ca.id, now.Unix())
		key, err := r.Keys.Generate(ctx, name, alg)
		if err != nil {
			return err
		}
		cert, err := issuer.CreateOCSPResponder(ca.cert, caKey, key.Public(), issuer.OCSPResponderOptions{
			Subject: pkix.Name{CommonName: "OCSP responder for " + ca.cert.Subject.CommonName}, Now: now, Validity: life,
		})
		if err != nil {
			_ = r.Keys.Delete(ctx, name)
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO ocsp_responders (ca_id, key_ref, cert_der, not_after) VALUES ($1,$2,$3,$4)
			ON CONFLICT (ca_id) DO UPDATE SET key_ref = EXCLUDED.key_ref, cert_der = EXCLUDED.cert_der, not_after = EXCLUDED.not_after, created_at = now()`,
			ca.id, name, cert.Raw, cert.NotAfter); err != nil {
			return err
		}
		rk = &responderKey{cert: cert, signer: key}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ocsp responder for ca %s: %w", ca.id, err)
	}
	r.mu.Lock()
	r.responders[ca.id] = rk
	r.mu.Unlock()
	return rk, nil
}

// Refresh re-signs stored responses that are within a third of their
// validity of nextUpdate (and drops those of certificates past expiry),
// in batches. Only one replica runs it at a time.
func (r *Responder) Refresh(ctx context.Context) (int, error) {
	conn, err := r.Reg.Pool().Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, responderLock+1).Scan(&got); err != nil || !got {
		return 0, err
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, responderLock+1)
	due := r.now().Add(r.validity() / 3)
	n := 0
	for {
		rows, err := conn.Query(ctx, `SELECT issuer_id, serial FROM ocsp_responses WHERE next_update < $1 ORDER BY next_update LIMIT 500`, due)
		if err != nil {
			return n, err
		}
		type row struct {
			CA     uuid.UUID
			Serial string
		}
		batch, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		if err != nil || len(batch) == 0 {
			return n, err
		}
		for _, b := range batch {
			r.mu.Lock()
			ca := r.casByID[b.CA]
			r.mu.Unlock()
			if ca == nil {
				if err := r.loadCAs(ctx); err != nil {
					return n, err
				}
				_, _ = conn.Exec(ctx, `DELETE FROM ocsp_responses WHERE issuer_id = $1 AND serial = $2`, b.CA, b.Serial)
				continue
			}
			sn, ok := new(big.Int).SetString(b.Serial, 16)
			if !ok {
				_, _ = conn.Exec(ctx, `DELETE FROM ocsp_responses WHERE issuer_id = $1 AND serial = $2`, b.CA, b.Serial)
				continue
			}
			if _, err := r.sign(ctx, ca, sn, b.Serial, crypto.SHA1, nil); err != nil {
				return n, err
			}
			n++
		}
	}
}

// Run refreshes pre-signed responses every interval until ctx ends.
func (r *Responder) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := r.Refresh(ctx); err != nil && ctx.Err() == nil {
				r.log().Error("ocsp: refreshing responses", "err", err)
			} else if n > 0 {
				r.log().Info("ocsp: refreshed responses", "count", n)
			}
		}
	}
}

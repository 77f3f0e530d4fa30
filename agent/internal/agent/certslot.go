package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/internal/fsutil"
	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/proto/syncpb"
)

// A certSlot is a certificate the control plane issues for a key the
// agent makes in its key store, requested and renewed over the sync link:
// the edge CA (local mode) and the EST server certificate. The flow is the
// identity renewal's (renewal.go): a fresh key, a pending request kept in
// the store and queued as a record with a stable id, the answer installed
// only if it is for the pending key, certificate and key name written in
// one atomic file, the old key destroyed.
type certSlot struct {
	a *Agent
	// name prefixes key names and record ids ("edge-ca", "est-server").
	name string
	// file holds the certificate (with the key name header) then its chain.
	file string
	// kvKey keeps the pending request in the store.
	kvKey string

	mu  sync.Mutex
	cur atomic.Pointer[slotCert]
}

// slotCert is an installed certificate with its key.
type slotCert struct {
	Cert    *x509.Certificate
	Chain   []*x509.Certificate // issuer first
	Key     crypto.Signer
	KeyName string
	// Headers are the extra PEM headers of the certificate (the edge CA's
	// control plane id).
	Headers map[string]string
}

// derChain is the certificate then its chain, DER.
func (c *slotCert) derChain() [][]byte {
	out := [][]byte{c.Cert.Raw}
	for _, ca := range c.Chain {
		out = append(out, ca.Raw)
	}
	return out
}

type slotPending struct {
	KeyName  string    `json:"key_name"`
	RecordID string    `json:"record_id"`
	CSR      []byte    `json:"csr"`
	Started  time.Time `json:"started"`
	// For is what the request was made for (server names), to notice a
	// change.
	For string `json:"for,omitempty"`
}

func (s *certSlot) path() string { return filepath.Join(s.a.cfg.DataDir, s.file) }

// current is the installed certificate, or nil.
func (s *certSlot) current() *slotCert { return s.cur.Load() }

// load reads the installed certificate, if any.
func (s *certSlot) load(ctx context.Context) error {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var certs []*x509.Certificate
	keyName := ""
	var headers map[string]string
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return fmt.Errorf("%s: %w", s.file, err)
		}
		if len(certs) == 0 {
			keyName = blk.Headers[keyNameHeader]
			headers = blk.Headers
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 || keyName == "" {
		return fmt.Errorf("%s: no certificate with a key name", s.file)
	}
	key, err := s.a.ks.Load(ctx, keyName)
	if err != nil {
		return fmt.Errorf("%s: loading key %q: %w", s.file, keyName, err)
	}
	if !samePublicKey(certs[0].PublicKey, key.Public()) {
		return fmt.Errorf("%s: key %q does not match the certificate", s.file, keyName)
	}
	s.cur.Store(&slotCert{Cert: certs[0], Chain: certs[1:], Key: key, KeyName: keyName, Headers: headers})
	return nil
}

func (s *certSlot) pending() (*slotPending, error) {
	b, err := s.a.store.GetKV(s.kvKey)
	if errors.Is(err, store.ErrNotFound) || (err == nil && len(b) == 0) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var p slotPending
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("the pending %s request in the store is unreadable: %w", s.name, err)
	}
	return &p, nil
}

// request makes a fresh key and queues a request for it, unless one for
// the same purpose is pending (then it is queued again: a no-op while it
// waits in the outbox). csr builds the request for the key; record wraps
// the CSR in a sync record with the given id.
func (s *certSlot) request(ctx context.Context, purpose string, csr func(crypto.Signer) ([]byte, error), record func(csrDER []byte) *syncpb.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.pending()
	if err != nil {
		return err
	}
	if p == nil || p.For != purpose {
		name := s.name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		key, err := s.a.ks.Generate(ctx, name, keystore.ECDSAP256)
		if err != nil {
			return fmt.Errorf("making the %s key: %w", s.name, err)
		}
		der, err := csr(key)
		if err != nil {
			_ = s.a.ks.Delete(ctx, name)
			return err
		}
		np := &slotPending{KeyName: name, RecordID: s.name + "-request-" + name, CSR: der, Started: time.Now(), For: purpose}
		b, _ := json.Marshal(np)
		if err := s.a.store.SetKV(s.kvKey, b); err != nil {
			_ = s.a.ks.Delete(ctx, name)
			return err
		}
		if p != nil && (s.current() == nil || p.KeyName != s.current().KeyName) {
			_ = s.a.ks.Delete(ctx, p.KeyName) // an abandoned request
		}
		s.a.log.Info("requesting a certificate from the control plane", "slot", s.name, "key", name)
		p = np
	}
	rec := record(p.CSR)
	rec.RecordId = p.RecordID
	b, err := proto.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.a.store.Enqueue(ctx, store.OutboxRecord{ID: p.RecordID, Payload: b}); err != nil {
		return err
	}
	if s.a.sync != nil {
		s.a.sync.Kick()
	}
	return nil
}

// install installs a certificate from the control plane if it is for the
// pending key; it reports whether it did.
func (s *certSlot) install(ctx context.Context, certDER []byte, chainDERs [][]byte, headers map[string]string, verify func(cert *x509.Certificate, chain []*x509.Certificate) error) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return false, fmt.Errorf("%s update: not a certificate: %w", s.name, err)
	}
	if cur := s.current(); cur != nil && cur.Cert.Equal(cert) {
		return false, nil // a redelivery
	}
	p, err := s.pending()
	if err != nil {
		return false, err
	}
	if p == nil {
		return false, fmt.Errorf("%s update without a pending request: ignored", s.name)
	}
	key, err := s.a.ks.Load(ctx, p.KeyName)
	if err != nil {
		return false, fmt.Errorf("%s update: the pending key %q: %w", s.name, p.KeyName, err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return false, fmt.Errorf("%s update: the certificate is not for the pending key: ignored", s.name)
	}
	var chain []*x509.Certificate
	var out []byte
	h := map[string]string{keyNameHeader: p.KeyName}
	for k, v := range headers {
		h[k] = v
	}
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: h, Bytes: cert.Raw})...)
	for _, der := range chainDERs {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return false, fmt.Errorf("%s update: chain: %w", s.name, err)
		}
		chain = append(chain, c)
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	if err := verify(cert, chain); err != nil {
		return false, fmt.Errorf("%s update: %w", s.name, err)
	}
	if err := fsutil.WriteFile(s.path(), out, 0o600, true); err != nil {
		return false, err
	}
	old := s.current()
	s.cur.Store(&slotCert{Cert: cert, Chain: chain, Key: key, KeyName: p.KeyName, Headers: h})
	if err := s.a.store.SetKV(s.kvKey, nil); err != nil {
		return true, err
	}
	if old != nil && old.KeyName != p.KeyName {
		// Nothing needs the old key any more: what the old edge CA issued
		// verifies with its certificate, and open TLS connections are
		// past their handshake.
		if err := s.a.ks.Delete(ctx, old.KeyName); err != nil && !errors.Is(err, keystore.ErrNotFound) {
			s.a.log.Warn("destroying a replaced key", "slot", s.name, "key", old.KeyName, "err", err)
		}
	}
	s.a.log.Info("installed a certificate from the control plane", "slot", s.name, "serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter)
	return true, nil
}

// due reports whether the slot needs a (new) certificate.
func (s *certSlot) due(now time.Time) bool {
	c := s.current()
	return c == nil || renewDue(c.Cert, now, 0)
}

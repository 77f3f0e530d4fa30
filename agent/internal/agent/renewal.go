package agent

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/internal/fsutil"
	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// Identity renewal over the sync link, with no operator action:
//
//  1. when the certificate is due (renewDue), the agent makes a fresh key
//     in its key store, remembers it in the store (kvRenewal) and queues
//     an IdentityRenewal record with the CSR, record id
//     "identity-renewal-<current serial>" (so a restart or a re-queue
//     never asks twice);
//  2. the control plane issues the certificate and sends it back in the
//     same down message as the record's ack (and again if the record is
//     redelivered);
//  3. the agent checks it is for the pending key, writes chain.pem and
//     identity.pem (certificate and key name in one atomic write), uses
//     it for its next connections, and queues the EventIdentityInstalled
//     event; the control plane then revokes the old certificate
//     (superseded) and drops the connection made with it.
//
// A crash anywhere resumes: the pending key and record survive in the
// store; a written identity whose event was not queued yet is finished at
// the next start (resumeRenewal).

// kvRenewal is the store key of the pending renewal.
const kvRenewal = "identity_renewal"

// renewalCheckEvery is how often the agent looks at its identity's expiry.
const renewalCheckEvery = 10 * time.Minute

type pendingRenewal struct {
	KeyName   string    `json:"key_name"`
	RecordID  string    `json:"record_id"`
	ForSerial string    `json:"for_serial"`
	CSR       []byte    `json:"csr"`
	Started   time.Time `json:"started"`
}

// renewDue reports whether cert should be renewed at now: less than
// renewBefore left, or less than a third of its lifetime when renewBefore
// is 0.
func renewDue(cert *x509.Certificate, now time.Time, renewBefore time.Duration) bool {
	if renewBefore <= 0 {
		renewBefore = cert.NotAfter.Sub(cert.NotBefore) / 3
	}
	return now.After(cert.NotAfter.Add(-renewBefore))
}

func (a *Agent) pending() (*pendingRenewal, error) {
	b, err := a.store.GetKV(kvRenewal)
	if errors.Is(err, store.ErrNotFound) || (err == nil && len(b) == 0) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var p pendingRenewal
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("the pending identity renewal in the store is unreadable: %w", err)
	}
	return &p, nil
}

// RenewIdentity starts an identity renewal now (or re-queues the pending
// one) and says what it did.
func (a *Agent) RenewIdentity(ctx context.Context) (string, error) {
	a.renewMu.Lock()
	defer a.renewMu.Unlock()
	id := a.identity()
	p, err := a.pending()
	if err != nil {
		return "", err
	}
	if p != nil && p.ForSerial == id.Serial() {
		// Queue it again: a no-op while the record waits in the outbox,
		// a retry if the control plane refused it.
		if err := a.enqueueRenewal(ctx, p); err != nil {
			return "", err
		}
		return fmt.Sprintf("renewal of identity %s pending since %s (record %s)", p.ForSerial, p.Started.UTC().Format(time.RFC3339), p.RecordID), nil
	}
	name := IdentityKeyName + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	key, err := a.ks.Generate(ctx, name, keystore.ECDSAP256)
	if err != nil {
		return "", fmt.Errorf("making the new identity key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id.DMSID}}, key)
	if err != nil {
		_ = a.ks.Delete(ctx, name)
		return "", err
	}
	np := &pendingRenewal{KeyName: name, RecordID: "identity-renewal-" + id.Serial(), ForSerial: id.Serial(), CSR: csr, Started: time.Now()}
	b, _ := json.Marshal(np)
	if err := a.store.SetKV(kvRenewal, b); err != nil {
		_ = a.ks.Delete(ctx, name)
		return "", err
	}
	if p != nil && p.KeyName != id.KeyName && p.KeyName != name {
		_ = a.ks.Delete(ctx, p.KeyName) // a stale attempt for an older identity
	}
	if err := a.enqueueRenewal(ctx, np); err != nil {
		return "", err
	}
	a.log.Info("identity renewal requested", "serial", id.Serial(), "not_after", id.Cert.NotAfter, "new_key", name)
	return fmt.Sprintf("renewal of identity %s requested (record %s)", np.ForSerial, np.RecordID), nil
}

func (a *Agent) enqueueRenewal(ctx context.Context, p *pendingRenewal) error {
	b, err := proto.Marshal(&syncpb.Record{RecordId: p.RecordID, Payload: &syncpb.Record_IdentityRenewal{IdentityRenewal: &syncpb.IdentityRenewal{CsrDer: p.CSR}}})
	if err != nil {
		return err
	}
	if err := a.store.Enqueue(ctx, store.OutboxRecord{ID: p.RecordID, Payload: b}); err != nil {
		return err
	}
	if a.sync != nil {
		a.sync.Kick()
	}
	return nil
}

// installIdentity installs a renewed identity certificate from the
// control plane, if it is for the pending key.
func (a *Agent) installIdentity(ctx context.Context, ic *syncpb.IdentityCertificate) error {
	a.renewMu.Lock()
	defer a.renewMu.Unlock()
	cert, err := x509.ParseCertificate(ic.GetCertificateDer())
	if err != nil {
		return fmt.Errorf("identity update: not a certificate: %w", err)
	}
	cur := a.identity()
	if cert.Equal(cur.Cert) {
		return nil // a redelivery of what is installed
	}
	p, err := a.pending()
	if err != nil {
		return err
	}
	if p == nil {
		return errors.New("identity update without a pending renewal: ignored")
	}
	key, err := a.ks.Load(ctx, p.KeyName)
	if err != nil {
		return fmt.Errorf("identity update: the pending key %q: %w", p.KeyName, err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return errors.New("identity update: the certificate is not for the pending key: ignored")
	}
	if cert.Subject.CommonName != cur.DMSID {
		return fmt.Errorf("identity update: the certificate names %q, not this DMS", cert.Subject.CommonName)
	}
	var chain []*x509.Certificate
	var chainPEM []byte
	inter, roots := x509.NewCertPool(), x509.NewCertPool()
	for _, der := range ic.GetChainDers() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("identity update: chain: %w", err)
		}
		chain = append(chain, c)
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		inter.AddCert(c)
	}
	for _, c := range cur.Chain {
		roots.AddCert(c) // the anchors this agent already trusts
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("identity update: the certificate does not chain to the current anchors: %w", err)
	}
	if err := fsutil.WriteFile(filepath.Join(a.cfg.DataDir, chainFile), chainPEM, 0o600, true); err != nil {
		return err
	}
	if err := fsutil.WriteFile(filepath.Join(a.cfg.DataDir, identityFile), identityPEM(cert.Raw, p.KeyName), 0o600, true); err != nil {
		return err
	}
	next := &Identity{DMSID: cur.DMSID, Cert: cert, Chain: chain, Key: key, KeyName: p.KeyName}
	a.id.Store(next)
	a.log.Info("identity renewed", "old_serial", cur.Serial(), "serial", next.Serial(), "not_after", cert.NotAfter)
	return a.finishRenewal(ctx, next, cur.KeyName)
}

// finishRenewal queues the installed event, forgets the pending renewal
// and destroys the old key.
func (a *Agent) finishRenewal(ctx context.Context, id *Identity, oldKey string) error {
	detail, _ := json.Marshal(map[string]string{"serial": id.Serial()})
	recID := "identity-installed-" + id.Serial()
	b, err := proto.Marshal(&syncpb.Record{RecordId: recID, Payload: &syncpb.Record_Event{Event: &syncpb.Event{Kind: syncproto.EventIdentityInstalled, DetailJson: string(detail), AtUnixMs: time.Now().UnixMilli()}}})
	if err != nil {
		return err
	}
	if err := a.store.Enqueue(ctx, store.OutboxRecord{ID: recID, Payload: b}); err != nil {
		return err
	}
	if err := a.store.SetKV(kvRenewal, nil); err != nil {
		return err
	}
	_ = a.store.SetKVTime(store.KeyIdentityExpiry, id.Cert.NotAfter)
	if oldKey != "" && oldKey != id.KeyName {
		if err := a.ks.Delete(ctx, oldKey); err != nil && !errors.Is(err, keystore.ErrNotFound) {
			a.log.Warn("destroying the old identity key", "key", oldKey, "err", err)
		}
	}
	if a.sync != nil {
		a.sync.Kick()
	}
	return nil
}

// resumeRenewal finishes a renewal that crashed after the new identity
// was written.
func (a *Agent) resumeRenewal(ctx context.Context) error {
	a.renewMu.Lock()
	defer a.renewMu.Unlock()
	p, err := a.pending()
	if err != nil || p == nil {
		return err
	}
	id := a.identity()
	if p.KeyName == id.KeyName {
		return a.finishRenewal(ctx, id, "")
	}
	return nil
}

// renewLoop checks the identity's expiry now and every renewalCheckEvery.
func (a *Agent) renewLoop(ctx context.Context) {
	if err := a.resumeRenewal(ctx); err != nil {
		a.log.Error("resuming an identity renewal", "err", err)
	}
	for {
		if id := a.identity(); renewDue(id.Cert, time.Now(), time.Duration(a.cfg.Identity.RenewBefore)) {
			if _, err := a.RenewIdentity(ctx); err != nil {
				a.log.Error("identity renewal", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(renewalCheckEvery):
		}
	}
}

// onDown applies the updates of a down message. It runs before the
// message's acks are applied, so an update is never lost to a crash
// between the two.
func (a *Agent) onDown(down *syncpb.Down) {
	a.syncedNow()
	a.applyUpdates(context.Background(), down.GetUpdates())
}

package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/proto/syncpb"
)

// What the control plane pushes down the sync link, held in memory (the
// store keeps it durably, so an agent that restarts offline still knows
// its policy, CAs and CRLs).

// policyState is the DMS policy with the CA bundles it refers to.
type policyState struct {
	Policy *syncpb.Policy
	// Bundles maps an authorized CA id to its certificate then its
	// ancestors.
	Bundles map[string][]*x509.Certificate
}

// caFor resolves an EST label to the CA id and profile that serve it.
func (p *policyState) caFor(label string) (caID, profile string, ok bool) {
	profile = p.Policy.GetProfile()
	if label != "" {
		for _, l := range p.Policy.GetLabels() {
			if l.GetName() == label {
				if l.GetProfile() != "" {
					profile = l.GetProfile()
				}
				return l.GetCaId(), profile, true
			}
		}
		return "", "", false
	}
	for _, l := range p.Policy.GetLabels() {
		if l.GetName() == "" {
			return l.GetCaId(), profile, true
		}
	}
	if ids := p.Policy.GetAuthorizedCaIds(); len(ids) > 0 {
		return ids[0], profile, true
	}
	return "", "", false
}

// deviceAuthFor is how devices authenticate under label: the label's
// own setting, or the policy's.
func (p *policyState) deviceAuthFor(label string) string {
	for _, l := range p.Policy.GetLabels() {
		if l.GetName() == label && l.GetDeviceAuth() != "" {
			return l.GetDeviceAuth()
		}
	}
	return p.Policy.GetDeviceAuth()
}

// crlCache holds the full CRLs of the authorized CAs, and the highest
// CRL number (full or delta) seen per CA, which heartbeats report.
type crlCache struct {
	mu      sync.RWMutex
	crls    map[string]*x509.RevocationList
	numbers map[string]int64
}

func (c *crlCache) get(caID string) *x509.RevocationList {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.crls[caID]
}

func crlNumber(l *x509.RevocationList) int64 {
	if l.Number != nil && l.Number.IsInt64() {
		return l.Number.Int64()
	}
	return 0
}

// put keeps a full CRL (delta false) or only its number (delta true).
func (c *crlCache) put(caID string, l *x509.RevocationList, delta bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crls == nil {
		c.crls, c.numbers = map[string]*x509.RevocationList{}, map[string]int64{}
	}
	if !delta {
		c.crls[caID] = l
	}
	if n := crlNumber(l); n > c.numbers[caID] {
		c.numbers[caID] = n
	}
}

func (c *crlCache) states() []*syncpb.CRLState {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*syncpb.CRLState, 0, len(c.numbers))
	for id, n := range c.numbers {
		out = append(out, &syncpb.CRLState{CaId: id, CrlNumber: n})
	}
	return out
}

// agentState is the pushed state of a running agent.
type agentState struct {
	policy atomic.Pointer[policyState]
	crls   crlCache
}

// kvRevocationsSeen keeps the latest revocation time received.
const kvRevocationsSeen = "revocations_seen"

// loadState reads the pushed state from the store.
func (a *Agent) loadState() error {
	if t, ok, err := a.store.GetKVTime(kvRevocationsSeen); err != nil {
		return err
	} else if ok {
		a.revocationsSeen.Store(t.UnixMilli())
	}
	p, err := a.store.GetPolicy()
	if errors.Is(err, store.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	var pol syncpb.Policy
	if err := proto.Unmarshal(p.Data, &pol); err != nil {
		return fmt.Errorf("the stored policy is unreadable: %w", err)
	}
	ps := &policyState{Policy: &pol, Bundles: map[string][]*x509.Certificate{}}
	for _, id := range pol.GetAuthorizedCaIds() {
		b, err := a.store.GetCABundle(id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		certs, err := decodeBundle(b)
		if err != nil {
			return fmt.Errorf("the stored CA bundle of %s: %w", id, err)
		}
		ps.Bundles[id] = certs
		der, _, _, err := a.store.GetCRL(id)
		if err == nil {
			if l, err := x509.ParseRevocationList(der); err == nil {
				a.state.crls.put(id, l, false)
			}
		}
		if b, err := a.store.GetKV(kvDeltaNumber(id)); err == nil {
			// The number of the last delta applied (its entries are in
			// the revoked set).
			if n, ok := new(big.Int).SetString(string(b), 10); ok {
				a.state.crls.put(id, &x509.RevocationList{Number: n}, true)
			}
		}
	}
	a.state.policy.Store(ps)
	return nil
}

func decodeBundle(b []byte) ([]*x509.Certificate, error) {
	var bundle syncpb.CABundle
	if err := proto.Unmarshal(b, &bundle); err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, der := range bundle.GetCertificateDers() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// applyUpdates applies the updates of a down message, in an order that
// keeps references valid: CA bundles before the policy naming them.
func (a *Agent) applyUpdates(ctx context.Context, ups []*syncpb.Update) {
	bundles := map[string][]*x509.Certificate{}
	for _, u := range ups {
		if b := u.GetCaBundle(); b != nil && b.GetCaId() != "" {
			raw, _ := proto.Marshal(b)
			certs, err := decodeBundle(raw)
			if err != nil || len(certs) == 0 {
				a.log.Error("a CA bundle from the control plane is unreadable", "ca_id", b.GetCaId(), "err", err)
				continue
			}
			if err := a.store.PutCABundle(b.GetCaId(), raw); err != nil {
				a.log.Error("storing a CA bundle", "err", err)
				continue
			}
			bundles[b.GetCaId()] = certs
		}
	}
	for _, u := range ups {
		var err error
		switch p := u.GetPayload().(type) {
		case *syncpb.Update_CaBundle:
			// above
		case *syncpb.Update_Policy:
			err = a.applyPolicy(p.Policy, bundles)
		case *syncpb.Update_Crl:
			err = a.applyCRL(p.Crl)
		case *syncpb.Update_Revocation:
			at := time.UnixMilli(p.Revocation.GetRevokedAtUnixMs())
			err = a.store.PutRevoked(p.Revocation.GetCaId(), p.Revocation.GetSerialHex(), int(p.Revocation.GetReason()), at)
			if errors.Is(err, store.ErrInvalidArgument) {
				a.log.Error("ignoring a malformed revocation from the control plane", "update_id", u.GetUpdateId(), "err", err)
				err = nil
			}
			if err == nil && at.UnixMilli() > a.revocationsSeen.Load() {
				a.revocationsSeen.Store(at.UnixMilli())
				err = a.store.SetKVTime(kvRevocationsSeen, at)
			}
		case *syncpb.Update_EnrollmentResult:
			err = a.applyEnrollmentResult(p.EnrollmentResult)
		case *syncpb.Update_EdgeCa:
			err = a.installEdgeCA(ctx, p.EdgeCa)
		case *syncpb.Update_ServerCertificate:
			err = a.installServerCert(ctx, p.ServerCertificate)
		case *syncpb.Update_Identity:
			err = a.installIdentity(ctx, p.Identity)
		case *syncpb.Update_ResponderRequest:
			err = a.signResponder(ctx, p.ResponderRequest)
		default:
			a.log.Debug("down update not handled by this agent version", "update_id", u.GetUpdateId(), "kind", fmt.Sprintf("%T", p))
		}
		if err != nil {
			a.log.Error("applying an update from the control plane", "update_id", u.GetUpdateId(), "err", err)
		}
	}
}

func (a *Agent) applyPolicy(p *syncpb.Policy, fresh map[string][]*x509.Certificate) error {
	data, err := proto.Marshal(p)
	if err != nil {
		return err
	}
	stored, err := a.store.PutPolicy(p.GetVersion(), data)
	if err != nil || !stored {
		return err
	}
	ps := &policyState{Policy: p, Bundles: map[string][]*x509.Certificate{}}
	old := a.state.policy.Load()
	for _, id := range p.GetAuthorizedCaIds() {
		switch {
		case fresh[id] != nil:
			ps.Bundles[id] = fresh[id]
		case old != nil && old.Bundles[id] != nil:
			ps.Bundles[id] = old.Bundles[id]
		default:
			if b, err := a.store.GetCABundle(id); err == nil {
				if certs, err := decodeBundle(b); err == nil {
					ps.Bundles[id] = certs
				}
			}
		}
	}
	a.state.policy.Store(ps)
	a.log.Info("policy from the control plane", "version", p.GetVersion(), "mode", p.GetMode(), "device_auth", p.GetDeviceAuth(), "authorized_cas", len(p.GetAuthorizedCaIds()))
	a.kickMaintenance()
	return nil
}

// kvDeltaNumber keeps the number of the last delta CRL applied for a CA.
func kvDeltaNumber(caID string) string { return "delta_crl_" + caID }

// applyCRL checks a CRL is signed by the CA's certificate from its bundle,
// then caches a full CRL, or records the entries of a delta CRL in the
// revoked set (they decide re-enrollments until the next full CRL lists
// them).
func (a *Agent) applyCRL(u *syncpb.CRLUpdate) error {
	l, err := x509.ParseRevocationList(u.GetCrlDer())
	if err != nil {
		return fmt.Errorf("CRL of %s: %w", u.GetCaId(), err)
	}
	ps := a.state.policy.Load()
	if ps == nil || len(ps.Bundles[u.GetCaId()]) == 0 {
		return fmt.Errorf("CRL of %s: no CA certificate to check it with", u.GetCaId())
	}
	if err := l.CheckSignatureFrom(ps.Bundles[u.GetCaId()][0]); err != nil {
		return fmt.Errorf("CRL of %s: %w", u.GetCaId(), err)
	}
	if u.GetDelta() {
		for _, e := range l.RevokedCertificateEntries {
			if err := a.store.PutRevoked(u.GetCaId(), e.SerialNumber.Text(16), e.ReasonCode, e.RevocationTime); err != nil && !errors.Is(err, store.ErrInvalidArgument) {
				return err
			}
		}
		if err := a.store.SetKV(kvDeltaNumber(u.GetCaId()), []byte(strconv.FormatInt(crlNumber(l), 10))); err != nil {
			return err
		}
		a.state.crls.put(u.GetCaId(), l, true)
		return nil
	}
	stored, err := a.store.PutCRL(u.GetCaId(), u.GetCrlDer(), l.ThisUpdate, l.NextUpdate)
	if err != nil {
		return err
	}
	if stored {
		a.state.crls.put(u.GetCaId(), l, false)
	}
	return nil
}

// fillHeartbeat adds what the control plane needs to decide what to send.
func (a *Agent) fillHeartbeat(hb *syncpb.Heartbeat) {
	if ps := a.state.policy.Load(); ps != nil {
		hb.PolicyDigest = ps.Policy.GetStateDigest()
	}
	hb.Crls = a.state.crls.states()
	hb.RevocationsSeenUnixMs = a.revocationsSeen.Load()
	if c := a.server.current(); c != nil {
		hb.ServerCertNotAfterUnixMs = c.Cert.NotAfter.UnixMilli()
	}
	if c := a.edge.current(); c != nil {
		hb.EdgeCaNotAfterUnixMs = c.Cert.NotAfter.UnixMilli()
	}
}

// kickMaintenance asks the maintenance loop to run now.
func (a *Agent) kickMaintenance() {
	select {
	case a.maint <- struct{}{}:
	default:
	}
}

// maintain requests the EST server certificate and (local mode) the edge
// CA when missing or due, now and every minute.
func (a *Agent) maintain(ctx context.Context) {
	for {
		a.maintainOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-a.maint:
		case <-time.After(time.Minute):
		}
	}
}

func (a *Agent) maintainOnce(ctx context.Context) {
	id := a.identity()
	if a.cfg.EST.Enabled() {
		names := strings.Join(a.cfg.EST.Hostnames, ",")
		p, _ := a.server.pending()
		cur := a.server.current()
		if a.server.due(time.Now()) || (cur != nil && !certCovers(cur.Cert, a.cfg.EST.Hostnames) && (p == nil || p.For != names)) {
			err := a.server.request(ctx, names, func(key crypto.Signer) ([]byte, error) {
				return serverCSR(key, id.DMSID, a.cfg.EST.Hostnames)
			}, func(csr []byte) *syncpb.Record {
				return &syncpb.Record{Payload: &syncpb.Record_ServerCertificateRequest{ServerCertificateRequest: &syncpb.ServerCertificateRequest{CsrDer: csr}}}
			})
			if err != nil {
				a.log.Error("requesting the EST server certificate", "err", err)
			}
		}
	}
	if ps := a.state.policy.Load(); ps != nil && ps.Policy.GetMode() == "local" && a.edge.due(time.Now()) {
		reason := "initial"
		if a.edge.current() != nil {
			reason = "renewal"
		}
		err := a.edge.request(ctx, "local", func(key crypto.Signer) ([]byte, error) {
			return x509.CreateCertificateRequest(randReader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "Outpost Edge CA " + id.DMSID}}, key)
		}, func(csr []byte) *syncpb.Record {
			return &syncpb.Record{Payload: &syncpb.Record_EdgeCaRequest{EdgeCaRequest: &syncpb.EdgeCARequest{CsrDer: csr, Reason: reason}}}
		})
		if err != nil {
			a.log.Error("requesting the edge CA", "err", err)
		}
	}
}

package syncsvc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// Down-link state: what a DMS's agent should hold, sent when a heartbeat
// shows it lacks it. The policy and the CA bundles travel together, named
// by a digest the agent echoes in its heartbeats (policy_digest); CRLs
// are compared by number (heartbeat crls).

// State is the policy and CA bundles a DMS's agent should hold.
type State struct {
	// Policy carries StateDigest.
	Policy *syncpb.Policy
	// Bundles has one bundle per authorized CA, in the policy's order:
	// the CA's certificate, then its ancestors up to the root.
	Bundles []*syncpb.CABundle
	// Digest is Policy.StateDigest: SHA-256 over the policy (digest
	// empty) and the bundles (see stateDigest).
	Digest []byte
}

// DMSState computes the state of DMS dmsID from the registry (db: the
// pool or a transaction). Policy.version is the DMS row's updated_at in
// Unix milliseconds, which every policy change moves forward.
func DMSState(ctx context.Context, db registry.DBTX, dmsID uuid.UUID) (*State, error) {
	q := registry.On(db)
	d, err := q.GetDMS(ctx, dmsID)
	if err != nil {
		return nil, err
	}
	pol := caservice.PolicyOf(d)
	p := &syncpb.Policy{
		Mode:                  pol.Mode,
		DeviceAuth:            pol.DeviceAuth,
		Profile:               pol.Profile,
		ReenrollWindowSeconds: int64(pol.ReenrollWindow / time.Second),
		LocalQuota:            int64(pol.LocalQuota),
		Version:               uint64(max(d.UpdatedAt.UnixMilli(), 0)),
		EdgeCaValiditySeconds: int64(pol.EdgeCAValidity / time.Second),
		EdgeNameConstraints:   pol.EffectiveNameConstraints(),
		WebhookUrl:            pol.WebhookURL,
		OnlineWaitMs:          pol.OnlineWait.Milliseconds(),
		JitRegistration:       pol.JITRegistration,
		AuthorizedCaIds:       make([]string, 0, len(d.AuthorizedCAs)),
		BootstrapCaDers:       make([][]byte, 0, len(pol.BootstrapCAPEMs)),
		Labels:                make([]*syncpb.Label, 0, len(pol.Labels)),
	}
	for _, pemText := range pol.BootstrapCAPEMs {
		// Validated when stored; one that no longer parses is left out
		// rather than blocking the whole policy.
		if c, err := caservice.ParseCertificatePEM([]byte(pemText)); err == nil && len(c.Raw) <= syncproto.MaxDERSize {
			p.BootstrapCaDers = append(p.BootstrapCaDers, c.Raw)
		}
	}
	for _, l := range pol.Labels {
		p.Labels = append(p.Labels, &syncpb.Label{Name: l.Name, CaId: l.CAID.String(), Profile: l.Profile, DeviceAuth: l.DeviceAuth})
	}
	st := &State{Policy: p}
	for _, id := range d.AuthorizedCAs {
		p.AuthorizedCaIds = append(p.AuthorizedCaIds, id.String())
		ca, err := q.GetCA(ctx, id)
		if err != nil {
			return nil, err
		}
		chain, err := caservice.ChainOf(ctx, q, ca)
		if err != nil {
			return nil, err
		}
		st.Bundles = append(st.Bundles, &syncpb.CABundle{CaId: id.String(), CertificateDers: ders(chain)})
	}
	if st.Digest, err = stateDigest(p, st.Bundles); err != nil {
		return nil, err
	}
	p.StateDigest = st.Digest
	return st, nil
}

// stateDigest is SHA-256 over a length-prefixed sequence: a domain
// string, the policy in deterministic protobuf encoding with
// state_digest empty, then per bundle its CA id, its number of
// certificates and each certificate. Equal state gives equal digests on
// every replica running the same protobuf encoder.
func stateDigest(p *syncpb.Policy, bundles []*syncpb.CABundle) ([]byte, error) {
	c := proto.Clone(p).(*syncpb.Policy)
	c.StateDigest = nil
	pb, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("sync: encoding the policy: %w", err)
	}
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte("outpost sync state v1"))
	field(pb)
	for _, b := range bundles {
		field([]byte(b.GetCaId()))
		field(binary.BigEndian.AppendUint64(nil, uint64(len(b.GetCertificateDers()))))
		for _, der := range b.GetCertificateDers() {
			field(der)
		}
	}
	return h.Sum(nil), nil
}

// stateUpdates are the updates a heartbeat showed the agent lacks.
type stateUpdates struct {
	// policy is the CA bundles, then the policy: sent together or not
	// at all (the digest covers them together).
	policy []*syncpb.Update
	// crls are newer full CRLs of the authorized CAs, each sent when it
	// fits.
	crls []*syncpb.Update
	// revocations are Revocation updates of the DMS's certificates revoked
	// after the agent's watermark, oldest first, each sent when it fits.
	revocations []*syncpb.Update
	// responders are ResponderRequest updates for edge CAs without a
	// current OCSP responder certificate (responders.go).
	responders []*syncpb.Update
}

// maxRevocationsPerReply bounds the revocations one heartbeat's reply
// carries; the agent's watermark moves and the next heartbeat gets more.
const maxRevocationsPerReply = 200

// revocationsAfter lists the revocations the agent of dmsID needs to
// refuse re-enrollments offline: certificates its edge CAs issued (no CRL
// of the control plane covers them) and certificates issued to it through
// the control plane, revoked after the agent's watermark (Unix ms).
func revocationsAfter(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, afterMs int64) ([]*syncpb.Update, error) {
	rows, err := tx.Query(ctx, `
		SELECT c.serial, c.issuer_id, coalesce(c.revocation_reason, 0), floor(extract(epoch FROM c.revoked_at) * 1000)::bigint AS ms
		FROM certificates c
		WHERE c.status = 'revoked' AND c.revoked_at IS NOT NULL
		  AND (c.dms_id = $1 OR c.issuer_id IN (SELECT id FROM cas WHERE dms_id = $1))
		  AND floor(extract(epoch FROM c.revoked_at) * 1000)::bigint > $2
		  AND c.profile NOT IN ('dms', 'est-server')
		ORDER BY ms, c.serial
		LIMIT $3`, dmsID, afterMs, maxRevocationsPerReply)
	if err != nil {
		return nil, fmt.Errorf("sync: revocations of dms %s: %w", dmsID, err)
	}
	defer rows.Close()
	var out []*syncpb.Update
	for rows.Next() {
		var serial string
		var issuer uuid.UUID
		var reason int32
		var ms int64
		if err := rows.Scan(&serial, &issuer, &reason, &ms); err != nil {
			return nil, err
		}
		if reason < 0 || reason > 10 || reason == 7 {
			reason = 0
		}
		out = append(out, &syncpb.Update{UpdateId: "revocation-" + serial,
			Payload: &syncpb.Update_Revocation{Revocation: &syncpb.Revocation{SerialHex: serial, Reason: reason, RevokedAtUnixMs: ms, CaId: issuer.String()}}})
	}
	return out, rows.Err()
}

// stateFor compares the DMS's state with what heartbeat hb says the agent
// holds.
func (a *Applier) stateFor(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, hb *syncpb.Heartbeat) (*stateUpdates, error) {
	st, err := DMSState(ctx, tx, dmsID)
	if err != nil {
		return nil, err
	}
	out := &stateUpdates{}
	if !bytes.Equal(hb.GetPolicyDigest(), st.Digest) {
		d := hex.EncodeToString(st.Digest)
		for _, b := range st.Bundles {
			out.policy = append(out.policy, &syncpb.Update{UpdateId: "bundle-" + b.GetCaId() + "-" + d[:16], Payload: &syncpb.Update_CaBundle{CaBundle: b}})
		}
		out.policy = append(out.policy, &syncpb.Update{UpdateId: "policy-" + d[:32], Payload: &syncpb.Update_Policy{Policy: st.Policy}})
	}
	held := make(map[string]int64, len(hb.GetCrls()))
	for _, c := range hb.GetCrls() {
		if n, ok := held[c.GetCaId()]; !ok || c.GetCrlNumber() > n {
			held[c.GetCaId()] = c.GetCrlNumber()
		}
	}
	for _, caID := range st.Policy.GetAuthorizedCaIds() {
		// The full CRL, then the delta on top of it: CRL numbers are one
		// sequence per CA (RFC 5280 5.2.3), and the agent reports the
		// highest it holds of either.
		for _, delta := range []bool{false, true} {
			u, err := a.newerCRL(ctx, tx, caID, held, delta)
			if err != nil {
				return nil, err
			}
			if u != nil {
				out.crls = append(out.crls, u)
			}
		}
	}
	out.revocations, err = revocationsAfter(ctx, tx, dmsID, hb.GetRevocationsSeenUnixMs())
	if err != nil {
		return nil, err
	}
	return out, nil
}

// newerCRL returns a CRLUpdate with the latest full (or delta) CRL of
// caID when the agent holds none of that CA or an older one (by
// cRLNumber), and the CRL fits in a message; nil otherwise. The crls
// table (written by package crl) is read directly: number and size first,
// the DER only when it is to be sent. Deltas carry the revocations since
// the last full CRL within minutes, where the full CRL may be a day old.
func (a *Applier) newerCRL(ctx context.Context, tx pgx.Tx, caID string, held map[string]int64, delta bool) (*syncpb.Update, error) {
	var number int64
	var size int
	err := tx.QueryRow(ctx, `SELECT crl_number, length(der) FROM crls WHERE ca_id = $1 AND is_delta = $2 ORDER BY crl_number DESC LIMIT 1`, caID, delta).Scan(&number, &size)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("sync: latest crl of ca %s: %w", caID, err)
	}
	if h, ok := held[caID]; (ok && h >= number) || size > syncproto.MaxCRLSize {
		return nil, nil
	}
	var der []byte
	if err := tx.QueryRow(ctx, `SELECT der FROM crls WHERE ca_id = $1 AND crl_number = $2`, caID, number).Scan(&der); err != nil {
		return nil, fmt.Errorf("sync: crl %d of ca %s: %w", number, caID, err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil || rl.Number == nil || !rl.Number.IsInt64() || rl.Number.Sign() < 0 {
		a.log().Warn("sync: a stored crl does not parse or has no usable number", "ca_id", caID, "crl_number", number, "err", err)
		return nil, nil
	}
	n := rl.Number.Int64()
	if h, ok := held[caID]; ok && h >= n {
		return nil, nil
	}
	return &syncpb.Update{UpdateId: "crl-" + caID + "-" + strconv.FormatInt(n, 10),
		Payload: &syncpb.Update_Crl{Crl: &syncpb.CRLUpdate{CaId: caID, CrlDer: der, Delta: delta}}}, nil
}

// Reply size accounting. replyOverhead covers the envelope's own fields
// (message id, DMS id, time, version) and the Down and Ack headers.
const replyOverhead = 512

// budget tracks a reply's updates and encoded size against syncproto's
// limits.
type budget struct {
	size, updates int
}

func (b *budget) fits(updates int, size int) bool {
	return b.updates+updates <= syncproto.MaxRecordsPerMessage && b.size+size <= syncproto.MaxMessageSize
}

func (b *budget) take(updates int, size int) {
	b.updates += updates
	b.size += size
}

// fieldSize is the encoded size of a length-delimited field of n bytes.
func fieldSize(n int) int { return 1 + protowire.SizeVarint(uint64(n)) + n }

func updatesSize(us []*syncpb.Update) int {
	n := 0
	for _, u := range us {
		n += fieldSize(proto.Size(u))
	}
	return n
}

// buildDown assembles the reply: the answers in record order while they
// fit (the first that does not and every one after it are left out, so
// those records stay in the agent's outbox and are answered again when
// redelivered), then the CA bundles and policy if they fit together, then
// each CRL that fits. nil when there is nothing to say.
func buildDown(answers []answer, st *stateUpdates) *syncpb.Down {
	b := budget{size: replyOverhead}
	down := &syncpb.Down{}
	ack := &syncpb.Ack{}
	for _, ans := range answers {
		size := updatesSize(ans.updates)
		if ans.rejection != nil {
			size += fieldSize(proto.Size(ans.rejection))
		} else {
			size += fieldSize(len(ans.ackID))
		}
		if !b.fits(len(ans.updates), size) {
			break
		}
		b.take(len(ans.updates), size)
		if ans.rejection != nil {
			ack.Rejections = append(ack.Rejections, ans.rejection)
		} else {
			ack.RecordIds = append(ack.RecordIds, ans.ackID)
		}
		down.Updates = append(down.Updates, ans.updates...)
	}
	if st != nil {
		if size := updatesSize(st.policy); b.fits(len(st.policy), size) {
			b.take(len(st.policy), size)
			down.Updates = append(down.Updates, st.policy...)
		}
		for _, u := range st.crls {
			if size := updatesSize([]*syncpb.Update{u}); b.fits(1, size) {
				b.take(1, size)
				down.Updates = append(down.Updates, u)
			}
		}
		for _, u := range st.responders {
			if size := updatesSize([]*syncpb.Update{u}); b.fits(1, size) {
				b.take(1, size)
				down.Updates = append(down.Updates, u)
			}
		}
		// Oldest first and stop at the first that does not fit: the
		// agent's watermark must not pass one it did not get.
		for _, u := range st.revocations {
			size := updatesSize([]*syncpb.Update{u})
			if !b.fits(1, size) {
				break
			}
			b.take(1, size)
			down.Updates = append(down.Updates, u)
		}
	}
	if len(ack.RecordIds)+len(ack.Rejections) > 0 {
		down.Ack = ack
	}
	if down.Ack == nil && len(down.Updates) == 0 {
		return nil
	}
	return down
}

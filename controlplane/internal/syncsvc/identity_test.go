package syncsvc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/caservice"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/syncsvc"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

func csrFor(t *testing.T, key *ecdsa.PrivateKey, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func up(dmsID string, recs ...*syncpb.Record) *syncpb.Envelope {
	return &syncpb.Envelope{MessageId: syncproto.NewMessageID(), DmsId: dmsID, SentAtUnixMs: time.Now().UnixMilli(), ProtocolVersion: syncproto.ProtocolVersion,
		Body: &syncpb.Envelope_Up{Up: &syncpb.Up{Records: recs}}}
}

func renewal(id string, csr []byte) *syncpb.Record {
	return &syncpb.Record{RecordId: id, Payload: &syncpb.Record_IdentityRenewal{IdentityRenewal: &syncpb.IdentityRenewal{CsrDer: csr}}}
}

func installed(id, serial string) *syncpb.Record {
	return &syncpb.Record{RecordId: id, Payload: &syncpb.Record_Event{Event: &syncpb.Event{Kind: syncproto.EventIdentityInstalled, DetailJson: `{"serial":"` + serial + `"}`}}}
}

// TestIdentityRenewalRecords drives the control plane's side of an
// identity renewal message by message: fresh key required, the same
// certificate again on redelivery, both certificates accepted until the
// agent reports the new one installed, then the old one revoked as
// superseded and the connection dropped.
func TestIdentityRenewalRecords(t *testing.T) {
	e := cptest.Start(t, nil)
	ctx := context.Background()
	svc := e.App.Svc
	var dms apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", e.AdminToken, apitypes.CreateDMSRequest{Name: "gw-renew"}, &dms, 201)
	oldKey := newKey(t)
	boot, err := svc.BootstrapDMS(ctx, dms.BootstrapToken, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrFor(t, oldKey, "x")}))
	if err != nil {
		t.Fatal(err)
	}
	dmsID := boot.DMSID
	oldCert, _ := x509.ParseCertificate(boot.Cert.DER)
	var replaced []uuid.UUID
	a := &syncsvc.Applier{Reg: svc.Reg, Svc: svc, OnIdentityReplaced: func(id uuid.UUID) { replaced = append(replaced, id) }}
	apply := func(recs ...*syncpb.Record) *syncpb.Down {
		t.Helper()
		reply, err := a.Apply(ctx, dmsID, up(dmsID.String(), recs...))
		if err != nil {
			t.Fatal(err)
		}
		return reply.GetDown()
	}

	// The same key again is refused for good.
	d := apply(renewal("r-same-key", csrFor(t, oldKey, dmsID.String())))
	if len(d.GetAck().GetRejections()) != 1 || !d.GetAck().GetRejections()[0].GetPermanent() || !strings.Contains(d.GetAck().GetRejections()[0].GetReason(), "fresh key") {
		t.Fatalf("renewal with the current key: %v", d)
	}
	// A garbage CSR too.
	d = apply(renewal("r-garbage", []byte("not a csr")))
	if len(d.GetAck().GetRejections()) != 1 || !d.GetAck().GetRejections()[0].GetPermanent() {
		t.Fatalf("renewal with a garbage CSR: %v", d)
	}

	newKey := newKey(t)
	rec := renewal("identity-renewal-1", csrFor(t, newKey, dmsID.String()))
	d = apply(rec)
	if len(d.GetAck().GetRecordIds()) != 1 || len(d.GetUpdates()) != 1 {
		t.Fatalf("renewal: %v", d)
	}
	ic := d.GetUpdates()[0].GetIdentity()
	newCert, err := x509.ParseCertificate(ic.GetCertificateDer())
	if err != nil {
		t.Fatal(err)
	}
	if !newCert.PublicKey.(*ecdsa.PublicKey).Equal(newKey.Public()) || newCert.Subject.CommonName != dmsID.String() || len(ic.GetChainDers()) == 0 {
		t.Fatalf("renewed certificate: key matches %v, CN %q, chain %d", newCert.PublicKey.(*ecdsa.PublicKey).Equal(newKey.Public()), newCert.Subject.CommonName, len(ic.GetChainDers()))
	}
	// Redelivered: acked again with the same certificate, nothing new issued.
	d = apply(rec)
	if len(d.GetUpdates()) != 1 || !newCert.Equal(mustParse(t, d.GetUpdates()[0].GetIdentity().GetCertificateDer())) {
		t.Fatalf("redelivered renewal: %v", d)
	}
	var issued int
	if err := e.App.Pool.QueryRow(ctx, `SELECT count(*) FROM certificates WHERE dms_id = $1 AND profile = 'dms'`, dmsID).Scan(&issued); err != nil {
		t.Fatal(err)
	}
	if issued != 2 {
		t.Errorf("%d identity certificates for the DMS, want 2", issued)
	}
	// Until the agent says it installed the new one, both work.
	for _, c := range []*x509.Certificate{oldCert, newCert} {
		if err := svc.CheckDMSIdentity(ctx, dmsID, c); err != nil {
			t.Errorf("identity %x before install: %v", c.SerialNumber, err)
		}
	}
	newSerial := strings.ToLower(newCert.SerialNumber.Text(16))
	if d := apply(installed("bogus", "abcdef")); len(d.GetAck().GetRejections()) != 1 {
		t.Errorf("installed event for an unknown serial: %v", d)
	}
	apply(installed("identity-installed-1", newSerial))
	if err := svc.CheckDMSIdentity(ctx, dmsID, oldCert); !errors.Is(err, caservice.ErrIdentityRefused) {
		t.Errorf("old identity after install: %v, want refused", err)
	}
	if err := svc.CheckDMSIdentity(ctx, dmsID, newCert); err != nil {
		t.Errorf("new identity after install: %v", err)
	}
	var got apitypes.DMS
	e.MustDo("GET", "/api/v1/dmss/"+dmsID.String(), e.AdminToken, nil, &got, 200)
	if got.IdentitySerial != newSerial {
		t.Errorf("registry identity serial %s, want %s", got.IdentitySerial, newSerial)
	}
	var old apitypes.Certificate
	e.MustDo("GET", "/api/v1/certificates/"+strings.ToLower(oldCert.SerialNumber.Text(16)), e.AdminToken, nil, &old, 200)
	if old.Status != "revoked" || old.RevocationReason != "superseded" {
		t.Errorf("old identity: status %s reason %s", old.Status, old.RevocationReason)
	}
	if len(replaced) != 1 || replaced[0] != dmsID {
		t.Errorf("OnIdentityReplaced calls: %v", replaced)
	}
	// A redelivered installed event changes nothing.
	apply(installed("identity-installed-1", newSerial))
	if len(replaced) != 1 {
		t.Errorf("a redelivered installed event dropped the connection again")
	}
	// The renewal record redelivered after that is acked (with the
	// certificate the agent already uses, which it ignores).
	if d := apply(rec); len(d.GetAck().GetRecordIds()) != 1 {
		t.Errorf("late redelivery: %v", d)
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

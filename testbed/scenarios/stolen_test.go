package scenarios

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/testbed/system"
)

// TestStolenGateway: a gateway is stolen. The thief cuts its uplink (so
// the agent cannot learn what follows) and keeps enrolling devices
// offline with its edge CA; meanwhile the operator revokes the DMS
// (POST /api/v1/dmss/:id/disable, the API's only way to revoke a DMS).
//
//   - The registry: the identity certificate (DMS manager CA) and the
//     edge CA certificate (issued by the authorized CA) are revoked
//     (privilegeWithdrawn), with every certificate the edge CA issued, and
//     the audit log has the dms.disable entry naming the identity.
//   - OCSP: `openssl ocsp` against the control plane's /ocsp says
//     "revoked" for both, each asked of its issuer (chains from the API).
//   - CRLs: the CRL at each certificate's distribution point, or the
//     delta it names as freshest CRL, lists its serial (`openssl crl`).
//   - When the stolen box reaches the control plane again, the broker
//     refuses it (CONNACK 0x8A Banned) and the agent says it is disabled;
//     the certificates it signed after the revocation stay in its outbox
//     and never reach the registry. Even with the DMS set back to active
//     in the database (an insider), the broker refuses its revoked
//     identity (0x87) and nothing arrives.
//
// The registry's own rule (a record of a certificate a revoked edge CA
// signed after its revocation is refused by the sync apply path) needs
// the control plane's internal packages: syncsvc's
// TestStolenGatewayRecordsRefused (authz_test.go) sends such records
// through Applier.Apply.
func TestStolenGateway(t *testing.T) {
	start := time.Now()
	s := system.StartT(t, system.Options{Secrets: 1})
	ctx := context.Background()
	dir := t.TempDir()
	creds, err := s.MintSecrets(ctx, 20, "stolen-")
	if err != nil {
		t.Fatal(err)
	}
	before := enrollFleet(t, s, creds[:8], fleetOptions{}).wait(t)
	assertExactlyOnce(t, s, before)

	var dms struct {
		IdentitySerial string `json:"identity_serial"`
	}
	if err := s.Call("GET", "/api/v1/dmss/"+s.DMSID, nil, &dms); err != nil {
		t.Fatal(err)
	}
	identity := certOf(t, s, dms.IdentitySerial)
	edgeIDs := edgeCAIDs(t, s)
	if dms.IdentitySerial == "" || len(edgeIDs) == 0 {
		t.Fatalf("the DMS has identity %q and %d edge CAs, want both", dms.IdentitySerial, len(edgeIDs))
	}

	t.Log("the thief cuts the uplink; the operator revokes the DMS")
	s.Uplink.Cut()
	if err := s.WaitAgent(ctx, 30*time.Second, func(st system.AgentStatus) bool { return !st.Online }); err != nil {
		t.Fatalf("the agent still says it is online after the uplink was cut: %v", err)
	}
	if err := s.Call("POST", "/api/v1/dmss/"+s.DMSID+"/disable", nil, nil); err != nil {
		t.Fatalf("disabling (revoking) the DMS: %v", err)
	}

	t.Log("registry: identity and edge CAs revoked, with what the edge CAs issued")
	var idRec struct {
		Status    string    `json:"status"`
		IssuerID  string    `json:"issuer_id"`
		Reason    string    `json:"revocation_reason"`
		RevokedAt time.Time `json:"revoked_at"`
	}
	if err := s.Call("GET", "/api/v1/certificates/"+dms.IdentitySerial, nil, &idRec); err != nil {
		t.Fatal(err)
	}
	if idRec.Status != "revoked" || idRec.Reason != "privilegeWithdrawn" {
		t.Errorf("identity certificate %s: %s (%s), want revoked (privilegeWithdrawn)", dms.IdentitySerial, idRec.Status, idRec.Reason)
	}
	type caRec struct {
		ID        string    `json:"id"`
		ParentID  string    `json:"parent_id"`
		Status    string    `json:"status"`
		CertPEM   string    `json:"certificate_pem"`
		RevokedAt time.Time `json:"revoked_at"`
	}
	var edges []caRec
	for _, id := range edgeIDs {
		var ca caRec
		if err := s.Call("GET", "/api/v1/cas/"+id, nil, &ca); err != nil {
			t.Fatal(err)
		}
		if ca.Status != "revoked" {
			t.Errorf("edge CA %s: %s, want revoked", id, ca.Status)
		}
		edges = append(edges, ca)
	}
	for _, e := range before {
		if st := certStatusOf(t, s, serialOf(e.Cert)); st != "revoked" {
			t.Errorf("device %s: certificate from the revoked edge CA is %s, want revoked", e.Device, st)
		}
	}
	var audit struct {
		Items []struct {
			Action, Target string
			Detail         map[string]any
		}
	}
	if err := s.Call("GET", "/api/v1/audit?limit=20", nil, &audit); err != nil {
		t.Fatal(err)
	}
	audited := false
	for _, a := range audit.Items {
		if a.Action == "dms.disable" && a.Target == s.DMSID {
			b, _ := json.Marshal(a.Detail)
			audited = strings.Contains(string(b), dms.IdentitySerial)
		}
	}
	if !audited {
		t.Errorf("no dms.disable audit entry for %s naming the identity %s: %+v", s.DMSID, dms.IdentitySerial, audit.Items)
	}

	t.Log("OCSP (openssl ocsp against /ocsp): revoked")
	idChain := caChain(t, s, idRec.IssuerID)
	if out := opensslOCSP(t, s, dir, "identity", identity, idChain); !strings.Contains(out, "identity.pem: revoked") || !strings.Contains(out, privilegeWithdrawn) {
		t.Errorf("OCSP for the identity certificate %s, want revoked (privilegeWithdrawn):\n%s", describe(identity), out)
	}
	for i, e := range edges {
		cert := parsePEMCerts(t, []byte(e.CertPEM))[0]
		name := "edge" + string(rune('0'+i))
		if out := opensslOCSP(t, s, dir, name, cert, caChain(t, s, e.ParentID)); !strings.Contains(out, name+".pem: revoked") || !strings.Contains(out, privilegeWithdrawn) {
			t.Errorf("OCSP for the edge CA %s, want revoked (privilegeWithdrawn):\n%s", describe(cert), out)
		}
		if where := crlListing(t, cert, 10*time.Second); where == "" {
			t.Errorf("the CRLs of the authorized CA do not list the edge CA %s", describe(cert))
		} else {
			t.Logf("edge CA %s listed in the authorized CA's %s CRL", serialOf(cert), where)
		}
	}
	if where := crlListing(t, identity, 10*time.Second); where == "" {
		t.Errorf("the CRLs of the DMS manager CA do not list the identity %s", describe(identity))
	} else {
		t.Logf("identity %s listed in the DMS manager CA's %s CRL", serialOf(identity), where)
	}

	t.Log("the stolen box keeps signing offline")
	after := enrollFleet(t, s, creds[8:], fleetOptions{}).wait(t)
	if len(after) != len(creds)-8 {
		t.Fatalf("%d of %d devices enrolled offline after the revocation", len(after), len(creds)-8)
	}
	var late []string
	for _, e := range after {
		signed := false
		for _, ca := range edges {
			if e.Cert.CheckSignatureFrom(parsePEMCerts(t, []byte(ca.CertPEM))[0]) == nil {
				signed = true
			}
		}
		if !signed {
			t.Errorf("device %s: certificate %s not signed by a revoked edge CA", e.Device, serialOf(e.Cert))
		}
		late = append(late, serialOf(e.Cert))
	}

	t.Log("it reaches the control plane again: the broker refuses it")
	if err := s.Uplink.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAgent(ctx, 30*time.Second, func(st system.AgentStatus) bool { return st.Disabled && !st.Online }); err != nil {
		st, _ := agentStatus(s)
		t.Errorf("the agent's /status does not say it is disabled after reconnecting: %+v", st)
	}
	if lines := waitLogLines(t, s, 5*time.Second, "controlplane", "refusing mqtt connect", s.DMSID, `"connack":"0x8a"`); len(lines) == 0 {
		t.Error("the broker's log shows no connect of the revoked DMS refused with CONNACK 0x8a Banned")
	}
	if n := certsInRegistry(t, s, late); n != 0 {
		t.Errorf("the registry holds %d of the %d certificates signed after the revocation, want none", n, len(late))
	}
	outbox := agentOutbox(t, s)
	for _, sn := range late {
		if !outbox["issued-"+sn] {
			t.Errorf("certificate %s signed after the revocation is not in the agent's outbox", sn)
		}
	}

	t.Log("the DMS set back to active in the database: its revoked identity is still refused")
	sqlExec(t, s, `UPDATE dmss SET status = 'active' WHERE id = $1`, s.DMSID)
	if err := s.Proc("agent").Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Proc("agent").Start(); err != nil {
		t.Fatal(err)
	}
	if lines := waitLogLines(t, s, 20*time.Second, "controlplane", "refusing mqtt connect", s.DMSID, `"connack":"0x87"`, "revoked"); len(lines) == 0 {
		t.Error("the broker's log shows no connect with the revoked identity refused with CONNACK 0x87")
	}
	if st, _ := agentStatus(s); st.Online {
		t.Error("the agent with a revoked identity is online")
	}
	if n := certsInRegistry(t, s, late); n != 0 {
		t.Errorf("the registry holds %d of the %d certificates signed after the revocation, want none", n, len(late))
	}
	t.Logf("stolen gateway: %d certificates signed after the revocation, none in the registry; %v in all", len(late), time.Since(start).Round(time.Millisecond))
}

// privilegeWithdrawn is how `openssl ocsp -resp_text` prints the
// revocation reason privilegeWithdrawn (9), which it has no name for.
const privilegeWithdrawn = "Revocation Reason: (UNKNOWN) (0x9)"

// certOf is a certificate of the registry by serial (its PEM from the API).
func certOf(t *testing.T, s *system.System, serial string) *x509.Certificate {
	t.Helper()
	return parsePEMCerts(t, apiGet(t, s, "/api/v1/certificates/"+serial+"/pem"))[0]
}

// certStatusOf is a certificate's status in the registry.
func certStatusOf(t *testing.T, s *system.System, serial string) string {
	t.Helper()
	var c struct{ Status string }
	if err := s.Call("GET", "/api/v1/certificates/"+serial, nil, &c); err != nil {
		t.Fatal(err)
	}
	return c.Status
}

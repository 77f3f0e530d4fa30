package scenarios

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/testbed/system"
)

// disabledMessage is the agent's one-line EST refusal while its DMS is
// disabled (agent.DisabledMessage).
const disabledMessage = "this gateway has been disabled by the control plane"

// TestDMSRevokedWhileWorking disables the gateway's DMS through the API
// (POST /api/v1/dmss/:id/disable: the DMS's identity certificate and edge
// CAs are revoked, and the embedded broker drops its connection) while
// devices enroll over EST in local mode. First 100 devices enroll and
// reach the registry (checked with assertExactlyOnce before the
// disable); then a second fleet enrolls slowly (two workers) and the DMS
// is disabled after 30 of them. The broker must drop the agent and
// answer its reconnects with CONNACK 0x8A Banned (checked after a restart
// of the agent: one that first learned it from the control plane's
// DMSDisabled answer reconnects only 5 minutes later); the agent must record
// that it is disabled (on /status, in its log, across a restart) and
// refuse every enrollment with a 403 naming it. Nothing the agent
// accepted may be lost: each certificate a device accepted is in the
// registry exactly once (then revoked with its edge CA) or still in the
// agent's outbox (a disabled DMS's records are refused by the control
// plane, so they wait there; the API cannot enable a DMS again).
func TestDMSRevokedWhileWorking(t *testing.T) {
	s := system.StartT(t, system.Options{Secrets: 1})
	ctx := context.Background()
	creds, err := s.MintSecrets(ctx, 300, "revoked-")
	if err != nil {
		t.Fatal(err)
	}
	before := enrollFleet(t, s, creds[:100], fleetOptions{}).wait(t)
	assertExactlyOnce(t, s, before)

	t.Log("second fleet; the DMS is disabled after 30 of its devices")
	f := enrollFleet(t, s, creds[100:250], fleetOptions{Workers: 2})
	f.waitAccepted(t, 30, time.Minute)
	if err := s.Call("POST", "/api/v1/dmss/"+s.DMSID+"/disable", nil, nil); err != nil {
		t.Fatalf("disabling the DMS: %v", err)
	}
	disabledAt := f.Accepted()
	t.Logf("DMS disabled with %d devices of the second fleet enrolled", disabledAt)
	if err := s.WaitAgent(ctx, time.Minute, func(st system.AgentStatus) bool { return st.Disabled && !st.Online }); err != nil {
		st, _ := agentStatus(s)
		t.Fatalf("the agent's /status does not say it is disabled a minute after the DMS was: %+v", st)
	}
	learned := f.Accepted()
	during, refused := fleetOutcome(f)
	t.Logf("second fleet: %d enrolled (%d when the DMS was disabled, %d when the agent knew), %d refused", len(during), disabledAt, learned, len(refused))
	for d, why := range refused {
		if !strings.Contains(why, "403") || !strings.Contains(why, disabledMessage) {
			t.Errorf("device %s was refused for another reason than the disable: %s", d, why)
		}
	}
	if len(during)+len(refused) != 150 {
		t.Errorf("second fleet: %d enrolled and %d refused, want 150 in all", len(during), len(refused))
	}

	t.Log("a third fleet after the agent knows: every device refused")
	checkRefused := func(what string, creds []system.Cred) {
		t.Helper()
		got, refused := fleetOutcome(enrollFleet(t, s, creds, fleetOptions{}))
		if len(got) != 0 {
			t.Errorf("%s: %d devices got a certificate from a disabled gateway", what, len(got))
		}
		for d, why := range refused {
			if !strings.Contains(why, "403") || !strings.Contains(why, disabledMessage) {
				t.Errorf("%s: device %s: got %q, want a 403 saying %q", what, d, why, disabledMessage)
			}
		}
	}
	checkRefused("after the disable", creds[250:275])

	t.Log("the broker dropped the agent")
	if n := len(logLines(t, s, "controlplane", "disconnecting dms", s.DMSID)); n == 0 {
		t.Error("the broker's log shows no disconnection of the DMS")
	}
	// Banned at its reconnect, or first the control plane's DMSDisabled
	// answer to a message sent just before the broker dropped it (the
	// agent then waits DisabledRetry, 5 minutes, before reconnecting).
	if n := len(logLines(t, s, "agent", disabledMessage, `"learned_from":`)); n != 1 {
		t.Errorf("the agent logged %d lines saying it was disabled, want 1", n)
	}

	t.Log("the agent remembers it across a restart")
	bannedLines := func() int {
		return len(logLines(t, s, "controlplane", "refusing mqtt connect", s.DMSID, "the DMS is disabled", `"connack":"0x8a"`))
	}
	bannedBefore := bannedLines()
	if err := s.Proc("agent").Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Proc("agent").Start(); err != nil {
		t.Fatal(err)
	}
	waitAgentUp(t, s, time.Minute)
	if st, _ := agentStatus(s); !st.Disabled {
		t.Errorf("after a restart the agent's /status says disabled=%v, want true", st.Disabled)
	}
	checkRefused("after an agent restart", creds[275:])
	// The restarted agent connects at once; the broker refuses it.
	if !waitFor(30*time.Second, func() bool { return bannedLines() > bannedBefore }) {
		t.Error("the broker's log shows no connection of the restarted agent refused with CONNACK 0x8a Banned")
	}

	t.Log("nothing the agent accepted is lost")
	outbox := agentOutbox(t, s)
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	certs, err := edgeCerts(ctx, conn, s.DMSID)
	if err != nil {
		t.Fatal(err)
	}
	inRegistry := map[string]registryCert{}
	for _, c := range certs {
		inRegistry[c.Serial] = c
	}
	recorded, waiting := 0, 0
	for _, set := range []map[string]*enrolled{before, during} {
		for d, e := range set {
			sn := serialOf(e.Cert)
			c, ok := inRegistry[sn]
			switch {
			case ok:
				recorded++
				if c.Device != d || !bytes.Equal(c.DER, e.Cert.Raw) || c.Events != 1 {
					t.Errorf("device %s: certificate %s is in the registry for %q with %d issued events (same DER: %v), want for %s, once", d, sn, c.Device, c.Events, bytes.Equal(c.DER, e.Cert.Raw), d)
				}
			case outbox["issued-"+sn]:
				waiting++
			default:
				t.Errorf("device %s: its certificate %s is neither in the registry nor in the agent's outbox: lost", d, sn)
			}
		}
	}
	t.Logf("%d accepted certificates in the registry, %d waiting in the disabled agent's outbox", recorded, waiting)
	var active int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM certificates c JOIN cas ON cas.id = c.issuer_id WHERE cas.dms_id = $1 AND c.status <> 'revoked'`, s.DMSID).Scan(&active); err != nil {
		t.Fatal(err)
	}
	if active != 0 {
		t.Errorf("%d certificates of the disabled DMS's edge CAs are not revoked", active)
	}
}

// TestDMSDisabledBehindExternalBroker: mosquitto (an external broker)
// knows nothing of DMS states and keeps the disabled gateway connected;
// the control plane answers the agent's next message with a DMSDisabled
// update instead (protocol 4). The agent must learn it from that answer
// within a heartbeat, stay connected, refuse enrollments with the same
// 403, and keep what it accepted: certificates enrolled before the
// disable stay in the registry (revoked with the edge CA).
func TestDMSDisabledBehindExternalBroker(t *testing.T) {
	s := system.StartT(t, system.Options{ExternalBroker: true, Secrets: 1})
	ctx := context.Background()
	creds, err := s.MintSecrets(ctx, 60, "ext-disabled-")
	if err != nil {
		t.Fatal(err)
	}
	before := enrollFleet(t, s, creds[:40], fleetOptions{}).wait(t)
	assertExactlyOnce(t, s, before)

	if err := s.Call("POST", "/api/v1/dmss/"+s.DMSID+"/disable", nil, nil); err != nil {
		t.Fatalf("disabling the DMS: %v", err)
	}
	// The agent's heartbeat (every 2 s in the testbed) gets the news.
	if err := s.WaitAgent(ctx, 90*time.Second, func(st system.AgentStatus) bool { return st.Disabled }); err != nil {
		st, _ := agentStatus(s)
		t.Fatalf("behind mosquitto the agent's /status does not say it is disabled 90 s after the DMS was: %+v", st)
	}
	if st, _ := agentStatus(s); !st.Online {
		t.Errorf("the agent went offline: mosquitto should keep it connected (%+v)", st)
	}
	if n := len(logLines(t, s, "agent", disabledMessage, `"learned_from":"control plane"`)); n != 1 {
		t.Errorf("the agent logged %d lines saying the control plane told it it was disabled, want 1", n)
	}
	if len(logLines(t, s, "controlplane-1", "answered DMSDisabled", s.DMSID)) == 0 {
		t.Error("the control plane's log shows no DMSDisabled answer")
	}
	got, refused := fleetOutcome(enrollFleet(t, s, creds[40:], fleetOptions{}))
	if len(got) != 0 {
		t.Errorf("%d devices got a certificate from the disabled gateway", len(got))
	}
	for d, why := range refused {
		if !strings.Contains(why, "403") || !strings.Contains(why, disabledMessage) {
			t.Errorf("device %s: got %q, want a 403 saying %q", d, why, disabledMessage)
		}
	}

	t.Log("a restarted agent stays disabled: its accepted connection does not clear what the control plane said")
	if err := s.Proc("agent").Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Proc("agent").Start(); err != nil {
		t.Fatal(err)
	}
	waitAgentUp(t, s, time.Minute)
	if err := s.WaitAgent(ctx, time.Minute, func(st system.AgentStatus) bool { return st.Online }); err != nil {
		t.Fatalf("the restarted agent does not connect to mosquitto: %v", err)
	}
	// Without the stored source the accepted connection would enable
	// the agent at once, until its first heartbeat's answer (2 s).
	if waitFor(5*time.Second, func() bool {
		st, _ := agentStatus(s)
		return !st.Disabled || len(logLines(t, s, "agent", "accepts this gateway again")) > 0
	}) {
		st, _ := agentStatus(s)
		t.Errorf("after a restart behind mosquitto the agent was enabled again (/status disabled=%v; log: %q)", st.Disabled, logLines(t, s, "agent", "accepts this gateway again"))
	}

	var serials []string
	for _, e := range before {
		serials = append(serials, serialOf(e.Cert))
	}
	if n := certsInRegistry(t, s, serials); n != len(serials) {
		t.Errorf("the registry holds %d of the %d certificates accepted before the disable", n, len(serials))
	}
}

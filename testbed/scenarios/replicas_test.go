package scenarios

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/testbed/system"
)

// TestTwoReplicasExternalBroker runs two control plane replicas (one
// database, one SoftHSM2 token) behind mosquitto, each replica's sync
// consumer on the shared subscription, while 300 devices enroll over EST
// in three batches: online; with the gateway's uplink cut (Uplink.Cut
// closes the TCP proxy between the agent and mosquitto: the edge CA signs
// offline and the outbox grows); and after the uplink is restored, when
// replica 2 is killed with SIGKILL as soon as the agent is back online
// and starts draining its outbox (the agent sends small batches of 10
// records, so the drain is several messages), mosquitto is restarted
// (SIGTERM, start on the same port; sessions and queued messages
// persist) and replica 2 is started again. The registry must hold each
// accepted certificate exactly once, and both replicas' logs must show
// they applied records.
func TestTwoReplicasExternalBroker(t *testing.T) {
	const devices = 300
	s := system.StartT(t, system.Options{ExternalBroker: true, Replicas: 2, AgentSyncBatch: 10, Secrets: 1})
	ctx := context.Background()
	creds, err := s.MintSecrets(ctx, devices, "replicas-")
	if err != nil {
		t.Fatal(err)
	}
	var accepted = map[string]*enrolled{}
	collect := func(f *fleet) {
		for d, e := range f.wait(t) {
			accepted[d] = e
		}
	}

	t.Log("batch 1: 100 devices online")
	collect(enrollFleet(t, s, creds[:100], fleetOptions{}))

	t.Log("batch 2: 100 devices with the uplink cut")
	s.Uplink.Cut()
	if err := s.WaitAgent(ctx, time.Minute, func(st system.AgentStatus) bool { return !st.Online }); err != nil {
		t.Fatalf("the agent still says it is online a minute after the uplink was cut: %v", err)
	}
	collect(enrollFleet(t, s, creds[100:200], fleetOptions{}))
	cut, _ := agentStatus(s)
	t.Logf("outbox with the uplink cut: %d records", cut.QueueDepth)

	t.Log("batch 3: 100 devices while replica 2 dies mid-drain and mosquitto restarts")
	f := enrollFleet(t, s, creds[200:], fleetOptions{})
	if err := s.Uplink.Restore(); err != nil {
		t.Fatal(err)
	}
	var atKill system.AgentStatus
	if !waitFor(time.Minute, func() bool { st, ok := agentStatus(s); atKill = st; return ok && st.Online }) {
		t.Fatal("the agent is not online a minute after the uplink was restored")
	}
	if err := s.Proc("controlplane-2").Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("replica 2 killed with the agent online and %d records in its outbox", atKill.QueueDepth)
	f.waitAccepted(t, 30, time.Minute)
	if err := s.Mosquitto.Restart(ctx); err != nil {
		t.Fatalf("restarting mosquitto: %v", err)
	}
	t.Log("mosquitto restarted")
	f.waitAccepted(t, 60, time.Minute)
	if err := s.Proc("controlplane-2").Start(); err != nil {
		t.Fatal(err)
	}
	t.Log("replica 2 started again")
	collect(f)

	if len(accepted) != devices {
		t.Fatalf("%d of %d devices enrolled", len(accepted), devices)
	}
	assertExactlyOnce(t, s, accepted)
	for _, name := range []string{"controlplane-1", "controlplane-2"} {
		msgs, recs := appliedByReplica(t, s, name)
		t.Logf("%s applied %d messages with %d records", name, msgs, recs)
		if msgs == 0 {
			t.Errorf("%s applied no message with records: the shared subscription did not share the work", name)
		}
	}
}

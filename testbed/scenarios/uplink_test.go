package scenarios

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/testbed/system"
)

// TestFactoryLineUplinkCutForWholeBatch cuts the gateway's uplink before a
// batch of devices (the TCP proxy between the agent and the broker closes
// its listener and every connection: Uplink.Cut), enrolls the whole batch
// offline (local mode: the edge CA signs), watches the agent's outbox grow
// on /status, restores the uplink and checks the registry ends with each
// certificate exactly once.
func TestFactoryLineUplinkCutForWholeBatch(t *testing.T) {
	const devices = 300
	s := system.StartT(t, system.Options{})
	ctx := context.Background()
	creds, err := s.MintSecrets(ctx, devices, "uplink-")
	if err != nil {
		t.Fatal(err)
	}

	s.Uplink.Cut()
	if err := s.WaitAgent(ctx, time.Minute, func(st system.AgentStatus) bool { return !st.Online }); err != nil {
		t.Fatalf("the agent still says it is online a minute after the uplink was cut: %v", err)
	}
	before, _ := agentStatus(s)

	f := enrollFleet(t, s, creds, fleetOptions{})
	maxDepth := before.QueueDepth
	for done := false; !done; {
		select {
		case <-f.done:
			done = true
		case <-time.After(200 * time.Millisecond):
		}
		if st, ok := agentStatus(s); ok {
			if st.Online {
				t.Errorf("the agent says it is online while its uplink is cut")
			}
			maxDepth = max(maxDepth, st.QueueDepth)
		}
	}
	accepted := f.wait(t)
	if len(accepted) != devices {
		t.Fatalf("%d of %d devices enrolled offline", len(accepted), devices)
	}
	// Nothing could leave the gateway: every certificate waits in its
	// outbox.
	cut, _ := agentStatus(s)
	t.Logf("queue depth: %d before the batch, %d at most while it ran, %d after it", before.QueueDepth, maxDepth, cut.QueueDepth)
	if cut.QueueDepth < before.QueueDepth+devices {
		t.Errorf("queue depth after the offline batch is %d, want at least %d (%d before + %d certificates)", cut.QueueDepth, before.QueueDepth+devices, before.QueueDepth, devices)
	}
	if maxDepth <= before.QueueDepth {
		t.Errorf("the queue depth never grew while devices enrolled offline (stayed at %d)", maxDepth)
	}
	if err := s.Uplink.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAgent(ctx, time.Minute, func(st system.AgentStatus) bool { return st.Online }); err != nil {
		t.Fatalf("the agent is not online a minute after the uplink was restored: %v", err)
	}
	assertExactlyOnce(t, s, accepted)
	waitQueueEmpty(t, s)
}

package syncclient

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

func TestReconnectBackoffWhileDisabled(t *testing.T) {
	c := &Client{DisabledRetry: 5 * time.Minute}
	for _, tc := range []struct {
		name     string
		disabled bool
		attempt  int
		min, max time.Duration
	}{
		{"enabled, first attempt", false, 0, 0, 250 * time.Millisecond},
		{"enabled, later attempt", false, 10, 8 * time.Second, 16 * time.Second},
		{"disabled, first attempt stays quick", true, 0, 0, 250 * time.Millisecond},
		{"disabled, later attempts wait", true, 1, 5 * time.Minute, 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.disabled.Store(tc.disabled)
			if got := c.reconnectBackoff(tc.attempt); got < tc.min || got > tc.max {
				t.Errorf("got %v, want %v..%v", got, tc.min, tc.max)
			}
		})
	}
}

func TestSetDisabledReportsChanges(t *testing.T) {
	var got []bool
	c := &Client{OnDisabled: func(v bool, _ string) { got = append(got, v) }}
	for _, v := range []bool{true, true, false, false, true} {
		c.setState(v, false, false)
	}
	if want := []bool{true, false, true}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("got %v, want %v", got, want)
	}
}

// outbox is an Outbox in memory that counts reads.
type outbox struct {
	peeks int
	acked []string
}

func (o *outbox) Peek(int) ([]store.OutboxRecord, error) { o.peeks++; return nil, nil }
func (o *outbox) Ack(ids ...string) (int, error) {
	o.acked = append(o.acked, ids...)
	return len(ids), nil
}
func (o *outbox) Depth() (int, error) { return 0, nil }

func downMessage(t *testing.T, dms string, d *syncpb.Down) *paho.Publish {
	t.Helper()
	b, err := syncproto.Marshal(&syncpb.Envelope{MessageId: syncproto.NewMessageID(), DmsId: dms, SentAtUnixMs: time.Now().UnixMilli(),
		ProtocolVersion: syncproto.ProtocolVersion, Body: &syncpb.Envelope_Down{Down: d}})
	if err != nil {
		t.Fatal(err)
	}
	return &paho.Publish{Topic: syncproto.DownTopic(dms), Payload: b}
}

// TestDisabledByControlPlane: behind an external broker the agent learns
// that its DMS is disabled from the control plane's DMSDisabled answer.
// That answer acknowledges nothing and is no sync (the local quota does
// not restart); an accepted connection does not clear it (every
// connection is accepted there), no record is sent meanwhile, and the
// first other answer of the control plane clears it.
func TestDisabledByControlPlane(t *testing.T) {
	const dms = "0b9c3d1e-8f1a-4c55-9a43-6b1f2e3d4c5b"
	var changes []bool
	var sources []string
	ob := &outbox{}
	c := &Client{DMSID: dms, Store: ob, OnDisabled: func(v bool, src string) { changes = append(changes, v); sources = append(sources, src) }, inFlight: map[string]time.Time{}}
	c.connected()

	c.onDown(downMessage(t, dms, &syncpb.Down{Updates: []*syncpb.Update{{UpdateId: "dms-disabled",
		Payload: &syncpb.Update_DmsDisabled{DmsDisabled: &syncpb.DMSDisabled{DisabledAtUnixMs: time.Now().UnixMilli()}}}}}))
	if !c.IsDisabled() || c.DisabledSource() != SourceControlPlane || len(changes) != 1 || !changes[0] || sources[0] != SourceControlPlane {
		t.Fatalf("after DMSDisabled: disabled %v (source %s), changes %v %v", c.IsDisabled(), c.DisabledSource(), changes, sources)
	}
	c.HeartbeatExtra = func(h *syncpb.Heartbeat) { h.PolicyDigest = []byte("digest") }
	if hb := c.heartbeat(); hb.PolicyDigest != nil {
		t.Errorf("a heartbeat while the control plane says disabled carries the policy digest %q: an active DMS might not answer it", hb.GetPolicyDigest())
	}
	if !c.LastSync().IsZero() {
		t.Errorf("a DMSDisabled answer counted as a sync (%v): it would restart the local quota", c.LastSync())
	}
	c.connected()
	if !c.IsDisabled() {
		t.Fatal("an accepted connection cleared the state the control plane set")
	}
	c.pump(context.Background(), nil)
	if ob.peeks != 0 {
		t.Errorf("the outbox was read %d times while disabled: records would be sent", ob.peeks)
	}

	c.onDown(downMessage(t, dms, &syncpb.Down{Ack: &syncpb.Ack{RecordIds: []string{"r-1"}}}))
	if c.IsDisabled() || len(changes) != 2 || changes[1] || c.LastSync().IsZero() || len(ob.acked) != 1 {
		t.Errorf("after an ack: disabled %v, changes %v, last sync %v, acked %v", c.IsDisabled(), changes, c.LastSync(), ob.acked)
	}

	// Banned at CONNECT is cleared by the next accepted connection; so
	// is Banned after DMSDisabled (the source becomes the broker).
	c.onDown(downMessage(t, dms, &syncpb.Down{Updates: []*syncpb.Update{{UpdateId: "dms-disabled",
		Payload: &syncpb.Update_DmsDisabled{DmsDisabled: &syncpb.DMSDisabled{}}}}}))
	c.setState(true, false, false)
	if c.DisabledSource() != SourceBroker || sources[len(sources)-1] != SourceBroker || !changes[len(changes)-1] {
		t.Errorf("source after Banned: %s (reported %v %v)", c.DisabledSource(), changes, sources)
	}
	c.connected()
	if c.IsDisabled() {
		t.Error("an accepted connection did not clear Banned")
	}
}

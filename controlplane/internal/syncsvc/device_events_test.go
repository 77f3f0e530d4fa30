package syncsvc_test

import (
	"testing"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/proto/syncpb"
)

// TestDeviceEventsInTimeline: an agent's event about one of its DMS's
// devices shows in the device's timeline; one about another DMS's device
// or an unknown device stays in sync_events only; a detail the timeline
// cannot hold does not fail the message.
func TestDeviceEventsInTimeline(t *testing.T) {
	f := newFixture(t)
	a := f.dms(apitypes.CreateDMSRequest{Name: "gw-a"})
	b := f.dms(apitypes.CreateDMSRequest{Name: "gw-b"})
	f.e.MustDo("POST", "/api/v1/devices", f.e.AdminToken, apitypes.RegisterDeviceRequest{ID: "cam-a", DMSID: a.String()}, nil, 201)
	f.e.MustDo("POST", "/api/v1/devices", f.e.AdminToken, apitypes.RegisterDeviceRequest{ID: "cam-b", DMSID: b.String()}, nil, 201)
	ev := func(id, device, kind, detail string) *syncpb.Record {
		return &syncpb.Record{RecordId: id, DeviceId: device, Payload: &syncpb.Record_Event{Event: &syncpb.Event{Kind: kind, DetailJson: detail}}}
	}
	down := f.apply(a,
		ev("rotation-1", "cam-a", "rotation.succeeded", `{"serial":"ab12","route":"cams"}`),
		ev("rotation-2", "cam-b", "rotation.failed", `{"phase":"csr"}`),
		ev("rotation-3", "ups-unknown", "rotation.no_route", `{}`),
		ev("rotation-4", "cam-a", "rotation.failed", `{"stderr":"nul \u0000 byte"}`),
		ev("rotation-5", "cam-a", "odd.detail", `[1, 2]`),
		ev("selftest-1", "", "agent.selftest", ``),
	)
	if got := len(down.GetAck().GetRecordIds()); got != 6 {
		t.Fatalf("acked %d of 6 records: %v", got, down.GetAck())
	}
	if n := f.count(`SELECT count(*) FROM sync_events WHERE dms_id = $1`, a); n != 6 {
		t.Errorf("sync_events: %d rows, want 6", n)
	}
	kinds := map[string]map[string]any{}
	for _, e := range f.device("cam-a").Timeline {
		kinds[e.Kind] = e.Detail
	}
	if d, ok := kinds["rotation.succeeded"]; !ok || d["serial"] != "ab12" || d["route"] != "cams" {
		t.Errorf("cam-a's timeline: %v, want rotation.succeeded with its detail", kinds)
	}
	if _, ok := kinds["rotation.failed"]; !ok {
		t.Errorf("cam-a's timeline lacks the event with a NUL in its detail: %v", kinds)
	}
	if d, ok := kinds["odd.detail"]; !ok || len(d) != 0 {
		t.Errorf("cam-a's timeline: a detail that is not an object: got %v", d)
	}
	for _, e := range f.device("cam-b").Timeline {
		if e.Kind == "rotation.failed" {
			t.Errorf("DMS gw-a wrote into the timeline of gw-b's device: %+v", e)
		}
	}
	if n := f.count(`SELECT count(*) FROM events WHERE device_id = 'ups-unknown'`); n != 0 {
		t.Errorf("an unknown device got %d events", n)
	}
}

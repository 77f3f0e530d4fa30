package broker

import (
	"log/slog"
	"path/filepath"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
)

func openStore(t *testing.T, path string) *store {
	t.Helper()
	s := &store{Hook: new(bolt.Hook)}
	s.SetOpts(slog.New(slog.DiscardHandler), &mqtt.HookOptions{})
	if err := s.Init(&bolt.Options{Path: path}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

func TestStoreInflightPacketIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openStore(t, path)
	cl := &mqtt.Client{ID: "client:with:colons"}
	for _, id := range []uint16{1, 7, 65535} {
		s.OnQosPublish(cl, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			PacketID:    id,
			TopicName:   "t",
			Payload:     []byte{byte(id)},
		}, 0, 0)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	s = openStore(t, path)
	msgs, err := s.StoredInflightMessages()
	if err != nil {
		t.Fatalf("StoredInflightMessages: %v", err)
	}
	got := map[uint16]bool{}
	for _, m := range msgs {
		if m.Client != cl.ID {
			t.Errorf("client: got %q, want %q", m.Client, cl.ID)
		}
		got[m.PacketID] = true
	}
	if len(msgs) != 3 || !got[1] || !got[7] || !got[65535] {
		t.Fatalf("restored packet ids: got %v (%d messages), want 1, 7, 65535", got, len(msgs))
	}
}

func TestStoreSavesGrantedSubscriptionsOnly(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "mqtt.db"))
	cl := &mqtt.Client{ID: "c"}
	s.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{
		{Filter: "granted"}, {Filter: "refused"}, {Filter: "granted-too"},
	}}, []byte{0x01, 0x87, 0x00})
	subs, err := s.StoredSubscriptions()
	if err != nil {
		t.Fatalf("StoredSubscriptions: %v", err)
	}
	got := map[string]byte{}
	for _, sub := range subs {
		got[sub.Filter] = sub.Qos
	}
	if len(got) != 2 || got["granted"] != 1 || got["granted-too"] != 0 {
		t.Fatalf("stored subscriptions: got %v, want granted:1 granted-too:0", got)
	}
}

func TestStoreAfterStop(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "mqtt.db"))
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// Calls after Stop are ignored instead of dereferencing a nil database.
	s.OnQosPublish(&mqtt.Client{ID: "c"}, packets.Packet{PacketID: 1}, 0, 0)
	if msgs, err := s.StoredInflightMessages(); err != nil || len(msgs) != 0 {
		t.Fatalf("StoredInflightMessages after Stop: got %v, %v; want none", msgs, err)
	}
}

func TestPacketIDFromKey(t *testing.T) {
	cases := []struct {
		key  string
		want uint16
	}{
		{"IFM_abc:12", 12},
		{"IFM_a:b:c:65535", 65535},
		{"IFM_abc:65536", 0},
		{"IFM_abc:", 0},
		{"IFM_abc", 0},
		{"IFM_abc:x1", 0},
	}
	for _, c := range cases {
		if got := packetIDFromKey(c.key); got != c.want {
			t.Errorf("packetIDFromKey(%q): got %d, want %d", c.key, got, c.want)
		}
	}
}

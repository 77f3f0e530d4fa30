package syncproto_test

import (
	"strings"
	"testing"

	"github.com/outpost-pki/outpost/proto/syncproto"
)

func TestTopics(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{syncproto.UpTopic(testDMS), "outpost/v1/dms/" + testDMS + "/up"},
		{syncproto.DownTopic(testDMS), "outpost/v1/dms/" + testDMS + "/down"},
		{syncproto.UpTopicFilter, "outpost/v1/dms/+/up"},
		{syncproto.SharedUpSubscription, "$share/outpost-controlplane/outpost/v1/dms/+/up"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestDMSFromTopic(t *testing.T) {
	for _, tc := range []struct {
		topic  string
		id     string
		up, ok bool
	}{
		{syncproto.UpTopic(testDMS), testDMS, true, true},
		{syncproto.DownTopic(testDMS), testDMS, false, true},
		{"", "", false, false},
		{"outpost/v1/dms/", "", false, false},
		{"outpost/v1/dms//up", "", false, false},
		{"outpost/v1/dms/+/up", "", false, false},
		{"outpost/v1/dms/#", "", false, false},
		{"outpost/v1/dms/" + testDMS, "", false, false},
		{"outpost/v1/dms/" + testDMS + "/", "", false, false},
		{"outpost/v1/dms/" + testDMS + "/up/", "", false, false},
		{"outpost/v1/dms/" + testDMS + "/up/x", "", false, false},
		{"outpost/v1/dms/" + testDMS + "/sideways", "", false, false},
		{"outpost/v1/dms/" + testDMS + "/+", "", false, false},
		{"outpost/v1/dms/" + testDMS + "/#", "", false, false},
		{"outpost/v1/dms/" + strings.ToUpper(testDMS) + "/up", "", false, false},
		{"outpost/v2/dms/" + testDMS + "/up", "", false, false},
		{"/outpost/v1/dms/" + testDMS + "/up", "", false, false},
		{"$share/outpost-controlplane/outpost/v1/dms/" + testDMS + "/up", "", false, false},
		{"outpost/v1/dms/x/" + testDMS + "/up", "", false, false},
	} {
		id, up, ok := syncproto.DMSFromTopic(tc.topic)
		if id != tc.id || up != tc.up || ok != tc.ok {
			t.Errorf("DMSFromTopic(%q): got (%q, %v, %v), want (%q, %v, %v)", tc.topic, id, up, ok, tc.id, tc.up, tc.ok)
		}
	}
}

func TestValidDMSID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{testDMS, true},
		{"00000000-0000-0000-0000-000000000001", true},
		{"", false},
		{"00000000-0000-0000-0000-000000000000", false},
		{strings.ToUpper(testDMS), false},
		{"{" + testDMS + "}", false},
		{"urn:uuid:" + testDMS, false},
		{strings.ReplaceAll(testDMS, "-", ""), false},
		{testDMS[:35], false},
		{testDMS + "0", false},
		{"0190f3a2_7c4e-7b1d-9a6f-3c2e1d0b9a88", false},
		{"0190f3a2-7c4e-7b1d-9a6f-3c2e1d0b9a8g", false},
		{"0190f3a2-7c4e-7b1d-9a6f3-c2e1d0b9a88", false},
		{"0190f3a2-7c4e-7b1d-9a6f-3c2e1d0b9a+#", false},
	} {
		if got := syncproto.ValidDMSID(tc.id); got != tc.want {
			t.Errorf("ValidDMSID(%q): got %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestNewMessageID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := syncproto.NewMessageID()
		if !syncproto.ValidDMSID(id) || len(id) > syncproto.MaxIDLength {
			t.Fatalf("got %q, want a canonical UUID", id)
		}
		if id[14] != '7' {
			t.Fatalf("got %q, want a UUIDv7", id)
		}
		if seen[id] {
			t.Fatalf("got %q twice", id)
		}
		seen[id] = true
	}
}

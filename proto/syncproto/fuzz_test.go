package syncproto_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/proto/syncproto"
)

// FuzzUnmarshal: Unmarshal never panics, fails only with one of the four
// error kinds, and whatever it accepts re-marshals (Marshal) to bytes that
// Unmarshal accepts again as an equal envelope: parse -> marshal -> parse.
// Seeds are valid envelopes of every message type. Crashers are kept under
// testdata/fuzz/FuzzUnmarshal.
func FuzzUnmarshal(f *testing.F) {
	for _, e := range samples() {
		b, err := syncproto.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := syncproto.Unmarshal(b)
		if err != nil {
			if e != nil {
				t.Fatalf("Unmarshal returned an envelope with error %v", err)
			}
			if !errors.Is(err, syncproto.ErrTooLarge) && !errors.Is(err, syncproto.ErrMalformed) &&
				!errors.Is(err, syncproto.ErrUnsupportedVersion) && !errors.Is(err, syncproto.ErrInvalid) {
				t.Fatalf("Unmarshal: got an error of no known kind: %v", err)
			}
			return
		}
		b2, err := syncproto.Marshal(e)
		if err != nil {
			t.Fatalf("Marshal of an accepted envelope: %v", err)
		}
		e2, err := syncproto.Unmarshal(b2)
		if err != nil {
			t.Fatalf("Unmarshal of re-marshalled envelope: %v", err)
		}
		if !proto.Equal(e, e2) {
			t.Fatalf("round trip changed the envelope:\n got %v\nwant %v", e2, e)
		}
		b3, err := syncproto.Marshal(e2)
		if err != nil {
			t.Fatalf("Marshal again: %v", err)
		}
		if !bytes.Equal(b2, b3) {
			t.Fatalf("Marshal is not stable: %x then %x", b2, b3)
		}
	})
}

// FuzzDMSFromTopic: DMSFromTopic never panics, and what it accepts is a
// valid id whose topic, rebuilt, is the input.
func FuzzDMSFromTopic(f *testing.F) {
	for _, s := range []string{
		syncproto.UpTopic(testDMS), syncproto.DownTopic(testDMS), syncproto.UpTopicFilter,
		syncproto.SharedUpSubscription, "outpost/v1/dms/" + testDMS + "/up/x", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		id, up, ok := syncproto.DMSFromTopic(topic)
		if !ok {
			if id != "" || up {
				t.Fatalf("DMSFromTopic(%q): not ok but got (%q, %v)", topic, id, up)
			}
			return
		}
		if !syncproto.ValidDMSID(id) || strings.ContainsAny(id, "/+#") {
			t.Fatalf("DMSFromTopic(%q): accepted id %q", topic, id)
		}
		want := syncproto.DownTopic(id)
		if up {
			want = syncproto.UpTopic(id)
		}
		if topic != want {
			t.Fatalf("DMSFromTopic(%q) = (%q, %v): rebuilt topic %q", topic, id, up, want)
		}
	})
}

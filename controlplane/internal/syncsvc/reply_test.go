package syncsvc

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// TestBuildDownLimits: the reply never breaks syncproto's limits; records
// whose answers do not fit are left out whole (not acked), the policy and
// its bundles go together or not at all, CRLs each when they fit.
func TestBuildDownLimits(t *testing.T) {
	blob := func(n int) []byte { return bytes.Repeat([]byte{0x30}, n) }
	result := func(i, size int) answer {
		id := fmt.Sprintf("rec-%d", i)
		u := &syncpb.Update{UpdateId: "enroll-" + id, Payload: &syncpb.Update_EnrollmentResult{EnrollmentResult: &syncpb.EnrollmentResult{
			RequestId: id, CertificateDer: blob(size), ChainDers: [][]byte{blob(size), blob(size)}}}}
		return answer{ackID: id, updates: []*syncpb.Update{u}}
	}
	policy := func() []*syncpb.Update {
		return []*syncpb.Update{
			{UpdateId: "bundle-a", Payload: &syncpb.Update_CaBundle{CaBundle: &syncpb.CABundle{CaId: "a", CertificateDers: [][]byte{blob(2000)}}}},
			{UpdateId: "bundle-b", Payload: &syncpb.Update_CaBundle{CaBundle: &syncpb.CABundle{CaId: "b", CertificateDers: [][]byte{blob(2000)}}}},
			{UpdateId: "policy-x", Payload: &syncpb.Update_Policy{Policy: &syncpb.Policy{Mode: "online", DeviceAuth: "client_cert", Version: 1}}},
		}
	}
	crlUpdate := func(ca string, size int) *syncpb.Update {
		return &syncpb.Update{UpdateId: "crl-" + ca, Payload: &syncpb.Update_Crl{Crl: &syncpb.CRLUpdate{CaId: ca, CrlDer: blob(size)}}}
	}
	tests := []struct {
		name          string
		answers       []answer
		state         *stateUpdates
		acked, policy int // records acked; 1 if the policy group is in
		crls          int
		// cut: as many answers as fit, not all, without the policy.
		cut bool
	}{
		{name: "nothing", state: &stateUpdates{}},
		{name: "large answers", answers: func() (as []answer) {
			for i := range 500 {
				as = append(as, result(i, 4000))
			}
			return as
		}(), state: &stateUpdates{policy: policy(), crls: []*syncpb.Update{crlUpdate("a", 1000)}}, cut: true},
		{name: "update count", answers: func() (as []answer) {
			for i := range 499 {
				as = append(as, result(i, 10))
			}
			return as
		}(), state: &stateUpdates{policy: policy(), crls: []*syncpb.Update{crlUpdate("a", 100), crlUpdate("b", 100)}}, acked: 499, crls: 1},
		{name: "policy, then the CRLs that fit", answers: []answer{result(0, 100), {rejection: &syncpb.Rejection{RecordId: "bad", Reason: "no", Permanent: true}}},
			state: &stateUpdates{policy: policy(), crls: []*syncpb.Update{crlUpdate("a", 600<<10), crlUpdate("b", 600<<10), crlUpdate("c", 300<<10)}},
			acked: 2, policy: 1, crls: 2},
		{name: "a CRL of the largest size alone", state: &stateUpdates{crls: []*syncpb.Update{crlUpdate("0123456789abcdef0123456789abcdef0123", syncproto.MaxCRLSize)}}, crls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			down := buildDown(tt.answers, tt.state)
			if tt.acked+tt.policy+tt.crls == 0 && !tt.cut {
				if down != nil {
					t.Fatalf("got %v, want no reply", down)
				}
				return
			}
			env := &syncpb.Envelope{MessageId: syncproto.NewMessageID(), DmsId: uuid.NewString(), SentAtUnixMs: 1, ProtocolVersion: syncproto.ProtocolVersion,
				Body: &syncpb.Envelope_Down{Down: down}}
			if _, err := syncproto.Marshal(env); err != nil {
				t.Fatalf("reply not sendable: %v", err)
			}
			acked := len(down.GetAck().GetRecordIds()) + len(down.GetAck().GetRejections())
			var results, policies, crls int
			for _, u := range down.GetUpdates() {
				switch {
				case u.GetEnrollmentResult() != nil:
					results++
				case u.GetPolicy() != nil:
					policies++
				case u.GetCrl() != nil:
					crls++
				}
			}
			if tt.cut {
				if acked == 0 || acked == 500 || results != len(down.GetAck().GetRecordIds()) || policies != 0 {
					t.Fatalf("acked %d with %d results and %d policies", acked, results, policies)
				}
				return
			}
			if acked != tt.acked || policies != tt.policy || crls != tt.crls {
				t.Errorf("got %d acked, %d policies, %d CRLs; want %d, %d, %d", acked, policies, crls, tt.acked, tt.policy, tt.crls)
			}
			if tt.policy == 1 && len(down.GetUpdates()) < 3 {
				t.Errorf("policy without its bundles")
			}
		})
	}
}

func TestClip(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},
		{"a\xffb", 10, "a?b"},
	} {
		if got := clip(tt.in, tt.n); got != tt.want {
			t.Errorf("clip(%q, %d): got %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

package store

import (
	"reflect"
	"testing"
)

// FuzzDecodeValues feeds arbitrary bytes to every value decoder: bbolt
// has no checksums on data pages, so a damaged medium hands them garbage.
// They must return an error rather than panic, and what decodes must
// survive encode -> decode unchanged (byte equality is too strict: a
// varint may be spelled in more than one way).
func FuzzDecodeValues(f *testing.F) {
	f.Add(encodeOutbox(OutboxRecord{ID: "id", DeviceID: "dev", Payload: []byte("payload")}, t0))
	f.Add(encodeEnrollment(Enrollment{Status: EnrollmentIssued, CSR: []byte("csr"), Certificate: []byte("cert"), CreatedAt: t0, UpdatedAt: t0}))
	f.Add(encodeIssued(IssuedRecord{IssuedAt: t0, Data: []byte("x")}))
	f.Add([]byte{})
	f.Add([]byte{formatV1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := decodeOutbox(1, data); err == nil {
			again, err := decodeOutbox(1, encodeOutbox(r, r.EnqueuedAt))
			if err != nil || !reflect.DeepEqual(again, r) {
				t.Errorf("outbox round trip: got %+v %v, want %+v", again, err, r)
			}
		}
		if e, err := decodeEnrollment("req", data); err == nil {
			again, err := decodeEnrollment("req", encodeEnrollment(e))
			if err != nil || !reflect.DeepEqual(again, e) {
				t.Errorf("enrollment round trip: got %+v %v, want %+v", again, err, e)
			}
		}
		if r, err := decodeIssued("1", data); err == nil {
			again, err := decodeIssued("1", encodeIssued(r))
			if err != nil || !reflect.DeepEqual(again, r) {
				t.Errorf("issued round trip: got %+v %v, want %+v", again, err, r)
			}
		}
		_, _ = decodePolicy(data)
		_, _, _, _ = decodeCRL(data)
	})
}

package store

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestRevoked(t *testing.T) {
	s, _ := openTemp(t, Options{})
	at := t0.Add(-time.Hour)
	if err := s.PutRevoked("issuing-ca-1", "1f2e3d", 1, at); err != nil {
		t.Fatalf("PutRevoked: %v", err)
	}
	tests := []struct {
		caID, serial string
		want         bool
	}{
		{"issuing-ca-1", "1f2e3d", true},
		{"issuing-ca-1", "001F2E3D", true}, // other spellings of the same serial
		{"issuing-ca-1", "0x1f2e3d", true},
		{"issuing-ca-1", "1f2e3e", false},
		{"issuing-ca-2", "1f2e3d", false}, // same serial, other CA
		{"issuing-ca-", "11f2e3d", false}, // no confusion across the separator
		{"issuing-ca-1x", "1f2e3d", false},
	}
	for _, tt := range tests {
		got, err := s.IsRevoked(tt.caID, tt.serial)
		if err != nil || got != tt.want {
			t.Errorf("IsRevoked(%s, %s): got %v %v, want %v", tt.caID, tt.serial, got, err, tt.want)
		}
	}
	if reason, gotAt, err := s.GetRevoked("issuing-ca-1", "1F2E3D"); err != nil || reason != 1 || !gotAt.Equal(at) {
		t.Errorf("GetRevoked: got %d %v %v, want 1 %v", reason, gotAt, err, at)
	}
	if _, _, err := s.GetRevoked("issuing-ca-2", "1f2e3d"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetRevoked of an unknown serial: got %v, want ErrNotFound", err)
	}

	// Idempotent: the same update again changes nothing; a corrected one
	// replaces the reason and time.
	for range 2 {
		if err := s.PutRevoked("issuing-ca-1", "1f2e3d", 1, at); err != nil {
			t.Fatalf("PutRevoked again: %v", err)
		}
	}
	if err := s.PutRevoked("issuing-ca-1", "001f2e3d", 4, t0); err != nil {
		t.Fatal(err)
	}
	if reason, gotAt, err := s.GetRevoked("issuing-ca-1", "1f2e3d"); err != nil || reason != 4 || !gotAt.Equal(t0) {
		t.Errorf("GetRevoked after a correction: got %d %v %v, want 4 %v", reason, gotAt, err, t0)
	}
	var n int
	if err := s.db.View(func(tx *bbolt.Tx) error { n = tx.Bucket(bucketRevoked).Stats().KeyN; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("revoked bucket holds %d keys after repeated puts of one serial, want 1", n)
	}

	// Every reason RFC 5280 defines, and a zero time.
	for _, reason := range []int{0, 1, 2, 3, 4, 5, 6, 8, 9, 10} {
		if err := s.PutRevoked("ca", "ab", reason, time.Time{}); err != nil {
			t.Errorf("PutRevoked reason %d: %v", reason, err)
		}
	}
	if reason, gotAt, err := s.GetRevoked("ca", "ab"); err != nil || reason != 10 || !gotAt.IsZero() {
		t.Errorf("GetRevoked(ca, ab): got %d %v %v, want 10 and the zero time", reason, gotAt, err)
	}
}

func TestRevokedInvalidArguments(t *testing.T) {
	s, _ := openTemp(t, Options{})
	tests := []struct {
		name, caID, serial string
		reason             int
	}{
		{"empty CA id", "", "ab", 1},
		{"CA id too long", strings.Repeat("c", MaxRecordIDLen+1), "ab", 1},
		{"CA id with NUL", "ca\x00x", "ab", 1},
		{"empty serial", "ca", "", 1},
		{"serial not hex", "ca", "xyz", 1},
		{"serial too long", "ca", strings.Repeat("a", maxSerialHex+1), 1},
		{"reason 7", "ca", "ab", 7},
		{"reason 11", "ca", "ab", 11},
		{"negative reason", "ca", "ab", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.PutRevoked(tt.caID, tt.serial, tt.reason, t0); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("PutRevoked: got %v, want ErrInvalidArgument", err)
			}
			if tt.reason != 1 {
				return // the lookup has no reason
			}
			if _, err := s.IsRevoked(tt.caID, tt.serial); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("IsRevoked: got %v, want ErrInvalidArgument", err)
			}
			if _, _, err := s.GetRevoked(tt.caID, tt.serial); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("GetRevoked: got %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestRevokedDurableAndCorrupt(t *testing.T) {
	s, path := openTemp(t, Options{})
	if err := s.PutRevoked("ca", "ab", 1, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IsRevoked("ca", "ab"); !errors.Is(err, ErrClosed) {
		t.Errorf("IsRevoked on a closed store: got %v, want ErrClosed", err)
	}
	if err := s.PutRevoked("ca", "cd", 1, t0); !errors.Is(err, ErrClosed) {
		t.Errorf("PutRevoked on a closed store: got %v, want ErrClosed", err)
	}
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketRevoked).Put(revokedKey("ca", "ef"), []byte{formatV1, 7})
	})
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, err := s.IsRevoked("ca", "ab"); err != nil || !ok {
		t.Errorf("IsRevoked after reopen: got %v %v, want true", ok, err)
	}
	// A damaged value still reads as revoked; its details are an error.
	if ok, err := s.IsRevoked("ca", "ef"); err != nil || !ok {
		t.Errorf("IsRevoked with a damaged value: got %v %v, want true", ok, err)
	}
	if _, _, err := s.GetRevoked("ca", "ef"); !errors.Is(err, ErrCorruptValue) {
		t.Errorf("GetRevoked with a damaged value: got %v, want ErrCorruptValue", err)
	}
}

// FuzzDecodeRevoked: a damaged value must give an error, not a panic, and
// what decodes must survive encode -> decode.
func FuzzDecodeRevoked(f *testing.F) {
	f.Add(encodeRevoked(1, t0))
	f.Add(encodeRevoked(10, time.Time{}))
	f.Add([]byte{formatV1, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		reason, at, err := decodeRevoked(data)
		if err != nil {
			return
		}
		r2, at2, err := decodeRevoked(encodeRevoked(reason, at))
		if err != nil || r2 != reason || !at2.Equal(at) {
			t.Errorf("round trip: got %d %v %v, want %d %v", r2, at2, err, reason, at)
		}
	})
}

package issuer

import (
	"bytes"
	"errors"
	"io"
	"math/big"
	"strings"
	"testing"
	"testing/iotest"
)

func TestNewSerial(t *testing.T) {
	const n = 10000
	seen := make(map[string]bool, n)
	short := 0
	for range n {
		s, err := NewSerial(nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.Sign() <= 0 {
			t.Fatalf("got %v, want a positive serial", s)
		}
		if got := s.BitLen(); got > 159 {
			t.Fatalf("bit length: got %v, want <= 159", got)
		}
		if s.BitLen() <= 64 {
			short++
		}
		k := s.String()
		if seen[k] {
			t.Fatalf("duplicate serial %v", s)
		}
		seen[k] = true
	}
	// A 159-bit random value is 64 bits or shorter with probability 2^-95.
	if short > 0 {
		t.Errorf("serials of 64 bits or fewer: got %v, want 0", short)
	}
}

func TestNewSerialReader(t *testing.T) {
	ff := bytes.Repeat([]byte{0xff}, 20)
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 159), big.NewInt(1))
	tests := []struct {
		name    string
		r       io.Reader
		want    *big.Int
		wantErr string
	}{
		{"top bit cleared", bytes.NewReader(ff), max, ""},
		{"zero then value", io.MultiReader(bytes.NewReader(make([]byte, 20)), bytes.NewReader(append(make([]byte, 19), 7))), big.NewInt(7), ""},
		{"top bit only is zero", bytes.NewReader(bytes.Repeat(append([]byte{0x80}, make([]byte, 19)...), 8)), nil, "only zeros"},
		{"short read", bytes.NewReader(ff[:10]), nil, "generating serial number"},
		{"reader error", iotest.ErrReader(errors.New("entropy gone")), nil, "entropy gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewSerial(tt.r)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Cmp(tt.want) != 0 {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

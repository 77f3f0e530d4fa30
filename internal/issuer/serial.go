package issuer

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
)

// serialLen is the number of random octets in a serial number. RFC 5280
// 4.1.2.2 caps serials at 20 octets; CA/B Baseline Requirements 7.1 ask for
// at least 64 bits of CSPRNG output.
const serialLen = 20

// NewSerial returns a random certificate serial number: 20 octets from r
// (crypto/rand.Reader when r is nil) with the top bit cleared, so the value
// is positive, at most 159 bits long and its DER INTEGER encoding never
// needs a 21st octet (RFC 5280 4.1.2.2). It has 159 bits of entropy and is
// never zero. r must be a CSPRNG; errors reading it are returned wrapped.
func NewSerial(r io.Reader) (*big.Int, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [serialLen]byte
	// A zero serial is not allowed. With a working CSPRNG the loop runs once;
	// the bound keeps a broken source that returns zeros from spinning.
	for range 8 {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("generating serial number: %w", err)
		}
		b[0] &= 0x7f
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
	return nil, errors.New("generating serial number: random source returned only zeros")
}

package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// Values are a format byte followed by fields: unsigned and signed varints,
// and length-prefixed byte strings. The format byte lets a later schema
// change one value type without a migration of the others.
const formatV1 = 1

// ErrCorruptValue is wrapped by errors about a stored value that does not
// decode. bbolt has no checksums on data pages, so a bit flip on the
// medium surfaces here rather than at open.
var ErrCorruptValue = errors.New("store: corrupt value")

type encoder struct{ b []byte }

func newEncoder(sizeHint int) *encoder {
	e := &encoder{b: make([]byte, 0, sizeHint+1)}
	e.b = append(e.b, formatV1)
	return e
}

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) rest(p []byte)    { e.b = append(e.b, p...) }

// timeNanos stores t as Unix nanoseconds; the zero time stays zero.
func (e *encoder) timeNanos(t time.Time) { e.varint(nanos(t)) }

// nanos is t in Unix nanoseconds, 0 for the zero time. Stored times and
// index keys both go through it, so a time read back from a value yields
// the same index key as the time it was written with.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// decoder reads what encoder wrote. The first error sticks; the getters
// return zero values after it. Byte strings are copied: bbolt's values
// point into the memory map and are only valid inside the transaction.
type decoder struct {
	b   []byte
	err error
}

func newDecoder(what string, b []byte) *decoder {
	d := &decoder{b: b}
	switch {
	case len(b) == 0:
		d.err = fmt.Errorf("%w: %s: empty", ErrCorruptValue, what)
	case b[0] != formatV1:
		d.err = fmt.Errorf("%w: %s: unknown format %d", ErrCorruptValue, what, b[0])
	default:
		d.b = b[1:]
	}
	return d
}

func (d *decoder) fail(field string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or malformed %s", ErrCorruptValue, field)
	}
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(field)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(field string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(field)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(field string) []byte {
	n := d.uvarint(field)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) || n > math.MaxInt {
		d.fail(field)
		return nil
	}
	if n == 0 {
		return nil
	}
	out := make([]byte, n)
	copy(out, d.b[:n])
	d.b = d.b[n:]
	return out
}

func (d *decoder) str(field string) string { return string(d.bytes(field)) }

func (d *decoder) timeNanos(field string) time.Time {
	v := d.varint(field)
	if v == 0 || d.err != nil {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}

// rest returns a copy of what is left.
func (d *decoder) rest() []byte {
	if d.err != nil || len(d.b) == 0 {
		return nil
	}
	out := make([]byte, len(d.b))
	copy(out, d.b)
	d.b = nil
	return out
}

// done reports the first error, or an error when bytes are left over.
func (d *decoder) done(what string) error {
	if d.err != nil {
		return fmt.Errorf("%s: %w", what, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%s: %w: %d trailing bytes", what, ErrCorruptValue, len(d.b))
	}
	return nil
}

// u64key is a big-endian uint64, so keys sort in numeric order.
func u64key(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

// timeKey orders times, including ones before 1970, as unsigned
// big-endian bytes: Unix nanoseconds with the sign bit flipped.
func timeKey(t time.Time) []byte {
	return u64key(uint64(nanos(t)) ^ (1 << 63))
}

func getU64(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

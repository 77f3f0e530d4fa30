package est

import (
	"bytes"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// defaultCSRAttrsHex is the DER of DefaultCSRAttrs, assembled by hand:
//
//	30 2c                                   CsrAttrs
//	   06 09 2a864886f70d010907             challengePassword
//	   30 15                                Attribute
//	      06 07 2a8648ce3d0201              id-ecPublicKey
//	      31 0a 06 08 2a8648ce3d030107      { secp256r1 }
//	   06 08 2a8648ce3d040302               ecdsa-with-SHA256
const defaultCSRAttrsHex = "302c" +
	"06092a864886f70d010907" +
	"3015" + "06072a8648ce3d0201" + "310a" + "06082a8648ce3d030107" +
	"06082a8648ce3d040302"

func TestDefaultCSRAttrs(t *testing.T) {
	der, err := EncodeCSRAttrs(DefaultCSRAttrs())
	if err != nil {
		t.Fatalf("EncodeCSRAttrs: %v", err)
	}
	if got := hex.EncodeToString(der); got != defaultCSRAttrsHex {
		t.Errorf("got %s, want %s", got, defaultCSRAttrsHex)
	}
	attrs, err := ParseCSRAttrs(der)
	if err != nil {
		t.Fatalf("ParseCSRAttrs: %v", err)
	}
	sameAttrs(t, attrs, DefaultCSRAttrs())

	// Each call returns fresh slices.
	a := DefaultCSRAttrs()
	a[0].OID[0] = 99
	a[1].Values[0].FullBytes[0] = 0
	if der2, _ := EncodeCSRAttrs(DefaultCSRAttrs()); !bytes.Equal(der2, der) {
		t.Errorf("DefaultCSRAttrs shares memory between calls")
	}
}

// sameAttrs fails unless got and want have the same OIDs and value
// encodings in the same order.
func sameAttrs(t *testing.T, got, want []CSRAttr) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if !got[i].OID.Equal(want[i].OID) {
			t.Errorf("entry %d: got oid %v, want %v", i, got[i].OID, want[i].OID)
		}
		if (got[i].Values == nil) != (want[i].Values == nil) || len(got[i].Values) != len(want[i].Values) {
			t.Errorf("entry %d: got %d values (nil %v), want %d (nil %v)", i,
				len(got[i].Values), got[i].Values == nil, len(want[i].Values), want[i].Values == nil)
			continue
		}
		for j := range want[i].Values {
			g, w := got[i].Values[j], want[i].Values[j]
			if !bytes.Equal(g.FullBytes, w.FullBytes) {
				t.Errorf("entry %d value %d: got %x, want %x", i, j, g.FullBytes, w.FullBytes)
			}
		}
	}
}

// rfc7030Example is the csrattrs example of RFC 7030, section 4.5.2.
const rfc7030Example = "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJ" +
	"BgcrBgEBAQEWBggqhkjOPQQDAw=="

func TestParseCSRAttrsRFC7030Example(t *testing.T) {
	der, err := base64.StdEncoding.DecodeString(rfc7030Example)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := ParseCSRAttrs(der)
	if err != nil {
		t.Fatalf("ParseCSRAttrs: %v", err)
	}
	oidValue := func(oid asn1.ObjectIdentifier) asn1.RawValue {
		b, err := asn1.Marshal(oid)
		if err != nil {
			t.Fatal(err)
		}
		return asn1.RawValue{FullBytes: b}
	}
	var (
		secp384r1        = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
		extensionRequest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
		macAddress       = asn1.ObjectIdentifier{1, 3, 6, 1, 1, 1, 1, 22}
		ecdsaWithSHA384  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	)
	want := []CSRAttr{
		{OID: OIDChallengePassword},
		{OID: OIDECPublicKey, Values: []asn1.RawValue{oidValue(secp384r1)}},
		{OID: extensionRequest, Values: []asn1.RawValue{oidValue(macAddress)}},
		{OID: ecdsaWithSHA384},
	}
	sameAttrs(t, attrs, want)
	v := attrs[1].Values[0]
	if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagOID || v.IsCompound {
		t.Errorf("got class %d tag %d compound %v, want a universal OID", v.Class, v.Tag, v.IsCompound)
	}
	// The example is DER, so it encodes back to itself.
	again, err := EncodeCSRAttrs(attrs)
	if err != nil {
		t.Fatalf("EncodeCSRAttrs: %v", err)
	}
	if !bytes.Equal(again, der) {
		t.Errorf("got %x, want %x", again, der)
	}
}

func TestParseCSRAttrsDoesNotAlias(t *testing.T) {
	der, _ := hex.DecodeString(defaultCSRAttrsHex)
	attrs, err := ParseCSRAttrs(der)
	if err != nil {
		t.Fatal(err)
	}
	for i := range der {
		der[i] = 0
	}
	sameAttrs(t, attrs, DefaultCSRAttrs())
}

func TestEncodeCSRAttrs(t *testing.T) {
	t.Run("empty", func(t *testing.T) {
		der, err := EncodeCSRAttrs(nil)
		if err != nil || !bytes.Equal(der, []byte{0x30, 0x00}) {
			t.Fatalf("got %x, %v, want 3000", der, err)
		}
		attrs, err := ParseCSRAttrs(der)
		if err != nil || len(attrs) != 0 {
			t.Errorf("got %v, %v, want no entries", attrs, err)
		}
	})
	t.Run("set sorted", func(t *testing.T) {
		attrs := []CSRAttr{{OID: asn1.ObjectIdentifier{1, 2, 3}, Values: []asn1.RawValue{
			{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte("b")},
			{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte("a")},
			{Class: asn1.ClassUniversal, Tag: asn1.TagInteger, Bytes: []byte{1}},
		}}}
		der, err := EncodeCSRAttrs(attrs)
		if err != nil {
			t.Fatal(err)
		}
		want := "3011" + "300f" + "06022a03" + "3109" + "020101" + "0c0161" + "0c0162"
		if got := hex.EncodeToString(der); got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	})
	t.Run("high tag value", func(t *testing.T) {
		// [PRIVATE 200] IMPLICIT, a high-tag-number identifier.
		attrs := []CSRAttr{{OID: asn1.ObjectIdentifier{2, 999, 1}, Values: []asn1.RawValue{
			{Class: asn1.ClassPrivate, Tag: 200, Bytes: []byte{1, 2}},
		}}}
		der, err := EncodeCSRAttrs(attrs)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseCSRAttrs(der)
		if err != nil {
			t.Fatalf("ParseCSRAttrs(%x): %v", der, err)
		}
		v := got[0].Values[0]
		if v.Class != asn1.ClassPrivate || v.Tag != 200 || !bytes.Equal(v.Bytes, []byte{1, 2}) {
			t.Errorf("got %+v, want private tag 200 with 0102", v)
		}
	})
}

func TestEncodeCSRAttrsErrors(t *testing.T) {
	oid := asn1.ObjectIdentifier{1, 2, 3}
	many := make([]CSRAttr, MaxCSRAttrs+1)
	for i := range many {
		many[i].OID = oid
	}
	bigValue := asn1.RawValue{Tag: asn1.TagOctetString, Bytes: make([]byte, MaxCSRAttrsSize)}
	tests := []struct {
		name  string
		attrs []CSRAttr
		want  error
	}{
		{"nil oid", []CSRAttr{{}}, ErrCSRAttrsMalformed},
		{"one arc", []CSRAttr{{OID: asn1.ObjectIdentifier{1}}}, ErrCSRAttrsMalformed},
		{"first arc 3", []CSRAttr{{OID: asn1.ObjectIdentifier{3, 1}}}, ErrCSRAttrsMalformed},
		{"second arc 40", []CSRAttr{{OID: asn1.ObjectIdentifier{1, 40}}}, ErrCSRAttrsMalformed},
		{"negative arc", []CSRAttr{{OID: asn1.ObjectIdentifier{1, 2, -3}}}, ErrCSRAttrsMalformed},
		{"empty values", []CSRAttr{{OID: oid, Values: []asn1.RawValue{}}}, ErrCSRAttrsMalformed},
		{"value trailing data", []CSRAttr{{OID: oid, Values: []asn1.RawValue{{FullBytes: []byte{5, 0, 5, 0}}}}}, ErrCSRAttrsMalformed},
		{"value truncated", []CSRAttr{{OID: oid, Values: []asn1.RawValue{{FullBytes: []byte{4, 5, 1}}}}}, ErrCSRAttrsMalformed},
		{"value bad class", []CSRAttr{{OID: oid, Values: []asn1.RawValue{{Class: 7, Tag: 1}}}}, ErrCSRAttrsMalformed},
		{"value negative tag", []CSRAttr{{OID: oid, Values: []asn1.RawValue{{Tag: -1}}}}, ErrCSRAttrsMalformed},
		{"too many entries", many, ErrCSRAttrsTooLarge},
		{"too many values", []CSRAttr{{OID: oid, Values: make([]asn1.RawValue, MaxCSRAttrs+1)}}, ErrCSRAttrsTooLarge},
		{"too large", []CSRAttr{{OID: oid, Values: []asn1.RawValue{bigValue}}}, ErrCSRAttrsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			der, err := EncodeCSRAttrs(tt.attrs)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %x, %v, want %v", der, err, tt.want)
			}
		})
	}
}

func TestParseCSRAttrsErrors(t *testing.T) {
	h := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	manyOIDs := bytes.Repeat(h("06022a03"), MaxCSRAttrs+1)
	manyValues := bytes.Repeat(h("0500"), MaxCSRAttrs+1)
	tests := []struct {
		name string
		der  []byte
		want error
	}{
		{"empty input", nil, ErrCSRAttrsMalformed},
		{"not a sequence", h("0500"), ErrCSRAttrsMalformed},
		{"trailing data", h("3000 00"), ErrCSRAttrsMalformed},
		{"truncated", h("3005 06022a"), ErrCSRAttrsMalformed},
		{"indefinite length", h("3080 06022a03 0000"), ErrCSRAttrsMalformed},
		{"non-minimal length", h("308104 06022a03"), ErrCSRAttrsMalformed},
		{"integer entry", h("3003 020101"), ErrCSRAttrsMalformed},
		{"empty oid", h("3002 0600"), ErrCSRAttrsMalformed},
		{"huge oid arc", h("300d 060b 2a ffffffffffffffffff7f"), ErrCSRAttrsMalformed},
		{"non-minimal oid arc", h("3005 0603 2a8003"), ErrCSRAttrsMalformed},
		{"attribute without values", h("3006 3004 06022a03"), ErrCSRAttrsMalformed},
		{"attribute empty set", h("3008 3006 06022a03 3100"), ErrCSRAttrsMalformed},
		{"attribute type not oid", h("3009 3007 020101 31020500"), ErrCSRAttrsMalformed},
		{"attribute values not a set", h("300a 3008 06022a03 30020500"), ErrCSRAttrsMalformed},
		{"attribute trailing data", h("300c 300a 06022a03 31020500 0500"), ErrCSRAttrsMalformed},
		{"attribute bad value", h("3009 3007 06022a03 310104"), ErrCSRAttrsMalformed},
		{"too large", append(h("30830100ff"), make([]byte, 0x100ff)...), ErrCSRAttrsTooLarge},
		{"too many entries", append(append(h("3082"), byte(len(manyOIDs)>>8), byte(len(manyOIDs))), manyOIDs...), ErrCSRAttrsTooLarge},
	}
	// An attribute with too many values.
	set := append(append(h("3182"), byte(len(manyValues)>>8), byte(len(manyValues))), manyValues...)
	attr := append(append(h("3082"), byte((len(set)+4)>>8), byte(len(set)+4)), append(h("06022a03"), set...)...)
	seq := append(append(h("3082"), byte(len(attr)>>8), byte(len(attr))), attr...)
	tests = append(tests, struct {
		name string
		der  []byte
		want error
	}{"too many values", seq, ErrCSRAttrsTooLarge})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			attrs, err := ParseCSRAttrs(tt.der)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, %v, want %v", attrs, err, tt.want)
			}
		})
	}
}

package agent

import (
	"encoding/asn1"
	"testing"
)

func TestSameName(t *testing.T) {
	oidCN := asn1.ObjectIdentifier{2, 5, 4, 3}
	oidO := asn1.ObjectIdentifier{2, 5, 4, 10}
	type atv struct {
		oid asn1.ObjectIdentifier
		tag int // asn1.TagPrintableString, asn1.TagUTF8String, ...
		val string
	}
	name := func(rdns ...atv) []byte {
		var seq asn1.RawValue
		seq.Tag, seq.Class, seq.IsCompound = asn1.TagSequence, asn1.ClassUniversal, true
		for _, a := range rdns {
			v, err := asn1.Marshal(asn1.RawValue{Tag: a.tag, Class: asn1.ClassUniversal, Bytes: []byte(a.val)})
			if err != nil {
				t.Fatal(err)
			}
			pair, err := asn1.Marshal(struct {
				Type  asn1.ObjectIdentifier
				Value asn1.RawValue
			}{a.oid, asn1.RawValue{FullBytes: v}})
			if err != nil {
				t.Fatal(err)
			}
			set, err := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSet, Class: asn1.ClassUniversal, IsCompound: true, Bytes: pair})
			if err != nil {
				t.Fatal(err)
			}
			seq.Bytes = append(seq.Bytes, set...)
		}
		b, err := asn1.Marshal(seq)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	printable := name(atv{oidO, asn1.TagPrintableString, "Acme"}, atv{oidCN, asn1.TagPrintableString, "dev-1"})
	for _, c := range []struct {
		desc string
		b    []byte
		want bool
	}{
		{"identical bytes", printable, true},
		{"UTF8String as openssl writes it", name(atv{oidO, asn1.TagUTF8String, "Acme"}, atv{oidCN, asn1.TagUTF8String, "dev-1"}), true},
		{"another value", name(atv{oidO, asn1.TagPrintableString, "Acme"}, atv{oidCN, asn1.TagPrintableString, "dev-2"}), false},
		{"case differs", name(atv{oidO, asn1.TagPrintableString, "Acme"}, atv{oidCN, asn1.TagPrintableString, "DEV-1"}), false},
		{"order differs", name(atv{oidCN, asn1.TagPrintableString, "dev-1"}, atv{oidO, asn1.TagPrintableString, "Acme"}), false},
		{"attribute missing", name(atv{oidCN, asn1.TagPrintableString, "dev-1"}), false},
		{"another type", name(atv{oidO, asn1.TagPrintableString, "Acme"}, atv{asn1.ObjectIdentifier{2, 5, 4, 5}, asn1.TagPrintableString, "dev-1"}), false},
		{"not DER", []byte{0x30, 0x05, 0x01}, false},
	} {
		if got := sameName(printable, c.b); got != c.want {
			t.Errorf("%s: sameName = %v, want %v", c.desc, got, c.want)
		}
	}
}

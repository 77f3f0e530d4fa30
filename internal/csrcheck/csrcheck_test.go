package csrcheck

import (
	"bytes"
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// policyWith returns DefaultPolicy changed by f.
func policyWith(f func(*Policy)) *Policy {
	p := DefaultPolicy()
	f(&p)
	return &p
}

type acceptCase struct {
	name   string
	der    []byte
	policy *Policy // nil: DefaultPolicy()
}

func acceptCases(tb testing.TB) []acceptCase {
	k := testKeys(tb)
	spiffe, _ := url.Parse("spiffe://outpost.example/device/0001")
	urn, _ := url.Parse("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66")
	var hundred []string
	for i := range 100 {
		hundred = append(hundred, fmt.Sprintf("d%d.devices.example", i))
	}
	return []acceptCase{
		{name: "ecdsa p-256", der: createCSR(tb, k.p256, &x509.CertificateRequest{Subject: defaultTestSubject})},
		{name: "ecdsa p-384 with every san type", der: createCSR(tb, k.p384, &x509.CertificateRequest{
			Subject:        pkix.Name{CommonName: "gw-7", Organization: []string{"Outpost"}, Country: []string{"DE"}},
			DNSNames:       []string{"gw-7.sites.example", "xn--bcher-kva.example", "GW-7.Sites.Example"},
			EmailAddresses: []string{"ops+gw-7@sites.example"},
			IPAddresses:    []net.IP{net.ParseIP("192.0.2.7"), net.ParseIP("2001:db8::7")},
			URIs:           []*url.URL{spiffe, urn},
		})},
		{name: "ecdsa p-521", der: createCSR(tb, k.p521, &x509.CertificateRequest{Subject: defaultTestSubject})},
		{name: "rsa 2048 pkcs1v15", der: createCSR(tb, k.rsa2048, &x509.CertificateRequest{Subject: defaultTestSubject})},
		{name: "rsa 2048 pss", der: createCSR(tb, k.rsa2048, &x509.CertificateRequest{Subject: defaultTestSubject, SignatureAlgorithm: x509.SHA256WithRSAPSS})},
		{name: "rsa 3072 sha384", der: createCSR(tb, k.rsa3072, &x509.CertificateRequest{Subject: defaultTestSubject, SignatureAlgorithm: x509.SHA384WithRSA})},
		{name: "ed25519", der: createCSR(tb, k.ed, &x509.CertificateRequest{Subject: defaultTestSubject})},
		{name: "san only, empty subject", der: createCSR(tb, k.p256, &x509.CertificateRequest{DNSNames: []string{"device-0001.test"}})},
		{name: "nothing named, policy does not require it", der: createCSR(tb, k.p256, &x509.CertificateRequest{}),
			policy: policyWith(func(p *Policy) { p.RequireSubjectOrSAN = false })},
		{name: "exactly MaxSANs names", der: createCSR(tb, k.p256, &x509.CertificateRequest{Subject: defaultTestSubject, DNSNames: hundred})},
		{name: "wildcard allowed by policy", der: createCSR(tb, k.p256, &x509.CertificateRequest{DNSNames: []string{"*.devices.example"}}),
			policy: policyWith(func(p *Policy) { p.AllowWildcardDNS = true })},
		{name: "cn of 64 characters", der: createCSR(tb, k.p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: strings.Repeat("a", 64)}})},
		{name: "cn of 64 two-byte characters", der: createCSR(tb, k.p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: strings.Repeat("é", 64)}})},
		{name: "challengePassword and understood critical extensions", der: buildCSR(tb, k.p256, parts{attrs: [][]byte{
			challenge(tb, "s3cret-otp"),
			extReq(tb,
				sanExt(true, dnsGN("device-0001.test")),
				pkix.Extension{Id: oidKU, Critical: true, Value: []byte{0x03, 0x02, 0x07, 0x80}},
				pkix.Extension{Id: oidEKU, Value: mustMarshal(tb, []encasn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 2}})},
				pkix.Extension{Id: oidBC, Critical: true, Value: []byte{0x30, 0x00}},
			),
		}})},
		{name: "unknown non-critical extension and unknown attribute", der: buildCSR(tb, k.p256, parts{attrs: [][]byte{
			extReq(tb, pkix.Extension{Id: oidPrivateExt, Value: asn1NullBytes}),
			attribute(oidAttrUnstructured, mustMarshal(tb, "unit 7")),
		}})},
		{name: "rsa 3072 at a 3072 minimum", der: createCSR(tb, k.rsa3072, &x509.CertificateRequest{Subject: defaultTestSubject}),
			policy: policyWith(func(p *Policy) { p.MinRSABits = 3072 })},
		{name: "p-224 allowed by an explicit policy", der: createCSR(tb, k.p224, &x509.CertificateRequest{Subject: defaultTestSubject}),
			policy: policyWith(func(p *Policy) { p.AllowedCurves = []elliptic.Curve{elliptic.P224()} })},
	}
}

func TestParseAccepts(t *testing.T) {
	for _, tc := range acceptCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultPolicy()
			if tc.policy != nil {
				p = *tc.policy
			}
			csr, err := Parse(tc.der, p)
			if err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Errorf("CheckSignature: got %v, want nil", err)
			}
			if !bytes.Equal(csr.Raw, tc.der) {
				t.Errorf("got Raw of %d bytes, want the %d input bytes", len(csr.Raw), len(tc.der))
			}
		})
	}
}

type rejectCase struct {
	name   string
	der    []byte
	policy *Policy // nil: DefaultPolicy()
	want   Reason
}

// rejectCases returns broken and hostile CSRs, each with the one Reason it
// must be rejected for.
func rejectCases(tb testing.TB) []rejectCase {
	k := testKeys(tb)
	good := createCSR(tb, k.p256, &x509.CertificateRequest{Subject: defaultTestSubject})
	cn := func(s string) []byte {
		return createCSR(tb, k.p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: s}})
	}
	withSubject := func(n pkix.Name) []byte {
		return createCSR(tb, k.p256, &x509.CertificateRequest{Subject: n})
	}
	dns := func(names ...string) []byte {
		return createCSR(tb, k.p256, &x509.CertificateRequest{Subject: defaultTestSubject, DNSNames: names})
	}
	email := func(addr string) []byte {
		return createCSR(tb, k.p256, &x509.CertificateRequest{Subject: defaultTestSubject, EmailAddresses: []string{addr}})
	}
	uri := func(u *url.URL) []byte {
		return createCSR(tb, k.p256, &x509.CertificateRequest{Subject: defaultTestSubject, URIs: []*url.URL{u}})
	}
	withAttrs := func(attrs ...[]byte) []byte {
		return buildCSR(tb, k.p256, parts{attrs: attrs})
	}
	withSANs := func(names ...[]byte) []byte {
		return withAttrs(extReq(tb, sanExt(false, names...)))
	}
	withExts := func(exts ...pkix.Extension) []byte {
		return createCSR(tb, k.p256, &x509.CertificateRequest{Subject: defaultTestSubject, ExtraExtensions: exts})
	}
	// fakeRSA carries an RSA key that is not one (a random odd modulus) and
	// a zero signature: only checks that run before verification can
	// classify it correctly.
	fakeRSA := func(n, e *big.Int) []byte {
		return buildCSR(tb, k.rsa2048, parts{spki: rsaSPKI(n, e), signature: make([]byte, 256)})
	}
	withSPKI := func(spki []byte) []byte {
		return buildCSR(tb, k.p256, parts{spki: spki})
	}
	f4 := big.NewInt(65537)
	pkcs1 := x509.MarshalPKCS1PublicKey(&k.rsa2048.PublicKey)
	p256Point := must(k.p256.PublicKey.Bytes())
	curveParams := func(oid encasn1.ObjectIdentifier) []byte { return mustMarshal(tb, oid) }

	outer := cryptobyte.String(good)
	var content cryptobyte.String
	if !outer.ReadASN1(&content, asn1.SEQUENCE) {
		tb.Fatal("good csr does not parse")
	}
	berIndefinite := append(append([]byte{0x30, 0x80}, content...), 0, 0)
	nonMinimalLength := binary.BigEndian.AppendUint32([]byte{0x30, 0x84}, uint32(len(content)))
	nonMinimalLength = append(nonMinimalLength, content...)

	sigFlipped := bytes.Clone(good)
	sigFlipped[len(sigFlipped)-1] ^= 0x01
	subjectTampered := bytes.Replace(good, []byte("device-0001"), []byte("device-0002"), 1)

	var manyNames []string
	for i := range 101 {
		manyNames = append(manyNames, fmt.Sprintf("d%d.devices.example", i))
	}

	otherName := generalName(asn1.Tag(0).ContextSpecific().Constructed(),
		append(mustMarshal(tb, encasn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}),
			generalName(asn1.Tag(0).ContextSpecific().Constructed(), mustMarshalUTF8(tb, "dev@corp"))...))

	// A subject whose CN is an INTEGER, and one whose PrintableString holds
	// a character PrintableString does not allow.
	intCN := mustMarshal(tb, pkix.RDNSequence{{{Type: oidCommonNameTest, Value: 7}}})
	badPrintable := rawRDN(oidCommonNameTest, 0x13, []byte("a@b"))

	return []rejectCase{
		// Size and framing.
		{name: "nil input", der: nil, want: ReasonEmpty},
		{name: "empty input", der: []byte{}, want: ReasonEmpty},
		{name: "one byte over MaxCSRSize", der: append([]byte{0x30}, make([]byte, MaxCSRSize)...), want: ReasonTooLarge},
		{name: "signed csr over MaxCSRSize", der: withAttrs(attribute(oidAttrUnstructured, mustMarshalUTF8(tb, strings.Repeat("x", MaxCSRSize)))), want: ReasonTooLarge},
		{name: "random bytes", der: bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 64), want: ReasonMalformed},
		{name: "text", der: []byte("hello, est server"), want: ReasonMalformed},
		{name: "truncated", der: good[:len(good)-10], want: ReasonMalformed},
		{name: "truncated to header", der: good[:4], want: ReasonMalformed},
		{name: "ber indefinite length", der: berIndefinite, want: ReasonMalformed},
		{name: "non-minimal length", der: nonMinimalLength, want: ReasonMalformed},
		{name: "trailing garbage", der: append(bytes.Clone(good), 0x00, 0x00), want: ReasonTrailingData},
		{name: "two csrs back to back", der: append(bytes.Clone(good), good...), want: ReasonTrailingData},
		{name: "field after signature", der: buildCSR(tb, k.p256, parts{extra: asn1NullBytes}), want: ReasonMalformed},
		{name: "attributes field missing", der: buildCSR(tb, k.p256, parts{noAttrs: true}), want: ReasonMalformed},
		{name: "subject not a sequence", der: buildCSR(tb, k.p256, parts{subject: []byte{0x04, 0x00}}), want: ReasonMalformed},
		{name: "subject printablestring with @", der: buildCSR(tb, k.p256, parts{subject: badPrintable}), want: ReasonMalformed},
		{name: "signature with unused bits", der: buildCSR(tb, k.p256, parts{signature: make([]byte, 72), unusedBits: 1}), want: ReasonMalformed},

		// Version.
		{name: "version 1", der: buildCSR(tb, k.p256, parts{version: big.NewInt(1)}), want: ReasonVersion},
		{name: "version -1", der: buildCSR(tb, k.p256, parts{version: big.NewInt(-1)}), want: ReasonVersion},
		{name: "version 2^80", der: buildCSR(tb, k.p256, parts{version: new(big.Int).Lsh(big.NewInt(1), 80)}), want: ReasonVersion},

		// Signature.
		{name: "signature bit flipped", der: sigFlipped, want: ReasonBadSignature},
		{name: "subject changed after signing", der: subjectTampered, want: ReasonBadSignature},
		{name: "signed by another key", der: buildCSR(tb, k.p384, parts{spki: must(x509.MarshalPKIXPublicKey(k.p256.Public()))}), want: ReasonBadSignature},
		{name: "ed25519 signature over other bytes", der: buildCSR(tb, k.ed, parts{signature: make([]byte, 64)}), want: ReasonBadSignature},
		{name: "ecdsa with sha-1", der: buildCSR(tb, k.p256, parts{sigAlg: algID(oidSigECDSASHA1, nil), hash: crypto.SHA1}), want: ReasonBadSignatureAlgorithm},
		{name: "rsa with md5", der: buildCSR(tb, k.rsa2048, parts{sigAlg: algID(oidSigRSAMD5, asn1NullBytes), hash: crypto.MD5}), want: ReasonBadSignatureAlgorithm},
		{name: "rsa with sha-1", der: buildCSR(tb, k.rsa2048, parts{sigAlg: algID(encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}, asn1NullBytes), hash: crypto.SHA1}), want: ReasonBadSignatureAlgorithm},
		{name: "unknown signature algorithm", der: buildCSR(tb, k.p256, parts{sigAlg: algID(encasn1.ObjectIdentifier{1, 2, 3, 4}, nil)}), want: ReasonBadSignatureAlgorithm},
		{name: "rsa algorithm with ecdsa key", der: buildCSR(tb, k.p256, parts{sigAlg: algID(oidSigRSASHA256, asn1NullBytes)}), want: ReasonSignatureKeyMismatch},
		{name: "ed25519 algorithm with ecdsa key", der: buildCSR(tb, k.p256, parts{sigAlg: algID(oidSigEd25519, nil)}), want: ReasonSignatureKeyMismatch},

		// RSA keys.
		{name: "rsa 1024", der: fakeRSA(fakeModulus(tb, 1024), f4), want: ReasonWeakRSAKey},
		{name: "rsa 1536", der: createCSR(tb, k.rsa1536, &x509.CertificateRequest{Subject: defaultTestSubject}), want: ReasonWeakRSAKey},
		{name: "rsa 2047", der: fakeRSA(fakeModulus(tb, 2047), f4), want: ReasonWeakRSAKey},
		{name: "rsa 2048 under a 3072 minimum", der: createCSR(tb, k.rsa2048, &x509.CertificateRequest{Subject: defaultTestSubject}),
			policy: policyWith(func(p *Policy) { p.MinRSABits = 3072 }), want: ReasonWeakRSAKey},
		{name: "rsa 8200", der: fakeRSA(fakeModulus(tb, 8200), f4), want: ReasonRSAKeyTooLarge},
		{name: "rsa 16384 refused before verifying", der: fakeRSA(fakeModulus(tb, 16384), f4), want: ReasonRSAKeyTooLarge},
		{name: "rsa 20000 above the ceiling", der: fakeRSA(fakeModulus(tb, 20000), f4),
			policy: policyWith(func(p *Policy) { p.MaxRSABits = 1 << 20 }), want: ReasonRSAKeyTooLarge},
		{name: "rsa exponent 1", der: fakeRSA(fakeModulus(tb, 2048), big.NewInt(1)), want: ReasonBadRSAExponent},
		{name: "rsa exponent even", der: fakeRSA(fakeModulus(tb, 2048), big.NewInt(65536)), want: ReasonBadRSAExponent},
		{name: "rsa exponent 2^32+1", der: fakeRSA(fakeModulus(tb, 2048), big.NewInt(1<<32+1)), want: ReasonBadRSAExponent},
		{name: "rsa exponent negative", der: fakeRSA(fakeModulus(tb, 2048), big.NewInt(-3)), want: ReasonBadRSAExponent},
		{name: "rsa modulus even", der: fakeRSA(new(big.Int).SetBit(fakeModulus(tb, 2048), 0, 0), f4), want: ReasonBadPublicKey},
		{name: "rsa modulus negative", der: fakeRSA(new(big.Int).Neg(fakeModulus(tb, 2048)), f4), want: ReasonBadPublicKey},
		{name: "rsa parameters absent", der: buildCSR(tb, k.rsa2048, parts{spki: spkiOf(algID(oidPKRSA, nil), pkcs1)}), want: ReasonBadPublicKey},

		// Elliptic curve keys.
		{name: "p-224", der: createCSR(tb, k.p224, &x509.CertificateRequest{Subject: defaultTestSubject}), want: ReasonWeakCurve},
		{name: "secp256k1", der: withSPKI(spkiOf(algID(oidPKEC, curveParams(oidCurveSecp256k1)), p256Point)), want: ReasonWeakCurve},
		{name: "explicit curve parameters", der: withSPKI(spkiOf(algID(oidPKEC, mustMarshal(tb, struct{ V int }{1})), p256Point)), want: ReasonWeakCurve},
		{name: "p-384 under a p-256-only policy", der: createCSR(tb, k.p384, &x509.CertificateRequest{Subject: defaultTestSubject}),
			policy: policyWith(func(p *Policy) { p.AllowedCurves = []elliptic.Curve{elliptic.P256()} }), want: ReasonWeakCurve},
		{name: "ec point not on curve", der: withSPKI(spkiOf(algID(oidPKEC, curveParams(oidCurveP256)), flipLast(p256Point))), want: ReasonBadPublicKey},
		{name: "ec compressed point", der: withSPKI(spkiOf(algID(oidPKEC, curveParams(oidCurveP256)), append([]byte{0x02}, p256Point[1:33]...))), want: ReasonBadPublicKey},
		{name: "ec parameters null", der: withSPKI(spkiOf(algID(oidPKEC, asn1NullBytes), p256Point)), want: ReasonBadPublicKey},
		{name: "ed25519 key of 31 bytes", der: withSPKI(spkiOf(algID(oidSigEd25519, nil), make([]byte, 31))), want: ReasonBadPublicKey},

		// Other key types and policy.
		{name: "dsa key", der: withSPKI(spkiOf(algID(oidPKDSA, nil), mustMarshal(tb, big.NewInt(12345)))), want: ReasonUnsupportedKey},
		{name: "x25519 key", der: withSPKI(spkiOf(algID(oidPKX25519, nil), make([]byte, 32))), want: ReasonUnsupportedKey},
		{name: "rsassa-pss key", der: withSPKI(spkiOf(algID(oidPKRSAPSS, nil), pkcs1)), want: ReasonUnsupportedKey},
		{name: "unknown key algorithm", der: withSPKI(spkiOf(algID(encasn1.ObjectIdentifier{1, 2, 3, 4, 5}, nil), []byte{1, 2, 3})), want: ReasonUnsupportedKey},
		{name: "rsa forbidden by policy", der: createCSR(tb, k.rsa2048, &x509.CertificateRequest{Subject: defaultTestSubject}),
			policy: policyWith(func(p *Policy) { p.AllowRSA = false }), want: ReasonKeyTypeNotAllowed},
		{name: "ecdsa forbidden by policy", der: good,
			policy: policyWith(func(p *Policy) { p.AllowECDSA = false }), want: ReasonKeyTypeNotAllowed},
		{name: "ed25519 forbidden by policy", der: createCSR(tb, k.ed, &x509.CertificateRequest{Subject: defaultTestSubject}),
			policy: policyWith(func(p *Policy) { p.AllowEd25519 = false }), want: ReasonKeyTypeNotAllowed},
		{name: "zero policy allows nothing", der: good, policy: &Policy{}, want: ReasonKeyTypeNotAllowed},

		// Attributes and requested extensions.
		{name: "duplicate extension", der: withAttrs(extReq(tb,
			pkix.Extension{Id: oidPrivateExt, Value: asn1NullBytes},
			pkix.Extension{Id: oidPrivateExt, Value: asn1NullBytes})), want: ReasonDuplicateExtension},
		{name: "duplicate san extension", der: withAttrs(extReq(tb,
			sanExt(false, dnsGN("a.example")), sanExt(false, dnsGN("b.example")))), want: ReasonDuplicateExtension},
		{name: "two extensionRequest attributes", der: withAttrs(
			extReq(tb, sanExt(false, dnsGN("a.example"))),
			extReq(tb, pkix.Extension{Id: oidPrivateExt, Value: asn1NullBytes})), want: ReasonDuplicateAttribute},
		{name: "extensionRequest with two values", der: withAttrs(attribute(oidAttrExtReq,
			extensions(tb, sanExt(false, dnsGN("a.example"))),
			extensions(tb, sanExt(false, dnsGN("evil.example"))))), want: ReasonDuplicateAttribute},
		{name: "two challengePassword attributes", der: withAttrs(challenge(tb, "one"), challenge(tb, "two")), want: ReasonDuplicateAttribute},
		{name: "challengePassword with two values", der: withAttrs(attribute(oidAttrChallenge,
			mustMarshalUTF8(tb, "one"), mustMarshalUTF8(tb, "two"))), want: ReasonDuplicateAttribute},
		{name: "unknown attribute twice", der: withAttrs(
			attribute(oidAttrUnstructured, mustMarshalUTF8(tb, "a")),
			attribute(oidAttrUnstructured, mustMarshalUTF8(tb, "b"))), want: ReasonDuplicateAttribute},
		{name: "attribute with no values", der: withAttrs(attribute(oidAttrUnstructured)), want: ReasonMalformed},
		{name: "attribute not a sequence", der: withAttrs([]byte{0x04, 0x01, 0x00}), want: ReasonMalformed},
		{name: "extensionRequest value not a sequence", der: withAttrs(attribute(oidAttrExtReq, []byte{0x04, 0x00})), want: ReasonMalformed},
		{name: "unknown critical extension", der: withExts(pkix.Extension{Id: oidPrivateExt, Critical: true, Value: asn1NullBytes}), want: ReasonUnknownCriticalExtension},
		{name: "critical keyUsage not a bit string", der: withExts(pkix.Extension{Id: oidKU, Critical: true, Value: []byte{0x04, 0x00}}), want: ReasonMalformed},

		// Subject.
		{name: "empty subject and no san", der: createCSR(tb, k.p256, &x509.CertificateRequest{}), want: ReasonEmptySubject},
		{name: "cn of 65 characters", der: cn(strings.Repeat("a", 65)), want: ReasonSubjectTooLong},
		{name: "cn of 65 two-byte characters", der: cn(strings.Repeat("é", 65)), want: ReasonSubjectTooLong},
		{name: "organization of 65 characters", der: withSubject(pkix.Name{CommonName: "d", Organization: []string{strings.Repeat("o", 65)}}), want: ReasonSubjectTooLong},
		{name: "country of 3 letters", der: withSubject(pkix.Name{CommonName: "d", Country: []string{"USA"}}), want: ReasonSubjectTooLong},
		{name: "cn with nul", der: cn("bank.example\x00.evil.example"), want: ReasonBadSubject},
		{name: "cn with escape sequence", der: cn("dev\x1b[2Jice"), want: ReasonBadSubject},
		{name: "two common names", der: withSubject(pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
			{Type: oidCommonNameTest, Value: "long-and-checked.example"},
			{Type: oidCommonNameTest, Value: "other.example"}}}), want: ReasonBadSubject},
		{name: "empty organization", der: withSubject(pkix.Name{CommonName: "d", Organization: []string{""}}), want: ReasonBadSubject},
		{name: "cn is an integer", der: buildCSR(tb, k.p256, parts{subject: intCN}), want: ReasonBadSubject},

		// Subject alternative names.
		{name: "dns leading and trailing hyphen", der: dns("-bad-.example"), want: ReasonBadName},
		{name: "dns empty label", der: dns("a..b"), want: ReasonBadName},
		{name: "dns double wildcard", der: dns("*.*.example"), want: ReasonBadName},
		{name: "dns double wildcard, wildcards allowed", der: dns("*.*.example"),
			policy: policyWith(func(p *Policy) { p.AllowWildcardDNS = true }), want: ReasonBadName},
		{name: "dns wildcard not allowed by policy", der: dns("*.devices.example"), want: ReasonBadName},
		{name: "dns wildcard on a tld", der: dns("*.example"),
			policy: policyWith(func(p *Policy) { p.AllowWildcardDNS = true }), want: ReasonBadName},
		{name: "dns partial wildcard", der: dns("dev*.example"), want: ReasonBadName},
		{name: "dns 300 characters", der: dns(strings.Repeat("abcdefghi.", 30) + "example"), want: ReasonBadName},
		{name: "dns 64-character label", der: dns(strings.Repeat("a", 64) + ".example"), want: ReasonBadName},
		{name: "dns underscore only", der: dns("_"), want: ReasonBadName},
		{name: "dns underscore", der: dns("_acme.example"), want: ReasonBadName},
		{name: "dns empty", der: dns(""), want: ReasonBadName},
		{name: "dns trailing dot", der: dns("device.example."), want: ReasonBadName},
		{name: "dns ipv4 address", der: dns("192.0.2.1"), want: ReasonBadName},
		{name: "dns space", der: dns("dev ice.example"), want: ReasonBadName},
		{name: "dns non-ascii", der: withSANs(dnsGN("bücher.example")), want: ReasonBadName},
		{name: "email without @", der: email("not-an-email"), want: ReasonBadName},
		{name: "email with two @", der: email("a@b@c.example"), want: ReasonBadName},
		{name: "email empty local part", der: email("@example.com"), want: ReasonBadName},
		{name: "email empty domain", der: email("user@"), want: ReasonBadName},
		{name: "email bad domain", der: email("user@-bad.example"), want: ReasonBadName},
		{name: "email double dot", der: email("a..b@example.com"), want: ReasonBadName},
		{name: "email space", der: email("a b@example.com"), want: ReasonBadName},
		{name: "uri without scheme", der: uri(&url.URL{Path: "device/0001"}), want: ReasonBadName},
		{name: "uri scheme only", der: uri(&url.URL{Scheme: "https"}), want: ReasonBadName},
		{name: "uri with user info", der: uri(&url.URL{Scheme: "https", User: url.User("admin"), Host: "device.example"}), want: ReasonBadName},
		{name: "uri with port", der: uri(&url.URL{Scheme: "https", Host: "device.example:8443"}), want: ReasonBadName},
		{name: "uri with ip literal", der: uri(&url.URL{Scheme: "https", Host: "[2001:db8::1]"}), want: ReasonBadName},
		{name: "ip of 5 bytes", der: withSANs(generalName(asn1.Tag(7).ContextSpecific(), []byte{10, 0, 0, 1, 0})), want: ReasonBadName},
		{name: "ip unspecified", der: createCSR(tb, k.p256, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv6unspecified}}), want: ReasonBadName},
		{name: "101 sans", der: dns(manyNames...), want: ReasonTooManySANs},
		{name: "3 sans over a policy of 2", der: dns("a.example", "b.example", "c.example"),
			policy: policyWith(func(p *Policy) { p.MaxSANs = 2 }), want: ReasonTooManySANs},
		{name: "othername san", der: withSANs(otherName), want: ReasonUnsupportedName},
		{name: "directoryname san", der: withSANs(generalName(asn1.Tag(4).ContextSpecific().Constructed(), rawName(tb, pkix.Name{CommonName: "x"}))), want: ReasonUnsupportedName},
		{name: "registeredid san", der: withSANs(generalName(asn1.Tag(8).ContextSpecific(), []byte{0x2a, 0x03})), want: ReasonUnsupportedName},
		{name: "san entry with universal tag", der: withSANs([]byte{0x04, 0x00}), want: ReasonMalformed},
		{name: "san with no names", der: withSANs(), want: ReasonMalformed},
		{name: "san value not der", der: withAttrs(extReq(tb, pkix.Extension{Id: oidSAN, Value: []byte{0x30, 0x05}})), want: ReasonMalformed},
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range rejectCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultPolicy()
			if tc.policy != nil {
				p = *tc.policy
			}
			csr, err := Parse(tc.der, p)
			if csr != nil {
				t.Errorf("got a csr, want nil")
			}
			checkRejection(t, err, tc.want)
		})
	}
}

// checkRejection asserts that err is an *Error with reason want whose
// public message is non-empty and reveals neither detail nor cause.
func checkRejection(t *testing.T, err error, want Reason) {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v (%T), want *Error with reason %v", err, err, want)
	}
	if ce.Reason != want {
		t.Errorf("got reason %v, want %v (%v)", ce.Reason, want, ce)
	}
	pub := ce.Public()
	if pub == "" {
		t.Errorf("got empty Public(), want a message")
	}
	if ce.Detail == "" {
		t.Errorf("got empty Detail, want one (%v)", ce)
	}
	if strings.Contains(pub, ce.Detail) {
		t.Errorf("Public() %q contains Detail %q", pub, ce.Detail)
	}
	if ce.Err != nil && strings.Contains(pub, ce.Err.Error()) {
		t.Errorf("Public() %q contains the cause %q", pub, ce.Err)
	}
	if !strings.HasPrefix(ce.Error(), "csr: "+string(want)) {
		t.Errorf("got Error() %q, want prefix %q", ce.Error(), "csr: "+string(want))
	}
}

func TestParsePEMOrDER(t *testing.T) {
	k := testKeys(t)
	der := createCSR(t, k.p256, &x509.CertificateRequest{Subject: defaultTestSubject})
	pemOf := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	csrPEM := pemOf("CERTIFICATE REQUEST", der)
	flipped := bytes.Clone(der)
	flipped[len(flipped)-1] ^= 1
	bigDER := buildCSR(t, k.p256, parts{attrs: [][]byte{attribute(oidAttrUnstructured, mustMarshalUTF8(t, strings.Repeat("x", MaxCSRSize)))}})
	withHeaders := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: der})

	tests := []struct {
		name string
		in   []byte
		want Reason // "" for success
	}{
		{"der", der, ""},
		{"pem", csrPEM, ""},
		{"new certificate request pem", pemOf("NEW CERTIFICATE REQUEST", der), ""},
		{"pem with whitespace and crlf", append([]byte("\r\n  "), bytes.ReplaceAll(append(csrPEM, '\n', '\n'), []byte("\n"), []byte("\r\n"))...), ""},
		{"empty", nil, ReasonEmpty},
		{"whitespace only", []byte(" \r\n\t"), ReasonEmpty},
		{"over MaxPEMSize", append(bytes.Clone(csrPEM), make([]byte, MaxPEMSize)...), ReasonTooLarge},
		{"pem of der over MaxCSRSize", pemOf("CERTIFICATE REQUEST", bigDER), ReasonTooLarge},
		{"certificate pem", pemOf("CERTIFICATE", der), ReasonMalformed},
		{"pem with headers", withHeaders, ReasonMalformed},
		{"pem without end line", bytes.TrimSuffix(csrPEM, []byte("-----END CERTIFICATE REQUEST-----\n")), ReasonMalformed},
		{"pem with bad base64", []byte("-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n"), ReasonMalformed},
		{"two pem blocks", append(bytes.Clone(csrPEM), csrPEM...), ReasonTrailingData},
		{"garbled block before a good one", append([]byte("-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n"), csrPEM...), ReasonTrailingData},
		{"pem then garbage", append(bytes.Clone(csrPEM), "garbage"...), ReasonTrailingData},
		{"der with trailing newline", append(bytes.Clone(der), '\n'), ReasonTrailingData},
		{"pem with bad signature", pemOf("CERTIFICATE REQUEST", flipped), ReasonBadSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := ParsePEMOrDER(tc.in, DefaultPolicy())
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				if !bytes.Equal(csr.Raw, der) {
					t.Errorf("got Raw of %d bytes, want the %d bytes encoded", len(csr.Raw), len(der))
				}
				return
			}
			checkRejection(t, err, tc.want)
		})
	}
}

// TestEveryReasonTested checks that the reject table exercises every
// Reason and that every Reason has its own public message.
func TestEveryReasonTested(t *testing.T) {
	tested := make(map[Reason]bool)
	for _, tc := range rejectCases(t) {
		tested[tc.want] = true
	}
	seen := make(map[string]Reason)
	for r, msg := range publicMessages {
		if !tested[r] {
			t.Errorf("reason %v: no reject case, want at least one", r)
		}
		if !strings.HasPrefix(msg, "csr ") {
			t.Errorf("reason %v: got public message %q, want prefix %q", r, msg, "csr ")
		}
		if other, dup := seen[msg]; dup {
			t.Errorf("reasons %v and %v share public message %q", r, other, msg)
		}
		seen[msg] = r
	}
	for r := range tested {
		if _, ok := publicMessages[r]; !ok {
			t.Errorf("reason %v: no public message", r)
		}
	}
	if got := len(tested); got < 20 {
		t.Errorf("got %d distinct reasons tested, want at least 20", got)
	}
}

func TestError(t *testing.T) {
	cause := errors.New("x509: boom")
	err := fmt.Errorf("enrolling device: %w", &Error{Reason: ReasonBadSignature, Detail: "verifying ECDSA-SHA256 signature", Err: cause})
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want an *Error through the wrap", err)
	}
	if got, want := ce.Error(), "csr: bad_signature: verifying ECDSA-SHA256 signature: x509: boom"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := ce.Public(), "csr signature invalid"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !errors.Is(err, cause) {
		t.Errorf("got errors.Is(err, cause) false, want true")
	}
	if got, want := (&Error{Reason: "novel"}).Public(), "csr rejected"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestDetailQuotesInput checks that names from the request reach the detail
// escaped and truncated, so they cannot forge log lines.
func TestDetailQuotesInput(t *testing.T) {
	k := testKeys(t)
	long := "x\ny" + strings.Repeat("z", 200) + ".example"
	der := createCSR(t, k.p256, &x509.CertificateRequest{DNSNames: []string{long}})
	_, err := Parse(der, DefaultPolicy())
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want *Error", err)
	}
	if strings.ContainsAny(ce.Detail, "\n") {
		t.Errorf("got detail %q with a raw newline, want it escaped", ce.Detail)
	}
	if len(ce.Detail) > 2*maxQuoted+64 {
		t.Errorf("got detail of %d bytes, want it truncated", len(ce.Detail))
	}
}

// TestChallengePasswordNotInDetail checks that no rejection quotes the
// challenge password, a secret.
func TestChallengePasswordNotInDetail(t *testing.T) {
	k := testKeys(t)
	const secret = "otp-8f3a9c2e"
	der := buildCSR(t, k.p256, parts{attrs: [][]byte{challenge(t, secret), challenge(t, secret)}})
	_, err := Parse(der, DefaultPolicy())
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("got %v, want an error that does not quote the challenge password", err)
	}
}

// TestCryptoX509Gaps records what crypto/x509 alone does with inputs
// Parse classifies itself, which is why Parse walks the structure first. It
// only logs crypto/x509's behaviour, so that a Go release changing it does
// not fail the build; the assertions are on Parse.
func TestCryptoX509Gaps(t *testing.T) {
	k := testKeys(t)
	tests := []struct {
		name string
		der  []byte
		want Reason
	}{
		{"duplicate extension", buildCSR(t, k.p256, parts{attrs: [][]byte{extReq(t,
			pkix.Extension{Id: oidPrivateExt, Value: asn1NullBytes},
			pkix.Extension{Id: oidPrivateExt, Value: asn1NullBytes})}}), ReasonDuplicateExtension},
		{"extensionRequest with a second value", buildCSR(t, k.p256, parts{attrs: [][]byte{attribute(oidAttrExtReq,
			extensions(t, sanExt(false, dnsGN("a.example"))),
			extensions(t, sanExt(false, dnsGN("evil.example"))))}}), ReasonDuplicateAttribute},
		{"attribute with no values", buildCSR(t, k.p256, parts{attrs: [][]byte{attribute(oidAttrUnstructured)}}), ReasonMalformed},
		{"trailing data", append(createCSR(t, k.p256, &x509.CertificateRequest{Subject: defaultTestSubject}), 0), ReasonTrailingData},
		{"sha-1 signature", buildCSR(t, k.p256, parts{sigAlg: algID(oidSigECDSASHA1, nil), hash: crypto.SHA1}), ReasonBadSignatureAlgorithm},
		{"non-ascii dns name", buildCSR(t, k.p256, parts{attrs: [][]byte{extReq(t, sanExt(false, dnsGN("bücher.example")))}}), ReasonBadName},
		{"dns name with empty label", createCSR(t, k.p256, &x509.CertificateRequest{DNSNames: []string{"a..b"}}), ReasonBadName},
		{"version 1", buildCSR(t, k.p256, parts{version: big.NewInt(1)}), ReasonVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := x509.ParseCertificateRequest(tc.der)
			switch {
			case err != nil:
				t.Logf("crypto/x509 ParseCertificateRequest: %T %v", err, err)
			case csr.CheckSignature() != nil:
				t.Logf("crypto/x509 parses it; CheckSignature: %v", csr.CheckSignature())
			default:
				t.Logf("crypto/x509 parses it and CheckSignature passes (DNSNames %q)", csr.DNSNames)
			}
			_, err = Parse(tc.der, DefaultPolicy())
			checkRejection(t, err, tc.want)
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range acceptCases(f) {
		f.Add(tc.der)
	}
	for _, tc := range rejectCases(f) {
		if len(tc.der) <= MaxCSRSize {
			f.Add(tc.der)
		}
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := Parse(der, DefaultPolicy())
		checkFuzzResult(t, der, csr, err)
	})
}

func FuzzPEMOrDER(f *testing.F) {
	for _, tc := range acceptCases(f) {
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tc.der}))
	}
	f.Add([]byte("-----BEGIN NEW CERTIFICATE REQUEST-----\n\n-----END NEW CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := ParsePEMOrDER(b, DefaultPolicy())
		checkFuzzResult(t, nil, csr, err)
	})
}

// checkFuzzResult checks Parse's contract on arbitrary input: an accepted
// request verifies, is within the size cap and, when der is given, is
// exactly the input; a rejection is an *Error with a known reason.
func checkFuzzResult(t *testing.T, der []byte, csr *x509.CertificateRequest, err error) {
	if err != nil {
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("got %v (%T), want *Error", err, err)
		}
		if _, ok := publicMessages[ce.Reason]; !ok {
			t.Fatalf("got unknown reason %q", ce.Reason)
		}
		if ce.Detail == "" || strings.Contains(ce.Public(), ce.Detail) {
			t.Fatalf("got detail %q and public %q, want a detail the public message does not contain", ce.Detail, ce.Public())
		}
		if csr != nil {
			t.Fatalf("got a csr with error %v", err)
		}
		return
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("accepted csr fails CheckSignature: %v", err)
	}
	if len(csr.Raw) > MaxCSRSize {
		t.Fatalf("accepted csr of %d bytes, over MaxCSRSize", len(csr.Raw))
	}
	if der != nil && !bytes.Equal(csr.Raw, der) {
		t.Fatalf("accepted csr Raw differs from the input")
	}
	if csr.Version != 0 {
		t.Fatalf("accepted csr of version %d", csr.Version)
	}
}

// Small helpers.

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func mustMarshal(tb testing.TB, v any) []byte {
	tb.Helper()
	der, err := encasn1.Marshal(v)
	if err != nil {
		tb.Fatalf("marshalling %T: %v", v, err)
	}
	return der
}

func mustMarshalUTF8(tb testing.TB, s string) []byte {
	tb.Helper()
	der, err := encasn1.MarshalWithParams(s, "utf8")
	if err != nil {
		tb.Fatalf("marshalling %q: %v", s, err)
	}
	return der
}

func flipLast(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)-1] ^= 0x01
	return b
}

// rawRDN returns a Name with one attribute whose value has the given
// universal tag and raw contents, bypassing encoding/asn1's checks.
func rawRDN(oid encasn1.ObjectIdentifier, tag asn1.Tag, value []byte) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oid)
				b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes(value) })
			})
		})
	})
	return b.BytesOrPanic()
}

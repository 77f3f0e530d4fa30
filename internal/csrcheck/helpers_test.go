package csrcheck

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"math/big"
	"sync"
	"testing"

	_ "crypto/md5"  // registers MD5 for the MD5-signed test CSR
	_ "crypto/sha1" // registers SHA-1 for the SHA-1-signed test CSR
	_ "crypto/sha256"
	_ "crypto/sha512"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Test keys, generated once per test binary (RSA generation is slow,
// especially under -race).
type testKeySet struct {
	p224, p256, p384, p521 *ecdsa.PrivateKey
	rsa1536, rsa2048       *rsa.PrivateKey
	rsa3072                *rsa.PrivateKey
	ed                     ed25519.PrivateKey
}

var (
	keysOnce sync.Once
	keySet   testKeySet
	keysErr  error
)

func testKeys(tb testing.TB) *testKeySet {
	tb.Helper()
	keysOnce.Do(func() {
		ec := func(c elliptic.Curve) *ecdsa.PrivateKey {
			k, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil && keysErr == nil {
				keysErr = err
			}
			return k
		}
		r := func(bits int) *rsa.PrivateKey {
			k, err := rsa.GenerateKey(rand.Reader, bits)
			if err != nil && keysErr == nil {
				keysErr = err
			}
			return k
		}
		keySet.p224, keySet.p256, keySet.p384, keySet.p521 = ec(elliptic.P224()), ec(elliptic.P256()), ec(elliptic.P384()), ec(elliptic.P521())
		keySet.rsa1536, keySet.rsa2048, keySet.rsa3072 = r(1536), r(2048), r(3072)
		var err error
		if _, keySet.ed, err = ed25519.GenerateKey(rand.Reader); err != nil && keysErr == nil {
			keysErr = err
		}
	})
	if keysErr != nil {
		tb.Fatalf("generating test keys: %v", keysErr)
	}
	return &keySet
}

// createCSR makes a CSR with crypto/x509, which signs it correctly.
func createCSR(tb testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		tb.Fatalf("creating csr: %v", err)
	}
	return der
}

// OIDs used to hand-build requests.
var (
	oidAttrExtReq       = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
	oidAttrChallenge    = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
	oidAttrUnstructured = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 2}
	oidSAN              = encasn1.ObjectIdentifier{2, 5, 29, 17}
	oidKU               = encasn1.ObjectIdentifier{2, 5, 29, 15}
	oidEKU              = encasn1.ObjectIdentifier{2, 5, 29, 37}
	oidBC               = encasn1.ObjectIdentifier{2, 5, 29, 19}
	oidPrivateExt       = encasn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
	oidSigECDSASHA256   = encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidSigECDSASHA1     = encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidSigRSASHA256     = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSigRSAMD5        = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 4}
	oidSigEd25519       = encasn1.ObjectIdentifier{1, 3, 101, 112}
	oidPKRSA            = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidPKRSAPSS         = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidPKEC             = encasn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidPKDSA            = encasn1.ObjectIdentifier{1, 2, 840, 10040, 4, 1}
	oidPKX25519         = encasn1.ObjectIdentifier{1, 3, 101, 110}
	oidCurveP256        = encasn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidCurveSecp256k1   = encasn1.ObjectIdentifier{1, 3, 132, 0, 10}
	oidCommonNameTest   = encasn1.ObjectIdentifier{2, 5, 4, 3}
	asn1NullBytes       = []byte{0x05, 0x00}
	defaultTestSubject  = pkix.Name{CommonName: "device-0001.test"}
)

// parts are the pieces of a hand-built CertificationRequest. Zero fields
// take defaults from the signer.
type parts struct {
	version    *big.Int    // nil: 0
	subject    []byte      // raw Name; nil: CN=device-0001.test
	spki       []byte      // raw SubjectPublicKeyInfo; nil: the signer's
	attrs      [][]byte    // raw Attribute elements
	noAttrs    bool        // omit the attributes field
	sigAlg     []byte      // raw AlgorithmIdentifier; nil: SHA-256 (or Ed25519) for the signer
	hash       crypto.Hash // digest to sign; 0: SHA-256 (none for Ed25519)
	signature  []byte      // used instead of signing when non-nil
	unusedBits byte        // unused-bits octet of the signature BIT STRING
	extra      []byte      // appended inside the outer SEQUENCE after the signature
}

// buildCSR marshals a CertificationRequest from p and signs its info with
// signer. crypto/x509 cannot produce most of the broken requests the tests
// need, so they are assembled here.
func buildCSR(tb testing.TB, signer crypto.Signer, p parts) []byte {
	tb.Helper()
	if p.version == nil {
		p.version = new(big.Int)
	}
	if p.subject == nil {
		p.subject = rawName(tb, defaultTestSubject)
	}
	if p.spki == nil {
		spki, err := x509.MarshalPKIXPublicKey(signer.Public())
		if err != nil {
			tb.Fatalf("marshalling public key: %v", err)
		}
		p.spki = spki
	}
	if p.sigAlg == nil {
		switch signer.(type) {
		case *ecdsa.PrivateKey:
			p.sigAlg = algID(oidSigECDSASHA256, nil)
		case *rsa.PrivateKey:
			p.sigAlg = algID(oidSigRSASHA256, asn1NullBytes)
		case ed25519.PrivateKey:
			p.sigAlg = algID(oidSigEd25519, nil)
		default:
			tb.Fatalf("no default signature algorithm for %T", signer)
		}
	}

	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(p.version)
		b.AddBytes(p.subject)
		b.AddBytes(p.spki)
		if !p.noAttrs {
			b.AddASN1(asn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				for _, a := range p.attrs {
					b.AddBytes(a)
				}
			})
		}
	})
	tbs := b.BytesOrPanic()

	sig := p.signature
	if sig == nil {
		var err error
		if _, ok := signer.(ed25519.PrivateKey); ok {
			sig, err = signer.Sign(rand.Reader, tbs, crypto.Hash(0))
		} else {
			h := p.hash
			if h == 0 {
				h = crypto.SHA256
			}
			d := h.New()
			d.Write(tbs)
			sig, err = signer.Sign(rand.Reader, d.Sum(nil), h)
		}
		if err != nil {
			tb.Fatalf("signing: %v", err)
		}
	}

	b = cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(p.sigAlg)
		b.AddASN1(asn1.BIT_STRING, func(b *cryptobyte.Builder) {
			b.AddUint8(p.unusedBits)
			b.AddBytes(sig)
		})
		b.AddBytes(p.extra)
	})
	return b.BytesOrPanic()
}

func rawName(tb testing.TB, n pkix.Name) []byte {
	tb.Helper()
	der, err := encasn1.Marshal(n.ToRDNSequence())
	if err != nil {
		tb.Fatalf("marshalling name: %v", err)
	}
	return der
}

// algID returns an AlgorithmIdentifier; params are raw, nil for absent.
func algID(oid encasn1.ObjectIdentifier, params []byte) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddBytes(params)
	})
	return b.BytesOrPanic()
}

// spkiOf returns a SubjectPublicKeyInfo from raw parts.
func spkiOf(alg []byte, key []byte) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(alg)
		b.AddASN1BitString(key)
	})
	return b.BytesOrPanic()
}

// rsaSPKI returns an rsaEncryption SubjectPublicKeyInfo for n and e, which
// need not be a real key.
func rsaSPKI(n, e *big.Int) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(n)
		b.AddASN1BigInt(e)
	})
	return spkiOf(algID(oidPKRSA, asn1NullBytes), b.BytesOrPanic())
}

// fakeModulus returns a random odd number of exactly bits bits: not an RSA
// modulus, but parsers cannot tell without factoring it.
func fakeModulus(tb testing.TB, bits int) *big.Int {
	tb.Helper()
	buf := make([]byte, (bits+7)/8)
	if _, err := rand.Read(buf); err != nil {
		tb.Fatal(err)
	}
	n := new(big.Int).SetBytes(buf)
	n.SetBit(n, bits-1, 1)
	for i := bits; i < len(buf)*8; i++ {
		n.SetBit(n, i, 0)
	}
	return n.SetBit(n, 0, 1)
}

// attribute returns an Attribute with raw values.
func attribute(oid encasn1.ObjectIdentifier, values ...[]byte) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) {
			for _, v := range values {
				b.AddBytes(v)
			}
		})
	})
	return b.BytesOrPanic()
}

// extensions returns Extensions (SEQUENCE OF Extension).
func extensions(tb testing.TB, exts ...pkix.Extension) []byte {
	tb.Helper()
	der, err := encasn1.Marshal(exts)
	if err != nil {
		tb.Fatalf("marshalling extensions: %v", err)
	}
	return der
}

// extReq returns an extensionRequest attribute holding exts.
func extReq(tb testing.TB, exts ...pkix.Extension) []byte {
	return attribute(oidAttrExtReq, extensions(tb, exts...))
}

// challenge returns a challengePassword attribute.
func challenge(tb testing.TB, pw string) []byte {
	tb.Helper()
	v, err := encasn1.MarshalWithParams(pw, "utf8")
	if err != nil {
		tb.Fatal(err)
	}
	return attribute(oidAttrChallenge, v)
}

// generalName returns one GeneralName with an IMPLICIT [tag].
func generalName(tag asn1.Tag, body []byte) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes(body) })
	return b.BytesOrPanic()
}

// sanExt returns a subjectAltName extension of raw GeneralName elements.
func sanExt(critical bool, names ...[]byte) pkix.Extension {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, n := range names {
			b.AddBytes(n)
		}
	})
	return pkix.Extension{Id: oidSAN, Critical: critical, Value: b.BytesOrPanic()}
}

func dnsGN(name string) []byte { return generalName(asn1.Tag(2).ContextSpecific(), []byte(name)) }

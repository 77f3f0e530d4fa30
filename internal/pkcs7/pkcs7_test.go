package pkcs7

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/outpost-pki/outpost/internal/testpki"
)

// chain is a three-certificate hierarchy for tests.
type chain struct {
	root, issuing *testpki.CA
	leaf          *testpki.Leaf
}

func newChain(tb testing.TB) chain {
	tb.Helper()
	p := testpki.NewT(tb)
	root := p.Root("Outpost PKCS7 Test Root")
	issuing := root.Intermediate("Outpost PKCS7 Test Issuing CA", testpki.PathLen(0))
	leaf := issuing.Leaf("device-42.outpost.test", testpki.DNSNames("device-42.outpost.test"))
	return chain{root: root, issuing: issuing, leaf: leaf}
}

// certs returns leaf, issuing CA and root, in that order.
func (c chain) certs() []*x509.Certificate {
	return []*x509.Certificate{c.leaf.Cert, c.issuing.Cert, c.root.Cert}
}

// sameCerts reports an error unless got and want hold the same certificate
// encodings in the same order.
func sameCerts(t *testing.T, got, want []*x509.Certificate) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d certificates, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i].Raw, want[i].Raw) {
			t.Errorf("certificate %d: got subject %q, want %q (or encodings differ)",
				i, got[i].Subject, want[i].Subject)
		}
	}
}

// tlv returns a DER element with the given tag whose contents are parts
// concatenated, for building test messages field by field.
func tlv(tag asn1.Tag, parts ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, p := range parts {
			b.AddBytes(p)
		}
	})
	return b.BytesOrPanic()
}

// Building blocks of a certs-only message.
var (
	oidSignedDataTLV = tlv(asn1.OBJECT_IDENTIFIER, []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02})
	oidDataTLV       = tlv(asn1.OBJECT_IDENTIFIER, []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01})
	version1         = tlv(asn1.INTEGER, []byte{1})
	emptySet         = tlv(asn1.SET)
	encapData        = tlv(asn1.SEQUENCE, oidDataTLV)
)

// contentInfo wraps signedData, a complete SignedData element.
func contentInfo(signedData []byte) []byte {
	return tlv(asn1.SEQUENCE, oidSignedDataTLV, tlv(tagExplicit0, signedData))
}

// signedData builds a SignedData SEQUENCE from raw fields.
func signedData(fields ...[]byte) []byte { return tlv(asn1.SEQUENCE, fields...) }

// certField builds a [0] IMPLICIT certificates field from raw elements.
func certField(elems ...[]byte) []byte { return tlv(tagExplicit0, elems...) }

// certsOnly builds a valid certs-only message by hand.
func certsOnly(raws ...[]byte) []byte {
	return contentInfo(signedData(version1, emptySet, encapData, certField(raws...), emptySet))
}

// indefinite re-encodes a definite-length constructed DER element in BER
// indefinite-length form: same tag, length octet 0x80, contents, then the
// end-of-contents octets.
func indefinite(tb testing.TB, der []byte) []byte {
	tb.Helper()
	s := cryptobyte.String(der)
	var contents cryptobyte.String
	var tag asn1.Tag
	if !s.ReadAnyASN1(&contents, &tag) || !s.Empty() {
		tb.Fatalf("indefinite: input is not one DER element")
	}
	out := []byte{byte(tag), 0x80}
	out = append(out, contents...)
	return append(out, 0, 0)
}

// openssl runs the openssl binary with args and returns its standard
// output. Interop is part of the contract, so a missing binary fails the
// test rather than skipping it.
func openssl(t *testing.T, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required for interop tests: %v", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRoundTrip(t *testing.T) {
	c := newChain(t)
	all := c.certs()
	tests := []struct {
		name  string
		certs []*x509.Certificate
	}{
		{"one", all[:1]},
		{"two", all[:2]},
		{"three", all},
		{"root first", []*x509.Certificate{c.root.Cert, c.issuing.Cert, c.leaf.Cert}},
		{"duplicate", []*x509.Certificate{c.leaf.Cert, c.leaf.Cert}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			der, err := EncodeCertsOnly(tt.certs)
			if err != nil {
				t.Fatalf("EncodeCertsOnly: %v", err)
			}
			raws := make([][]byte, len(tt.certs))
			for i, cert := range tt.certs {
				raws[i] = cert.Raw
			}
			if want := certsOnly(raws...); !bytes.Equal(der, want) {
				t.Errorf("got encoding %x, want %x", der, want)
			}
			got, err := DecodeCertsOnly(der)
			if err != nil {
				t.Fatalf("DecodeCertsOnly: %v", err)
			}
			sameCerts(t, got, tt.certs)
		})
	}
}

func TestDecodeDoesNotAliasInput(t *testing.T) {
	c := newChain(t)
	der, err := EncodeCertsOnly(c.certs())
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCertsOnly(der)
	if err != nil {
		t.Fatal(err)
	}
	clear(der)
	sameCerts(t, got, c.certs())
}

func TestDecodeAccepts(t *testing.T) {
	c := newChain(t)
	leaf := c.leaf.Cert.Raw
	crl, err := c.issuing.CRL(nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Not a real SignerInfo; the decoder skips signerInfos without looking
	// inside.
	signerInfos := tlv(asn1.SET, tlv(asn1.SEQUENCE, tlv(asn1.INTEGER, []byte{1})))
	tests := []struct {
		name string
		der  []byte
	}{
		{"version 3", contentInfo(signedData(tlv(asn1.INTEGER, []byte{3}), emptySet, encapData, certField(leaf), emptySet))},
		{"version 0", contentInfo(signedData(tlv(asn1.INTEGER, []byte{0}), emptySet, encapData, certField(leaf), emptySet))},
		{"digest algorithms", contentInfo(signedData(version1,
			tlv(asn1.SET, tlv(asn1.SEQUENCE, tlv(asn1.OBJECT_IDENTIFIER, []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}))),
			encapData, certField(leaf), emptySet))},
		{"encapsulated content", contentInfo(signedData(version1, emptySet,
			tlv(asn1.SEQUENCE, oidDataTLV, tlv(tagExplicit0, tlv(asn1.OCTET_STRING, []byte("hello")))),
			certField(leaf), emptySet))},
		{"crls", contentInfo(signedData(version1, emptySet, encapData, certField(leaf), tlv(tagCRLs, crl), emptySet))},
		{"signers", contentInfo(signedData(version1, emptySet, encapData, certField(leaf), signerInfos))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCertsOnly(tt.der)
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			sameCerts(t, got, []*x509.Certificate{c.leaf.Cert})
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	c := newChain(t)
	leaf := c.leaf.Cert.Raw
	valid := certsOnly(leaf, c.issuing.Cert.Raw)

	tooMany := make([][]byte, MaxCerts+1)
	for i := range tooMany {
		tooMany[i] = leaf
	}
	// An indefinite-length SignedData inside a definite-length wrapper.
	sdIndefinite := indefinite(t, signedData(version1, emptySet, encapData, certField(leaf), emptySet))
	innerIndefinite := tlv(asn1.SEQUENCE, oidSignedDataTLV, tlv(tagExplicit0, sdIndefinite))

	// The same message with its outer length in three octets instead of
	// two: BER allows that, DER does not. valid is always longer than 255
	// bytes, so its header is 30 82 followed by two length octets.
	if valid[1] != 0x82 {
		t.Fatalf("got header %x, want 30 82", valid[:2])
	}
	nonMinimal := append([]byte{0x30, 0x83, 0x00}, valid[2:]...)

	tests := []struct {
		name string
		der  []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"one byte", []byte{0x30}, ErrMalformed},
		{"truncated", valid[:len(valid)-1], ErrMalformed},
		{"truncated in half", valid[:len(valid)/2], ErrMalformed},
		{"over MaxSize", make([]byte, MaxSize+1), ErrTooLarge},
		{"wrong outer tag", append([]byte{0x31}, valid[1:]...), ErrMalformed},
		{"trailing garbage", append(bytes.Clone(valid), 0x05, 0x00), ErrMalformed},
		{"non-minimal length", nonMinimal, ErrMalformed},
		{"content type id-data", tlv(asn1.SEQUENCE, oidDataTLV, tlv(tagExplicit0, tlv(asn1.OCTET_STRING, []byte("hi")))), ErrNotSignedData},
		{"content type not an oid", tlv(asn1.SEQUENCE, tlv(asn1.INTEGER, []byte{1}), tlv(tagExplicit0, signedData())), ErrMalformed},
		{"missing content", tlv(asn1.SEQUENCE, oidSignedDataTLV), ErrMalformed},
		{"primitive content", tlv(asn1.SEQUENCE, oidSignedDataTLV, tlv(asn1.Tag(0).ContextSpecific(), []byte{1})), ErrMalformed},
		{"trailing data in contentInfo", tlv(asn1.SEQUENCE, oidSignedDataTLV,
			tlv(tagExplicit0, signedData(version1, emptySet, encapData, certField(leaf), emptySet)), emptySet), ErrMalformed},
		{"indefinite length outer", indefinite(t, valid), ErrUnsupported},
		{"indefinite length signedData", innerIndefinite, ErrUnsupported},
		{"version not an integer", contentInfo(signedData(emptySet, emptySet, encapData, certField(leaf), emptySet)), ErrMalformed},
		{"version out of range", contentInfo(signedData(tlv(asn1.INTEGER, []byte{99}), emptySet, encapData, certField(leaf), emptySet)), ErrMalformed},
		{"missing digestAlgorithms", contentInfo(signedData(version1, encapData, certField(leaf), emptySet)), ErrMalformed},
		{"missing encapContentInfo", contentInfo(signedData(version1, emptySet, certField(leaf), emptySet)), ErrMalformed},
		{"missing signerInfos", contentInfo(signedData(version1, emptySet, encapData, certField(leaf))), ErrMalformed},
		{"trailing data in signedData", contentInfo(signedData(version1, emptySet, encapData, certField(leaf), emptySet, emptySet)), ErrMalformed},
		{"no certificates field", contentInfo(signedData(version1, emptySet, encapData, emptySet)), ErrNoCertificates},
		{"empty certificates field", certsOnly(), ErrNoCertificates},
		{"non-certificate sequence", certsOnly(tlv(asn1.SEQUENCE, tlv(asn1.INTEGER, []byte{1}))), ErrMalformed},
		{"certificate cut short inside", certsOnly(tlv(asn1.SEQUENCE, leaf[4:len(leaf)-10])), ErrMalformed},
		{"integer among certificates", certsOnly(leaf, tlv(asn1.INTEGER, []byte{1})), ErrMalformed},
		{"truncated certificate element", certsOnly(leaf, []byte{0x30, 0x05, 0x01}), ErrMalformed},
		{"extendedCertificate choice", certsOnly(tlv(asn1.Tag(0).ContextSpecific().Constructed(), leaf)), ErrUnsupported},
		{"attribute certificate choice", certsOnly(leaf, tlv(asn1.Tag(1).ContextSpecific().Constructed(), []byte{})), ErrUnsupported},
		{"v2 attribute certificate choice", certsOnly(tlv(asn1.Tag(2).ContextSpecific().Constructed(), []byte{})), ErrUnsupported},
		{"other certificate format choice", certsOnly(tlv(asn1.Tag(3).ContextSpecific().Constructed(), oidDataTLV)), ErrUnsupported},
		{"more than MaxCerts", certsOnly(tooMany...), ErrTooManyCerts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCertsOnly(tt.der)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			t.Logf("error: %v", err)
			if got != nil {
				t.Errorf("got %d certificates with an error, want none", len(got))
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	c := newChain(t)
	tooMany := make([]*x509.Certificate, MaxCerts+1)
	for i := range tooMany {
		tooMany[i] = c.leaf.Cert
	}
	// A certificate whose Raw is too big for MaxSize once wrapped.
	huge := &x509.Certificate{Raw: tlv(asn1.SEQUENCE, make([]byte, MaxSize))}
	tests := []struct {
		name  string
		certs []*x509.Certificate
		want  error
	}{
		{"nil slice", nil, ErrNoCertificates},
		{"empty slice", []*x509.Certificate{}, ErrNoCertificates},
		{"nil certificate", []*x509.Certificate{c.leaf.Cert, nil}, ErrMalformed},
		{"no raw encoding", []*x509.Certificate{{}}, ErrMalformed},
		{"raw with trailing data", []*x509.Certificate{{Raw: append(bytes.Clone(c.leaf.Cert.Raw), 0)}}, ErrMalformed},
		{"raw not a sequence", []*x509.Certificate{{Raw: tlv(asn1.SET)}}, ErrMalformed},
		{"more than MaxCerts", tooMany, ErrTooManyCerts},
		{"over MaxSize", []*x509.Certificate{huge}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncodeCertsOnly(tt.certs)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Errorf("got %d bytes with an error, want none", len(got))
			}
		})
	}
}

func TestEncodeMaxCerts(t *testing.T) {
	c := newChain(t)
	certs := make([]*x509.Certificate, MaxCerts)
	for i := range certs {
		certs[i] = c.leaf.Cert
	}
	der, err := EncodeCertsOnly(certs)
	if err != nil {
		t.Fatalf("EncodeCertsOnly(%d certificates): %v", MaxCerts, err)
	}
	got, err := DecodeCertsOnly(der)
	if err != nil {
		t.Fatalf("DecodeCertsOnly: %v", err)
	}
	sameCerts(t, got, certs)
}

// TestOpenSSLCrl2pkcs7 decodes what "openssl crl2pkcs7" writes, the usual
// way to make a certs-only message by hand, and checks that our encoding of
// the same certificates is byte-for-byte the same.
func TestOpenSSLCrl2pkcs7(t *testing.T) {
	c := newChain(t)
	dir := t.TempDir()
	leafFile := writeFile(t, dir, "leaf.pem", c.leaf.CertPEM())
	issuingFile := writeFile(t, dir, "issuing.pem", c.issuing.CertPEM())
	rootFile := writeFile(t, dir, "root.pem", c.root.CertPEM())

	tests := []struct {
		name  string
		files []string
		want  []*x509.Certificate
	}{
		{"one", []string{leafFile}, []*x509.Certificate{c.leaf.Cert}},
		{"leaf first", []string{leafFile, issuingFile}, []*x509.Certificate{c.leaf.Cert, c.issuing.Cert}},
		{"root first", []string{rootFile, issuingFile, leafFile}, []*x509.Certificate{c.root.Cert, c.issuing.Cert, c.leaf.Cert}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"crl2pkcs7", "-nocrl", "-outform", "DER"}
			for _, f := range tt.files {
				args = append(args, "-certfile", f)
			}
			der := openssl(t, args...)
			got, err := DecodeCertsOnly(der)
			if err != nil {
				t.Fatalf("DecodeCertsOnly(openssl output): %v", err)
			}
			sameCerts(t, got, tt.want)

			ours, err := EncodeCertsOnly(tt.want)
			if err != nil {
				t.Fatalf("EncodeCertsOnly: %v", err)
			}
			if !bytes.Equal(ours, der) {
				t.Errorf("got encoding %x, want openssl's %x", ours, der)
			}
		})
	}

	t.Run("with crl", func(t *testing.T) {
		crl, err := c.issuing.CRL([]x509.RevocationListEntry{{SerialNumber: c.leaf.Cert.SerialNumber, RevocationTime: testpki.Epoch}}, 7)
		if err != nil {
			t.Fatal(err)
		}
		crlFile := writeFile(t, dir, "issuing.crl", crl)
		der := openssl(t, "crl2pkcs7", "-in", crlFile, "-inform", "DER", "-outform", "DER",
			"-certfile", leafFile, "-certfile", issuingFile)
		got, err := DecodeCertsOnly(der)
		if err != nil {
			t.Fatalf("DecodeCertsOnly(openssl output): %v", err)
		}
		sameCerts(t, got, []*x509.Certificate{c.leaf.Cert, c.issuing.Cert})
	})

	t.Run("pem output", func(t *testing.T) {
		out := openssl(t, "crl2pkcs7", "-nocrl", "-certfile", leafFile, "-certfile", issuingFile)
		got, err := DecodeBase64CertsOnly(out)
		if err != nil {
			t.Fatalf("DecodeBase64CertsOnly(openssl PEM output): %v", err)
		}
		sameCerts(t, got, []*x509.Certificate{c.leaf.Cert, c.issuing.Cert})
	})
}

// TestOpenSSLSigned checks that certificates can be read out of a real
// signed message, and that openssl's streaming (BER indefinite-length)
// output is refused cleanly.
func TestOpenSSLSigned(t *testing.T) {
	c := newChain(t)
	dir := t.TempDir()
	certFile := writeFile(t, dir, "leaf.pem", c.leaf.CertPEM())
	keyFile := writeFile(t, dir, "leaf.key", c.leaf.KeyPEM())
	issuingFile := writeFile(t, dir, "issuing.pem", c.issuing.CertPEM())
	msgFile := writeFile(t, dir, "msg.txt", []byte("hello, est\n"))
	sign := []string{"cms", "-sign", "-nodetach", "-outform", "DER", "-in", msgFile,
		"-signer", certFile, "-inkey", keyFile, "-certfile", issuingFile}

	t.Run("der", func(t *testing.T) {
		der := openssl(t, sign...)
		got, err := DecodeCertsOnly(der)
		if err != nil {
			t.Fatalf("DecodeCertsOnly(signed message): %v", err)
		}
		// openssl chooses the order; check the set.
		if len(got) != 2 {
			t.Fatalf("got %d certificates, want 2", len(got))
		}
		for _, want := range []*x509.Certificate{c.leaf.Cert, c.issuing.Cert} {
			if !slicesContainsCert(got, want) {
				t.Errorf("got certificates without %q, want it included", want.Subject)
			}
		}
	})

	t.Run("streamed ber", func(t *testing.T) {
		ber := openssl(t, append(sign, "-stream")...)
		_, err := DecodeCertsOnly(ber)
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("got error %v, want %v", err, ErrUnsupported)
		}
	})
}

func slicesContainsCert(certs []*x509.Certificate, want *x509.Certificate) bool {
	for _, c := range certs {
		if c.Equal(want) {
			return true
		}
	}
	return false
}

// TestOpenSSLReadsOurs checks that openssl parses what EncodeCertsOnly
// writes, lists the certificates in our order, and re-encodes the message
// to the same bytes.
func TestOpenSSLReadsOurs(t *testing.T) {
	c := newChain(t)
	certs := []*x509.Certificate{c.leaf.Cert, c.issuing.Cert}
	der, err := EncodeCertsOnly(certs)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	derFile := writeFile(t, dir, "certs.p7b", der)

	t.Run("print_certs", func(t *testing.T) {
		out := string(openssl(t, "pkcs7", "-inform", "DER", "-in", derFile, "-print_certs", "-noout"))
		var subjects []string
		for line := range strings.Lines(out) {
			if s, ok := strings.CutPrefix(line, "subject="); ok {
				subjects = append(subjects, strings.TrimSpace(s))
			}
		}
		if len(subjects) != len(certs) {
			t.Fatalf("got subjects %q, want %d", subjects, len(certs))
		}
		for i, cert := range certs {
			if !strings.Contains(subjects[i], cert.Subject.CommonName) {
				t.Errorf("subject %d: got %q, want it to name %q", i, subjects[i], cert.Subject.CommonName)
			}
		}
	})

	t.Run("print", func(t *testing.T) {
		out := string(openssl(t, "pkcs7", "-inform", "DER", "-in", derFile, "-print", "-noout"))
		for _, want := range []string{"pkcs7-signedData", c.leaf.Cert.Subject.CommonName, c.issuing.Cert.Subject.CommonName} {
			if !strings.Contains(out, want) {
				t.Errorf("got -print output without %q, want it included", want)
			}
		}
	})

	t.Run("asn1parse", func(t *testing.T) {
		openssl(t, "asn1parse", "-inform", "DER", "-in", derFile)
	})

	t.Run("reencode", func(t *testing.T) {
		out := openssl(t, "pkcs7", "-inform", "DER", "-in", derFile, "-outform", "DER")
		if !bytes.Equal(out, der) {
			t.Errorf("got openssl re-encoding %x, want %x", out, der)
		}
	})

	t.Run("base64", func(t *testing.T) {
		b64, err := EncodeBase64CertsOnly(certs)
		if err != nil {
			t.Fatal(err)
		}
		pemFile := writeFile(t, dir, "certs.pem", pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: der}))
		b64File := writeFile(t, dir, "certs.b64", b64)
		// openssl base64 -d reads our wire format; decode it and compare.
		decoded := openssl(t, "base64", "-d", "-in", b64File)
		if !bytes.Equal(decoded, der) {
			t.Errorf("got openssl base64 decoding %x, want %x", decoded, der)
		}
		openssl(t, "pkcs7", "-in", pemFile, "-print_certs", "-noout")
	})
}

func TestEncodeBase64Format(t *testing.T) {
	c := newChain(t)
	b64, err := EncodeBase64CertsOnly(c.certs())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(b64, []byte("\r\n")) {
		t.Errorf("got output ending %q, want CRLF", b64[max(0, len(b64)-4):])
	}
	lines := strings.Split(strings.TrimSuffix(string(b64), "\r\n"), "\r\n")
	for i, line := range lines {
		if strings.ContainsAny(line, "\r\n") {
			t.Fatalf("line %d: got bare CR or LF, want CRLF line breaks only", i)
		}
		last := i == len(lines)-1
		if !last && len(line) != lineLen || last && (len(line) == 0 || len(line) > lineLen) {
			t.Errorf("line %d: got length %d, want %d (at most %d for the last)", i, len(line), lineLen, lineLen)
		}
	}
	der, err := base64.StdEncoding.DecodeString(strings.Join(lines, ""))
	if err != nil {
		t.Fatalf("decoding base64: %v", err)
	}
	want, err := EncodeCertsOnly(c.certs())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(der, want) {
		t.Errorf("got DER %x, want %x", der, want)
	}
	if _, err := EncodeBase64CertsOnly(nil); !errors.Is(err, ErrNoCertificates) {
		t.Errorf("got error %v, want %v", err, ErrNoCertificates)
	}
}

func TestDecodeBase64(t *testing.T) {
	c := newChain(t)
	certs := c.certs()
	der, err := EncodeCertsOnly(certs)
	if err != nil {
		t.Fatal(err)
	}
	crlf, err := EncodeBase64CertsOnly(certs)
	if err != nil {
		t.Fatal(err)
	}
	flat := base64.StdEncoding.EncodeToString(der)
	var lf76 strings.Builder
	for s := flat; len(s) > 0; {
		n := min(76, len(s))
		lf76.WriteString(s[:n] + "\n")
		s = s[n:]
	}
	pemBlock := func(typ string) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"crlf", crlf},
		{"crlf without final break", bytes.TrimSuffix(crlf, []byte("\r\n"))},
		{"lf", bytes.ReplaceAll(crlf, []byte("\r\n"), []byte("\n"))},
		{"lf 76 columns", []byte(lf76.String())},
		{"no line breaks", []byte(flat)},
		{"surrounding whitespace", []byte(" \t\r\n" + flat + "\r\n\t \n")},
		{"pem PKCS7", pemBlock("PKCS7")},
		{"pem CMS", pemBlock("CMS")},
		{"pem PKCS #7 SIGNED DATA", pemBlock("PKCS #7 SIGNED DATA")},
		{"pem with crlf and whitespace", append([]byte("\r\n  "), bytes.ReplaceAll(pemBlock("PKCS7"), []byte("\n"), []byte("\r\n"))...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeBase64CertsOnly(tt.in)
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			sameCerts(t, got, certs)
		})
	}
}

func TestDecodeBase64Malformed(t *testing.T) {
	c := newChain(t)
	der, err := EncodeCertsOnly([]*x509.Certificate{c.leaf.Cert})
	if err != nil {
		t.Fatal(err)
	}
	flat := base64.StdEncoding.EncodeToString(der)
	pemPKCS7 := pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: der})
	idData := tlv(asn1.SEQUENCE, oidDataTLV, tlv(tagExplicit0, tlv(asn1.OCTET_STRING, []byte("hi"))))

	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"whitespace only", []byte(" \r\n"), ErrMalformed},
		{"bad character", []byte(flat[:8] + "!" + flat[9:]), ErrMalformed},
		{"interior space", []byte(flat[:8] + " " + flat[8:]), ErrMalformed},
		{"missing padding", []byte("QUI"), ErrMalformed},
		{"url alphabet", []byte(base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe})), ErrMalformed},
		{"valid base64, garbage der", []byte(base64.StdEncoding.EncodeToString([]byte("not a pkcs7 message"))), ErrMalformed},
		{"valid base64, id-data", []byte(base64.StdEncoding.EncodeToString(idData)), ErrNotSignedData},
		{"over MaxBase64Size", bytes.Repeat([]byte("A"), MaxBase64Size+1), ErrTooLarge},
		{"decodes to over MaxSize", []byte(base64.StdEncoding.EncodeToString(make([]byte, MaxSize+1))), ErrTooLarge},
		{"pem certificate type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.leaf.Cert.Raw}), ErrMalformed},
		{"pem without end", []byte("-----BEGIN PKCS7-----\n" + flat + "\n"), ErrMalformed},
		{"pem with headers", pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: der}), ErrMalformed},
		{"pem with trailing data", append(bytes.Clone(pemPKCS7), "junk\n"...), ErrMalformed},
		{"two pem blocks", append(bytes.Clone(pemPKCS7), pemPKCS7...), ErrMalformed},
		{"pem of garbage", pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: []byte{0x30, 0x00}}), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeBase64CertsOnly(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			t.Logf("error: %v", err)
			if got != nil {
				t.Errorf("got %d certificates with an error, want none", len(got))
			}
		})
	}
}

// TestMaxBase64Size checks that the base64 cap admits every message
// EncodeBase64CertsOnly can produce, even wrapped in PEM.
func TestMaxBase64Size(t *testing.T) {
	wire := (MaxSize+2)/3*4 + (MaxSize+2)/3*4/lineLen*2 + 2
	if wire > MaxBase64Size {
		t.Errorf("got MaxBase64Size %d, want at least %d", MaxBase64Size, wire)
	}
	pemLen := len(pem.EncodeToMemory(&pem.Block{Type: "PKCS #7 SIGNED DATA", Bytes: make([]byte, MaxSize)}))
	if pemLen > MaxBase64Size {
		t.Errorf("got MaxBase64Size %d, want at least %d (PEM)", MaxBase64Size, pemLen)
	}
}

// knownErrors are the sentinels every error from this package wraps.
var knownErrors = []error{ErrTooLarge, ErrTooManyCerts, ErrMalformed, ErrNotSignedData, ErrUnsupported, ErrNoCertificates}

func checkKnownError(t *testing.T, err error) {
	t.Helper()
	for _, known := range knownErrors {
		if errors.Is(err, known) {
			return
		}
	}
	t.Fatalf("got error %v, want one wrapping a package sentinel", err)
}

// fuzzSeeds returns valid and malformed DER messages to seed the fuzzers.
func fuzzSeeds(f *testing.F) [][]byte {
	c := newChain(f)
	var seeds [][]byte
	for _, certs := range [][]*x509.Certificate{c.certs()[:1], c.certs()} {
		der, err := EncodeCertsOnly(certs)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, der, der[:len(der)/2], indefinite(f, der))
	}
	leaf := c.leaf.Cert.Raw
	seeds = append(seeds,
		nil,
		[]byte{0x30, 0x80, 0x00, 0x00},
		certsOnly(),
		certsOnly(tlv(asn1.Tag(1).ContextSpecific().Constructed(), []byte{})),
		contentInfo(signedData(version1, emptySet, encapData, certField(leaf), tlv(tagCRLs), tlv(asn1.SET, emptySet))),
		tlv(asn1.SEQUENCE, oidDataTLV, tlv(tagExplicit0, tlv(asn1.OCTET_STRING, []byte("hi")))),
	)
	return seeds
}

// FuzzDecodeCertsOnly checks that DecodeCertsOnly never panics, that every
// error wraps a sentinel, and that whatever it accepts survives a
// decode -> encode -> decode round trip unchanged.
func FuzzDecodeCertsOnly(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		certs, err := DecodeCertsOnly(der)
		if err != nil {
			checkKnownError(t, err)
			return
		}
		if len(certs) == 0 || len(certs) > MaxCerts {
			t.Fatalf("got %d certificates and no error, want 1 to %d", len(certs), MaxCerts)
		}
		again, err := EncodeCertsOnly(certs)
		if errors.Is(err, ErrTooLarge) && len(der) > MaxSize-64 {
			// Our framing can be a few bytes longer than the input's (an
			// empty encapContentInfo, say), so an input just under MaxSize
			// may not re-encode within it.
			return
		}
		if err != nil {
			t.Fatalf("EncodeCertsOnly(decoded certificates): %v", err)
		}
		got, err := DecodeCertsOnly(again)
		if err != nil {
			t.Fatalf("DecodeCertsOnly(re-encoded): %v", err)
		}
		sameCerts(t, got, certs)
	})
}

// FuzzDecodeBase64CertsOnly is FuzzDecodeCertsOnly for the base64 and PEM
// wire forms.
func FuzzDecodeBase64CertsOnly(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		flat := base64.StdEncoding.EncodeToString(seed)
		f.Add([]byte(flat))
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: seed}))
	}
	c := newChain(f)
	wire, err := EncodeBase64CertsOnly(c.certs())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(wire)
	f.Add(bytes.ReplaceAll(wire, []byte("\r\n"), []byte("\n")))
	f.Add([]byte("-----BEGIN PKCS7-----\n-----END PKCS7-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		certs, err := DecodeBase64CertsOnly(in)
		if err != nil {
			checkKnownError(t, err)
			return
		}
		again, err := EncodeBase64CertsOnly(certs)
		if errors.Is(err, ErrTooLarge) && len(in) > (MaxSize-64)/3*4 {
			// As in FuzzDecodeCertsOnly: a message just under MaxSize may
			// not re-encode within it.
			return
		}
		if err != nil {
			t.Fatalf("EncodeBase64CertsOnly(decoded certificates): %v", err)
		}
		got, err := DecodeBase64CertsOnly(again)
		if err != nil {
			t.Fatalf("DecodeBase64CertsOnly(re-encoded): %v", err)
		}
		sameCerts(t, got, certs)
	})
}

package este2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/est"
)

// TestInterop enrolls with an independent client, curl + openssl, for
// every EST operation, and with the project's estclient for the same: in
// local mode with HTTP Basic one-time secrets (cacerts, csrattrs,
// simpleenroll with LF, CRLF, one-line, PEM and chunked bodies,
// simplereenroll, serverkeygen), then with client certificates from a
// manufacturer CA made with openssl, then in queued mode (202 +
// Retry-After, then the certificate from the control plane). Every
// certificate a device got is checked with openssl verify against the
// chain cacerts gave, and is in the registry at the end.
func TestInterop(t *testing.T) {
	basic := apitypes.DMSPolicy{Mode: "local", DeviceAuth: "basic_secret", Profile: "device", LocalQuota: 1000, ReenrollWindowDays: 3650}
	v := newEnv(t, basic)
	ctx := context.Background()
	creds := v.mint(9, "io-")
	users := slices.Sorted(maps.Keys(creds))
	nextUser := func() string {
		u := users[0]
		users = users[1:]
		return u
	}
	var issued []*x509.Certificate // every certificate a device got

	// The chain from cacerts as openssl read it: root.pem (the trust
	// anchor) and untrusted.pem (the CAs below it).
	chainDir := newWorkDir(t)
	var chain []*x509.Certificate // as openssl printed them

	t.Run("curl/cacerts", func(t *testing.T) {
		w := newWorkDir(t)
		a := v.curl(w, v.estURL+"/cacerts")
		if a.Status != http.StatusOK || a.Header.Get("Content-Type") != est.MediaTypeCertsOnly {
			t.Fatalf("cacerts: got %v (Content-Type %q), want 200 %s", a, a.Header.Get("Content-Type"), est.MediaTypeCertsOnly)
		}
		w.write("cacerts.b64", a.Body)
		subjects := w.certsOnly("cacerts.b64", "cacerts.pem")
		want := []string{"CN = Outpost Test Devices CA", "O = Outpost Test, CN = Test Root CA"}
		if len(subjects) != 3 || !strings.Contains(subjects[0], "CN = Outpost Edge CA") || !strings.Contains(subjects[0], v.agent.DMSID) || !slices.Equal(subjects[1:], want) {
			t.Fatalf("openssl pkcs7 -print_certs: got subjects %q, want the edge CA (naming DMS %s), then %q", subjects, v.agent.DMSID, want)
		}
		chain = parsePEMFile(t, w.read("cacerts.pem"))
		writeChain(t, chainDir, chain)

		// The Host header's port does not matter.
		a = v.curl(w, "-H", "Host: localhost", v.estURL+"/cacerts")
		if a.Status != http.StatusOK {
			t.Errorf("cacerts with Host: localhost (no port): got %v, want 200", a)
		}
	})
	if len(chain) == 0 {
		t.Fatal("no chain from cacerts")
	}

	t.Run("curl/csrattrs", func(t *testing.T) {
		w := newWorkDir(t)
		a := v.curl(w, v.estURL+"/csrattrs")
		if a.Status != http.StatusOK || a.Header.Get("Content-Type") != est.MediaTypeCSRAttrs {
			t.Fatalf("csrattrs: got %v (Content-Type %q), want 200 %s", a, a.Header.Get("Content-Type"), est.MediaTypeCSRAttrs)
		}
		w.write("csrattrs.b64", a.Body)
		w.openssl("base64", "-d", "-in", "csrattrs.b64", "-out", "csrattrs.der")
		out := w.openssl("asn1parse", "-inform", "DER", "-in", "csrattrs.der")
		for _, want := range []string{":challengePassword", ":id-ecPublicKey", ":prime256v1", ":ecdsa-with-SHA256"} {
			if !strings.Contains(out, want) {
				t.Errorf("openssl asn1parse lacks %q:\n%s", want, out)
			}
		}
	})

	// enrollCurl posts body (a CSR file) to op with curl and extra
	// options, expects 200 with a certs-only answer, checks it with
	// openssl (subject, verify against the cacerts chain) and returns the
	// certificate (file name.pem).
	enrollCurl := func(t *testing.T, w *workDir, op, name, wantCN string, opts ...string) (*x509.Certificate, curlAnswer) {
		t.Helper()
		args := append([]string{"-H", "Content-Type: application/pkcs10"}, opts...)
		a := v.curl(w, append(args, v.estURL+"/"+op)...)
		if a.Status != http.StatusOK {
			t.Fatalf("%s with curl: got %v, want 200", op, a)
		}
		if ct := a.Header.Get("Content-Type"); ct != est.MediaTypeCertsOnly {
			t.Errorf("%s: Content-Type %q, want %q", op, ct, est.MediaTypeCertsOnly)
		}
		if cte := a.Header.Get("Content-Transfer-Encoding"); cte != "base64" {
			t.Errorf("%s: Content-Transfer-Encoding %q, want base64", op, cte)
		}
		w.write(name+".b64", a.Body)
		subjects := w.certsOnly(name+".b64", name+".pem")
		if len(subjects) != 1 || subjects[0] != "CN = "+wantCN {
			t.Fatalf("%s: the answer holds %q, want one certificate for CN = %s", op, subjects, wantCN)
		}
		opensslVerify(t, w, chainDir, name+".pem")
		c := mustParsePEM(t, w.read(name+".pem"))
		issued = append(issued, c)
		return c, a
	}

	var basicUser string
	var basicCert *x509.Certificate
	basicDir := newWorkDir(t) // its key and certificate, for re-enrollment
	t.Run("curl/simpleenroll-basic", func(t *testing.T) {
		basicUser = nextUser()
		w := basicDir
		w.csr("dev", "/CN="+basicUser)
		w.base64("dev.der", "dev.b64")
		// No credentials: a challenge first (libest sends none until
		// challenged).
		a := v.curl(w, "-H", "Content-Type: application/pkcs10", "--data-binary", "@dev.b64", v.estURL+"/simpleenroll")
		if a.Status != http.StatusUnauthorized || a.Header.Get("WWW-Authenticate") != `Basic realm="outpost-est"` {
			t.Fatalf("simpleenroll without credentials: got %v, WWW-Authenticate %q; want 401 with a Basic challenge", a, a.Header.Get("WWW-Authenticate"))
		}
		basicCert, _ = enrollCurl(t, w, "simpleenroll", "issued", basicUser, "-u", basicUser+":"+creds[basicUser], "--data-binary", "@dev.b64")
	})

	t.Run("curl/simpleenroll-chunked", func(t *testing.T) {
		u := nextUser()
		w := newWorkDir(t)
		w.csr("dev", "/CN="+u)
		w.base64("dev.der", "dev.b64")
		_, a := enrollCurl(t, w, "simpleenroll", "issued", u, "-u", u+":"+creds[u], "-H", "Transfer-Encoding: chunked", "--data-binary", "@dev.b64")
		if !strings.Contains(a.Trace, "> Transfer-Encoding: chunked") || strings.Contains(a.Trace, "> Content-Length:") {
			t.Errorf("curl did not send a chunked body:\n%s", a.Trace)
		}
	})

	t.Run("curl/simpleenroll-crlf", func(t *testing.T) {
		u := nextUser()
		w := newWorkDir(t)
		w.csr("dev", "/CN="+u)
		lf := w.base64("dev.der", "dev.b64")
		crlf := bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))
		if !bytes.Contains(crlf, []byte("\r\n")) || bytes.Count(crlf, []byte("\n")) < 2 {
			t.Fatalf("the CSR body has no line breaks to turn into CRLF: %q", lf)
		}
		w.write("dev.crlf", crlf)
		enrollCurl(t, w, "simpleenroll", "issued", u, "-u", u+":"+creds[u], "--data-binary", "@dev.crlf")
	})

	t.Run("curl/simpleenroll-one-line", func(t *testing.T) {
		u := nextUser()
		w := newWorkDir(t)
		w.csr("dev", "/CN="+u)
		w.openssl("base64", "-A", "-in", "dev.der", "-out", "dev.b64")
		if bytes.Contains(bytes.TrimSpace(w.read("dev.b64")), []byte("\n")) {
			t.Fatalf("openssl base64 -A wrote line breaks: %q", w.read("dev.b64"))
		}
		enrollCurl(t, w, "simpleenroll", "issued", u, "-u", u+":"+creds[u], "--data-binary", "@dev.b64")
	})

	t.Run("curl/simpleenroll-pem-anyauth", func(t *testing.T) {
		u := nextUser()
		w := newWorkDir(t)
		w.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
			"-keyout", "dev.key", "-subj", "/CN="+u, "-outform", "PEM", "-out", "dev.csr.pem")
		if !bytes.HasPrefix(w.read("dev.csr.pem"), []byte("-----BEGIN CERTIFICATE REQUEST-----")) {
			t.Fatalf("openssl wrote %q", w.read("dev.csr.pem"))
		}
		// --anyauth: curl sends no credentials until the 401 challenge
		// names Basic, as libest does.
		enrollCurl(t, w, "simpleenroll", "issued", u, "--anyauth", "-u", u+":"+creds[u], "--data-binary", "@dev.csr.pem")
		dump := string(w.read("curl.headers"))
		if !strings.Contains(dump, " 401") {
			t.Errorf("curl --anyauth got no 401 challenge first:\n%s", dump)
		}
	})

	t.Run("curl/simplereenroll", func(t *testing.T) {
		if basicCert == nil {
			t.Fatal("no certificate from curl/simpleenroll-basic")
		}
		w := newWorkDir(t)
		w.write("cur.pem", basicDir.read("issued.pem"))
		w.write("cur.key", basicDir.read("dev.key"))
		// A new key, the same subject (rekey).
		w.csr("new", "/CN="+basicUser)
		w.base64("new.der", "new.b64")
		c, _ := enrollCurl(t, w, "simplereenroll", "renewed", basicUser, "--cert", "cur.pem", "--key", "cur.key", "--data-binary", "@new.b64")
		if c.SerialNumber.Cmp(basicCert.SerialNumber) == 0 || !bytes.Equal(c.RawSubject, basicCert.RawSubject) {
			t.Errorf("re-enrollment: serial %x (was %x), subject %q (was %q)", c.SerialNumber, basicCert.SerialNumber, c.Subject, basicCert.Subject)
		}
		if samePub(c.PublicKey, basicCert.PublicKey) {
			t.Error("the renewed certificate kept the old key")
		}
	})

	t.Run("curl/serverkeygen", func(t *testing.T) {
		u := nextUser()
		w := newWorkDir(t)
		w.csr("dev", "/CN="+u)
		w.base64("dev.der", "dev.b64")
		a := v.curl(w, "-u", u+":"+creds[u], "-H", "Content-Type: application/pkcs10", "--data-binary", "@dev.b64", v.estURL+"/serverkeygen")
		if a.Status != http.StatusOK {
			t.Fatalf("serverkeygen: got %v, want 200", a)
		}
		mt, params, err := mime.ParseMediaType(a.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
			t.Fatalf("serverkeygen: Content-Type %q, want multipart/mixed with a boundary", a.Header.Get("Content-Type"))
		}
		mr := multipart.NewReader(bytes.NewReader(a.Body), params["boundary"])
		var types []string
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("serverkeygen: multipart: %v", err)
			}
			b, err := io.ReadAll(p)
			if err != nil {
				t.Fatal(err)
			}
			ct := p.Header.Get("Content-Type")
			types = append(types, ct)
			switch ct {
			case est.MediaTypePKCS8:
				w.write("key.b64", b)
			case est.MediaTypeCertsOnly:
				w.write("cert.b64", b)
			}
		}
		if !slices.Equal(types, []string{est.MediaTypePKCS8, est.MediaTypeCertsOnly}) {
			t.Fatalf("serverkeygen parts: %q, want the key then the certificate", types)
		}
		w.openssl("base64", "-d", "-in", "key.b64", "-out", "key.der")
		// pkcs8 -nocrypt reads only an unencrypted PKCS#8 PrivateKeyInfo.
		w.openssl("pkcs8", "-inform", "DER", "-nocrypt", "-in", "key.der", "-out", "key.pem")
		keyPub := w.openssl("pkey", "-inform", "DER", "-in", "key.der", "-pubout")
		subjects := w.certsOnly("cert.b64", "cert.pem")
		if len(subjects) != 1 || subjects[0] != "CN = "+u {
			t.Fatalf("serverkeygen certificate: %q, want CN = %s", subjects, u)
		}
		certPub := w.openssl("x509", "-in", "cert.pem", "-noout", "-pubkey")
		if keyPub != certPub || !strings.Contains(keyPub, "BEGIN PUBLIC KEY") {
			t.Fatalf("the key does not match the certificate:\nkey:  %s\ncert: %s", keyPub, certPub)
		}
		opensslVerify(t, w, chainDir, "cert.pem")
		c := mustParsePEM(t, w.read("cert.pem"))
		if samePub(c.PublicKey, mustParseCSR(t, w.read("dev.der")).PublicKey) {
			t.Error("serverkeygen certified the device's CSR key, not a new one")
		}
		issued = append(issued, c)
	})

	// The same operations with estclient.
	anchors, inter := x509.NewCertPool(), x509.NewCertPool()
	anchors.AddCert(chain[len(chain)-1])
	for _, c := range chain[:len(chain)-1] {
		inter.AddCert(c)
	}
	verifyGo := func(t *testing.T, c *x509.Certificate, cn string) {
		t.Helper()
		if c.Subject.CommonName != cn {
			t.Errorf("certificate for %q names %q", cn, c.Subject.CommonName)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("certificate for %q does not verify: %v", cn, err)
		}
		issued = append(issued, c)
	}
	t.Run("estclient/cacerts", func(t *testing.T) {
		got, err := v.client("", nil).CACerts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(chain) {
			t.Fatalf("estclient: %d CA certificates, openssl: %d", len(got), len(chain))
		}
		for i := range got {
			if !got[i].Equal(chain[i]) {
				t.Errorf("CA certificate %d: estclient %q, openssl %q", i, got[i].Subject, chain[i].Subject)
			}
		}
	})
	t.Run("estclient/csrattrs", func(t *testing.T) {
		attrs, err := v.client("", nil).CSRAttrs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var oids []string
		for _, a := range attrs {
			oids = append(oids, a.OID.String())
			for _, val := range a.Values {
				oids = append(oids, "value:"+string(val.FullBytes))
			}
		}
		for _, want := range []string{est.OIDChallengePassword.String(), est.OIDECPublicKey.String(), est.OIDECDSAWithSHA256.String()} {
			if !slices.Contains(oids, want) {
				t.Errorf("csrattrs %q lack %s", oids, want)
			}
		}
	})
	var goUser string
	var goKey *ecdsa.PrivateKey
	var goCert *x509.Certificate
	t.Run("estclient/simpleenroll", func(t *testing.T) {
		goUser = nextUser()
		c := v.client("", nil)
		c.Username, c.Password = goUser, creds[goUser]
		var csr []byte
		goKey, csr = newCSR(t, goUser)
		cert, err := c.SimpleEnroll(ctx, csr)
		if err != nil {
			t.Fatal(err)
		}
		verifyGo(t, cert, goUser)
		goCert = cert
	})
	t.Run("estclient/simplereenroll", func(t *testing.T) {
		if goCert == nil {
			t.Fatal("no certificate from estclient/simpleenroll")
		}
		_, csr := newCSR(t, goUser)
		cert, err := v.client("", tlsCert(goKey, goCert)).SimpleReenroll(ctx, csr)
		if err != nil {
			t.Fatal(err)
		}
		verifyGo(t, cert, goUser)
		if cert.SerialNumber.Cmp(goCert.SerialNumber) == 0 {
			t.Error("re-enrollment returned the same certificate")
		}
	})
	t.Run("estclient/serverkeygen", func(t *testing.T) {
		u := nextUser()
		c := v.client("", nil)
		c.Username, c.Password = u, creds[u]
		_, csr := newCSR(t, u)
		cert, key, err := c.ServerKeygen(ctx, csr)
		if err != nil {
			t.Fatal(err)
		}
		verifyGo(t, cert, u)
		signer, ok := key.(crypto.Signer)
		if !ok || !samePub(signer.Public(), cert.PublicKey) {
			t.Errorf("serverkeygen: the key (%T) does not match the certificate", key)
		}
	})

	// Client certificates from a manufacturer CA made with openssl.
	mfg := newWorkDir(t)
	mfg.bootstrapCA("mfg", "Outpost Test Manufacturer CA")
	certAuth := basic
	certAuth.DeviceAuth = "client_cert"
	certAuth.BootstrapCAPEMs = []string{string(mfg.read("mfg.pem"))}
	v.setPolicy(certAuth, nil)

	t.Run("curl/simpleenroll-client-cert", func(t *testing.T) {
		w := newWorkDir(t)
		w.write("mfg.pem", mfg.read("mfg.pem"))
		w.write("mfg.key", mfg.read("mfg.key"))
		w.deviceCert("idevid", "io-cert-1", "mfg")
		w.csr("dev", "/CN=io-cert-1")
		w.base64("dev.der", "dev.b64")
		// Without the certificate: 401.
		a := v.curl(w, "-H", "Content-Type: application/pkcs10", "--data-binary", "@dev.b64", v.estURL+"/simpleenroll")
		if a.Status != http.StatusUnauthorized || !strings.Contains(string(a.Body), "client certificate") {
			t.Errorf("simpleenroll without a client certificate: got %v, want 401 naming the client certificate", a)
		}
		enrollCurl(t, w, "simpleenroll", "issued", "io-cert-1", "--cert", "idevid.pem", "--key", "idevid.key", "--data-binary", "@dev.b64")
	})
	t.Run("estclient/simpleenroll-client-cert", func(t *testing.T) {
		w := newWorkDir(t)
		w.write("mfg.pem", mfg.read("mfg.pem"))
		w.write("mfg.key", mfg.read("mfg.key"))
		w.deviceCert("idevid", "io-cert-2", "mfg")
		key := parseKeyPEM(t, w.read("idevid.key"))
		_, csr := newCSR(t, "io-cert-2")
		cert, err := v.client("", tlsCert(key, mustParsePEM(t, w.read("idevid.pem")))).SimpleEnroll(ctx, csr)
		if err != nil {
			t.Fatal(err)
		}
		verifyGo(t, cert, "io-cert-2")
	})

	// Queued mode: 202 with Retry-After, then the certificate signed by
	// the control plane with the devices CA.
	queued := certAuth
	queued.Mode = "queued"
	v.setPolicy(queued, nil)
	t.Run("curl/simpleenroll-queued", func(t *testing.T) {
		w := newWorkDir(t)
		a := v.curl(w, v.estURL+"/cacerts")
		if a.Status != http.StatusOK {
			t.Fatalf("cacerts in queued mode: %v", a)
		}
		w.write("cacerts.b64", a.Body)
		subjects := w.certsOnly("cacerts.b64", "cacerts.pem")
		if want := []string{"CN = Outpost Test Devices CA", "O = Outpost Test, CN = Test Root CA"}; !slices.Equal(subjects, want) {
			t.Fatalf("cacerts in queued mode: %q, want %q", subjects, want)
		}
		qchain := newWorkDir(t)
		writeChain(t, qchain, parsePEMFile(t, w.read("cacerts.pem")))

		w.write("mfg.pem", mfg.read("mfg.pem"))
		w.write("mfg.key", mfg.read("mfg.key"))
		w.deviceCert("idevid", "io-queued-1", "mfg")
		w.csr("dev", "/CN=io-queued-1")
		w.base64("dev.der", "dev.b64")
		args := []string{"--cert", "idevid.pem", "--key", "idevid.key", "-H", "Content-Type: application/pkcs10", "--data-binary", "@dev.b64", v.estURL + "/simpleenroll"}
		a = v.curl(w, args...)
		if a.Status != http.StatusAccepted || a.Header.Get("Retry-After") != "1" {
			t.Fatalf("queued simpleenroll: got %v, Retry-After %q; want 202 with Retry-After 1", a, a.Header.Get("Retry-After"))
		}
		deadline := time.Now().Add(time.Minute)
		for a.Status == http.StatusAccepted && time.Now().Before(deadline) {
			time.Sleep(time.Second) // what Retry-After says
			a = v.curl(w, args...)
		}
		if a.Status != http.StatusOK {
			t.Fatalf("queued simpleenroll, repeated: got %v, want 200", a)
		}
		w.write("issued.b64", a.Body)
		if s := w.certsOnly("issued.b64", "issued.pem"); len(s) != 1 || s[0] != "CN = io-queued-1" {
			t.Fatalf("queued certificate: %q", s)
		}
		opensslVerify(t, w, qchain, "issued.pem")
		issued = append(issued, mustParsePEM(t, w.read("issued.pem")))
	})

	v.waitInRegistry(issued)
	t.Logf("%d certificates issued, all in the registry", len(issued))
}

// writeChain writes root.pem (the last, self-signed certificate) and
// untrusted.pem (the others) into w for opensslVerify.
func writeChain(t testing.TB, w *workDir, chain []*x509.Certificate) {
	t.Helper()
	root := chain[len(chain)-1]
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Fatalf("the last certificate of the chain (%s) is not self-signed: %v", root.Subject, err)
	}
	w.write("root.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}))
	var b []byte
	for _, c := range chain[:len(chain)-1] {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	w.write("untrusted.pem", b)
}

// opensslVerify checks file (in w) with openssl verify against the chain
// writeChain put in chainDir.
func opensslVerify(t testing.TB, w *workDir, chainDir *workDir, file string) {
	t.Helper()
	args := []string{"verify", "-CAfile", chainDir.path("root.pem")}
	if len(bytes.TrimSpace(chainDir.read("untrusted.pem"))) > 0 {
		args = append(args, "-untrusted", chainDir.path("untrusted.pem"))
	}
	out := w.openssl(append(args, file)...)
	if strings.TrimSpace(out) != file+": OK" {
		t.Fatalf("openssl verify %s: %s", file, out)
	}
}

func parsePEMFile(t testing.TB, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func parseKeyPEM(t testing.TB, b []byte) crypto.Signer {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM key in %q", b)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}

func mustParseCSR(t testing.TB, der []byte) *x509.CertificateRequest {
	t.Helper()
	c, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func samePub(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

package issuer

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/testpki"
)

func TestIssue(t *testing.T) {
	h := newHierarchy(t, testpki.ECDSAP256, nil)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	csr := func(cn string, opts ...testpki.CertOption) func(testing.TB) *x509.CertificateRequest {
		return func(tb testing.TB) *x509.CertificateRequest { return newCSR(tb, cn, opts...) }
	}
	withUsages := func(dns []string, ku x509.KeyUsage, eku ...x509.ExtKeyUsage) func(testing.TB) *x509.CertificateRequest {
		return func(tb testing.TB) *x509.CertificateRequest {
			return csrWithExtensions(tb, "device-42", dns, usageExtensions(tb, ku, eku...))
		}
	}
	dns := func(names ...string) func(*testing.T, *x509.Certificate) {
		return func(t *testing.T, c *x509.Certificate) {
			if !slices.Equal(c.DNSNames, names) {
				t.Errorf("DNSNames: got %q, want %q", c.DNSNames, names)
			}
		}
	}
	ips := func(want ...string) func(*testing.T, *x509.Certificate) {
		return func(t *testing.T, c *x509.Certificate) {
			var got []string
			for _, ip := range c.IPAddresses {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, want) {
				t.Errorf("IPAddresses: got %v, want %v", got, want)
			}
		}
	}
	tests := []struct {
		name       string
		csr        func(testing.TB) *x509.CertificateRequest
		profile    func(*Profile)
		req        Request
		wantReason Reason // "" for success
		check      func(*testing.T, *x509.Certificate)
	}{
		// SAN policy: DNS.
		{name: "dns exact", csr: csr("d", testpki.DNSNames("device-42.line1.factory.example")), check: dns("device-42.line1.factory.example")},
		{name: "dns one-label wildcard", csr: csr("d", testpki.DNSNames("cam-7.line1.factory.example")), check: dns("cam-7.line1.factory.example")},
		{name: "dns one-label wildcard, two labels denied", csr: csr("d", testpki.DNSNames("a.b.line1.factory.example")), wantReason: ReasonSANNotAllowed},
		{name: "dns any-depth wildcard", csr: csr("d", testpki.DNSNames("a.b.c.line2.factory.example")), check: dns("a.b.c.line2.factory.example")},
		{name: "dns any-depth wildcard, apex denied", csr: csr("d", testpki.DNSNames("line2.factory.example")), wantReason: ReasonSANNotAllowed},
		{name: "dns outside policy", csr: csr("d", testpki.DNSNames("evil.example")), wantReason: ReasonSANNotAllowed},
		{name: "dns one bad among good", csr: csr("d", testpki.DNSNames("a.line1.factory.example", "evil.example")), wantReason: ReasonSANNotAllowed},
		{name: "dns wildcard requested", csr: csr("d", testpki.DNSNames("*.line1.factory.example")), wantReason: ReasonSANNotAllowed},
		// IP, URI, email.
		{name: "ipv4 in range", csr: csr("d", testpki.IPAddresses(net.ParseIP("10.42.7.7"))), check: ips("10.42.7.7")},
		{name: "ipv6 in range", csr: csr("d", testpki.IPAddresses(net.ParseIP("fd00:42::7"))), check: ips("fd00:42::7")},
		{name: "ip out of range", csr: csr("d", testpki.IPAddresses(net.ParseIP("10.43.0.1"))), wantReason: ReasonSANNotAllowed},
		{name: "uri allowed", csr: csr("d", testpki.URIs("spiffe://factory.example/device/42")), check: func(t *testing.T, c *x509.Certificate) {
			if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://factory.example/device/42" {
				t.Errorf("URIs: got %v, want [spiffe://factory.example/device/42]", c.URIs)
			}
		}},
		{name: "uri any depth", csr: csr("d", testpki.URIs("spiffe://factory.example/fleet/a/b"))},
		{name: "uri too deep for *", csr: csr("d", testpki.URIs("spiffe://factory.example/device/42/x")), wantReason: ReasonSANNotAllowed},
		{name: "uri other host", csr: csr("d", testpki.URIs("spiffe://evil.example/device/42")), wantReason: ReasonSANNotAllowed},
		{name: "email allowed", csr: csr("d", testpki.Emails("ops@factory.example")), check: func(t *testing.T, c *x509.Certificate) {
			if !slices.Equal(c.EmailAddresses, []string{"ops@factory.example"}) {
				t.Errorf("EmailAddresses: got %v, want [ops@factory.example]", c.EmailAddresses)
			}
		}},
		{name: "email subdomain allowed by *.", csr: csr("d", testpki.Emails("ops@line1.factory.example"))},
		{name: "email denied", csr: csr("d", testpki.Emails("ops@evil.example")), wantReason: ReasonSANNotAllowed},
		// Honouring.
		{name: "requested sans ignored when not honoured", csr: csr("d", testpki.DNSNames("evil.example")),
			profile: func(p *Profile) { p.HonourExtensions = []string{ExtensionNone} }, check: dns()},
		{name: "requested sans ignored, server sans kept", csr: csr("d", testpki.DNSNames("evil.example")),
			profile: func(p *Profile) { p.HonourExtensions = []string{ExtensionKeyUsage} },
			req:     Request{ExtraSANs: AltNames{DNSNames: []string{"srv.line1.factory.example"}}}, check: dns("srv.line1.factory.example")},
		{name: "server sans added after requested ones", csr: csr("d", testpki.DNSNames("a.line1.factory.example")),
			req: Request{ExtraSANs: AltNames{DNSNames: []string{"b.line1.factory.example"}}}, check: dns("a.line1.factory.example", "b.line1.factory.example")},
		{name: "server sans still checked", csr: csr("d"),
			req: Request{ExtraSANs: AltNames{DNSNames: []string{"evil.example"}}}, wantReason: ReasonSANNotAllowed},
		// CopyCNToSAN.
		{name: "cn copied as dns", csr: csr("device-9.line1.factory.example"), profile: func(p *Profile) { p.CopyCNToSAN = true },
			check: dns("device-9.line1.factory.example")},
		{name: "cn copied as ip", csr: csr("10.42.0.9"), profile: func(p *Profile) { p.CopyCNToSAN = true }, check: ips("10.42.0.9")},
		{name: "cn not a hostname is not copied", csr: csr("device 9"), profile: func(p *Profile) { p.CopyCNToSAN = true }, check: dns()},
		{name: "single-label cn is not copied", csr: csr("device-9"), profile: func(p *Profile) { p.CopyCNToSAN = true }, check: dns()},
		{name: "cn copy deduplicated", csr: csr("Device-9.line1.factory.example", testpki.DNSNames("device-9.line1.factory.example")),
			profile: func(p *Profile) { p.CopyCNToSAN = true }, check: dns("device-9.line1.factory.example")},
		{name: "copied cn subject to policy", csr: csr("x.evil.example"), profile: func(p *Profile) { p.CopyCNToSAN = true }, wantReason: ReasonSANNotAllowed},
		{name: "cn not copied when off", csr: csr("x.evil.example"), check: dns()},
		// MaxSANs.
		{name: "max sans reached", csr: csr("d", testpki.DNSNames("a.line1.factory.example", "b.line1.factory.example")),
			profile: func(p *Profile) { p.MaxSANs = 2 }},
		{name: "max sans exceeded", csr: csr("d", testpki.DNSNames("a.line1.factory.example", "b.line1.factory.example"), testpki.IPAddresses(net.ParseIP("10.42.0.1"))),
			profile: func(p *Profile) { p.MaxSANs = 2 }, wantReason: ReasonTooManySANs},
		{name: "duplicates do not count", csr: csr("d", testpki.DNSNames("a.line1.factory.example", "A.line1.factory.example", "a.line1.factory.example")),
			profile: func(p *Profile) { p.MaxSANs = 1 }, check: dns("a.line1.factory.example")},
		{name: "cn copy counts", csr: csr("c.line1.factory.example", testpki.DNSNames("a.line1.factory.example")),
			profile: func(p *Profile) { p.MaxSANs = 1; p.CopyCNToSAN = true }, wantReason: ReasonTooManySANs},
		{name: "default max sans", csr: csr("d", testpki.DNSNames(names(11)...)), wantReason: ReasonTooManySANs},
		// Key policy.
		{name: "rsa 1024 rejected", csr: csr("d", testpki.Key(rsa1024)), wantReason: ReasonKeyNotAllowed},
		{name: "rsa 2048 accepted", csr: csr("d", testpki.KeyAlgorithm(testpki.RSA2048))},
		{name: "rsa 3072 rejected by max bits", csr: csr("d", testpki.KeyAlgorithm(testpki.RSA3072)),
			profile: func(p *Profile) { p.AllowedKeys = []KeySpec{{Algorithm: "rsa", MaxBits: 2048}} }, wantReason: ReasonKeyNotAllowed},
		{name: "p-384 accepted", csr: csr("d", testpki.KeyAlgorithm(testpki.ECDSAP384))},
		{name: "p-384 rejected when only p-256", csr: csr("d", testpki.KeyAlgorithm(testpki.ECDSAP384)),
			profile: func(p *Profile) { p.AllowedKeys = []KeySpec{{Algorithm: "ecdsa", Curves: []string{"P-256"}}} }, wantReason: ReasonKeyNotAllowed},
		{name: "ed25519 rejected by default profile", csr: csr("d", testpki.KeyAlgorithm(testpki.Ed25519)), wantReason: ReasonKeyNotAllowed},
		{name: "ed25519 accepted when allowed", csr: csr("d", testpki.KeyAlgorithm(testpki.Ed25519)),
			profile: func(p *Profile) { p.AllowedKeys = []KeySpec{{Algorithm: "ed25519"}} }},
		// Subject.
		{name: "cn copied from csr", csr: csr("device-42", testpki.Subject(pkix.Name{Organization: []string{"Device Corp"}})), check: func(t *testing.T, c *x509.Certificate) {
			if c.Subject.CommonName != "device-42" || len(c.Subject.Organization) != 0 {
				t.Errorf("subject: got %v, want CN=device-42", c.Subject)
			}
		}},
		{name: "subject template", csr: csr("ignored"), req: Request{DeviceID: "dev-0042"},
			profile: func(p *Profile) {
				p.Subject = SubjectTemplate{CommonName: "{{.DeviceID}}.{{.Profile}}", Organization: []string{"Outpost"}, Country: []string{"DE"}}
			},
			check: func(t *testing.T, c *x509.Certificate) {
				if got, want := c.Subject.String(), "CN=dev-0042.device,O=Outpost,C=DE"; got != want {
					t.Errorf("subject: got %v, want %v", got, want)
				}
			}},
		{name: "subject template over csr fields", csr: csr("cam", testpki.DNSNames("cam.line1.factory.example")),
			profile: func(p *Profile) { p.Subject.CommonName = "{{.CSR.CommonName}}@{{index .CSR.DNSNames 0}}" },
			check: func(t *testing.T, c *x509.Certificate) {
				if got, want := c.Subject.CommonName, "cam@cam.line1.factory.example"; got != want {
					t.Errorf("CN: got %v, want %v", got, want)
				}
			}},
		{name: "keep csr subject, template overrides", csr: csr("device-42", testpki.Subject(pkix.Name{Organization: []string{"Device Corp"}, OrganizationalUnit: []string{"Line 1"}, SerialNumber: "SN42"})),
			profile: func(p *Profile) {
				p.Subject = SubjectTemplate{KeepCSRSubject: true, Organization: []string{"Outpost"}}
			},
			check: func(t *testing.T, c *x509.Certificate) {
				s := c.Subject
				if s.CommonName != "device-42" || !slices.Equal(s.Organization, []string{"Outpost"}) ||
					!slices.Equal(s.OrganizationalUnit, []string{"Line 1"}) || s.SerialNumber != "SN42" {
					t.Errorf("subject: got %v, want CN=device-42,OU=Line 1,O=Outpost,SERIALNUMBER=SN42", s)
				}
			}},
		{name: "template renders empty", csr: csr("d"), profile: func(p *Profile) { p.Subject.CommonName = "{{.DeviceID}}" }, wantReason: ReasonSubjectTemplate},
		{name: "template fails at run time", csr: csr("d"), profile: func(p *Profile) { p.Subject.CommonName = "{{index .CSR.DNSNames 0}}" }, wantReason: ReasonSubjectTemplate},
		{name: "template too long", csr: csr("d"), req: Request{DeviceID: strings.Repeat("x", 65)},
			profile: func(p *Profile) { p.Subject.CommonName = "{{.DeviceID}}" }, wantReason: ReasonSubjectTemplate},
		{name: "csr cn too long", csr: csr(strings.Repeat("x", 65)), wantReason: ReasonSubjectTemplate},
		{name: "csr cn with control character", csr: csr("dev\x00ice"), wantReason: ReasonSubjectTemplate},
		{name: "neither subject nor san", csr: csr(""), wantReason: ReasonSubjectTemplate},
		{name: "empty subject with san", csr: csr("", testpki.DNSNames("a.line1.factory.example")), check: func(t *testing.T, c *x509.Certificate) {
			for _, e := range c.Extensions {
				if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) && !e.Critical {
					t.Errorf("SAN extension of an empty-subject certificate: got non-critical, want critical")
				}
			}
		}},
		// Usages.
		{name: "profile usages", csr: csr("d"), check: func(t *testing.T, c *x509.Certificate) {
			if c.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("usages: got %v %v, want DigitalSignature [ClientAuth]", c.KeyUsage, c.ExtKeyUsage)
			}
		}},
		{name: "requested eku intersected, not widened", csr: withUsages(nil, x509.KeyUsageDigitalSignature, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageCodeSigning),
			profile: func(p *Profile) {
				p.HonourExtensions = []string{ExtensionExtKeyUsage}
				p.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection}
			},
			check: func(t *testing.T, c *x509.Certificate) {
				if got, want := c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}; !slices.Equal(got, want) {
					t.Errorf("EKU: got %v, want %v", got, want)
				}
			}},
		{name: "requested eku disjoint", csr: withUsages(nil, x509.KeyUsageDigitalSignature, x509.ExtKeyUsageCodeSigning),
			profile: func(p *Profile) { p.HonourExtensions = []string{ExtensionExtKeyUsage} }, wantReason: ReasonUsageNotAllowed},
		{name: "requested eku ignored when not honoured", csr: withUsages(nil, x509.KeyUsageDigitalSignature, x509.ExtKeyUsageCodeSigning),
			check: func(t *testing.T, c *x509.Certificate) {
				if got, want := c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}; !slices.Equal(got, want) {
					t.Errorf("EKU: got %v, want %v", got, want)
				}
			}},
		{name: "requested ku intersected", csr: withUsages(nil, x509.KeyUsageDigitalSignature|x509.KeyUsageCertSign),
			profile: func(p *Profile) {
				p.HonourExtensions = []string{ExtensionKeyUsage}
				p.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement
			},
			check: func(t *testing.T, c *x509.Certificate) {
				if got, want := c.KeyUsage, x509.KeyUsageDigitalSignature; got != want {
					t.Errorf("KeyUsage: got %v, want %v", got, want)
				}
			}},
		{name: "requested ku disjoint", csr: withUsages(nil, x509.KeyUsageCertSign),
			profile: func(p *Profile) { p.HonourExtensions = []string{ExtensionKeyUsage} }, wantReason: ReasonUsageNotAllowed},
		{name: "key encipherment dropped for ecdsa", csr: csr("d"),
			profile: func(p *Profile) { p.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment },
			check: func(t *testing.T, c *x509.Certificate) {
				if got, want := c.KeyUsage, x509.KeyUsageDigitalSignature; got != want {
					t.Errorf("KeyUsage: got %v, want %v", got, want)
				}
			}},
		{name: "key encipherment kept for rsa", csr: csr("d", testpki.KeyAlgorithm(testpki.RSA2048)),
			profile: func(p *Profile) { p.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment },
			check: func(t *testing.T, c *x509.Certificate) {
				if got, want := c.KeyUsage, x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment; got != want {
					t.Errorf("KeyUsage: got %v, want %v", got, want)
				}
			}},
		{name: "no profile usage fits the key", csr: csr("d"), profile: func(p *Profile) { p.KeyUsage = x509.KeyUsageKeyEncipherment }, wantReason: ReasonUsageNotAllowed},
		{name: "requested basic constraints never copied", csr: func(tb testing.TB) *x509.CertificateRequest {
			bc, _ := asn1.Marshal(struct {
				IsCA bool `asn1:"optional"`
			}{true})
			return csrWithExtensions(tb, "d", nil, []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}})
		}, check: func(t *testing.T, c *x509.Certificate) {
			if c.IsCA || !c.BasicConstraintsValid {
				t.Errorf("got IsCA %v BasicConstraintsValid %v, want false true", c.IsCA, c.BasicConstraintsValid)
			}
		}},
		// AIA, CDP, key identifiers.
		{name: "aia and cdp from profile", csr: csr("d"), check: func(t *testing.T, c *x509.Certificate) {
			if !slices.Equal(c.OCSPServer, []string{"http://ocsp.outpost.test/edge"}) ||
				!slices.Equal(c.IssuingCertificateURL, []string{"http://ca.outpost.test/edge.crt"}) ||
				!slices.Equal(c.CRLDistributionPoints, []string{"http://crl.outpost.test/edge.crl"}) {
				t.Errorf("got OCSP %v CA issuers %v CRL %v, want the profile's", c.OCSPServer, c.IssuingCertificateURL, c.CRLDistributionPoints)
			}
			skid, _ := SubjectKeyID(c.PublicKey)
			if string(c.SubjectKeyId) != string(skid) || string(c.AuthorityKeyId) != string(h.edge.SubjectKeyId) {
				t.Errorf("got SKID %x AKID %x, want %x %x", c.SubjectKeyId, c.AuthorityKeyId, skid, h.edge.SubjectKeyId)
			}
		}},
		// Validity.
		{name: "validity clipped to issuer", csr: csr("d"), check: func(t *testing.T, c *x509.Certificate) {
			if !c.NotAfter.Equal(h.edge.NotAfter) || !c.NotBefore.Equal(now.Add(-DefaultBackdate)) {
				t.Errorf("got %v..%v, want %v..%v", c.NotBefore, c.NotAfter, now.Add(-DefaultBackdate), h.edge.NotAfter)
			}
		}},
		{name: "validity within issuer", csr: csr("d"), profile: func(p *Profile) { p.Validity = 7 * day; p.Backdate = time.Minute },
			check: func(t *testing.T, c *x509.Certificate) {
				if !c.NotAfter.Equal(now.Add(7*day)) || !c.NotBefore.Equal(now.Add(-time.Minute)) {
					t.Errorf("got %v..%v, want %v..%v", c.NotBefore, c.NotAfter, now.Add(-time.Minute), now.Add(7*day))
				}
			}},
		{name: "request shortens", csr: csr("d"), req: Request{NotAfter: now.Add(day + 500*time.Millisecond)},
			check: func(t *testing.T, c *x509.Certificate) {
				if !c.NotAfter.Equal(now.Add(day)) {
					t.Errorf("NotAfter: got %v, want %v", c.NotAfter, now.Add(day))
				}
			}},
		{name: "request cannot lengthen", csr: csr("d"), req: Request{NotAfter: now.Add(10 * year)},
			check: func(t *testing.T, c *x509.Certificate) {
				if !c.NotAfter.Equal(h.edge.NotAfter) {
					t.Errorf("NotAfter: got %v, want %v", c.NotAfter, h.edge.NotAfter)
				}
			}},
		{name: "request notAfter in the past", csr: csr("d"), req: Request{NotAfter: now.Add(-time.Second)}, wantReason: ReasonValidity},
		// Profile.
		{name: "invalid profile", csr: csr("d"), profile: func(p *Profile) { p.Validity = 0 }, wantReason: ReasonProfileInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testProfile()
			if tt.profile != nil {
				tt.profile(p)
			}
			c, err := h.issuer().Issue(tt.csr(t), p, tt.req)
			if tt.wantReason != "" {
				var ie *Error
				if !errors.As(err, &ie) {
					t.Fatalf("got %v, want *Error with reason %v", err, tt.wantReason)
				}
				if ie.Reason != tt.wantReason {
					t.Fatalf("got reason %v (%v), want %v", ie.Reason, err, tt.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if _, err := c.Verify(h.verifyOptions(now)); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if c.IsCA {
				t.Errorf("IsCA: got true, want false")
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func names(n int) []string {
	var out []string
	for i := range n {
		out = append(out, "d"+string(rune('a'+i))+".line1.factory.example")
	}
	return out
}

func TestIssueIssuerChecks(t *testing.T) {
	h := newHierarchy(t, testpki.ECDSAP256, nil)
	p := testpki.NewT(t)
	root := p.Root("other root")
	leaf := root.Leaf("not a ca")
	noCertSign := root.Intermediate("crl signer only", testpki.KeyUsage(x509.KeyUsageCRLSign))
	at := func(tm time.Time) func() time.Time { return func() time.Time { return tm } }
	tests := []struct {
		name   string
		issuer *Issuer
		want   Reason
	}{
		{"valid", &Issuer{Cert: h.edge, Signer: h.edgeKey, Now: at(now)}, ""},
		{"valid at issuer notAfter", &Issuer{Cert: h.edge, Signer: h.edgeKey, Now: at(h.edge.NotAfter)}, ""},
		{"valid at issuer notBefore", &Issuer{Cert: h.edge, Signer: h.edgeKey, Now: at(h.edge.NotBefore)}, ""},
		{"not a ca", &Issuer{Cert: leaf.Cert, Signer: leaf.Key, Now: at(now)}, ReasonIssuerInvalid},
		{"no cert sign", &Issuer{Cert: noCertSign.Cert, Signer: noCertSign.Key, Now: at(now)}, ReasonIssuerInvalid},
		{"signer mismatch", &Issuer{Cert: h.edge, Signer: h.interKey, Now: at(now)}, ReasonIssuerInvalid},
		{"no cert", &Issuer{Signer: h.edgeKey, Now: at(now)}, ReasonIssuerInvalid},
		{"no signer", &Issuer{Cert: h.edge, Now: at(now)}, ReasonIssuerInvalid},
		{"nil issuer", nil, ReasonIssuerInvalid},
		{"expired", &Issuer{Cert: h.edge, Signer: h.edgeKey, Now: at(h.edge.NotAfter.Add(time.Second))}, ReasonIssuerExpired},
		{"not yet valid", &Issuer{Cert: h.edge, Signer: h.edgeKey, Now: at(h.edge.NotBefore.Add(-time.Second))}, ReasonIssuerExpired},
	}
	csr := newCSR(t, "device-42")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.issuer.Issue(csr, testProfile(), Request{})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				if c.NotBefore.Before(h.edge.NotBefore) {
					t.Errorf("NotBefore: got %v, want not before the issuer's %v", c.NotBefore, h.edge.NotBefore)
				}
				return
			}
			var ie *Error
			if !errors.As(err, &ie) || ie.Reason != tt.want {
				t.Fatalf("got %v, want reason %v", err, tt.want)
			}
			if got := ie.Public(); got != "certificate could not be issued" {
				t.Errorf("Public: got %q, want the generic server message", got)
			}
		})
	}
}

func TestIssueBadInput(t *testing.T) {
	h := newHierarchy(t, testpki.ECDSAP256, nil)
	csr := newCSR(t, "d")
	noKey := *csr
	noKey.PublicKey = nil
	tests := []struct {
		name string
		csr  *x509.CertificateRequest
		p    *Profile
		want Reason
	}{
		{"nil csr", nil, testProfile(), ReasonBadRequest},
		{"csr without key", &noKey, testProfile(), ReasonBadRequest},
		{"nil profile", csr, nil, ReasonProfileInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.issuer().Issue(tt.csr, tt.p, Request{})
			var ie *Error
			if !errors.As(err, &ie) || ie.Reason != tt.want {
				t.Errorf("got %v, want reason %v", err, tt.want)
			}
		})
	}
}

func TestIssueUsesInjectedClockAndRand(t *testing.T) {
	h := newHierarchy(t, testpki.ECDSAP256, nil)
	later := now.Add(10*day + 1500*time.Millisecond)
	i := &Issuer{Cert: h.edge, Signer: h.edgeKey, Now: func() time.Time { return later }, Rand: strings.NewReader(strings.Repeat("\x01", 20))}
	p := testProfile()
	p.Validity = day
	c, err := i.Issue(newCSR(t, "d"), p, Request{})
	if err != nil {
		t.Fatal(err)
	}
	if want := later.Add(-DefaultBackdate).Truncate(time.Second); !c.NotBefore.Equal(want) {
		t.Errorf("NotBefore: got %v, want %v", c.NotBefore, want)
	}
	if want := later.Add(day).Truncate(time.Second); !c.NotAfter.Equal(want) {
		t.Errorf("NotAfter: got %v, want %v", c.NotAfter, want)
	}
	if got, want := c.SerialNumber.Text(16), strings.Repeat("01", 20)[1:]; got != want {
		t.Errorf("serial: got %v, want %v", got, want)
	}
}

func TestErrorMessages(t *testing.T) {
	cause := errors.New("pkcs11: CKR_DEVICE_ERROR slot 3")
	tests := []struct {
		name       string
		err        *Error
		wantPublic string
		wantError  string
		client     bool
	}{
		{"client fault shows detail", &Error{Reason: ReasonSANNotAllowed, Detail: `dns name "x.example" not permitted`},
			`subject alternative name not allowed: dns name "x.example" not permitted`,
			`issuer: san_not_allowed: dns name "x.example" not permitted`, true},
		{"server fault hides detail and cause", &Error{Reason: ReasonSigning, Detail: "edge ca key", Err: cause},
			"certificate could not be issued", "issuer: signing: edge ca key: pkcs11: CKR_DEVICE_ERROR slot 3", false},
		{"client fault without detail", &Error{Reason: ReasonKeyNotAllowed}, "key type or size not allowed", "issuer: key_not_allowed", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Public(); got != tt.wantPublic {
				t.Errorf("Public: got %q, want %q", got, tt.wantPublic)
			}
			if got := tt.err.Error(); got != tt.wantError {
				t.Errorf("Error: got %q, want %q", got, tt.wantError)
			}
			if got := tt.err.Reason.ClientFault(); got != tt.client {
				t.Errorf("ClientFault: got %v, want %v", got, tt.client)
			}
		})
	}
	var wrapped error = &Error{Reason: ReasonSigning, Err: cause}
	if !errors.Is(wrapped, cause) {
		t.Errorf("errors.Is(cause): got false, want true")
	}
}

func BenchmarkIssue(b *testing.B) {
	h := newHierarchy(b, testpki.ECDSAP256, nil)
	i := h.issuer()
	p := testProfile()
	csr := newCSR(b, "device-42", testpki.DNSNames("device-42.line1.factory.example"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := i.Issue(csr, p, Request{DeviceID: "device-42"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProfileValidate(b *testing.B) {
	p := testProfile()
	p.Subject.CommonName = "{{.DeviceID}}"
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

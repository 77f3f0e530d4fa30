package issuer

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/testpki"
)

var oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}

func TestChainVerifies(t *testing.T) {
	for _, kt := range testpki.KeyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			h := newHierarchy(t, kt, nil)
			csr := newCSR(t, "device-42", testpki.DNSNames("device-42.line1.factory.example"),
				testpki.IPAddresses(net.ParseIP("10.42.1.7")), testpki.URIs("spiffe://factory.example/device/42"),
				testpki.Emails("ops@factory.example"))
			leaf, err := h.issuer().Issue(csr, testProfile(), Request{})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			chains, err := leaf.Verify(h.verifyOptions(now))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got, want := len(chains[0]), 4; got != want {
				t.Errorf("chain length: got %v, want %v", got, want)
			}
			if got, want := leaf.AuthorityKeyId, h.edge.SubjectKeyId; !bytes.Equal(got, want) {
				t.Errorf("leaf AKID: got %x, want %x", got, want)
			}
			if got, want := h.edge.AuthorityKeyId, h.inter.SubjectKeyId; !bytes.Equal(got, want) {
				t.Errorf("edge AKID: got %x, want %x", got, want)
			}
			if got, want := h.inter.AuthorityKeyId, h.root.SubjectKeyId; !bytes.Equal(got, want) {
				t.Errorf("intermediate AKID: got %x, want %x", got, want)
			}
			skid, _ := SubjectKeyID(h.edgeKey.Public())
			if got, want := h.edge.SubjectKeyId, skid; !bytes.Equal(got, want) {
				t.Errorf("edge SKID: got %x, want %x", got, want)
			}
		})
	}
}

func TestNameConstraintsEnforcedByVerifier(t *testing.T) {
	// The profile allows names that the edge CA's name constraints do not:
	// Issue signs them, and a standard verifier must reject the result.
	tests := []struct {
		name string
		edge func(*EdgeCAOptions)
		csr  []testpki.CertOption
		want bool // verifies
	}{
		{"dns inside", nil, []testpki.CertOption{testpki.DNSNames("a.line1.factory.example")}, true},
		{"dns outside", nil, []testpki.CertOption{testpki.DNSNames("a.evil.example")}, false},
		{"ip outside", nil, []testpki.CertOption{testpki.IPAddresses(net.ParseIP("192.0.2.1"))}, false},
		{"uri outside", nil, []testpki.CertOption{testpki.URIs("spiffe://evil.example/device/1")}, false},
		{"email outside", nil, []testpki.CertOption{testpki.Emails("x@evil.example")}, false},
		{"excluded dns", func(o *EdgeCAOptions) { o.ExcludedDNSDomains = []string{"line1.factory.example"} },
			[]testpki.CertOption{testpki.DNSNames("a.line1.factory.example")}, false},
		// An edge CA permitted only DNS names is closed for other types...
		{"dns-only ca, ip san", dnsOnly, []testpki.CertOption{testpki.IPAddresses(net.ParseIP("10.42.0.1"))}, false},
		{"dns-only ca, uri san", dnsOnly, []testpki.CertOption{testpki.URIs("spiffe://factory.example/device/1")}, false},
		{"dns-only ca, email san", dnsOnly, []testpki.CertOption{testpki.Emails("x@factory.example")}, false},
		{"dns-only ca, dns san", dnsOnly, []testpki.CertOption{testpki.DNSNames("a.line1.factory.example")}, true},
		// ... unless asked to leave them open.
		{"open dns-only ca, ip san", func(o *EdgeCAOptions) { dnsOnly(o); o.LeaveUnlistedNameTypesOpen = true },
			[]testpki.CertOption{testpki.IPAddresses(net.ParseIP("10.42.0.1"))}, true},
		{"ip-only ca, dns san", func(o *EdgeCAOptions) {
			*o = EdgeCAOptions{CAOptions: o.CAOptions, PermittedIPRanges: o.PermittedIPRanges}
		},
			[]testpki.CertOption{testpki.DNSNames("a.line1.factory.example")}, false},
	}
	p := testProfile()
	p.SANs.DNS = append(p.SANs.DNS, "**.evil.example")
	p.SANs.IPRanges = append(p.SANs.IPRanges, netip.MustParsePrefix("192.0.2.0/24"))
	p.SANs.URI = append(p.SANs.URI, "spiffe://evil.example/**")
	p.SANs.Email = append(p.SANs.Email, "evil.example")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHierarchy(t, testpki.ECDSAP256, tt.edge)
			leaf, err := h.issuer().Issue(newCSR(t, "device", tt.csr...), p, Request{})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			_, err = leaf.Verify(h.verifyOptions(now))
			if got := err == nil; got != tt.want {
				t.Fatalf("verifies: got %v, want %v (err %v)", got, tt.want, err)
			}
			if err != nil {
				var inv x509.CertificateInvalidError
				if !errors.As(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
					t.Errorf("got error %v, want CANotAuthorizedForThisName", err)
				}
			}
		})
	}
}

func dnsOnly(o *EdgeCAOptions) {
	*o = EdgeCAOptions{CAOptions: o.CAOptions, PermittedDNSDomains: o.PermittedDNSDomains}
}

func TestCreateEdgeCA(t *testing.T) {
	h := newHierarchy(t, testpki.ECDSAP256, nil)
	edge := h.edge
	t.Run("path length zero", func(t *testing.T) {
		if !edge.IsCA || !edge.BasicConstraintsValid || edge.MaxPathLen != 0 || !edge.MaxPathLenZero {
			t.Errorf("got IsCA %v MaxPathLen %v MaxPathLenZero %v, want true 0 true", edge.IsCA, edge.MaxPathLen, edge.MaxPathLenZero)
		}
	})
	t.Run("key usage", func(t *testing.T) {
		if got, want := edge.KeyUsage, x509.KeyUsageCertSign|x509.KeyUsageCRLSign; got != want {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("critical name constraints", func(t *testing.T) {
		ext, ok := findExt(edge, oidNameConstraints)
		if !ok || !ext.Critical || !edge.PermittedDNSDomainsCritical {
			t.Fatalf("got present %v critical %v, want true true", ok, ext.Critical)
		}
		if got, want := edge.PermittedDNSDomains, []string{"factory.example"}; !slices.Equal(got, want) {
			t.Errorf("permitted dns: got %v, want %v", got, want)
		}
		if got, want := len(edge.PermittedIPRanges), 2; got != want {
			t.Errorf("permitted ip ranges: got %v, want %v", got, want)
		}
		if got, want := edge.PermittedURIDomains, []string{"factory.example"}; !slices.Equal(got, want) {
			t.Errorf("permitted uri: got %v, want %v", got, want)
		}
		if got, want := edge.PermittedEmailAddresses, []string{"factory.example"}; !slices.Equal(got, want) {
			t.Errorf("permitted email: got %v, want %v", got, want)
		}
		if len(edge.ExcludedDNSDomains)+len(edge.ExcludedIPRanges)+len(edge.ExcludedURIDomains)+len(edge.ExcludedEmailAddresses) != 0 {
			t.Errorf("got exclusions on a CA with every type permitted")
		}
	})
	t.Run("closed unlisted types", func(t *testing.T) {
		e := newHierarchy(t, testpki.ECDSAP256, dnsOnly).edge
		if got, want := e.ExcludedDNSDomains, []string(nil); !slices.Equal(got, want) {
			t.Errorf("excluded dns: got %q, want %q", got, want)
		}
		if got, want := e.ExcludedEmailAddresses, []string{""}; !slices.Equal(got, want) {
			t.Errorf("excluded email: got %q, want %q", got, want)
		}
		if got, want := e.ExcludedURIDomains, []string{""}; !slices.Equal(got, want) {
			t.Errorf("excluded uri: got %q, want %q", got, want)
		}
		var nets []string
		for _, n := range e.ExcludedIPRanges {
			nets = append(nets, n.String())
		}
		if got, want := nets, []string{"0.0.0.0/0", "::/0"}; !slices.Equal(got, want) {
			t.Errorf("excluded ip: got %v, want %v", got, want)
		}
	})
	t.Run("validity", func(t *testing.T) {
		if got, want := edge.NotBefore, now.Add(-DefaultBackdate); !got.Equal(want) {
			t.Errorf("NotBefore: got %v, want %v", got, want)
		}
		if got, want := edge.NotAfter, now.Add(30*day); !got.Equal(want) {
			t.Errorf("NotAfter: got %v, want %v", got, want)
		}
	})
	t.Run("validity clipped to parent", func(t *testing.T) {
		e := newHierarchy(t, testpki.ECDSAP256, func(o *EdgeCAOptions) { o.Validity = 50 * year }).edge
		if got, want := e.NotAfter, h.inter.NotAfter; !got.Equal(want) {
			// Different hierarchy, same clock and intermediate validity.
			t.Errorf("got %v, want %v", got, want)
		}
	})
}

func TestCreateEdgeCAErrors(t *testing.T) {
	h := newHierarchy(t, testpki.ECDSAP256, nil)
	pub := newKey(t, testpki.ECDSAP256).Public()
	base := CAOptions{Subject: pkix.Name{CommonName: "edge"}, Now: now, Validity: day}
	tests := []struct {
		name   string
		parent *x509.Certificate
		opts   EdgeCAOptions
		want   string
	}{
		{"no constraints", h.inter, EdgeCAOptions{CAOptions: base}, "at least one permitted name constraint"},
		{"excluded only", h.inter, EdgeCAOptions{CAOptions: base, ExcludedDNSDomains: []string{"evil.example"}}, "at least one permitted name constraint"},
		{"path length", h.inter, EdgeCAOptions{CAOptions: CAOptions{Subject: base.Subject, Now: now, Validity: day, MaxPathLen: -1}, PermittedDNSDomains: []string{"factory.example"}}, "must be 0"},
		{"bad dns constraint", h.inter, EdgeCAOptions{CAOptions: base, PermittedDNSDomains: []string{"*.factory.example"}}, "not valid"},
		{"unmasked ip range", h.inter, EdgeCAOptions{CAOptions: base, PermittedIPRanges: []netip.Prefix{netip.MustParsePrefix("10.42.1.1/16")}}, "masked prefix"},
		{"bad email constraint", h.inter, EdgeCAOptions{CAOptions: base, PermittedEmailAddresses: []string{"a b@factory.example"}}, "not valid"},
		{"parent with path length zero", h.edge, EdgeCAOptions{CAOptions: base, PermittedDNSDomains: []string{"factory.example"}}, "path length 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := h.interKey
			if tt.parent == h.edge {
				key = h.edgeKey
			}
			_, err := CreateEdgeCA(tt.parent, key, pub, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestCreateCAErrors(t *testing.T) {
	h := newHierarchy(t, testpki.ECDSAP256, nil)
	p := testpki.NewT(t)
	leaf := p.Root("other root").Leaf("not a ca")
	noCertSign := p.Root("other root 2").Intermediate("crl only", testpki.KeyUsage(x509.KeyUsageCRLSign))
	pub := newKey(t, testpki.ECDSAP256).Public()
	ok := CAOptions{Subject: pkix.Name{CommonName: "sub"}, Now: now, Validity: year, MaxPathLen: -1}
	with := func(f func(*CAOptions)) CAOptions { o := ok; f(&o); return o }
	tests := []struct {
		name   string
		parent *x509.Certificate
		key    crypto.Signer
		opts   CAOptions
		want   string
	}{
		{"parent not a ca", leaf.Cert, leaf.Key, ok, "not a ca"},
		{"parent lacks cert sign", noCertSign.Cert, noCertSign.Key, ok, "keyCertSign"},
		{"key does not match parent", h.root, h.interKey, ok, "does not match"},
		{"parent expired at now", h.root, h.rootKey, with(func(o *CAOptions) { o.Now = now.Add(11 * year) }), "not valid at"},
		{"parent not yet valid at now", h.root, h.rootKey, with(func(o *CAOptions) { o.Now = now.Add(-day) }), "not valid at"},
		{"zero now", h.root, h.rootKey, with(func(o *CAOptions) { o.Now = time.Time{} }), "now must be set"},
		{"zero validity", h.root, h.rootKey, with(func(o *CAOptions) { o.Validity = 0 }), "validity"},
		{"empty subject", h.root, h.rootKey, with(func(o *CAOptions) { o.Subject = pkix.Name{} }), "subject"},
		{"path length below -1", h.root, h.rootKey, with(func(o *CAOptions) { o.MaxPathLen = -2 }), "below -1"},
		{"path length above parent's", h.inter, h.interKey, with(func(o *CAOptions) { o.MaxPathLen = 1 }), "exceeds"},
		{"bad url", h.root, h.rootKey, with(func(o *CAOptions) { o.CRLDistributionPoints = []string{"crl.example/x"} }), "absolute"},
		{"not before after end", h.root, h.rootKey, with(func(o *CAOptions) { o.NotBefore = now.Add(20 * year) }), "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CreateIntermediate(tt.parent, tt.key, pub, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestCreateRoot(t *testing.T) {
	key := newKey(t, testpki.ECDSAP256)
	tests := []struct {
		name        string
		opts        CAOptions
		wantPathLen int
		wantZero    bool
	}{
		{"zero value path length is 0", CAOptions{Subject: pkix.Name{CommonName: "r"}, Now: now, Validity: year}, 0, true},
		{"unconstrained", CAOptions{Subject: pkix.Name{CommonName: "r"}, Now: now, Validity: year, MaxPathLen: -1}, -1, false},
		{"two", CAOptions{Subject: pkix.Name{CommonName: "r"}, Now: now, Validity: year, MaxPathLen: 2}, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, err := CreateRoot(key, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if root.MaxPathLen != tt.wantPathLen || root.MaxPathLenZero != tt.wantZero {
				t.Errorf("got MaxPathLen %v zero %v, want %v %v", root.MaxPathLen, root.MaxPathLenZero, tt.wantPathLen, tt.wantZero)
			}
			if err := root.CheckSignatureFrom(root); err != nil {
				t.Errorf("self-signature: %v", err)
			}
			if len(root.AuthorityKeyId) != 0 {
				t.Errorf("got AKID %x, want none", root.AuthorityKeyId)
			}
			if got, want := root.NotAfter, now.Add(year); !got.Equal(want) {
				t.Errorf("NotAfter: got %v, want %v", got, want)
			}
		})
	}
	t.Run("explicit not before", func(t *testing.T) {
		nb := now.Add(-day)
		root, err := CreateRoot(key, CAOptions{Subject: pkix.Name{CommonName: "r"}, Now: now, NotBefore: nb, Validity: year})
		if err != nil {
			t.Fatal(err)
		}
		if !root.NotBefore.Equal(nb) || !root.NotAfter.Equal(nb.Add(year)) {
			t.Errorf("got %v..%v, want %v..%v", root.NotBefore, root.NotAfter, nb, nb.Add(year))
		}
	})
	t.Run("nil key", func(t *testing.T) {
		if _, err := CreateRoot(nil, CAOptions{Subject: pkix.Name{CommonName: "r"}, Now: now, Validity: year}); err == nil {
			t.Error("got nil error, want one")
		}
	})
}

func TestPathLenInherited(t *testing.T) {
	key := newKey(t, testpki.ECDSAP256)
	root, err := CreateRoot(key, CAOptions{Subject: pkix.Name{CommonName: "r"}, Now: now, Validity: year, MaxPathLen: 2})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := CreateIntermediate(root, key, newKey(t, testpki.ECDSAP256).Public(),
		CAOptions{Subject: pkix.Name{CommonName: "s"}, Now: now, Validity: year, MaxPathLen: -1})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sub.MaxPathLen, 1; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestCreateOCSPResponder(t *testing.T) {
	h := newHierarchy(t, testpki.ECDSAP256, nil)
	pub := newKey(t, testpki.ECDSAP256).Public()
	tests := []struct {
		name         string
		opts         OCSPResponderOptions
		wantNotAfter time.Time
	}{
		{"default validity", OCSPResponderOptions{Subject: pkix.Name{CommonName: "ocsp"}, Now: now}, now.Add(DefaultOCSPResponderValidity)},
		{"clipped to issuer", OCSPResponderOptions{Subject: pkix.Name{CommonName: "ocsp"}, Now: now, Validity: year}, h.edge.NotAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CreateOCSPResponder(h.edge, h.edgeKey, pub, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}; !slices.Equal(got, want) || len(c.UnknownExtKeyUsage) != 0 {
				t.Errorf("EKU: got %v, want %v", got, want)
			}
			if got, want := c.KeyUsage, x509.KeyUsageDigitalSignature; got != want {
				t.Errorf("KeyUsage: got %v, want %v", got, want)
			}
			if c.IsCA {
				t.Errorf("IsCA: got %v, want false", c.IsCA)
			}
			ext, ok := findExt(c, oidOCSPNoCheck)
			if !ok || ext.Critical || !bytes.Equal(ext.Value, []byte{0x05, 0x00}) {
				t.Errorf("nocheck: got present %v critical %v value %x, want true false 0500", ok, ext.Critical, ext.Value)
			}
			if got, want := c.NotAfter, tt.wantNotAfter; !got.Equal(want) {
				t.Errorf("NotAfter: got %v, want %v", got, want)
			}
			if err := c.CheckSignatureFrom(h.edge); err != nil {
				t.Errorf("signature: %v", err)
			}
			if got, want := c.AuthorityKeyId, h.edge.SubjectKeyId; !bytes.Equal(got, want) {
				t.Errorf("AKID: got %x, want %x", got, want)
			}
		})
	}
}

func TestSubjectKeyIDMatchesStandardLibrary(t *testing.T) {
	// crypto/x509 fills in a CA's SubjectKeyId by RFC 7093 method 1 too
	// (Go 1.25+), so the two must agree for every key type.
	for _, kt := range testpki.KeyTypes {
		t.Run(kt.String(), func(t *testing.T) {
			key := newKey(t, kt)
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: now, NotAfter: now.Add(day),
				IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
			if err != nil {
				t.Fatal(err)
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			got, err := SubjectKeyID(key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.SubjectKeyId) {
				t.Errorf("got %x, want %x", got, c.SubjectKeyId)
			}
			if len(got) != 20 {
				t.Errorf("length: got %v, want 20", len(got))
			}
		})
	}
	if _, err := SubjectKeyID(struct{}{}); err == nil {
		t.Error("unsupported key: got nil error, want one")
	}
}

package issuer

import (
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/outpost-pki/outpost/internal/testpki"
)

// FuzzRequestedUsages feeds arbitrary extension values, as a device may send
// them in a CSR, to the keyUsage and extKeyUsage parsers.
func FuzzRequestedUsages(f *testing.F) {
	f.Add([]byte{0x03, 0x02, 0x07, 0x80})
	f.Add([]byte{0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, der []byte) {
		if ku, err := requestedKeyUsage(der); err == nil && ku>>9 != 0 {
			t.Errorf("key usage %#x has bits beyond decipherOnly", int(ku))
		}
		if ekus, err := requestedExtKeyUsage(der); err == nil {
			for _, u := range ekus {
				if !knownExtKeyUsage(u) {
					t.Errorf("unknown usage %v returned", u)
				}
			}
		}
	})
}

// FuzzSANCheck feeds arbitrary names to the SAN policy: it must never panic,
// and whatever it allows must match one of the policy's patterns' bases.
func FuzzSANCheck(f *testing.F) {
	c, err := compileSANs(SANPolicy{
		DNS:   []string{"*.line1.example", "**.factory.example", "exact.example"},
		URI:   []string{"spiffe://factory.example/device/*", "spiffe://factory.example/fleet/**"},
		Email: []string{"factory.example"},
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"a.line1.example", "x.y.factory.example", "spiffe://factory.example/device/1", "a@factory.example", "", "*", "..", "a@b@factory.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if c.check(&AltNames{DNSNames: []string{s}}) == "" {
			l := strings.ToLower(s)
			if !strings.HasSuffix(l, ".line1.example") && !strings.HasSuffix(l, ".factory.example") && l != "exact.example" {
				t.Errorf("dns name %q allowed", s)
			}
		}
		if c.check(&AltNames{EmailAddresses: []string{s}}) == "" && !strings.HasSuffix(strings.ToLower(s), "@factory.example") {
			t.Errorf("email %q allowed", s)
		}
		if u, err := url.Parse(s); err == nil {
			if c.check(&AltNames{URIs: []*url.URL{u}}) == "" && !strings.HasPrefix(strings.ToLower(u.String()), "spiffe://factory.example/") {
				t.Errorf("uri %q allowed", s)
			}
		}
		_, _ = parseDNSPattern(s)
		_, _ = parseURIPattern(s)
	})
}

func TestIssueConcurrent(t *testing.T) {
	h := newHierarchy(t, testpki.ECDSAP256, nil)
	i := h.issuer()
	p := testProfile()
	csr := newCSR(t, "device-42", testpki.DNSNames("device-42.line1.factory.example"))
	var wg sync.WaitGroup
	serials := make(chan string, 80)
	for range 8 {
		wg.Go(func() {
			for range 10 {
				c, err := i.Issue(csr, p, Request{})
				if err != nil {
					t.Error(err)
					return
				}
				serials <- c.SerialNumber.String()
			}
		})
	}
	wg.Wait()
	close(serials)
	seen := map[string]bool{}
	for s := range serials {
		if seen[s] {
			t.Errorf("duplicate serial %v", s)
		}
		seen[s] = true
	}
	if got, want := len(seen), 80; got != want {
		t.Errorf("got %v certificates, want %v", got, want)
	}
}

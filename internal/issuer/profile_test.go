package issuer

import (
	"crypto/x509"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestProfileValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Profile)
		want   string // substring of the error, "" for valid
	}{
		{"default", func(*Profile) {}, ""},
		{"test profile", func(p *Profile) { *p = *testProfile() }, ""},
		{"ed25519 key", func(p *Profile) { p.AllowedKeys = []KeySpec{{Algorithm: "ed25519"}} }, ""},
		{"template", func(p *Profile) { p.Subject.CommonName = "{{.DeviceID}}.{{index .CSR.DNSNames 0}}" }, ""},
		{"honour none", func(p *Profile) { p.HonourExtensions = []string{"none"} }, ""},
		{"no name", func(p *Profile) { p.Name = "" }, `profile "": name must be set`},
		{"zero validity", func(p *Profile) { p.Validity = 0 }, `profile "device": validity must be positive`},
		{"negative backdate", func(p *Profile) { p.Backdate = -time.Second }, "backdate must not be negative"},
		{"no key usage", func(p *Profile) { p.KeyUsage = 0 }, "key usage must be set"},
		{"cert sign", func(p *Profile) { p.KeyUsage |= x509.KeyUsageCertSign }, "not allowed for end-entity"},
		{"eku any", func(p *Profile) { p.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny} }, "extended key usage any"},
		{"eku unknown", func(p *Profile) { p.ExtKeyUsage = []x509.ExtKeyUsage{99} }, "unknown extended key usage"},
		{"no keys", func(p *Profile) { p.AllowedKeys = nil }, "at least one key spec"},
		{"unknown algorithm", func(p *Profile) { p.AllowedKeys = []KeySpec{{Algorithm: "dsa"}} }, `unknown algorithm "dsa"`},
		{"rsa too small", func(p *Profile) { p.AllowedKeys = []KeySpec{{Algorithm: "rsa", MinBits: 1024}} }, "min bits 1024 below 2048"},
		{"rsa max below min", func(p *Profile) { p.AllowedKeys = []KeySpec{{Algorithm: "rsa", MinBits: 4096, MaxBits: 3072}} }, "below min bits"},
		{"unknown curve", func(p *Profile) { p.AllowedKeys = []KeySpec{{Algorithm: "ecdsa", Curves: []string{"P-224"}}} }, `unknown curve "P-224"`},
		{"ed25519 with bits", func(p *Profile) { p.AllowedKeys = []KeySpec{{Algorithm: "ed25519", MinBits: 256}} }, "takes no bits"},
		{"bad dns pattern", func(p *Profile) { p.SANs.DNS = []string{"*"} }, `dns pattern "*"`},
		{"bad uri pattern", func(p *Profile) { p.SANs.URI = []string{"spiffe:/x"} }, "uri pattern"},
		{"bad email pattern", func(p *Profile) { p.SANs.Email = []string{"@x"} }, "email domain"},
		{"bad ip range", func(p *Profile) { p.SANs.IPRanges = []netip.Prefix{{}} }, "ip range"},
		{"negative max sans", func(p *Profile) { p.MaxSANs = -1 }, "max sans"},
		{"bad country", func(p *Profile) { p.Subject.Country = []string{"Germany"} }, "two-letter"},
		{"template syntax", func(p *Profile) { p.Subject.CommonName = "{{.DeviceID" }, "common name template"},
		{"template unknown field", func(p *Profile) { p.Subject.CommonName = "{{.Serial}}" }, "common name template"},
		{"unknown extension", func(p *Profile) { p.HonourExtensions = []string{"san", "basic_constraints"} }, `unknown extension "basic_constraints"`},
		{"none with others", func(p *Profile) { p.HonourExtensions = []string{"none", "san"} }, "only entry"},
		{"relative ocsp url", func(p *Profile) { p.OCSPServers = []string{"/ocsp"} }, "ocsp server"},
		{"ftp crl url", func(p *Profile) { p.CRLDistributionPoints = []string{"ftp://crl.example/x.crl"} }, "crl distribution point"},
		{"several problems", func(p *Profile) { p.Validity = 0; p.AllowedKeys = nil }, "validity must be positive\nprofile \"device\": allowed keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultDeviceProfile()
			tt.modify(p)
			err := p.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
	t.Run("nil", func(t *testing.T) {
		var p *Profile
		if err := p.Validate(); err == nil {
			t.Error("got nil, want error")
		}
	})
}

func TestDefaultDeviceProfile(t *testing.T) {
	p := DefaultDeviceProfile()
	if got, want := p.Validity, 90*24*time.Hour; got != want {
		t.Errorf("validity: got %v, want %v", got, want)
	}
	if got, want := p.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("eku: got %v, want %v", got, want)
	}
	// Each call returns a fresh profile.
	p.AllowedKeys[0].Curves[0] = "P-521"
	if got, want := DefaultDeviceProfile().AllowedKeys[0].Curves[0], "P-256"; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

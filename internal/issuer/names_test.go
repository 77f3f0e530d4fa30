package issuer

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestDNSPattern(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"**", "a.example", true},
		{"**", "device-42", true},
		{"device-42.line1.example", "device-42.line1.example", true},
		{"device-42.line1.example", "DEVICE-42.Line1.example", true},
		{"device-42.line1.example", "device-43.line1.example", false},
		{"device-42.line1.example", "x.device-42.line1.example", false},
		{"*.line1.example", "a.line1.example", true},
		{"*.line1.example", "a.b.line1.example", false},
		{"*.line1.example", "line1.example", false},
		{"*.line1.example", "aline1.example", false},
		{"**.factory.example", "a.factory.example", true},
		{"**.factory.example", "a.b.c.factory.example", true},
		{"**.factory.example", "factory.example", false},
		{"**.factory.example", "evilfactory.example", false},
		{"**.factory.example", "factory.example.evil", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.name, func(t *testing.T) {
			p, err := parseDNSPattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.match(strings.ToLower(tt.name)); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDNSPatternInvalid(t *testing.T) {
	for _, s := range []string{"", "*", "***", "*.", "a.*.example", "dev-*.example", "***.example", "example.", "-a.example", "a_b.example", "a..example"} {
		t.Run(s, func(t *testing.T) {
			if _, err := parseDNSPattern(s); err == nil {
				t.Errorf("got nil error for %q, want one", s)
			}
		})
	}
}

func TestValidDNSName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"a.example", true},
		{"xn--bcher-kva.example", true},
		{"device-42", true},
		{"10.0.0.1", false},
		{"42", false},
		{"42.example", true},
		{"", false},
		{"a.example.", false},
		{"*.example", false},
		{"a_b.example", false},
		{"-a.example", false},
		{"a-.example", false},
		{strings.Repeat("a", 64) + ".example", false},
		{strings.Repeat("a.", 127) + "ab", false},
		{"a b.example", false},
		{"bücher.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := validDNSName(tt.name); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestURIPattern(t *testing.T) {
	tests := []struct {
		pattern, uri string
		want         bool
	}{
		{"spiffe://factory.example/device/*", "spiffe://factory.example/device/42", true},
		{"spiffe://factory.example/device/*", "SPIFFE://Factory.Example/device/42", true},
		{"spiffe://factory.example/device/*", "spiffe://factory.example/device/42/x", false},
		{"spiffe://factory.example/device/*", "spiffe://factory.example/device", false},
		{"spiffe://factory.example/device/*", "https://factory.example/device/42", false},
		{"spiffe://factory.example/device/*", "spiffe://other.example/device/42", false},
		{"spiffe://factory.example/**", "spiffe://factory.example/device/42/x", true},
		{"spiffe://factory.example/**", "spiffe://factory.example/", false},
		{"spiffe://factory.example/**", "spiffe://factory.example", false},
		{"spiffe://*.factory.example/**", "spiffe://line1.factory.example/d", true},
		{"spiffe://*.factory.example/**", "spiffe://a.line1.factory.example/d", false},
		{"spiffe://factory.example", "spiffe://factory.example", true},
		{"spiffe://factory.example", "spiffe://factory.example/x", false},
		{"urn://factory.example/dev-??", "urn://factory.example/dev-42", true},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.uri, func(t *testing.T) {
			p, err := parseURIPattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(tt.uri)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkURI(u); err != nil {
				if tt.want {
					t.Fatalf("checkURI: %v", err)
				}
				return
			}
			if got := p.match(u); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestURIPatternInvalid(t *testing.T) {
	for _, s := range []string{"factory.example/x", "://factory.example", "spiffe://*/x", "spiffe://factory.example/**/x", "spiffe://factory.example/[", "spiffe://factory.example/x#y", "1x://factory.example"} {
		t.Run(s, func(t *testing.T) {
			if _, err := parseURIPattern(s); err == nil {
				t.Errorf("got nil error for %q, want one", s)
			}
		})
	}
}

func TestCheckURI(t *testing.T) {
	tests := []struct {
		uri  string
		want bool // acceptable
	}{
		{"spiffe://factory.example/device/42", true},
		{"spiffe://factory.example", true},
		{"spiffe://user@factory.example/d", false},
		{"spiffe://factory.example:443/d", false},
		{"spiffe://factory.example/d?x=1", false},
		{"spiffe://factory.example/d#f", false},
		{"spiffe://factory.example/a/../b", false},
		{"spiffe://factory.example/a/", false},
		{"spiffe://factory.example/a%2Fb", false},
		{"spiffe://10.0.0.1/d", false},
		{"urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", false},
		{"/relative", false},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			u, err := url.Parse(tt.uri)
			if err != nil {
				t.Fatal(err)
			}
			if got := checkURI(u) == nil; got != tt.want {
				t.Errorf("got %v, want %v (%v)", got, tt.want, checkURI(u))
			}
		})
	}
}

func TestSANPolicyCheck(t *testing.T) {
	c, err := compileSANs(SANPolicy{
		DNS:      []string{"*.line1.example"},
		IPRanges: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("fd00:42::/32")},
		URI:      []string{"spiffe://factory.example/device/*"},
		Email:    []string{"factory.example"},
	})
	if err != nil {
		t.Fatal(err)
	}
	mustURL := func(s string) *url.URL { u, _ := url.Parse(s); return u }
	tests := []struct {
		name  string
		names AltNames
		want  string // substring of the refusal, "" for allowed
	}{
		{"none", AltNames{}, ""},
		{"dns ok", AltNames{DNSNames: []string{"a.line1.example"}}, ""},
		{"dns denied", AltNames{DNSNames: []string{"a.line2.example"}}, `dns name "a.line2.example" not permitted`},
		{"dns malformed", AltNames{DNSNames: []string{"a b.line1.example"}}, "not a valid hostname"},
		{"ipv4 ok", AltNames{IPAddresses: []net.IP{net.ParseIP("10.42.3.4")}}, ""},
		{"ipv4-mapped ok", AltNames{IPAddresses: []net.IP{net.ParseIP("::ffff:10.42.3.4")}}, ""},
		{"ipv6 ok", AltNames{IPAddresses: []net.IP{net.ParseIP("fd00:42::1")}}, ""},
		{"ipv4 denied", AltNames{IPAddresses: []net.IP{net.ParseIP("10.43.0.1")}}, "ip address 10.43.0.1 not permitted"},
		{"ipv6 denied", AltNames{IPAddresses: []net.IP{net.ParseIP("fd00:43::1")}}, "not permitted"},
		{"ip malformed", AltNames{IPAddresses: []net.IP{{1, 2, 3}}}, "malformed"},
		{"uri ok", AltNames{URIs: []*url.URL{mustURL("spiffe://factory.example/device/7")}}, ""},
		{"uri denied", AltNames{URIs: []*url.URL{mustURL("spiffe://factory.example/admin/7")}}, "not permitted"},
		{"uri with port", AltNames{URIs: []*url.URL{mustURL("spiffe://factory.example:1/device/7")}}, "port"},
		{"nil uri", AltNames{URIs: []*url.URL{nil}}, "empty uri"},
		{"email ok", AltNames{EmailAddresses: []string{"Ops.Team@Factory.Example"}}, ""},
		{"email subdomain denied", AltNames{EmailAddresses: []string{"ops@line1.factory.example"}}, "not permitted"},
		{"email malformed", AltNames{EmailAddresses: []string{"ops factory.example"}}, "has no @"},
		{"email quoted local part", AltNames{EmailAddresses: []string{`"a b"@factory.example`}}, "dot-atom"},
		{"long name is cut in message", AltNames{DNSNames: []string{strings.Repeat("a", 300)}}, `"...`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.check(&tt.names)
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAltNamesDedup(t *testing.T) {
	var a AltNames
	a.add(AltNames{
		DNSNames:       []string{"a.example", "A.Example", "b.example"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1"), net.IPv4(10, 0, 0, 1).To4()},
		EmailAddresses: []string{"x@Example.com", "x@example.com", "X@example.com"},
	})
	u, _ := url.Parse("spiffe://a/b")
	u2, _ := url.Parse("spiffe://a/b")
	a.add(AltNames{URIs: []*url.URL{u, u2}, DNSNames: []string{"b.EXAMPLE"}})
	if got, want := a.count(), 2+1+2+1; got != want {
		t.Errorf("got %v, want %v (%+v)", got, want, a)
	}
}

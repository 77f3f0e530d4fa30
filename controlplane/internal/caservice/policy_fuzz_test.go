package caservice

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/internal/est"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/testpki"
)

// FuzzDMSPolicy validates fuzzed DMS policies (what POST and PATCH
// /api/v1/dmss carry, after the API's conversion) and checks that validate
// never panics, refuses only with an invalid-kind *Error naming a policy
// field, and that what it accepts is usable: the mode and device
// authentication are known, durations are in range, the webhook URL is an
// https URL without credentials, labels are unique and reachable over EST
// (est.ParsePath accepts them), and, the strongest check, the edge CA of
// local mode can really be issued with the policy's name constraints, each
// of which appears in the certificate. A policy that validates but cannot
// be issued would fail later, on the gateway's sync, as an internal error.
func FuzzDMSPolicy(f *testing.F) {
	pki := testpki.NewT(f)
	parent := pki.Root("Fuzz Parent CA")
	edgeKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	day := int64(24 * time.Hour)
	for _, s := range []struct {
		mode, auth, profile string
		window, validity    int64
		quota               int64
		constraints         string
		webhook             string
		wait                int64
		labels              string
	}{
		{"queued", "client_cert", "device", 14 * day, 30 * day, 0, "", "", int64(5 * time.Second), ""},
		{"local", "client_cert_or_secret", "device", 14 * day, 30 * day, 100, "line1.example\n.line1.example\n10.1.0.0/16\nfd00::/8\n@example.com\nops@example.com\nuri:devices.example", "", 0, "line-1:basic_secret\nline-2:"},
		{"local", "webhook", "device", 0, 3650 * day, 1, "", "https://auth.example:8443/hook?x=1", int64(60 * time.Second), "hook:webhook"},
		{"online", "basic_secret", strings.Repeat("p", 257), 0, 30 * day, 0, "", "", 0, ""},
		{"local", "client_cert", "device", 0, 30 * day, 1, "10.1.2.3/16\n::ffff:10.0.0.0/104\nexample.123\n-bad.example\nuri:\n@\na..b@example.com", "", 0, ""},
		{"local", "client_cert", "device", 0, 30 * day, 1, "fe80::%eth0/64", "http://x", 0, "a:webhook\na:\n..:\n" + strings.Repeat("l", 65) + ":"},
		{"queued", "webhook", "", -1, day - 1, -1, "", "https://user:pw@x.example/#f", -1, ""},
		{"queued", "client_cert", "", 3650*day + 1, 3650*day + day, 0, "", "https://", int64(60*time.Second) + 1, ""},
	} {
		f.Add(s.mode, s.auth, s.profile, s.window, s.validity, s.quota, s.constraints, s.webhook, s.wait, s.labels)
	}
	f.Fuzz(func(t *testing.T, mode, auth, profile string, window, validity, quota int64, constraints, webhook string, wait int64, labels string) {
		p := DMSPolicy{Mode: mode, DeviceAuth: auth, Profile: profile, ReenrollWindow: time.Duration(window), LocalQuota: int(quota),
			EdgeCAValidity: time.Duration(validity), WebhookURL: webhook, OnlineWait: time.Duration(wait)}
		if constraints != "" {
			p.EdgeNameConstraints = strings.Split(constraints, "\n")
		}
		if labels != "" {
			for l := range strings.SplitSeq(labels, "\n") {
				name, la, _ := strings.Cut(l, ":")
				p.Labels = append(p.Labels, DMSLabel{Name: name, CAID: uuid.Nil, DeviceAuth: la})
			}
		}
		err := p.validate()
		if err != nil {
			se, ok := AsError(err)
			if !ok || se.Kind != KindInvalid || !strings.HasPrefix(se.Field, "policy.") || se.Message == "" {
				t.Fatalf("validate: %v (%#v), want an invalid *Error on a policy field", err, err)
			}
			return
		}
		if !slices.Contains([]string{"online", "queued", "local"}, p.Mode) ||
			!slices.Contains([]string{"client_cert", "basic_secret", "client_cert_or_secret", "webhook"}, p.DeviceAuth) {
			t.Fatalf("accepted mode %q, device_auth %q", p.Mode, p.DeviceAuth)
		}
		if p.ReenrollWindow < 0 || p.EdgeCAValidity < 24*time.Hour || p.EdgeCAValidity > MaxEdgeCAValidity || p.OnlineWait < 0 || p.OnlineWait > MaxOnlineWait || p.LocalQuota < 0 {
			t.Fatalf("accepted durations or quota out of range: %+v", p)
		}
		if p.WebhookURL != "" {
			u, err := url.Parse(p.WebhookURL)
			if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.User != nil {
				t.Fatalf("accepted webhook_url %q", p.WebhookURL)
			}
		} else if p.DeviceAuth == "webhook" {
			t.Fatal("accepted device_auth webhook without a webhook_url")
		}
		seen := map[string]bool{}
		for _, l := range p.Labels {
			// Every label must be reachable over EST.
			if _, _, ok := est.ParsePath(est.PathPrefix + l.Name + "/" + est.OpSimpleEnroll); seen[l.Name] || !ok {
				t.Fatalf("accepted label %q, which no EST request can name (or twice)", l.Name)
			}
			seen[l.Name] = true
		}

		cs := p.withDefaults().EffectiveNameConstraints()
		if len(cs) == 0 {
			return
		}
		opts := issuer.EdgeCAOptions{CAOptions: issuer.CAOptions{Subject: pkix.Name{CommonName: "Fuzz Edge CA"}, Now: pki.Now(), Validity: p.EdgeCAValidity}}
		if err := edgeOptions(&opts, cs); err != nil {
			t.Fatalf("edge name constraints %q validate but edgeOptions refuses them: %v", cs, err)
		}
		cert, err := issuer.CreateEdgeCA(parent.Cert, parent.Key, edgeKey.Public(), opts)
		if err != nil {
			t.Fatalf("edge name constraints %q validate but the edge CA cannot be issued: %v", cs, err)
		}
		again, err := x509.ParseCertificate(cert.Raw)
		if err != nil {
			t.Fatalf("edge CA with constraints %q does not parse: %v", cs, err)
		}
		for _, c := range cs {
			nc, _ := parseNameConstraint(c)
			var in bool
			switch nc.kind {
			case "dns":
				in = slices.Contains(again.PermittedDNSDomains, nc.value)
			case "email":
				in = slices.Contains(again.PermittedEmailAddresses, nc.value)
			case "uri":
				in = slices.Contains(again.PermittedURIDomains, nc.value)
			case "ip":
				for _, r := range again.PermittedIPRanges {
					ones, _ := r.Mask.Size()
					in = in || (r.IP.Equal(nc.prefix.Addr().AsSlice()) && ones == nc.prefix.Bits())
				}
			}
			if !in {
				t.Fatalf("constraint %q (%s %q) is not in the edge CA", c, nc.kind, nc.value)
			}
		}
	})
}

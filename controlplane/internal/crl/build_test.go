package crl

import (
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/internal/testpki"
)

func TestURLs(t *testing.T) {
	id := uuid.MustParse("0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64")
	// Certificates carry these: they must never change.
	for _, tc := range []struct{ base, full, delta string }{
		{"http://cp.example:8443", "http://cp.example:8443/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64.crl", "http://cp.example:8443/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64-delta.crl"},
		{"http://cp.example/pki/", "http://cp.example/pki/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64.crl", "http://cp.example/pki/crl/0b9e6f7a-8d5c-4c8e-9a51-3f2a1d0c7b64-delta.crl"},
	} {
		if got := FullURL(tc.base, id); got != tc.full {
			t.Errorf("FullURL(%q): got %q, want %q", tc.base, got, tc.full)
		}
		if got := DeltaURL(tc.base, id); got != tc.delta {
			t.Errorf("DeltaURL(%q): got %q, want %q", tc.base, got, tc.delta)
		}
	}
	for _, tc := range []struct {
		base string
		ok   bool
	}{
		{"http://cp.example:8443", true},
		{"https://cp.example/pki", true},
		{"", false},
		{"cp.example", false},
		{"ftp://cp.example", false},
		{"http://cp.example/a b", false},
		{"http://cp.exämple", false},
		{"http://cp.example/?q=1", false},
		{"http:///nohost", false},
	} {
		if err := checkBaseURL(tc.base); (err == nil) != tc.ok {
			t.Errorf("checkBaseURL(%q): got %v, want ok %v", tc.base, err, tc.ok)
		}
	}
}

func TestExtensionEncoding(t *testing.T) {
	const uri = "http://a/b"
	uriHex := hex.EncodeToString([]byte(uri))
	for _, tc := range []struct {
		name     string
		encode   func(string) ([]byte, error)
		freshest bool
		want     string
	}{
		// SEQUENCE { [0] { [0] { [6] uri } } }
		{"issuingDistributionPoint", idpValue, false, "3010a00ea00c860a" + uriHex},
		// SEQUENCE { SEQUENCE { [0] { [0] { [6] uri } } } }
		{"freshestCRL", freshestValue, true, "30123010a00ea00c860a" + uriHex},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := tc.encode(uri)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(der); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			back, err := parseDistributionPointURI(der, tc.freshest)
			if err != nil || back != uri {
				t.Errorf("round trip: got %q, %v", back, err)
			}
			if _, err := tc.encode("http://ä"); err == nil {
				t.Error("non-ASCII url: got no error")
			}
		})
	}
}

func TestReasonCode(t *testing.T) {
	for _, tc := range []struct {
		stored *int32
		want   int
	}{
		{nil, 0}, {ptr(0), 0}, {ptr(1), 1}, {ptr(2), 2}, {ptr(5), 5}, {ptr(6), 6},
		{ptr(7), 0}, {ptr(8), 0}, {ptr(9), 9}, {ptr(10), 10}, {ptr(11), 0}, {ptr(-1), 0},
	} {
		if got := reasonCode(tc.stored); got != tc.want {
			t.Errorf("reasonCode(%v): got %d, want %d", deref(tc.stored), got, tc.want)
		}
	}
	for _, s := range []string{"", "0", "-1", "xyz"} {
		if _, err := entryFor(s, time.Now(), nil); err == nil {
			t.Errorf("entryFor(%q): got no error", s)
		}
	}
}

func ptr(v int32) *int32 { return &v }

func deref(p *int32) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestBuild(t *testing.T) {
	p := testpki.NewT(t)
	root := p.Root("Build Root")
	ca := root.Intermediate("Build CA", testpki.PathLen(0))
	now := p.Now()
	entries := []x509.RevocationListEntry{{SerialNumber: big.NewInt(42), RevocationTime: now.Add(-time.Hour), ReasonCode: 1}}
	for _, tc := range []struct {
		name    string
		t       template
		wantErr string
	}{
		{"full", template{number: 1, idpURL: "http://x/1.crl", freshestURL: "http://x/1-delta.crl"}, ""},
		{"delta", template{number: 2, idpURL: "http://x/1.crl", baseNumber: 1}, ""},
		{"root without idp", template{number: 1, freshestURL: "http://x/1-delta.crl"}, ""},
		{"delta naming a freshest crl", template{number: 2, baseNumber: 1, freshestURL: "http://x/1-delta.crl"}, "freshest"},
		{"number zero", template{number: 0}, "not positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := tc.t
			tmpl.issuer, tmpl.signer, tmpl.thisUpdate, tmpl.nextUpdate, tmpl.entries = ca.Cert, ca.Key, now, now.Add(time.Hour), entries
			der, err := build(&tmpl)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l := mustParseCRL(t, der)
			if err := l.CheckSignatureFrom(ca.Cert); err != nil {
				t.Error(err)
			}
			if l.Number.Int64() != tmpl.number || len(l.RevokedCertificateEntries) != 1 || l.RevokedCertificateEntries[0].ReasonCode != 1 {
				t.Errorf("got number %v entries %+v", l.Number, l.RevokedCertificateEntries)
			}
			if idp := findExt(l, oidIssuingDistributionPoint); (idp != nil) != (tmpl.idpURL != "") || (idp != nil && !idp.Critical) {
				t.Errorf("idp: got %+v, want critical when %q is set", idp, tmpl.idpURL)
			}
			if base, critical := deltaIndicator(t, l); (tmpl.baseNumber > 0) != (base >= 0) || (base >= 0 && (base != tmpl.baseNumber || !critical)) {
				t.Errorf("deltaCRLIndicator: got %d critical %v, want %d", base, critical, tmpl.baseNumber)
			}
		})
	}
	if !isSelfSigned(root.Cert) || isSelfSigned(ca.Cert) {
		t.Error("isSelfSigned: got the root or the intermediate wrong")
	}
}

func TestPlan(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const v, dv = 24 * time.Hour, time.Hour
	full := func(nextIn time.Duration) *meta { return &meta{number: 10, nextUpdate: now.Add(nextIn)} }
	delta := func(base int64, nextIn time.Duration) *meta {
		return &meta{number: 11, base: base, nextUpdate: now.Add(nextIn)}
	}
	for _, tc := range []struct {
		name       string
		tr         trigger
		st         state
		wantDelta  bool // the request is for a delta (serving)
		full, dlta bool
	}{
		{"GenerateFull always a full crl", trigFull, state{full: full(20 * time.Hour), delta: delta(10, time.Hour)}, false, true, false},
		{"GenerateDelta on a base", trigDelta, state{full: full(time.Hour)}, true, false, true},
		{"GenerateDelta without a base", trigDelta, state{}, true, true, true},
		{"revoked: a delta", trigRevoked, state{full: full(20 * time.Hour), delta: delta(10, time.Hour)}, true, false, true},
		{"revoked: no base", trigRevoked, state{}, true, true, true},
		{"revoked: base due", trigRevoked, state{full: full(5 * time.Hour), delta: delta(10, time.Hour)}, true, true, true},
		{"refresh: nothing", trigRefresh, state{full: full(20 * time.Hour), delta: delta(10, 50*time.Minute)}, true, false, false},
		{"refresh: nothing at all yet", trigRefresh, state{}, true, true, true},
		{"refresh: full due at a quarter", trigRefresh, state{full: full(6 * time.Hour), delta: delta(10, 50*time.Minute)}, true, true, true},
		{"refresh: full not due just before", trigRefresh, state{full: full(6*time.Hour + time.Second), delta: delta(10, 50*time.Minute)}, true, false, false},
		{"refresh: delta due at a quarter", trigRefresh, state{full: full(20 * time.Hour), delta: delta(10, 15*time.Minute)}, true, false, true},
		{"refresh: delta on an older base", trigRefresh, state{full: full(20 * time.Hour), delta: delta(9, 50*time.Minute)}, true, false, true},
		{"refresh: no delta", trigRefresh, state{full: full(20 * time.Hour)}, true, false, true},
		{"refresh: revoked since the delta", trigRefresh, state{full: full(20 * time.Hour), delta: delta(10, 50*time.Minute), newer: true}, true, false, true},
		{"serve full: fresh", trigServe, state{full: full(time.Second), delta: delta(10, -time.Hour)}, false, false, false},
		{"serve full: expired", trigServe, state{full: full(0), delta: delta(10, time.Hour)}, false, true, true},
		{"serve full: none", trigServe, state{}, false, true, true},
		{"serve delta: fresh", trigServe, state{full: full(time.Hour), delta: delta(10, time.Second)}, true, false, false},
		{"serve delta: expired", trigServe, state{full: full(time.Hour), delta: delta(10, 0)}, true, false, true},
		{"serve delta: older base", trigServe, state{full: full(time.Hour), delta: delta(9, time.Hour)}, true, false, true},
		{"serve delta: none", trigServe, state{full: full(time.Hour)}, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, d := plan(tc.tr, now, tc.st, v, dv, tc.wantDelta)
			if f != tc.full || d != tc.dlta {
				t.Errorf("got full %v delta %v, want %v %v", f, d, tc.full, tc.dlta)
			}
		})
	}
}

// BenchmarkBuild100k is the signing side of a 100,000-entry full CRL
// (no database).
func BenchmarkBuild100k(b *testing.B) {
	p := testpki.NewT(b)
	ca := p.Root("Bench Root").Intermediate("Bench CA", testpki.PathLen(0))
	now := p.Now()
	entries := make([]x509.RevocationListEntry, 100_000)
	for i := range entries {
		n := new(big.Int).Lsh(big.NewInt(int64(i)+1), 120)
		entries[i] = x509.RevocationListEntry{SerialNumber: n, RevocationTime: now.Add(-time.Duration(i) * time.Second), ReasonCode: i % 6}
	}
	t := &template{issuer: ca.Cert, signer: ca.Key, number: 1, thisUpdate: now, nextUpdate: now.Add(24 * time.Hour),
		idpURL: "http://x/1.crl", freshestURL: "http://x/1-delta.crl", entries: entries}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := build(t); err != nil {
			b.Fatal(err)
		}
	}
}

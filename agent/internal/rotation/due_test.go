package rotation

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/testpki"
)

func TestCheckDue(t *testing.T) {
	pki := testpki.NewT(t)
	root := pki.Root("Root")
	edge := root.Intermediate("Edge CA", testpki.PathLen(0))
	other := pki.Root("Someone else")
	now := testpki.Epoch
	// 90 days, from an hour ago (testpki backdates NotBefore).
	fresh := edge.Leaf("cam-1", testpki.Validity(90*24*time.Hour))
	sanOnly := edge.Leaf("", testpki.DNSNames("cam-1"), testpki.Validity(90*24*time.Hour))
	old := edge.Leaf("cam-1", testpki.NotBefore(now.Add(-80*24*time.Hour)), testpki.Validity(90*24*time.Hour))
	expired := edge.Leaf("cam-1", testpki.NotBefore(now.Add(-100*24*time.Hour)), testpki.Validity(90*24*time.Hour))
	foreign := other.Leaf("cam-1")
	wrongName := edge.Leaf("cam-2", testpki.Validity(90*24*time.Hour))
	roots := x509.NewCertPool()
	roots.AddCert(edge.Cert)

	for _, tt := range []struct {
		name        string
		chain       []*x509.Certificate
		probeErr    error
		renewBefore time.Duration
		due         bool
		reason      string
	}{
		{"fresh", []*x509.Certificate{fresh.Cert}, nil, 0, false, "valid until"},
		{"SAN names the device", []*x509.Certificate{sanOnly.Cert}, nil, 0, false, "valid until"},
		{"last third", []*x509.Certificate{old.Cert}, nil, 0, true, "rotation due since"},
		{"renew_before shorter", []*x509.Certificate{old.Cert}, nil, 5 * 24 * time.Hour, false, "valid until"},
		{"renew_before longer", []*x509.Certificate{fresh.Cert}, nil, 100 * 24 * time.Hour, true, "rotation due since"},
		{"expired", []*x509.Certificate{expired.Cert}, nil, 0, true, "not issued by this gateway's CAs (or expired)"},
		{"self-signed / other CA", []*x509.Certificate{foreign.Cert}, nil, 0, true, "not issued by this gateway's CAs"},
		{"other device", []*x509.Certificate{wrongName.Cert}, nil, 0, true, `not for device "cam-1"`},
		{"nothing", nil, errors.New("connection refused"), 0, true, "no certificate presented: connection refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := CheckDue(now, "cam-1", tt.chain, tt.probeErr, roots, tt.renewBefore)
			if v.Due != tt.due || !strings.Contains(v.Reason, tt.reason) {
				t.Errorf("got %v %q, want %v %q", v.Due, v.Reason, tt.due, tt.reason)
			}
		})
	}
	// The edge CA's parent as root, the edge CA sent by the device.
	rootPool := x509.NewCertPool()
	rootPool.AddCert(root.Cert)
	if v := CheckDue(now, "cam-1", []*x509.Certificate{fresh.Cert, edge.Cert}, nil, rootPool, 0); v.Due {
		t.Errorf("chain with intermediate: due %q", v.Reason)
	}
}

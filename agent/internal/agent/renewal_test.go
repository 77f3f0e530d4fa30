package agent

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestRenewDue(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(300 * 24 * time.Hour)}
	for _, c := range []struct {
		at          time.Duration // after NotBefore
		renewBefore time.Duration
		want        bool
	}{
		{0, 0, false},
		{199 * 24 * time.Hour, 0, false}, // more than a third left
		{201 * 24 * time.Hour, 0, true},  // less than a third left
		{299 * 24 * time.Hour, 0, true},
		{301 * 24 * time.Hour, 0, true}, // expired: still try
		{200 * 24 * time.Hour, 30 * 24 * time.Hour, false},
		{271 * 24 * time.Hour, 30 * 24 * time.Hour, true},
		{0, 400 * 24 * time.Hour, true}, // renew_before longer than the lifetime
	} {
		if got := renewDue(cert, nb.Add(c.at), c.renewBefore); got != c.want {
			t.Errorf("renewDue at +%v with renew_before %v = %v, want %v", c.at, c.renewBefore, got, c.want)
		}
	}
}

package este2e

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/internal/est/estclient"
)

// TestLocalModeOffline: in local mode the agent's edge CA (key in the
// agent's key store, certificate from the control plane) signs 1,000
// devices while the broker is down; once it is back, all 1,000
// certificates are in the registry, with devices, slots and chains that
// verify up to the root.
func TestLocalModeOffline(t *testing.T) {
	v := newEnv(t, apitypes.DMSPolicy{Mode: "local", DeviceAuth: "basic_secret", Profile: "device", LocalQuota: 5000, ReenrollWindowDays: 14})
	const n = 1000
	creds := v.mint(n, "line1-")
	cacerts, err := v.client("", nil).CACerts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cacerts) < 2 || !cacerts[0].IsCA {
		t.Fatalf("cacerts in local mode: %d certificates", len(cacerts))
	}
	edge := cacerts[0]
	chainPool := x509.NewCertPool()
	for _, c := range cacerts[1:] {
		chainPool.AddCert(c)
	}
	anchors := x509.NewCertPool()
	anchors.AddCert(cacerts[len(cacerts)-1])

	v.e.StopSync() // the uplink is gone
	eventually(t, 30*time.Second, "the agent sees the broker down", func() bool { return !v.status().Online }, v.agent.Tail)

	type job struct{ user, pass string }
	jobs := make(chan job)
	var mu sync.Mutex
	var failures []string
	issued := map[string]*x509.Certificate{}
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := v.client("", nil)
			for j := range jobs {
				_, csr := newCSR(t, j.user)
				c.Username, c.Password = j.user, j.pass
				cert, err := c.SimpleEnroll(context.Background(), csr)
				mu.Lock()
				if err != nil {
					failures = append(failures, fmt.Sprintf("%s: %v", j.user, err))
				} else {
					issued[j.user] = cert
				}
				mu.Unlock()
			}
		}()
	}
	for u, p := range creds {
		jobs <- job{u, p}
	}
	close(jobs)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d enrollments failed offline, e.g. %s", len(failures), n, failures[0])
	}
	for u, c := range issued {
		if c.Subject.CommonName != u {
			t.Fatalf("certificate for %s names %q", u, c.Subject.CommonName)
		}
		if err := c.CheckSignatureFrom(edge); err != nil {
			t.Fatalf("certificate for %s is not signed by the edge CA: %v", u, err)
		}
	}
	if got := v.registryCount(); got != 0 {
		t.Fatalf("%d edge certificates in the registry while the broker is down", got)
	}
	if s := v.status(); s.QueueDepth < n {
		t.Errorf("queue depth %d while offline, want at least %d", s.QueueDepth, n)
	}

	v.e.StartSync()
	eventually(t, 2*time.Minute, "all certificates reach the registry", func() bool { return v.registryCount() == n }, v.agent.Tail)

	// Every registry certificate verifies through the edge CA, its parent
	// and the root, and belongs to its device's slot.
	rows, err := v.e.DB().Query(context.Background(), `SELECT c.der, c.device_id, (SELECT count(*) FROM device_slot_certs s WHERE s.device_id = c.device_id) FROM certificates c JOIN cas ON cas.id = c.issuer_id WHERE cas.dms_id = $1`, uuid.MustParse(v.agent.DMSID))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var der []byte
		var device *string
		var slots int
		if err := rows.Scan(&der, &device, &slots); err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter := chainPool.Clone()
		inter.AddCert(edge)
		if _, err := c.Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("registry certificate %s does not verify: %v", c.Subject.CommonName, err)
		}
		if device == nil || *device != c.Subject.CommonName || slots == 0 {
			t.Fatalf("registry certificate %s: device %v, slots %d", c.Subject.CommonName, device, slots)
		}
		if !issued[c.Subject.CommonName].Equal(c) {
			t.Fatalf("registry holds another certificate for %s than the device got", c.Subject.CommonName)
		}
		seen++
	}
	if seen != n {
		t.Fatalf("%d certificates verified, want %d", seen, n)
	}
}

// registryCount counts the certificates issued by the DMS's edge CAs.
func (v *estEnv) registryCount() int {
	v.t.Helper()
	var n int
	if err := v.e.DB().QueryRow(context.Background(), `SELECT count(*) FROM certificates c JOIN cas ON cas.id = c.issuer_id WHERE cas.dms_id = $1`, uuid.MustParse(v.agent.DMSID)).Scan(&n); err != nil {
		v.t.Fatal(err)
	}
	return n
}

// TestQueuedAndOnline: queued mode answers 202 while the control plane is
// unreachable and the certificate once it is back; online mode answers
// with the certificate in the same request.
func TestQueuedAndOnline(t *testing.T) {
	v := newEnv(t, apitypes.DMSPolicy{Mode: "queued", DeviceAuth: "basic_secret", Profile: "device", ReenrollWindowDays: 14})
	creds := v.mint(2, "q-")
	var users []string
	for u := range creds {
		users = append(users, u)
	}
	ctx := context.Background()

	v.e.StopSync()
	eventually(t, 30*time.Second, "the agent sees the broker down", func() bool { return !v.status().Online }, v.agent.Tail)
	c := v.client("", nil)
	c.Username, c.Password = users[0], creds[users[0]]
	_, csr := newCSR(t, users[0])
	_, err := c.SimpleEnroll(ctx, csr)
	var retry *estclient.RetryError
	if !errors.As(err, &retry) || retry.After < time.Second {
		t.Fatalf("queued enrollment while offline: %v, want 202 with Retry-After", err)
	}
	// The same request again: still 202, the secret is not "used" for it.
	if _, err := c.SimpleEnroll(ctx, csr); !errors.As(err, &retry) {
		t.Fatalf("retry while offline: %v", err)
	}
	v.e.StartSync()
	ectx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cert, err := c.Enroll(ectx, csr)
	if err != nil {
		t.Fatalf("queued enrollment after reconnect: %v\n%s", err, v.agent.Tail())
	}
	if cert.Subject.CommonName != users[0] {
		t.Errorf("queued certificate names %q", cert.Subject.CommonName)
	}

	// Online mode: the certificate in the same request.
	mode := "online"
	// A year's window: the renewals below come right after the enrollment.
	v.e.MustDo("PATCH", "/api/v1/dmss/"+v.agent.DMSID, v.e.AdminToken, apitypes.UpdateDMSRequest{Policy: &apitypes.DMSPolicy{Mode: mode, DeviceAuth: "basic_secret", Profile: "device", ReenrollWindowDays: 365}}, nil, 200)
	eventually(t, 30*time.Second, "the agent gets the online policy", func() bool { return v.status().Mode == mode }, v.agent.Tail)
	c.Username, c.Password = users[1], creds[users[1]]
	key1, csr := newCSR(t, users[1])
	start := time.Now()
	cert, err = c.SimpleEnroll(ctx, csr)
	if err != nil {
		t.Fatalf("online enrollment: %v", err)
	}
	t.Logf("online enrollment answered in %v", time.Since(start).Round(time.Millisecond))
	if cert.Subject.CommonName != users[1] {
		t.Errorf("online certificate names %q", cert.Subject.CommonName)
	}

	// A renewal with the same key (RFC 7030 4.2.2 allows it) gets a new
	// certificate, not the one the key got before; so does the renewal
	// of that one.
	for i := 0; i < 2; i++ {
		renewed, err := v.client("", tlsCert(key1, cert)).SimpleReenroll(ctx, csr)
		if err != nil {
			t.Fatalf("re-enrollment %d with the same key: %v\n%s", i+1, err, v.agent.Tail())
		}
		if renewed.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			t.Fatalf("re-enrollment %d with the same key returned the certificate it renews", i+1)
		}
		cert = renewed
	}
}

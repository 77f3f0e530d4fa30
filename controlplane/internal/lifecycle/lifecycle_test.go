package lifecycle_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/lifecycle"
	"github.com/outpost-pki/outpost/internal/testpki"
)

func TestSweeps(t *testing.T) {
	e := cptest.Start(t, nil)
	ctx := context.Background()
	admin := e.AdminToken
	var a, b apitypes.CA
	e.MustDo("POST", "/api/v1/cas", admin, apitypes.CreateCARequest{Name: "root-a", CommonName: "A"}, &a, 201)
	e.MustDo("POST", "/api/v1/cas", admin, apitypes.CreateCARequest{Name: "root-b", CommonName: "B"}, &b, 201)
	// CA b warns 80 days ahead; the default is 30.
	if _, err := e.App.Pool.Exec(ctx, `UPDATE cas SET expiry_threshold = '80 days' WHERE id = $1`, b.ID); err != nil {
		t.Fatal(err)
	}
	issue := func(ca, device string) apitypes.Certificate {
		t.Helper()
		csr, _, err := testpki.CSR(device)
		if err != nil {
			t.Fatal(err)
		}
		var c apitypes.Certificate
		e.MustDo("POST", "/api/v1/certificates", admin, apitypes.IssueRequest{CAID: ca, DeviceID: device,
			CSRPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))}, &c, 201)
		return c
	}
	for _, d := range []string{"dev-a", "dev-b", "dev-r", "dev-idle"} {
		e.MustDo("POST", "/api/v1/devices", admin, apitypes.RegisterDeviceRequest{ID: d}, nil, 201)
	}
	ca := issue(a.ID, "dev-a")
	cb := issue(b.ID, "dev-b")
	cr := issue(a.ID, "dev-r")
	e.MustDo("POST", "/api/v1/certificates/"+cr.Serial+"/revoke", admin, apitypes.RevokeRequest{Reason: "keyCompromise"}, nil, 200)

	start := time.Now()
	sw := &lifecycle.Sweeper{Pool: e.App.Pool}
	status := func(serial string) string {
		var c apitypes.Certificate
		e.MustDo("GET", "/api/v1/certificates/"+serial, admin, nil, &c, 200)
		return c.Status
	}
	devStatus := func(id string) string {
		var d apitypes.Device
		e.MustDo("GET", "/api/v1/devices/"+id, admin, nil, &d, 200)
		return d.Status
	}
	steps := []struct {
		after                  time.Duration
		wantA, wantB           string
		wantDevA, wantDevB     string
		wantExpired, wantAbout int64
	}{
		{0, "active", "active", "fully_provisioned", "fully_provisioned", 0, 0},
		{15 * 24 * time.Hour, "active", "about_to_expire", "fully_provisioned", "requires_action", 0, 1},
		{65 * 24 * time.Hour, "about_to_expire", "about_to_expire", "requires_action", "requires_action", 0, 1},
		{91 * 24 * time.Hour, "expired", "expired", "with_warnings", "with_warnings", 2, 0},
	}
	for _, st := range steps {
		t.Run(fmt.Sprintf("after %v", st.after), func(t *testing.T) {
			sw.Now = func() time.Time { return start.Add(st.after) }
			res, err := sw.Sweep(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.Expired != st.wantExpired || res.AboutToExpire != st.wantAbout {
				t.Errorf("got %d expired, %d about to expire; want %d, %d", res.Expired, res.AboutToExpire, st.wantExpired, st.wantAbout)
			}
			if got := status(ca.Serial); got != st.wantA {
				t.Errorf("certificate of CA a: got %s, want %s", got, st.wantA)
			}
			if got := status(cb.Serial); got != st.wantB {
				t.Errorf("certificate of CA b: got %s, want %s", got, st.wantB)
			}
			if got := devStatus("dev-a"); got != st.wantDevA {
				t.Errorf("dev-a: got %s, want %s", got, st.wantDevA)
			}
			if got := devStatus("dev-b"); got != st.wantDevB {
				t.Errorf("dev-b: got %s, want %s", got, st.wantDevB)
			}
			if got := devStatus("dev-r"); got != "with_warnings" {
				t.Errorf("device with a revoked certificate: got %s, want with_warnings", got)
			}
			if got := devStatus("dev-idle"); got != "pending_provisioning" {
				t.Errorf("device without certificates: got %s", got)
			}
			if got := status(cr.Serial); got != "revoked" {
				t.Errorf("revoked certificate became %s", got)
			}
		})
	}
	// A second sweep at the same time changes nothing.
	res, err := sw.Sweep(ctx)
	if err != nil || res.Expired+res.AboutToExpire+res.Devices != 0 {
		t.Errorf("idempotent sweep: %+v, %v", res, err)
	}
	// Every transition is an event.
	var n int
	if err := e.App.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE kind IN ('certificate.expired', 'certificate.about_to_expire', 'device.status_changed')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	// 2 expired + 2 about to expire + 7 device changes (a: pending ->
	// fully -> requires_action -> with_warnings; b: pending -> fully ->
	// requires_action -> with_warnings; r: pending -> with_warnings).
	if n != 2+2+7 {
		t.Errorf("got %d transition events, want 11", n)
	}
}

func TestProfileThreshold(t *testing.T) {
	e := cptest.Start(t, nil)
	ctx := context.Background()
	var a apitypes.CA
	e.MustDo("POST", "/api/v1/cas", e.AdminToken, apitypes.CreateCARequest{Name: "root-p", CommonName: "P"}, &a, 201)
	csr, _, _ := testpki.CSR("p")
	var c apitypes.Certificate
	e.MustDo("POST", "/api/v1/certificates", e.AdminToken, apitypes.IssueRequest{CAID: a.ID,
		CSRPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))}, &c, 201)
	sw := &lifecycle.Sweeper{Pool: e.App.Pool, ProfileThresholds: map[string]time.Duration{"device": 85 * 24 * time.Hour},
		Now: func() time.Time { return time.Now().Add(10 * 24 * time.Hour) }}
	res, err := sw.Sweep(ctx)
	if err != nil || res.AboutToExpire != 1 {
		t.Errorf("profile threshold 85 days at day 10 of 90: %+v %v, want 1 about to expire", res, err)
	}
}

func TestOneSweeperAtATime(t *testing.T) {
	e := cptest.Start(t, nil)
	sw := &lifecycle.Sweeper{Pool: e.App.Pool}
	// Hold the lock from another session, as another replica would.
	conn, err := e.App.Pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_lock($1)`, int64(0x4c49464543594c)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := sw.Sweep(context.Background())
			if err != nil || !res.Skipped {
				t.Errorf("sweep while another replica sweeps: %+v %v, want skipped", res, err)
			}
		}()
	}
	wg.Wait()
	if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(0x4c49464543594c)); err != nil {
		t.Fatal(err)
	}
	if res, err := sw.Sweep(context.Background()); err != nil || res.Skipped {
		t.Errorf("sweep after the lock is free: %+v %v", res, err)
	}
}

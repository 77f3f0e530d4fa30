package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/outpost-pki/outpost/controlplane/internal/notify"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
)

// cpFixture drives a real control plane through its API.
type cpFixture struct {
	t *testing.T
	e *cptest.Env
}

func (f cpFixture) caByRole(role string) apitypes.CA {
	var cas apitypes.Page[apitypes.CA]
	f.e.MustDo("GET", "/api/v1/cas", f.e.AdminToken, nil, &cas, 200)
	for _, ca := range cas.Items {
		if ca.Role == role {
			return ca
		}
	}
	f.t.Fatalf("no CA with role %s", role)
	return apitypes.CA{}
}

func (f cpFixture) register(id, dmsID string) {
	f.e.MustDo("POST", "/api/v1/devices", f.e.AdminToken, apitypes.RegisterDeviceRequest{ID: id, DMSID: dmsID}, nil, 201)
}

func (f cpFixture) issue(caID, deviceID string) apitypes.Certificate {
	var c apitypes.Certificate
	f.e.MustDo("POST", "/api/v1/certificates", f.e.AdminToken, apitypes.IssueRequest{CAID: caID, CSRPEM: csrPEM(f.t, deviceID), DeviceID: deviceID}, &c, 201)
	return c
}

func (f cpFixture) revoke(serial string) {
	f.e.MustDo("POST", "/api/v1/certificates/"+serial+"/revoke", f.e.AdminToken, apitypes.RevokeRequest{Reason: "keyCompromise"}, nil, 200)
}

type evRow struct {
	ID       int64
	Kind     string
	DeviceID *string
	DMSID    *uuid.UUID
	CAID     *uuid.UUID
}

func TestSubscriptionFilters(t *testing.T) {
	ctx := context.Background()
	e := cptest.Start(t, pg)
	f := cpFixture{t, e}
	pool := e.App.Pool
	root, issuing := f.caByRole("bootstrap_root"), f.caByRole("bootstrap_issuing")
	var line2 apitypes.CA
	e.MustDo("POST", "/api/v1/cas", e.AdminToken, apitypes.CreateCARequest{Name: "line2", ParentID: root.ID, CommonName: "Line 2 CA"}, &line2, 201)
	var dms apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", e.AdminToken, apitypes.CreateDMSRequest{Name: "plant-a", AuthorizedCAs: []string{issuing.ID}}, &dms, 201)
	f.register("dev-2", "") // before the subscriptions: a device filter needs it to exist

	rcv := newReceiver(t, "")
	ca2, dmsID, dev2 := uuid.MustParse(line2.ID), uuid.MustParse(dms.DMS.ID), "dev-2"
	ca1 := uuid.MustParse(issuing.ID)
	subs := map[string]*notify.Subscription{
		"all":         {EventKinds: nil},
		"certs":       {EventKinds: []string{"certificate.*"}},
		"registered":  {EventKinds: []string{"device.registered"}},
		"star":        {EventKinds: []string{"*"}},
		"by-ca2":      {CAID: &ca2},
		"by-dev2":     {DeviceID: &dev2},
		"by-dms":      {DMSID: &dmsID},
		"revoked-ca1": {EventKinds: []string{"certificate.revoked"}, CAID: &ca1},
		"disabled":    {},
	}
	for name, s := range subs {
		s.Name, s.Channel, s.Target = name, notify.ChannelWebhook, rcv.srv.URL+"/"+name
		mustCreate(t, pool, s)
	}
	if err := notify.Disable(ctx, pool, subs["disabled"].ID, time.Now()); err != nil {
		t.Fatal(err)
	}

	f.register("dev-1", dms.DMS.ID)
	a := f.issue(issuing.ID, "dev-1")
	f.issue(line2.ID, "dev-2")
	f.issue(line2.ID, "dev-1")
	c := f.issue(issuing.ID, "dev-2")
	f.revoke(a.Serial)
	f.revoke(c.Serial)

	d := &notify.Dispatcher{Pool: pool, DisableDigest: true}
	tickUntil(t, d, 20*time.Second, "deliveries", func() bool {
		s := stats(t, d)
		return s.Pending == 0 && s.Delivered > 0 && readState(t, pool).Horizon == 0
	})

	rows, err := pool.Query(ctx, `SELECT id, kind, device_id, dms_id, ca_id FROM events ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var evs []evRow
	for rows.Next() {
		var r evRow
		if err := rows.Scan(&r.ID, &r.Kind, &r.DeviceID, &r.DMSID, &r.CAID); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, r)
	}
	rows.Close()
	is := func(p *string, v string) bool { return p != nil && *p == v }
	isU := func(p *uuid.UUID, v uuid.UUID) bool { return p != nil && *p == v }
	tests := []struct {
		sub   string
		want  func(evRow) bool
		count int // hand-counted, so the predicates cannot drift silently
	}{
		{"all", func(evRow) bool { return true }, len(evs)},
		{"star", func(evRow) bool { return true }, len(evs)},
		{"certs", func(r evRow) bool { return strings.HasPrefix(r.Kind, "certificate.") }, 6},
		{"registered", func(r evRow) bool { return r.Kind == "device.registered" }, 2},
		{"by-ca2", func(r evRow) bool { return isU(r.CAID, ca2) }, 2},
		{"by-dev2", func(r evRow) bool { return is(r.DeviceID, "dev-2") }, 4},
		{"by-dms", func(r evRow) bool { return isU(r.DMSID, dmsID) }, 2}, // dms.created, dev-1 registered
		{"revoked-ca1", func(r evRow) bool { return r.Kind == "certificate.revoked" && isU(r.CAID, ca1) }, 2},
		{"disabled", func(evRow) bool { return false }, 0},
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for _, tc := range tests {
		t.Run(tc.sub, func(t *testing.T) {
			var want []string
			for _, r := range evs {
				if tc.want(r) {
					want = append(want, notify.DeliveryKey(subs[tc.sub].ID, r.ID))
				}
			}
			got := slices.Clone(rcv.paths["/"+tc.sub])
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
			if len(want) != tc.count {
				t.Errorf("the reference predicate selects %d events, hand count %d (events %+v)", len(want), tc.count, evs)
			}
		})
	}
	if rcv.badSigs != 0 {
		// Each subscription has its own secret; only the shape is checked.
		t.Errorf("malformed requests: %v", rcv.bad)
	}
}

// Events produced by a control plane that restarts, delivered by a
// dispatcher stopped mid-way and a fresh one: none is lost.
func TestRestartLosesNothing(t *testing.T) {
	ctx := context.Background()
	e := cptest.Start(t, pg)
	f := cpFixture{t, e}
	issuing := f.caByRole("bootstrap_issuing")

	pool1 := openPool(t, e.DSN)
	rcv := newReceiver(t, "")
	sub := mustCreate(t, pool1, &notify.Subscription{Name: "all", Channel: notify.ChannelWebhook, Target: rcv.srv.URL})
	rcv.secret = sub.Secret

	var serials []string
	for i := range 8 {
		id := fmt.Sprintf("dev-%d", i)
		f.register(id, "")
		if i%2 == 0 {
			serials = append(serials, f.issue(issuing.ID, id).Serial)
		}
	}
	f.revoke(serials[0])

	// The first dispatcher stops after a few deliveries; its in-flight
	// claims are released or left to a short lease.
	ctx1, stop1 := context.WithCancel(ctx)
	var stopped atomic.Bool
	rcv.onDelivered = func(n int) {
		if n >= 4 && stopped.CompareAndSwap(false, true) {
			stop1()
		}
	}
	d1 := &notify.Dispatcher{Pool: pool1, Lease: 500 * time.Millisecond, Concurrency: 2}
	done := make(chan struct{})
	go func() { d1.Run(ctx1, 10*time.Millisecond); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		stop1()
		t.Fatal("the first dispatcher never got 4 deliveries through")
	}
	before := eventIDs(t, pool1, `true`)
	if got := rcv.distinct(); got >= len(before) {
		t.Fatalf("the first dispatcher delivered %d of %d events before stopping: the test needs it stopped mid-way", got, len(before))
	}
	pool1.Close()

	e.Restart()
	for i := 8; i < 12; i++ {
		id := fmt.Sprintf("dev-%d", i)
		f.register(id, "")
		f.issue(issuing.ID, id)
	}
	f.revoke(serials[1])

	pool2 := openPool(t, e.DSN)
	all := eventIDs(t, pool2, `true`)
	if len(all) <= len(before) {
		t.Fatalf("no events after the restart: %d then %d", len(before), len(all))
	}
	rcv.onDelivered = nil
	d2 := &notify.Dispatcher{Pool: pool2, Concurrency: 2}
	ctx2, stop2 := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { d2.Run(ctx2, 10*time.Millisecond) })
	waitFor(t, 30*time.Second, "every event at the receiver", func() bool { return rcv.distinct() >= len(all) })
	waitFor(t, 10*time.Second, "every delivery recorded", func() bool { return stats(t, d2) == notify.Stats{Delivered: len(all)} })
	stop2()
	wg.Wait()

	want := keysFor(sub.ID, all)
	got := rcv.keys()
	for k := range want {
		if got[k] == 0 {
			t.Errorf("event delivery %s lost", k)
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("unexpected delivery %s", k)
		}
	}
	kinds := map[string]int{}
	for _, ev := range rcv.events {
		kinds[ev.Kind]++
	}
	if kinds["device.registered"] != 12 || kinds["certificate.issued"] != 8 || kinds["certificate.revoked"] != 2 || kinds[notify.DigestKind] != 1 {
		t.Errorf("kinds delivered: %v", kinds)
	}
	rcv.checkSignatures(t)
}

func TestDigestOncePerDay(t *testing.T) {
	ctx := context.Background()
	e := cptest.Start(t, pg)
	f := cpFixture{t, e}
	pool := e.App.Pool
	issuing := f.caByRole("bootstrap_issuing")
	var certs []apitypes.Certificate
	for i := range 3 {
		id := fmt.Sprintf("dev-%d", i)
		f.register(id, "")
		certs = append(certs, f.issue(issuing.ID, id))
	}
	rcv := newReceiver(t, "")
	sub := mustCreate(t, pool, &notify.Subscription{Name: "digest", Channel: notify.ChannelWebhook, Target: rcv.srv.URL, EventKinds: []string{notify.DigestKind}})
	rcv.secret, rcv.anyTime = sub.Secret, true

	// A clock 20 days before the certificates expire.
	var clock atomic.Int64
	clock.Store(certs[0].NotAfter.Add(-20 * 24 * time.Hour).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	ds := []*notify.Dispatcher{{Pool: pool, Now: now}, {Pool: openPool(t, e.DSN), Now: now}}
	tickAll := func() {
		var wg sync.WaitGroup
		for _, d := range ds {
			wg.Go(func() {
				for range 5 {
					if err := d.Tick(ctx); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
	}
	digests := func() []int64 { return eventIDs(t, pool, `kind = $1`, notify.DigestKind) }

	tickAll()
	got := digests()
	if len(got) != 1 {
		t.Fatalf("after 10 ticks on one day: %d digests, want 1", len(got))
	}
	var raw []byte
	if err := pool.QueryRow(ctx, `SELECT detail FROM events WHERE id = $1`, got[0]).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var detail struct {
		Day   string
		Total int
		ByCA  []struct {
			CAID   string `json:"ca_id"`
			CAName string `json:"ca_name"`
			Count  int
		} `json:"by_ca"`
		First []struct {
			Serial   string
			DeviceID string    `json:"device_id"`
			NotAfter time.Time `json:"not_after"`
		}
	}
	if err := json.Unmarshal(raw, &detail); err != nil {
		t.Fatal(err)
	}
	if detail.Day != now().UTC().Format(time.DateOnly) || detail.Total != 3 || len(detail.ByCA) != 1 ||
		detail.ByCA[0].CAID != issuing.ID || detail.ByCA[0].Count != 3 || len(detail.First) != 3 {
		t.Errorf("digest detail: %s", raw)
	}
	var serials []string
	for i, c := range detail.First {
		serials = append(serials, c.Serial)
		if i > 0 && c.NotAfter.Before(detail.First[i-1].NotAfter) {
			t.Errorf("digest not ordered by not_after: %s", raw)
		}
	}
	for _, c := range certs {
		if !slices.Contains(serials, c.Serial) {
			t.Errorf("serial %s missing from the digest %v", c.Serial, serials)
		}
	}

	// The next day: one more, without the revoked certificate.
	f.revoke(certs[1].Serial)
	clock.Add(int64(24 * time.Hour))
	tickAll()
	tickAll()
	got = digests()
	if len(got) != 2 {
		t.Fatalf("after the next day: %d digests, want 2", len(got))
	}
	if err := pool.QueryRow(ctx, `SELECT detail FROM events WHERE id = $1`, got[1]).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &detail); err != nil || detail.Total != 2 {
		t.Errorf("second digest: %s (%v), want total 2", raw, err)
	}
	// Past the certificates' expiry: none listed.
	clock.Add(int64(30 * 24 * time.Hour))
	tickAll()
	got = digests()
	if err := pool.QueryRow(ctx, `SELECT detail FROM events WHERE id = $1`, got[len(got)-1]).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &detail); err != nil || len(got) != 3 || detail.Total != 0 || len(detail.First) != 0 {
		t.Errorf("digest after expiry (%d digests): %s", len(got), raw)
	}

	// They flow to the subscriber like any event.
	waitFor(t, 10*time.Second, "digest deliveries", func() bool {
		tickAll()
		return rcv.distinct() == 3
	})
	for k, ev := range rcv.events {
		if ev.Kind != notify.DigestKind {
			t.Errorf("delivery %s of kind %s to a digest-only subscription", k, ev.Kind)
		}
	}
	rcv.checkSignatures(t)
}

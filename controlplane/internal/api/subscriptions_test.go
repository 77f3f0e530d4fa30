package api_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/controlplane/internal/notify"
)

// TestWebhookSubscriptionThroughAPI: an admin subscribes a webhook through
// the API; a device registration reaches it signed; the delivery shows
// as delivered.
func TestWebhookSubscriptionThroughAPI(t *testing.T) {
	e := cptest.Start(t, nil)
	var mu sync.Mutex
	var got []string
	var secret string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if err := notify.Verify(secret, r.Header, body, time.Now(), time.Minute); err != nil {
			t.Errorf("webhook signature: %v", err)
		}
		got = append(got, r.Header.Get(notify.HeaderEvent))
	}))
	defer recv.Close()

	var created apitypes.CreateSubscriptionResponse
	mu.Lock()
	e.MustDo("POST", "/api/v1/subscriptions", e.AdminToken, apitypes.CreateSubscriptionRequest{Name: "ops hook", Channel: "webhook", Target: recv.URL, EventKinds: []string{"device.*"}}, &created, 201)
	secret = created.Secret
	mu.Unlock()
	if secret == "" {
		t.Fatal("no secret returned on creation")
	}
	var sub apitypes.Subscription
	e.MustDo("GET", "/api/v1/subscriptions/"+created.Subscription.ID, e.AdminToken, nil, &sub, 200)
	if sub.Target != recv.URL {
		t.Errorf("subscription: %+v", sub)
	}
	status, _ := e.Do("POST", "/api/v1/subscriptions", e.AdminToken, apitypes.CreateSubscriptionRequest{Name: "bad", Channel: "pigeon", Target: "x"}, nil)
	if status != 400 {
		t.Errorf("bad channel: got %d, want 400", status)
	}

	e.MustDo("POST", "/api/v1/devices", e.AdminToken, apitypes.RegisterDeviceRequest{ID: "hooked-device"}, nil, 201)
	d := &notify.Dispatcher{Pool: e.App.Pool, DisableDigest: true}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := d.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("webhook never received the device event")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got[0] != "device.registered" {
		t.Errorf("event kind %q", got[0])
	}
	var dl apitypes.Page[apitypes.Delivery]
	e.MustDo("GET", "/api/v1/subscriptions/"+sub.ID+"/deliveries", e.AdminToken, nil, &dl, 200)
	if len(dl.Items) != 1 || dl.Items[0].Status != "delivered" {
		t.Errorf("deliveries: %+v", dl.Items)
	}
	e.MustDo("DELETE", "/api/v1/subscriptions/"+sub.ID, e.AdminToken, nil, nil, 204)
}

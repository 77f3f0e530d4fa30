package notify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

func TestValidate(t *testing.T) {
	dev := ""
	tests := []struct {
		name  string
		sub   Subscription
		field string // "" = valid
	}{
		{"webhook", Subscription{Name: "a", Channel: "webhook", Target: "https://hooks.example.com/x?y=1"}, ""},
		{"chat over http", Subscription{Name: "a", Channel: "chat", Target: "http://10.0.0.1:8080/hook"}, ""},
		{"email", Subscription{Name: "a", Channel: "email", Target: "ops@example.com"}, ""},
		{"kinds", Subscription{Name: "a", Channel: "webhook", Target: "https://h/", EventKinds: []string{"certificate.*", "device.registered", "*", " device.registered "}}, ""},
		{"no name", Subscription{Name: "  ", Channel: "webhook", Target: "https://h/"}, "name"},
		{"long name", Subscription{Name: strings.Repeat("n", 201), Channel: "webhook", Target: "https://h/"}, "name"},
		{"bad channel", Subscription{Name: "a", Channel: "sms", Target: "+4912345"}, "channel"},
		{"ftp url", Subscription{Name: "a", Channel: "webhook", Target: "ftp://h/x"}, "target"},
		{"relative url", Subscription{Name: "a", Channel: "chat", Target: "/hook"}, "target"},
		{"no host", Subscription{Name: "a", Channel: "webhook", Target: "https:///x"}, "target"},
		{"email for a webhook", Subscription{Name: "a", Channel: "webhook", Target: "ops@example.com"}, "target"},
		{"url for email", Subscription{Name: "a", Channel: "email", Target: "https://h/"}, "target"},
		{"display name", Subscription{Name: "a", Channel: "email", Target: "Ops <ops@example.com>"}, "target"},
		{"header injection", Subscription{Name: "a", Channel: "email", Target: "ops@example.com\r\nBcc: x@y.z"}, "target"},
		{"no domain", Subscription{Name: "a", Channel: "email", Target: "ops"}, "target"},
		{"inner wildcard", Subscription{Name: "a", Channel: "webhook", Target: "https://h/", EventKinds: []string{"cert*"}}, "event_kinds"},
		{"leading wildcard", Subscription{Name: "a", Channel: "webhook", Target: "https://h/", EventKinds: []string{"*.issued"}}, "event_kinds"},
		{"empty kind", Subscription{Name: "a", Channel: "webhook", Target: "https://h/", EventKinds: []string{""}}, "event_kinds"},
		{"bare wildcard suffix", Subscription{Name: "a", Channel: "webhook", Target: "https://h/", EventKinds: []string{".*"}}, "event_kinds"},
		{"empty device", Subscription{Name: "a", Channel: "webhook", Target: "https://h/", DeviceID: &dev}, "device_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.sub.Validate()
			var ve *ValidationError
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("got %v, want valid", err)
			case tc.field != "" && (!errors.As(err, &ve) || ve.Field != tc.field):
				t.Errorf("got %v, want a validation error on %s", err, tc.field)
			}
		})
	}
	s := Subscription{Name: "a", Channel: "webhook", Target: "https://h/", EventKinds: []string{"a.b", " a.b", "c.*"}}
	if err := s.Validate(); err != nil || strings.Join(s.EventKinds, ",") != "a.b,c.*" {
		t.Errorf("normalised kinds: %v (%v)", s.EventKinds, err)
	}
}

func TestSubscriptionsStore(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	var subs []*Subscription
	for _, name := range []string{"one", "two", "three"} {
		subs = append(subs, mustCreate(t, pool, &Subscription{Name: name, Channel: ChannelWebhook, Target: "https://hooks.example.com/" + name, Secret: "given-" + name}))
	}
	if subs[0].Secret != "given-one" || subs[0].CreatedAt.IsZero() || subs[0].ID == uuid.Nil {
		t.Errorf("created: %+v", subs[0])
	}
	// The stored secret is the one given (used for signing).
	var secret string
	if err := pool.QueryRow(ctx, `SELECT secret FROM subscriptions WHERE id = $1`, subs[0].ID).Scan(&secret); err != nil || secret != "given-one" {
		t.Errorf("stored secret %q (%v)", secret, err)
	}

	page, next, err := List(ctx, pool, "", 2)
	if err != nil || len(page) != 2 || next == "" {
		t.Fatalf("first page: %d, cursor %q, %v", len(page), next, err)
	}
	rest, next2, err := List(ctx, pool, next, 2)
	if err != nil || len(rest) != 1 || next2 != "" {
		t.Fatalf("second page: %d, cursor %q, %v", len(rest), next2, err)
	}
	seen := map[uuid.UUID]bool{}
	for _, s := range append(page, rest...) {
		if s.Secret != "" {
			t.Errorf("List returned the secret of %s", s.Name)
		}
		seen[s.ID] = true
	}
	if len(seen) != 3 {
		t.Errorf("listed %d distinct subscriptions, want 3", len(seen))
	}
	if _, _, err := List(ctx, pool, "not-a-cursor!", 2); !errors.Is(err, registry.ErrBadCursor) {
		t.Errorf("bad cursor: got %v, want ErrBadCursor", err)
	}

	if err := Disable(ctx, pool, subs[1].ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := Get(ctx, pool, subs[1].ID)
	if err != nil || got.DisabledAt == nil {
		t.Errorf("after Disable: %+v, %v", got, err)
	}
	if err := Enable(ctx, pool, subs[1].ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := Get(ctx, pool, subs[1].ID); got.DisabledAt != nil {
		t.Errorf("after Enable: disabled at %v", got.DisabledAt)
	}
	if err := Delete(ctx, pool, subs[2].ID); err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() error{
		func() error { _, err := Get(ctx, pool, subs[2].ID); return err },
		func() error { return Delete(ctx, pool, subs[2].ID) },
		func() error { return Disable(ctx, pool, uuid.New(), time.Now()) },
	} {
		if err := f(); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("got %v, want ErrNotFound", err)
		}
	}

	// Filters that point nowhere are the caller's mistake.
	ca, dms, dev := uuid.New(), uuid.New(), "no-such-device"
	for field, s := range map[string]*Subscription{
		"ca_id":     {Name: "x", Channel: ChannelWebhook, Target: "https://h/", CAID: &ca},
		"dms_id":    {Name: "x", Channel: ChannelWebhook, Target: "https://h/", DMSID: &dms},
		"device_id": {Name: "x", Channel: ChannelWebhook, Target: "https://h/", DeviceID: &dev},
	} {
		var ve *ValidationError
		if err := Create(ctx, pool, s); !errors.As(err, &ve) || ve.Field != field {
			t.Errorf("unknown %s: got %v", field, err)
		}
	}
}

package ui

import (
	"errors"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/audit"
	"github.com/outpost-pki/outpost/controlplane/internal/notify"
)

type subscriptionsData struct {
	Rows     []*notify.Subscription
	Next     string
	First    string
	Paged    bool
	Channels []string
}

var channels = []string{notify.ChannelWebhook, notify.ChannelEmail, notify.ChannelChat}

func (s *Server) subscriptionsPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	cur := r.URL.Query().Get("cursor")
	subs, next, err := notify.List(r.Context(), s.pool, cur, pageSize)
	if err != nil {
		return err
	}
	d := &subscriptionsData{Rows: subs, Paged: cur != "", First: withQuery(r, "cursor", ""), Channels: channels}
	if next != "" {
		d.Next = withQuery(r, "cursor", next)
	}
	s.render(w, r, http.StatusOK, "subscriptions", &page{Title: "Notification subscriptions", Nav: "subscriptions", Data: d})
	return nil
}

type subscriptionCreated struct {
	Sub    *notify.Subscription
	Secret string
}

// createSubscription is admin only, as in the API: a webhook makes the
// control plane send requests to an address of the caller's choosing.
func (s *Server) createSubscription(w http.ResponseWriter, r *http.Request, sess *session) error {
	sub := &notify.Subscription{Name: r.PostFormValue("name"), Channel: r.PostFormValue("channel"), Target: strings.TrimSpace(r.PostFormValue("target")),
		Secret: r.PostFormValue("secret"), EventKinds: lines(r.PostFormValue("event_kinds"))}
	var err error
	if sub.CAID, err = optUUID("ca_id", r.PostFormValue("ca_id")); err != nil {
		return err
	}
	if sub.DMSID, err = optUUID("dms_id", r.PostFormValue("dms_id")); err != nil {
		return err
	}
	if dev := strings.TrimSpace(r.PostFormValue("device_id")); dev != "" {
		sub.DeviceID = &dev
	}
	ctx := r.Context()
	now := s.clock()
	err = s.reg.Tx(ctx, func(tx pgx.Tx) error {
		if err := notify.Create(ctx, tx, sub); err != nil {
			return err
		}
		_, err := audit.Append(ctx, tx, now, sess.Name, "subscription.create", sub.ID.String(), map[string]any{"name": sub.Name, "channel": sub.Channel})
		return err
	})
	if err != nil {
		return notifyErr(err)
	}
	d := &subscriptionCreated{Sub: sub}
	if sub.Channel == notify.ChannelWebhook {
		d.Secret = sub.Secret
	}
	w.Header().Set("Cache-Control", "no-store")
	s.render(w, r, http.StatusCreated, "subscription_created", &page{Title: "Subscription created", Nav: "subscriptions", Data: d})
	return nil
}

func (s *Server) deleteSubscription(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	ctx := r.Context()
	now := s.clock()
	err = s.reg.Tx(ctx, func(tx pgx.Tx) error {
		if err := notify.Delete(ctx, tx, id); err != nil {
			return err
		}
		_, err := audit.Append(ctx, tx, now, sess.Name, "subscription.delete", id.String(), nil)
		return err
	})
	if err != nil {
		return notifyErr(err)
	}
	redirect(w, r, PathPrefix+"/subscriptions", "sub-deleted")
	return nil
}

func notifyErr(err error) error {
	var ve *notify.ValidationError
	if errors.As(err, &ve) {
		return badField(ve.Field, ve.Message+".")
	}
	return err
}

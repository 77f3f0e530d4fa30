package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/audit"
	"github.com/outpost-pki/outpost/controlplane/internal/notify"
)

func (s *Server) subscriptionRoutes() []Route {
	type page[T any] = apitypes.Page[T]
	return []Route{
		{Method: "GET", Path: "/api/v1/subscriptions", Role: RoleOperator, Summary: "List notification subscriptions", Response: page[apitypes.Subscription]{}, handler: s.listSubscriptions},
		// Admin only: a webhook target makes the control plane send requests
		// to an address of the caller's choosing.
		{Method: "POST", Path: "/api/v1/subscriptions", Role: RoleAdmin, Summary: "Create a notification subscription (webhook, email or chat)", Request: apitypes.CreateSubscriptionRequest{}, Response: apitypes.CreateSubscriptionResponse{}, Status: 201, handler: s.createSubscription},
		{Method: "GET", Path: "/api/v1/subscriptions/:id", Role: RoleOperator, Summary: "Get a subscription", Response: apitypes.Subscription{}, handler: s.getSubscription},
		{Method: "DELETE", Path: "/api/v1/subscriptions/:id", Role: RoleAdmin, Summary: "Delete a subscription", Status: 204, handler: s.deleteSubscription},
		{Method: "GET", Path: "/api/v1/subscriptions/:id/deliveries", Role: RoleOperator, Summary: "List a subscription's deliveries (?status=pending|delivered|dead)", Response: page[apitypes.Delivery]{}, handler: s.listDeliveries},
		{Method: "POST", Path: "/api/v1/subscriptions/:id/deliveries/:event_id/redeliver", Role: RoleOperator, Summary: "Retry a dead-lettered delivery", Status: 204, handler: s.redeliver},
	}
}

func toSubscription(n *notify.Subscription) apitypes.Subscription {
	out := apitypes.Subscription{ID: n.ID.String(), Name: n.Name, Channel: n.Channel, Target: n.Target, EventKinds: n.EventKinds, CreatedAt: n.CreatedAt.UTC(), DisabledAt: n.DisabledAt}
	if n.CAID != nil {
		out.CAID = n.CAID.String()
	}
	if n.DMSID != nil {
		out.DMSID = n.DMSID.String()
	}
	if n.DeviceID != nil {
		out.DeviceID = *n.DeviceID
	}
	return out
}

func (s *Server) notifyFail(c *gin.Context, err error) {
	var ve *notify.ValidationError
	switch {
	case errors.As(err, &ve):
		problem(c, http.StatusBadRequest, "invalid-subscription", ve.Message, ve.Field)
	case errors.Is(err, notify.ErrNotDead):
		problem(c, http.StatusConflict, "not-dead", "this delivery is not dead-lettered; it is pending or delivered", "")
	default:
		s.fail(c, err)
	}
}

func (s *Server) listSubscriptions(c *gin.Context) {
	limit, ok := limitParam(c)
	if !ok {
		return
	}
	subs, next, err := notify.List(c, s.reg.Pool(), c.Query("cursor"), limit)
	if err != nil {
		s.notifyFail(c, err)
		return
	}
	out := apitypes.Page[apitypes.Subscription]{Items: []apitypes.Subscription{}, NextCursor: next}
	for _, n := range subs {
		out.Items = append(out.Items, toSubscription(n))
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) createSubscription(c *gin.Context) {
	var req apitypes.CreateSubscriptionRequest
	if !bind(c, &req) {
		return
	}
	sub := &notify.Subscription{Name: req.Name, Channel: req.Channel, Target: req.Target, Secret: req.Secret, EventKinds: req.EventKinds}
	var ok bool
	if sub.CAID, ok = optUUID(c, "ca_id", req.CAID); !ok {
		return
	}
	if sub.DMSID, ok = optUUID(c, "dms_id", req.DMSID); !ok {
		return
	}
	if req.DeviceID != "" {
		sub.DeviceID = &req.DeviceID
	}
	err := s.reg.Tx(c, func(tx pgx.Tx) error {
		if err := notify.Create(c, tx, sub); err != nil {
			return err
		}
		_, err := audit.Append(c, tx, s.now(), string(actorOf(c)), "subscription.create", sub.ID.String(), map[string]any{"name": sub.Name, "channel": sub.Channel})
		return err
	})
	if err != nil {
		s.notifyFail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	out := apitypes.CreateSubscriptionResponse{Subscription: toSubscription(sub)}
	if sub.Channel == notify.ChannelWebhook {
		out.Secret = sub.Secret
	}
	c.JSON(http.StatusCreated, out)
}

func (s *Server) getSubscription(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	sub, err := notify.Get(c, s.reg.Pool(), id)
	if err != nil {
		s.notifyFail(c, err)
		return
	}
	c.JSON(http.StatusOK, toSubscription(sub))
}

func (s *Server) deleteSubscription(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	err := s.reg.Tx(c, func(tx pgx.Tx) error {
		if err := notify.Delete(c, tx, id); err != nil {
			return err
		}
		_, err := audit.Append(c, tx, s.now(), string(actorOf(c)), "subscription.delete", id.String(), nil)
		return err
	})
	if err != nil {
		s.notifyFail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) listDeliveries(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	limit, ok := limitParam(c)
	if !ok {
		return
	}
	f := notify.DeliveryFilter{SubscriptionID: id, Status: c.Query("status"), Limit: limit}
	switch f.Status {
	case "", "pending", "delivered", "dead":
	default:
		problem(c, http.StatusBadRequest, "invalid-status", "status must be pending, delivered or dead", "status")
		return
	}
	if cur := c.Query("cursor"); cur != "" {
		n, err := strconv.ParseInt(cur, 10, 64)
		if err != nil || n < 1 {
			problem(c, http.StatusBadRequest, "bad-cursor", "the cursor is not one this server returned: start again without it", "cursor")
			return
		}
		f.BeforeEventID = n
	}
	ds, err := notify.ListDeliveries(c, s.reg.Pool(), f)
	if err != nil {
		s.notifyFail(c, err)
		return
	}
	out := apitypes.Page[apitypes.Delivery]{Items: []apitypes.Delivery{}}
	for _, d := range ds {
		out.Items = append(out.Items, apitypes.Delivery{Key: d.Key(), EventID: d.EventID, EventKind: d.EventKind, Status: d.Status, Attempts: d.Attempts,
			NextAttemptAt: d.NextAttemptAt.UTC(), LastError: d.LastError, DeliveredAt: d.DeliveredAt})
	}
	if len(ds) == limit {
		out.NextCursor = strconv.FormatInt(ds[len(ds)-1].EventID, 10)
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) redeliver(c *gin.Context) {
	id, ok := pathUUID(c, "id")
	if !ok {
		return
	}
	ev, err := strconv.ParseInt(c.Param("event_id"), 10, 64)
	if err != nil || ev < 1 {
		problem(c, http.StatusBadRequest, "invalid-id", "event_id must be a positive number", "event_id")
		return
	}
	if err := notify.Redeliver(c, s.reg.Pool(), id, ev, s.now()); err != nil {
		s.notifyFail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

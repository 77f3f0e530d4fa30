package syncsvc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outpost-pki/outpost/internal/mqttlimit"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// Consumer receives up messages through an MQTT broker with a shared
// subscription (replicas split the load), applies them, publishes the
// reply on the DMS's down topic, and only then acknowledges the MQTT
// message: a crash before the commit means the broker delivers it again.
type Consumer struct {
	Applier *Applier
	// BrokerURL is e.g. mqtts://broker:8883 (tls:// works too).
	BrokerURL string
	TLS       *tls.Config
	// ClientID identifies this replica (unique per replica).
	ClientID string
	Log      *slog.Logger

	// Applied counts the messages this replica applied (a metric).
	Applied atomic.Int64
}

type received struct {
	pr paho.PublishReceived
}

// Run connects and consumes until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(c.BrokerURL)
	if err != nil {
		return fmt.Errorf("sync: broker url: %w", err)
	}
	if u.Scheme == "mqtts" {
		u.Scheme = "tls"
	}
	work := make(chan received, 256)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        c.TLS,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         7 * 24 * 3600,
		ReconnectBackoff:              syncproto.ReconnectBackoff,
		ConnectTimeout:                10 * time.Second,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if _, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: syncproto.SharedUpSubscription, QoS: 1}}}); err != nil {
					log.Error("sync: subscribing", "err", err)
				}
			}()
		},
		OnConnectError: func(err error) { log.Warn("sync: connecting to the broker", "err", err) },
		ClientConfig: paho.ClientConfig{
			ClientID:                   c.ClientID,
			EnableManualAcknowledgment: true,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				select {
				case work <- received{pr}:
				case <-ctx.Done():
				}
				return true, nil
			}},
		},
	}
	// Packets from the broker are capped at syncproto.MaxPacketSize.
	mqttlimit.Autopaho(&cfg, syncproto.MaxPacketSize)
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	// One worker: MQTT acknowledgements must follow the receive order.
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = cm.Disconnect(dctx)
			cancel()
			return nil
		case r := <-work:
			c.handle(ctx, cm, r.pr, log)
		}
	}
}

// handle applies one message, replies, then acknowledges it. Database
// errors are retried (the message stays unacknowledged meanwhile).
func (c *Consumer) handle(ctx context.Context, cm *autopaho.ConnectionManager, pr paho.PublishReceived, log *slog.Logger) {
	pb := pr.Packet
	ack := func() {
		if err := pr.Client.Ack(pb); err != nil {
			log.Warn("sync: acknowledging", "err", err)
		}
	}
	dmsStr, up, ok := syncproto.DMSFromTopic(pb.Topic)
	if !ok || !up {
		log.Warn("sync: message on an unexpected topic", "topic", pb.Topic)
		ack()
		return
	}
	dmsID, _ := uuid.Parse(dmsStr)
	env, err := syncproto.Unmarshal(pb.Payload)
	if err == nil && env.GetDmsId() != dmsStr {
		err = errors.New("the envelope names another DMS than its topic")
	}
	if err == nil && env.GetUp() == nil {
		// Apply would fail on it every time: retrying would stop this
		// replica's consumer for good.
		err = errors.New("a down message on an up topic")
	}
	if err != nil {
		log.Warn("sync: dropping a malformed message", "dms_id", dmsStr, "err", err)
		ack()
		return
	}
	for attempt := 0; ; attempt++ {
		reply, err := c.Applier.Apply(ctx, dmsID, env)
		if errors.Is(err, ErrUnknownDMS) {
			log.Warn("sync: message from an unknown or inactive DMS", "dms_id", dmsStr)
			ack()
			return
		}
		if err == nil && !syncproto.IsDMSDisabled(reply.GetDown()) {
			c.Applied.Add(1)
			log.Debug("sync: applied a message", "dms_id", dmsStr, "message_id", env.GetMessageId(), "records", len(env.GetUp().GetRecords()))
		}
		if err == nil && reply == nil {
			ack()
			return
		}
		if err == nil {
			b, merr := syncproto.Marshal(reply)
			if merr != nil {
				log.Error("sync: encoding a reply", "err", merr)
				ack()
				return
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, perr := cm.Publish(pctx, &paho.Publish{Topic: syncproto.DownTopic(dmsStr), QoS: 1, Payload: b})
			cancel()
			if perr != nil {
				// The records are applied; the agent resends them and gets
				// the ack then (they are deduplicated).
				log.Warn("sync: publishing the ack", "dms_id", dmsStr, "err", perr)
			}
			ack()
			return
		}
		if permanentDBError(err) {
			// The same values fail the same way on every redelivery:
			// retrying would stop this replica's consumer for good.
			log.Warn("sync: dropping a message the registry cannot store", "dms_id", dmsStr, "message_id", env.GetMessageId(), "err", err)
			ack()
			return
		}
		log.Error("sync: applying a message", "dms_id", dmsStr, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(syncproto.ReconnectBackoff(attempt)):
		}
	}
}

// permanentDBError reports whether Postgres refused a value of the
// message itself (SQLSTATE class 22, data exception: a NUL byte in a
// string, a time out of range), which no retry can fix, as opposed to a
// database that is down or a transaction that collided.
func permanentDBError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22")
}

// Package syncclient moves the agent's durable outbox to the control
// plane over MQTT v5 (paho autopaho): records go up in batches on the
// DMS's up topic at QoS 1; a record leaves the outbox only when the
// control plane's ack for it arrives on the down topic, after the control
// plane committed it. Unacknowledged records are sent again after a
// timeout or a reconnect; the control plane deduplicates by record id, so
// at-least-once delivery has an exactly-once effect.
package syncclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/internal/mqttlimit"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// Outbox is what the client needs of the agent's store.
type Outbox interface {
	Peek(n int) ([]store.OutboxRecord, error)
	Ack(ids ...string) (int, error)
	Depth() (int, error)
}

// ReasonBanned is the CONNACK reason code (MQTT v5 0x8A "banned") the
// control plane's broker answers a disabled DMS with.
const ReasonBanned = 0x8A

// Client syncs one DMS.
type Client struct {
	Store     Outbox
	DMSID     string
	BrokerURL string
	TLS       *tls.Config
	// Batch is the most records per message; default 200.
	Batch int
	// Resend is how long a sent record waits for its ack before it is
	// sent again; default 20s.
	Resend time.Duration
	// AgentVersion and expiries go into heartbeats.
	AgentVersion string
	Heartbeat    time.Duration // default 30s
	// OnDown receives the updates of down messages (policy, CRLs...). It
	// runs before the message's acks remove records from the outbox, so a
	// crash in between redelivers the answer rather than losing it.
	OnDown func(*syncpb.Down)
	// IdentityNotAfter, if set, goes into heartbeats.
	IdentityNotAfter func() time.Time
	// HeartbeatExtra, if set, adds to each heartbeat (policy digest, CRL
	// numbers, certificate expiries).
	HeartbeatExtra func(*syncpb.Heartbeat)
	// Disabled is the state at start: the broker last answered this DMS's
	// CONNECT with reason code 0x8A Banned (the control plane disabled
	// it; the agent persists this). While disabled, connection attempts
	// after the first are DisabledRetry apart (default 5m), so that a DMS
	// enabled again is back within DisabledRetry.
	Disabled bool
	// DisabledByControlPlane: Disabled came from a DMSDisabled answer
	// (DisabledSource was SourceControlPlane), so an accepted connection
	// does not clear it; the control plane's next other answer does.
	DisabledByControlPlane bool
	DisabledRetry          time.Duration
	// OnDisabled, if set, is called when the state or its source changes:
	// disabled on a Banned CONNACK (SourceBroker) or a DMSDisabled answer
	// from the control plane (SourceControlPlane: an external broker knows
	// nothing of DMS states); enabled when a connection is accepted again
	// (after Banned) or the control plane answers otherwise (after
	// DMSDisabled). Calls are made one at a time, in the order of the
	// changes. While the control plane says disabled, records stay in the
	// outbox unsent; heartbeats go on, without the policy digest, so that
	// an active DMS is always answered.
	OnDisabled func(disabled bool, source string)
	Log        *slog.Logger

	mu       sync.Mutex
	inFlight map[string]time.Time // record id -> sent at
	online   atomic.Bool
	// stateMu orders the changes of disabled and byControlPlane and their
	// OnDisabled calls: the connection comes up and down messages arrive
	// on different goroutines.
	stateMu  sync.Mutex
	disabled atomic.Bool
	// byControlPlane: the state was set by a DMSDisabled answer, which an
	// accepted connection does not clear (behind an external broker every
	// connection is accepted).
	byControlPlane atomic.Bool
	lastSync       atomic.Int64
	kick           chan struct{}
}

// Online reports whether the broker connection is up.
func (c *Client) Online() bool { return c.online.Load() }

// IsDisabled reports whether the control plane disabled this DMS: the
// broker's last answer to a CONNECT was Banned, or the control plane's
// last answer was DMSDisabled.
func (c *Client) IsDisabled() bool { return c.disabled.Load() }

// Who said the DMS is disabled (DisabledSource).
const (
	SourceBroker       = "broker"        // CONNACK Banned
	SourceControlPlane = "control plane" // a DMSDisabled answer
)

// DisabledSource says who said the DMS is disabled: SourceControlPlane or
// SourceBroker.
func (c *Client) DisabledSource() string {
	if c.byControlPlane.Load() {
		return SourceControlPlane
	}
	return SourceBroker
}

// setState records the state and its source and reports a change of
// either. With onlyFromBroker it changes nothing unless the current state
// came from the broker (an accepted connection clears only Banned).
func (c *Client) setState(disabled, byControlPlane, onlyFromBroker bool) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if onlyFromBroker && c.byControlPlane.Load() {
		return
	}
	if !disabled {
		byControlPlane = false
	}
	changed := c.disabled.Swap(disabled) != disabled
	if c.byControlPlane.Swap(byControlPlane) != byControlPlane && disabled {
		changed = true
	}
	if changed && c.OnDisabled != nil {
		c.OnDisabled(disabled, c.DisabledSource())
	}
}

// reconnectBackoff is syncproto.ReconnectBackoff, or DisabledRetry
// between attempts while the DMS is disabled.
func (c *Client) reconnectBackoff(attempt int) time.Duration {
	if attempt > 0 && c.disabled.Load() {
		return c.DisabledRetry
	}
	return syncproto.ReconnectBackoff(attempt)
}

// LastSync is when the last down message arrived (zero if never).
func (c *Client) LastSync() time.Time {
	if ms := c.lastSync.Load(); ms > 0 {
		return time.UnixMilli(ms)
	}
	return time.Time{}
}

// Kick asks the pump to look at the outbox now (after an enqueue).
func (c *Client) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Client) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Run connects and syncs until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	if c.Batch <= 0 || c.Batch > syncproto.MaxRecordsPerMessage {
		c.Batch = 200
	}
	if c.Resend <= 0 {
		c.Resend = 20 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 30 * time.Second
	}
	if c.DisabledRetry <= 0 {
		c.DisabledRetry = 5 * time.Minute
	}
	c.disabled.Store(c.Disabled)
	c.byControlPlane.Store(c.Disabled && c.DisabledByControlPlane)
	c.mu.Lock()
	c.inFlight = map[string]time.Time{}
	c.kick = make(chan struct{}, 1)
	c.mu.Unlock()
	u, err := url.Parse(c.BrokerURL)
	if err != nil {
		return fmt.Errorf("sync: broker url: %w", err)
	}
	if u.Scheme == "mqtts" {
		u.Scheme = "tls"
	}
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        c.TLS,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         7 * 24 * 3600,
		ReconnectBackoff:              c.reconnectBackoff,
		ConnectTimeout:                10 * time.Second,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			c.connected()
			go func() {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if _, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: syncproto.DownTopic(c.DMSID), QoS: 1}}}); err != nil {
					c.log().Warn("sync: subscribing", "err", err)
				}
				// A heartbeat at once: the control plane answers with the
				// policy, CA bundles and CRLs the agent lacks.
				c.send(ctx, cm, nil, true)
				c.Kick()
			}()
		},
		OnConnectionDown: func() bool { c.online.Store(false); return true },
		OnConnectError: func(err error) {
			var ce *autopaho.ConnackError
			if errors.As(err, &ce) && ce.ReasonCode == ReasonBanned {
				c.setState(true, false, false)
				return
			}
			c.log().Debug("sync: connecting", "err", err)
		},
		ClientConfig: paho.ClientConfig{
			ClientID: c.DMSID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				c.onDown(pr.Packet)
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
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	hb := time.NewTicker(c.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_ = cm.Disconnect(dctx)
			cancel()
			return nil
		case <-c.kick:
		case <-tick.C:
		case <-hb.C:
			c.send(ctx, cm, nil, true)
			continue
		}
		c.pump(ctx, cm)
	}
}

// connected is the state change of an accepted connection: online, no
// longer disabled unless the control plane said so, and what was in
// flight is sent again.
func (c *Client) connected() {
	c.online.Store(true)
	c.setState(false, false, true)
	c.mu.Lock()
	clear(c.inFlight)
	c.mu.Unlock()
}

// pump sends the oldest records that are not waiting for an ack.
func (c *Client) pump(ctx context.Context, cm *autopaho.ConnectionManager) {
	if !c.online.Load() || c.disabled.Load() {
		return
	}
	for {
		recs, err := c.Store.Peek(c.Batch * 4)
		if err != nil {
			c.log().Error("sync: reading the outbox", "err", err)
			return
		}
		now := time.Now()
		var batch []*syncpb.Record
		c.mu.Lock()
		for _, r := range recs {
			if sent, ok := c.inFlight[r.ID]; ok && now.Sub(sent) < c.Resend {
				continue
			}
			var rec syncpb.Record
			if err := proto.Unmarshal(r.Payload, &rec); err != nil {
				c.log().Error("sync: unreadable outbox record; dropping it", "record_id", r.ID, "err", err)
				c.mu.Unlock()
				_, _ = c.Store.Ack(r.ID)
				c.mu.Lock()
				continue
			}
			batch = append(batch, &rec)
			c.inFlight[r.ID] = now
			if len(batch) == c.Batch {
				break
			}
		}
		c.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		if !c.send(ctx, cm, batch, false) {
			c.mu.Lock()
			for _, r := range batch {
				delete(c.inFlight, r.GetRecordId())
			}
			c.mu.Unlock()
			return
		}
		if len(recs) < c.Batch*4 {
			return
		}
	}
}

// send publishes one up message (records and/or a heartbeat).
func (c *Client) send(ctx context.Context, cm *autopaho.ConnectionManager, recs []*syncpb.Record, heartbeat bool) bool {
	up := &syncpb.Up{Records: recs}
	if heartbeat {
		up.Heartbeat = c.heartbeat()
	}
	env := &syncpb.Envelope{MessageId: syncproto.NewMessageID(), DmsId: c.DMSID, SentAtUnixMs: time.Now().UnixMilli(),
		ProtocolVersion: syncproto.ProtocolVersion, Body: &syncpb.Envelope_Up{Up: up}}
	b, err := syncproto.Marshal(env)
	if err != nil {
		c.log().Error("sync: encoding", "err", err)
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := cm.Publish(pctx, &paho.Publish{Topic: syncproto.UpTopic(c.DMSID), QoS: 1, Payload: b}); err != nil {
		c.log().Debug("sync: publishing", "err", err)
		return false
	}
	return true
}

// heartbeat is the agent's state for the control plane.
func (c *Client) heartbeat() *syncpb.Heartbeat {
	depth, _ := c.Store.Depth()
	h := &syncpb.Heartbeat{AgentVersion: c.AgentVersion, QueueDepth: uint64(depth), LastSyncUnixMs: c.lastSync.Load(), ProtocolVersion: syncproto.ProtocolVersion}
	if c.IdentityNotAfter != nil {
		h.IdentityNotAfterUnixMs = c.IdentityNotAfter().UnixMilli()
	}
	if c.HeartbeatExtra != nil {
		c.HeartbeatExtra(h)
	}
	if c.byControlPlane.Load() {
		// The control plane of an active DMS sends the policy to an
		// agent without a digest: an answer other than DMSDisabled,
		// which clears the state, is then certain.
		h.PolicyDigest = nil
	}
	return h
}

// onDown handles a down message: acks remove records from the outbox.
func (c *Client) onDown(p *paho.Publish) {
	env, err := syncproto.Unmarshal(p.Payload)
	if err != nil || env.GetDmsId() != c.DMSID {
		c.log().Warn("sync: dropping a malformed down message", "err", err)
		return
	}
	down := env.GetDown()
	if down == nil {
		return
	}
	if syncproto.IsDMSDisabled(down) {
		// Not a sync: the local quota does not restart, nothing is acked.
		c.setState(true, true, false)
		return
	}
	if c.byControlPlane.Load() {
		c.setState(false, false, false)
		c.Kick()
	}
	c.lastSync.Store(time.Now().UnixMilli())
	if c.OnDown != nil && len(down.GetUpdates()) > 0 {
		c.OnDown(down)
	}
	if a := down.GetAck(); a != nil {
		ids := append([]string{}, a.GetRecordIds()...)
		for _, r := range a.GetRejections() {
			if r.GetPermanent() {
				c.log().Error("sync: the control plane refused a record for good; dropping it", "record_id", r.GetRecordId(), "reason", r.GetReason())
				ids = append(ids, r.GetRecordId())
			}
		}
		if len(ids) > 0 {
			if _, err := c.Store.Ack(ids...); err != nil {
				c.log().Error("sync: removing acknowledged records", "err", err)
			}
			c.mu.Lock()
			for _, id := range ids {
				delete(c.inFlight, id)
			}
			c.mu.Unlock()
			c.Kick()
		}
	}
}

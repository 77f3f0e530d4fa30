package broker

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-pki/outpost/proto/syncproto"
)

// role is what a verified client certificate may do.
type role int

const (
	roleDMS role = iota + 1
	roleControlPlane
)

func (r role) String() string {
	switch r {
	case roleDMS:
		return "dms"
	case roleControlPlane:
		return "control_plane"
	}
	return "none"
}

// identity is the result of verifying a client certificate.
type identity struct {
	role     role
	name     string            // subject common name: the DMS id for roleDMS
	cert     *x509.Certificate // the leaf
	notAfter time.Time         // earliest NotAfter of the verified chain
}

// identify sorts a TLS peer's certificate chain (leaf first) into a role.
// It runs during the handshake, so a certificate that fits neither role
// never reaches MQTT.
func (b *Broker) identify(certs []*x509.Certificate) (identity, error) {
	if len(certs) == 0 {
		return identity{}, errors.New("no client certificate")
	}
	leaf := certs[0]
	opts := x509.VerifyOptions{
		Intermediates: x509.NewCertPool(),
		CurrentTime:   time.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	cn := leaf.Subject.CommonName
	var cpErr error
	if b.cpNames[cn] {
		opts.Roots = b.cfg.ControlPlaneCAs
		chains, err := leaf.Verify(opts)
		if err == nil {
			return identity{role: roleControlPlane, name: cn, cert: leaf, notAfter: earliestNotAfter(chains[0])}, nil
		}
		cpErr = err
	}
	if !syncproto.ValidDMSID(cn) {
		if cpErr != nil {
			return identity{}, fmt.Errorf("control plane certificate %q: %w", cn, cpErr)
		}
		return identity{}, fmt.Errorf("certificate common name %q is neither a dms id nor a control plane name", cn)
	}
	// crypto/x509 accepts a leaf without the extension for any usage; a
	// DMS certificate must say clientAuth.
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return identity{}, fmt.Errorf("dms certificate %s lacks extended key usage clientAuth", cn)
	}
	opts.Roots = b.cfg.ClientCAs
	chains, err := leaf.Verify(opts)
	if err != nil {
		return identity{}, fmt.Errorf("dms certificate %s: %w", cn, err)
	}
	return identity{role: roleDMS, name: cn, cert: leaf, notAfter: earliestNotAfter(chains[0])}, nil
}

func earliestNotAfter(chain []*x509.Certificate) time.Time {
	t := chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

// sessionRole returns the role and DMS id of a session from its client id,
// following the invariant enforced at connect: canonical UUID client ids
// belong to the DMS of that id, all others to the control plane.
func sessionRole(clientID string) (role, string) {
	if syncproto.ValidDMSID(clientID) {
		return roleDMS, clientID
	}
	return roleControlPlane, ""
}

// canPublish reports whether a client may publish on topic.
func canPublish(r role, dmsID, topic string) bool {
	switch r {
	case roleDMS:
		return topic == syncproto.UpTopic(dmsID)
	case roleControlPlane:
		_, up, ok := syncproto.DMSFromTopic(topic)
		return ok && !up
	}
	return false
}

// canSubscribe reports whether a client may subscribe to filter.
func canSubscribe(r role, dmsID, filter string) bool {
	switch r {
	case roleDMS:
		return filter == syncproto.DownTopic(dmsID)
	case roleControlPlane:
		return filter == syncproto.SharedUpSubscription
	}
	return false
}

// canReceive reports whether a message on topic may be delivered to a
// client. It differs from canSubscribe for the control plane, which
// receives the concrete up topics its shared subscription matches.
func canReceive(r role, dmsID, topic string) bool {
	switch r {
	case roleDMS:
		return topic == syncproto.DownTopic(dmsID)
	case roleControlPlane:
		_, up, ok := syncproto.DMSFromTopic(topic)
		return ok && up
	}
	return false
}

// deniedFilter replaces, in OnSubscribe, a filter the client may not
// subscribe to: it is a valid filter that the ACL refuses, so mochi answers
// 0x87 "not authorized" for it.
const deniedFilter = "$outpost/denied"

// authHook authenticates connections, enforces the topic ACL and picks the
// receiver of shared-subscription messages.
type authHook struct {
	mqtt.HookBase
	b *Broker
}

// ID implements mqtt.Hook.
func (h *authHook) ID() string { return "outpost-auth" }

// Provides implements mqtt.Hook.
func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnSubscribe,
		mqtt.OnSessionEstablished,
		mqtt.OnSelectSubscribers,
		mqtt.OnPacketEncode,
		mqtt.OnClientExpired,
	}, []byte{b})
}

// OnConnect checks a CONNECT against the connection's certificate, calls
// Authorize for DMSs and answers refusals itself, with a precise CONNACK
// reason code (OnConnectAuthenticate can only say "bad user name or
// password").
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	log := h.b.log.With("client_id", pk.Connect.ClientIdentifier, "remote_addr", cl.Net.Remote)
	pc, ok := cl.Net.Conn.(*peerConn)
	if !ok || !pc.verified {
		log.Warn("refusing mqtt connect without a verified certificate")
		return h.refuse(cl, packets.ErrNotAuthorized)
	}
	id := pc.id
	log = log.With("role", id.role.String(), "common_name", id.name)
	if pk.Properties.AuthenticationMethod != "" {
		log.Warn("refusing mqtt connect with enhanced authentication", "reason", "unsupported authentication method")
		return h.refuse(cl, packets.ErrBadAuthenticationMethod)
	}
	clientID := pk.Connect.ClientIdentifier
	switch id.role {
	case roleDMS:
		if clientID != id.name {
			log.Warn("refusing mqtt connect", "reason", "client id is not the certificate's dms id")
			return h.refuse(cl, packets.ErrClientIdentifierNotValid)
		}
	case roleControlPlane:
		if syncproto.ValidDMSID(clientID) {
			log.Warn("refusing mqtt connect", "reason", "control plane client id is a dms id")
			return h.refuse(cl, packets.ErrClientIdentifierNotValid)
		}
	}
	// A will is published without an ACL check when the connection dies.
	if pk.Connect.WillFlag {
		r, dmsID := sessionRole(cl.ID) // the role just checked against the certificate
		if !canPublish(r, dmsID, pk.Connect.WillTopic) {
			log.Warn("refusing mqtt connect", "reason", "will topic not allowed", "topic", pk.Connect.WillTopic)
			return h.refuse(cl, packets.ErrNotAuthorized)
		}
	}
	if id.role == roleDMS {
		pc.kickSeq = h.b.kicks.current()
		ctx, cancel := context.WithTimeout(h.b.ctx, authorizeTimeout)
		err := h.b.cfg.Authorize(ctx, id.name, id.cert)
		cancel()
		if err != nil {
			code := packets.ErrNotAuthorized
			switch {
			case errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
				code = packets.ErrServerUnavailable
			case errors.Is(err, ErrBanned):
				code = packets.ErrBanned
			}
			log.Warn("refusing mqtt connect", "reason", "authorize failed", "error", err, "connack", fmt.Sprintf("%#x", code.Code))
			return h.refuse(cl, code)
		}
	}
	if ka := cl.State.Keepalive; ka == 0 || ka > maxKeepAlive {
		cl.State.Keepalive = min(max(ka, defaultKeepAlive), maxKeepAlive)
		cl.State.ServerKeepalive = true
	}
	pc.authenticated.Store(true)
	log.Info("mqtt client connected", "clean_start", pk.Connect.Clean)
	return nil
}

// refuse sends a CONNACK with code; mochi then closes the connection.
func (h *authHook) refuse(cl *mqtt.Client, code packets.Code) error {
	if err := h.b.srv.SendConnack(cl, code, false, nil); err != nil {
		return fmt.Errorf("sending connack %#x: %w", code.Code, err)
	}
	return code
}

// OnConnectAuthenticate accepts exactly the connections OnConnect accepted.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	pc, ok := cl.Net.Conn.(*peerConn)
	return ok && pc.authenticated.Load()
}

// OnACLCheck decides publishes (write) and, for reads, both subscriptions
// (after OnSubscribe) and deliveries, including deliveries to sessions
// whose connection is gone.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	r, dmsID := sessionRole(cl.ID)
	if write {
		if canPublish(r, dmsID, topic) {
			return true
		}
		h.b.log.Warn("mqtt publish not authorized", "client_id", cl.ID, "topic", topic)
		return false
	}
	return canSubscribe(r, dmsID, topic) || canReceive(r, dmsID, topic)
}

// OnSubscribe swaps every valid filter the client may not subscribe to for
// deniedFilter, so the ACL check refuses it: OnACLCheck alone cannot tell a
// control plane's subscription to one DMS's up topic (refused) from the
// delivery of a message on that topic (allowed).
func (h *authHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	r, dmsID := sessionRole(cl.ID)
	var filters packets.Subscriptions
	for i, f := range pk.Filters {
		if !mqtt.IsValidFilter(f.Filter, false) || canSubscribe(r, dmsID, f.Filter) {
			continue
		}
		h.b.log.Warn("mqtt subscribe not authorized", "client_id", cl.ID, "filter", f.Filter)
		if filters == nil {
			filters = slices.Clone(pk.Filters)
		}
		filters[i].Filter = deniedFilter
	}
	if filters != nil {
		pk.Filters = filters
	}
	return pk
}

// OnSessionEstablished drops a DMS that Disconnect targeted while its
// Authorize call was running, and schedules the disconnection of every
// client when its certificate chain expires.
func (h *authHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	pc, ok := cl.Net.Conn.(*peerConn)
	if !ok {
		return
	}
	if pc.id.role == roleDMS && h.b.kicks.since(pc.id.name, pc.kickSeq) {
		h.b.log.Info("disconnecting dms", "dms_id", pc.id.name, "remote_addr", cl.Net.Remote, "reason", "disconnected while connecting")
		_ = h.b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
		return
	}
	pc.setExpiry(pc.id.notAfter, func() {
		h.b.log.Info("disconnecting mqtt client", "client_id", cl.ID, "remote_addr", cl.Net.Remote, "reason", "certificate expired")
		_ = h.b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	})
}

// OnSelectSubscribers picks, for each shared subscription group, one
// connected member at random; only when no member is connected does the
// message go to a disconnected one's session (queued until it returns).
// mochi alone picks any member, connected or not.
func (h *authHook) OnSelectSubscribers(subs *mqtt.Subscribers, _ packets.Packet) *mqtt.Subscribers {
	if subs.SharedSelected == nil {
		subs.SharedSelected = make(map[string]packets.Subscription)
	}
	for _, members := range subs.Shared {
		var online, all []string
		for id := range members {
			all = append(all, id)
			if cl, ok := h.b.srv.Clients.Get(id); ok && !cl.Closed() {
				online = append(online, id)
			}
		}
		pool := online
		if len(pool) == 0 {
			pool = all
		}
		if len(pool) == 0 {
			continue
		}
		id := pool[rand.IntN(len(pool))]
		sub := members[id]
		if prev, ok := subs.SharedSelected[id]; ok {
			sub = prev.Merge(sub)
		}
		subs.SharedSelected[id] = sub
	}
	return subs
}

// OnPacketEncode advertises the maximum packet size in successful CONNACKs
// (mochi enforces it but does not say so).
func (h *authHook) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
		pk.Properties.MaximumPacketSize = h.b.cfg.MaxPacketSize
	}
	return pk
}

// OnClientExpired removes an expired session's subscriptions and queued
// messages, from the topic index and from the store; mochi forgets only
// the client record.
func (h *authHook) OnClientExpired(cl *mqtt.Client) {
	h.b.srv.UnsubscribeClient(cl)
	cl.ClearInflights()
}

var _ mqtt.Hook = (*authHook)(nil)

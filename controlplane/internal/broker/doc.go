// Package broker is the control plane's embedded MQTT v5 broker: the one
// place where gateway agents (DMSs) and the control plane's sync consumers
// meet. It wraps github.com/mochi-mqtt/server/v2 with:
//
//   - a TLS listener that requires a client certificate and sorts the peer
//     into one of two roles during the handshake: a DMS (common name is its
//     canonical UUID, certificate chains to Config.ClientCAs with
//     id-kp-clientAuth) or the control plane (common name listed in
//     Config.ControlPlaneNames, chains to Config.ControlPlaneCAs);
//   - an auth hook: a DMS must use its id as MQTT client id and pass
//     Config.Authorize on every connect; a DMS may publish only on its own up
//     topic and subscribe only to its own down topic; the control plane may
//     subscribe only to the shared up subscription and publish only on down
//     topics (see package syncproto for the topic names);
//   - persistent sessions, queued QoS 1 messages and retained messages in a
//     bbolt file under Config.DataDir (mochi's bolt storage hook, wrapped to
//     fix what it gets wrong, see store.go);
//   - shared-subscription delivery that prefers connected members, so a
//     control plane replica that went away with a persistent session does
//     not swallow messages while another replica is online.
//
// Usernames and passwords are ignored; a connection without a valid client
// certificate never gets past the TLS handshake. Only MQTT 5 is accepted,
// QoS is capped at 1, and inbound topic aliases are disabled (mochi checks
// ACLs before it resolves an alias).
//
// Role invariant: every session whose client id is a canonical UUID belongs
// to the DMS of that id, and every other session belongs to the control
// plane (control plane clients may not use a UUID as client id). The ACL
// relies on it to judge deliveries to sessions whose connection is gone,
// including sessions restored from disk after a restart.
package broker

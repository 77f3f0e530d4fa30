// Package syncproto is the hand-written side of the agent <-> control plane
// sync protocol whose messages are generated into package syncpb: the
// protocol version, the MQTT topic names, and the codec that every sync
// message goes through in both directions.
//
// The codec caps sizes before parsing and validates after: a message that
// Unmarshal returns is safe to act on field by field (ids present and
// bounded, exactly one payload per record and update, DER blobs within
// MaxDERSize, ...). It does not parse the DER or check signatures; that is
// the consumer's job. Marshal validates too, so an invalid message never
// reaches the outbox, where it would be sent again and again.
//
// Everything here is pure: no network, no storage, safe for concurrent use.
package syncproto

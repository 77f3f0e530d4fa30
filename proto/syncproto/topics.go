package syncproto

import "strings"

// Topics. Every DMS has its own pair; the "v1" is the topic layout's
// version, which changes only if the envelope itself can no longer be read
// by old code, never for a ProtocolVersion bump.
//
//	outpost/v1/dms/{dms_id}/up    agent -> control plane (Up)
//	outpost/v1/dms/{dms_id}/down  control plane -> agent (Down)
const (
	topicPrefix = "outpost/v1/dms/"

	// UpTopicFilter matches every DMS's up topic.
	UpTopicFilter = topicPrefix + "+/up"

	// SharedUpSubscription is what control plane replicas subscribe to:
	// an MQTT v5 shared subscription, so each up message goes to one
	// replica of the group "outpost-controlplane".
	SharedUpSubscription = "$share/outpost-controlplane/" + UpTopicFilter
)

// UpTopic is the topic a DMS publishes its Up messages on.
func UpTopic(dmsID string) string { return topicPrefix + dmsID + "/up" }

// DownTopic is the topic a DMS receives its Down messages on.
func DownTopic(dmsID string) string { return topicPrefix + dmsID + "/down" }

// DMSFromTopic parses a topic a sync message arrived on. It returns the
// DMS id and whether it is an up topic; ok is false for anything but
// exactly UpTopic(id) or DownTopic(id) with a valid id (no wildcards, no
// empty or extra levels, no $share prefix: MQTT delivers the real topic).
func DMSFromTopic(topic string) (id string, up bool, ok bool) {
	rest, found := strings.CutPrefix(topic, topicPrefix)
	if !found {
		return "", false, false
	}
	id, dir, found := strings.Cut(rest, "/")
	if !found || !ValidDMSID(id) {
		return "", false, false
	}
	switch dir {
	case "up":
		return id, true, true
	case "down":
		return id, false, true
	}
	return "", false, false
}

// ValidDMSID reports whether s is a DMS id as the control plane writes
// them: a UUID in canonical form (8-4-4-4-12 lowercase hex digits), not the
// nil UUID. Only one spelling is accepted because the id is part of the
// topic, and MQTT topics are case-sensitive.
func ValidDMSID(s string) bool {
	if len(s) != 36 {
		return false
	}
	nonZero := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
			continue
		}
		switch {
		case c >= '1' && c <= '9', c >= 'a' && c <= 'f':
			nonZero = true
		case c == '0':
		default:
			return false
		}
	}
	return nonZero
}

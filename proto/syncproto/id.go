package syncproto

import "github.com/google/uuid"

// NewMessageID returns a new id for Envelope.message_id: a UUIDv7 (time
// ordered, 74 random bits) in canonical form. It also suits
// Record.record_id and Update.update_id. Safe for concurrent use.
func NewMessageID() string {
	// NewV7 fails only if crypto/rand does, which since Go 1.24 never
	// returns an error (it aborts the program instead).
	return uuid.Must(uuid.NewV7()).String()
}

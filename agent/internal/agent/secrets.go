package agent

import (
	"errors"
	"fmt"
	"time"

	"github.com/outpost-pki/outpost/agent/internal/store"
)

// MintRequest asks for one-time enrollment secrets (HTTP Basic
// credentials for EST, one per device).
type MintRequest struct {
	// DeviceIDs to mint for; or Count ids made of Prefix and a number.
	DeviceIDs []string `json:"device_ids,omitempty"`
	Count     int      `json:"count,omitempty"`
	Prefix    string   `json:"prefix,omitempty"`
	// Label restricts the secrets to one EST label ("" any).
	Label string `json:"label,omitempty"`
	// TTL of the secrets; 0: they do not expire.
	TTL time.Duration `json:"ttl,omitempty"`
	// Replace secrets the devices already have unused.
	Replace bool `json:"replace,omitempty"`
}

// MintSecrets mints the secrets of req in st; the passwords are returned
// once and stored only hashed.
func MintSecrets(st *store.Store, req MintRequest) ([]store.Credential, error) {
	ids := req.DeviceIDs
	if len(ids) == 0 {
		if req.Count < 1 || req.Count > 100_000 {
			return nil, errors.New("count must be 1..100000 (or give device ids)")
		}
		if req.Prefix == "" {
			req.Prefix = "device-"
		}
		ids = make([]string, req.Count)
		stamp := time.Now().UTC().Format("20060102150405")
		for i := range ids {
			ids[i] = fmt.Sprintf("%s%s-%06d", req.Prefix, stamp, i+1)
		}
	}
	if req.TTL < 0 {
		return nil, errors.New("ttl must not be negative")
	}
	return st.MintSecrets(ids, req.Label, req.TTL, req.Replace)
}

package syncproto

// Event kinds with a meaning to the control plane (Event.kind). Other
// kinds are stored as they come.
const (
	// EventIdentityInstalled: the agent wrote a renewed identity
	// certificate to disk and uses it from now on; detail_json is
	// {"serial": "<lower-case hex serial>"}. The control plane then makes
	// it the DMS's identity and revokes the older ones (superseded).
	EventIdentityInstalled = "dms.identity_installed"
)

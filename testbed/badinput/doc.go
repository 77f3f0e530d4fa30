// Package badinput is the bad-input suite of issue 11: it starts the
// whole system once (testbed/system: PostgreSQL, the control plane with
// its embedded broker and SoftHSM2, an agent on swtpm), enrolls a few
// devices, then sends malformed inputs to every surface an attacker on
// the network reaches (the agent's EST server, the REST API, OCSP, the
// MQTT broker and the sync consumer behind it) and asserts a clear
// rejection for each. Afterwards both services must be healthy with the
// same process ids, the accepted enrollments still in the registry
// exactly once, a normal enrollment must still work, and no log may hold
// a panic, an internal error answer or a secret. See docs/BAD-INPUT.md.
//
// The package holds tests only.
package badinput

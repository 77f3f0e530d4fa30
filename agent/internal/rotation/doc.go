// Package rotation rotates the certificates of agentless devices on the
// gateway's LAN, after Airbnb's Ottr: each device of an inventory is
// routed by platform, OS version and model to a hook (an executable) that
// has the device generate a key and CSR, the agent gets the CSR signed the
// way an EST enrollment for that device would be, the hook installs the
// certificate on the device, and the agent connects to the device again
// to verify that it now presents the new certificate.
//
// The package knows nothing of the agent's internals: the agent supplies
// a [Signer] ("sign this CSR for device X"), a [Recorder] ("record this
// event for the control plane") and a [Trust] (the CAs whose
// certificates count as this gateway's). The hook contract is documented
// in docs/ROTATION.md; [Service] schedules rotations with bounded
// concurrency, one at a time per device, with exponential backoff after
// failures.
package rotation

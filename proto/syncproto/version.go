package syncproto

// ProtocolVersion is the sync protocol version this code speaks, stamped
// into Envelope.protocol_version by senders and Heartbeat.protocol_version
// by agents. A receiver accepts versions 1..ProtocolVersion and rejects
// newer ones with ErrUnsupportedVersion (see proto/README.md: upgrade the
// control plane first).
//
// Bump it whenever the messages change (a field, a payload kind, an
// accepted enumeration value, a validation rule), with one dated line here:
//
//   - 1 (2026-11-22): first version: envelope, up records, down updates, acks, heartbeat
//   - 2 (2026-11-22): EST: ServerCertificateRequest record and ServerCertificate
//     update; Policy labels, edge CA validity and name constraints, webhook
//     URL, online wait, just-in-time registration, state digest; CABundle.ca_id;
//     Heartbeat policy digest, CRL numbers, EST server certificate expiry,
//     revocations seen;
//     EnrollmentRequest.reenroll_serial_hex; Label.device_auth; device_auth
//     "client_cert_or_secret"
//   - 3 (2026-11-22): delegated OCSP for edge CAs: ResponderRequest update
//     and ResponderCertificate record
//   - 4 (2026-11-22): DMSDisabled update, the answer to a disabled DMS
//     (behind an external broker the agent had no way to learn it)
const ProtocolVersion uint32 = 4

package syncproto

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/proto/syncpb"
)

// Size limits. Every message, in either direction, is one MQTT PUBLISH and
// is checked against these before it is parsed or sent.
const (
	// MaxMessageSize caps a marshalled Envelope. An Up batch is a few
	// hundred records of a CSR or certificate of a few KiB each; a Down
	// carries at most one CRL that fits (MaxCRLSize). Anything larger goes
	// over HTTP. A receiver refuses a larger payload before parsing it.
	MaxMessageSize = 1 << 20

	// MaxPacketSize is the MQTT v5 Maximum Packet Size to configure on the
	// broker and both clients for sync connections: MaxMessageSize plus
	// room for the PUBLISH header, topic and properties, so that a payload
	// of exactly MaxMessageSize still fits in one packet.
	MaxPacketSize = MaxMessageSize + 4<<10

	// MaxRecordsPerMessage caps Up.records, Down.updates, and the record
	// ids an Ack answers (record_ids plus rejections), so that one message
	// is one bounded database transaction on either side.
	MaxRecordsPerMessage = 500

	// MaxIDLength caps message, record, update and request ids, which
	// must be 1..MaxIDLength printable ASCII characters (they are keys in
	// the outbox and in the registry, and appear in logs).
	MaxIDLength = 64

	// MaxDERSize caps each CSR and certificate (and each chain or bundle
	// element). Real ones are 0.5-3 KiB; 64 KiB leaves room for large RSA
	// keys and many extensions.
	MaxDERSize = 64 << 10

	// MaxCRLSize caps CRLUpdate.crl_der: what fits in one message next to
	// the envelope, an update id and a CA id (under 1 KiB together). The
	// control plane does not send a larger CRL over MQTT; the agent
	// fetches it over HTTP from the CRL distribution point.
	MaxCRLSize = MaxMessageSize - 1<<10

	// MaxEventDetailSize caps Event.detail_json.
	MaxEventDetailSize = 16 << 10

	// MaxStringLength caps the other short strings: CA, device and
	// profile names, labels, event kinds, agent versions.
	MaxStringLength = 256

	// MaxReasonLength caps Rejection.reason and EnrollmentResult.error.
	MaxReasonLength = 1024
)

// Errors returned by Marshal, Unmarshal and Validate; check with errors.Is.
// Errors carrying detail (VersionError, InvalidError) match these too.
var (
	// ErrTooLarge: the message exceeds MaxMessageSize.
	ErrTooLarge = errors.New("syncproto: message too large")
	// ErrMalformed: the bytes are not a protobuf Envelope.
	ErrMalformed = errors.New("syncproto: malformed message")
	// ErrUnsupportedVersion: the message is from a newer protocol
	// version; see VersionError.
	ErrUnsupportedVersion = errors.New("syncproto: unsupported protocol version")
	// ErrInvalid: the message parses but breaks a rule; see InvalidError.
	ErrInvalid = errors.New("syncproto: invalid message")
)

// VersionError is returned for an envelope whose protocol_version is newer
// than ProtocolVersion. It matches ErrUnsupportedVersion.
type VersionError struct {
	Version   uint32 // the envelope's protocol_version
	Supported uint32 // the highest this code speaks (ProtocolVersion)
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("syncproto: unsupported protocol version %d (this side speaks 1..%d)", e.Version, e.Supported)
}

// Is makes errors.Is(err, ErrUnsupportedVersion) true.
func (e *VersionError) Is(target error) bool { return target == ErrUnsupportedVersion }

// InvalidError is returned for a message that breaks a rule. It matches
// ErrInvalid.
type InvalidError struct {
	// Field is the path of the offending field, e.g.
	// "up.records[3].enrollment_request.csr_der".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

func (e *InvalidError) Error() string {
	return "syncproto: invalid message: " + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// Marshal validates e (see Validate) and encodes it deterministically.
// It refuses a message larger than MaxMessageSize with ErrTooLarge: split
// the records over several messages, or send the CRL over HTTP.
func Marshal(e *syncpb.Envelope) ([]byte, error) {
	if err := Validate(e); err != nil {
		return nil, err
	}
	opts := proto.MarshalOptions{Deterministic: true}
	if n := opts.Size(e); n > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, MaxMessageSize)
	}
	b, err := opts.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return b, nil
}

// Unmarshal decodes and validates one sync message. It checks the size
// before parsing (ErrTooLarge), then parses (ErrMalformed), then validates
// (ErrUnsupportedVersion, ErrInvalid). Unknown fields are kept, so a
// message passed on re-marshals to what was received. On error it returns
// no envelope: the same bytes will always fail the same way, so the
// receiver drops them (and logs) rather than retrying.
func Unmarshal(b []byte) (*syncpb.Envelope, error) {
	// Cap before parsing: a PUBLISH payload is attacker-sized (up to the
	// broker's packet limit), and parsing allocates in proportion to it.
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxMessageSize)
	}
	e := new(syncpb.Envelope)
	opts := proto.UnmarshalOptions{
		DiscardUnknown: false,
		// The schema nests four messages deep (Envelope, Down, Update,
		// Policy); a tight limit bounds the stack spent on nested unknown
		// groups in hostile input.
		RecursionLimit: 32,
	}
	if err := opts.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := Validate(e); err != nil {
		return nil, err
	}
	return e, nil
}

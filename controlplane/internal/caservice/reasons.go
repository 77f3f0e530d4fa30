package caservice

import "strings"

// RFC 5280 5.3.1 revocation reason codes (7 is unused).
var reasonCodes = map[string]int{
	"unspecified":          0,
	"keyCompromise":        1,
	"cACompromise":         2,
	"affiliationChanged":   3,
	"superseded":           4,
	"cessationOfOperation": 5,
	"certificateHold":      6,
	"privilegeWithdrawn":   9,
	"aACompromise":         10,
}

// ReasonCessationOfOperation is used when a device is decommissioned.
const ReasonCessationOfOperation = 5

// ParseReason maps an RFC 5280 reason name (case-insensitive) to its code;
// an empty name is "unspecified".
func ParseReason(name string) (int, error) {
	if name == "" {
		return 0, nil
	}
	for n, c := range reasonCodes {
		if strings.EqualFold(n, name) {
			return c, nil
		}
	}
	return 0, invalid("reason", "unknown revocation reason %q: use one of unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise", name)
}

// ReasonName returns the RFC 5280 name of a reason code.
func ReasonName(code int) string {
	for n, c := range reasonCodes {
		if c == code {
			return n
		}
	}
	return "unspecified"
}

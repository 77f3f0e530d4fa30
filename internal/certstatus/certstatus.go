// Package certstatus computes the lifecycle status of a certificate from its
// validity window: not yet valid, active, about to expire, expired.
//
// Everything here is a pure function of now, notBefore and notAfter (plus a
// [Threshold]); nothing reads the clock. Callers pass the time they want
// judged, which keeps status sweeps, renewal scheduling and tests
// deterministic.
//
// Revocation is not a validity-window question and is not decided here: a
// caller that knows a certificate is revoked reports that instead of [Of].
//
// # Conventions
//
//   - notAfter is inclusive, as in X.509 (RFC 5280 section 4.1.2.5): a
//     certificate is valid at notBefore, at notAfter, and at every instant
//     between; it is [Expired] only when now is after notAfter.
//   - A degenerate window (notAfter before notBefore) can never be valid:
//     [Of] reports it [Expired] whatever now is, and [RenewalTime] returns
//     notAfter.
//   - The lifetime used for [Threshold.Fraction] is notAfter - notBefore.
package certstatus

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Status is the lifecycle status of a certificate at one instant. Its values
// are stable strings, safe to store and to send over the wire.
type Status string

// The statuses [Of] returns.
const (
	// NotYetValid means now is before notBefore.
	NotYetValid Status = "not_yet_valid"
	// Active means the certificate is valid and not yet due for renewal.
	Active Status = "active"
	// AboutToExpire means the certificate is valid but has reached its
	// renewal point (see [Threshold]).
	AboutToExpire Status = "about_to_expire"
	// Expired means now is after notAfter, or the window is degenerate.
	Expired Status = "expired"
)

// Valid reports whether s is one of the defined statuses, for checking
// values read from storage or the wire.
func (s Status) Valid() bool {
	switch s {
	case NotYetValid, Active, AboutToExpire, Expired:
		return true
	}
	return false
}

// Threshold says when a certificate becomes "about to expire". The zero
// Threshold means never: a certificate goes straight from [Active] to
// [Expired].
//
// Either field, or both, may be set:
//   - Before > 0: about to expire from notAfter - Before on;
//   - Fraction > 0: about to expire once this fraction of the lifetime
//     (notAfter - notBefore) has elapsed, e.g. 2.0/3 for "renew after two
//     thirds";
//   - both: whichever point comes first (the earlier one wins).
//
// The renewal point is clamped into [notBefore, notAfter] (see
// [RenewalTime]). Call [Threshold.Validate] when loading configuration;
// [Of] and [RenewalTime] treat non-positive fields as unset and a Fraction
// of 1 or more as notAfter rather than failing.
type Threshold struct {
	// Before is the time before notAfter at which renewal is due.
	// Default 0 (unset).
	Before time.Duration
	// Fraction is the elapsed share of the lifetime, in (0, 1), at which
	// renewal is due. Default 0 (unset).
	Fraction float64
}

// IsZero reports whether t never makes a certificate about to expire.
func (t Threshold) IsZero() bool {
	return t.Before <= 0 && !(t.Fraction > 0)
}

// Validate reports whether t is usable: Before must not be negative and
// Fraction must be in [0, 1) (0 meaning unset).
func (t Threshold) Validate() error {
	var errs []error
	if t.Before < 0 {
		errs = append(errs, fmt.Errorf("certstatus: threshold before %v must not be negative", t.Before))
	}
	switch {
	case math.IsNaN(t.Fraction):
		errs = append(errs, errors.New("certstatus: threshold fraction must be a number"))
	case t.Fraction < 0:
		errs = append(errs, fmt.Errorf("certstatus: threshold fraction %v must not be negative", t.Fraction))
	case t.Fraction >= 1:
		errs = append(errs, fmt.Errorf("certstatus: threshold fraction %v must be below 1", t.Fraction))
	}
	return errors.Join(errs...)
}

// RenewalTime returns the instant at which a certificate valid from
// notBefore through notAfter becomes [AboutToExpire] under t: the earlier
// of notAfter - t.Before and notBefore + t.Fraction*(notAfter - notBefore),
// over the fields that are set, clamped into [notBefore, notAfter].
//
// For the zero Threshold it returns notAfter (there is no about-to-expire
// phase; renew no later than expiry). For a degenerate window (notAfter
// before notBefore) it returns notAfter.
func RenewalTime(notBefore, notAfter time.Time, t Threshold) time.Time {
	if notAfter.Before(notBefore) || t.IsZero() {
		return notAfter
	}
	at := notAfter
	if t.Before > 0 {
		if p := notAfter.Add(-t.Before); p.Before(at) {
			at = p
		}
	}
	if t.Fraction > 0 {
		if p := fractionPoint(notBefore, notAfter, t.Fraction); p.Before(at) {
			at = p
		}
	}
	if at.Before(notBefore) {
		at = notBefore
	}
	return at
}

// fractionPoint returns notBefore + f*(notAfter - notBefore), for
// notBefore <= notAfter and f > 0, rounded to the nanosecond.
func fractionPoint(notBefore, notAfter time.Time, f float64) time.Time {
	if f >= 1 {
		return notAfter
	}
	life := notAfter.Sub(notBefore)
	if life < math.MaxInt64 {
		return notBefore.Add(time.Duration(math.Round(float64(life) * f)))
	}
	// Sub saturates beyond ~292 years, e.g. for the "no well-defined
	// expiration" notAfter 99991231235959Z (RFC 5280 4.1.2.5); work in
	// seconds instead, which float64 holds exactly for such spans.
	secs := float64(notAfter.Unix()-notBefore.Unix()) * f
	return time.Unix(notBefore.Unix()+int64(secs), int64(notBefore.Nanosecond())).In(notBefore.Location())
}

// Of returns the status at now of a certificate valid from notBefore through
// notAfter (both inclusive):
//   - [Expired] if notAfter is before notBefore (degenerate) or now is after
//     notAfter;
//   - [NotYetValid] if now is before notBefore;
//   - [AboutToExpire] if t is not zero and now is at or after
//     [RenewalTime](notBefore, notAfter, t);
//   - [Active] otherwise.
func Of(now, notBefore, notAfter time.Time, t Threshold) Status {
	switch {
	case notAfter.Before(notBefore), now.After(notAfter):
		return Expired
	case now.Before(notBefore):
		return NotYetValid
	case !t.IsZero() && !now.Before(RenewalTime(notBefore, notAfter, t)):
		return AboutToExpire
	}
	return Active
}

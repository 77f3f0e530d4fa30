package device

import "time"

// RenewAt returns when a certificate valid from notBefore to notAfter is
// due for renewal: once less than percent of its validity, or fewer than
// days days, are left, whichever comes first. A pure function of its
// arguments (the caller brings the clock), like the sh hook's is_due.
func RenewAt(notBefore, notAfter time.Time, percent, days int) time.Time {
	life := notAfter.Sub(notBefore)
	window := time.Duration(int64(life) / 100 * int64(percent))
	if d := time.Duration(days) * 24 * time.Hour; d > window {
		window = d
	}
	return notAfter.Add(-window)
}

// Due reports whether a certificate is due for renewal at now.
func Due(now, notBefore, notAfter time.Time, percent, days int) bool {
	return !now.Before(RenewAt(notBefore, notAfter, percent, days))
}

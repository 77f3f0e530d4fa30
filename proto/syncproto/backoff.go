package syncproto

import "time"

// ReconnectBackoff is how long both ends of the sync link wait before
// connection attempt n (from 0): exponential from 250 ms, capped at 16 s,
// with jitter over its upper half so that a fleet reconnecting after a
// broker restart does not arrive all at once.
func ReconnectBackoff(attempt int) time.Duration {
	d := time.Duration(1<<min(attempt, 6)) * 250 * time.Millisecond
	return d/2 + time.Duration(time.Now().UnixNano()%int64(d/2+1))
}

// Package ratelimit is a per-key token bucket limiter with bounded memory,
// for rate limiting by client address or device identity.
package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Limiter allows rate events per second per key with bursts of up to burst
// events (the arguments of New). It tracks at most maxKeys keys: when a new key would exceed
// that, the least recently used key is forgotten, and a forgotten key
// starts again with a full bucket. Memory is therefore bounded by maxKeys
// entries whatever the number of distinct keys (a client cycling through
// more keys than that gets at most a full bucket per key, as if each were
// new). Safe for concurrent use.
//
// Each bucket is kept as the time at which it will be full again (the
// generic cell rate algorithm, equivalent to a token bucket), in integer
// nanoseconds, so refills and retry times are exact.
type Limiter struct {
	interval  time.Duration // time to earn one token
	tolerance time.Duration // interval * (burst - 1): how far ahead a bucket may run
	maxKeys   int
	unlimited bool

	mu      sync.Mutex
	now     func() time.Time
	buckets map[string]*bucket
	// head is a sentinel of the recency list: head.next is the most
	// recently used bucket, head.prev the least.
	head bucket
}

// bucket is one key's state and its place in the recency list. The bucket
// holds burst tokens at full; each event moves full one interval later,
// and an event is allowed while full is at most tolerance ahead of now.
type bucket struct {
	key        string
	full       time.Time
	prev, next *bucket
}

// maxDuration caps the interval and the tolerance well below the largest
// Duration, so adding them to a time cannot overflow a Duration.
const maxDuration = time.Duration(math.MaxInt64 / 4)

// New returns a Limiter that allows rate events per second per key with
// bursts of burst, tracking at most maxKeys keys. A rate that is not a
// positive finite number (rate <= 0) means unlimited: Allow always says
// yes and tracks nothing. A burst below 1 is taken as 1, and maxKeys below
// 1 as 1. Rates above one event per nanosecond are taken as that.
func New(rate float64, burst int, maxKeys int) *Limiter {
	l := &Limiter{maxKeys: max(maxKeys, 1), now: time.Now}
	if !(rate > 0) || math.IsInf(rate, 1) {
		l.unlimited = true
		return l
	}
	interval := math.Round(float64(time.Second) / rate)
	l.interval = time.Duration(min(max(interval, 1), float64(maxDuration)))
	tolerance := float64(l.interval) * float64(max(burst, 1)-1)
	l.tolerance = time.Duration(min(tolerance, float64(maxDuration)))
	l.buckets = make(map[string]*bucket, min(l.maxKeys, 1024))
	l.head.next, l.head.prev = &l.head, &l.head
	return l
}

// SetClock replaces time.Now as the limiter's clock (tests).
func (l *Limiter) SetClock(now func() time.Time) {
	l.mu.Lock()
	l.now = now
	l.mu.Unlock()
}

// Allow takes one token from key's bucket. When the bucket is empty it
// takes nothing and returns ok false with retryAfter, the time until the
// bucket holds a token again (if no other event for key takes it first).
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l.unlimited {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[key]
	switch {
	case b != nil:
		l.unlink(b)
	case len(l.buckets) >= l.maxKeys:
		// Reuse the least recently used bucket for the new key: no
		// allocation once the limiter is full.
		b = l.head.prev
		l.unlink(b)
		delete(l.buckets, b.key)
		*b = bucket{key: key, full: now}
		l.buckets[key] = b
	default:
		b = &bucket{key: key, full: now}
		l.buckets[key] = b
	}
	l.pushFront(b)

	full := b.full
	if full.Before(now) {
		full = now
	}
	if ahead := full.Sub(now); ahead > l.tolerance {
		return false, ahead - l.tolerance
	}
	b.full = full.Add(l.interval)
	return true, 0
}

// Len returns the number of keys the limiter tracks (at most maxKeys).
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

func (l *Limiter) unlink(b *bucket) {
	b.prev.next, b.next.prev = b.next, b.prev
	b.prev, b.next = nil, nil
}

func (l *Limiter) pushFront(b *bucket) {
	b.prev, b.next = &l.head, l.head.next
	l.head.next.prev = b
	l.head.next = b
}

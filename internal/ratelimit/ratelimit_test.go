package ratelimit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable clock safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newLimiter(rate float64, burst, maxKeys int) (*Limiter, *fakeClock) {
	clock := &fakeClock{now: t0}
	l := New(rate, burst, maxKeys)
	l.SetClock(clock.Now)
	return l, clock
}

// step is one Allow call after advancing the clock.
type step struct {
	advance   time.Duration
	key       string
	wantOK    bool
	wantRetry time.Duration
}

func runSteps(t *testing.T, l *Limiter, clock *fakeClock, steps []step) {
	t.Helper()
	for i, s := range steps {
		clock.Advance(s.advance)
		ok, retry := l.Allow(s.key)
		if ok != s.wantOK || retry != s.wantRetry {
			t.Errorf("step %d (+%v, %q): got %v %v, want %v %v", i, s.advance, s.key, ok, retry, s.wantOK, s.wantRetry)
		}
	}
}

func TestAllow(t *testing.T) {
	tests := []struct {
		name         string
		rate         float64
		burst, keys  int
		steps        []step
		wantLenAfter int
	}{
		{
			name: "burst then refill at rate", rate: 2, burst: 3, keys: 10,
			steps: []step{
				{0, "a", true, 0},
				{0, "a", true, 0},
				{0, "a", true, 0},
				{0, "a", false, 500 * time.Millisecond}, // one token every 500ms
				{200 * time.Millisecond, "a", false, 300 * time.Millisecond},
				{300 * time.Millisecond, "a", true, 0},
				{0, "a", false, 500 * time.Millisecond},
				// A long idle time refills to the burst, not beyond.
				{time.Hour, "a", true, 0},
				{0, "a", true, 0},
				{0, "a", true, 0},
				{0, "a", false, 500 * time.Millisecond},
			},
			wantLenAfter: 1,
		},
		{
			name: "partial refill", rate: 1, burst: 4, keys: 10,
			steps: []step{
				{0, "a", true, 0}, {0, "a", true, 0}, {0, "a", true, 0}, {0, "a", true, 0},
				{0, "a", false, time.Second},
				// Two seconds earn two tokens: two events, then empty.
				{2 * time.Second, "a", true, 0},
				{0, "a", true, 0},
				{0, "a", false, time.Second},
				// A refused event takes nothing.
				{999 * time.Millisecond, "a", false, time.Millisecond},
				{time.Millisecond, "a", true, 0},
			},
			wantLenAfter: 1,
		},
		{
			name: "keys are independent", rate: 1, burst: 1, keys: 10,
			steps: []step{
				{0, "a", true, 0},
				{0, "a", false, time.Second},
				{0, "b", true, 0},
				{0, "b", false, time.Second},
				{0, "", true, 0},
				{500 * time.Millisecond, "a", false, 500 * time.Millisecond},
				{0, "c", true, 0},
			},
			wantLenAfter: 4,
		},
		{
			name: "slow rate", rate: 1.0 / 60, burst: 1, keys: 10,
			steps: []step{
				{0, "a", true, 0},
				{0, "a", false, time.Minute},
				{59 * time.Second, "a", false, time.Second},
				{time.Second, "a", true, 0},
			},
			wantLenAfter: 1,
		},
		{
			name: "burst below one is one", rate: 10, burst: 0, keys: 10,
			steps: []step{
				{0, "a", true, 0},
				{0, "a", false, 100 * time.Millisecond},
			},
			wantLenAfter: 1,
		},
		{
			name: "clock going backwards refills nothing", rate: 1, burst: 2, keys: 10,
			steps: []step{
				{0, "a", true, 0},
				{0, "a", true, 0},
				{-time.Hour, "a", false, time.Hour + time.Second},
				{time.Hour, "a", false, time.Second},
				{time.Second, "a", true, 0},
			},
			wantLenAfter: 1,
		},
		{
			name: "unlimited", rate: 0, burst: 1, keys: 1,
			steps: []step{
				{0, "a", true, 0}, {0, "a", true, 0}, {0, "a", true, 0}, {0, "b", true, 0},
			},
			wantLenAfter: 0,
		},
		{
			name: "negative rate is unlimited", rate: -5, burst: 1, keys: 1,
			steps: []step{
				{0, "a", true, 0}, {0, "a", true, 0},
			},
			wantLenAfter: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, clock := newLimiter(tt.rate, tt.burst, tt.keys)
			runSteps(t, l, clock, tt.steps)
			if got := l.Len(); got != tt.wantLenAfter {
				t.Errorf("Len: got %d, want %d", got, tt.wantLenAfter)
			}
		})
	}
}

// TestRetryAfterIsEnough checks, over rates that do not divide a second
// evenly, that waiting retryAfter always finds a token.
func TestRetryAfterIsEnough(t *testing.T) {
	for _, rate := range []float64{3, 7, 0.3, 1e6, 123.456} {
		t.Run(fmt.Sprint(rate), func(t *testing.T) {
			l, clock := newLimiter(rate, 2, 10)
			for i := range 100 {
				ok, retry := l.Allow("k")
				if ok {
					continue
				}
				if retry <= 0 {
					t.Fatalf("event %d: refused with retryAfter %v", i, retry)
				}
				clock.Advance(retry)
				if ok, again := l.Allow("k"); !ok {
					t.Fatalf("event %d: refused again after waiting %v (retryAfter now %v)", i, retry, again)
				}
			}
		})
	}
}

func TestEvictionBoundsMemory(t *testing.T) {
	const maxKeys = 100
	l, _ := newLimiter(1, 1, maxKeys)
	for i := range 10 * maxKeys {
		if ok, _ := l.Allow(fmt.Sprint("key-", i)); !ok {
			t.Fatalf("new key %d refused", i)
		}
		if n := l.Len(); n > maxKeys {
			t.Fatalf("after %d keys: tracking %d, want at most %d", i+1, n, maxKeys)
		}
	}
	if n, m := l.Len(), len(l.buckets); n != maxKeys || m != maxKeys {
		t.Errorf("tracking %d keys (map %d), want %d", n, m, maxKeys)
	}
	// The list and the map agree.
	listed := 0
	for b := l.head.next; b != &l.head; b = b.next {
		if l.buckets[b.key] != b {
			t.Fatalf("listed bucket %q is not the map's", b.key)
		}
		listed++
	}
	if listed != maxKeys {
		t.Errorf("recency list holds %d buckets, want %d", listed, maxKeys)
	}

	// The last maxKeys keys are still limited; the earlier ones were
	// evicted. Touching key-999 (recent) keeps it limited; key-0 was
	// evicted and starts with a full bucket.
	if ok, _ := l.Allow("key-999"); ok {
		t.Error("recent key-999 allowed again within its interval")
	}
	if ok, _ := l.Allow("key-0"); !ok {
		t.Error("evicted key-0 refused: it should start with a full bucket")
	}
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	l, _ := newLimiter(1, 1, 3)
	for _, k := range []string{"a", "b", "c"} {
		l.Allow(k) // each bucket now empty
	}
	l.Allow("a") // a is now the most recently used; b the least
	l.Allow("d") // evicts b
	if _, tracked := l.buckets["b"]; tracked {
		t.Error("b still tracked; it was the least recently used")
	}
	for _, k := range []string{"a", "c", "d"} {
		if ok, _ := l.Allow(k); ok {
			t.Errorf("%s allowed: it should still be tracked with an empty bucket", k)
		}
	}
}

func TestMaxKeysBelowOne(t *testing.T) {
	l, _ := newLimiter(1, 1, 0)
	l.Allow("a")
	l.Allow("b")
	if n := l.Len(); n != 1 {
		t.Errorf("Len: got %d, want 1", n)
	}
}

// TestConcurrent hammers one limiter from many goroutines (run with
// -race): on a stopped clock every key allows exactly burst events.
func TestConcurrent(t *testing.T) {
	const (
		goroutines = 32
		perG       = 2000
		keys       = 50
		burst      = 5
	)
	l, _ := newLimiter(1, burst, keys)
	var allowed [keys]atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				k := (g + i) % keys
				if ok, _ := l.Allow(fmt.Sprint("k", k)); ok {
					allowed[k].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for k := range keys {
		if got := allowed[k].Load(); got != burst {
			t.Errorf("key %d: %d events allowed, want %d", k, got, burst)
		}
	}

	// With more keys than MaxKeys and a moving clock, it must only stay
	// consistent and bounded.
	l2 := New(1000, 10, 64)
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				l2.Allow(fmt.Sprint("k", (g*perG+i)%500))
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			l2.SetClock(time.Now)
		}
	})
	wg.Wait()
	if n := l2.Len(); n > 64 {
		t.Errorf("Len: got %d, want at most 64", n)
	}
}

// BenchmarkAllow measures Allow on a hot key set that fits in MaxKeys, on
// a key set ten times MaxKeys (every call evicts), and in parallel.
func BenchmarkAllow(b *testing.B) {
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("192.0.2.%d:%d", i%256, i)
	}
	b.Run("fits", func(b *testing.B) {
		l := New(100, 10, len(keys))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			l.Allow(keys[i%len(keys)])
		}
	})
	b.Run("evicting", func(b *testing.B) {
		l := New(100, 10, len(keys)/10)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			l.Allow(keys[i%len(keys)])
		}
	})
	b.Run("parallel", func(b *testing.B) {
		l := New(100, 10, len(keys))
		var next atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow(keys[int(next.Add(1))%len(keys)])
			}
		})
	})
	b.Run("unlimited", func(b *testing.B) {
		l := New(0, 0, 0)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			l.Allow(keys[i%len(keys)])
		}
	})
}

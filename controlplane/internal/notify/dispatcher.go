package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-pki/outpost/internal/tlspolicy"
)

// Defaults of Dispatcher fields.
const (
	DefaultMaxAttempts = 8
	DefaultBatchSize   = 500
	DefaultLease       = 60 * time.Second
	DefaultConcurrency = 8
	// maxBackoff caps the default backoff and a receiver's Retry-After.
	maxBackoff = time.Hour
	// sendTimeout bounds one webhook or chat request.
	sendTimeout = 10 * time.Second
	// maxFanoutRounds bounds the fan-out batches per Tick.
	maxFanoutRounds = 10
	// smtpTimeout bounds one email transaction (dial to QUIT).
	smtpTimeout = 30 * time.Second
)

// Log attribute keys, defined once.
const (
	logSubscription = "subscription_id"
	logEvent        = "event_id"
	logAttempt      = "attempt"
	logError        = "error"
	logChannel      = "channel"
)

// SMTPConfig is the mail server email subscriptions are sent through.
type SMTPConfig struct {
	// Addr is host:port of the submission server. Empty disables email:
	// email deliveries fail (and are retried) until it is set.
	Addr string
	// From is the envelope and header sender, a bare address.
	From string
	// Username and Password for AUTH PLAIN; no authentication when
	// Username is empty. net/smtp refuses to send them without TLS except
	// to localhost.
	Username string
	Password string
	// HeloName is the name sent in EHLO; default "localhost".
	HeloName string
	// TLS is used for STARTTLS when the server offers it; nil means the
	// system roots with ServerName taken from Addr.
	TLS *tls.Config
}

// Dispatcher fans events out to subscriptions and delivers them. Set the
// fields before the first Tick and do not change them afterwards; Tick
// and Run are safe to call from several goroutines and several processes
// on one database.
type Dispatcher struct {
	Pool *pgxpool.Pool
	// HTTP sends webhooks and chat messages. Default: a client that does
	// not follow redirects (a 3xx is a failed delivery). Each request is
	// bounded to 10 s whatever the client's own timeout.
	HTTP *http.Client
	SMTP SMTPConfig
	// Now is the clock (due times, the digest's day, the webhook
	// timestamp, the email Date); default time.Now.
	Now func() time.Time
	// MaxAttempts before a delivery is marked dead; default 8.
	MaxAttempts int
	// Backoff returns the wait after the attempt-th failed attempt (1 for
	// the first). Default: 2 s, 4 s, 8 s, ... capped at 1 h, with jitter.
	Backoff func(attempt int) time.Duration
	// BatchSize bounds the events fanned out and the deliveries sent per
	// Tick; default 500.
	BatchSize int
	// Lease is how long a claimed delivery stays invisible to other
	// workers while it is being sent; a crashed sender's deliveries are
	// retried after it. Default 60 s; keep it well above the send
	// timeouts (10 s HTTP, 30 s SMTP).
	Lease time.Duration
	// Concurrency is the number of deliveries sent in parallel; default 8.
	Concurrency int
	// DisableDigest turns the daily expiry digest off.
	DisableDigest bool
	Log           *slog.Logger

	initOnce sync.Once
	http     *http.Client

	mu           sync.Mutex
	lastStallLog time.Time
}

func (d *Dispatcher) init() {
	d.initOnce.Do(func() {
		d.http = d.HTTP
		if d.http == nil {
			d.http = &http.Client{
				Timeout:   sendTimeout,
				Transport: tlspolicy.HTTPTransport(&tls.Config{}),
				CheckRedirect: func(*http.Request, []*http.Request) error {
					return http.ErrUseLastResponse
				},
			}
		}
	})
}

func (d *Dispatcher) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Dispatcher) log() *slog.Logger {
	if d.Log != nil {
		return d.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (d *Dispatcher) maxAttempts() int {
	if d.MaxAttempts > 0 {
		return d.MaxAttempts
	}
	return DefaultMaxAttempts
}

func (d *Dispatcher) batchSize() int {
	if d.BatchSize > 0 {
		return d.BatchSize
	}
	return DefaultBatchSize
}

func (d *Dispatcher) lease() time.Duration {
	if d.Lease > 0 {
		return d.Lease
	}
	return DefaultLease
}

func (d *Dispatcher) concurrency() int {
	if d.Concurrency > 0 {
		return d.Concurrency
	}
	return DefaultConcurrency
}

func (d *Dispatcher) backoff(attempt int) time.Duration {
	if d.Backoff != nil {
		return d.Backoff(attempt)
	}
	return DefaultBackoff(attempt)
}

// DefaultBackoff is 2 s after the first failure, doubling up to 1 h, each
// value jittered into [d/2, d) so failed receivers are not hit in step.
func DefaultBackoff(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := maxBackoff
	if attempt <= 12 { // 2s << 11 = 68 min > 1 h
		d = min(2*time.Second<<(attempt-1), maxBackoff)
	}
	return d/2 + rand.N(d/2)
}

// Run calls Tick every interval until ctx ends. Errors are logged; the
// next tick tries again.
func (d *Dispatcher) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := d.Tick(ctx); err != nil && ctx.Err() == nil {
			d.log().Warn("notify: tick failed", logError, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick does one round: fan-out of new events, the daily digest when it
// is due, then delivery of due deliveries (at most BatchSize).
func (d *Dispatcher) Tick(ctx context.Context) error {
	d.init()
	if d.Pool == nil {
		return errors.New("notify: dispatcher has no pool")
	}
	var errs []error
	if !d.DisableDigest {
		if _, err := d.digest(ctx); err != nil {
			errs = append(errs, fmt.Errorf("expiry digest: %w", err))
		}
	}
	// A backlog (after downtime) is fanned out a few batches per tick.
	for range maxFanoutRounds {
		more, err := d.fanout(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("fan-out: %w", err))
			break
		}
		if !more {
			break
		}
	}
	if err := d.deliver(ctx); err != nil {
		errs = append(errs, fmt.Errorf("delivering: %w", err))
	}
	return errors.Join(errs...)
}

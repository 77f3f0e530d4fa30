package store

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"go.etcd.io/bbolt"
)

// Enrollment secrets are one-time HTTP Basic credentials, one per device,
// that a factory line mints in batches and the agent's EST server checks.
// A secret is stored as the SHA-256 of its password, never the password:
// the password is 128 random bits, so a fast hash is as good as a slow one
// against a stolen database. Each secret is in the secrets bucket under
// its username; while it is unused it also has an entry in the
// secrets_unused index, ordered by expiry, which SecretCounts walks.

// Errors of ConsumeSecret. ConsumeSecret returns them as they are, not
// wrapped, and they wrap nothing: the EST server answers 401 with their
// messages.
var (
	// ErrSecretUnknown: no secret for the username.
	ErrSecretUnknown = errors.New("unknown enrollment user")
	// ErrSecretWrong: the password does not match.
	ErrSecretWrong = errors.New("wrong enrollment secret")
	// ErrSecretUsed: the secret was consumed by another enrollment.
	ErrSecretUsed = errors.New("enrollment secret already used")
	// ErrSecretExpired: the secret's TTL has passed.
	ErrSecretExpired = errors.New("enrollment secret expired")
	// ErrSecretLabel: the secret is restricted to another EST label.
	ErrSecretLabel = errors.New("enrollment secret is not valid for this EST label")
)

// Limits of MintSecrets.
const (
	// MaxSecretUsernameLen bounds a secret's username (a device id).
	MaxSecretUsernameLen = 128
	// MaxSecretsPerMint bounds one MintSecrets call: the whole batch is
	// one transaction, held in memory until it commits.
	MaxSecretsPerMint = 100_000
)

// secretPasswordBytes is the entropy of a password: 128 bits.
const secretPasswordBytes = 16

// Credential is a minted secret, shown once: the store keeps only a hash
// of Password. Its LogValue leaves the password out.
type Credential struct {
	Username string
	Password string
}

// LogValue implements slog.LogValuer: a logged Credential shows its
// username only.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", c.Username))
}

// SecretInfo describes a stored secret; it never holds the password or its
// hash.
type SecretInfo struct {
	Username string
	// Label is the EST label the secret is restricted to; "" for any.
	Label     string
	CreatedAt time.Time
	// ExpiresAt is zero for a secret without expiry.
	ExpiresAt time.Time
	// UsedAt and UsedBy (the consuming enrollment's request key) are zero
	// while the secret is unused.
	UsedAt time.Time
	UsedBy string
}

// secret is a stored secret: its info and the SHA-256 of its password.
type secret struct {
	SecretInfo
	hash []byte
}

func (sec *secret) used() bool { return sec.UsedBy != "" }

// expired reports whether the secret's expiry has come at now; an expiry
// equal to now counts as passed.
func (sec *secret) expired(now time.Time) bool {
	return !sec.ExpiresAt.IsZero() && !now.Before(sec.ExpiresAt)
}

// secret value: format, label, created-at, expires-at, used-at (Unix ns,
// 0 for none), used-by, SHA-256 of the password.
func encodeSecret(sec secret) []byte {
	e := newEncoder(len(sec.Label) + len(sec.UsedBy) + len(sec.hash) + 40)
	e.str(sec.Label)
	e.timeNanos(sec.CreatedAt)
	e.timeNanos(sec.ExpiresAt)
	e.timeNanos(sec.UsedAt)
	e.str(sec.UsedBy)
	e.bytes(sec.hash)
	return e.b
}

func decodeSecret(username string, v []byte) (secret, error) {
	d := newDecoder("secret", v)
	sec := secret{SecretInfo: SecretInfo{Username: username}}
	sec.Label = d.str("label")
	sec.CreatedAt = d.timeNanos("created_at")
	sec.ExpiresAt = d.timeNanos("expires_at")
	sec.UsedAt = d.timeNanos("used_at")
	sec.UsedBy = d.str("used_by")
	sec.hash = d.bytes("hash")
	if err := d.done("secret"); err != nil {
		return secret{}, fmt.Errorf("store: secret %q: %w", username, err)
	}
	if len(sec.hash) != sha256.Size {
		return secret{}, fmt.Errorf("store: secret %q: %w: hash is %d bytes, want %d", username, ErrCorruptValue, len(sec.hash), sha256.Size)
	}
	return sec, nil
}

// expiryKey is the index position of an expiry (a new slice): timeKey,
// or all ones for none, which sorts after every real expiry.
func expiryKey(t time.Time) []byte {
	if t.IsZero() {
		return u64key(math.MaxUint64)
	}
	return timeKey(t)
}

// unusedKey is the secrets_unused entry of an unused secret.
func unusedKey(expires time.Time, username string) []byte {
	return append(expiryKey(expires), username...)
}

// validSecretUsername reports whether u is 1 to MaxSecretUsernameLen bytes
// of printable ASCII without ':' (which HTTP Basic uses as separator).
func validSecretUsername(u string) bool {
	if u == "" || len(u) > MaxSecretUsernameLen {
		return false
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c < 0x20 || c > 0x7e || c == ':' {
			return false
		}
	}
	return true
}

// maxExpiry is the last time the store can represent (Unix nanoseconds in
// an int64).
var maxExpiry = time.Unix(0, math.MaxInt64)

// MintSecrets creates one secret per username (usernames are device ids: 1
// to MaxSecretUsernameLen bytes of printable ASCII without ':'), valid for
// ttl from now (0: no expiry), restricted to the EST label label ("": any
// label), and returns the credentials in the order of usernames. The
// passwords are 128 random bits, base64url without padding; the store
// keeps their SHA-256 only, so this is the one time they can be read.
//
// A username that already has an unused, unexpired secret fails the call
// with ErrInvalidArgument unless replace is true, in which case the new
// secret replaces the old one; a used or expired secret is always
// replaced. A username twice in the list is ErrInvalidArgument. The batch
// is one transaction: either every secret is stored or none is. At most
// MaxSecretsPerMint usernames per call; none returns nil.
func (s *Store) MintSecrets(usernames []string, label string, ttl time.Duration, replace bool) ([]Credential, error) {
	switch {
	case len(usernames) > MaxSecretsPerMint:
		return nil, fmt.Errorf("%w: %d secrets in one batch, limit %d", ErrInvalidArgument, len(usernames), MaxSecretsPerMint)
	case len(label) > MaxRecordIDLen:
		return nil, fmt.Errorf("%w: EST label is %d bytes, limit %d", ErrInvalidArgument, len(label), MaxRecordIDLen)
	case ttl < 0:
		return nil, fmt.Errorf("%w: negative secret ttl %s", ErrInvalidArgument, ttl)
	}
	if len(usernames) == 0 {
		return nil, nil
	}
	seen := make(map[string]struct{}, len(usernames))
	for i, u := range usernames {
		if !validSecretUsername(u) {
			return nil, fmt.Errorf("%w: secret username %d %q must be 1 to %d bytes of printable ASCII without ':'", ErrInvalidArgument, i, u, MaxSecretUsernameLen)
		}
		if _, dup := seen[u]; dup {
			return nil, fmt.Errorf("%w: secret username %q appears twice", ErrInvalidArgument, u)
		}
		seen[u] = struct{}{}
	}
	now := s.now()
	var expires time.Time
	if ttl > 0 {
		if expires = now.Add(ttl); !expires.Before(maxExpiry) {
			return nil, fmt.Errorf("%w: secret ttl %s ends past %d", ErrInvalidArgument, ttl, maxExpiry.Year())
		}
	}

	creds := make([]Credential, len(usernames))
	vals := make([][]byte, len(usernames))
	random := make([]byte, secretPasswordBytes*len(usernames))
	rand.Read(random) // never fails (crypto/rand)
	for i, u := range usernames {
		pw := base64.RawURLEncoding.EncodeToString(random[i*secretPasswordBytes : (i+1)*secretPasswordBytes])
		hash := sha256.Sum256([]byte(pw))
		creds[i] = Credential{Username: u, Password: pw}
		vals[i] = encodeSecret(secret{SecretInfo: SecretInfo{Username: u, Label: label, CreatedAt: now, ExpiresAt: expires}, hash: hash[:]})
	}
	clear(random)

	err := s.update(func(tx *bbolt.Tx) error {
		b, idx := tx.Bucket(bucketSecrets), tx.Bucket(bucketSecretsUnused)
		for i, u := range usernames {
			if old := b.Get([]byte(u)); old != nil {
				prev, err := decodeSecret(u, old)
				if err != nil {
					return err
				}
				if !prev.used() {
					if !replace && !prev.expired(now) {
						return fmt.Errorf("%w: %q already has an unused secret (replace it to mint another)", ErrInvalidArgument, u)
					}
					if err := idx.Delete(unusedKey(prev.ExpiresAt, u)); err != nil {
						return err
					}
				}
			}
			if err := b.Put([]byte(u), vals[i]); err != nil {
				return err
			}
			if err := idx.Put(unusedKey(expires, u), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: mint secrets: %w", err)
	}
	return creds, nil
}

// consumeResult is what checking a secret found.
type consumeResult int

const (
	consumeRefused consumeResult = iota // err says why
	consumeDone                         // already used by the same request: nothing to write
	consumeNow                          // valid and unused: mark it used
)

// checkSecret decides ConsumeSecret for the stored value v (nil: none).
// The password is compared before anything else is revealed, in constant
// time, through its hash.
func checkSecret(username string, v []byte, hash *[sha256.Size]byte, label, usedBy string, now time.Time) (secret, consumeResult, error) {
	if v == nil {
		return secret{}, consumeRefused, ErrSecretUnknown
	}
	sec, err := decodeSecret(username, v)
	if err != nil {
		return secret{}, consumeRefused, err
	}
	switch {
	case subtle.ConstantTimeCompare(sec.hash, hash[:]) != 1:
		return sec, consumeRefused, ErrSecretWrong
	case sec.Label != "" && sec.Label != label:
		return sec, consumeRefused, ErrSecretLabel
	case sec.UsedBy == usedBy:
		// A retry of the enrollment that consumed it, even after the
		// expiry: the secret was valid when it was used.
		return sec, consumeDone, nil
	case sec.used():
		return sec, consumeRefused, ErrSecretUsed
	case sec.expired(now):
		return sec, consumeRefused, ErrSecretExpired
	}
	return sec, consumeNow, nil
}

// ConsumeSecret checks username and password for an enrollment under the
// EST label label and marks the secret used by usedBy (the enrollment's
// request key), checking and marking in one transaction, so of concurrent
// callers with different usedBy exactly one succeeds. The password is
// compared in constant time. Consuming again with the same usedBy succeeds
// (a device retrying the same queued request), also once the secret has
// expired; with another usedBy it fails with ErrSecretUsed.
//
// A refusal is one of ErrSecretUnknown (also for a username that cannot be
// one), ErrSecretWrong, ErrSecretLabel, ErrSecretUsed and
// ErrSecretExpired, returned unwrapped; the password is checked first, so
// only its holder learns which of the later three applies. An empty or
// oversized usedBy is ErrInvalidArgument. A refused or repeated attempt
// writes nothing, so failing guesses cost no disk writes. A successful
// first use is durable when ConsumeSecret returns; like Enqueue, it shares
// its commit with concurrent callers, so it waits up to
// Options.BatchDelay for them.
func (s *Store) ConsumeSecret(username, password, label, usedBy string) error {
	if usedBy == "" || len(usedBy) > MaxRecordIDLen {
		return fmt.Errorf("%w: enrollment request key must be 1 to %d bytes", ErrInvalidArgument, MaxRecordIDLen)
	}
	if !validSecretUsername(username) {
		return ErrSecretUnknown
	}
	hash := sha256.Sum256([]byte(password))
	key := []byte(username)

	// Check read-only first: refusals and retries need no write
	// transaction (which would serialise with every writer and fsync).
	var result consumeResult
	var refusal error
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		_, result, err = checkSecret(username, tx.Bucket(bucketSecrets).Get(key), &hash, label, usedBy, s.now())
		if result == consumeRefused && isRefusal(err) {
			refusal = err
			return nil
		}
		return err
	})
	switch {
	case err != nil:
		return fmt.Errorf("store: consume secret %q: %w", username, err)
	case refusal != nil:
		return refusal
	case result == consumeDone:
		return nil
	}

	// Check again and mark, in one transaction: another caller may have
	// consumed it since. Concurrent consumers share the commit (DB.Batch),
	// which may run this function more than once: it starts afresh each
	// time and reports refusals through refusal, not as errors, so one
	// refused caller does not make the batch roll back.
	err = s.batch(func(tx *bbolt.Tx) error {
		refusal = nil
		b := tx.Bucket(bucketSecrets)
		sec, result, err := checkSecret(username, b.Get(key), &hash, label, usedBy, s.now())
		switch {
		case result == consumeRefused && isRefusal(err):
			refusal = err
			return nil
		case err != nil || result == consumeDone:
			return err
		}
		if err := tx.Bucket(bucketSecretsUnused).Delete(unusedKey(sec.ExpiresAt, username)); err != nil {
			return err
		}
		sec.UsedAt, sec.UsedBy = s.now(), usedBy
		return b.Put(key, encodeSecret(sec))
	})
	if err != nil {
		return fmt.Errorf("store: consume secret %q: %w", username, err)
	}
	return refusal
}

func isRefusal(err error) bool {
	switch err {
	case ErrSecretUnknown, ErrSecretWrong, ErrSecretUsed, ErrSecretExpired, ErrSecretLabel:
		return true
	}
	return false
}

// ReleaseSecret makes a secret that usedBy consumed unused again: the
// enrollment failed for a reason that is not the device's fault, so the
// device may retry with the same credential. It keeps the secret's expiry.
// It does nothing when the secret is not used by usedBy, or does not
// exist.
func (s *Store) ReleaseSecret(username, usedBy string) error {
	if usedBy == "" {
		return nil // a used secret always has a used-by
	}
	key := []byte(username)
	err := s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketSecrets)
		v := b.Get(key)
		if v == nil {
			return nil
		}
		sec, err := decodeSecret(username, v)
		if err != nil {
			return err
		}
		if sec.UsedBy != usedBy {
			return nil
		}
		sec.UsedAt, sec.UsedBy = time.Time{}, ""
		if err := b.Put(key, encodeSecret(sec)); err != nil {
			return err
		}
		return tx.Bucket(bucketSecretsUnused).Put(unusedKey(sec.ExpiresAt, username), nil)
	})
	if err != nil {
		return fmt.Errorf("store: release secret %q: %w", username, err)
	}
	return nil
}

// Secret returns the info of username's secret, or ErrNotFound.
func (s *Store) Secret(username string) (SecretInfo, error) {
	var info SecretInfo
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketSecrets).Get([]byte(username))
		if v == nil {
			return ErrNotFound
		}
		sec, err := decodeSecret(username, v)
		info = sec.SecretInfo
		return err
	})
	if err != nil {
		return SecretInfo{}, fmt.Errorf("store: secret %q: %w", username, err)
	}
	return info, nil
}

// SecretCounts reports the stored secrets in three disjoint groups: unused
// and unexpired (still usable), used (whether or not expired since), and
// unused but expired, by the store's clock. Its cost is a walk of the
// pages of the two secret buckets plus one index entry per expired secret;
// it decodes no value.
func (s *Store) SecretCounts() (unused, used, expired int, err error) {
	nowKey := timeKey(s.now())
	err = s.view(func(tx *bbolt.Tx) error {
		b, idx := tx.Bucket(bucketSecrets), tx.Bucket(bucketSecretsUnused)
		total, allUnused := b.Stats().KeyN, idx.Stats().KeyN
		c := idx.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) <= 8 {
				return fmt.Errorf("%w: unused secret index key is %d bytes", ErrCorruptValue, len(k))
			}
			if bytes.Compare(k[:8], nowKey) > 0 {
				break
			}
			expired++
		}
		if allUnused > total {
			return fmt.Errorf("%w: %d unused secret index entries for %d secrets", ErrCorruptValue, allUnused, total)
		}
		unused, used = allUnused-expired, total-allUnused
		return nil
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("store: count secrets: %w", err)
	}
	return unused, used, expired, nil
}

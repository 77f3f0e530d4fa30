package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func mustMint(t testing.TB, s *Store, label string, ttl time.Duration, replace bool, usernames ...string) []Credential {
	t.Helper()
	creds, err := s.MintSecrets(usernames, label, ttl, replace)
	if err != nil {
		t.Fatalf("MintSecrets(%v): %v", usernames, err)
	}
	if len(creds) != len(usernames) {
		t.Fatalf("MintSecrets(%v): %d credentials", usernames, len(creds))
	}
	return creds
}

func mustSecret(t testing.TB, s *Store, username string) SecretInfo {
	t.Helper()
	info, err := s.Secret(username)
	if err != nil {
		t.Fatalf("Secret(%s): %v", username, err)
	}
	return info
}

type counts struct{ unused, used, expired int }

func mustCounts(t testing.TB, s *Store) counts {
	t.Helper()
	u, d, e, err := s.SecretCounts()
	if err != nil {
		t.Fatalf("SecretCounts: %v", err)
	}
	return counts{u, d, e}
}

func TestMintAndConsumeSecret(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))
	creds := mustMint(t, s, "line-1", time.Hour, false, "dev-1", "dev-2", "dev-3")
	for i, c := range creds {
		if want := fmt.Sprint("dev-", i+1); c.Username != want {
			t.Errorf("credential %d: username %q, want %q (input order)", i, c.Username, want)
		}
	}

	want := SecretInfo{Username: "dev-1", Label: "line-1", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if got := mustSecret(t, s, "dev-1"); !reflect.DeepEqual(got, want) {
		t.Errorf("Secret(dev-1): got %+v, want %+v", got, want)
	}
	if got, want := mustCounts(t, s), (counts{unused: 3}); got != want {
		t.Errorf("counts: got %+v, want %+v", got, want)
	}

	clock.Advance(time.Minute)
	if err := s.ConsumeSecret("dev-1", creds[0].Password, "line-1", "req-1"); err != nil {
		t.Fatalf("ConsumeSecret: %v", err)
	}
	want.UsedAt, want.UsedBy = t0.Add(time.Minute), "req-1"
	if got := mustSecret(t, s, "dev-1"); !reflect.DeepEqual(got, want) {
		t.Errorf("Secret(dev-1) after use: got %+v, want %+v", got, want)
	}
	if got, want := mustCounts(t, s), (counts{unused: 2, used: 1}); got != want {
		t.Errorf("counts: got %+v, want %+v", got, want)
	}
	// Another device's password does not open dev-2's secret.
	if err := s.ConsumeSecret("dev-2", creds[2].Password, "line-1", "req-2"); err != ErrSecretWrong {
		t.Errorf("dev-2 with dev-3's password: got %v, want ErrSecretWrong", err)
	}
	if _, err := s.Secret("dev-9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Secret(dev-9): got %v, want ErrNotFound", err)
	}
}

func TestPasswordFormat(t *testing.T) {
	s, _ := openTemp(t, Options{})
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprint("dev-", i)
	}
	seen := map[string]bool{}
	for _, c := range mustMint(t, s, "", 0, false, names...) {
		raw, err := base64.RawURLEncoding.Strict().DecodeString(c.Password)
		if err != nil || len(raw) != 16 || len(c.Password) != 22 {
			t.Fatalf("password %q: %d bytes (err %v), want 128 bits in 22 base64url characters", c.Password, len(raw), err)
		}
		if seen[c.Password] {
			t.Fatalf("password %q minted twice", c.Password)
		}
		seen[c.Password] = true
	}
}

func TestConsumeSecretRefusals(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))
	pw := map[string]string{}
	mint := func(label string, ttl time.Duration, names ...string) {
		for _, c := range mustMint(t, s, label, ttl, false, names...) {
			pw[c.Username] = c.Password
		}
	}
	mint("", 0, "any-label", "used", "no-expiry")
	mint("line-1", 0, "line-1-only")
	mint("", time.Hour, "expiring")
	if err := s.ConsumeSecret("used", pw["used"], "", "req-first"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour) // "expiring" expires exactly now

	tests := []struct {
		name                      string
		user, pass, label, usedBy string
		want                      error
	}{
		{"unknown user", "nobody", "x", "", "r", ErrSecretUnknown},
		{"empty user", "", "x", "", "r", ErrSecretUnknown},
		{"user with colon", "a:b", "x", "", "r", ErrSecretUnknown},
		{"user too long", strings.Repeat("d", MaxSecretUsernameLen+1), "x", "", "r", ErrSecretUnknown},
		{"wrong password", "any-label", pw["used"], "", "r", ErrSecretWrong},
		{"empty password", "any-label", "", "", "r", ErrSecretWrong},
		{"password with a character more", "any-label", pw["any-label"] + "A", "", "r", ErrSecretWrong},
		{"wrong password on a used secret", "used", "guess", "", "r", ErrSecretWrong},
		{"wrong password on an expired secret", "expiring", "guess", "", "r", ErrSecretWrong},
		{"wrong password on a label mismatch", "line-1-only", "guess", "line-2", "r", ErrSecretWrong},
		{"used by another request", "used", pw["used"], "", "req-other", ErrSecretUsed},
		{"expired at its expiry", "expiring", pw["expiring"], "", "r", ErrSecretExpired},
		{"label mismatch", "line-1-only", pw["line-1-only"], "line-2", "r", ErrSecretLabel},
		{"label required, none given", "line-1-only", pw["line-1-only"], "", "r", ErrSecretLabel},
		{"empty usedBy", "no-expiry", pw["no-expiry"], "", "", ErrInvalidArgument},
		{"oversized usedBy", "no-expiry", pw["no-expiry"], "", strings.Repeat("r", MaxRecordIDLen+1), ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.ConsumeSecret(tt.user, tt.pass, tt.label, tt.usedBy)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if tt.want != ErrInvalidArgument && err != tt.want {
				t.Errorf("got %#v, want the bare sentinel %v (the EST server shows its message)", err, tt.want)
			}
		})
	}
	// None of the refusals changed anything.
	if got, want := mustCounts(t, s), (counts{unused: 3, used: 1, expired: 1}); got != want {
		t.Errorf("counts after refusals: got %+v, want %+v", got, want)
	}
	if info := mustSecret(t, s, "used"); info.UsedBy != "req-first" {
		t.Errorf("used secret: used by %q, want req-first", info.UsedBy)
	}
	if info := mustSecret(t, s, "no-expiry"); info.UsedBy != "" || !info.UsedAt.IsZero() {
		t.Errorf("no-expiry secret marked used by a refused call: %+v", info)
	}

	// The messages are what the EST server shows.
	for err, msg := range map[error]string{
		ErrSecretUnknown: "unknown enrollment user",
		ErrSecretWrong:   "wrong enrollment secret",
		ErrSecretUsed:    "enrollment secret already used",
		ErrSecretExpired: "enrollment secret expired",
		ErrSecretLabel:   "enrollment secret is not valid for this EST label",
	} {
		if err.Error() != msg || errors.Unwrap(err) != nil {
			t.Errorf("error %q: want message %q wrapping nothing", err, msg)
		}
	}
}

func TestConsumeSecretRetrySameUsedBy(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))
	c := mustMint(t, s, "", time.Hour, false, "dev")[0]
	if err := s.ConsumeSecret("dev", c.Password, "", "req-1"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if err := s.ConsumeSecret("dev", c.Password, "", "req-1"); err != nil {
		t.Errorf("retry with the same usedBy: %v", err)
	}
	if info := mustSecret(t, s, "dev"); !info.UsedAt.Equal(t0) {
		t.Errorf("retry moved UsedAt to %v, want the first use %v", info.UsedAt, t0)
	}
	// Past the expiry the same request still gets in: the secret was
	// valid when it consumed it.
	clock.Advance(2 * time.Hour)
	if err := s.ConsumeSecret("dev", c.Password, "", "req-1"); err != nil {
		t.Errorf("retry with the same usedBy after expiry: %v", err)
	}
	if err := s.ConsumeSecret("dev", c.Password, "", "req-2"); err != ErrSecretUsed {
		t.Errorf("other usedBy: got %v, want ErrSecretUsed", err)
	}
	// The retry needs the password too.
	if err := s.ConsumeSecret("dev", "guess", "", "req-1"); err != ErrSecretWrong {
		t.Errorf("retry with a wrong password: got %v, want ErrSecretWrong", err)
	}
}

func TestConsumeSecretExpiry(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))
	creds := mustMint(t, s, "", 10*time.Minute, false, "early", "late")
	forever := mustMint(t, s, "", 0, false, "forever")[0]

	clock.Advance(10*time.Minute - time.Nanosecond)
	if err := s.ConsumeSecret("early", creds[0].Password, "", "r1"); err != nil {
		t.Errorf("1ns before expiry: %v", err)
	}
	clock.Advance(time.Nanosecond)
	if err := s.ConsumeSecret("late", creds[1].Password, "", "r2"); err != ErrSecretExpired {
		t.Errorf("at expiry: got %v, want ErrSecretExpired", err)
	}
	clock.Advance(100 * 365 * 24 * time.Hour)
	if err := s.ConsumeSecret("forever", forever.Password, "", "r3"); err != nil {
		t.Errorf("secret without expiry after 100 years: %v", err)
	}
}

func TestConsumeSecretLabel(t *testing.T) {
	s, _ := openTemp(t, Options{})
	anyLabel := mustMint(t, s, "", 0, false, "any-1", "any-2")
	scoped := mustMint(t, s, "line-1", 0, false, "scoped-1", "scoped-2")
	tests := []struct {
		user, pass, label string
		want              error
	}{
		{"any-1", anyLabel[0].Password, "", nil},
		{"any-2", anyLabel[1].Password, "whatever", nil},
		{"scoped-1", scoped[0].Password, "line-1", nil},
		{"scoped-2", scoped[1].Password, "line-10", ErrSecretLabel},
		{"scoped-2", scoped[1].Password, "LINE-1", ErrSecretLabel},
		{"scoped-2", scoped[1].Password, "", ErrSecretLabel},
	}
	for _, tt := range tests {
		if err := s.ConsumeSecret(tt.user, tt.pass, tt.label, "req-"+tt.user); err != tt.want {
			t.Errorf("ConsumeSecret(%s, label %q): got %v, want %v", tt.user, tt.label, err, tt.want)
		}
	}
}

// TestConsumeSecretSingleUseConcurrent races 50 consumers with different
// request keys for one secret: exactly one wins, the others see
// ErrSecretUsed.
func TestConsumeSecretSingleUseConcurrent(t *testing.T) {
	s, _ := openTemp(t, Options{})
	const consumers = 50
	for round := range 3 {
		user := fmt.Sprint("dev-", round)
		c := mustMint(t, s, "", 0, false, user)[0]
		errs := make([]error, consumers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range consumers {
			wg.Go(func() {
				<-start
				errs[i] = s.ConsumeSecret(user, c.Password, "", fmt.Sprint("req-", i))
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: req-%d and req-%d both consumed the secret", round, winner, i)
			case err == nil:
				winner = i
			case err != ErrSecretUsed:
				t.Errorf("round %d: req-%d: got %v, want nil or ErrSecretUsed", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody consumed the secret", round)
		}
		if info := mustSecret(t, s, user); info.UsedBy != fmt.Sprint("req-", winner) {
			t.Errorf("round %d: used by %q, want req-%d", round, info.UsedBy, winner)
		}
	}
	if got, want := mustCounts(t, s), (counts{used: 3}); got != want {
		t.Errorf("counts: got %+v, want %+v", got, want)
	}
}

func TestMintSecretsReplace(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))
	old := mustMint(t, s, "", time.Hour, false, "dev")[0]

	// An unused, unexpired secret is not replaced by accident.
	if _, err := s.MintSecrets([]string{"dev"}, "", time.Hour, false); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), `"dev"`) {
		t.Fatalf("mint over an unused secret: got %v, want ErrInvalidArgument naming dev", err)
	}
	if err := s.ConsumeSecret("dev", old.Password, "", "probe"); err != nil {
		t.Fatalf("old secret after a refused mint: %v", err)
	}
	if err := s.ReleaseSecret("dev", "probe"); err != nil {
		t.Fatal(err)
	}

	// replace: the old password stops working, the new one works.
	clock.Advance(time.Minute)
	repl := mustMint(t, s, "line-2", 2*time.Hour, true, "dev")[0]
	if repl.Password == old.Password {
		t.Fatal("replacement has the old password")
	}
	want := SecretInfo{Username: "dev", Label: "line-2", CreatedAt: t0.Add(time.Minute), ExpiresAt: t0.Add(time.Minute + 2*time.Hour)}
	if got := mustSecret(t, s, "dev"); !reflect.DeepEqual(got, want) {
		t.Errorf("replaced secret: got %+v, want %+v", got, want)
	}
	if got, want := mustCounts(t, s), (counts{unused: 1}); got != want {
		t.Errorf("counts after replace: got %+v, want %+v (old index entry left behind?)", got, want)
	}
	if err := s.ConsumeSecret("dev", old.Password, "line-2", "r"); err != ErrSecretWrong {
		t.Errorf("old password after replace: got %v, want ErrSecretWrong", err)
	}
	if err := s.ConsumeSecret("dev", repl.Password, "line-2", "r"); err != nil {
		t.Errorf("new password: %v", err)
	}

	// A used secret is replaced without replace (re-provisioning).
	again := mustMint(t, s, "", 0, false, "dev")[0]
	if info := mustSecret(t, s, "dev"); info.UsedBy != "" {
		t.Errorf("re-minted secret still used: %+v", info)
	}
	// So is an expired one.
	mustMint(t, s, "", time.Minute, false, "short")
	clock.Advance(time.Minute)
	mustMint(t, s, "", 0, false, "short")
	if got, want := mustCounts(t, s), (counts{unused: 2}); got != want {
		t.Errorf("counts after re-minting used and expired: got %+v, want %+v", got, want)
	}
	if err := s.ConsumeSecret("dev", again.Password, "", "r2"); err != nil {
		t.Errorf("re-minted secret: %v", err)
	}
}

func TestMintSecretsAllOrNothing(t *testing.T) {
	s, _ := openTemp(t, Options{})
	existing := mustMint(t, s, "", 0, false, "taken")[0]

	batches := map[string][]string{
		"bad username last":        {"ok-1", "ok-2", "bad:name"},
		"bad username first":       {"", "ok-1", "ok-2"},
		"duplicate in the batch":   {"ok-1", "ok-2", "ok-1"},
		"conflict with stored one": {"ok-1", "ok-2", "taken"}, // fails inside the transaction
	}
	for name, batch := range batches {
		t.Run(name, func(t *testing.T) {
			creds, err := s.MintSecrets(batch, "", 0, false)
			if !errors.Is(err, ErrInvalidArgument) || creds != nil {
				t.Fatalf("got %d credentials, %v; want none and ErrInvalidArgument", len(creds), err)
			}
			for _, u := range []string{"ok-1", "ok-2"} {
				if _, err := s.Secret(u); !errors.Is(err, ErrNotFound) {
					t.Errorf("Secret(%s) after a failed batch: got %v, want ErrNotFound", u, err)
				}
			}
			if got, want := mustCounts(t, s), (counts{unused: 1}); got != want {
				t.Errorf("counts: got %+v, want %+v", got, want)
			}
		})
	}
	if err := s.ConsumeSecret("taken", existing.Password, "", "r"); err != nil {
		t.Errorf("existing secret after failed batches: %v", err)
	}
}

func TestMintSecretsValidation(t *testing.T) {
	s, _ := openTemp(t, Options{})
	tooMany := make([]string, MaxSecretsPerMint+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprint("d", i)
	}
	tests := []struct {
		name  string
		users []string
		label string
		ttl   time.Duration
		ok    bool
	}{
		{"longest username", []string{strings.Repeat("u", MaxSecretUsernameLen)}, "", 0, true},
		{"printable ASCII with space", []string{"Serial No. 42 ~!@#$%^&*()_+{}|\"<>?"}, "", 0, true},
		{"longest label", []string{"l"}, strings.Repeat("l", MaxRecordIDLen), 0, true},
		{"empty username", []string{""}, "", 0, false},
		{"username too long", []string{strings.Repeat("u", MaxSecretUsernameLen+1)}, "", 0, false},
		{"colon", []string{"dev:1"}, "", 0, false},
		{"control character", []string{"dev\n1"}, "", 0, false},
		{"DEL", []string{"dev\x7f"}, "", 0, false},
		{"non-ASCII", []string{"gerät"}, "", 0, false},
		{"label too long", []string{"x"}, strings.Repeat("l", MaxRecordIDLen+1), 0, false},
		{"negative ttl", []string{"x"}, "", -time.Second, false},
		{"ttl past 2262", []string{"x"}, "", 250 * 365 * 24 * time.Hour, false},
		{"too many", tooMany, "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds, err := s.MintSecrets(tt.users, tt.label, tt.ttl, true)
			if tt.ok {
				if err != nil || len(creds) != len(tt.users) {
					t.Errorf("got %d credentials, %v; want %d", len(creds), err, len(tt.users))
				}
				return
			}
			if !errors.Is(err, ErrInvalidArgument) || creds != nil {
				t.Errorf("got %d credentials, %v; want ErrInvalidArgument", len(creds), err)
			}
		})
	}
	if creds, err := s.MintSecrets(nil, "", 0, false); err != nil || len(creds) != 0 {
		t.Errorf("empty batch: got %v %v, want none and nil", creds, err)
	}
}

func TestMintSecretsLargestBatch(t *testing.T) {
	s, _ := openTemp(t, Options{})
	users := make([]string, MaxSecretsPerMint)
	for i := range users {
		users[i] = fmt.Sprintf("factory-7-%06d", i)
	}
	creds := mustMint(t, s, "", time.Hour, false, users...)
	if got, want := mustCounts(t, s), (counts{unused: MaxSecretsPerMint}); got != want {
		t.Errorf("counts: got %+v, want %+v", got, want)
	}
	last := len(creds) - 1
	if err := s.ConsumeSecret(creds[last].Username, creds[last].Password, "", "r"); err != nil {
		t.Errorf("last secret of the batch: %v", err)
	}
}

// TestSecretPasswordNeverStored scans the raw database file for minted
// passwords: only their hashes may be there.
func TestSecretPasswordNeverStored(t *testing.T) {
	s, path := openTemp(t, Options{})
	users := make([]string, 200)
	for i := range users {
		users[i] = fmt.Sprint("device-", i)
	}
	creds := mustMint(t, s, "line-1", time.Hour, false, users...)
	// Rewrite some values too: consume, release, replace.
	if err := s.ConsumeSecret(creds[0].Username, creds[0].Password, "line-1", "r0"); err != nil {
		t.Fatal(err)
	}
	if err := s.ConsumeSecret(creds[1].Username, creds[1].Password, "line-1", "r1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseSecret(creds[1].Username, "r1"); err != nil {
		t.Fatal(err)
	}
	creds = append(creds, mustMint(t, s, "", 0, true, creds[2].Username)...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range creds {
		if bytes.Contains(data, []byte(c.Password)) {
			t.Fatalf("password of %s found in the database file", c.Username)
		}
		// The scan does see what is stored: the username and the hash.
		hash := sha256.Sum256([]byte(c.Password))
		if !bytes.Contains(data, []byte(c.Username)) || !bytes.Contains(data, hash[:]) {
			t.Fatalf("username or password hash of %s not found in the file: the scan proves nothing", c.Username)
		}
	}
}

func TestReleaseSecret(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))
	c := mustMint(t, s, "", time.Hour, false, "dev")[0]
	if err := s.ConsumeSecret("dev", c.Password, "", "req-1"); err != nil {
		t.Fatal(err)
	}
	// Not used by req-2: nothing happens.
	if err := s.ReleaseSecret("dev", "req-2"); err != nil {
		t.Fatal(err)
	}
	if info := mustSecret(t, s, "dev"); info.UsedBy != "req-1" {
		t.Errorf("release by another request freed it: %+v", info)
	}
	for _, u := range []string{"nobody", ""} {
		if err := s.ReleaseSecret(u, "req-1"); err != nil {
			t.Errorf("ReleaseSecret(%q): got %v, want nil", u, err)
		}
	}
	if err := s.ReleaseSecret("dev", ""); err != nil {
		t.Errorf("ReleaseSecret with empty usedBy: %v", err)
	}

	if err := s.ReleaseSecret("dev", "req-1"); err != nil {
		t.Fatal(err)
	}
	want := SecretInfo{Username: "dev", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if got := mustSecret(t, s, "dev"); !reflect.DeepEqual(got, want) {
		t.Errorf("after release: got %+v, want %+v", got, want)
	}
	if got, want := mustCounts(t, s), (counts{unused: 1}); got != want {
		t.Errorf("counts after release: got %+v, want %+v", got, want)
	}
	if err := s.ReleaseSecret("dev", "req-1"); err != nil {
		t.Errorf("second release: %v", err)
	}
	// Another request may now use it.
	if err := s.ConsumeSecret("dev", c.Password, "", "req-2"); err != nil {
		t.Errorf("consume after release: %v", err)
	}

	// Released after its expiry, it counts as expired and cannot be used.
	clock.Advance(2 * time.Hour)
	if err := s.ReleaseSecret("dev", "req-2"); err != nil {
		t.Fatal(err)
	}
	if got, want := mustCounts(t, s), (counts{expired: 1}); got != want {
		t.Errorf("counts after releasing an expired secret: got %+v, want %+v", got, want)
	}
	if err := s.ConsumeSecret("dev", c.Password, "", "req-2"); err != ErrSecretExpired {
		t.Errorf("consume of a released, expired secret: got %v, want ErrSecretExpired", err)
	}
}

func TestSecretCounts(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))
	if got, want := mustCounts(t, s), (counts{}); got != want {
		t.Errorf("empty store: got %+v, want %+v", got, want)
	}
	mustMint(t, s, "", 0, false, "forever-1", "forever-2")
	hour := mustMint(t, s, "", time.Hour, false, "hour-1", "hour-2", "hour-3")
	mustMint(t, s, "", 2*time.Hour, false, "two-hours")
	if err := s.ConsumeSecret("hour-1", hour[0].Password, "", "r"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance time.Duration
		want    counts
	}{
		{0, counts{unused: 5, used: 1}},
		{time.Hour - time.Nanosecond, counts{unused: 5, used: 1}},
		{time.Nanosecond, counts{unused: 3, used: 1, expired: 2}}, // expiry equal to now counts as passed
		{time.Hour, counts{unused: 2, used: 1, expired: 3}},
		{1000 * time.Hour, counts{unused: 2, used: 1, expired: 3}},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		if got := mustCounts(t, s); got != st.want {
			t.Errorf("at %v: got %+v, want %+v", clock.Now().Sub(t0), got, st.want)
		}
	}
}

func TestSecretCorruptValue(t *testing.T) {
	s, path := openTemp(t, Options{})
	c := mustMint(t, s, "", 0, false, "dev")[0]
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketSecrets).Put([]byte("dev"), []byte{formatV1, 0, 0, 0, 0, 0, 3, 'a', 'b', 'c'})
	})
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.ConsumeSecret("dev", c.Password, "", "r")
	if !errors.Is(err, ErrCorruptValue) || isRefusal(err) {
		t.Errorf("ConsumeSecret on a corrupt value: got %v, want ErrCorruptValue", err)
	}
	if _, err := s.Secret("dev"); !errors.Is(err, ErrCorruptValue) {
		t.Errorf("Secret on a corrupt value: got %v, want ErrCorruptValue", err)
	}
	if _, err := s.MintSecrets([]string{"dev"}, "", 0, true); !errors.Is(err, ErrCorruptValue) {
		t.Errorf("MintSecrets over a corrupt value: got %v, want ErrCorruptValue", err)
	}
}

func TestSecretsClosedStore(t *testing.T) {
	s, _ := openTemp(t, Options{})
	c := mustMint(t, s, "", 0, false, "dev")[0]
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.ConsumeSecret("dev", c.Password, "", "r"); !errors.Is(err, ErrClosed) {
		t.Errorf("ConsumeSecret: got %v, want ErrClosed", err)
	}
	if _, err := s.MintSecrets([]string{"x"}, "", 0, false); !errors.Is(err, ErrClosed) {
		t.Errorf("MintSecrets: got %v, want ErrClosed", err)
	}
	if err := s.ReleaseSecret("dev", "r"); !errors.Is(err, ErrClosed) {
		t.Errorf("ReleaseSecret: got %v, want ErrClosed", err)
	}
	if _, err := s.Secret("dev"); !errors.Is(err, ErrClosed) {
		t.Errorf("Secret: got %v, want ErrClosed", err)
	}
	if _, _, _, err := s.SecretCounts(); !errors.Is(err, ErrClosed) {
		t.Errorf("SecretCounts: got %v, want ErrClosed", err)
	}
}

func TestCredentialLogValue(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	c := Credential{Username: "dev-1", Password: "s3cr3t-passw0rd"}
	log.Info("minted", "credential", c)
	if out := buf.String(); strings.Contains(out, c.Password) || !strings.Contains(out, "dev-1") {
		t.Errorf("log line: %q; want the username and not the password", out)
	}
}

// TestUpgradeFromV1 opens a file at schema version 1 (no secret or revoked
// buckets): it is migrated to the current version, keeps its data, and the
// new buckets work.
func TestUpgradeFromV1(t *testing.T) {
	clock := newClock()
	logs := &logBuffer{}
	s, path := openTemp(t, testOptions(clock, nil))
	mustEnqueue(t, s, rec("kept", "dev", "payload"))
	if err := s.PutEnrollment(Enrollment{RequestID: "req", Status: EnrollmentPending}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Make it a version 1 file: exactly the v1 buckets.
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		for _, name := range bucketsV2 {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return setSchemaVersion(tx, 1)
	})
	if v := storedVersion(t, path); v != 1 {
		t.Fatalf("fixture version: got %d, want 1", v)
	}

	s, err := Open(path, testOptions(clock, logs))
	if err != nil {
		t.Fatalf("Open v1 file: %v", err)
	}
	defer s.Close()
	if st, err := s.Stats(); err != nil || st.SchemaVersion != SchemaVersion || st.OutboxDepth != 1 {
		t.Errorf("after upgrade: stats %+v, %v; want schema %d and the queued record", st, err, SchemaVersion)
	}
	if l := logs.String(); !strings.Contains(l, "from_version=1 to_version=2") || strings.Contains(l, "from_version=0") {
		t.Errorf("migration log: %q; want exactly the 1 -> 2 step", l)
	}
	if err := s.db.View(func(tx *bbolt.Tx) error {
		for _, name := range bucketsV2 {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("bucket %s missing", name)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if e, err := s.GetEnrollment("req"); err != nil || e.Status != EnrollmentPending {
		t.Errorf("enrollment after upgrade: %+v, %v", e, err)
	}
	c := mustMint(t, s, "", 0, false, "dev")[0]
	if err := s.ConsumeSecret("dev", c.Password, "", "r"); err != nil {
		t.Errorf("secret after upgrade: %v", err)
	}
	if err := s.PutRevoked("ca", "ab", 1, t0); err != nil {
		t.Errorf("PutRevoked after upgrade: %v", err)
	}
}

// TestNewFileHasV2Buckets checks the other path to the current layout: a
// new file gets the v2 buckets at step 0 -> 1, and step 1 -> 2 finds them
// there.
func TestNewFileHasV2Buckets(t *testing.T) {
	s, path := openTemp(t, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := storedVersion(t, path); v != SchemaVersion {
		t.Errorf("new file version: got %d, want %d", v, SchemaVersion)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				t.Errorf("bucket %s missing", name)
			}
		}
		return nil
	})
}

// FuzzDecodeSecret: a damaged value must give an error, not a panic, and
// what decodes must survive encode -> decode.
func FuzzDecodeSecret(f *testing.F) {
	h := sha256.Sum256([]byte("pw"))
	f.Add(encodeSecret(secret{SecretInfo: SecretInfo{Label: "l", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, hash: h[:]}))
	f.Add(encodeSecret(secret{SecretInfo: SecretInfo{CreatedAt: t0, UsedAt: t0, UsedBy: "req"}, hash: h[:]}))
	f.Add([]byte{formatV1})
	f.Fuzz(func(t *testing.T, data []byte) {
		sec, err := decodeSecret("u", data)
		if err != nil {
			return
		}
		again, err := decodeSecret("u", encodeSecret(sec))
		if err != nil || !reflect.DeepEqual(again, sec) {
			t.Errorf("round trip: got %+v %v, want %+v", again, err, sec)
		}
	})
}

func openSecretsBench(b *testing.B, n int) (*Store, []Credential) {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	var creds []Credential
	for len(creds) < n {
		users := make([]string, min(n-len(creds), MaxSecretsPerMint))
		for i := range users {
			users[i] = fmt.Sprintf("dev-%08d", len(creds)+i)
		}
		c, err := s.MintSecrets(users, "", time.Hour, false)
		if err != nil {
			b.Fatal(err)
		}
		creds = append(creds, c...)
	}
	return s, creds
}

// BenchmarkConsumeSecret measures ConsumeSecret: a successful use from one
// goroutine (a durable commit, after waiting BatchDelay for company that
// never comes), the same from 64 goroutines at once (sharing commits), a
// refused wrong password and a retry of the same request (read-only
// transactions, no write).
func BenchmarkConsumeSecret(b *testing.B) {
	b.Run("durable-1", func(b *testing.B) {
		s, creds := openSecretsBench(b, b.N)
		b.ResetTimer()
		for i := range b.N {
			if err := s.ConsumeSecret(creds[i].Username, creds[i].Password, "", "req"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("durable-64", func(b *testing.B) {
		s, creds := openSecretsBench(b, b.N)
		var mu sync.Mutex
		next := 0
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((64 + procs - 1) / procs) // RunParallel starts parallelism*GOMAXPROCS goroutines
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.Lock()
				c := creds[next]
				next++
				mu.Unlock()
				if err := s.ConsumeSecret(c.Username, c.Password, "", "req"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("wrong-password", func(b *testing.B) {
		s, creds := openSecretsBench(b, 1000)
		b.ResetTimer()
		for i := range b.N {
			if err := s.ConsumeSecret(creds[i%len(creds)].Username, "guess", "", "req"); err != ErrSecretWrong {
				b.Fatal(err)
			}
		}
	})
	b.Run("retry", func(b *testing.B) {
		s, creds := openSecretsBench(b, 1)
		if err := s.ConsumeSecret(creds[0].Username, creds[0].Password, "", "req"); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			if err := s.ConsumeSecret(creds[0].Username, creds[0].Password, "", "req"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMintSecrets measures a 10,000-secret batch (one transaction).
func BenchmarkMintSecrets(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	users := make([]string, 10_000)
	for i := range users {
		users[i] = fmt.Sprintf("dev-%08d", i)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := s.MintSecrets(users, "", time.Hour, true); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(users)), "ns/secret")
}

// BenchmarkSecretCounts measures SecretCounts over 100,000 unused secrets.
func BenchmarkSecretCounts(b *testing.B) {
	s, _ := openSecretsBench(b, 100_000)
	b.ResetTimer()
	for range b.N {
		if _, _, _, err := s.SecretCounts(); err != nil {
			b.Fatal(err)
		}
	}
}

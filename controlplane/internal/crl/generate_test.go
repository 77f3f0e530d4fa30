package crl

import (
	"crypto/rand"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-pki/outpost/internal/testpki"
)

// seedRow is a certificate row written with COPY.
type seedRow struct {
	serial    string
	notAfter  time.Time
	status    string
	reason    *int32
	revokedAt *time.Time
}

func randomSerial(t testing.TB) string {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1)).Text(16)
}

// seed COPYs rows into certificates as issued by caID.
func seed(t testing.TB, pool *pgxpool.Pool, caID uuid.UUID, rows []seedRow) {
	t.Helper()
	now := time.Now()
	src := make([][]any, len(rows))
	for i, r := range rows {
		src[i] = []any{r.serial, caID, "CN=seed", "seed", []string{}, now.Add(-365 * 24 * time.Hour), r.notAfter, r.status, r.reason, r.revokedAt, []byte{0x30, 0x00}}
	}
	n, err := pool.CopyFrom(t.Context(), pgx.Identifier{"certificates"},
		[]string{"serial", "issuer_id", "subject", "common_name", "sans", "not_before", "not_after", "status", "revocation_reason", "revoked_at", "der"},
		pgx.CopyFromRows(src))
	if err != nil || n != int64(len(rows)) {
		t.Fatalf("copy: %d rows, %v", n, err)
	}
	if _, err := pool.Exec(t.Context(), `ANALYZE certificates`); err != nil {
		t.Fatal(err)
	}
}

// planUses EXPLAINs a query and reports whether the plan reads the
// certificates_revoked index. noSeqScan disables sequential scans for the
// query, to show the index is usable where a seq scan is cheaper (here,
// where most rows are revoked).
func planUses(t *testing.T, pool *pgxpool.Pool, noSeqScan bool, sql string, args ...any) (bool, string) {
	t.Helper()
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(t.Context()) }()
	if noSeqScan {
		if _, err := tx.Exec(t.Context(), `SET LOCAL enable_seqscan = off`); err != nil {
			t.Fatal(err)
		}
	}
	var plan []byte
	if err := tx.QueryRow(t.Context(), `EXPLAIN (FORMAT JSON) `+sql, args...).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(plan), `"Index Name": "certificates_revoked"`), string(plan)
}

// TestFull100k: 100,000 revoked certificates in one CRL, generated and
// checked end to end; then a delta that holds only the next revocation.
func TestFull100k(t *testing.T) {
	t.Parallel()
	const revoked, expired, active = 100_000, 1_000, 5_000
	e := newEnv(t, nil)
	root := e.caByRole(t, "bootstrap_root")
	ca, caCert := e.createCA(t, "bulk", &root.ID)

	now := time.Now()
	want := make(map[string]seedRow, revoked)
	rows := make([]seedRow, 0, revoked+expired+active)
	for i := range revoked + expired + active {
		r := seedRow{serial: randomSerial(t), notAfter: now.Add(time.Duration(30+i%300) * 24 * time.Hour), status: "active"}
		if i < revoked+expired {
			at := now.Add(-time.Hour - time.Duration(i)*time.Minute) // spread over ~70 days, the newest an hour ago
			reason := int32([]int{0, 1, 3, 4, 5, 9}[i%6])
			r.status, r.revokedAt, r.reason = "revoked", &at, &reason
		}
		if i >= revoked && i < revoked+expired {
			r.notAfter = now.Add(-ExpiredRetention - 24*time.Hour) // expired long enough to drop
		}
		if i < revoked {
			want[r.serial] = r
		}
		rows = append(rows, r)
	}
	seed(t, e.App.Pool, ca.ID, rows)
	// Another CA's revocations, so that the table looks like one with
	// several CAs and the per-issuer index is the selective one.
	other, _ := e.createCA(t, "bulk-other", &root.ID)
	others := make([]seedRow, revoked)
	for i := range others {
		at := now.Add(-time.Duration(i) * time.Second)
		others[i] = seedRow{serial: randomSerial(t), notAfter: now.Add(90 * 24 * time.Hour), status: "revoked", revokedAt: &at}
	}
	seed(t, e.App.Pool, other.ID, others)

	// The full CRL query reads the CA's revoked rows through the partial
	// index certificates_revoked when it does not read the whole table (a
	// seq scan wins here, where half the small table is this CA's revoked
	// rows); the delta query uses the index as a range on revoked_at.
	if ok, plan := planUses(t, e.App.Pool, true, sqlFullEntries, ca.ID, now.Add(-e.svc.retention())); !ok {
		t.Errorf("full crl query: want it to use certificates_revoked, plan %s", plan)
	}
	if ok, plan := planUses(t, e.App.Pool, false, sqlDeltaEntries, ca.ID, now.Add(-e.svc.retention()), now.Add(-time.Minute)); !ok || !strings.Contains(plan, "revoked_at >") {
		t.Errorf("delta crl query: want an index range on certificates_revoked (revoked_at), plan %s", plan)
	}

	start := time.Now()
	full, err := e.svc.GenerateFull(e.ctx, ca.ID)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GenerateFull: %d entries, %d bytes DER, %v (race detector: %v)", revoked, len(full.DER), took, raceEnabled)

	l := checkCRL(t, e.svc.BaseURL, caCert, ca.ID, full)
	if got := len(l.RevokedCertificateEntries); got != revoked {
		t.Fatalf("entries: got %d, want %d", got, revoked)
	}
	if got, wantD := l.NextUpdate.Sub(l.ThisUpdate), DefaultValidity; got != wantD {
		t.Errorf("nextUpdate - thisUpdate: got %v, want %v", got, wantD)
	}
	bad := 0
	for _, en := range l.RevokedCertificateEntries {
		r, ok := want[en.SerialNumber.Text(16)]
		if !ok {
			bad++
			if bad < 5 {
				t.Errorf("entry %x: not a revoked, unexpired certificate of the CA", en.SerialNumber)
			}
			continue
		}
		if !en.RevocationTime.Equal(r.revokedAt.Truncate(time.Second)) || en.ReasonCode != int(*r.reason) {
			bad++
			if bad < 5 {
				t.Errorf("entry %s: got %v reason %d, want %v reason %d", r.serial, en.RevocationTime, en.ReasonCode, r.revokedAt.Truncate(time.Second), *r.reason)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d bad entries", bad)
	}
	// The watermark: the time of the read less ClockSkew (no other
	// transaction was in progress): after the call started less the skew,
	// before it returned (a loaded machine may take a minute in between).
	if lo, hi := start.Add(-ClockSkew-time.Second), start.Add(took); full.CoversUntil.Before(lo) || full.CoversUntil.After(hi) {
		t.Errorf("covers_until: got %v, want within %v..%v", full.CoversUntil, lo, hi)
	}

	// One more revocation, of a real certificate.
	leaf := e.issue(t, ca.ID, "late-revocation", "")
	e.revoke(t, leaf, 1)
	delta, err := e.svc.GenerateDelta(e.ctx, ca.ID)
	if err != nil {
		t.Fatal(err)
	}
	dl := checkCRL(t, e.svc.BaseURL, caCert, ca.ID, delta)
	if got := len(dl.RevokedCertificateEntries); got != 1 {
		t.Fatalf("delta entries: got %d, want 1", got)
	}
	if got := dl.RevokedCertificateEntries[0]; got.SerialNumber.Cmp(leaf.SerialNumber) != 0 || got.ReasonCode != 1 {
		t.Errorf("delta entry: got %x reason %d, want %x reason 1", got.SerialNumber, got.ReasonCode, leaf.SerialNumber)
	}
	if delta.BaseNumber != full.Number || delta.Number <= full.Number {
		t.Errorf("delta: got number %d base %d, want a number above the base %d", delta.Number, delta.BaseNumber, full.Number)
	}
	if a, b := findExt(l, oidIssuingDistributionPoint), findExt(dl, oidIssuingDistributionPoint); string(a.Value) != string(b.Value) {
		t.Error("delta IDP differs from the base's (RFC 5280 6.3.3 (c)(ii))")
	}

	// Numbers only grow, across kinds and entry points.
	numbers := []int64{full.Number, delta.Number}
	for i, step := range []func() (*CRL, error){
		func() (*CRL, error) { return e.svc.GenerateDelta(e.ctx, ca.ID) },
		func() (*CRL, error) {
			if err := e.svc.OnRevoked(e.ctx, ca.ID); err != nil {
				return nil, err
			}
			return e.svc.Latest(e.ctx, ca.ID, true)
		},
		func() (*CRL, error) { return e.svc.GenerateFull(e.ctx, ca.ID) },
		func() (*CRL, error) { return e.svc.GenerateDelta(e.ctx, ca.ID) },
	} {
		c, err := step()
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if last := numbers[len(numbers)-1]; c.Number != last+1 {
			t.Errorf("step %d: got crl number %d, want %d", i, c.Number, last+1)
		}
		numbers = append(numbers, c.Number)
		checkCRL(t, e.svc.BaseURL, caCert, ca.ID, c)
	}
	last, err := e.svc.Latest(e.ctx, ca.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	// At most the revocation of the seconds before the full CRL, repeated.
	for _, en := range mustParseCRL(t, last.DER).RevokedCertificateEntries {
		if en.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Errorf("delta on the newest full crl: got entry %x, want none or the leaf %x", en.SerialNumber, leaf.SerialNumber)
		}
	}
	refull, _ := e.svc.Latest(e.ctx, ca.ID, false)
	if got := len(mustParseCRL(t, refull.DER).RevokedCertificateEntries); got != revoked+1 {
		t.Errorf("new full crl: got %d entries, want %d", got, revoked+1)
	}

	// Old rows are pruned: the newest two of each kind remain.
	var n int
	if err := e.App.Pool.QueryRow(e.ctx, `SELECT count(*) FROM crls WHERE ca_id = $1`, ca.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != keepFull+keepDelta {
		t.Errorf("stored crls: got %d, want %d", n, keepFull+keepDelta)
	}
}

// TestOnRevoked: a delta per revocation, a full CRL when the delta would
// be too big or there is no base, and a revoked CA on its parent's CRL.
func TestOnRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.svc.MaxDeltaEntries = 5
	root, rootCert := e.createCA(t, "or-root", nil)
	inter, interCert := e.createCA(t, "or-inter", &root.ID)

	latestNumbers := func(id uuid.UUID) (full, delta, base int64) {
		t.Helper()
		f, err := e.svc.Latest(e.ctx, id, false)
		if err != nil {
			t.Fatal(err)
		}
		d, err := e.svc.Latest(e.ctx, id, true)
		if err != nil {
			t.Fatal(err)
		}
		return f.Number, d.Number, d.BaseNumber
	}

	// No CRL yet: OnRevoked makes the base and the delta.
	if err := e.svc.OnRevoked(e.ctx, inter.ID); err != nil {
		t.Fatal(err)
	}
	if f, d, b := latestNumbers(inter.ID); f != 1 || d != 2 || b != 1 {
		t.Fatalf("first OnRevoked: got full %d delta %d base %d, want 1, 2, 1", f, d, b)
	}

	// The steps run within ClockSkew of each other, so a delta on a new
	// full CRL repeats what was revoked just before it.
	for _, tc := range []struct {
		name        string
		revoke      int
		wantNewFull bool
		wantDelta   int
	}{
		{"few revocations: a delta", 3, false, 3},
		{"still within the limit", 2, false, 5},
		{"past the limit: a new full crl, its delta repeats the last seconds", 1, true, 6},
		{"revocations repeated from before the base do not count: a delta", 1, false, 7},
		{"within the limit since the base", 4, false, 11},
		{"past the limit since the base", 1, true, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			full0, _, _ := latestNumbers(inter.ID)
			rows := make([]seedRow, tc.revoke)
			for i := range rows {
				at := time.Now()
				rows[i] = seedRow{serial: randomSerial(t), notAfter: time.Now().Add(24 * time.Hour), status: "revoked", revokedAt: &at}
			}
			seed(t, e.App.Pool, inter.ID, rows)
			if err := e.svc.OnRevoked(e.ctx, inter.ID); err != nil {
				t.Fatal(err)
			}
			full1, _, base := latestNumbers(inter.ID)
			if got := full1 != full0; got != tc.wantNewFull {
				t.Errorf("new full crl: got %v (%d -> %d), want %v", got, full0, full1, tc.wantNewFull)
			}
			if base != full1 {
				t.Errorf("delta base: got %d, want the latest full crl %d", base, full1)
			}
			d, _ := e.svc.Latest(e.ctx, inter.ID, true)
			if got := len(checkCRL(t, e.svc.BaseURL, interCert, inter.ID, d).RevokedCertificateEntries); got != tc.wantDelta {
				t.Errorf("delta entries: got %d, want %d", got, tc.wantDelta)
			}
		})
	}

	// Revoking the intermediate puts it on the root's CRL: OnRevoked with
	// the ids RevokeCA returns also refreshes the parent.
	if _, err := e.svc.GenerateFull(e.ctx, root.ID); err != nil {
		t.Fatal(err)
	}
	ids, _, err := e.App.Svc.RevokeCA(e.ctx, "test", inter.ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.OnRevoked(e.ctx, ids...); err != nil {
		t.Fatal(err)
	}
	rd, err := e.svc.Latest(e.ctx, root.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	got := entrySerials(checkCRL(t, e.svc.BaseURL, rootCert, root.ID, rd))
	if en, ok := got[interCert.SerialNumber.Text(16)]; !ok || en.ReasonCode != 2 {
		t.Errorf("root delta: got %v, want the intermediate %x with reason cACompromise", got, interCert.SerialNumber)
	}
}

// TestNoKey: a CA imported without its key has no CRL; unknown CAs are
// ErrNotFound.
func TestNoKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	p := testpki.NewT(t, testpki.WithClock(time.Now))
	ext, err := e.App.Svc.ImportCA(e.ctx, "test", "external", p.Root("External Root").Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.GenerateFull(e.ctx, ext.ID)
	var nk *NoKeyError
	if !errors.As(err, &nk) || nk.CAID != ext.ID {
		t.Errorf("no key: got %v, want *NoKeyError for %s", err, ext.ID)
	}
	if _, err := e.svc.GenerateDelta(e.ctx, uuid.New()); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown ca: got %v, want ErrNotFound", err)
	}
	if _, err := e.svc.Latest(e.ctx, ext.ID, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("latest: got %v, want ErrNotFound", err)
	}
	if err := e.svc.OnRevoked(e.ctx, ext.ID, uuid.New()); err != nil {
		t.Errorf("OnRevoked for keyless and unknown cas: got %v, want nil (skipped)", err)
	}
	bad := &Service{Reg: e.svc.Reg, Keys: e.svc.Keys, BaseURL: "cp.example/no-scheme"}
	if _, err := bad.GenerateFull(e.ctx, e.caByRole(t, "bootstrap_issuing").ID); err == nil || !strings.Contains(err.Error(), "BaseURL") {
		t.Errorf("bad BaseURL: got %v, want an error naming BaseURL", err)
	}
}

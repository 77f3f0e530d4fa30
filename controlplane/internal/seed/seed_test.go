package seed

import (
	"context"
	"crypto/x509"
	"github.com/outpost-pki/outpost/controlplane/internal/db"
	"regexp"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/testbed"
)

func TestCertificates(t *testing.T) {
	const n = 20_000
	ctx := context.Background()
	pg := testbed.NewPostgres(t)
	pool, err := db.Open(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	var calls []int
	before := time.Now()
	if err := Certificates(ctx, pool, n, func(done int) { calls = append(calls, done) }); err != nil {
		t.Fatal(err)
	}
	after := time.Now()

	t.Run("progress", func(t *testing.T) {
		if len(calls) == 0 || calls[len(calls)-1] != n {
			t.Fatalf("got progress calls %v, want the last to be %d", calls, n)
		}
		for i := 1; i < len(calls); i++ {
			if calls[i] <= calls[i-1] {
				t.Errorf("progress not increasing: %v", calls)
			}
		}
	})

	// Each check is a query whose answer is a count; want is that count.
	checks := []struct {
		name  string
		query string
		want  int
	}{
		{"certificates", `SELECT count(*) FROM certificates`, n},
		{"distinct serials", `SELECT count(DISTINCT serial) FROM certificates`, n},
		{"serials are 40 lowercase hex digits, top bit clear", `SELECT count(*) FROM certificates WHERE serial ~ '^[0-7][0-9a-f]{39}$'`, n},
		{"one ca", `SELECT count(*) FROM cas`, 1},
		{"every row issued by the ca", `SELECT count(*) FROM certificates c JOIN cas ON cas.id = c.issuer_id`, n},
		{"revoked rows have revoked_at and a reason", `SELECT count(*) FROM certificates WHERE status = 'revoked' AND (revoked_at IS NULL OR revocation_reason IS NULL)`, 0},
		{"unrevoked rows have neither", `SELECT count(*) FROM certificates WHERE status <> 'revoked' AND (revoked_at IS NOT NULL OR revocation_reason IS NOT NULL)`, 0},
		{"revoked after creation", `SELECT count(*) FROM certificates WHERE revoked_at < created_at`, 0},
		{"statuses allowed by the check", `SELECT count(*) FROM certificates WHERE status IN ('active', 'about_to_expire', 'revoked')`, n},
		{"common name in subject and sans", `SELECT count(*) FROM certificates WHERE subject = 'CN=' || common_name AND sans = ARRAY[common_name] AND common_name LIKE 'device-%.line%.factory.example'`, n},
		{"distinct common names", `SELECT count(DISTINCT common_name) FROM certificates`, n},
		{"not_before is created_at", `SELECT count(*) FROM certificates WHERE not_before = created_at`, n},
		{"dms rows", `SELECT count(*) FROM dmss`, dmsCount},
		{"analyzed", `SELECT count(*) FROM pg_stats WHERE tablename = 'certificates' AND attname = 'created_at'`, 1},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			var got int
			if err := pool.QueryRow(ctx, c.query).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got %d, want %d", got, c.want)
			}
		})
	}

	t.Run("shares", func(t *testing.T) {
		var revoked, noDMS, sameTime int
		err := pool.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE status = 'revoked'),
			count(*) FILTER (WHERE dms_id IS NULL),
			(SELECT count(*) - count(DISTINCT created_at) FROM certificates)
			FROM certificates`).Scan(&revoked, &noDMS, &sameTime)
		if err != nil {
			t.Fatal(err)
		}
		// Expected 4%, 10% and 1% of n; the bounds are many standard
		// deviations wide.
		for _, s := range []struct {
			name    string
			got, lo int
			hi      int
		}{
			{"revoked", revoked, n * 3 / 100, n * 5 / 100},
			{"without dms", noDMS, n * 8 / 100, n * 12 / 100},
			{"sharing created_at", sameTime, n / 200, n * 2 / 100},
		} {
			if s.got < s.lo || s.got > s.hi {
				t.Errorf("%s: got %d rows, want %d to %d", s.name, s.got, s.lo, s.hi)
			}
		}
	})

	t.Run("time spread", func(t *testing.T) {
		var minCreated, maxCreated, minNotAfter, maxNotAfter time.Time
		err := pool.QueryRow(ctx, `SELECT min(created_at), max(created_at), min(not_after), max(not_after) FROM certificates`).
			Scan(&minCreated, &maxCreated, &minNotAfter, &maxNotAfter)
		if err != nil {
			t.Fatal(err)
		}
		year := 365 * 24 * time.Hour
		day := 24 * time.Hour
		if minCreated.Before(before.Add(-year-time.Second)) || minCreated.After(before.Add(-year+day)) {
			t.Errorf("got oldest created_at %v, want about a year before %v", minCreated, before)
		}
		if maxCreated.After(after) || maxCreated.Before(before.Add(-day)) {
			t.Errorf("got newest created_at %v, want within a day before %v", maxCreated, before)
		}
		if minNotAfter.Before(before.Add(-time.Second)) || maxNotAfter.After(after.Add(2*year)) {
			t.Errorf("got not_after from %v to %v, want within the two years after %v", minNotAfter, maxNotAfter, before)
		}
		if maxNotAfter.Sub(minNotAfter) < 2*year-30*day {
			t.Errorf("got not_after from %v to %v, want spread over two years", minNotAfter, maxNotAfter)
		}
	})

	t.Run("ca certificate", func(t *testing.T) {
		var der []byte
		var subject, serial string
		if err := pool.QueryRow(ctx, `SELECT cert_der, subject, serial FROM cas`).Scan(&der, &subject, &serial); err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("cas.cert_der: %v", err)
		}
		if err := cert.CheckSignatureFrom(cert); err != nil {
			t.Errorf("ca certificate is not self-signed: %v", err)
		}
		if got := cert.Subject.String(); got != subject {
			t.Errorf("got subject column %q, want %q", subject, got)
		}
		if !regexp.MustCompile(`^[0-9a-f]+$`).MatchString(serial) {
			t.Errorf("got serial column %q, want lowercase hex", serial)
		}
	})

	t.Run("second call adds to the first", func(t *testing.T) {
		if err := Certificates(ctx, pool, 1_000, nil); err != nil {
			t.Fatal(err)
		}
		var certs, cas int
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM certificates), (SELECT count(*) FROM cas)`).Scan(&certs, &cas); err != nil {
			t.Fatal(err)
		}
		if certs != n+1_000 || cas != 2 {
			t.Errorf("got %d certificates and %d cas, want %d and 2", certs, cas, n+1_000)
		}
	})
}

func TestCertificatesNegative(t *testing.T) {
	// Rejected before touching the database, so no pool is needed.
	if err := Certificates(context.Background(), nil, -1, nil); err == nil {
		t.Error("got nil error for n = -1, want an error")
	}
}

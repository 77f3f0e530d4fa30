package cpbench_test

// Certificate listing over a large table: Outpost's keyset (cursor)
// pagination next to the OFFSET pagination of Lamassu IoT, on the same
// data in the same Postgres and the same run.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/db"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/controlplane/internal/seed"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/keystore/filekeys"
	"github.com/outpost-pki/outpost/testbed"
)

const (
	// pageSize is the registry's default page (registry.DefaultLimit).
	pageSize = 50
	// defaultBenchCerts is the table size when OUTPOST_BENCH_CERTS is unset.
	defaultBenchCerts = 1_000_000
	// progressEvery is how often seeding reports to stderr, in rows.
	progressEvery = 100_000
)

// benchPages are the pages each pagination benchmark fetches. Page 10,000
// needs 500,000 certificates; with fewer it is skipped.
var benchPages = []int{1, 10_000}

// The listing queries. keysetSQL has the WHERE, ORDER BY and index
// (certificates_created) of registry.SearchCertificates without filters
// (TestPagination checks they return the same pages). The registry selects
// every column and fetches limit+1 rows to know whether a next page
// exists; this selects the columns a listing shows plus created_at for the
// next cursor, on both sides alike, so the two differ only in how they
// reach the page.
const (
	pageColumns    = `serial, subject, not_after, status, created_at`
	keysetFirstSQL = `SELECT ` + pageColumns + ` FROM certificates ORDER BY created_at, serial LIMIT $1`
	keysetSQL      = `SELECT ` + pageColumns + ` FROM certificates WHERE (created_at, serial) > ($1, $2) ORDER BY created_at, serial LIMIT $3`
	// offsetSQL is Lamassu's approach: skip (page-1)*limit rows.
	offsetSQL = `SELECT ` + pageColumns + ` FROM certificates ORDER BY created_at, serial LIMIT $1 OFFSET $2`
)

// pageRow is one certificate of a listing page.
type pageRow struct {
	Serial    string
	Subject   string
	NotAfter  time.Time
	Status    string
	CreatedAt time.Time
}

// pageCursor is the sort key of the last row of the previous page, what
// the registry's opaque cursor encodes.
type pageCursor struct {
	CreatedAt time.Time
	Serial    string
}

// querier is what the page queries need; *pgxpool.Pool has it.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// keysetPage returns the limit rows after cur, or the first page when cur
// is nil.
func keysetPage(ctx context.Context, q querier, cur *pageCursor, limit int) ([]pageRow, error) {
	if cur == nil {
		return queryPage(ctx, q, keysetFirstSQL, limit)
	}
	return queryPage(ctx, q, keysetSQL, cur.CreatedAt, cur.Serial, limit)
}

// offsetPage returns page (from 1) by skipping the rows before it.
func offsetPage(ctx context.Context, q querier, page, limit int) ([]pageRow, error) {
	return queryPage(ctx, q, offsetSQL, limit, (page-1)*limit)
}

func queryPage(ctx context.Context, q querier, sql string, args ...any) ([]pageRow, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]pageRow, 0, pageSize)
	for rows.Next() {
		var r pageRow
		if err := rows.Scan(&r.Serial, &r.Subject, &r.NotAfter, &r.Status, &r.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// cursorFor returns the cursor that starts page (from 1): the sort key of
// row (page-1)*limit, found with one OFFSET query. It is nil for page 1,
// and an error when that row does not exist (a nil cursor would silently
// mean page 1).
func cursorFor(ctx context.Context, q querier, page, limit int) (*pageCursor, error) {
	if page <= 1 {
		return nil, nil
	}
	var c pageCursor
	err := q.QueryRow(ctx, `SELECT created_at, serial FROM certificates ORDER BY created_at, serial LIMIT 1 OFFSET $1`,
		(page-1)*limit-1).Scan(&c.CreatedAt, &c.Serial)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("page %d starts past the end of the table", page)
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// samePage reports whether a and b hold the same rows in the same order.
func samePage(a, b []pageRow) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Serial != b[i].Serial || a[i].Subject != b[i].Subject || a[i].Status != b[i].Status ||
			!a[i].NotAfter.Equal(b[i].NotAfter) || !a[i].CreatedAt.Equal(b[i].CreatedAt) {
			return false
		}
	}
	return true
}

// pagingFixture is the large certificate table the pagination benchmarks
// share: seeding a million rows takes tens of seconds, so it is built
// once per test binary and closed by TestMain.
type pagingFixture struct {
	pg    *testbed.Postgres
	pool  *pgxpool.Pool
	certs int
	// The CA every seeded certificate belongs to; its key is in keys
	// (and in clear in caKeyPEM, for the openssl responder).
	dir      string
	keys     keystore.Store
	caID     uuid.UUID
	caCert   *x509.Certificate
	caKeyPEM []byte
	reg      *registry.Registry
	// cursors holds the cursor of each page in benchPages that exists.
	cursors map[int]*pageCursor
}

var (
	pagingOnce sync.Once
	paging     *pagingFixture
	pagingErr  error
)

// pagingData returns the shared fixture, building it on first use.
func pagingData(b *testing.B) *pagingFixture {
	b.Helper()
	pagingOnce.Do(func() { paging, pagingErr = startPaging(context.Background()) })
	if pagingErr != nil {
		b.Fatal(pagingErr)
	}
	return paging
}

// closePaging stops the fixture's Postgres if a benchmark started it.
func closePaging() {
	if paging != nil {
		paging.close()
	}
}

func (f *pagingFixture) close() {
	if f.pool != nil {
		f.pool.Close()
	}
	if f.keys != nil {
		f.keys.Close()
	}
	if f.dir != "" {
		os.RemoveAll(f.dir)
	}
	if err := f.pg.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "pagination: stopping postgres: %v\n", err)
	}
}

// benchCerts reads OUTPOST_BENCH_CERTS (digits, underscores allowed).
func benchCerts() (int, error) {
	s := os.Getenv("OUTPOST_BENCH_CERTS")
	if s == "" {
		return defaultBenchCerts, nil
	}
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("OUTPOST_BENCH_CERTS=%q: want a positive number of certificates", s)
	}
	return int(n), nil
}

func startPaging(ctx context.Context) (_ *pagingFixture, err error) {
	n, err := benchCerts()
	if err != nil {
		return nil, err
	}
	pg, err := testbed.StartPostgres(ctx, testbed.PostgresOptions{})
	if err != nil {
		return nil, err
	}
	f := &pagingFixture{pg: pg, certs: n, cursors: map[int]*pageCursor{}}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	dsn, err := pg.CreateDatabase(ctx)
	if err != nil {
		return nil, err
	}
	if f.pool, err = db.Open(ctx, dsn); err != nil {
		return nil, err
	}

	if err := f.makeCA(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "pagination: seeding %d certificates\n", n)
	start := time.Now()
	next := progressEvery
	err = seed.CertificatesUnder(ctx, f.pool, f.caID, n, func(done int) {
		if done >= next || done == n {
			fmt.Fprintf(os.Stderr, "pagination: %d/%d certificates (%v)\n", done, n, time.Since(start).Round(100*time.Millisecond))
			next = (done/progressEvery + 1) * progressEvery
		}
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "pagination: seeded %d certificates in %v\n", n, time.Since(start).Round(100*time.Millisecond))
	// Write the loaded pages out now, rather than in a background
	// checkpoint during the timed loops.
	if _, err := f.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}

	// Precompute each page's cursor outside the timed loops, and check
	// once that both approaches return the same page.
	for _, p := range benchPages {
		if (p-1)*pageSize >= n {
			continue
		}
		cur, err := cursorFor(ctx, f.pool, p, pageSize)
		if err != nil {
			return nil, fmt.Errorf("cursor for page %d: %w", p, err)
		}
		ks, err := keysetPage(ctx, f.pool, cur, pageSize)
		if err != nil {
			return nil, fmt.Errorf("keyset page %d: %w", p, err)
		}
		off, err := offsetPage(ctx, f.pool, p, pageSize)
		if err != nil {
			return nil, fmt.Errorf("offset page %d: %w", p, err)
		}
		if len(ks) == 0 || !samePage(ks, off) {
			return nil, fmt.Errorf("page %d: keyset and OFFSET disagree (%d and %d rows)", p, len(ks), len(off))
		}
		f.cursors[p] = cur
	}
	return f, nil
}

// makeCA creates the CA of the data set with its key in a file key store.
func (f *pagingFixture) makeCA(ctx context.Context) error {
	var err error
	if f.dir, err = os.MkdirTemp("", "outpost-cpbench-"); err != nil {
		return err
	}
	fk, err := filekeys.Open(filekeys.Config{Dir: filepath.Join(f.dir, "keys"), Passphrase: "bench", Iterations: 10_000})
	if err != nil {
		return err
	}
	f.keys = fk
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	f.caID = uuid.New()
	keyRef := "ca-" + f.caID.String()
	if err := fk.Import(ctx, keyRef, key); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	f.caKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	now := time.Now()
	if f.caCert, err = issuer.CreateRoot(key, issuer.CAOptions{Subject: pkix.Name{CommonName: "Outpost Bench CA"}, Now: now.Add(-400 * 24 * time.Hour), Validity: 10 * 365 * 24 * time.Hour, MaxPathLen: -1}); err != nil {
		return err
	}
	f.reg = registry.New(f.pool)
	return f.reg.InsertCA(ctx, &registry.CA{ID: f.caID, Name: "bench-ca", Kind: "root", KeyRef: &keyRef, Status: "active",
		Subject: f.caCert.Subject.String(), Serial: f.caCert.SerialNumber.Text(16), NotBefore: f.caCert.NotBefore, NotAfter: f.caCert.NotAfter, CertDER: f.caCert.Raw})
}

// benchPagination runs fetch for every page in benchPages, with a
// sub-benchmark name that both pagination families share, so benchreport
// can pair them.
func benchPagination(b *testing.B, fetch func(ctx context.Context, f *pagingFixture, page int) ([]pageRow, error)) {
	f := pagingData(b)
	for _, p := range benchPages {
		b.Run(fmt.Sprintf("page_%d", p), func(b *testing.B) {
			if _, ok := f.cursors[p]; !ok {
				b.Skipf("page %d needs %d certificates, have %d (OUTPOST_BENCH_CERTS)", p, (p-1)*pageSize+1, f.certs)
			}
			ctx := context.Background()
			for b.Loop() {
				rows, err := fetch(ctx, f, p)
				if err != nil {
					b.Fatal(err)
				}
				if len(rows) == 0 {
					b.Fatalf("page %d is empty", p)
				}
			}
		})
	}
}

// BenchmarkKeysetPage fetches a page of 50 certificates Outpost's way:
// continue after the previous page's last (created_at, serial) through the
// certificates_created index. Its cost does not depend on the page number.
func BenchmarkKeysetPage(b *testing.B) {
	benchPagination(b, func(ctx context.Context, f *pagingFixture, page int) ([]pageRow, error) {
		return keysetPage(ctx, f.pool, f.cursors[page], pageSize)
	})
}

// BenchmarkOffsetPage fetches the same page the way Lamassu IoT does,
// ORDER BY ... LIMIT 50 OFFSET 50*(page-1): Postgres walks and discards
// every row before the page, so the cost grows with the page number.
func BenchmarkOffsetPage(b *testing.B) {
	benchPagination(b, func(ctx context.Context, f *pagingFixture, page int) ([]pageRow, error) {
		return offsetPage(ctx, f.pool, page, pageSize)
	})
}

// TestPagination checks, on a small table, that the keyset query the
// benchmark measures is correct: walking it visits every row once in
// order, it breaks ties on created_at by serial, it uses the index, and
// its pages are OFFSET's pages.
func TestPagination(t *testing.T) {
	const n = 30_000
	ctx := context.Background()
	pg := testbed.NewPostgres(t)
	pool, err := db.Open(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := seed.Certificates(ctx, pool, n, nil); err != nil {
		t.Fatal(err)
	}

	// The reference order, from one query.
	var want []pageCursor
	rows, err := pool.Query(ctx, `SELECT created_at, serial FROM certificates ORDER BY created_at, serial`)
	if err != nil {
		t.Fatal(err)
	}
	want, err = pgx.CollectRows(rows, pgx.RowToStructByPos[pageCursor])
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != n {
		t.Fatalf("got %d certificates, want %d", len(want), n)
	}

	t.Run("walk", func(t *testing.T) {
		var got []pageRow
		var cur *pageCursor
		for pages := 0; ; pages++ {
			if pages > n/pageSize+1 {
				t.Fatalf("walk did not end after %d pages", pages)
			}
			page, err := keysetPage(ctx, pool, cur, pageSize)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, page...)
			if len(page) < pageSize {
				break
			}
			last := page[len(page)-1]
			cur = &pageCursor{CreatedAt: last.CreatedAt, Serial: last.Serial}
		}
		if len(got) != n {
			t.Fatalf("got %d rows over the walk, want %d", len(got), n)
		}
		seen := make(map[string]bool, n)
		for i, r := range got {
			if seen[r.Serial] {
				t.Fatalf("row %d: serial %s visited twice", i, r.Serial)
			}
			seen[r.Serial] = true
			if r.Serial != want[i].Serial || !r.CreatedAt.Equal(want[i].CreatedAt) {
				t.Fatalf("row %d: got %s at %v, want %s at %v", i, r.Serial, r.CreatedAt, want[i].Serial, want[i].CreatedAt)
			}
		}
	})

	t.Run("registry pages match", func(t *testing.T) {
		// The registry's own SearchCertificates, walked with its opaque
		// cursors, returns the rows the benchmarked query returns.
		reg := registry.New(pool)
		cur := ""
		var kcur *pageCursor
		for p := 1; p <= 25; p++ {
			got, next, err := reg.SearchCertificates(ctx, registry.CertFilter{}, cur, pageSize)
			if err != nil {
				t.Fatal(err)
			}
			ks, err := keysetPage(ctx, pool, kcur, pageSize)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(ks) {
				t.Fatalf("page %d: registry %d rows, keyset query %d", p, len(got), len(ks))
			}
			for i := range got {
				if got[i].Serial != ks[i].Serial {
					t.Fatalf("page %d row %d: registry %s, keyset query %s", p, i, got[i].Serial, ks[i].Serial)
				}
			}
			last := ks[len(ks)-1]
			cur, kcur = next, &pageCursor{CreatedAt: last.CreatedAt, Serial: last.Serial}
		}
	})

	t.Run("tie on created_at", func(t *testing.T) {
		// The seed gives about 1% of rows their predecessor's created_at;
		// a page ending on the first of such a pair must continue with
		// the second, by serial.
		i := 1
		for i < n && !want[i].CreatedAt.Equal(want[i-1].CreatedAt) {
			i++
		}
		if i == n {
			t.Fatal("seeded data has no rows sharing created_at")
		}
		page, err := keysetPage(ctx, pool, &want[i-1], pageSize)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 || page[0].Serial != want[i].Serial {
			t.Fatalf("after %s: got %d rows, want the first to be %s", want[i-1].Serial, len(page), want[i].Serial)
		}
	})

	t.Run("uses the index", func(t *testing.T) {
		mid := want[n/2]
		var plan []string
		rows, err := pool.Query(ctx, `EXPLAIN `+keysetSQL, mid.CreatedAt, mid.Serial, pageSize)
		if err != nil {
			t.Fatal(err)
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		if !strings.Contains(text, "certificates_created") || strings.Contains(text, "Sort") {
			t.Errorf("keyset query does not read index certificates_created in order:\n%s", text)
		}
	})

	for _, p := range []int{1, 2, 137, n / pageSize, n/pageSize + 1} {
		t.Run(fmt.Sprintf("page-%d same as OFFSET", p), func(t *testing.T) {
			cur, err := cursorFor(ctx, pool, p, pageSize)
			if err != nil {
				t.Fatal(err)
			}
			ks, err := keysetPage(ctx, pool, cur, pageSize)
			if err != nil {
				t.Fatal(err)
			}
			off, err := offsetPage(ctx, pool, p, pageSize)
			if err != nil {
				t.Fatal(err)
			}
			wantLen := pageSize
			if p > n/pageSize {
				wantLen = 0 // past the end: the last row's cursor leads nowhere
			}
			if len(ks) != wantLen || !samePage(ks, off) {
				t.Fatalf("got keyset page of %d rows, OFFSET page of %d rows, want the same %d rows", len(ks), len(off), wantLen)
			}
			if wantLen > 0 && ks[0].Serial != want[(p-1)*pageSize].Serial {
				t.Errorf("page starts with %s, want %s", ks[0].Serial, want[(p-1)*pageSize].Serial)
			}
		})
	}
}

// Package seed loads synthetic control-plane data into a PostgreSQL
// database that has the Outpost schema (controlplane/internal/db), fast
// enough to fill a table with millions of certificates for a benchmark.
//
// The rows look like a fleet's: one self-signed root CA (a real
// certificate), a few DMSs, and certificates with random 159-bit serials,
// device names as common names, creation times spread over the past year
// and expiry over the next two. Only the certificates' DER is fake: it is a
// short placeholder, not a certificate, because list and search queries
// never parse it. Do not point code that parses certificates.der at
// seeded data.
package seed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	// batchSize is the number of rows per COPY. Each batch commits on its
	// own, so progress is visible and a failure loses one batch of work.
	batchSize = 50_000
	// maxWorkers bounds the concurrent COPY streams. Two keep a 2-core
	// machine busy (one backend inserting while the other is fed); more
	// only contend on the same indexes.
	maxWorkers = 2
	// dmsCount is the number of DMS rows certificates are spread over.
	dmsCount = 4

	// Shares of certificates, in per mille.
	revokedPerMille  = 40 // revoked, with revoked_at and a reason
	noDMSPerMille    = 100
	sameTimePerMille = 10 // created in the same microsecond as the previous row

	createdSpan  = 365 * 24 * time.Hour     // created_at over the past year
	notAfterSpan = 2 * 365 * 24 * time.Hour // not_after over the next two years
	// aboutToExpire matches the schema's default DMS re-enrollment window:
	// unrevoked certificates closer than this to not_after are
	// 'about_to_expire'.
	aboutToExpire = 14 * 24 * time.Hour
)

// placeholderDER is every seeded certificate's der column. It is not DER:
// the column is NOT NULL and list/search benchmarks never parse it.
var placeholderDER = []byte("outpost-seed: synthetic certificate, not DER")

// revocationReasons are RFC 5280 CRLReason codes: unspecified,
// keyCompromise, superseded, cessationOfOperation.
var revocationReasons = [...]int32{0, 1, 4, 5}

var certColumns = []string{
	"serial", "issuer_id", "subject", "common_name", "sans",
	"not_before", "not_after", "status", "revocation_reason", "revoked_at",
	"dms_id", "profile", "der", "created_at",
}

// Certificates loads n synthetic certificates into the certificates table
// of the database behind pool, which must already have the Outpost schema.
// It first inserts one self-signed root CA in cas (the issuer of every
// row) and a few DMSs, then copies the certificates in batches of 50,000
// over up to two connections, and finally runs VACUUM (ANALYZE)
// certificates so the planner sees the new data. Each call adds its own CA, DMSs and
// certificates; calling it again on the same database adds more.
//
// Rows are spread over time relative to now: created_at (and not_before)
// over the past year, increasing with the row number as issuance
// does, with about 1% of rows
// sharing the previous row's created_at so that keyset pagination's
// serial tie-breaker matters; not_after over the next two years. About 4%
// are revoked (revoked_at and revocation_reason set, as the table's CHECK
// requires); the other rows are active, or about_to_expire within 14 days
// of not_after. The der column is a placeholder, not a certificate.
//
// progress, when not nil, is called from the calling goroutine after each
// batch commits with the number of certificates loaded so far; the last
// call reports n. On error some batches may have been committed.
func Certificates(ctx context.Context, pool *pgxpool.Pool, n int, progress func(done int)) error {
	return certificates(ctx, pool, n, nil, progress)
}

// CertificatesUnder is Certificates with an existing CA (for instance one
// whose key is in a key store, so that OCSP can answer for the rows) as
// the issuer instead of a new seed root.
func CertificatesUnder(ctx context.Context, pool *pgxpool.Pool, caID [16]byte, n int, progress func(done int)) error {
	id := pgtype.UUID{Bytes: caID, Valid: true}
	return certificates(ctx, pool, n, &id, progress)
}

func certificates(ctx context.Context, pool *pgxpool.Pool, n int, existing *pgtype.UUID, progress func(done int)) error {
	if n < 0 {
		return fmt.Errorf("seed: negative certificate count %d", n)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	caID, dmsIDs, err := insertParents(ctx, pool, now, existing)
	if err != nil {
		return err
	}
	g := &generator{
		seed:   seed,
		n:      n,
		now:    now,
		start:  now.Add(-createdSpan),
		caID:   caID,
		dmsIDs: dmsIDs,
	}
	if err := g.copyAll(ctx, pool, progress); err != nil {
		return err
	}
	// ANALYZE so the planner sees the new rows; VACUUM as autovacuum
	// would soon, so the first queries do not pay for setting hint bits
	// and the visibility map on every freshly copied page.
	if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) certificates"); err != nil {
		return fmt.Errorf("seed: analyzing certificates: %w", err)
	}
	return nil
}

// insertParents inserts the CA and the DMSs the certificates refer to.
func insertParents(ctx context.Context, pool *pgxpool.Pool, now time.Time, existing *pgtype.UUID) (pgtype.UUID, []pgtype.UUID, error) {
	caID, err := newUUID()
	if err != nil {
		return pgtype.UUID{}, nil, fmt.Errorf("seed: %w", err)
	}
	if existing != nil {
		caID = *existing
	}
	tag := hex.EncodeToString(caID.Bytes[:4])
	ca, err := selfSignedCA("Outpost Seed Root CA "+tag, now)
	if err != nil {
		return pgtype.UUID{}, nil, fmt.Errorf("seed: creating the ca certificate: %w", err)
	}
	var dmsIDs []pgtype.UUID
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if existing == nil {
			if _, err := tx.Exec(ctx, `INSERT INTO cas (id, name, kind, status, subject, serial, not_before, not_after, cert_der, created_at)
				VALUES ($1, $2, 'root', 'active', $3, $4, $5, $6, $7, $8)`,
				caID, "seed-root-"+tag, ca.Subject.String(), hex.EncodeToString(ca.SerialNumber.Bytes()),
				ca.NotBefore, ca.NotAfter, ca.Raw, now.Add(-createdSpan-time.Hour)); err != nil {
				return fmt.Errorf("inserting the ca: %w", err)
			}
		}
		for i := range dmsCount {
			id, err := newUUID()
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO dmss (id, name, status, mode) VALUES ($1, $2, 'active', 'online')`,
				id, fmt.Sprintf("seed-%s-factory-%d", tag, i+1)); err != nil {
				return fmt.Errorf("inserting a dms: %w", err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO dms_authorized_cas (dms_id, ca_id) VALUES ($1, $2)`, id, caID); err != nil {
				return fmt.Errorf("authorizing the ca for a dms: %w", err)
			}
			dmsIDs = append(dmsIDs, id)
		}
		return nil
	})
	if err != nil {
		return pgtype.UUID{}, nil, fmt.Errorf("seed: %w", err)
	}
	return caID, dmsIDs, nil
}

// selfSignedCA returns a real, small (ECDSA P-256) self-signed root.
func selfSignedCA(cn string, now time.Time) (*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial := new(big.Int).Lsh(big.NewInt(1), 158)
	serial, err = rand.Int(rand.Reader, serial)
	if err != nil {
		return nil, err
	}
	serial.SetBit(serial, 0, 1) // never zero
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Outpost seed"}},
		NotBefore:             now.Add(-createdSpan - 24*time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func newUUID() (pgtype.UUID, error) {
	var u pgtype.UUID
	if _, err := rand.Read(u.Bytes[:]); err != nil {
		return u, err
	}
	u.Bytes[6] = u.Bytes[6]&0x0f | 0x40 // version 4
	u.Bytes[8] = u.Bytes[8]&0x3f | 0x80 // RFC 4122 variant
	u.Valid = true
	return u, nil
}

// generator produces the certificate rows. Row i depends only on the seed
// and i, so batches can be generated concurrently in any order.
type generator struct {
	seed       [32]byte
	n          int
	now, start time.Time
	caID       pgtype.UUID
	dmsIDs     []pgtype.UUID
}

// copyAll copies the batches over up to maxWorkers connections and
// reports progress from the calling goroutine.
func (g *generator) copyAll(ctx context.Context, pool *pgxpool.Pool, progress func(int)) error {
	batches := (g.n + batchSize - 1) / batchSize
	workers := min(maxWorkers, runtime.GOMAXPROCS(0), int(pool.Config().MaxConns), batches)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	next := make(chan int)
	done := make(chan int)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range workers {
		wg.Go(func() {
			for b := range next {
				rows, err := g.copyBatch(ctx, pool, b)
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				select {
				case done <- rows:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	go func() {
		defer close(next)
		for b := range batches {
			select {
			case next <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(done) }()

	loaded := 0
	for rows := range done {
		loaded += rows
		if progress != nil {
			progress(loaded)
		}
	}
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if loaded != g.n {
		return fmt.Errorf("seed: loaded %d certificates, want %d", loaded, g.n)
	}
	return nil
}

// copyBatch copies batch b (rows b*batchSize up to n) in one COPY.
func (g *generator) copyBatch(ctx context.Context, pool *pgxpool.Pool, b int) (int, error) {
	first := b * batchSize
	count := min(batchSize, g.n-first)
	// One stream per batch, keyed by the batch number.
	seed := g.seed
	binary.LittleEndian.PutUint64(seed[:8], binary.LittleEndian.Uint64(seed[:8])^uint64(b))
	src := mrand.NewChaCha8(seed)
	rng := mrand.New(src)
	row := make([]any, len(certColumns))
	var raw [20]byte
	var hexBuf [40]byte
	copied, err := pool.CopyFrom(ctx, pgx.Identifier{"certificates"}, certColumns,
		pgx.CopyFromSlice(count, func(j int) ([]any, error) {
			g.fill(row, first+j, src, rng, &raw, &hexBuf)
			return row, nil
		}))
	if err != nil {
		return 0, fmt.Errorf("seed: copying certificates %d to %d: %w", first, first+count-1, err)
	}
	if copied != int64(count) {
		return 0, fmt.Errorf("seed: copied %d certificates in batch %d, want %d", copied, b, count)
	}
	return count, nil
}

// createdAt returns row i's creation time: rows are evenly spread over the
// span in row order, at microsecond precision (Postgres' own).
func (g *generator) createdAt(i int) time.Time {
	off := time.Duration(float64(createdSpan) * float64(i) / float64(max(g.n, 1)))
	return g.start.Add(off).Truncate(time.Microsecond)
}

// fill writes row i's values into row, in certColumns order.
func (g *generator) fill(row []any, i int, src *mrand.ChaCha8, rng *mrand.Rand, raw *[20]byte, hexBuf *[40]byte) {
	// A random 159-bit serial, as issuer.NewSerial makes: 20 octets, top
	// bit clear, 40 lowercase hex digits. Collisions in 2^159 are not a
	// concern at any table size.
	_, _ = src.Read(raw[:]) // never fails
	raw[0] &= 0x7f
	raw[19] |= 1 // never zero
	hex.Encode(hexBuf[:], raw[:])
	serial := string(hexBuf[:])

	r := rng.Uint64()
	pick := func(mod uint64) uint64 { v := r % mod; r /= mod; return v }

	created := g.createdAt(i)
	if i > 0 && pick(1000) < sameTimePerMille {
		// A bulk issuance: same microsecond as the previous row.
		created = g.createdAt(i - 1)
	}
	notAfter := g.now.Add(time.Duration(rng.Uint64N(uint64(notAfterSpan)))).Truncate(time.Microsecond)

	cn := fmt.Sprintf("device-%06d.line%d.factory.example", i, (i/10_000)%12+1)

	status := "active"
	var reason, revokedAt any // NULL unless revoked
	if pick(1000) < revokedPerMille {
		status = "revoked"
		reason = revocationReasons[pick(uint64(len(revocationReasons)))]
		revokedAt = created.Add(time.Duration(rng.Uint64N(uint64(g.now.Sub(created)) + 1))).Truncate(time.Microsecond)
	} else if notAfter.Sub(g.now) < aboutToExpire {
		status = "about_to_expire"
	}

	var dms any // NULL: issued through the API, not a DMS
	if pick(1000) >= noDMSPerMille {
		dms = g.dmsIDs[pick(uint64(len(g.dmsIDs)))]
	}

	row[0] = serial
	row[1] = g.caID
	row[2] = "CN=" + cn
	row[3] = cn
	row[4] = []string{cn}
	row[5] = created // not_before
	row[6] = notAfter
	row[7] = status
	row[8] = reason
	row[9] = revokedAt
	row[10] = dms
	row[11] = "device"
	row[12] = placeholderDER
	row[13] = created
}

package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/outpost-pki/outpost/internal/fsutil"
)

// Log keys, defined once.
const (
	logPath        = "path"
	logPreservedAt = "preserved_at"
	logError       = "error"
	logFromVersion = "from_version"
	logToVersion   = "to_version"
	logCounter     = "counter"
	logStored      = "stored"
	logActual      = "actual"
	logMode        = "mode"
)

// Defaults for Options.
const (
	DefaultBatchDelay       = 2 * time.Millisecond
	DefaultBatchSize        = 256
	DefaultTimeout          = 5 * time.Second
	DefaultSeenUpdatesLimit = 10_000

	// verifyAutoLimit is the file size below which VerifyAuto walks the
	// whole file at open. The full check of a 98 MiB file took 0.19s
	// here with the file in the page cache; from cold flash it is bound
	// by read speed, so past this size start-up time would grow with the
	// backlog.
	verifyAutoLimit = 64 << 20
)

// VerifyMode says how thoroughly Open checks an existing file.
type VerifyMode int

const (
	// VerifyAuto (the default) runs the full check when the file is
	// smaller than 64 MiB, and only the cheap checks otherwise.
	VerifyAuto VerifyMode = iota
	// VerifyAlways runs the full check whatever the size.
	VerifyAlways
	// VerifyNever runs only the cheap checks: valid meta pages (bbolt)
	// and a file at least as long as its meta page says.
	VerifyNever
)

func (m VerifyMode) String() string {
	switch m {
	case VerifyAuto:
		return "auto"
	case VerifyAlways:
		return "always"
	case VerifyNever:
		return "never"
	}
	return fmt.Sprintf("VerifyMode(%d)", int(m))
}

// Options configure Open. The zero value is usable: every field has a
// default.
type Options struct {
	// BatchDelay is how long Enqueue waits for other callers to share a
	// commit with (bbolt DB.MaxBatchDelay). Default 2ms.
	BatchDelay time.Duration
	// BatchSize is the most Enqueue calls one commit takes; a full batch
	// commits at once, without waiting for BatchDelay (bbolt
	// DB.MaxBatchSize). Default 256.
	BatchSize int
	// Timeout is how long Open waits for the file lock another process
	// holds. Default 5s.
	Timeout time.Duration
	// VerifyOnOpen selects the corruption check run at open. Default
	// VerifyAuto: full check for files under 64 MiB.
	VerifyOnOpen VerifyMode
	// SeenUpdatesLimit is how many applied update ids MarkUpdateApplied
	// remembers. Default 10,000.
	SeenUpdatesLimit int
	// Now is the clock for enqueue, enrollment and issuance times and for
	// the name of a preserved corrupt file. Default time.Now.
	Now func() time.Time
	// Log receives open, migration and corruption events. Default: discard.
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.BatchDelay <= 0 {
		o.BatchDelay = DefaultBatchDelay
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.SeenUpdatesLimit <= 0 {
		o.SeenUpdatesLimit = DefaultSeenUpdatesLimit
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Errors returned by Store methods.
var (
	// ErrNotFound is returned by the Get methods for a missing key.
	ErrNotFound = errors.New("store: not found")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("store: closed")
	// ErrInvalidArgument is wrapped by errors about arguments the store
	// refuses (empty ids, oversized records, unknown statuses).
	ErrInvalidArgument = errors.New("store: invalid argument")
	// ErrLocked is returned by Open when another process holds the file
	// for longer than Options.Timeout.
	ErrLocked = errors.New("store: database is locked by another process")
)

// CorruptError is returned by Open when the file is not a readable
// database. The file has been moved to PreservedAt (empty if moving it
// failed, in which case Err says why) and nothing is at Path any more;
// OpenFresh starts a new database there.
type CorruptError struct {
	Path        string
	PreservedAt string
	Err         error
}

func (e *CorruptError) Error() string {
	if e.PreservedAt == "" {
		return fmt.Sprintf("store: database %s is corrupt: %v", e.Path, e.Err)
	}
	return fmt.Sprintf("store: database %s is corrupt, preserved at %s: %v", e.Path, e.PreservedAt, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Store is the agent's bbolt database. Its methods are safe for
// concurrent use.
type Store struct {
	db        *bbolt.DB
	path      string
	log       *slog.Logger
	now       func() time.Time
	seenLimit int
	lock      *os.File // held until Close (see acquireLock)

	closeOnce sync.Once
	closeErr  error
}

// Open opens the database at path, creating it (mode 0600) if it does not
// exist, checks it for corruption and runs pending schema migrations. A
// file that fails the checks is moved aside and Open returns a
// *CorruptError; a file from a newer binary is refused with
// ErrSchemaTooNew; a file another process holds is refused with ErrLocked
// after Options.Timeout.
func Open(path string, opts Options) (*Store, error) {
	return open(path, opts.withDefaults())
}

// OpenFresh starts a new, empty database at path. Whatever is at path is
// first moved aside to <path>.corrupt-<unix seconds>, never deleted. It is
// meant for after Open returned a *CorruptError (when nothing is left at
// path); it must not be called while another process has the database
// open.
func OpenFresh(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if _, err := os.Lstat(path); err == nil {
		preserved, err := moveAside(path, opts.Now())
		if err != nil {
			return nil, fmt.Errorf("store: moving %s aside: %w", path, err)
		}
		opts.Log.Warn("store: existing database moved aside to start fresh", logPath, path, logPreservedAt, preserved)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store: %w", err)
	}
	return open(path, opts)
}

func open(path string, opts Options) (_ *Store, err error) {
	lock, err := acquireLock(path, opts.Timeout)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	created, deepChecked := false, false
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		created = true
	case err != nil:
		return nil, fmt.Errorf("store: %w", err)
	case !info.Mode().IsRegular():
		return nil, fmt.Errorf("store: %s is not a regular file", path)
	case info.Size() == 0:
		// bbolt writes and fsyncs its first pages when it creates the
		// file, so an empty file never held data: initialise it.
		opts.Log.Warn("store: empty database file, initialising it", logPath, path)
	default:
		deepChecked, err = checkFile(path, info.Size(), opts)
		if err != nil {
			return nil, handleOpenError(path, opts, err)
		}
	}

	db, err := openBolt(path, &bbolt.Options{Timeout: opts.Timeout})
	if err != nil {
		return nil, handleOpenError(path, opts, err)
	}
	if created {
		// Make the new directory entry itself durable.
		if err := fsutil.SyncDir(filepath.Dir(path)); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("store: syncing directory of %s: %w", path, err)
		}
	} else if perm := info.Mode().Perm(); perm != 0o600 {
		if err := os.Chmod(path, 0o600); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("store: %w", err)
		}
		opts.Log.Warn("store: database file mode tightened to 0600", logPath, path, logMode, perm.String())
	}
	db.MaxBatchDelay = opts.BatchDelay
	db.MaxBatchSize = opts.BatchSize

	s := &Store{db: db, path: path, log: opts.Log, now: opts.Now, seenLimit: opts.SeenUpdatesLimit, lock: lock}
	if _, err := s.migrate(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if deepChecked {
		if err := s.repairCounters(); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	return s, nil
}

// corruption marks a check failure that means the file is damaged (as
// opposed to, say, a permission error or a lock held elsewhere).
type corruption struct{ err error }

func (c *corruption) Error() string { return c.err.Error() }
func (c *corruption) Unwrap() error { return c.err }

// faultError is a panic, or a memory fault on the mapped file (SIGBUS on
// a truncated file), caught while bbolt read the file.
type faultError struct{ v any }

func (e *faultError) Error() string { return fmt.Sprintf("reading the database failed: %v", e.v) }

func isCorruption(err error) bool {
	var c *corruption
	var f *faultError
	return errors.As(err, &c) || errors.As(err, &f) ||
		errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) ||
		errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, berrors.ErrInvalidMapping)
}

func handleOpenError(path string, opts Options, err error) error {
	switch {
	case isCorruption(err):
		return quarantine(path, opts, err)
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w: %s (waited %s)", ErrLocked, path, opts.Timeout)
	default:
		return fmt.Errorf("store: opening %s: %w", path, err)
	}
}

// quarantine moves a corrupt file aside and builds the CorruptError.
func quarantine(path string, opts Options, cause error) error {
	ce := &CorruptError{Path: path, Err: cause}
	preserved, err := moveAside(path, opts.Now())
	if err != nil {
		ce.Err = errors.Join(cause, fmt.Errorf("moving the file aside failed: %w", err))
		opts.Log.Error("store: database corrupt and could not be moved aside", logPath, path, logError, ce.Err)
		return ce
	}
	ce.PreservedAt = preserved
	opts.Log.Error("store: database corrupt, moved aside", logPath, path, logPreservedAt, preserved, logError, cause)
	return ce
}

// moveAside renames path to <path>.corrupt-<unix seconds>, adding -1, -2,
// ... when that name is taken, and fsyncs the directory.
func moveAside(path string, now time.Time) (string, error) {
	base := fmt.Sprintf("%s.corrupt-%d", path, now.Unix())
	for i := 0; i < 1000; i++ {
		dst := base
		if i > 0 {
			dst = fmt.Sprintf("%s-%d", base, i)
		}
		if _, err := os.Lstat(dst); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if err := os.Rename(path, dst); err != nil {
			return "", err
		}
		return dst, fsutil.SyncDir(filepath.Dir(path))
	}
	return "", fmt.Errorf("no free name for %s", base)
}

// guarded runs fn with memory faults turned into panics and recovers
// them, and any other panic, as a *faultError. bbolt reads the file
// through a memory map: a page past the end of a truncated file raises
// SIGBUS, which would otherwise kill the process, and a garbage page can
// make bbolt panic.
func guarded(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &faultError{r}
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return fn()
}

// openBolt is bbolt.Open under guarded. If bbolt panics half way, its
// file is closed here (releasing the lock); the mapping, if any, stays
// until the process exits.
func openBolt(path string, bo *bbolt.Options) (*bbolt.DB, error) {
	var f *os.File
	bo.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		ff, err := os.OpenFile(name, flag, perm)
		if err == nil {
			f = ff
		}
		return ff, err
	}
	var db *bbolt.DB
	err := guarded(func() (err error) {
		db, err = bbolt.Open(path, 0o600, bo)
		return err
	})
	var fe *faultError
	if errors.As(err, &fe) && f != nil {
		_ = f.Close()
	}
	return db, err
}

// checkFile opens an existing file read-only and checks it: valid meta
// pages (bbolt), a file at least as long as the meta page says, and, for
// the full check, a read of every key and value followed by bbolt's
// Tx.Check. It reports whether the full check ran. Damage is returned as
// *corruption or *faultError.
func checkFile(path string, size int64, opts Options) (deep bool, err error) {
	// PreLoadFreelist reads the freelist page here, under guarded,
	// rather than in the goroutine Tx.Check starts.
	db, err := openBolt(path, &bbolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: opts.Timeout})
	if err != nil {
		return false, err
	}
	defer db.Close()
	deep = opts.VerifyOnOpen == VerifyAlways || (opts.VerifyOnOpen == VerifyAuto && size < verifyAutoLimit)
	err = guarded(func() error {
		return db.View(func(tx *bbolt.Tx) error {
			if want := tx.Size(); want > size {
				return &corruption{fmt.Errorf("file is %d bytes, its meta page says %d: truncated", size, want)}
			}
			if !deep {
				return nil
			}
			// Touch every page reachable from the buckets here, under
			// guarded, so Tx.Check, whose goroutine cannot survive a
			// fault, only sees pages known to be readable.
			if err := tx.ForEach(func(_ []byte, b *bbolt.Bucket) error { return walkBucket(b, 0) }); err != nil {
				return &corruption{err}
			}
			var errs []error
			for err := range tx.Check() {
				if len(errs) < 10 {
					errs = append(errs, err)
				}
			}
			if len(errs) > 0 {
				return &corruption{fmt.Errorf("consistency check: %w", errors.Join(errs...))}
			}
			return nil
		})
	})
	return deep, err
}

// walkBucket reads every key and value of b and its sub-buckets.
func walkBucket(b *bbolt.Bucket, depth int) error {
	if depth > 16 {
		return errors.New("buckets nested too deep")
	}
	var sum byte
	err := b.ForEach(func(k, v []byte) error {
		for _, c := range k {
			sum ^= c
		}
		if v == nil {
			if child := b.Bucket(k); child != nil {
				return walkBucket(child, depth+1)
			}
		}
		for _, c := range v {
			sum ^= c
		}
		return nil
	})
	walkSink.Store(uint32(sum)) // keeps the reads from being optimised away
	return err
}

var walkSink atomic.Uint32

// repairCounters recomputes the meta counters from the buckets after a
// full check; they can only be wrong after a bug, and a wrong Depth would
// mislead the sync loop and the metrics.
func (s *Store) repairCounters() error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		for _, c := range []struct {
			key    []byte
			bucket []byte
		}{{keyOutboxDepth, bucketOutbox}, {keyIssuedCount, bucketIssued}} {
			stored := readCounter(tx, c.key)
			actual := uint64(tx.Bucket(c.bucket).Stats().KeyN)
			if stored == actual {
				continue
			}
			s.log.Warn("store: counter repaired", logPath, s.path, logCounter, string(c.key), logStored, stored, logActual, actual)
			if err := tx.Bucket(bucketMeta).Put(c.key, u64key(actual)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close closes the database; in-flight writes finish first. Calls after
// the first return the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.db.Close()
		if s.lock != nil {
			s.lock.Close() // releases the flock
		}
	})
	return s.closeErr
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// view and update run a transaction and translate bbolt's "not open" into
// ErrClosed.
func (s *Store) view(fn func(tx *bbolt.Tx) error) error   { return closedErr(s.db.View(fn)) }
func (s *Store) update(fn func(tx *bbolt.Tx) error) error { return closedErr(s.db.Update(fn)) }
func (s *Store) batch(fn func(tx *bbolt.Tx) error) error  { return closedErr(s.db.Batch(fn)) }

func closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

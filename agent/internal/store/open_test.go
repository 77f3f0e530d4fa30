package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestSchemaVersionMatchesMigrations(t *testing.T) {
	if got := len(migrations); got != SchemaVersion {
		t.Errorf("len(migrations) = %d, want SchemaVersion %d", got, SchemaVersion)
	}
	s, _ := openTemp(t, Options{})
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.SchemaVersion != SchemaVersion {
		t.Errorf("new file schema version: got %d, want %d", st.SchemaVersion, SchemaVersion)
	}
}

// legacyBucket is the outbox of the fake version 0 layout: record id ->
// payload, no meta bucket.
var legacyBucket = []byte("queue")

// fakeV0toV1 stands in for a real data migration: it creates the v1
// buckets and moves the legacy queue into the outbox, in id order.
func fakeV0toV1(tx *bbolt.Tx) error {
	if err := migrateCreateV1(tx); err != nil {
		return err
	}
	old := tx.Bucket(legacyBucket)
	if old == nil {
		return nil
	}
	err := old.ForEach(func(k, v []byte) error {
		_, err := enqueueTx(tx, string(k), encodeOutbox(OutboxRecord{ID: string(k), Payload: v}, t0))
		return err
	})
	if err != nil {
		return err
	}
	return tx.DeleteBucket(legacyBucket)
}

func writeV0File(t *testing.T, path string) {
	t.Helper()
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket(legacyBucket)
		if err != nil {
			return err
		}
		for _, id := range []string{"old-1", "old-2", "old-3"} {
			if err := b.Put([]byte(id), []byte("payload of "+id)); err != nil {
				return err
			}
		}
		return nil
	})
}

func storedVersion(t *testing.T, path string) uint64 {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v uint64
	if err := db.View(func(tx *bbolt.Tx) (err error) { v, err = schemaVersion(tx); return err }); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrationFromV0(t *testing.T) {
	calls := 0
	replaceMigrations(t, func(tx *bbolt.Tx) error { calls++; return fakeV0toV1(tx) })
	path := filepath.Join(t.TempDir(), "agent.db")
	writeV0File(t, path)
	if v := storedVersion(t, path); v != 0 {
		t.Fatalf("fixture version: got %d, want 0", v)
	}

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open v0 file: %v", err)
	}
	if calls != 1 {
		t.Errorf("migration ran %d times, want 1", calls)
	}
	got := peekAll(t, s)
	if want := []string{"old-1", "old-2", "old-3"}; !slices.Equal(ids(got), want) {
		t.Errorf("migrated outbox: got %v, want %v", ids(got), want)
	}
	if len(got) > 0 && string(got[0].Payload) != "payload of old-1" {
		t.Errorf("migrated payload: got %q", got[0].Payload)
	}
	if d := mustDepth(t, s); d != 3 {
		t.Errorf("Depth after migration: got %d, want 3", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v := storedVersion(t, path); v != 1 {
		t.Errorf("stored version: got %d, want 1", v)
	}

	// A second open finds version 1 and runs nothing.
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if calls != 1 {
		t.Errorf("migration ran again on reopen: %d calls", calls)
	}
}

func TestMigrationStepsOneTransactionEach(t *testing.T) {
	var ran []string
	failStep2 := true
	replaceMigrations(t,
		func(tx *bbolt.Tx) error { ran = append(ran, "0->1"); return migrateCreateV1(tx) },
		func(tx *bbolt.Tx) error {
			ran = append(ran, "1->2")
			return tx.Bucket(bucketKV).Put([]byte("step2"), []byte{formatV1, 'x'})
		},
		func(tx *bbolt.Tx) error {
			ran = append(ran, "2->3")
			// Write, then fail: the write must be rolled back with the
			// version.
			if err := tx.Bucket(bucketKV).Put([]byte("step3"), []byte{formatV1, 'y'}); err != nil {
				return err
			}
			if failStep2 {
				return errors.New("disk says no")
			}
			return nil
		},
	)
	path := filepath.Join(t.TempDir(), "agent.db")
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "migrating schema 2 -> 3") {
		t.Fatalf("Open with a failing step: got %v, want a migration 2 -> 3 error", err)
	} else if ce := (*CorruptError)(nil); errors.As(err, &ce) {
		t.Fatalf("a failing migration must not be reported as corruption: %v", err)
	}
	if want := []string{"0->1", "1->2", "2->3"}; !slices.Equal(ran, want) {
		t.Errorf("steps: got %v, want %v", ran, want)
	}
	if v := storedVersion(t, path); v != 2 {
		t.Errorf("version after the failed step: got %d, want 2 (steps before it committed)", v)
	}

	failStep2 = false
	ran = nil
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open after fixing the step: %v", err)
	}
	defer s.Close()
	if want := []string{"2->3"}; !slices.Equal(ran, want) {
		t.Errorf("steps on resume: got %v, want %v", ran, want)
	}
	for _, k := range []string{"step2", "step3"} {
		if _, err := s.GetKV(k); err != nil {
			t.Errorf("GetKV(%s): %v", k, err)
		}
	}
	if st, _ := s.Stats(); st.SchemaVersion != 3 {
		t.Errorf("version: got %d, want 3", st.SchemaVersion)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, s, rec("a", "", "1"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawUpdate(t, path, func(tx *bbolt.Tx) error { return setSchemaVersion(tx, SchemaVersion+1) })
	before, _ := os.ReadFile(path)

	_, err = Open(path, Options{})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open: got %v, want ErrSchemaTooNew", err)
	}
	if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("schema version %d", SchemaVersion+1)) {
		t.Errorf("error does not name the version: %q", msg)
	}
	after, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the newer file was changed or moved (err %v)", err)
	}
	if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) != 0 {
		t.Errorf("newer file treated as corrupt: %v", m)
	}
}

// pagesWithFlag returns the ids of pages with the given bbolt page flag
// (0x01 branch, 0x02 leaf), reading the file's page headers: id uint64,
// flags uint16.
func pagesWithFlag(t *testing.T, data []byte, pageSize int, flag uint16) []int {
	t.Helper()
	var out []int
	for id := 2; (id+1)*pageSize <= len(data); id++ {
		p := data[id*pageSize:]
		if binary.LittleEndian.Uint64(p) == uint64(id) && binary.LittleEndian.Uint16(p[8:]) == flag {
			out = append(out, id)
		}
	}
	return out
}

// metaFields are the parts of a bbolt meta page the corruption cases
// need. A meta page is the 16-byte page header, then magic, version,
// page size, flags (uint32 each), root bucket (16 bytes), freelist pgid,
// high-water pgid, txid (uint64 each), checksum.
type metaFields struct{ freelist, hwm, txid int }

func newestMeta(data []byte, pageSize int) metaFields {
	var best metaFields
	for _, id := range []int{0, 1} {
		m := data[id*pageSize+16:]
		f := metaFields{
			freelist: int(binary.LittleEndian.Uint64(m[32:])),
			hwm:      int(binary.LittleEndian.Uint64(m[40:])),
			txid:     int(binary.LittleEndian.Uint64(m[48:])),
		}
		if f.txid >= best.txid {
			best = f
		}
	}
	return best
}

// populated writes a valid store with enough records to span pages.
func populated(t *testing.T, path string) {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]OutboxRecord, 400)
	for i := range recs {
		recs[i] = OutboxRecord{ID: fmt.Sprintf("rec-%04d", i), Payload: bytes.Repeat([]byte{byte(i)}, 300)}
	}
	if err := s.EnqueueMany(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// fragmented frees most pages of a populated store and commits
// twice more, so the freelist holds pages and moves to one freed
// early in the file.
func fragmented(t *testing.T, path string) {
	t.Helper()
	populated(t, path)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for i := range 390 {
		all = append(all, fmt.Sprintf("rec-%04d", i))
	}
	if _, err := s.Ack(all...); err != nil {
		t.Fatal(err)
	}
	if err := s.SetKV("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetKV("k", []byte("w")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// emptyFreelist zeroes the count of the freelist page of a fragmented
// store: the pages it listed become "unreachable unfreed", which only
// bbolt's Tx.Check sees.
func emptyFreelist(t *testing.T, path string) {
	t.Helper()
	fragmented(t, path)
	pageSize := os.Getpagesize()
	data, _ := os.ReadFile(path)
	fl := newestMeta(data, pageSize).freelist
	if binary.LittleEndian.Uint16(data[fl*pageSize+10:]) == 0 {
		t.Fatal("test setup: freelist already empty, nothing to corrupt")
	}
	binary.LittleEndian.PutUint16(data[fl*pageSize+10:], 0) // page header count
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptionPreservedAndReported(t *testing.T) {
	pageSize := os.Getpagesize()
	tests := []struct {
		name      string
		corrupt   func(t *testing.T, path string)
		wantCause string // substring of CorruptError.Err; "" for any
	}{
		{"garbage", func(t *testing.T, path string) {
			data := bytes.Repeat([]byte("not a bbolt file "), 4096)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "invalid database"},
		{"truncated to 100 bytes", func(t *testing.T, path string) {
			populated(t, path)
			if err := os.Truncate(path, 100); err != nil {
				t.Fatal(err)
			}
		}, "invalid database"},
		{"truncated after the meta pages", func(t *testing.T, path string) {
			populated(t, path)
			if err := os.Truncate(path, int64(4*pageSize)); err != nil {
				t.Fatal(err)
			}
		}, "reading the database failed"},
		{"last data page cut off", func(t *testing.T, path string) {
			populated(t, path)
			data, _ := os.ReadFile(path)
			hwm := newestMeta(data, pageSize).hwm
			if err := os.Truncate(path, int64((hwm-1)*pageSize)); err != nil {
				t.Fatal(err)
			}
		}, "reading the database failed"},
		{"pages after the freelist cut off", func(t *testing.T, path string) {
			fragmented(t, path)
			data, _ := os.ReadFile(path)
			m := newestMeta(data, pageSize)
			if m.freelist >= m.hwm-1 {
				t.Fatalf("test setup: freelist at page %d of %d: cannot cut pages after it", m.freelist, m.hwm)
			}
			if err := os.Truncate(path, int64((m.freelist+1)*pageSize)); err != nil {
				t.Fatal(err)
			}
		}, "truncated"},
		{"both meta checksums broken", func(t *testing.T, path string) {
			populated(t, path)
			data, _ := os.ReadFile(path)
			for _, id := range []int{0, 1} {
				data[id*pageSize+16+60] ^= 0xff // inside the meta's checksummed fields
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "checksum error"},
		{"leaf page type garbled", func(t *testing.T, path string) {
			populated(t, path)
			data, _ := os.ReadFile(path)
			leaves := pagesWithFlag(t, data, pageSize, 0x02)
			if len(leaves) == 0 {
				t.Fatal("no leaf page found")
			}
			for _, id := range leaves {
				binary.LittleEndian.PutUint16(data[id*pageSize+8:], 0x10) // "freelist"
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"branch page contents garbled", func(t *testing.T, path string) {
			populated(t, path)
			data, _ := os.ReadFile(path)
			branches := pagesWithFlag(t, data, pageSize, 0x01)
			if len(branches) == 0 {
				t.Fatal("no branch page found")
			}
			for _, id := range branches {
				p := data[id*pageSize : (id+1)*pageSize]
				for i := 16; i < len(p); i++ {
					p[i] = byte(i*7 + 13)
				}
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"freelist emptied", emptyFreelist, "consistency check: page"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "agent.db")
			tt.corrupt(t, path)
			original, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			clock := newClock()
			logs := &logBuffer{}

			_, err = Open(path, testOptions(clock, logs))
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Open: got %v, want *CorruptError", err)
			}
			if ce.Err == nil || !strings.Contains(ce.Err.Error(), tt.wantCause) {
				t.Errorf("cause: got %v, want one containing %q", ce.Err, tt.wantCause)
			}
			want := fmt.Sprintf("%s.corrupt-%d", path, t0.Unix())
			if ce.Path != path || ce.PreservedAt != want || ce.Err == nil {
				t.Errorf("CorruptError: got %+v, want path %s preserved at %s with a cause", ce, path, want)
			}
			preserved, err := os.ReadFile(ce.PreservedAt)
			if err != nil || !bytes.Equal(preserved, original) {
				t.Errorf("preserved copy differs from the corrupt file (err %v)", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("corrupt file still at %s: %v", path, err)
			}
			if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "preserved_at="+want) {
				t.Errorf("no error log naming the preserved file: %q", l)
			}

			s, err := OpenFresh(path, testOptions(clock, logs))
			if err != nil {
				t.Fatalf("OpenFresh: %v", err)
			}
			defer s.Close()
			if d := mustDepth(t, s); d != 0 {
				t.Errorf("fresh store depth: got %d, want 0", d)
			}
			mustEnqueue(t, s, rec("after", "", "x"))
			if got := ids(peekAll(t, s)); !slices.Equal(got, []string{"after"}) {
				t.Errorf("fresh store: got %v, want [after]", got)
			}
			if _, err := os.Stat(ce.PreservedAt); err != nil {
				t.Errorf("preserved file gone after OpenFresh: %v", err)
			}
		})
	}
}

func TestOpenFreshPreservesExistingFile(t *testing.T) {
	clock := newClock()
	opts := testOptions(clock, nil)
	s, path := openTemp(t, opts)
	mustEnqueue(t, s, rec("a", "", "1"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A leftover from an earlier corruption in the same second: the new
	// name must not overwrite it.
	taken := fmt.Sprintf("%s.corrupt-%d", path, t0.Unix())
	if err := os.WriteFile(taken, []byte("earlier"), 0o600); err != nil {
		t.Fatal(err)
	}

	s2, err := OpenFresh(path, opts)
	if err != nil {
		t.Fatalf("OpenFresh: %v", err)
	}
	defer s2.Close()
	if d := mustDepth(t, s2); d != 0 {
		t.Errorf("fresh depth: got %d, want 0", d)
	}
	if b, _ := os.ReadFile(taken); string(b) != "earlier" {
		t.Errorf("earlier preserved file overwritten")
	}
	old, err := Open(taken+"-1", opts)
	if err != nil {
		t.Fatalf("opening the moved-aside file: %v", err)
	}
	defer old.Close()
	if got := ids(peekAll(t, old)); !slices.Equal(got, []string{"a"}) {
		t.Errorf("moved-aside store: got %v, want [a]", got)
	}
}

func TestOpenLockedAndOtherErrors(t *testing.T) {
	s, path := openTemp(t, Options{})
	_ = s
	start := time.Now()
	_, err := Open(path, Options{Timeout: 150 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: got %v, want ErrLocked", err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Errorf("gave up after %v, before the timeout", el)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("locked file moved: %v", err)
	}

	if _, err := Open(filepath.Join(t.TempDir(), "missing-dir", "agent.db"), Options{}); err == nil {
		t.Error("Open in a missing directory succeeded")
	} else if ce := (*CorruptError)(nil); errors.As(err, &ce) {
		t.Errorf("missing directory reported as corruption: %v", err)
	}
	if _, err := Open(t.TempDir(), Options{}); err == nil {
		t.Error("Open of a directory succeeded")
	}
}

func TestOpenTightensFileMode(t *testing.T) {
	s, path := openTemp(t, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	fi, _ := os.Stat(path)
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode after open: got %v, want 0600", perm)
	}
}

func TestRepairCounters(t *testing.T) {
	s, path := openTemp(t, Options{})
	mustEnqueue(t, s, rec("a", "", ""), rec("b", "", ""))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyOutboxDepth, u64key(99))
	})
	s2, err := Open(path, Options{VerifyOnOpen: VerifyAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if d := mustDepth(t, s2); d != 2 {
		t.Errorf("Depth after repair: got %d, want 2", d)
	}
}

func TestVerifyModes(t *testing.T) {
	tests := []struct {
		mode        VerifyMode
		wantCorrupt bool
	}{
		{VerifyAuto, true}, // the file is far below 64 MiB
		{VerifyAlways, true},
		{VerifyNever, false}, // only the full check sees this damage
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent.db")
			emptyFreelist(t, path)
			s, err := Open(path, Options{VerifyOnOpen: tt.mode})
			var ce *CorruptError
			if got := errors.As(err, &ce); got != tt.wantCorrupt {
				t.Fatalf("Open: got %v, want corrupt %v", err, tt.wantCorrupt)
			}
			if err == nil {
				_ = s.Close()
			}
		})
	}
}

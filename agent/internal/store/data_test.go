package store

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestEnrollments(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))

	put := func(e Enrollment) {
		t.Helper()
		if err := s.PutEnrollment(e); err != nil {
			t.Fatalf("PutEnrollment(%s): %v", e.RequestID, err)
		}
		clock.Advance(time.Second)
	}
	put(Enrollment{RequestID: "r3", DeviceID: "d3", Status: EnrollmentPending, CSR: []byte("csr3")})
	put(Enrollment{RequestID: "r1", DeviceID: "d1", Status: EnrollmentPending, CSR: []byte("csr1")})
	put(Enrollment{RequestID: "r2", DeviceID: "d2", Status: EnrollmentPending, CSR: []byte("csr2")})
	// r3 issued: it leaves the pending list and keeps its creation time.
	put(Enrollment{RequestID: "r3", DeviceID: "d3", Status: EnrollmentIssued, CSR: []byte("csr3"), Certificate: []byte("cert3")})
	put(Enrollment{RequestID: "r2", DeviceID: "d2", Status: EnrollmentRejected, CSR: []byte("csr2"), Reason: "subject not allowed"})
	put(Enrollment{RequestID: "r4", Status: EnrollmentPending})

	list := func(st EnrollmentStatus) []string {
		t.Helper()
		es, err := s.ListEnrollments(st)
		if err != nil {
			t.Fatalf("ListEnrollments(%s): %v", st, err)
		}
		var out []string
		for _, e := range es {
			if e.Status != st {
				t.Errorf("ListEnrollments(%s) returned %s with status %s", st, e.RequestID, e.Status)
			}
			out = append(out, e.RequestID)
		}
		return out
	}
	tests := []struct {
		status EnrollmentStatus
		want   []string // oldest first
	}{
		{EnrollmentPending, []string{"r1", "r4"}},
		{EnrollmentIssued, []string{"r3"}},
		{EnrollmentRejected, []string{"r2"}},
	}
	for _, tt := range tests {
		if got := list(tt.status); !slices.Equal(got, tt.want) {
			t.Errorf("ListEnrollments(%s): got %v, want %v", tt.status, got, tt.want)
		}
	}

	e, err := s.GetEnrollment("r3")
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != EnrollmentIssued || string(e.Certificate) != "cert3" || string(e.CSR) != "csr3" || e.DeviceID != "d3" {
		t.Errorf("GetEnrollment(r3): got %+v", e)
	}
	if !e.CreatedAt.Equal(t0) || !e.UpdatedAt.Equal(t0.Add(3*time.Second)) {
		t.Errorf("r3 times: created %v updated %v, want %v and %v", e.CreatedAt, e.UpdatedAt, t0, t0.Add(3*time.Second))
	}
	if e, _ := s.GetEnrollment("r2"); e.Reason != "subject not allowed" {
		t.Errorf("r2 reason: got %q", e.Reason)
	}
	if _, err := s.GetEnrollment("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetEnrollment(nope): got %v, want ErrNotFound", err)
	}

	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[EnrollmentStatus]int{EnrollmentPending: 2, EnrollmentIssued: 1, EnrollmentRejected: 1}; !maps.Equal(st.Enrollments, want) {
		t.Errorf("Stats.Enrollments: got %v, want %v", st.Enrollments, want)
	}

	if found, err := s.DeleteEnrollment("r1"); err != nil || !found {
		t.Errorf("DeleteEnrollment(r1): got %v %v, want true nil", found, err)
	}
	if found, err := s.DeleteEnrollment("r1"); err != nil || found {
		t.Errorf("second DeleteEnrollment(r1): got %v %v, want false nil", found, err)
	}
	if got := list(EnrollmentPending); !slices.Equal(got, []string{"r4"}) {
		t.Errorf("pending after delete: got %v, want [r4]", got)
	}

	for _, bad := range []Enrollment{{Status: EnrollmentPending}, {RequestID: "x", Status: "lost"}} {
		if err := s.PutEnrollment(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("PutEnrollment(%+v): got %v, want ErrInvalidArgument", bad, err)
		}
	}
	if _, err := s.ListEnrollments(""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("ListEnrollments(\"\"): got %v, want ErrInvalidArgument", err)
	}
}

func TestCountIssuedSince(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))
	// One certificate an hour for 48 hours, serials 1..48 (hex).
	for i := 1; i <= 48; i++ {
		if err := s.PutIssued(fmt.Sprintf("%x", i), IssuedRecord{IssuedAt: t0.Add(time.Duration(i) * time.Hour), Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	// Replacing a record moves it in the index without counting it twice.
	if err := s.PutIssued("0x01", IssuedRecord{IssuedAt: t0.Add(100 * time.Hour), Data: []byte("moved")}); err != nil {
		t.Fatal(err)
	}
	// Zero IssuedAt means now.
	clock.Advance(200 * time.Hour)
	if err := s.PutIssued("FF", IssuedRecord{Data: []byte("now")}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		since time.Time
		want  int
	}{
		{"everything", time.Time{}, 49},
		{"before the first", t0, 49},
		{"exactly at one", t0.Add(24 * time.Hour), 25 + 1 + 1}, // 24..48, the moved 0x01, 0xff
		{"after the last hourly", t0.Add(49 * time.Hour), 2},
		{"after the moved one", t0.Add(101 * time.Hour), 1},
		{"future", t0.Add(1000 * time.Hour), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.CountIssuedSince(tt.since)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("CountIssuedSince(%v): got %d, want %d", tt.since, got, tt.want)
			}
		})
	}

	r, err := s.GetIssued("00001")
	if err != nil || string(r.Data) != "moved" || r.Serial != "1" || !r.IssuedAt.Equal(t0.Add(100*time.Hour)) {
		t.Errorf("GetIssued(00001): got %+v %v", r, err)
	}
	if r, err := s.GetIssued("ff"); err != nil || !r.IssuedAt.Equal(t0.Add(200*time.Hour)) {
		t.Errorf("GetIssued(ff): got %+v %v, want issued at the clock", r, err)
	}
	if _, err := s.GetIssued("abc"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetIssued(abc): got %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "xyz", "0x", "12345678901234567890123456789012345678901234"} {
		if err := s.PutIssued(bad, IssuedRecord{}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("PutIssued(%q): got %v, want ErrInvalidArgument", bad, err)
		}
	}
	if st, _ := s.Stats(); st.Issued != 49 {
		t.Errorf("Stats.Issued: got %d, want 49", st.Issued)
	}

	n, err := s.PruneIssuedBefore(t0.Add(24 * time.Hour))
	if err != nil || n != 22 { // 2..23
		t.Errorf("PruneIssuedBefore: got %d %v, want 22", n, err)
	}
	if got, _ := s.CountIssuedSince(time.Time{}); got != 27 {
		t.Errorf("count after prune: got %d, want 27", got)
	}
	if _, err := s.GetIssued("2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("pruned record still there: %v", err)
	}
	if st, _ := s.Stats(); st.Issued != 27 {
		t.Errorf("Stats.Issued after prune: got %d, want 27", st.Issued)
	}
}

func TestMarkUpdateApplied(t *testing.T) {
	const limit = 50
	opts := testOptions(newClock(), nil)
	opts.SeenUpdatesLimit = limit
	s, path := openTemp(t, opts)

	if _, err := s.LastAppliedUpdate(); !errors.Is(err, ErrNotFound) {
		t.Errorf("LastAppliedUpdate on a new store: got %v, want ErrNotFound", err)
	}
	mark := func(id string) bool {
		t.Helper()
		already, err := s.MarkUpdateApplied(id)
		if err != nil {
			t.Fatalf("MarkUpdateApplied(%s): %v", id, err)
		}
		return already
	}
	if mark("u-0") {
		t.Error("first mark of u-0 reported as already applied")
	}
	if !mark("u-0") {
		t.Error("second mark of u-0 not reported as already applied")
	}
	for i := 1; i < limit+10; i++ {
		if mark(fmt.Sprint("u-", i)) {
			t.Errorf("u-%d reported already applied on its first mark", i)
		}
	}
	// Re-marking an old id does not move the position.
	if !mark("u-20") {
		t.Error("u-20 forgotten too early")
	}
	if pos, err := s.LastAppliedUpdate(); err != nil || pos != fmt.Sprint("u-", limit+9) {
		t.Errorf("LastAppliedUpdate: got %q %v, want u-%d", pos, err, limit+9)
	}

	// 60 ids marked, the limit keeps the newest 50: u-10 .. u-59.
	tests := []struct {
		id          string
		wantApplied bool
	}{
		{"u-0", false}, {"u-9", false}, {"u-10", true}, {"u-59", true},
	}
	for _, tt := range tests {
		err := s.view(func(txView *bbolt.Tx) error {
			got := txView.Bucket(bucketInbox).Get(append([]byte("seen/"), tt.id...)) != nil
			if got != tt.wantApplied {
				t.Errorf("%s remembered: got %v, want %v", tt.id, got, tt.wantApplied)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := s.Stats(); st.SeenUpdates != limit {
		t.Errorf("Stats.SeenUpdates: got %d, want %d", st.SeenUpdates, limit)
	}
	// A forgotten id looks new again (documented).
	if mark("u-0") {
		t.Error("u-0 still remembered past the bound")
	}

	// Reopening with the default limit keeps everything; with a lower
	// one, the next mark trims to it.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	opts.SeenUpdatesLimit = 5
	s2, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.MarkUpdateApplied("u-new"); err != nil {
		t.Fatal(err)
	}
	if st, _ := s2.Stats(); st.SeenUpdates != 5 {
		t.Errorf("SeenUpdates after lowering the limit: got %d, want 5", st.SeenUpdates)
	}
	if already, _ := s2.MarkUpdateApplied("u-59"); !already {
		t.Error("u-59 (among the 5 newest) forgotten")
	}
}

func TestMarkUpdateAppliedDefaultBound(t *testing.T) {
	if DefaultSeenUpdatesLimit != 10_000 {
		t.Errorf("DefaultSeenUpdatesLimit = %d, want 10000 (documented)", DefaultSeenUpdatesLimit)
	}
	s, _ := openTemp(t, Options{})
	if s.seenLimit != 10_000 {
		t.Errorf("default seen limit: got %d, want 10000", s.seenLimit)
	}
}

func TestCRLs(t *testing.T) {
	s, _ := openTemp(t, testOptions(newClock(), nil))
	if _, _, _, err := s.GetCRL("ca-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetCRL before any: got %v, want ErrNotFound", err)
	}
	this, next := t0.Add(1500*time.Millisecond), t0.Add(24*time.Hour)
	tests := []struct {
		name       string
		caID       string
		der        string
		this, next time.Time
		wantStored bool
		wantDER    string
		wantThis   time.Time
	}{
		{"first", "ca-1", "crl-1", this, next, true, "crl-1", t0.Add(time.Second)},
		{"other CA independent", "ca-2", "other", t0, next, true, "other", t0},
		{"newer replaces", "ca-1", "crl-2", this.Add(time.Hour), next.Add(time.Hour), true, "crl-2", t0.Add(time.Hour + time.Second)},
		{"older refused", "ca-1", "crl-old", this, next, false, "crl-2", t0.Add(time.Hour + time.Second)},
		{"same thisUpdate redelivered", "ca-1", "crl-2b", this.Add(time.Hour), next.Add(time.Hour), true, "crl-2b", t0.Add(time.Hour + time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stored, err := s.PutCRL(tt.caID, []byte(tt.der), tt.this, tt.next)
			if err != nil {
				t.Fatal(err)
			}
			if stored != tt.wantStored {
				t.Errorf("PutCRL stored: got %v, want %v", stored, tt.wantStored)
			}
			der, gotThis, gotNext, err := s.GetCRL(tt.caID)
			if err != nil {
				t.Fatal(err)
			}
			if string(der) != tt.wantDER || !gotThis.Equal(tt.wantThis) {
				t.Errorf("GetCRL: got %q this %v, want %q this %v", der, gotThis, tt.wantDER, tt.wantThis)
			}
			if gotNext.Before(gotThis) {
				t.Errorf("nextUpdate %v before thisUpdate %v", gotNext, gotThis)
			}
		})
	}
	_, _, gotNext, _ := s.GetCRL("ca-2")
	if !gotNext.Equal(next) {
		t.Errorf("ca-2 nextUpdate: got %v, want %v", gotNext, next)
	}
	if _, err := s.PutCRL("", nil, t0, t0); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("PutCRL with no CA id: got %v, want ErrInvalidArgument", err)
	}
}

func TestPolicyBundlesKV(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))

	if _, err := s.GetPolicy(); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetPolicy before any: got %v, want ErrNotFound", err)
	}
	steps := []struct {
		version    uint64
		data       string
		wantStored bool
		wantData   string
	}{
		{3, "v3", true, "v3"},
		{2, "v2", false, "v3"},
		{3, "v3 again", true, "v3 again"},
		{9, "v9", true, "v9"},
	}
	for _, st := range steps {
		stored, err := s.PutPolicy(st.version, []byte(st.data))
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.GetPolicy()
		if err != nil {
			t.Fatal(err)
		}
		if stored != st.wantStored || string(p.Data) != st.wantData {
			t.Errorf("PutPolicy(%d): stored %v, data %q; want %v, %q", st.version, stored, p.Data, st.wantStored, st.wantData)
		}
	}
	if p, _ := s.GetPolicy(); p.Version != 9 || !p.UpdatedAt.Equal(t0) {
		t.Errorf("policy: got version %d updated %v", p.Version, p.UpdatedAt)
	}

	for _, name := range []string{"root-b", "root-a"} {
		if err := s.PutCABundle(name, []byte("pem of "+name)); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := s.GetCABundle("root-a"); err != nil || string(b) != "pem of root-a" {
		t.Errorf("GetCABundle: got %q %v", b, err)
	}
	if _, err := s.GetCABundle("root-c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetCABundle(missing): got %v, want ErrNotFound", err)
	}
	if names, err := s.CABundleNames(); err != nil || !slices.Equal(names, []string{"root-a", "root-b"}) {
		t.Errorf("CABundleNames: got %v %v", names, err)
	}

	if err := s.SetKV("empty", nil); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetKV("empty"); err != nil || len(v) != 0 {
		t.Errorf("GetKV(empty): got %q %v, want empty and nil", v, err)
	}
	if _, err := s.GetKV("missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetKV(missing): got %v, want ErrNotFound", err)
	}
	exp := time.Date(2027, 3, 1, 0, 0, 0, 123, time.UTC)
	if err := s.SetKVTime(KeyIdentityExpiry, exp); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := s.GetKVTime(KeyIdentityExpiry); err != nil || !ok || !got.Equal(exp) {
		t.Errorf("GetKVTime: got %v %v %v, want %v", got, ok, err, exp)
	}
	if _, ok, err := s.GetKVTime(KeyEdgeCAExpiry); err != nil || ok {
		t.Errorf("GetKVTime(unset): got ok %v err %v, want false nil", ok, err)
	}
	if _, _, err := s.GetKVTime("empty"); !errors.Is(err, ErrCorruptValue) {
		t.Errorf("GetKVTime of a non-time: got %v, want ErrCorruptValue", err)
	}
}

func TestStats(t *testing.T) {
	clock := newClock()
	s, _ := openTemp(t, testOptions(clock, nil))
	mustEnqueue(t, s, rec("a", "", "1"))
	clock.Advance(time.Minute)
	mustEnqueue(t, s, rec("b", "", "2"))
	if err := s.PutIssued("1", IssuedRecord{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkUpdateApplied("u"); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.OutboxDepth != 2 || !st.OutboxOldest.Equal(t0) || st.Issued != 1 || st.SeenUpdates != 1 || st.SchemaVersion != SchemaVersion {
		t.Errorf("Stats: got %+v", st)
	}
	if st.FileSize <= 0 || st.DataSize <= 0 || st.DataSize > st.FileSize {
		t.Errorf("sizes: file %d data %d", st.FileSize, st.DataSize)
	}
	if want := map[EnrollmentStatus]int{EnrollmentPending: 0, EnrollmentIssued: 0, EnrollmentRejected: 0}; !maps.Equal(st.Enrollments, want) {
		t.Errorf("Enrollments: got %v, want %v", st.Enrollments, want)
	}
}

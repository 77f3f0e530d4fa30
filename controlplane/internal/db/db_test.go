package db

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/outpost-pki/outpost/testbed"
)

func TestMigrateConcurrently(t *testing.T) {
	pg := testbed.NewPostgres(t)
	dsn := pg.NewDatabase(t)
	ctx := context.Background()

	// Several replicas starting at once against an empty database.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pool, err := Open(ctx, dsn)
			if err != nil {
				errs <- err
				return
			}
			pool.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("open: %v", err)
	}
	pool, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	v, err := SchemaVersion(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := migrations.ReadDir("migrations")
	if int(v) != len(files) {
		t.Errorf("schema version %d, want %d", v, len(files))
	}
	if _, err := pool.Exec(ctx, "INSERT INTO audit_log VALUES (1, now(), 'a', 'b', '', '{}', '', '')"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE audit_log SET actor = 'x'"); err == nil {
		t.Error("audit_log accepted an UPDATE")
	}
}

func TestOpenBadURL(t *testing.T) {
	_, err := Open(context.Background(), "postgres://user:hunter2@[::1")
	if err == nil {
		t.Fatal("bad url accepted")
	}
	if got := err.Error(); strings.Contains(got, "hunter2") {
		t.Errorf("error echoes the password: %s", got)
	}
}

package syncsvc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/syncsvc"
)

// TestDatabaseErrorIsNotUnknownDMS: when reading the DMS fails (here the
// row stays locked until the context ends; in production a database
// restart or a lost connection), Apply returns that error, which the
// consumer retries, not ErrUnknownDMS, which it acknowledges and drops.
func TestDatabaseErrorIsNotUnknownDMS(t *testing.T) {
	f := newFixture(t)
	root := f.ca("dberr-root", "")
	dmsID := f.dms(apitypes.CreateDMSRequest{Name: "gw-dberr", AuthorizedCAs: []string{root.ID}, Policy: &apitypes.DMSPolicy{Mode: "local", LocalQuota: 10}})

	if _, err := f.a.Apply(f.ctx, uuid.New(), up(uuid.NewString())); !errors.Is(err, syncsvc.ErrUnknownDMS) {
		t.Errorf("a DMS the registry does not know: got %v, want ErrUnknownDMS", err)
	}

	lock, err := f.e.App.Pool.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(context.Background()) }()
	if _, err := lock.Exec(f.ctx, `SELECT 1 FROM dmss WHERE id = $1 FOR UPDATE`, dmsID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(f.ctx, 300*time.Millisecond)
	defer cancel()
	_, err = f.a.Apply(ctx, dmsID, up(dmsID.String()))
	if err == nil || errors.Is(err, syncsvc.ErrUnknownDMS) {
		t.Errorf("reading the DMS failed: got %v, want the database error", err)
	}
}

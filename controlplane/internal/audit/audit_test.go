package audit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/db"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
	"github.com/outpost-pki/outpost/testbed"
)

func TestChain(t *testing.T) {
	pg := testbed.NewPostgres(t)
	ctx := context.Background()
	pool, err := db.Open(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	reg := registry.New(pool)

	// Concurrent appends from many "replicas" still form one chain.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := reg.Tx(ctx, func(tx pgx.Tx) error {
				_, err := Append(ctx, tx, time.Now(), fmt.Sprintf("actor-%d", i), "test.append", "x", map[string]any{"i": i, "z": "last", "a": 1.5})
				return err
			})
			if err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	res, err := Verify(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() || res.Checked != 20 {
		t.Fatalf("intact chain: got %+v, want 20 rows OK", res)
	}

	// An attacker with database rights edits row 7.
	tamper := func(sql string) {
		t.Helper()
		err := reg.Tx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, sql)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	tamper(`UPDATE audit_log SET actor = 'mallory' WHERE seq = 7`)
	res, err = Verify(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if res.FirstBadSeq != 7 {
		t.Errorf("after editing row 7: got first bad row %d (%s), want 7", res.FirstBadSeq, res.Problem)
	}
	tamper(`UPDATE audit_log SET actor = (SELECT actor FROM audit_log WHERE seq = 6) WHERE seq = 7`)
	tamper(`UPDATE audit_log SET detail = '{"a":1.5,"i":99,"z":"last"}' WHERE seq = 3`)
	res, _ = Verify(ctx, pool)
	if res.FirstBadSeq != 3 {
		t.Errorf("after editing row 3's detail: got %d, want 3", res.FirstBadSeq)
	}
}

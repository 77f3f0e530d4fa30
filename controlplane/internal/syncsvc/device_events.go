package syncsvc

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// deviceTimeline copies an agent's event about a device (a record with a
// device_id, such as the rotation.* events of agentless rotation) into
// table events, so that it shows in the device's timeline (GET
// /api/v1/devices/{id}) and reaches notification subscriptions. Only
// devices of the sending DMS get it: an agent cannot write into another
// DMS's devices' history. A device the registry does not know gets
// nothing there (the event stays in sync_events). The copy runs in a
// savepoint and is skipped if Postgres refuses it (a detail jsonb cannot
// hold, such as \u0000), so that it never fails the message: the
// sync_events row is the record.
func (a *Applier) deviceTimeline(ctx context.Context, tx pgx.Tx, dmsID uuid.UUID, deviceID, kind, detail string, at time.Time) error {
	if deviceID == "" {
		return nil
	}
	// The timeline reads detail as a JSON object.
	var obj map[string]any
	if json.Unmarshal([]byte(detail), &obj) != nil || obj == nil || strings.Contains(detail, `\u0000`) {
		detail = "{}"
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := sp.Exec(ctx, `INSERT INTO events (device_id, dms_id, kind, detail, at)
		SELECT id, $2, $3, $4::jsonb, $5 FROM devices WHERE id = $1 AND dms_id = $2`, deviceID, dmsID, kind, detail, at); err != nil {
		a.log().Warn("sync: copying an agent event into the device timeline", "dms_id", dmsID, "device_id", deviceID, "kind", kind, "err", err)
		return sp.Rollback(ctx)
	}
	return sp.Commit(ctx)
}

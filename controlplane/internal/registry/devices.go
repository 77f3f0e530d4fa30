package registry

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

var errNoRows = pgx.ErrNoRows

// Device is a row of devices.
type Device struct {
	ID        string
	DMSID     *uuid.UUID
	Status    string
	Labels    map[string]string
	CreatedAt time.Time
}

const deviceColumns = `id, dms_id, status, labels, created_at`

func scanDevice(row interface{ Scan(...any) error }) (*Device, error) {
	var d Device
	var labels []byte
	err := row.Scan(&d.ID, &d.DMSID, &d.Status, &labels, &d.CreatedAt)
	if err == nil && len(labels) > 0 {
		err = json.Unmarshal(labels, &d.Labels)
	}
	return &d, err
}

// InsertDevice registers a device.
func (q *Queries) InsertDevice(ctx context.Context, d *Device) error {
	labels, _ := json.Marshal(d.Labels)
	if d.Labels == nil {
		labels = []byte("{}")
	}
	err := q.db.QueryRow(ctx, `INSERT INTO devices (id, dms_id, status, labels) VALUES ($1,$2,$3,$4) RETURNING created_at`,
		d.ID, d.DMSID, d.Status, labels).Scan(&d.CreatedAt)
	return mapErr(err, "device "+d.ID)
}

// GetDevice returns a device.
func (q *Queries) GetDevice(ctx context.Context, id string) (*Device, error) {
	d, err := scanDevice(q.db.QueryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1`, id))
	return d, mapErr(err, "device "+id)
}

// LockDevice returns a device with its row locked for the transaction.
func (q *Queries) LockDevice(ctx context.Context, id string) (*Device, error) {
	d, err := scanDevice(q.db.QueryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1 FOR UPDATE`, id))
	return d, mapErr(err, "device "+id)
}

// SetDeviceStatus changes a device's status.
func (q *Queries) SetDeviceStatus(ctx context.Context, id, status string) error {
	tag, err := q.db.Exec(ctx, `UPDATE devices SET status=$2, updated_at=now() WHERE id=$1`, id, status)
	if err == nil && tag.RowsAffected() == 0 {
		err = errNoRows
	}
	return mapErr(err, "device "+id)
}

// SetDeviceDMS assigns a device to a DMS.
func (q *Queries) SetDeviceDMS(ctx context.Context, id string, dmsID uuid.UUID) error {
	tag, err := q.db.Exec(ctx, `UPDATE devices SET dms_id=$2, updated_at=now() WHERE id=$1`, id, dmsID)
	if err == nil && tag.RowsAffected() == 0 {
		err = errNoRows
	}
	return mapErr(err, "device "+id)
}

// DeviceFilter narrows a device search.
type DeviceFilter struct {
	IDPrefix string
	Status   string
	DMSID    *uuid.UUID
}

// SearchDevices pages through devices by id.
func (q *Queries) SearchDevices(ctx context.Context, f DeviceFilter, cur string, limit int) ([]*Device, string, error) {
	c, err := decodeCursor(cur)
	if err != nil {
		return nil, "", err
	}
	limit = ClampLimit(limit)
	sql := `SELECT ` + deviceColumns + ` FROM devices WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	if f.IDPrefix != "" {
		sql += ` AND id LIKE ` + arg(likePrefix(f.IDPrefix))
	}
	if f.Status != "" {
		sql += ` AND status = ` + arg(f.Status)
	}
	if f.DMSID != nil {
		sql += ` AND dms_id = ` + arg(*f.DMSID)
	}
	if c != nil {
		sql += ` AND id > ` + arg(c.K)
	}
	sql += ` ORDER BY id LIMIT ` + arg(limit+1)
	rows, err := q.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", mapErr(err, "searching devices")
	}
	defer rows.Close()
	var out []*Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, "", mapErr(err, "reading devices")
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, "", mapErr(err, "reading devices")
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = cursor{K: out[limit-1].ID}.encode()
	}
	return out, next, nil
}

// SlotCert is a certificate in a device slot.
type SlotCert struct {
	CAID   uuid.UUID
	Active bool
	Cert   *Certificate
}

// AddToSlot puts a certificate into its device's slot for its CA as the
// active one; the previous active certificate of the slot stays in the
// history, inactive.
func (q *Queries) AddToSlot(ctx context.Context, deviceID string, caID uuid.UUID, serial string) error {
	if _, err := q.db.Exec(ctx, `UPDATE device_slot_certs SET active = false WHERE device_id = $1 AND ca_id = $2 AND active`, deviceID, caID); err != nil {
		return mapErr(err, "device slot")
	}
	_, err := q.db.Exec(ctx, `INSERT INTO device_slot_certs (device_id, ca_id, serial, active) VALUES ($1,$2,$3,true)`, deviceID, caID, serial)
	return mapErr(err, "device slot")
}

// DeviceSlots returns every slot certificate of a device, newest first
// within each CA.
func (q *Queries) DeviceSlots(ctx context.Context, deviceID string) ([]SlotCert, error) {
	rows, err := q.db.Query(ctx, `SELECT s.ca_id, s.active, `+prefixed("c", certColumns)+`
		FROM device_slot_certs s JOIN certificates c ON c.serial = s.serial
		WHERE s.device_id = $1 ORDER BY s.ca_id, s.added_at DESC`, deviceID)
	if err != nil {
		return nil, mapErr(err, "device slots")
	}
	defer rows.Close()
	var out []SlotCert
	for rows.Next() {
		var sc SlotCert
		var c Certificate
		if err := rows.Scan(&sc.CAID, &sc.Active, &c.Serial, &c.IssuerID, &c.Subject, &c.CommonName, &c.SANs, &c.NotBefore, &c.NotAfter, &c.Status,
			&c.RevocationReason, &c.RevokedAt, &c.DMSID, &c.DeviceID, &c.Profile, &c.DER, &c.CreatedAt); err != nil {
			return nil, mapErr(err, "device slots")
		}
		sc.Cert = &c
		out = append(out, sc)
	}
	return out, mapErr(rows.Err(), "device slots")
}

func prefixed(p, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = p + "." + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// ActiveSerials returns the serials of a device's active slot
// certificates.
func (q *Queries) ActiveSerials(ctx context.Context, deviceID string) ([]string, error) {
	rows, err := q.db.Query(ctx, `SELECT serial FROM device_slot_certs WHERE device_id = $1 AND active ORDER BY serial`, deviceID)
	if err != nil {
		return nil, mapErr(err, "active serials")
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Event is a device or DMS event.
type Event struct {
	ID       int64
	DeviceID *string
	DMSID    *uuid.UUID
	// CAID is the CA the event concerns, for subscription filters.
	CAID   *uuid.UUID
	Kind   string
	Detail map[string]any
	At     time.Time
}

// AddEvent records an event.
func (q *Queries) AddEvent(ctx context.Context, e *Event) error {
	detail, err := json.Marshal(e.Detail)
	if err != nil || e.Detail == nil {
		detail = []byte("{}")
	}
	err = q.db.QueryRow(ctx, `INSERT INTO events (device_id, dms_id, ca_id, kind, detail) VALUES ($1,$2,$3,$4,$5) RETURNING id, at`,
		e.DeviceID, e.DMSID, e.CAID, e.Kind, detail).Scan(&e.ID, &e.At)
	return mapErr(err, "event")
}

// DeviceEvents returns a device's latest events, newest first.
func (q *Queries) DeviceEvents(ctx context.Context, deviceID string, limit int) ([]Event, error) {
	rows, err := q.db.Query(ctx, `SELECT id, device_id, dms_id, kind, detail, at FROM events WHERE device_id = $1 ORDER BY id DESC LIMIT $2`, deviceID, ClampLimit(limit))
	if err != nil {
		return nil, mapErr(err, "device events")
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var detail []byte
		if err := rows.Scan(&e.ID, &e.DeviceID, &e.DMSID, &e.Kind, &detail, &e.At); err != nil {
			return nil, mapErr(err, "device events")
		}
		if err := json.Unmarshal(detail, &e.Detail); err != nil {
			return nil, errors.New("device events: bad detail")
		}
		out = append(out, e)
	}
	return out, mapErr(rows.Err(), "device events")
}

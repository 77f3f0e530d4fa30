package caservice

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/controlplane/internal/audit"
	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

// Enrollments a DMS's agent forwards over the sync link (online and
// queued modes), and the device rules every certificate a DMS brings in
// follows (also those its edge CA issued offline).

// EnrollRequest is a device CSR forwarded by the agent of DMS DMSID. The
// agent authenticated the device already.
type EnrollRequest struct {
	DMSID    uuid.UUID
	DeviceID string
	// CSR is the PKCS#10 request, DER.
	CSR []byte
	// CAID, Label and Profile are as the agent sent them (each may be
	// empty); see EnrollTx for how the CA and profile are chosen.
	CAID    string
	Label   string
	Profile string
	// ReenrollSerial is the serial (lowercase hex) of the certificate the
	// device authenticated a re-enrollment with; empty for a first
	// enrollment.
	ReenrollSerial string
}

// EnrollTx issues a device certificate for an enrollment the DMS's agent
// forwarded, inside the caller's transaction:
//
//   - the CA is the request's ca_id (one of the DMS's authorized CAs),
//     else the label's CA, else the DMS's first authorized CA;
//   - the profile is the request's, else the label's, else the policy's;
//   - the device must be the DMS's or no DMS's (it is then assigned to
//     this one) and not decommissioned; an unknown device is registered
//     to the DMS when the policy allows just-in-time registration;
//   - a re-enrollment's certificate must exist, be the device's and not
//     be revoked.
//
// It returns the certificate and its chain (issuing CA first). A refusal
// is an *Error whose Message is safe to show the device (every refusal is
// final for this request); other errors abort the transaction.
func (s *Service) EnrollTx(ctx context.Context, tx pgx.Tx, r EnrollRequest, now time.Time) (*registry.Certificate, []*registry.CA, error) {
	q := registry.On(tx)
	d, err := q.GetDMS(ctx, r.DMSID)
	if err != nil {
		return nil, nil, err
	}
	pol := PolicyOf(d)
	var label *DMSLabel
	if r.Label != "" {
		i := slices.IndexFunc(pol.Labels, func(l DMSLabel) bool { return l.Name == r.Label })
		if i < 0 {
			return nil, nil, invalid("label", "unknown label %q", r.Label)
		}
		label = &pol.Labels[i]
	}
	var caID uuid.UUID
	switch {
	case r.CAID != "":
		id, err := uuid.Parse(r.CAID)
		if err != nil || !slices.Contains(d.AuthorizedCAs, id) {
			return nil, nil, invalid("ca_id", "CA %q is not authorized for this enrollment point", r.CAID)
		}
		caID = id
	case label != nil:
		caID = label.CAID
	case len(d.AuthorizedCAs) > 0:
		caID = d.AuthorizedCAs[0]
	default:
		return nil, nil, invalid("ca_id", "this enrollment point has no CA to sign with")
	}
	profile := r.Profile
	if profile == "" && label != nil {
		profile = label.Profile
	}
	if profile == "" {
		profile = pol.Profile
	}
	if _, err := s.profile(profile); err != nil {
		return nil, nil, err
	}
	csr, err := parseIssueCSR(r.CSR)
	if err != nil {
		return nil, nil, err
	}
	if err := AdmitDevice(ctx, tx, r.DMSID, r.DeviceID, pol.JITRegistration, now); err != nil {
		return nil, nil, err
	}
	if r.ReenrollSerial != "" {
		c, err := q.GetCertificate(ctx, strings.ToLower(r.ReenrollSerial))
		switch {
		case errors.Is(err, registry.ErrNotFound):
			return nil, nil, invalid("reenroll_serial_hex", "re-enrollment: certificate %s is not known", r.ReenrollSerial)
		case err != nil:
			return nil, nil, err
		case c.DeviceID == nil || *c.DeviceID != r.DeviceID:
			return nil, nil, invalid("reenroll_serial_hex", "re-enrollment: certificate %s is not this device's", r.ReenrollSerial)
		case c.Status == "revoked":
			return nil, nil, invalid("reenroll_serial_hex", "re-enrollment: certificate %s is revoked", r.ReenrollSerial)
		}
	}
	dmsID := r.DMSID
	cert, ca, err := s.issueTx(ctx, tx, Actor("dms:"+dmsID.String()), IssueRequest{CAID: caID, Profile: profile, DeviceID: r.DeviceID, DMSID: &dmsID}, csr, now)
	if err != nil {
		return nil, nil, err
	}
	chain, err := ChainOf(ctx, q, ca)
	if err != nil {
		return nil, nil, err
	}
	return cert, chain, nil
}

// AdmitDevice applies a DMS's device rules to deviceID before a
// certificate of the DMS is recorded for it, inside the caller's
// transaction (the device row stays locked): a device of this DMS is
// fine; a device of no DMS is assigned to this one; an unknown device is
// registered to this one when jit is set (just-in-time registration).
// Refusals are *Error values whose Message is safe to show the device:
// an unknown device without jit ("device <id> is not registered"), a
// device of another DMS, a decommissioned device.
func AdmitDevice(ctx context.Context, tx registry.DBTX, dmsID uuid.UUID, deviceID string, jit bool, now time.Time) error {
	q := registry.On(tx)
	d, err := q.LockDevice(ctx, deviceID)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		if !jit {
			return invalid("device_id", "device %s is not registered", deviceID)
		}
		if err := checkDeviceID(deviceID); err != nil {
			return err
		}
		if err := q.InsertDevice(ctx, &registry.Device{ID: deviceID, DMSID: &dmsID, Status: "pending_provisioning"}); err != nil {
			return err
		}
		if err := q.AddEvent(ctx, &registry.Event{DeviceID: &deviceID, DMSID: &dmsID, Kind: "device.registered", Detail: map[string]any{"just_in_time": true}}); err != nil {
			return err
		}
		_, err := audit.Append(ctx, tx, now, "dms:"+dmsID.String(), "device.register", deviceID, map[string]any{"just_in_time": true})
		return err
	case err != nil:
		return err
	case d.Status == "decommissioned":
		return conflict("device %s is decommissioned", deviceID)
	case d.DMSID == nil:
		if err := q.SetDeviceDMS(ctx, deviceID, dmsID); err != nil {
			return err
		}
		return q.AddEvent(ctx, &registry.Event{DeviceID: &deviceID, DMSID: &dmsID, Kind: "device.assigned", Detail: map[string]any{"dms_id": dmsID.String()}})
	case *d.DMSID != dmsID:
		return &Error{Kind: KindForbidden, Field: "device_id", Message: fmt.Sprintf("device %s is registered to another enrollment point", deviceID)}
	}
	return nil
}

// checkDeviceID is the rule RegisterDevice applies to device ids.
func checkDeviceID(id string) error {
	if id == "" || len(id) > 128 || strings.ContainsAny(id, "/\\ \t\r\n") {
		return invalid("device_id", "device id must be 1-128 characters without spaces or slashes")
	}
	return nil
}

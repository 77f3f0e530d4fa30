package ui

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/google/uuid"

	"github.com/outpost-pki/outpost/controlplane/internal/registry"
)

type deviceRow struct {
	*registry.Device
	DMSName string
}

type devicesData struct {
	Q        url.Values
	Rows     []deviceRow
	Next     string
	First    string
	Paged    bool
	DMSs     []option
	Statuses []string
	Filtered bool
}

func (s *Server) devicesPage(w http.ResponseWriter, r *http.Request, sess *session) error {
	q := r.URL.Query()
	for _, k := range []string{"q", "cursor"} {
		if len(q.Get(k)) > maxSearchText {
			return badField(k, k+" is too long.")
		}
	}
	f := registry.DeviceFilter{IDPrefix: strings.TrimSpace(q.Get("q")), Status: q.Get("status")}
	if f.Status != "" && !contains(deviceStatuses, f.Status) {
		return badField("status", "status must be one of "+strings.Join(deviceStatuses, ", ")+".")
	}
	var err error
	if f.DMSID, err = optUUID("dms_id", q.Get("dms_id")); err != nil {
		return err
	}
	ctx := r.Context()
	devs, next, err := s.reg.SearchDevices(ctx, f, q.Get("cursor"), pageSize)
	if err != nil {
		return err
	}
	d := &devicesData{Q: q, Statuses: deviceStatuses, Paged: q.Get("cursor") != "", First: withQuery(r, "cursor", ""),
		Filtered: f.IDPrefix != "" || f.Status != "" || f.DMSID != nil}
	if next != "" {
		d.Next = withQuery(r, "cursor", next)
	}
	var ids []uuid.UUID
	for _, dv := range devs {
		if dv.DMSID != nil {
			ids = append(ids, *dv.DMSID)
		}
	}
	names, err := s.names(ctx, "dmss", uniq(ids))
	if err != nil {
		return err
	}
	for _, dv := range devs {
		row := deviceRow{Device: dv}
		if dv.DMSID != nil {
			row.DMSName = names[*dv.DMSID]
		}
		d.Rows = append(d.Rows, row)
	}
	if d.DMSs, err = s.dmsOptions(ctx); err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "devices", &page{Title: "Devices", Nav: "devices", Data: d})
	return nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

type slotView struct {
	CAID   uuid.UUID
	CAName string
	Active string // serial of the active certificate
	Certs  []*registry.Certificate
}

type eventView struct {
	registry.Event
	DetailText string
}

type deviceData struct {
	Device    *registry.Device
	DMSName   string
	Labels    []labelKV
	Slots     []slotView
	Events    []eventView
	CanRetire bool
}

type labelKV struct{ K, V string }

func deviceParam(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if id == "" || len(id) > 128 {
		return "", &httpError{Status: http.StatusNotFound, Field: "id", Message: "There is no device with this id."}
	}
	return id, nil
}

func (s *Server) devicePage(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, err := deviceParam(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	dv, err := s.reg.GetDevice(ctx, id)
	if err != nil {
		return err
	}
	d := &deviceData{Device: dv, CanRetire: dv.Status != "decommissioned"}
	for k, v := range dv.Labels {
		d.Labels = append(d.Labels, labelKV{k, v})
	}
	sort.Slice(d.Labels, func(i, j int) bool { return d.Labels[i].K < d.Labels[j].K })
	slots, err := s.reg.DeviceSlots(ctx, id)
	if err != nil {
		return err
	}
	var caIDs []uuid.UUID
	byCA := map[uuid.UUID]int{}
	for _, sc := range slots {
		i, ok := byCA[sc.CAID]
		if !ok {
			i = len(d.Slots)
			byCA[sc.CAID] = i
			d.Slots = append(d.Slots, slotView{CAID: sc.CAID})
			caIDs = append(caIDs, sc.CAID)
		}
		if sc.Active {
			d.Slots[i].Active = sc.Cert.Serial
		}
		d.Slots[i].Certs = append(d.Slots[i].Certs, sc.Cert)
	}
	names, err := s.names(ctx, "cas", caIDs)
	if err != nil {
		return err
	}
	for i := range d.Slots {
		d.Slots[i].CAName = names[d.Slots[i].CAID]
	}
	events, err := s.reg.DeviceEvents(ctx, id, 100)
	if err != nil {
		return err
	}
	for _, e := range events {
		ev := eventView{Event: e}
		if len(e.Detail) > 0 {
			b, _ := json.Marshal(e.Detail)
			ev.DetailText = string(b)
		}
		d.Events = append(d.Events, ev)
	}
	if dv.DMSID != nil {
		n, err := s.names(ctx, "dmss", []uuid.UUID{*dv.DMSID})
		if err != nil {
			return err
		}
		d.DMSName = n[*dv.DMSID]
	}
	s.render(w, r, http.StatusOK, "device", &page{Title: "Device " + dv.ID, Nav: "devices", Data: d})
	return nil
}

func (s *Server) decommission(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, err := deviceParam(r)
	if err != nil {
		return err
	}
	if _, err := s.svc.DecommissionDevice(r.Context(), sess.actor(), id); err != nil {
		return err
	}
	redirect(w, r, PathPrefix+"/devices/"+url.PathEscape(id), "decommissioned")
	return nil
}

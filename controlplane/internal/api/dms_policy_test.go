package api_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
)

// TestDMSPolicyFields: the policy's labels, edge CA settings, webhook,
// online wait and just-in-time registration round-trip through create,
// get and update, with their defaults; authorized CAs keep their order.
func TestDMSPolicyFields(t *testing.T) {
	e := cptest.Start(t, nil)
	admin := e.AdminToken
	var a, b apitypes.CA
	e.MustDo("POST", "/api/v1/cas", admin, apitypes.CreateCARequest{Name: "pol-a", CommonName: "pol-a"}, &a, 201)
	e.MustDo("POST", "/api/v1/cas", admin, apitypes.CreateCARequest{Name: "pol-b", CommonName: "pol-b"}, &b, 201)

	// Defaults.
	var plain apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", admin, apitypes.CreateDMSRequest{Name: "pol-plain"}, &plain, 201)
	p := plain.DMS.Policy
	if p.EdgeCAValidityDays != 30 || p.OnlineWaitMs == nil || *p.OnlineWaitMs != 5000 || p.JITRegistration == nil || !*p.JITRegistration ||
		len(p.Labels) != 0 || len(p.EdgeNameConstraints) != 0 || p.WebhookURL != "" {
		t.Errorf("default policy: %+v", p)
	}
	// Local mode without name constraints: the DNS domain "local".
	var local apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", admin, apitypes.CreateDMSRequest{Name: "pol-local", AuthorizedCAs: []string{a.ID}, Policy: &apitypes.DMSPolicy{Mode: "local", LocalQuota: 5}}, &local, 201)
	if !slices.Equal(local.DMS.Policy.EdgeNameConstraints, []string{"local"}) {
		t.Errorf("local mode name constraints %v, want [local]", local.DMS.Policy.EdgeNameConstraints)
	}

	// Every device authentication the agent knows is stored (the column
	// has a check constraint of its own).
	for _, auth := range []string{"client_cert", "basic_secret", "client_cert_or_secret"} {
		var r apitypes.CreateDMSResponse
		e.MustDo("POST", "/api/v1/dmss", admin, apitypes.CreateDMSRequest{Name: "pol-auth-" + auth, Policy: &apitypes.DMSPolicy{Mode: "queued", DeviceAuth: auth, Profile: "device"}}, &r, 201)
		if r.DMS.Policy.DeviceAuth != auth {
			t.Errorf("device_auth %q stored as %q", auth, r.DMS.Policy.DeviceAuth)
		}
	}

	// Everything set; CAs in the order given (b before a).
	want := apitypes.DMSPolicy{Mode: "local", DeviceAuth: "webhook", Profile: "device", ReenrollWindowDays: 10, LocalQuota: 50,
		Labels:              []apitypes.DMSLabel{{Name: "line-1.sensors_v2", CAID: a.ID, Profile: "device"}, {Name: "gateways", CAID: b.ID}},
		EdgeCAValidityDays:  3650,
		EdgeNameConstraints: []string{"line1.example", ".sub.example", "10.1.0.0/16", "fd00::/8", "@example.com", "ops@example.com", "uri:devices.example", "local"},
		WebhookURL:          "https://auth.example:8443/outpost/devices?site=1", OnlineWaitMs: new(0), JITRegistration: new(false)}
	var full apitypes.CreateDMSResponse
	e.MustDo("POST", "/api/v1/dmss", admin, apitypes.CreateDMSRequest{Name: "pol-full", AuthorizedCAs: []string{b.ID, a.ID}, Policy: &want}, &full, 201)
	var got apitypes.DMS
	e.MustDo("GET", "/api/v1/dmss/"+full.DMS.ID, admin, nil, &got, 200)
	if !samePolicy(got.Policy, want) {
		t.Errorf("got policy %s, want %s", js(got.Policy), js(want))
	}
	if !slices.Equal(got.AuthorizedCAs, []string{b.ID, a.ID}) {
		t.Errorf("authorized CAs %v, want [%s %s] in that order", got.AuthorizedCAs, b.ID, a.ID)
	}

	// Update: the policy replaced whole; dropping a CA a label names is
	// refused; so is leaving a local DMS without CAs.
	want.Labels = want.Labels[1:]
	want.OnlineWaitMs = new(60000)
	var updated apitypes.DMS
	e.MustDo("PATCH", "/api/v1/dmss/"+full.DMS.ID, admin, apitypes.UpdateDMSRequest{Policy: &want}, &updated, 200)
	if !samePolicy(updated.Policy, want) {
		t.Errorf("after update got %s, want %s", js(updated.Policy), js(want))
	}
	for _, tt := range []struct {
		name  string
		req   apitypes.UpdateDMSRequest
		field string
	}{
		{"drop a labelled CA", apitypes.UpdateDMSRequest{AuthorizedCAs: &[]string{a.ID}}, "policy.labels[0].ca_id"},
		{"no CA in local mode", apitypes.UpdateDMSRequest{AuthorizedCAs: &[]string{}, Policy: &apitypes.DMSPolicy{Mode: "local", LocalQuota: 1}}, "authorized_cas"},
		{"CA listed twice", apitypes.UpdateDMSRequest{AuthorizedCAs: &[]string{a.ID, a.ID, b.ID}}, "authorized_cas"},
	} {
		t.Run(tt.name, func(t *testing.T) { wantProblem(t, e, "PATCH", "/api/v1/dmss/"+full.DMS.ID, tt.req, tt.field) })
	}
	var after apitypes.DMS
	e.MustDo("GET", "/api/v1/dmss/"+full.DMS.ID, admin, nil, &after, 200)
	if !slices.Equal(after.AuthorizedCAs, []string{b.ID, a.ID}) || !samePolicy(after.Policy, want) {
		t.Errorf("a refused update changed the DMS: %v %s", after.AuthorizedCAs, js(after.Policy))
	}
}

// TestDMSPolicyValidation: every invalid policy field is a 400 naming it.
func TestDMSPolicyValidation(t *testing.T) {
	e := cptest.Start(t, nil)
	var a, b apitypes.CA
	e.MustDo("POST", "/api/v1/cas", e.AdminToken, apitypes.CreateCARequest{Name: "val-a", CommonName: "val-a"}, &a, 201)
	e.MustDo("POST", "/api/v1/cas", e.AdminToken, apitypes.CreateCARequest{Name: "val-b", CommonName: "val-b"}, &b, 201)
	label := func(name, ca, profile string) []apitypes.DMSLabel {
		return []apitypes.DMSLabel{{Name: name, CAID: ca, Profile: profile}}
	}
	tests := []struct {
		name  string
		cas   []string
		pol   apitypes.DMSPolicy
		field string
	}{
		{"label name with a slash", []string{a.ID}, apitypes.DMSPolicy{Labels: label("a/b", a.ID, "")}, "policy.labels[0].name"},
		{"label name too long", []string{a.ID}, apitypes.DMSPolicy{Labels: label(string(make([]byte, 65)), a.ID, "")}, "policy.labels[0].name"},
		{"label twice", []string{a.ID}, apitypes.DMSPolicy{Labels: append(label("x", a.ID, ""), label("x", a.ID, "")...)}, "policy.labels[1].name"},
		{"label CA not authorized", []string{a.ID}, apitypes.DMSPolicy{Labels: label("x", b.ID, "")}, "policy.labels[0].ca_id"},
		{"label CA not an id", []string{a.ID}, apitypes.DMSPolicy{Labels: label("x", "ca-a", "")}, "policy.labels[0].ca_id"},
		{"label device_auth unknown", []string{a.ID}, apitypes.DMSPolicy{Labels: []apitypes.DMSLabel{{Name: "x", CAID: a.ID, DeviceAuth: "magic"}}}, "policy.labels[0].device_auth"},
		{"label webhook without a URL", []string{a.ID}, apitypes.DMSPolicy{Labels: []apitypes.DMSLabel{{Name: "x", CAID: a.ID, DeviceAuth: "webhook"}}}, "policy.labels[0].device_auth"},
		{"label profile unknown", []string{a.ID}, apitypes.DMSPolicy{Labels: label("x", a.ID, "nope")}, "policy.labels[0].profile"},
		{"edge validity too long", nil, apitypes.DMSPolicy{EdgeCAValidityDays: 3651}, "policy.edge_ca_validity_days"},
		{"edge validity negative", nil, apitypes.DMSPolicy{EdgeCAValidityDays: -1}, "policy.edge_ca_validity_days"},
		{"constraint: unmasked CIDR", nil, apitypes.DMSPolicy{EdgeNameConstraints: []string{"10.1.2.3/16"}}, "policy.edge_name_constraints[0]"},
		{"constraint: bad domain", nil, apitypes.DMSPolicy{EdgeNameConstraints: []string{"ok.example", "bad..example"}}, "policy.edge_name_constraints[1]"},
		{"constraint: space", nil, apitypes.DMSPolicy{EdgeNameConstraints: []string{"a b"}}, "policy.edge_name_constraints[0]"},
		{"constraint: bare IP", nil, apitypes.DMSPolicy{EdgeNameConstraints: []string{"10.0.0.1"}}, "policy.edge_name_constraints[0]"},
		{"constraint: email without domain", nil, apitypes.DMSPolicy{EdgeNameConstraints: []string{"ops@"}}, "policy.edge_name_constraints[0]"},
		{"constraint: bad mailbox", nil, apitypes.DMSPolicy{EdgeNameConstraints: []string{"o ps@example.com"}}, "policy.edge_name_constraints[0]"},
		{"constraint: empty uri", nil, apitypes.DMSPolicy{EdgeNameConstraints: []string{"uri:"}}, "policy.edge_name_constraints[0]"},
		{"constraint: empty", nil, apitypes.DMSPolicy{EdgeNameConstraints: []string{""}}, "policy.edge_name_constraints[0]"},
		{"webhook over http", nil, apitypes.DMSPolicy{WebhookURL: "http://auth.example/"}, "policy.webhook_url"},
		{"webhook not a URL", nil, apitypes.DMSPolicy{WebhookURL: "auth.example"}, "policy.webhook_url"},
		{"webhook with credentials", nil, apitypes.DMSPolicy{WebhookURL: "https://u:p@auth.example/"}, "policy.webhook_url"},
		{"webhook auth without URL", nil, apitypes.DMSPolicy{DeviceAuth: "webhook"}, "policy.webhook_url"},
		{"online wait too long", nil, apitypes.DMSPolicy{OnlineWaitMs: new(60001)}, "policy.online_wait_ms"},
		{"online wait negative", nil, apitypes.DMSPolicy{OnlineWaitMs: new(-1)}, "policy.online_wait_ms"},
		{"local mode without CA", nil, apitypes.DMSPolicy{Mode: "local", LocalQuota: 1}, "authorized_cas"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := apitypes.CreateDMSRequest{Name: "val-" + string(rune('a'+i)), AuthorizedCAs: tt.cas, Policy: &tt.pol}
			wantProblem(t, e, "POST", "/api/v1/dmss", req, tt.field)
		})
	}
}

func wantProblem(t *testing.T, e *cptest.Env, method, path string, body any, field string) {
	t.Helper()
	status, raw := e.Do(method, path, e.AdminToken, body, nil)
	var p apitypes.Problem
	_ = json.Unmarshal(raw, &p)
	if status != http.StatusBadRequest || p.Field != field || p.Detail == "" {
		t.Errorf("got %d field %q (%s), want 400 naming %q", status, p.Field, p.Detail, field)
	}
}

func samePolicy(a, b apitypes.DMSPolicy) bool { return js(a) == js(b) }

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

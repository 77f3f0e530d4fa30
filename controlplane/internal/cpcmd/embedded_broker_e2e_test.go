package cpcmd_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/controlplane/internal/apitypes"
	"github.com/outpost-pki/outpost/controlplane/internal/cptest"
	"github.com/outpost-pki/outpost/testbed"
)

// agentStatus asks a running agent for its status.
func agentStatus(t *testing.T, a *cptest.Agent) (s struct {
	Online         bool   `json:"online"`
	IdentitySerial string `json:"identity_serial"`
	Disabled       bool   `json:"disabled"`
}) {
	t.Helper()
	if err := json.Unmarshal([]byte(a.Run("status", "--json")), &s); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	return s
}

// eventually is cptest.Eventually.
var eventually = cptest.Eventually

// TestEmbeddedBroker runs `outpost-controlplane serve` with its embedded
// MQTT broker (the single-machine default) and two agents, one with its
// identity key in swtpm and one in SoftHSM2. The agents verify the broker
// through their own identity chain (no broker CA configured). It shows:
// records sync into Postgres; an identity renewal over the sync link with
// a fresh TPM key and no operator action beyond asking for it early (the
// old certificate is revoked, the agent reconnects with the new one and
// keeps it across a restart); broker sessions and records queued while
// the control plane is down survive its restart; a disabled DMS is
// dropped at once and cannot connect again.
func TestEmbeddedBroker(t *testing.T) {
	cpBin, agentBin := cptest.BuildControlPlane(t), cptest.BuildAgent(t)
	pg := testbed.NewPostgres(t)
	dsn := pg.NewDatabase(t)
	dir := t.TempDir()
	token := cptest.RandomToken()
	brokerPort := cptest.FreePort(t)
	config := filepath.Join(dir, "config.yaml")
	doc := fmt.Sprintf("version: 1\ndatabase:\n  url: %q\nkeystore:\n  file:\n    dir: %q\n    passphrase:\n      value: embedded-broker-test\nadmin_token:\n  value: %q\nlog_level: debug\n"+
		"sync:\n  broker:\n    listen: 127.0.0.1:%d\n    data_dir: %q\n", dsn, filepath.Join(dir, "keys"), token, brokerPort, filepath.Join(dir, "broker"))
	if err := os.WriteFile(config, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := start(t, cpBin, config)
	cp.waitReady(t)
	e := cptest.Remote(t, "http://"+cp.addr, token, dsn)
	b := cptest.Broker{URL: fmt.Sprintf("mqtts://127.0.0.1:%d", brokerPort)}

	tpm := testbed.NewSwtpm(t)
	hsm := testbed.NewSoftHSM(t)
	tpmAgent := cptest.NewAgent(t, agentBin, e, b, "gw-tpm", "keystore:\n  backend: tpm\n  tpm:\n    swtpm_addr: "+tpm.Addr(), "", nil)
	hsmAgent := cptest.NewAgent(t, agentBin, e, b, "gw-hsm", fmt.Sprintf("keystore:\n  backend: pkcs11\n  pkcs11:\n    module: %s\n    token_label: %s\n    pin:\n      env: TEST_PIN", hsm.Module, hsm.Label),
		"", append(hsm.Env(), "TEST_PIN="+hsm.PIN))
	for _, a := range []*cptest.Agent{tpmAgent, hsmAgent} {
		a.Start()
		a.Run("selftest", "--records", "200", "--prefix", "first")
	}
	for _, a := range []*cptest.Agent{tpmAgent, hsmAgent} {
		e.WaitEvents(a, 200, time.Minute)
	}

	// Identity renewal over the sync link.
	oldSerial := agentStatus(t, tpmAgent).IdentitySerial
	if out := tpmAgent.Run("renew-identity"); !strings.Contains(out, "requested") {
		t.Fatalf("renew-identity: %s", out)
	}
	var newSerial string
	eventually(t, time.Minute, "the agent installs a renewed identity", func() bool {
		newSerial = agentStatus(t, tpmAgent).IdentitySerial
		return newSerial != oldSerial
	}, tpmAgent.Tail)
	eventually(t, time.Minute, "the registry makes it the DMS identity and revokes the old one", func() bool {
		var d apitypes.DMS
		var old apitypes.Certificate
		e.MustDo("GET", "/api/v1/dmss/"+tpmAgent.DMSID, e.AdminToken, nil, &d, 200)
		e.MustDo("GET", "/api/v1/certificates/"+oldSerial, e.AdminToken, nil, &old, 200)
		return d.IdentitySerial == newSerial && old.Status == "revoked" && old.RevocationReason == "superseded"
	}, func() string { return cp.log() })
	tpmAgent.Run("selftest", "--records", "50", "--prefix", "renewed")
	e.WaitEvents(tpmAgent, 250, time.Minute)
	if !strings.Contains(cp.log(), "disconnecting dms") {
		t.Error("the broker did not drop the connection made with the superseded certificate")
	}
	// The renewed identity (a new key in the TPM) survives a restart.
	tpmAgent.Kill(syscall.SIGTERM)
	tpmAgent.Start()
	tpmAgent.Run("selftest", "--records", "50", "--prefix", "restarted")
	e.WaitEvents(tpmAgent, 300, time.Minute)
	if s := agentStatus(t, tpmAgent); s.IdentitySerial != newSerial {
		t.Errorf("after a restart the agent uses identity %s, want %s", s.IdentitySerial, newSerial)
	}

	// The control plane and its broker restart; records queued meanwhile
	// arrive after it.
	cp.stop()
	hsmAgent.Run("selftest", "--records", "100", "--prefix", "during-restart")
	cp = start(t, cpBin, config)
	cp.waitReady(t)
	e.URL = "http://" + cp.addr
	e.WaitEvents(hsmAgent, 300, 90*time.Second)

	// Disabling a DMS drops its connection; it cannot connect again.
	e.MustDo("POST", "/api/v1/dmss/"+hsmAgent.DMSID+"/disable", e.AdminToken, nil, nil, 200)
	eventually(t, 30*time.Second, "the disabled DMS goes offline", func() bool { return !agentStatus(t, hsmAgent).Online }, hsmAgent.Tail)
	hsmAgent.Run("selftest", "--records", "10", "--prefix", "after-disable")
	time.Sleep(5 * time.Second) // reconnect attempts (after Banned, 5 minutes apart)
	if s := agentStatus(t, hsmAgent); s.Online || !s.Disabled {
		t.Errorf("the disabled DMS: online %v, disabled %v; want offline and disabled (the broker answers Banned)\n%s", s.Online, s.Disabled, hsmAgent.Tail())
	}
	if n := e.CountEvents(hsmAgent.DMSID); n != 300 {
		t.Errorf("%d records of the disabled DMS in Postgres, want 300 (none after disabling)", n)
	}
	// The other agent is unaffected.
	tpmAgent.Run("selftest", "--records", "10", "--prefix", "still-here")
	e.WaitEvents(tpmAgent, 310, time.Minute)
}

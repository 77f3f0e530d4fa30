package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/outpost-pki/outpost/agent/internal/agentconfig"
	"github.com/outpost-pki/outpost/agent/internal/store"
	"github.com/outpost-pki/outpost/agent/internal/syncclient"
	"github.com/outpost-pki/outpost/internal/buildinfo"
	"github.com/outpost-pki/outpost/internal/issuer"
	"github.com/outpost-pki/outpost/internal/keystore"
	"github.com/outpost-pki/outpost/internal/sdnotify"
	"github.com/outpost-pki/outpost/internal/tlspolicy"
	"github.com/outpost-pki/outpost/proto/syncpb"
	"github.com/outpost-pki/outpost/proto/syncproto"
)

// Status is what `outpost-agent status` shows.
type Status struct {
	DMSID            string    `json:"dms_id"`
	Online           bool      `json:"online"`
	QueueDepth       int       `json:"queue_depth"`
	IdentityNotAfter time.Time `json:"identity_not_after"`
	IdentitySerial   string    `json:"identity_serial,omitempty"`
	// Mode is the DMS policy's enrollment mode ("" before the first sync).
	Mode string `json:"mode,omitempty"`
	// ESTAddr is where the EST server listens ("" until it has its
	// certificate).
	ESTAddr            string    `json:"est_addr,omitempty"`
	ServerCertNotAfter time.Time `json:"est_server_cert_not_after,omitzero"`
	// LocalIssued counts local issuances since the last sync (the quota).
	LocalIssued    int64     `json:"local_issued_since_sync"`
	EdgeCANotAfter time.Time `json:"edge_ca_not_after,omitzero"`
	LastSync       time.Time `json:"last_sync,omitzero"`
	// DisabledSince is when the agent learned that the control plane
	// disabled its DMS (zero while it is not): it issues nothing then.
	Disabled      bool      `json:"disabled,omitempty"`
	DisabledSince time.Time `json:"disabled_since,omitzero"`
	Version       string    `json:"version"`
}

// kvDisabled holds when the broker first answered Banned (the control
// plane disabled this DMS); zero or absent: not disabled.
const kvDisabled = "dms_disabled"

// kvDisabledBy is who said so: "control plane" (a DMSDisabled answer) or
// "broker" (CONNACK Banned); see syncclient.Client.DisabledSource.
const kvDisabledBy = "dms_disabled_by"

// DisabledMessage is what devices are told while the DMS is disabled.
const DisabledMessage = "this gateway has been disabled by the control plane"

// Agent is a running agent.
type Agent struct {
	cfg   *agentconfig.Config
	ks    keystore.Store
	id    atomic.Pointer[Identity]
	store *store.Store
	sync  *syncclient.Client
	log   *slog.Logger
	// renewMu serialises identity renewal steps.
	renewMu sync.Mutex

	// state is what the control plane pushed (policy, CA bundles, CRLs).
	state agentState
	// edge is the delegated edge CA (local mode), server the EST server
	// certificate.
	edge, server *certSlot
	est          *estServer
	estAddr      atomic.Value // string, once listening
	// issuedSinceSync counts local issuances since the last message from
	// the control plane (the local quota).
	issuedSinceSync atomic.Int64
	// quotaSyncSeen is the down message (sync client LastSync, Unix ms)
	// that last restarted the quota.
	quotaSyncSeen   atomic.Int64
	lastSyncStored  atomic.Int64
	revocationsSeen atomic.Int64
	waiters         waiters
	maint           chan struct{}
	profMu          sync.Mutex
	profiles        map[string]*issuer.Profile
	// disabledSince is when the agent learned its DMS is disabled (Unix
	// ms; 0: it is not).
	disabledSince atomic.Int64
	// disabledByControlPlane: the restored state came from a DMSDisabled
	// answer (an accepted connection does not clear it).
	disabledByControlPlane bool
	// answered holds the OCSP responder requests answered lately
	// (responder.go).
	answeredMu sync.Mutex
	answered   map[string]time.Time
}

// disabled reports whether the control plane disabled this DMS.
func (a *Agent) disabled() bool { return a.disabledSince.Load() != 0 }

// loadDisabled restores what the last run learned about being disabled.
func (a *Agent) loadDisabled() error {
	t, ok, err := a.store.GetKVTime(kvDisabled)
	if err != nil {
		return err
	}
	if ok && !t.IsZero() {
		a.disabledSince.Store(t.UnixMilli())
		by, err := a.store.GetKV(kvDisabledBy)
		switch {
		case err == nil:
			a.disabledByControlPlane = string(by) == syncclient.SourceControlPlane
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		a.log.Error(DisabledMessage+" (learned before this start): issuing nothing; checking again at each connection attempt", "dms_id", a.identity().DMSID, "disabled_since", t)
	}
	return nil
}

// setDisabled is the sync client's OnDisabled: it persists the state and
// who said it (the source first: a crash between the two writes leaves
// the old state with the new source, never the reverse) before issuance
// stops or resumes, and says so in the log when the state changes.
func (a *Agent) setDisabled(v bool, source string) {
	at := time.Time{}
	if v {
		at = time.Now()
		if since := a.disabledSince.Load(); since != 0 {
			at = time.UnixMilli(since) // only the source changed
		}
	}
	if err := a.store.SetKV(kvDisabledBy, []byte(source)); err != nil {
		a.log.Error("recording the dms's disabled state", "err", err)
	}
	if err := a.store.SetKVTime(kvDisabled, at); err != nil {
		a.log.Error("recording the dms's disabled state", "err", err)
	}
	if v {
		if a.disabledSince.Swap(at.UnixMilli()) == 0 {
			a.log.Error(DisabledMessage+": refusing enrollments and keeping the outbox", "dms_id", a.identity().DMSID, "learned_from", source, "retry_every", a.sync.DisabledRetry.String())
		}
		return
	}
	a.disabledSince.Store(0)
	a.log.Info("the control plane accepts this gateway again: enrollments resume", "dms_id", a.identity().DMSID)
}

// identity is the identity in use (replaced by a renewal).
func (a *Agent) identity() *Identity { return a.id.Load() }

// OpenStore opens the agent's store in its data directory.
func OpenStore(cfg *agentconfig.Config) (*store.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	return store.Open(filepath.Join(cfg.DataDir, storeFile), store.Options{})
}

// Run runs the agent until ctx ends: the sync link and the admin server.
// ready, if not nil, is called with the admin address once serving.
func Run(ctx context.Context, cfg *agentconfig.Config, log *slog.Logger, ready func(adminAddr string)) error {
	ks, err := OpenKeystore(cfg)
	if err != nil {
		return fmt.Errorf("opening the key store: %w", err)
	}
	defer ks.Close()
	id, err := LoadIdentity(ctx, cfg, ks)
	if err != nil {
		return err
	}
	st, err := OpenStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if cfg.Sync.BrokerURL == "" {
		return errors.New("sync.broker_url is not configured")
	}
	a := &Agent{cfg: cfg, ks: ks, store: st, log: log, maint: make(chan struct{}, 1)}
	a.id.Store(id)
	a.edge = &certSlot{a: a, name: "edge-ca", file: edgeCAFile, kvKey: kvEdgeCA}
	a.server = &certSlot{a: a, name: "est-server", file: serverCertFile, kvKey: kvServerCert}
	for _, s := range []*certSlot{a.edge, a.server} {
		if err := s.load(ctx); err != nil {
			return err
		}
	}
	if err := a.loadState(); err != nil {
		return err
	}
	if err := a.initQuota(); err != nil {
		return err
	}
	if err := a.loadDisabled(); err != nil {
		return err
	}
	tlsCfg, err := a.brokerTLS()
	if err != nil {
		return err
	}
	a.sync = &syncclient.Client{Store: st, DMSID: id.DMSID, BrokerURL: cfg.Sync.BrokerURL, TLS: tlsCfg, Batch: cfg.Sync.BatchSize,
		AgentVersion: buildinfo.Version, Heartbeat: time.Duration(cfg.Sync.Heartbeat), Log: log, OnDown: a.onDown,
		IdentityNotAfter: func() time.Time { return a.identity().Cert.NotAfter }, HeartbeatExtra: a.fillHeartbeat,
		Disabled: a.disabled(), DisabledByControlPlane: a.disabledByControlPlane, OnDisabled: a.setDisabled}

	ln, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listener on %s: %w", cfg.AdminAddr, err)
	}
	rot := a.startRotation(ctx) // agentless rotation (rotation.go)
	srv := &http.Server{Handler: rot.admin(a.adminHandler()),
		ReadHeaderTimeout: adminReadHeaderTimeout,
		ReadTimeout:       30 * time.Second, // request bodies are small (POST /secrets: 8 MiB at most)
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		// No WriteTimeout: POST /rotate answers when the rotations end
		// (outpost-agent rotate waits up to 30 minutes by default) and
		// POST /renew-identity when the control plane answered. The
		// endpoint is for the local operator (admin_addr defaults to
		// loopback).
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	log.Info("agent running", "dms_id", id.DMSID, "admin_addr", ln.Addr().String(), "broker", cfg.Sync.BrokerURL)
	if ready != nil {
		ready(ln.Addr().String())
	}
	go a.renewLoop(ctx)
	go a.maintain(ctx)
	if cfg.EST.Enabled() {
		if a.est, err = newESTServer(a); err != nil {
			return err
		}
		go a.est.run(ctx)
	}
	a.notifySystemd(ctx)
	defer func() { _, _ = sdnotify.Notify(sdnotify.Stopping) }()
	return a.sync.Run(ctx)
}

// adminReadHeaderTimeout is how long a client of the admin endpoint has
// to send its request headers, however slowly it sends them.
const adminReadHeaderTimeout = 5 * time.Second

// brokerTLS is the sync link's TLS configuration: the client certificate
// is the identity in use at each handshake (a renewal takes effect at the
// next connection).
func (a *Agent) brokerTLS() (*tls.Config, error) {
	cfg := a.cfg
	roots := a.identity().Roots()
	if cfg.Sync.BrokerCAFile != "" {
		b, err := os.ReadFile(cfg.Sync.BrokerCAFile)
		if err != nil {
			return nil, fmt.Errorf("sync.broker_ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, errors.New("sync.broker_ca_file: no PEM certificates")
		}
	}
	u, err := url.Parse(cfg.Sync.BrokerURL)
	if err != nil {
		return nil, fmt.Errorf("sync.broker_url: %w", err)
	}
	name := cfg.Sync.BrokerServerName
	if name == "" {
		name = u.Hostname()
	}
	return tlspolicy.Client(&tls.Config{RootCAs: roots, ServerName: name,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c := a.identity().TLSCertificate()
			return &c, nil
		}}), nil
}

func (a *Agent) status() Status {
	a.syncedNow()
	depth, _ := a.store.Depth()
	id := a.identity()
	st := Status{DMSID: id.DMSID, Online: a.sync.Online(), QueueDepth: depth, IdentityNotAfter: id.Cert.NotAfter, IdentitySerial: id.Serial(), LastSync: a.sync.LastSync(), Version: buildinfo.Version,
		LocalIssued: a.issuedSinceSync.Load()}
	if ps := a.state.policy.Load(); ps != nil {
		st.Mode = ps.Policy.GetMode()
	}
	if v, ok := a.estAddr.Load().(string); ok {
		st.ESTAddr = v
	}
	if c := a.server.current(); c != nil {
		st.ServerCertNotAfter = c.Cert.NotAfter
	}
	if c := a.edge.current(); c != nil {
		st.EdgeCANotAfter = c.Cert.NotAfter
	}
	if ms := a.disabledSince.Load(); ms != 0 {
		st.Disabled, st.DisabledSince = true, time.UnixMilli(ms)
	}
	return st
}

// adminHandler serves /healthz, /readyz, /metrics, /status, /queue and
// /selftest on the local admin address.
func (a *Agent) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := a.store.Depth(); err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.status())
	})
	mux.HandleFunc("GET /queue", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		if n <= 0 || n > 1000 {
			n = 100
		}
		recs, err := a.store.Peek(n)
		if err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(queueView(recs))
	})
	mux.HandleFunc("POST /selftest", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("records"))
		if err != nil || n < 1 || n > 1_000_000 {
			http.Error(w, "records must be 1..1000000", http.StatusBadRequest)
			return
		}
		if err := EnqueueSelftest(r.Context(), a.store, r.URL.Query().Get("prefix"), n); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		a.sync.Kick()
		_, _ = w.Write([]byte("enqueued\n"))
	})
	mux.HandleFunc("POST /secrets", func(w http.ResponseWriter, r *http.Request) {
		var req MintRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		creds, err := MintSecrets(a.store, req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(creds)
	})
	mux.HandleFunc("POST /renew-identity", func(w http.ResponseWriter, r *http.Request) {
		msg, err := a.RenewIdentity(r.Context())
		if err != nil {
			a.log.Error("identity renewal", "err", err)
			http.Error(w, "identity renewal failed: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(msg + "\n"))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		s := a.status()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		online := 0
		if s.Online {
			online = 1
		}
		fmt.Fprintf(w, "# HELP outpost_agent_online 1 when the broker connection is up.\n# TYPE outpost_agent_online gauge\noutpost_agent_online %d\n", online)
		disabled := 0
		if s.Disabled {
			disabled = 1
		}
		fmt.Fprintf(w, "# HELP outpost_agent_disabled 1 when the control plane disabled this gateway's DMS (it issues nothing).\n# TYPE outpost_agent_disabled gauge\noutpost_agent_disabled %d\n", disabled)
		fmt.Fprintf(w, "# HELP outpost_agent_outbox_depth Records waiting to reach the control plane.\n# TYPE outpost_agent_outbox_depth gauge\noutpost_agent_outbox_depth %d\n", s.QueueDepth)
		fmt.Fprintf(w, "# HELP outpost_agent_identity_not_after_seconds Expiry of the DMS identity certificate.\n# TYPE outpost_agent_identity_not_after_seconds gauge\noutpost_agent_identity_not_after_seconds %d\n", s.IdentityNotAfter.Unix())
		if a.est != nil {
			a.est.stats.write(w)
		}
		fmt.Fprintf(w, "# HELP outpost_agent_local_issued_since_sync Certificates the edge CA issued since the last sync (local quota).\n# TYPE outpost_agent_local_issued_since_sync gauge\noutpost_agent_local_issued_since_sync %d\n", s.LocalIssued)
		if !s.EdgeCANotAfter.IsZero() {
			fmt.Fprintf(w, "# HELP outpost_agent_edge_ca_not_after_seconds Expiry of the edge CA certificate.\n# TYPE outpost_agent_edge_ca_not_after_seconds gauge\noutpost_agent_edge_ca_not_after_seconds %d\n", s.EdgeCANotAfter.Unix())
		}
		if !s.LastSync.IsZero() {
			fmt.Fprintf(w, "# HELP outpost_agent_last_sync_seconds Last message from the control plane.\n# TYPE outpost_agent_last_sync_seconds gauge\noutpost_agent_last_sync_seconds %d\n", s.LastSync.Unix())
		}
	})
	return mux
}

// QueueItem is one pending outbox record as `outpost-agent queue` shows it.
type QueueItem struct {
	ID       string `json:"id"`
	DeviceID string `json:"device_id,omitempty"`
	Kind     string `json:"kind"`
}

func queueView(recs []store.OutboxRecord) []QueueItem {
	out := []QueueItem{}
	for _, r := range recs {
		var rec syncpb.Record
		kind := "unreadable"
		if proto.Unmarshal(r.Payload, &rec) == nil {
			kind = fmt.Sprintf("%T", rec.GetPayload())
			if len(kind) > len("*syncpb.Record_") {
				kind = kind[len("*syncpb.Record_"):]
			}
		}
		out = append(out, QueueItem{ID: r.ID, DeviceID: r.DeviceID, Kind: kind})
	}
	return out
}

// EnqueueSelftest puts n "agent.selftest" event records into the outbox:
// an end-to-end check of the sync link (and the load of the crash tests).
func EnqueueSelftest(ctx context.Context, st *store.Store, prefix string, n int) error {
	if prefix == "" {
		prefix = "selftest-" + syncproto.NewMessageID()
	}
	batch := make([]store.OutboxRecord, 0, 500)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s-%07d", prefix, i)
		if len(id) > syncproto.MaxIDLength {
			return fmt.Errorf("selftest prefix too long")
		}
		b, err := proto.Marshal(&syncpb.Record{RecordId: id, Payload: &syncpb.Record_Event{Event: &syncpb.Event{Kind: "agent.selftest", AtUnixMs: time.Now().UnixMilli()}}})
		if err != nil {
			return err
		}
		batch = append(batch, store.OutboxRecord{ID: id, Payload: b})
		if len(batch) == cap(batch) || i == n-1 {
			if err := st.EnqueueMany(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

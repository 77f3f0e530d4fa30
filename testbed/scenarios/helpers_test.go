package scenarios

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-pki/outpost/internal/est/estclient"
	"github.com/outpost-pki/outpost/testbed/system"
)

// agentStatus is the agent's /status now (zero, false when it does not
// answer, for instance while it restarts).
func agentStatus(s *system.System) (system.AgentStatus, bool) {
	var st system.AgentStatus
	ok := false
	_ = s.WaitAgent(context.Background(), 0, func(a system.AgentStatus) bool { st, ok = a, true; return true })
	return st, ok
}

// waitAgentUp polls the agent's /status until it answers with its EST
// server listening, for instance after Proc("agent").Start; it fails t
// after within.
func waitAgentUp(t *testing.T, s *system.System, within time.Duration) {
	t.Helper()
	if err := s.WaitAgent(context.Background(), within, func(st system.AgentStatus) bool { return st.ESTAddr != "" }); err != nil {
		t.Fatalf("the agent's /status did not show its EST server within %v: %v", within, err)
	}
}

// waitQueueEmpty waits up to a minute for the agent's outbox to be empty
// (every record acknowledged); it fails t otherwise.
func waitQueueEmpty(t *testing.T, s *system.System) {
	t.Helper()
	if err := s.WaitAgent(context.Background(), time.Minute, func(st system.AgentStatus) bool { return st.QueueDepth == 0 }); err != nil {
		st, _ := agentStatus(s)
		t.Errorf("the agent's queue depth is %d a minute after the registry had everything, want 0", st.QueueDepth)
	}
}

// fleetOptions tunes enrollFleet. The zero value is fine.
type fleetOptions struct {
	// Workers is how many devices enroll at the same time, each worker
	// on its own keep-alive connection. Default 8.
	Workers int
	// Deadline is how long one device keeps retrying before it gives up
	// (which fails the test in wait). Default 3 minutes.
	Deadline time.Duration
}

// enrolled is what one device of a fleet did and got.
type enrolled struct {
	Device string
	// Cert is the certificate the device accepted: the answer to its
	// last attempt.
	Cert *x509.Certificate
	// SPKI is the public key of the device's CSR, the same on every
	// attempt.
	SPKI []byte
	// Attempts counts the requests the device sent. Unanswered counts
	// those that ended without an answer the device could read (a
	// transport error: connection refused or reset, timeout, body cut
	// short): the agent may have signed and recorded a certificate for
	// such an attempt that the device never saw.
	Attempts, Unanswered int
}

// fleet is a factory line of simulated devices enrolling over EST with
// one-time secrets (enrollFleet). Its methods are for the test goroutine.
type fleet struct {
	n        int
	done     chan struct{}
	cancel   context.CancelFunc
	accepted atomic.Int64

	mu     sync.Mutex
	got    map[string]*enrolled
	failed map[string]string // device → why it gave up
}

// enrollFleet starts enrolling every cred over EST (simpleenroll,
// estclient) from o.Workers workers and returns at once. Each device
// makes one key and one CSR and sends that same CSR with the same secret
// until the agent answers with a certificate: it retries after a
// transport error (the agent killed or restarting), a 503 or 429 (after
// the Retry-After the answer carries, else a backoff from 100 ms to 1 s)
// and a 202 (after its Retry-After). Any other answer (401, 403, 400) is
// a refusal: the device gives up and wait reports it, as it does for a
// device still without a certificate after o.Deadline. The fleet stops
// when t ends.
func enrollFleet(t *testing.T, s *system.System, creds []system.Cred, o fleetOptions) *fleet {
	t.Helper()
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Deadline <= 0 {
		o.Deadline = 3 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{n: len(creds), done: make(chan struct{}), cancel: cancel, got: map[string]*enrolled{}, failed: map[string]string{}}
	jobs := make(chan system.Cred)
	var wg sync.WaitGroup
	for w := 0; w < o.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ra := &retryAfterTransport{rt: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ESTCA, MinVersion: tls.VersionTLS12}}}
			c := &estclient.Client{BaseURL: s.ESTURL, HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: ra}}
			for cr := range jobs {
				e, why := enrollOne(ctx, c, ra, cr, o.Deadline)
				f.mu.Lock()
				if why != "" {
					f.failed[cr.Device] = why
				} else {
					f.got[cr.Device] = e
					f.accepted.Add(1)
				}
				f.mu.Unlock()
			}
		}()
	}
	go func() {
		defer close(f.done)
		for _, cr := range creds {
			select {
			case jobs <- cr:
			case <-ctx.Done():
			}
		}
		close(jobs)
		wg.Wait()
	}()
	t.Cleanup(func() { cancel(); <-f.done })
	return f
}

// enrollOne enrolls one device, retrying as enrollFleet says; why is
// not empty when it gave up.
func enrollOne(ctx context.Context, c *estclient.Client, ra *retryAfterTransport, cr system.Cred, within time.Duration) (e *enrolled, why string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err.Error()
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cr.Device}}, key)
	if err != nil {
		return nil, err.Error()
	}
	parsed, _ := x509.ParseCertificateRequest(csr)
	e = &enrolled{Device: cr.Device, SPKI: parsed.RawSubjectPublicKeyInfo}
	c.Username, c.Password = cr.Device, cr.Secret
	deadline := time.Now().Add(within)
	backoff := 100 * time.Millisecond
	for {
		e.Attempts++
		cert, err := c.SimpleEnroll(ctx, csr)
		if err == nil {
			if !bytes.Equal(cert.RawSubjectPublicKeyInfo, e.SPKI) {
				return nil, fmt.Sprintf("attempt %d: the certificate %x is for another key", e.Attempts, cert.SerialNumber)
			}
			e.Cert = cert
			return e, ""
		}
		var retry *estclient.RetryError
		var he *estclient.HTTPError
		wait := backoff
		switch {
		case errors.As(err, &retry):
			wait = max(retry.After, 100*time.Millisecond) // 0 when the header is missing
		case errors.As(err, &he) && (he.Status == http.StatusServiceUnavailable || he.Status == http.StatusTooManyRequests):
			if ra.last > 0 {
				wait = ra.last
			}
		case errors.As(err, &he):
			return nil, fmt.Sprintf("attempt %d refused: %v", e.Attempts, err)
		default:
			e.Unanswered++
		}
		backoff = min(2*backoff, time.Second)
		if time.Now().Add(wait).After(deadline) {
			return nil, fmt.Sprintf("no certificate after %d attempts in %v; last: %v", e.Attempts, within, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Sprintf("stopped after %d attempts; last: %v", e.Attempts, err)
		case <-time.After(wait):
		}
	}
}

// retryAfterTransport keeps the Retry-After (in seconds) of the last
// answer, which estclient does not report for 429 and 503. One per
// worker: it is not safe for concurrent requests.
type retryAfterTransport struct {
	rt   http.RoundTripper
	last time.Duration
}

func (r *retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.last = 0
	resp, err := r.rt.RoundTrip(req)
	if err == nil {
		if secs, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && secs > 0 {
			r.last = time.Duration(secs) * time.Second
		}
	}
	return resp, err
}

// Accepted is how many devices have accepted a certificate so far.
func (f *fleet) Accepted() int { return int(f.accepted.Load()) }

// waitAccepted waits until at least n devices accepted a certificate; it
// fails t when the fleet finished with fewer or after within.
func (f *fleet) waitAccepted(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for f.Accepted() < n {
		select {
		case <-f.done:
			if f.Accepted() < n {
				t.Fatalf("the fleet finished with %d devices enrolled, waiting for %d", f.Accepted(), n)
			}
		case <-deadline:
			t.Fatalf("%d devices enrolled after %v, waiting for %d", f.Accepted(), within, n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// wait waits until every device of the fleet accepted a certificate or
// gave up, fails t for each that gave up, and returns what the devices
// accepted by device id (for assertExactlyOnce). It logs the attempts
// and unanswered attempts in total.
func (f *fleet) wait(t *testing.T) map[string]*enrolled {
	t.Helper()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	var failed []string
	for d, why := range f.failed {
		failed = append(failed, d+": "+why)
	}
	sort.Strings(failed)
	for i, line := range failed {
		if i == 10 {
			t.Errorf("... and %d more devices without a certificate", len(failed)-10)
			break
		}
		t.Errorf("device %s", line)
	}
	attempts, unanswered := 0, 0
	out := make(map[string]*enrolled, len(f.got))
	for d, e := range f.got {
		out[d] = e
		attempts += e.Attempts
		unanswered += e.Unanswered
	}
	t.Logf("fleet: %d of %d devices enrolled in %d attempts (%d unanswered)", len(out), f.n, attempts, unanswered)
	return out
}

// registryCert is a certificate of the DMS's edge CAs in the registry.
type registryCert struct {
	Serial, Device string
	DER            []byte
	Active         bool // the device's active slot certificate for its CA
	Events         int  // certificate.issued events naming the serial
}

// assertExactlyOnce waits (up to 2 minutes, logging progress every 10 s)
// until the registry holds every certificate in accepted (device id →
// what it accepted) with the same DER, then checks the registry against
// what the devices saw:
//
//   - each accepted serial is recorded once, with one certificate.issued
//     event, for the device that accepted it;
//   - the DMS's edge CAs issued no certificate to a device that is not in
//     accepted;
//   - each accepted device has exactly one active slot certificate from
//     the DMS's edge CAs, and the devices table lists it once, for this
//     DMS; it lists no other device for this DMS.
//
// Extra certificates. In local mode the agent signs on every accepted
// request: a retry with the same CSR and one-time secret passes the
// secret check (store.ConsumeSecret accepts the request id, the hash of
// the CSR's key, that consumed it) and gets a new certificate with a new
// serial. The agent records each one in its outbox in the commit that
// signs it, before it answers. So when an answer is lost (the agent
// killed after the commit, a connection cut), the registry rightly holds
// a certificate the device never saw. The rule: a device may have, besides
// the one it accepted, at most as many certificates as it had unanswered
// attempts, each for the same public key as its CSR, and its active slot
// certificate is one of these. A device whose every attempt was answered
// has exactly the one it accepted.
func assertExactlyOnce(t *testing.T, s *system.System, accepted map[string]*enrolled) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	serials := make([]string, 0, len(accepted))
	want := map[string]*enrolled{}
	for _, e := range accepted {
		sn := serialOf(e.Cert)
		serials = append(serials, sn)
		want[sn] = e
	}
	start := time.Now()
	lastLog := start
	for {
		n, err := countRecorded(ctx, s.DSN, serials, want)
		if err == nil && n == len(serials) {
			t.Logf("registry holds all %d accepted certificates after %v", n, time.Since(start).Round(time.Millisecond))
			break
		}
		st, _ := agentStatus(s)
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("after 2 minutes the registry holds %d of the %d accepted certificates (last error: %v; agent online %v, queue depth %d)", n, len(serials), err, st.Online, st.QueueDepth)
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			t.Logf("registry holds %d of %d accepted certificates (error: %v); agent online %v, queue depth %d", n, len(serials), err, st.Online, st.QueueDepth)
		}
		time.Sleep(300 * time.Millisecond)
	}

	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatalf("connecting to the registry: %v", err)
	}
	defer conn.Close(context.Background())
	certs, err := edgeCerts(ctx, conn, s.DMSID)
	if err != nil {
		t.Fatal(err)
	}
	byDevice := map[string][]registryCert{}
	extras := 0
	for _, c := range certs {
		if c.Events != 1 {
			t.Errorf("certificate %s of device %s has %d certificate.issued events, want 1", c.Serial, c.Device, c.Events)
		}
		if _, ok := accepted[c.Device]; !ok {
			t.Errorf("certificate %s from the DMS's edge CA belongs to device %q, which never enrolled", c.Serial, c.Device)
			continue
		}
		byDevice[c.Device] = append(byDevice[c.Device], c)
	}
	for d, e := range accepted {
		sn := serialOf(e.Cert)
		var found, active int
		activeOK := false
		for _, c := range byDevice[d] {
			if c.Active {
				active++
			}
			if c.Serial == sn {
				found++
				activeOK = activeOK || c.Active
				continue
			}
			extra, err := x509.ParseCertificate(c.DER)
			switch {
			case err != nil:
				t.Errorf("device %s: certificate %s in the registry does not parse: %v", d, c.Serial, err)
			case !bytes.Equal(extra.RawSubjectPublicKeyInfo, e.SPKI):
				t.Errorf("device %s: the registry holds certificate %s for a key the device never used (it accepted %s)", d, c.Serial, sn)
			default:
				activeOK = activeOK || c.Active
			}
		}
		if found != 1 {
			t.Errorf("device %s: accepted certificate %s is in the registry %d times for this device, want 1", d, sn, found)
		}
		if n := len(byDevice[d]) - 1; n > e.Unanswered {
			t.Errorf("device %s: the registry holds %d certificates besides the accepted %s, but only %d of its %d attempts went unanswered", d, n, sn, e.Unanswered, e.Attempts)
		} else if n > 0 {
			extras += n
		}
		if active != 1 || !activeOK {
			t.Errorf("device %s: %d active slot certificates from the DMS's edge CAs, want 1 of its own key", d, active)
		}
	}
	t.Logf("registry: %d certificates from the DMS's edge CAs for %d devices (%d extra from answers lost in flight)", len(certs), len(accepted), extras)

	rows, err := conn.Query(ctx, `SELECT id, dms_id::text FROM devices WHERE dms_id = $1 OR id = ANY($2)`, s.DMSID, deviceIDs(accepted))
	if err != nil {
		t.Fatalf("reading devices: %v", err)
	}
	seen := map[string]int{}
	for rows.Next() {
		var id string
		var dms *string
		if err := rows.Scan(&id, &dms); err != nil {
			t.Fatal(err)
		}
		seen[id]++
		switch {
		case accepted[id] == nil:
			t.Errorf("devices lists %q for the DMS, a device that never enrolled", id)
		case dms == nil || *dms != s.DMSID:
			t.Errorf("device %s is listed for DMS %v, want %s", id, dms, s.DMSID)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for d := range accepted {
		if seen[d] != 1 {
			t.Errorf("devices lists %s %d times, want 1", d, seen[d])
		}
	}
}

// countRecorded counts the serials the registry holds with the DER the
// device accepted.
func countRecorded(ctx context.Context, dsn string, serials []string, want map[string]*enrolled) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT serial, der FROM certificates WHERE serial = ANY($1)`, serials)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var sn string
		var der []byte
		if err := rows.Scan(&sn, &der); err != nil {
			return n, err
		}
		if e := want[sn]; e != nil && bytes.Equal(der, e.Cert.Raw) {
			n++
		}
	}
	return n, rows.Err()
}

// edgeCerts lists the certificates of the DMS's edge CAs with their slot
// state and the number of certificate.issued events naming each.
func edgeCerts(ctx context.Context, conn *pgx.Conn, dmsID string) ([]registryCert, error) {
	rows, err := conn.Query(ctx, `
		SELECT c.serial, coalesce(c.device_id, ''), c.der,
		       EXISTS (SELECT 1 FROM device_slot_certs s WHERE s.serial = c.serial AND s.active),
		       (SELECT count(*) FROM events e WHERE e.dms_id = $1 AND e.kind = 'certificate.issued' AND e.detail->>'serial' = c.serial)
		FROM certificates c JOIN cas ON cas.id = c.issuer_id
		WHERE cas.dms_id = $1
		ORDER BY c.serial`, dmsID)
	if err != nil {
		return nil, fmt.Errorf("reading the edge CAs' certificates: %w", err)
	}
	defer rows.Close()
	var out []registryCert
	for rows.Next() {
		var c registryCert
		if err := rows.Scan(&c.Serial, &c.Device, &c.DER, &c.Active, &c.Events); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func deviceIDs(m map[string]*enrolled) []string {
	out := make([]string, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	return out
}

// serialOf is a certificate's serial as the registry keys it (lowercase
// hex).
func serialOf(c *x509.Certificate) string { return strings.ToLower(c.SerialNumber.Text(16)) }

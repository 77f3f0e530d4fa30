package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"net/smtp"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Webhook headers.
const (
	HeaderEvent     = "X-Outpost-Event"
	HeaderDelivery  = "X-Outpost-Delivery"
	HeaderTimestamp = "X-Outpost-Timestamp"
	HeaderSignature = "X-Outpost-Signature"
)

// maxResponseBody caps what is read of a receiver's response (it is
// discarded; reading lets the connection be reused).
const maxResponseBody = 64 << 10

// WebhookBody is the JSON body of a webhook.
type WebhookBody struct {
	// ID is the delivery key, the same as the X-Outpost-Delivery header.
	ID    string `json:"id"`
	Event Event  `json:"event"`
}

// Sign returns the X-Outpost-Signature value for a body sent at
// timestamp (unix seconds, as in X-Outpost-Timestamp):
// "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
func Sign(secret string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a webhook's signature in constant time, and that its
// timestamp is within tolerance of now (replay protection; zero tolerance
// skips that check). It is what a Go receiver would call.
func Verify(secret string, header http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	ts, err := strconv.ParseInt(header.Get(HeaderTimestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("notify: bad %s header", HeaderTimestamp)
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
			return fmt.Errorf("notify: timestamp %d is outside the tolerance", ts)
		}
	}
	if !hmac.Equal([]byte(header.Get(HeaderSignature)), []byte(Sign(secret, ts, body))) {
		return fmt.Errorf("notify: signature mismatch")
	}
	return nil
}

// retryAfterError is a failure whose receiver asked for a delay.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

func (d *Dispatcher) sendWebhook(ctx context.Context, dl *delivery) error {
	body, err := json.Marshal(WebhookBody{ID: dl.Key(), Event: dl.Event})
	if err != nil {
		return err
	}
	ts := d.now().Unix()
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderEvent, dl.Event.Kind)
	h.Set(HeaderDelivery, dl.Key())
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, Sign(dl.Secret, ts, body))
	return d.post(ctx, dl.Target, h, body)
}

// chatMessage is a Slack / Teams / Mattermost incoming-webhook message.
type chatMessage struct {
	Text string `json:"text"`
}

func (d *Dispatcher) sendChat(ctx context.Context, dl *delivery) error {
	body, err := json.Marshal(chatMessage{Text: summary(&dl.Event)})
	if err != nil {
		return err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return d.post(ctx, dl.Target, h, body)
}

// post sends body; a 2xx answer is success, anything else an error.
func (d *Dispatcher) post(ctx context.Context, target string, h http.Header, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = h
	req.Header.Set("User-Agent", "outpost-notify/1")
	resp, err := d.http.Do(req)
	if err != nil {
		// url.Error repeats the target URL, which may hold a token (chat
		// webhooks): keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			if ue.Timeout() {
				return fmt.Errorf("request timed out after %v", sendTimeout)
			}
			return fmt.Errorf("request failed: %w", ue.Err)
		}
		return fmt.Errorf("request failed: %w", err)
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("receiver answered %s: %q", resp.Status, bytes.TrimSpace(head))
	if s := resp.Header.Get("Retry-After"); s != "" && (resp.StatusCode == 429 || resp.StatusCode == 503) {
		if secs, perr := strconv.Atoi(s); perr == nil && secs > 0 {
			return &retryAfterError{err: err, after: time.Duration(secs) * time.Second}
		}
	}
	return err
}

// summary is one readable line about an event (chat text).
func summary(e *Event) string {
	var b strings.Builder
	b.WriteString("[Outpost] ")
	b.WriteString(e.Kind)
	if e.DeviceID != nil {
		fmt.Fprintf(&b, " device=%s", *e.DeviceID)
	}
	if e.DMSID != nil {
		fmt.Fprintf(&b, " dms=%s", e.DMSID)
	}
	if e.CAID != nil {
		fmt.Fprintf(&b, " ca=%s", e.CAID)
	}
	if e.Kind == DigestKind {
		// The digest's lists are too long for a line: counts only.
		var dg struct {
			Day   string `json:"day"`
			Total int    `json:"total"`
			ByCA  []struct {
				Name  string `json:"ca_name"`
				Count int    `json:"count"`
			} `json:"by_ca"`
		}
		if json.Unmarshal(e.Detail, &dg) == nil {
			fmt.Fprintf(&b, " %s: %d certificates expire within 30 days", dg.Day, dg.Total)
			for _, c := range dg.ByCA {
				fmt.Fprintf(&b, "; %s: %d", c.Name, c.Count)
			}
		}
	} else {
		for _, kv := range detailPairs(e.Detail, 10) {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	fmt.Fprintf(&b, " at %s (event %d)", e.At.UTC().Format(time.RFC3339), e.ID)
	return truncateLine(b.String(), 1000)
}

// detailPairs flattens the top level of a detail object into sorted
// key/value pairs (nested values as compact JSON), at most limit of them.
func detailPairs(detail json.RawMessage, limit int) [][2]string {
	var m map[string]json.RawMessage
	if json.Unmarshal(detail, &m) != nil {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out [][2]string
	for _, k := range keys {
		if len(out) == limit {
			out = append(out, [2]string{"more", strconv.Itoa(len(keys) - limit)})
			break
		}
		var s string
		if json.Unmarshal(m[k], &s) != nil {
			var buf bytes.Buffer
			if json.Compact(&buf, m[k]) == nil {
				s = buf.String()
			} else {
				s = string(m[k])
			}
		}
		out = append(out, [2]string{k, truncateLine(s, 200)})
	}
	return out
}

// truncateLine cuts s to n bytes on a rune boundary and removes line
// breaks (they would split a chat line or a header).
func truncateLine(s string, n int) string {
	s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	if len(s) <= n {
		return s
	}
	return truncateError(s[:n]) + "..."
}

// --- email ---------------------------------------------------------------

func (d *Dispatcher) sendEmail(ctx context.Context, dl *delivery) error {
	cfg := d.SMTP
	if cfg.Addr == "" || cfg.From == "" {
		return fmt.Errorf("email is not configured (smtp addr and from)")
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return fmt.Errorf("smtp addr %q: %w", cfg.Addr, err)
	}
	msg, err := d.emailMessage(dl)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, smtpTimeout)
	defer cancel()
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("connecting to the mail server: %w", err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	// Unblock reads and writes when ctx ends early (shutdown).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp greeting: %w", err)
	}
	defer c.Close()
	if cfg.HeloName != "" {
		if err := c.Hello(cfg.HeloName); err != nil {
			return fmt.Errorf("smtp EHLO: %w", err)
		}
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if cfg.TLS != nil {
			tc = cfg.TLS.Clone()
			if tc.ServerName == "" {
				tc.ServerName = host
			}
		}
		if err := c.StartTLS(tc); err != nil {
			return fmt.Errorf("smtp starttls: %w", err)
		}
	}
	if cfg.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return fmt.Errorf("the mail server does not offer AUTH")
		}
		if err := c.Auth(smtp.PlainAuth("", cfg.Username, cfg.Password, host)); err != nil {
			return fmt.Errorf("smtp auth: %w", err)
		}
	}
	if err := c.Mail(cfg.From); err != nil {
		return fmt.Errorf("smtp MAIL FROM: %w", err)
	}
	if err := c.Rcpt(dl.Target); err != nil {
		return fmt.Errorf("smtp RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("smtp DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp DATA: %w", err)
	}
	// The message is accepted once DATA is; a failed QUIT changes nothing.
	_ = c.Quit()
	return nil
}

// emailMessage renders the RFC 5322 message: a plain-text body in
// quoted-printable, the Message-ID derived from the delivery key so a
// retried delivery carries the same id.
func (d *Dispatcher) emailMessage(dl *delivery) ([]byte, error) {
	from, err := mail.ParseAddress(d.SMTP.From)
	if err != nil {
		return nil, fmt.Errorf("smtp from %q: %w", d.SMTP.From, err)
	}
	domain := "outpost.invalid"
	if _, dom, ok := strings.Cut(from.Address, "@"); ok && dom != "" {
		domain = dom
	}
	e := &dl.Event
	subject := "[Outpost] " + e.Kind
	switch {
	case e.DeviceID != nil:
		subject += " device " + *e.DeviceID
	case e.Kind == "digest.expiry":
		var dg struct {
			Total int    `json:"total"`
			Day   string `json:"day"`
		}
		if json.Unmarshal(e.Detail, &dg) == nil {
			subject += fmt.Sprintf(" %s: %d certificates expire within 30 days", dg.Day, dg.Total)
		}
	}
	var body strings.Builder
	fmt.Fprintf(&body, "Event: %s\n", e.Kind)
	fmt.Fprintf(&body, "Event ID: %d\n", e.ID)
	fmt.Fprintf(&body, "At: %s\n", e.At.UTC().Format(time.RFC3339))
	if e.DeviceID != nil {
		fmt.Fprintf(&body, "Device: %s\n", *e.DeviceID)
	}
	if e.DMSID != nil {
		fmt.Fprintf(&body, "DMS: %s\n", e.DMSID)
	}
	if e.CAID != nil {
		fmt.Fprintf(&body, "CA: %s\n", e.CAID)
	}
	if pairs := detailPairs(e.Detail, 50); len(pairs) > 0 {
		body.WriteString("\nDetail:\n")
		for _, kv := range pairs {
			fmt.Fprintf(&body, "  %s: %s\n", kv[0], kv[1])
		}
	}
	if len(e.Detail) > 2 {
		var pretty bytes.Buffer
		if json.Indent(&pretty, e.Detail, "", "  ") == nil && pretty.Len() < 64<<10 {
			body.WriteString("\nDetail (JSON):\n")
			body.Write(pretty.Bytes())
			body.WriteString("\n")
		}
	}
	fmt.Fprintf(&body, "\nDelivery: %s\n", dl.Key())

	var m bytes.Buffer
	hdr := func(k, v string) { fmt.Fprintf(&m, "%s: %s\r\n", k, v) }
	hdr("From", from.String())
	hdr("To", dl.Target)
	hdr("Subject", mime.QEncoding.Encode("utf-8", truncateLine(subject, 200)))
	hdr("Date", d.now().UTC().Format(time.RFC1123Z))
	hdr("Message-ID", fmt.Sprintf("<%d.%s@%s>", e.ID, dl.SubscriptionID, domain))
	hdr("X-Outpost-Delivery", dl.Key())
	hdr("X-Outpost-Event", truncateLine(e.Kind, 200))
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	m.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&m)
	if _, err := qp.Write([]byte(strings.ReplaceAll(body.String(), "\n", "\r\n"))); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return m.Bytes(), nil
}

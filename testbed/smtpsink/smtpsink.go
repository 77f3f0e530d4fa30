// Package smtpsink is a small SMTP server for tests: it listens on
// loopback, speaks enough of RFC 5321 for net/smtp clients (EHLO/HELO,
// MAIL FROM, RCPT TO, DATA with dot-stuffing, RSET, NOOP, QUIT) and keeps
// every message it accepts in memory. It does not relay, authenticate or
// offer STARTTLS, so clients send in the clear, which is what a loopback
// test wants.
package smtpsink

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Defaults of Options.
const (
	DefaultMaxSize       = 1 << 20
	DefaultMaxRecipients = 100
	DefaultIdleTimeout   = 30 * time.Second
)

// RFC 5321 4.5.3.1: a command line is at most 512 octets and a text line
// at most 1000, both counting the CRLF. Longer lines are refused rather
// than buffered without bound.
const (
	maxCommandLine = 512
	maxTextLine    = 1000
)

// Options tunes Start. The zero value is fine.
type Options struct {
	// Addr to listen on; default "127.0.0.1:0" (a free loopback port).
	Addr string
	// Hostname announced in the greeting; default "smtpsink.test".
	Hostname string
	// MaxSize caps a message's DATA in bytes (advertised as SIZE); larger
	// messages are read to the end and refused with 552. Default 1 MiB.
	MaxSize int
	// MaxRecipients per message; more get 452. Default 100.
	MaxRecipients int
	// IdleTimeout closes a connection that sends nothing for this long.
	// Default 30s.
	IdleTimeout time.Duration
}

// Message is one accepted message.
type Message struct {
	From string
	To   []string
	// Data is the message as received (headers and body), with CRLF line
	// endings and dot-stuffing removed.
	Data     []byte
	Received time.Time
}

// Parse parses Data as an RFC 5322 message.
func (m Message) Parse() (*mail.Message, error) {
	return mail.ReadMessage(bytes.NewReader(m.Data))
}

// Header returns the message's header (empty if it does not parse).
func (m Message) Header() mail.Header {
	msg, err := m.Parse()
	if err != nil {
		return mail.Header{}
	}
	return msg.Header
}

// Subject returns the decoded Subject header.
func (m Message) Subject() string {
	s := m.Header().Get("Subject")
	if dec, err := new(mime.WordDecoder).DecodeHeader(s); err == nil {
		return dec
	}
	return s
}

// Body returns the body, decoded when its Content-Transfer-Encoding is
// quoted-printable.
func (m Message) Body() (string, error) {
	msg, err := m.Parse()
	if err != nil {
		return "", err
	}
	var r io.Reader = msg.Body
	if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		r = quotedprintable.NewReader(r)
	}
	b, err := io.ReadAll(r)
	return string(b), err
}

// Server is a running sink. Its methods are safe for concurrent use.
type Server struct {
	// Addr is the host:port the server listens on.
	Addr string

	opts Options
	ln   net.Listener

	mu       sync.Mutex
	msgs     []Message
	changed  chan struct{} // closed and replaced whenever msgs grows
	failNext int
	conns    map[net.Conn]struct{}
	closed   bool
	wg       sync.WaitGroup
}

// New starts a sink for the test t and closes it when t ends.
func New(t testing.TB) *Server {
	t.Helper()
	s, err := Start(Options{})
	if err != nil {
		t.Fatalf("starting the smtp sink: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Start listens and serves in the background until Close.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Hostname == "" {
		opts.Hostname = "smtpsink.test"
	}
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.MaxRecipients <= 0 {
		opts.MaxRecipients = DefaultMaxRecipients
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtpsink: listening: %w", err)
	}
	s := &Server{Addr: ln.Addr().String(), opts: opts, ln: ln, changed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Messages returns a copy of the messages accepted so far, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Wait returns the messages once at least n were accepted, or ctx's error
// with those accepted so far.
func (s *Server) Wait(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			out := append([]Message(nil), s.msgs...)
			s.mu.Unlock()
			return out, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Messages(), ctx.Err()
		}
	}
}

// FailNext makes the next n messages fail at the end of DATA with a
// temporary error (451), to test a client's retries.
func (s *Server) FailNext(n int) {
	s.mu.Lock()
	s.failNext = n
	s.mu.Unlock()
}

// Close stops listening, closes open connections and waits for their
// handlers to return.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// errLineTooLong: a line past its RFC 5321 limit.
var errLineTooLong = errors.New("line too long")

// session is one SMTP connection's state.
type session struct {
	s    *Server
	c    net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	helo bool
	from *string
	to   []string
}

func (s *Server) serve(c net.Conn) {
	ss := &session{s: s, c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
	ss.reply(220, s.opts.Hostname+" ESMTP smtpsink ready")
	for {
		line, err := ss.readLine(maxCommandLine)
		if errors.Is(err, errLineTooLong) {
			ss.reply(500, "5.5.2 line too long")
			continue
		}
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			if arg == "" {
				ss.reply(501, "5.5.4 EHLO needs a domain")
				continue
			}
			ss.resetTx()
			ss.helo = true
			ss.replyLines(250, s.opts.Hostname+" greets "+arg, "8BITMIME", "SIZE "+strconv.Itoa(s.opts.MaxSize), "ENHANCEDSTATUSCODES")
		case "HELO":
			if arg == "" {
				ss.reply(501, "5.5.4 HELO needs a domain")
				continue
			}
			ss.resetTx()
			ss.helo = true
			ss.reply(250, s.opts.Hostname)
		case "MAIL":
			ss.mail(arg)
		case "RCPT":
			ss.rcpt(arg)
		case "DATA":
			if arg != "" {
				ss.reply(501, "5.5.4 DATA takes no argument")
				continue
			}
			if !ss.data() {
				return
			}
		case "RSET":
			ss.resetTx()
			ss.reply(250, "2.0.0 OK")
		case "NOOP":
			ss.reply(250, "2.0.0 OK")
		case "VRFY":
			ss.reply(252, "2.1.5 cannot verify, will accept")
		case "QUIT":
			ss.reply(221, "2.0.0 bye")
			return
		case "":
			ss.reply(500, "5.5.2 empty command")
		default:
			// STARTTLS, AUTH, BDAT, ... are not offered.
			ss.reply(502, "5.5.1 command not implemented")
		}
	}
}

func (ss *session) resetTx() {
	ss.from = nil
	ss.to = nil
}

func (ss *session) mail(arg string) {
	if !ss.helo {
		ss.reply(503, "5.5.1 send EHLO or HELO first")
		return
	}
	if ss.from != nil {
		ss.reply(503, "5.5.1 nested MAIL command")
		return
	}
	path, params, ok := parsePath(arg, "FROM:")
	if !ok {
		ss.reply(501, "5.5.4 syntax: MAIL FROM:<address>")
		return
	}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, "SIZE") {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				ss.reply(501, "5.5.4 bad SIZE")
				return
			}
			if n > ss.s.opts.MaxSize {
				ss.reply(552, "5.3.4 message size exceeds fixed limit")
				return
			}
		}
	}
	ss.from = &path
	ss.reply(250, "2.1.0 OK")
}

func (ss *session) rcpt(arg string) {
	if ss.from == nil {
		ss.reply(503, "5.5.1 need MAIL before RCPT")
		return
	}
	path, _, ok := parsePath(arg, "TO:")
	if !ok || path == "" {
		ss.reply(501, "5.5.4 syntax: RCPT TO:<address>")
		return
	}
	if len(ss.to) >= ss.s.opts.MaxRecipients {
		ss.reply(452, "4.5.3 too many recipients")
		return
	}
	ss.to = append(ss.to, path)
	ss.reply(250, "2.1.5 OK")
}

// data reads a message after DATA; it returns false when the connection
// is unusable.
func (ss *session) data() bool {
	if ss.from == nil || len(ss.to) == 0 {
		ss.reply(503, "5.5.1 need MAIL and RCPT before DATA")
		return true
	}
	ss.reply(354, "end data with <CR><LF>.<CR><LF>")
	var buf bytes.Buffer
	tooBig, tooLong := false, false
	for {
		line, err := ss.readLine(maxTextLine)
		if errors.Is(err, errLineTooLong) {
			tooLong = true
			continue
		}
		if err != nil {
			return false
		}
		if line == "." {
			break
		}
		// Transparency (RFC 5321 4.5.2): a leading dot was doubled.
		line = strings.TrimPrefix(line, ".")
		if buf.Len()+len(line)+2 > ss.s.opts.MaxSize {
			tooBig = true
			continue
		}
		buf.WriteString(line)
		buf.WriteString("\r\n")
	}
	defer ss.resetTx()
	switch {
	case tooBig:
		ss.reply(552, "5.3.4 message size exceeds fixed limit")
		return true
	case tooLong:
		ss.reply(500, "5.5.2 line too long")
		return true
	}
	s := ss.s
	s.mu.Lock()
	if s.failNext > 0 {
		s.failNext--
		s.mu.Unlock()
		ss.reply(451, "4.3.0 temporary failure (requested by the test)")
		return true
	}
	s.msgs = append(s.msgs, Message{From: *ss.from, To: append([]string(nil), ss.to...), Data: buf.Bytes(), Received: time.Now()})
	close(s.changed)
	s.changed = make(chan struct{})
	n := len(s.msgs)
	s.mu.Unlock()
	ss.reply(250, fmt.Sprintf("2.0.0 OK queued as %d", n))
	return true
}

// readLine reads a line of at most limit octets including its line end,
// without the line end. A bare LF is accepted as a line end too. A longer
// line is consumed and reported as errLineTooLong.
func (ss *session) readLine(limit int) (string, error) {
	_ = ss.c.SetReadDeadline(time.Now().Add(ss.s.opts.IdleTimeout))
	var line []byte
	tooLong := false
	for {
		frag, err := ss.r.ReadSlice('\n')
		if len(line)+len(frag) > limit {
			tooLong = true
		} else {
			line = append(line, frag...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	if tooLong {
		return "", errLineTooLong
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return string(line), nil
}

func (ss *session) reply(code int, text string) {
	ss.replyLines(code, text)
}

// replyLines writes a (multi-line) reply: "250-first", ..., "250 last".
func (ss *session) replyLines(code int, lines ...string) {
	_ = ss.c.SetWriteDeadline(time.Now().Add(ss.s.opts.IdleTimeout))
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(ss.w, "%d%s%s\r\n", code, sep, l)
	}
	_ = ss.w.Flush()
}

// parsePath parses "FROM:<path> PARAM=V ..." (prefix "FROM:" or "TO:",
// case-insensitive, optional space after the colon). The null path <> is
// allowed and returned as "".
func parsePath(arg, prefix string) (string, []string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", nil, false
	}
	rest := strings.TrimLeft(arg[len(prefix):], " ")
	if !strings.HasPrefix(rest, "<") {
		return "", nil, false
	}
	end := strings.IndexByte(rest, '>')
	if end < 0 {
		return "", nil, false
	}
	path := rest[1:end]
	// A source route (<@a,@b:user@c>) is obsolete; keep the mailbox.
	if strings.HasPrefix(path, "@") {
		if _, after, ok := strings.Cut(path, ":"); ok {
			path = after
		}
	}
	if strings.ContainsAny(path, " \t<>") {
		return "", nil, false
	}
	return path, strings.Fields(rest[end+1:]), true
}

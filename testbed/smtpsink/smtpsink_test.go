package smtpsink

import (
	"context"
	"errors"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

func TestSendMail(t *testing.T) {
	s := New(t)
	msg := "From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nfirst line\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n"
	if err := smtp.SendMail(s.Addr, nil, "a@example.com", []string{"b@example.com", "c@example.com"}, []byte(msg)); err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := s.Wait(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := got[0]
	if m.From != "a@example.com" {
		t.Errorf("from: got %q, want %q", m.From, "a@example.com")
	}
	if strings.Join(m.To, ",") != "b@example.com,c@example.com" {
		t.Errorf("to: got %v", m.To)
	}
	if string(m.Data) != msg {
		t.Errorf("data (dot-stuffing must round-trip):\ngot  %q\nwant %q", m.Data, msg)
	}
	if got := m.Subject(); got != "hello" {
		t.Errorf("subject: got %q, want %q", got, "hello")
	}
	body, err := m.Body()
	if err != nil {
		t.Fatal(err)
	}
	if want := "first line\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n"; body != want {
		t.Errorf("body: got %q, want %q", body, want)
	}
}

func TestClientSession(t *testing.T) {
	s := New(t)
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, param := c.Extension("SIZE"); !ok || param != "1048576" {
		t.Errorf("SIZE extension: got %v %q, want true 1048576", ok, param)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS advertised, but it is not implemented")
	}
	// A transaction abandoned with RSET leaves nothing behind.
	if err := c.Mail("x@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("y@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	// Two messages on one connection.
	for i, to := range []string{"one@example.com", "two@example.com"} {
		if err := c.Mail("from@example.com"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(to); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("Subject: m" + string(rune('0'+i)) + "\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	got := s.Messages()
	if len(got) != 2 {
		t.Fatalf("got %d messages, want 2", len(got))
	}
	for i, m := range got {
		if m.From != "from@example.com" || len(m.To) != 1 {
			t.Errorf("message %d: from %q to %v", i, m.From, m.To)
		}
	}
	if got[0].To[0] != "one@example.com" || got[1].To[0] != "two@example.com" {
		t.Errorf("recipients: got %v and %v", got[0].To, got[1].To)
	}
}

func TestSizeCapAndTemporaryFailure(t *testing.T) {
	s, err := Start(Options{MaxSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 30)
	err = smtp.SendMail(s.Addr, nil, "a@example.com", []string{"b@example.com"}, []byte(big))
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 552 {
		t.Errorf("oversized message: got %v, want a 552 error", err)
	}

	s.FailNext(1)
	err = smtp.SendMail(s.Addr, nil, "a@example.com", []string{"b@example.com"}, []byte("Subject: x\r\n\r\nx\r\n"))
	if !errors.As(err, &te) || te.Code != 451 {
		t.Errorf("with FailNext: got %v, want a 451 error", err)
	}
	if err := smtp.SendMail(s.Addr, nil, "a@example.com", []string{"b@example.com"}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Errorf("after the failure: %v", err)
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("got %d messages, want 1 (only the last one)", n)
	}
}

func TestProtocolErrors(t *testing.T) {
	s := New(t)
	c, err := textproto.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cmd  string
		want int
	}{
		{"mail before helo", "MAIL FROM:<a@example.com>", 503},
		{"helo", "HELO client.test", 250},
		{"rcpt before mail", "RCPT TO:<b@example.com>", 503},
		{"data before mail", "DATA", 503},
		{"bad mail syntax", "MAIL FROM:a@example.com", 501},
		{"mail", "MAIL from:<a@example.com> SIZE=10", 250},
		{"nested mail", "MAIL FROM:<a@example.com>", 503},
		{"bad rcpt syntax", "RCPT TO:", 501},
		{"unknown command", "STARTTLS", 502},
		{"line too long", "NOOP " + strings.Repeat("x", 600), 500},
		{"noop", "NOOP", 250},
		{"rset", "RSET", 250},
		{"size over the cap", "MAIL FROM:<a@example.com> SIZE=99999999", 552},
		{"quit", "QUIT", 221},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := c.Cmd("%s", tc.cmd)
			if err != nil {
				t.Fatal(err)
			}
			c.StartResponse(id)
			code, msg, err := c.ReadResponse(0)
			c.EndResponse(id)
			if code != tc.want {
				t.Errorf("%s: got %d %s (%v), want %d", tc.cmd, code, msg, err, tc.want)
			}
		})
	}
}

func TestWaitTimesOut(t *testing.T) {
	s := New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	got, err := s.Wait(ctx, 1)
	if !errors.Is(err, context.DeadlineExceeded) || len(got) != 0 {
		t.Errorf("got %d messages and %v, want none and a deadline error", len(got), err)
	}
}

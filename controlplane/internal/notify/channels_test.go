package notify

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestPostOutcomes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(204)
		case "/busy":
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(429)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/big":
			w.WriteHeader(500)
			_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
		}
	}))
	defer srv.Close()
	d := &Dispatcher{}
	d.init()
	tests := []struct {
		path      string
		ok        bool
		retryIn   time.Duration
		errSubstr string
	}{
		{"/ok", true, 0, ""},
		{"/busy", false, 120 * time.Second, "429"},
		{"/moved", false, 0, "302"}, // redirects are not followed
		{"/big", false, 0, "500"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			err := d.post(context.Background(), srv.URL+tc.path, http.Header{}, []byte("{}"))
			if tc.ok != (err == nil) {
				t.Fatalf("got %v, want success %v", err, tc.ok)
			}
			if err == nil {
				return
			}
			if !strings.Contains(err.Error(), tc.errSubstr) || len(err.Error()) > 400 {
				t.Errorf("error %.200q, want it short and mentioning %s", err, tc.errSubstr)
			}
			var ra *retryAfterError
			if got := errors.As(err, &ra); got != (tc.retryIn > 0) || (got && ra.after != tc.retryIn) {
				t.Errorf("retry-after: %v %+v, want %v", got, ra, tc.retryIn)
			}
		})
	}
}

func TestSignVerify(t *testing.T) {
	body := []byte(`{"id":"x"}`)
	now := time.Unix(1_800_000_000, 0)
	h := http.Header{}
	h.Set(HeaderTimestamp, "1800000000")
	h.Set(HeaderSignature, Sign("s3cret", now.Unix(), body))
	if err := Verify("s3cret", h, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Errorf("valid signature: %v", err)
	}
	for name, check := range map[string]func() error{
		"wrong secret": func() error { return Verify("other", h, body, now, 5*time.Minute) },
		"changed body": func() error { return Verify("s3cret", h, []byte(`{"id":"y"}`), now, 5*time.Minute) },
		"too old":      func() error { return Verify("s3cret", h, body, now.Add(time.Hour), 5*time.Minute) },
	} {
		if check() == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

func TestSummaryAndDetail(t *testing.T) {
	dev := "dev\n1"
	e := &Event{ID: 7, Kind: "certificate.issued", At: time.Unix(0, 0), DeviceID: &dev,
		Detail: json.RawMessage(`{"serial":"ab","nested":{"a":[1, 2]},"reason":"x\r\ny"}`)}
	got := summary(e)
	want := `[Outpost] certificate.issued device=dev 1 nested={"a":[1,2]} reason=x  y serial=ab at 1970-01-01T00:00:00Z (event 7)`
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	dg := &Event{ID: 8, Kind: DigestKind, At: time.Unix(0, 0), Detail: json.RawMessage(`{"day":"1970-01-01","total":3,"by_ca":[{"ca_name":"Issuing","count":3}],"first":[]}`)}
	if got := summary(dg); !strings.Contains(got, "1970-01-01: 3 certificates expire within 30 days; Issuing: 3") {
		t.Errorf("digest summary %q", got)
	}
}

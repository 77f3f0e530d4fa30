package system

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// serveControl serves the testbed's control endpoint on loopback:
//
//	POST /uplink/cut      cut the gateway's uplink (204)
//	POST /uplink/restore  restore it (204)
//
// Tools such as testbed/loadgen find it as OUTPOST_TESTBED_CONTROL_URL.
func (s *System) serveControl() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /uplink/cut", func(w http.ResponseWriter, r *http.Request) {
		s.step("control: cutting the gateway's uplink")
		s.Uplink.Cut()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /uplink/restore", func(w http.ResponseWriter, r *http.Request) {
		s.step("control: restoring the gateway's uplink")
		if err := s.Uplink.Restore(); err != nil && !errors.Is(err, errUplinkUp) {
			http.Error(w, "restoring the uplink: "+err.Error(), http.StatusConflict)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	s.ControlURL = fmt.Sprintf("http://%s", ln.Addr())
	s.defer_(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return nil
}

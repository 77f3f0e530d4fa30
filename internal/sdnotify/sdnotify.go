// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): READY=1 once a service serves, STOPPING=1 when it
// stops, and WATCHDOG=1 pings tied to a health check, so that a unit
// with Type=notify and WatchdogSec= is restarted when the service hangs
// or stops being healthy. Outside systemd (no NOTIFY_SOCKET) every call
// does nothing.
package sdnotify

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"
)

// Env names systemd sets for a service.
const (
	envSocket      = "NOTIFY_SOCKET"
	envWatchdogUS  = "WATCHDOG_USEC"
	envWatchdogPID = "WATCHDOG_PID"
)

// Messages.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
	Watchdog = "WATCHDOG=1"
)

// Notify sends state (one or more newline-separated VAR=value lines) to
// the socket in $NOTIFY_SOCKET. It returns false, nil when there is no
// socket (not started by systemd, or NotifyAccess forbids it).
func Notify(state string) (bool, error) {
	path := os.Getenv(envSocket)
	if path == "" {
		return false, nil
	}
	// A leading '@' is Linux's abstract namespace.
	addr := &net.UnixAddr{Name: path, Net: "unixgram"}
	if path[0] == '@' {
		addr.Name = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

// WatchdogInterval returns the watchdog timeout systemd expects pings
// within (WatchdogSec=), and false when no watchdog is set for this
// process.
func WatchdogInterval() (time.Duration, bool) {
	us, err := strconv.ParseInt(os.Getenv(envWatchdogUS), 10, 64)
	if err != nil || us <= 0 {
		return 0, false
	}
	if p := os.Getenv(envWatchdogPID); p != "" {
		if pid, err := strconv.Atoi(p); err != nil || pid != os.Getpid() {
			return 0, false // meant for another process
		}
	}
	return time.Duration(us) * time.Microsecond, true
}

// RunWatchdog pings systemd's watchdog every half of its timeout while
// health returns nil, until ctx ends. A failing check is logged and not
// pinged, so systemd restarts the service after WatchdogSec= of
// failures; a recovered check pings again. It returns at once when no
// watchdog is set. health gets a context bounded by the ping interval.
func RunWatchdog(ctx context.Context, health func(context.Context) error, log *slog.Logger) {
	timeout, ok := WatchdogInterval()
	if !ok {
		return
	}
	every := timeout / 2
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		hctx, cancel := context.WithTimeout(ctx, every)
		err := health(hctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				log.Error("health check failed: not pinging the systemd watchdog (systemd restarts the service if it stays unhealthy)", "err", err, "watchdog_timeout", timeout.String())
			}
			failing = true
		default:
			if failing {
				log.Info("health check passes again: pinging the systemd watchdog")
			}
			failing = false
			if _, err := Notify(Watchdog); err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("pinging the systemd watchdog", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

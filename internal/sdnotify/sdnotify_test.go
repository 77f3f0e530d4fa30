package sdnotify

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-pki/outpost/internal/sdnotify/sdnotifytest"
)

// listen opens a datagram socket like systemd's and points NOTIFY_SOCKET
// at it.
func listen(t *testing.T, abstract bool) *sdnotifytest.Socket {
	t.Helper()
	s := sdnotifytest.Listen(t)
	if abstract {
		s = sdnotifytest.ListenAbstract(t, "outpost-sdnotify-test-"+strconv.Itoa(os.Getpid()))
	}
	t.Setenv(envSocket, s.Path)
	return s
}

func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run("abstract="+strconv.FormatBool(abstract), func(t *testing.T) {
			ch := listen(t, abstract)
			sent, err := Notify(Ready)
			if err != nil || !sent {
				t.Fatalf("Notify: sent %v, err %v", sent, err)
			}
			if got := ch.Next(t, 5*time.Second); got != Ready {
				t.Errorf("got %q, want %q", got, Ready)
			}
		})
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	t.Setenv(envSocket, "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Errorf("without NOTIFY_SOCKET: sent %v, err %v; want nothing", sent, err)
	}
	t.Setenv(envSocket, filepath.Join(t.TempDir(), "missing.sock"))
	if sent, err := Notify(Ready); sent || err == nil {
		t.Errorf("with a socket that does not exist: sent %v, err %v; want an error", sent, err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"", "", 0, false},
		{"abc", "", 0, false},
		{"0", "", 0, false},
		{"2000000", "", 2 * time.Second, true},
		{"2000000", strconv.Itoa(os.Getpid()), 2 * time.Second, true},
		{"2000000", "1", 0, false},
	} {
		t.Setenv(envWatchdogUS, c.usec)
		t.Setenv(envWatchdogPID, c.pid)
		got, ok := WatchdogInterval()
		if got != c.want || ok != c.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: got %v %v, want %v %v", c.usec, c.pid, got, ok, c.want, c.ok)
		}
	}
}

// TestWatchdogFollowsHealth: pings while healthy, none while the check
// fails, pings again once it recovers.
func TestWatchdogFollowsHealth(t *testing.T) {
	ch := listen(t, false)
	t.Setenv(envWatchdogUS, "200000") // 200 ms: a ping every 100 ms
	t.Setenv(envWatchdogPID, strconv.Itoa(os.Getpid()))
	var healthy atomic.Bool
	healthy.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		RunWatchdog(ctx, func(context.Context) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("store closed")
		}, slog.New(slog.DiscardHandler))
		close(done)
	}()
	for i := 0; i < 3; i++ {
		if got := ch.Next(t, 5*time.Second); got != Watchdog {
			t.Fatalf("ping %d: got %q", i, got)
		}
	}
	healthy.Store(false)
	// A ping may have been in flight; then silence for several
	// intervals.
	ch.Drain(300 * time.Millisecond)
	if n := ch.Count(Watchdog, 600*time.Millisecond); n != 0 {
		t.Fatalf("%d pings while the health check fails", n)
	}
	healthy.Store(true)
	if got := ch.Next(t, 5*time.Second); got != Watchdog {
		t.Fatalf("after recovery: got %q", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
}

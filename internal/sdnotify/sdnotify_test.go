package sdnotify

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// listen opens a datagram socket like systemd's and points NOTIFY_SOCKET
// at it.
func listen(t *testing.T, abstract bool) <-chan string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify.sock")
	env := name
	if abstract {
		name = "\x00outpost-sdnotify-test-" + strconv.Itoa(os.Getpid())
		env = "@" + name[1:]
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv(envSocket, env)
	out := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(out)
				return
			}
			out <- string(buf[:n])
		}
	}()
	return out
}

func next(t *testing.T, ch <-chan string, within time.Duration) string {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(within):
		t.Fatalf("no notification within %v", within)
		return ""
	}
}

func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run("abstract="+strconv.FormatBool(abstract), func(t *testing.T) {
			ch := listen(t, abstract)
			sent, err := Notify(Ready)
			if err != nil || !sent {
				t.Fatalf("Notify: sent %v, err %v", sent, err)
			}
			if got := next(t, ch, 5*time.Second); got != Ready {
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
		if got := next(t, ch, 5*time.Second); got != Watchdog {
			t.Fatalf("ping %d: got %q", i, got)
		}
	}
	healthy.Store(false)
	// Drain a ping that may have been in flight, then expect silence
	// for several intervals.
	drain := time.After(150 * time.Millisecond)
	for draining := true; draining; {
		select {
		case <-ch:
		case <-drain:
			draining = false
		}
	}
	select {
	case m := <-ch:
		t.Fatalf("pinged %q while the health check fails", m)
	case <-time.After(600 * time.Millisecond):
	}
	healthy.Store(true)
	if got := next(t, ch, 5*time.Second); got != Watchdog {
		t.Fatalf("after recovery: got %q", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
}

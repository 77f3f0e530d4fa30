package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Swtpm is a software TPM 2.0 (swtpm) serving raw TPM commands on a
// loopback TCP port. It starts initialised (`--flags
// not-need-init,startup-clear`), so clients must not send PowerOn or
// Startup. Its state directory survives Restart, as a real TPM's NV does
// across reboots.
type Swtpm struct {
	dir      string
	port     int
	ctrlPort int
	bin      string
	proc     *process
}

// NewSwtpm starts an swtpm for t and stops it when t ends.
func NewSwtpm(t testing.TB) *Swtpm {
	t.Helper()
	s, err := StartSwtpm(context.Background())
	if err != nil {
		t.Fatalf("starting swtpm: %v", err)
	}
	register(t, "swtpm", s)
	return s
}

// StartSwtpm starts an swtpm with a fresh state directory.
func StartSwtpm(ctx context.Context) (*Swtpm, error) {
	bin, err := lookBinary("swtpm", "OUTPOST_SWTPM", "swtpm")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "outpost-swtpm-")
	if err != nil {
		return nil, fmt.Errorf("swtpm: creating directory: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	s := &Swtpm{dir: dir, bin: bin}
	if err := s.startRetrying(ctx, true); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Swtpm) startRetrying(ctx context.Context, newPorts bool) error {
	for attempt := 0; ; attempt++ {
		if newPorts || attempt > 0 {
			var err error
			if s.port, err = freePort(); err != nil {
				return err
			}
			if s.ctrlPort, err = freePort(); err != nil {
				return err
			}
		}
		err := s.start(ctx)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == 4 {
			return err
		}
	}
}

func (s *Swtpm) start(ctx context.Context) error {
	proc, err := startTCPService(procSpec{
		name: "swtpm",
		argv: []string{s.bin, "socket", "--tpm2",
			"--tpmstate", "dir=" + filepath.Join(s.dir, "state"),
			"--server", "type=tcp,port=" + strconv.Itoa(s.port) + ",bindaddr=127.0.0.1",
			"--ctrl", "type=tcp,port=" + strconv.Itoa(s.ctrlPort) + ",bindaddr=127.0.0.1",
			"--flags", "not-need-init,startup-clear",
		},
		dir:     s.dir,
		logPath: filepath.Join(s.dir, "swtpm.log"),
	}, s.Addr())
	if err != nil {
		return err
	}
	s.proc = proc
	return nil
}

// Addr returns the host:port of the TPM command channel.
func (s *Swtpm) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// CtrlAddr returns the host:port of swtpm's control channel.
func (s *Swtpm) CtrlAddr() string { return fmt.Sprintf("127.0.0.1:%d", s.ctrlPort) }

// StateDir returns the directory holding the TPM's persistent state.
func (s *Swtpm) StateDir() string { return filepath.Join(s.dir, "state") }

// Restart stops the TPM and starts it again with the same state, like a
// gateway rebooting. It keeps its ports unless another process took them
// meanwhile: read Addr again after Restart. Open connections break.
func (s *Swtpm) Restart(ctx context.Context) error {
	if err := s.proc.stop(syscall.SIGTERM, 10*time.Second); err != nil {
		return err
	}
	return s.startRetrying(ctx, false)
}

// Close stops the TPM and removes its state.
func (s *Swtpm) Close() error {
	return shutdown(s.proc, syscall.SIGTERM, 10*time.Second, s.dir)
}

func (s *Swtpm) logs() []string { return []string{filepath.Join(s.dir, "swtpm.log")} }

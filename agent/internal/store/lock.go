package store

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// acquireLock takes an exclusive lock on path+".lock" before anything
// looks at the database file: the corruption checks read the file
// directly, and must not see it while another process (a running agent,
// or a CLI command) is writing it. The lock is held until the Store is
// closed. It is a separate file because bbolt flocks the database file
// itself, and two flocks on one file in one process conflict.
func acquireLock(path string, timeout time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock file: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("store: locking %s.lock: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%w: %s (another outpost-agent process has it open)", ErrLocked, path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package store

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// Environment of the writer child of TestCrashDurability.
const (
	envHelperPath  = "OUTPOST_STORE_HELPER_PATH"
	envHelperRound = "OUTPOST_STORE_HELPER_ROUND"
)

// TestHelperWriter is not a test: TestCrashDurability runs the test binary
// again with only this function selected and envHelperPath set. It
// enqueues records from several goroutines until it is killed, and prints
// each id on its own line after Enqueue returned for it.
func TestHelperWriter(t *testing.T) {
	path := os.Getenv(envHelperPath)
	if path == "" {
		return // only a helper process for TestCrashDurability (no skip: make test refuses skips)
	}
	round := os.Getenv(envHelperRound)
	s, err := Open(path, Options{VerifyOnOpen: VerifyNever})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			payload := make([]byte, 200+g*100)
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%s-g%d-%d", round, g, i)
				if err := s.Enqueue(context.Background(), OutboxRecord{ID: id, DeviceID: fmt.Sprint("dev-", g), Payload: payload}); err != nil {
					fmt.Fprintln(os.Stderr, "enqueue:", err)
					os.Exit(3)
				}
				// Unbuffered to the pipe: the parent must see the line
				// before anything else happens.
				mu.Lock()
				out.WriteString(id + "\n")
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestCrashDurability kills a writer with SIGKILL at random moments and
// checks that every record it reported as enqueued survived, and that the
// file passes the full check after each kill.
func TestCrashDurability(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed>>1))
	path := filepath.Join(t.TempDir(), "agent.db")

	committed := map[string]bool{}
	const rounds = 5
	for round := range rounds {
		lines := runAndKill(t, path, round, time.Duration(20+rnd.IntN(300))*time.Millisecond)
		if len(lines) == 0 {
			t.Fatalf("round %d: the writer reported nothing before it was killed", round)
		}
		for _, id := range lines {
			committed[id] = true
		}

		s, err := Open(path, Options{VerifyOnOpen: VerifyAlways})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		missing := 0
		err = s.db.View(func(tx *bbolt.Tx) error {
			idx := tx.Bucket(bucketOutboxIDs)
			for id := range committed {
				if idx.Get([]byte(id)) == nil {
					missing++
					if missing <= 5 {
						t.Errorf("round %d: record %s was reported enqueued but is missing", round, id)
					}
				}
			}
			if n, keys := readCounter(tx, keyOutboxDepth), idx.Stats().KeyN; int(n) != keys || tx.Bucket(bucketOutbox).Stats().KeyN != keys {
				t.Errorf("round %d: depth counter %d, ids %d, records %d: want all equal", round, n, keys, tx.Bucket(bucketOutbox).Stats().KeyN)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if missing > 0 {
			t.Fatalf("round %d: %d of %d committed records missing", round, missing, len(committed))
		}
		depth := mustDepth(t, s)
		t.Logf("round %d: killed after %d reported records; outbox holds %d (reported so far %d)", round, len(lines), depth, len(committed))
		if depth < len(committed) {
			t.Errorf("round %d: depth %d below the %d reported records", round, depth, len(committed))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// runAndKill starts the writer, lets it run for d after its first
// reported record, SIGKILLs it and returns the complete lines it printed.
func runAndKill(t *testing.T, path string, round int, d time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelperPath+"="+path, envHelperRound+"="+fmt.Sprint(round))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	first := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReader(stdout)
		prefix := fmt.Sprintf("r%d-", round)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return // EOF: a line without its newline was not reported
			}
			line = strings.TrimSuffix(line, "\n")
			if !strings.HasPrefix(line, prefix) {
				continue // test framework output
			}
			if len(lines) == 0 {
				close(first)
			}
			lines = append(lines, line)
		}
	}()
	select {
	case <-first:
	case <-done:
		_ = cmd.Wait()
		t.Fatalf("round %d: writer exited early: %s", round, stderr.String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("round %d: writer reported nothing in 30s: %s", round, stderr.String())
	}
	time.Sleep(d)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	<-done
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: writer did not die of SIGKILL (%v): %s", round, err, stderr.String())
	}
	return lines
}

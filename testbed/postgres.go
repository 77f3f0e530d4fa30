package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgVersion is the PostgreSQL major version the project targets.
const pgVersion = "15"

// Postgres is a throwaway PostgreSQL cluster on loopback. Durability
// settings are off (fsync, full_page_writes): it is for tests only.
type Postgres struct {
	dir  string
	port int
	proc *process

	// What start needs again for Restart.
	bin  string
	cred *syscall.Credential
	opts PostgresOptions
}

// PostgresOptions tunes StartPostgres. The zero value is fine.
type PostgresOptions struct {
	// StartTimeout bounds initdb plus start-up. Default 60s.
	StartTimeout time.Duration
	// Settings are extra `-c name=value` server settings.
	Settings map[string]string
}

// NewPostgres starts a cluster for the test t and stops it when t ends.
func NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	pg, err := StartPostgres(context.Background(), PostgresOptions{})
	if err != nil {
		t.Fatalf("starting postgres: %v", err)
	}
	register(t, "postgres", pg)
	return pg
}

// postgresBinDir finds the directory that holds initdb and postgres:
// $OUTPOST_PG_BIN, then /usr/lib/postgresql/15/bin, then the newest other
// version under /usr/lib/postgresql.
func postgresBinDir() (string, error) {
	if v := os.Getenv("OUTPOST_PG_BIN"); v != "" {
		return v, nil
	}
	want := "/usr/lib/postgresql/" + pgVersion + "/bin"
	if _, err := os.Stat(filepath.Join(want, "initdb")); err == nil {
		return want, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		sort.Strings(matches)
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", fmt.Errorf("postgres server binaries not found (looked at $OUTPOST_PG_BIN and %s): run `make deps` to install postgresql-%s", want, pgVersion)
}

// StartPostgres runs initdb in a new temporary directory and starts the
// server. initdb refuses to run as root, so when the caller is root the
// cluster runs as the `postgres` user.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("postgres: running as root needs the `postgres` user (created by the postgresql package): %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}

	dir, err := os.MkdirTemp("", "outpost-pg-")
	if err != nil {
		return nil, fmt.Errorf("postgres: creating directory: %w", err)
	}
	if uid >= 0 {
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("postgres: handing %s to the postgres user: %w", dir, err)
		}
	}
	pg := &Postgres{dir: dir, bin: bin, cred: cred, opts: opts}

	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", pg.dataDir(), "-U", "outpost", "--auth=trust", "--no-sync",
		"-E", "UTF8", "--locale=C")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("postgres: initdb: %w\n%s", err, out)
	}

	// Another process may take the port between freePort and bind: retry.
	for attempt := 0; ; attempt++ {
		port, perr := freePort()
		if perr != nil {
			os.RemoveAll(dir)
			return nil, perr
		}
		err = pg.start(ctx, port)
		if err == nil {
			return pg, nil
		}
		if !errors.Is(err, errPortTaken) || attempt == 4 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

func (pg *Postgres) dataDir() string { return filepath.Join(pg.dir, "data") }

// start starts the server on port and waits until it accepts
// connections; errPortTaken when another process holds the port.
func (pg *Postgres) start(ctx context.Context, port int) error {
	bin, cred, opts := pg.bin, pg.cred, pg.opts
	pg.port = port
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": pg.dir,
		"fsync":                   "off",
		"synchronous_commit":      "off",
		"full_page_writes":        "off",
		"max_connections":         "200",
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	argv := []string{filepath.Join(bin, "postgres"), "-D", pg.dataDir(), "-p", strconv.Itoa(port)}
	for _, k := range keys {
		argv = append(argv, "-c", k+"="+settings[k])
	}
	proc, err := startProcess(procSpec{
		name:    "postgres",
		argv:    argv,
		dir:     pg.dir,
		logPath: filepath.Join(pg.dir, "postgres.log"),
		cred:    cred,
	})
	if err != nil {
		return err
	}
	pg.proc = proc

	deadline := time.Now().Add(opts.StartTimeout)
	for {
		if proc.exited() {
			if strings.Contains(proc.logTail(20), "could not bind") {
				return errPortTaken
			}
			return proc.exitError()
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, pg.DSN())
		if err == nil {
			err = conn.Ping(cctx)
			conn.Close(cctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = proc.stop(syscall.SIGQUIT, 5*time.Second)
			return fmt.Errorf("postgres did not accept connections within %v: %v; log ends with:\n%s", opts.StartTimeout, err, proc.logTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DSN returns the connection string of the `postgres` database as the
// superuser `outpost` (trust authentication, loopback only).
func (pg *Postgres) DSN() string { return pg.dsnFor("postgres") }

func (pg *Postgres) dsnFor(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("outpost"),
		Host:     fmt.Sprintf("127.0.0.1:%d", pg.port),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on.
func (pg *Postgres) Port() int { return pg.port }

// CreateDatabase creates a new, empty database with a random name and
// returns its DSN. Tests sharing one cluster use one database each.
func (pg *Postgres) CreateDatabase(ctx context.Context) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	name := "t_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		return "", fmt.Errorf("postgres: connecting: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("postgres: creating database %s: %w", name, err)
	}
	return pg.dsnFor(name), nil
}

// NewDatabase is CreateDatabase for tests: it fails t on error.
func (pg *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	dsn, err := pg.CreateDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// Restart is Stop then Start: a fast shutdown (open sessions are
// aborted; clients see their connections drop, as in a database restart
// or failover), then the server again on the same port with the same
// data directory, accepting connections when Restart returns.
func (pg *Postgres) Restart(ctx context.Context) error {
	if err := pg.Stop(); err != nil {
		return err
	}
	return pg.Start(ctx)
}

// Stop stops the server with a fast shutdown and keeps its data
// directory and port for Start. Stop, Start, Restart and Close are not
// safe for concurrent use.
func (pg *Postgres) Stop() error {
	if err := pg.proc.stop(syscall.SIGINT, 10*time.Second); err != nil {
		return fmt.Errorf("postgres: stopping: %w", err)
	}
	return nil
}

// Start starts a server Stop stopped, on the same port with the same
// data directory, and waits until it accepts connections.
func (pg *Postgres) Start(ctx context.Context) error {
	if !pg.proc.exited() {
		return errors.New("postgres: already running")
	}
	// The port was ours a moment ago; another process may grab it
	// meanwhile, or the kernel take a moment to release it: retry a few
	// times.
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = pg.start(ctx, pg.port); !errors.Is(err, errPortTaken) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("postgres: starting again on port %d: %w", pg.port, err)
	}
	return nil
}

// Close stops the server (fast shutdown, then SIGKILL) and removes its
// directory.
func (pg *Postgres) Close() error {
	// SIGINT is Postgres' "fast" shutdown: abort sessions, checkpoint, exit.
	return shutdown(pg.proc, syscall.SIGINT, 10*time.Second, pg.dir)
}

func (pg *Postgres) logs() []string { return []string{filepath.Join(pg.dir, "postgres.log")} }

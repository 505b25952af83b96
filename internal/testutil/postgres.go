package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL cluster: Debian's postgresql package,
// initdb in a temporary directory, a free port on 127.0.0.1 and its unix
// socket beside the data, run as the postgres user (initdb refuses root).
type Postgres struct {
	Bin, Dir string
	Port     int
	opts     string // server options, for Up after Down
	n        atomic.Int64
}

var (
	pgOnce sync.Once
	pgInst *Postgres
	pgErr  error
)

// StartPostgres starts one cluster per test binary, shared by its tests
// (each takes its own database: NewDatabase). TestMain stops it with
// StopPostgres; the server is a separate process and would outlive the
// test binary otherwise.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	pgOnce.Do(func() { pgInst, pgErr = startPostgres() })
	if pgErr != nil {
		t.Fatalf("postgresql (scripts/sysdeps.sh test installs it): %v", pgErr)
	}
	return pgInst
}

func startPostgres() (*Postgres, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		return nil, fmt.Errorf("no /usr/lib/postgresql/*/bin/initdb")
	}
	sort.Strings(bins)
	p := &Postgres{Bin: filepath.Dir(bins[len(bins)-1])}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("no postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if p.Dir, err = os.MkdirTemp("", "outpost-pg-"); err != nil {
		return nil, err
	}
	os.Chmod(p.Dir, 0o755)
	data := filepath.Join(p.Dir, "data")
	os.Mkdir(data, 0o700)
	os.Chown(data, uid, gid)
	os.Chown(p.Dir, uid, gid)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	run := func(args ...string) error {
		cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
		cmd.Dir = p.Dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", filepath.Base(args[0]), err, out)
		}
		return nil
	}
	if err := run(filepath.Join(p.Bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		return nil, err
	}
	// Tests only: no fsync (the power-cut tests cover durability), small
	// shared memory, unix socket beside the data.
	p.opts = fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300", p.Port, p.Dir)
	if err := p.pgctl("start"); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Postgres) pgctl(action string, extra ...string) error {
	args := append([]string{"-u", "postgres", "--", filepath.Join(p.Bin, "pg_ctl"), "-D", filepath.Join(p.Dir, "data"), "-w", "-t", "60"}, extra...)
	if action == "start" {
		args = append(args, "-o", p.opts, "-l", filepath.Join(p.Dir, "log"))
	}
	out, err := exec.Command("runuser", append(args, action)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %s: %v\n%s", action, err, out)
	}
	return nil
}

// Down stops the server (fast shutdown: open connections are cut), as a
// database restart or outage would.
func (p *Postgres) Down(t testing.TB) {
	t.Helper()
	if err := p.pgctl("stop", "-m", "fast"); err != nil {
		t.Fatal(err)
	}
}

// Up starts it again after Down.
func (p *Postgres) Up(t testing.TB) {
	t.Helper()
	if err := p.pgctl("start"); err != nil {
		t.Fatal(err)
	}
}

// Stop stops the cluster and removes its files.
func (p *Postgres) Stop() {
	p.pgctl("stop", "-m", "immediate")
	os.RemoveAll(p.Dir)
}

// StopPostgres stops the shared cluster, if one was started; call it from
// TestMain after m.Run.
func StopPostgres() {
	if pgInst != nil {
		pgInst.Stop()
	}
}

// URL is a connection URL for database db.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, db)
}

// NewDatabase creates an empty database for one test and drops it after.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), p.n.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("postgres: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, p.URL("postgres")); err == nil {
			c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	return p.URL(name)
}

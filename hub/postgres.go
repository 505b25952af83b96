package hub

import (
	"bytes"
	"cmp"
	"context"
	crand "crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

//go:embed migrations/*.sql
var migrations embed.FS

// PGStore is the Store on PostgreSQL: several collectors may share it
// (each with its own name and MQTT client id); exports and device lists
// read it while collectors run.
type PGStore struct {
	pool    *pgxpool.Pool
	name    string
	applied []int // migrations OpenPostgres applied
	commits atomic.Int64
}

// PGOptions configure OpenPostgres.
type PGOptions struct {
	// Name identifies this collector among those sharing the database;
	// its MQTT client id is kept under it. Default: the host name.
	Name string
}

// OpenPostgres connects to url (postgres://user@host/db?...), applies any
// migration not yet applied, and returns the store.
func OpenPostgres(ctx context.Context, url string, o PGOptions) (*PGStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("hub: postgres url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("hub: postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("hub: postgres %s: %w", cfg.ConnConfig.Host, err)
	}
	if o.Name == "" {
		o.Name, _ = os.Hostname()
	}
	s := &PGStore{pool: pool, name: o.Name}
	if s.applied, err = s.Migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// SchemaVersion is the newest migration applied, and those OpenPostgres
// applied just now.
func (s *PGStore) SchemaVersion(ctx context.Context) (version int, appliedNow []int, err error) {
	err = s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&version)
	return version, s.applied, err
}

// Migrate applies the embedded migrations not yet applied, each in its own
// transaction (PostgreSQL DDL is transactional: a failing migration leaves
// the schema as it was), under an advisory lock so collectors starting
// together do not race. It returns the versions applied.
func (s *PGStore) Migrate(ctx context.Context) ([]int, error) {
	return s.migrate(ctx, migrations)
}

func (s *PGStore) migrate(ctx context.Context, fsys fs.FS) ([]int, error) {
	files, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("hub: migrate: %w", err)
	}
	defer conn.Release()
	const lockKey = 0x6f7574706f7374 // "outpost"
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return nil, fmt.Errorf("hub: migrate: lock: %w", err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, lockKey)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("hub: migrate: %w", err)
	}
	var applied []int
	for _, f := range files {
		base := strings.TrimPrefix(f, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return applied, fmt.Errorf("hub: migration %s: name must start with its version number", base)
		}
		var done bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, v).Scan(&done); err != nil {
			return applied, fmt.Errorf("hub: migrate: %w", err)
		}
		if done {
			continue
		}
		sql, err := fs.ReadFile(fsys, f)
		if err != nil {
			return applied, err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("hub: migration %s failed, schema left at the version before it: %w", base, err)
		}
		applied = append(applied, v)
	}
	return applied, nil
}

// Close closes the connection pool.
func (s *PGStore) Close() error { s.pool.Close(); return nil }

// Commit implements Store: every record of every batch in one statement
// (a multi-row INSERT … SELECT unnest(…) ON CONFLICT DO NOTHING RETURNING)
// and each device's counters once, all in one transaction; the collector
// acks only after it returns.
func (s *PGStore) Commit(ctx context.Context, batches []*osync.Batch, received time.Time) ([]Counts, error) {
	out := make([]Counts, len(batches))
	received = received.UTC().Truncate(time.Millisecond)
	type row struct {
		batch int
		r     *outbox.Record
		key   rkey
	}
	var rows []row
	seen := map[rkey]bool{}
	type agg struct {
		sent  int64
		clock time.Time
	}
	per := map[string]*agg{}
	for i, b := range batches {
		for _, r := range b.Records {
			k := rkey{b.Device, r.ID} // no string built per record
			if seen[k] {
				out[i].Duplicate++ // the same record twice in this commit
				continue
			}
			seen[k] = true
			rows = append(rows, row{i, r, k})
		}
		if len(b.Records) == 0 {
			continue
		}
		a := per[b.Device]
		if a == nil {
			a = &agg{}
			per[b.Device] = a
		}
		a.sent += int64(len(b.Records))
		if b.Sent.After(a.clock) {
			a.clock = b.Sent
		}
	}
	// Rows and devices in one order: commits in flight at once (pipelined,
	// or other collectors) lock what they share in the same order and
	// never deadlock.
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(strings.Compare(a.key.dev, b.key.dev), bytes.Compare(a.key.id[:], b.key.id[:]))
	})
	n := len(rows)
	batchOf := make(map[rkey]int, n)
	// Types pgx encodes without reflection (a profile of the collector
	// found a sixth of its time in reflect-driven array encoding).
	devs, ids, seqs := make([]string, n), make([][16]byte, n), make([]int64, n)
	created, models, versions, tasks := make([]time.Time, n), make([]string, n), make([]string, n), make([]string, n)
	labels, recs := make([]string, n), make(pgtype.FlatArray[[]byte], n)
	for i, x := range rows {
		batchOf[x.key] = x.batch
		devs[i], ids[i], seqs[i], created[i] = batches[x.batch].Device, x.r.ID, int64(x.r.Seq), x.r.Created.UTC()
		models[i], versions[i], tasks[i], labels[i], recs[i] = x.r.Model, x.r.Version, x.r.Task, CountedLabel(x.r), x.r.Encode(nil)
	}
	order := make([]string, 0, len(per))
	for d := range per {
		order = append(order, d)
	}
	sort.Strings(order)
	sent, clocks := make([]int64, len(order)), make([]int64, len(order))
	for i, d := range order {
		sent[i], clocks[i] = per[d].sent, received.Sub(per[d].clock).Milliseconds()
	}
	// One statement, so one round trip and its own transaction: the
	// results, the day's counts, the running count and each device's
	// counters commit together or not at all (BEGIN, seven statements and
	// COMMIT took nine round trips, and the collector waited on them).
	q, err := s.pool.Query(ctx, pgCommitSQL,
		devs, ids, seqs, created, received, received.Format("2006-01-02"), models, versions, tasks, labels, recs,
		order, sent, clocks, received.Format(time.RFC3339Nano))
	if err != nil {
		return nil, fmt.Errorf("hub: commit: %w", err)
	}
	for q.Next() {
		var d string
		var id pgtype.UUID
		if err := q.Scan(&d, &id); err != nil {
			q.Close()
			return nil, fmt.Errorf("hub: commit: %w", err)
		}
		out[batchOf[rkey{d, id.Bytes}]].New++
	}
	q.Close()
	if err := q.Err(); err != nil {
		return nil, fmt.Errorf("hub: commit: %w", err)
	}
	for i, b := range batches {
		out[i].Duplicate = int64(len(b.Records)) - out[i].New
	}
	// Committed; what the insert did not take was there before. Those
	// stored with other bytes are conflicts, not duplicates (the device's
	// duplicate counter, kept in the statement, counts them too).
	if err := pgConflicts(ctx, s.pool, batchOf, recs, devs, ids, out); err != nil {
		return nil, fmt.Errorf("hub: commit: %w", err)
	}
	for i := range out {
		out[i].Duplicate -= int64(len(out[i].Conflicts))
	}
	if s.commits.Add(1)%1024 == 0 {
		// Fold the running count's rows into one (the sum is unchanged,
		// whatever commits run beside it); a failure only postpones it.
		_, _ = s.pool.Exec(ctx, `WITH d AS (DELETE FROM result_counts RETURNING n)
			INSERT INTO result_counts (n) SELECT sum(n) FROM d HAVING count(*) > 1`)
	}
	return out, nil
}

// pgCommitSQL stores a commit: $1–$11 the records (device, id, seq,
// created, received, day, model, version, task, label, record), $12–$14
// each device once (name, records sent, clock offset ms), $15 the receive
// time as the device view's JSON keeps it.
const pgCommitSQL = `WITH ins AS (
	INSERT INTO results (device, id, seq, created, received, day, model, version, task, label, record)
	SELECT d, i, s, c, $5, $6::date, m, v, t, NULLIF(l, ''), r
	FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[])
	  AS x(d, i, s, c, m, v, t, l, r)
	ON CONFLICT (device, id) DO NOTHING
	RETURNING device, id, model, label
), daily AS (
	INSERT INTO daily_counts (day, device, model, label, n)
	SELECT $6::date, device, model, label, count(*) FROM ins WHERE label IS NOT NULL
	GROUP BY device, model, label ORDER BY device, model, label
	ON CONFLICT (day, device, model, label) DO UPDATE SET n = daily_counts.n + EXCLUDED.n
), total AS (
	INSERT INTO result_counts (n) SELECT count(*) FROM ins HAVING count(*) > 0
), dev AS (
	INSERT INTO devices AS o (device, status)
	SELECT x.dev, jsonb_build_object('device', x.dev, 'last_seen', to_jsonb($15::text), 'stored', coalesce(k.n, 0),
		'duplicates', x.sent - coalesce(k.n, 0), 'clock_offset_ms', x.clock)
	FROM unnest($12::text[], $13::bigint[], $14::bigint[]) AS x(dev, sent, clock)
	LEFT JOIN (SELECT device, count(*) AS n FROM ins GROUP BY device) k ON k.device = x.dev
	ORDER BY x.dev
	ON CONFLICT (device) DO UPDATE SET status = o.status || jsonb_build_object(
		'last_seen', CASE WHEN coalesce((o.status->>'last_seen')::timestamptz, '-infinity') < $5
			THEN EXCLUDED.status->'last_seen' ELSE o.status->'last_seen' END,
		'stored', coalesce((o.status->>'stored')::bigint, 0) + (EXCLUDED.status->>'stored')::bigint,
		'duplicates', coalesce((o.status->>'duplicates')::bigint, 0) + (EXCLUDED.status->>'duplicates')::bigint,
		'clock_offset_ms', EXCLUDED.status->'clock_offset_ms')
)
SELECT device, id FROM ins`

// pgConflicts finds, among the records the insert did not take, those
// stored with other bytes than this commit's copy, and moves them from
// duplicates to out[i].Conflicts. Only redeliveries pay for the query.
func pgConflicts(ctx context.Context, db pgQuerier, batchOf map[rkey]int, recs [][]byte, devs []string, ids [][16]byte, out []Counts) error {
	var newN int64
	for _, c := range out {
		newN += c.New
	}
	if int(newN) == len(recs) {
		return nil
	}
	mine := make(map[rkey][]byte, len(recs))
	for i := range recs {
		mine[rkey{devs[i], ids[i]}] = recs[i]
	}
	rows, err := db.Query(ctx, `SELECT r.device, r.id, r.record FROM results r
		JOIN unnest($1::text[], $2::uuid[]) AS x(d, i) ON r.device = x.d AND r.id = x.i`, devs, ids)
	if err != nil {
		return fmt.Errorf("check redelivered results: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d string
		var id pgtype.UUID
		var rec []byte
		if err := rows.Scan(&d, &id, &rec); err != nil {
			return err
		}
		k := rkey{d, id.Bytes}
		if have, ok := mine[k]; ok && !bytes.Equal(have, rec) {
			out[batchOf[k]].conflict(outbox.ID(id.Bytes))
		}
	}
	return rows.Err()
}

// rkey is a result's key in a commit: device and record ID.
type rkey struct {
	dev string
	id  outbox.ID
}

// pgQuerier is a pool or a transaction.
type pgQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// DailyCounts implements Store.
func (s *PGStore) DailyCounts(ctx context.Context, since time.Time) ([]DeviceDayCount, error) {
	rows, err := s.pool.Query(ctx, `SELECT to_char(day, 'YYYY-MM-DD'), device, model, label, n FROM daily_counts WHERE day >= $1::date`,
		since.UTC().Format("2006-01-02"))
	if err != nil {
		return nil, fmt.Errorf("hub: daily counts: %w", err)
	}
	defer rows.Close()
	var out []DeviceDayCount
	for rows.Next() {
		var c DeviceDayCount
		if err := rows.Scan(&c.Day, &c.Device, &c.Model, &c.Label, &c.Count); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Recent implements Store: the filter in SQL, newest first, through the
// received indexes.
func (s *PGStore) Recent(ctx context.Context, f ResultFilter) ([]StoredResult, error) {
	q := `SELECT received, record FROM results WHERE true`
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		q += fmt.Sprintf(" AND "+cond, len(args))
	}
	if f.Device != "" {
		add("device = $%d", f.Device)
	}
	if f.Model != "" {
		add("model = $%d", f.Model)
	}
	if f.Label != "" {
		add("label = $%d", f.Label)
	}
	if !f.From.IsZero() {
		add("received >= $%d", f.From)
	}
	if !f.To.IsZero() {
		add("received < $%d", f.To)
	}
	args = append(args, f.Limit)
	q += fmt.Sprintf(" ORDER BY received DESC LIMIT $%d", len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("hub: recent results: %w", err)
	}
	defer rows.Close()
	var out []StoredResult
	for rows.Next() {
		var rcv time.Time
		var raw []byte
		if err := rows.Scan(&rcv, &raw); err != nil {
			return nil, err
		}
		r, err := outbox.DecodeRecord(raw)
		if err != nil {
			continue
		}
		out = append(out, StoredResult{Received: rcv.UTC(), Record: r})
	}
	return out, rows.Err()
}

// updateDevicePG reads, changes and writes one device under a row lock:
// two collectors storing for the same device serialise here.
func updateDevicePG(ctx context.Context, tx pgx.Tx, device string, f func(*DeviceStatus) error) error {
	// Make sure a row exists to lock (first sight of the device).
	if _, err := tx.Exec(ctx, `INSERT INTO devices (device, status) VALUES ($1, '{}') ON CONFLICT DO NOTHING`, device); err != nil {
		return fmt.Errorf("device %s: %w", device, err)
	}
	var raw []byte
	if err := tx.QueryRow(ctx, `SELECT status FROM devices WHERE device = $1 FOR UPDATE`, device).Scan(&raw); err != nil {
		return fmt.Errorf("device %s: %w", device, err)
	}
	d := DeviceStatus{Device: device}
	_ = json.Unmarshal(raw, &d)
	d.Device = device
	if err := f(&d); err != nil {
		if errors.Is(err, ErrSkip) {
			return nil
		}
		return err
	}
	v, _ := json.Marshal(d)
	if _, err := tx.Exec(ctx, `UPDATE devices SET status = $2 WHERE device = $1`, device, v); err != nil {
		return fmt.Errorf("device %s: %w", device, err)
	}
	return nil
}

// UpdateDevice implements Store.
func (s *PGStore) UpdateDevice(ctx context.Context, device string, f func(*DeviceStatus) error) error {
	var cbErr error
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := updateDevicePG(ctx, tx, device, func(d *DeviceStatus) error {
			cbErr = f(d)
			return cbErr
		})
		if errors.Is(err, ErrSkip) {
			return errSkipTx // roll back the placeholder row too
		}
		return err
	})
	if errors.Is(err, errSkipTx) || errors.Is(cbErr, ErrSkip) {
		return nil
	}
	return err
}

var errSkipTx = errors.New("skip")

// Devices implements Store.
func (s *PGStore) Devices(ctx context.Context) ([]DeviceStatus, error) {
	rows, err := s.pool.Query(ctx, `SELECT device, status FROM devices WHERE status <> '{}' ORDER BY device`)
	if err != nil {
		return nil, fmt.Errorf("hub: devices: %w", err)
	}
	defer rows.Close()
	var out []DeviceStatus
	for rows.Next() {
		var name string
		var raw []byte
		if err := rows.Scan(&name, &raw); err != nil {
			return nil, err
		}
		d := DeviceStatus{}
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("hub: device %s: %w", name, err)
		}
		d.Device = name
		out = append(out, d)
	}
	return out, rows.Err()
}

// DeviceKeys implements Store.
func (s *PGStore) DeviceKeys(ctx context.Context, devices []string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT device, status->>'key' FROM devices WHERE device = ANY($1) AND coalesce(status->>'key', '') <> ''`, devices)
	if err != nil {
		return nil, fmt.Errorf("hub: device keys: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, key string
		if err := rows.Scan(&name, &key); err != nil {
			return nil, fmt.Errorf("hub: device keys: %w", err)
		}
		out[name] = key
	}
	return out, rows.Err()
}

// Each implements Store: by device then ID, streamed.
func (s *PGStore) Each(ctx context.Context, fn func(StoredResult) error) error {
	rows, err := s.pool.Query(ctx, `SELECT received, record FROM results ORDER BY device, id`)
	if err != nil {
		return fmt.Errorf("hub: results: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rcv time.Time
		var raw []byte
		if err := rows.Scan(&rcv, &raw); err != nil {
			return err
		}
		r, err := outbox.DecodeRecord(raw)
		if err != nil {
			return fmt.Errorf("hub: stored record: %w", err)
		}
		if err := fn(StoredResult{Received: rcv.UTC(), Record: r}); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Count implements Store (the running count, not a scan).
func (s *PGStore) Count(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(n), 0) FROM result_counts`).Scan(&n)
	return n, err
}

// ClientID implements Store: per collector name, made once and kept.
func (s *PGStore) ClientID(ctx context.Context) (string, error) {
	var rnd [6]byte
	if _, err := crand.Read(rnd[:]); err != nil {
		return "", err
	}
	id := "outpost-collector-" + hex.EncodeToString(rnd[:])
	var got string
	err := s.pool.QueryRow(ctx, `INSERT INTO collectors (name, client_id) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING client_id`, s.name, id).Scan(&got)
	if err != nil {
		return "", fmt.Errorf("hub: client id: %w", err)
	}
	return got, nil
}

// PutEvidence implements Store: the row is locked while the chunk is
// applied, so two collectors given chunks of one upload take turns.
func (s *PGStore) PutEvidence(ctx context.Context, device string, c *osync.EvidenceChunk, received time.Time) (EvidenceInfo, error) {
	var out EvidenceInfo
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		info := newEvidenceInfo(device, c, received)
		if _, err := tx.Exec(ctx, `INSERT INTO evidence (device, id, of, content_type, size, sha256, received)
			VALUES ($1, $2::uuid, $3::uuid, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
			device, c.ID.String(), c.Of.String(), info.ContentType, info.Size, info.SHA256, received); err != nil {
			return fmt.Errorf("evidence: %w", err)
		}
		var of string
		var data []byte
		err := tx.QueryRow(ctx, `SELECT of::text, content_type, size, sha256, have, complete, received, data
			FROM evidence WHERE device = $1 AND id = $2::uuid FOR UPDATE`, device, c.ID.String()).
			Scan(&of, &info.ContentType, &info.Size, &info.SHA256, &info.Have, &info.Complete, &info.Received, &data)
		if err != nil {
			return fmt.Errorf("evidence: %w", err)
		}
		info.Of, _ = outbox.ParseID(of)
		var keep bool
		info, data, keep = applyChunk(info, data, c)
		out = info
		if !keep {
			_, err = tx.Exec(ctx, `DELETE FROM evidence WHERE device = $1 AND id = $2::uuid`, device, c.ID.String())
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE evidence SET have = $3, complete = $4, data = $5, of = $6::uuid, content_type = $7, size = $8, sha256 = $9
			WHERE device = $1 AND id = $2::uuid`,
			device, c.ID.String(), info.Have, info.Complete, data, info.Of.String(), info.ContentType, info.Size, info.SHA256)
		return err
	})
	return out, err
}

// Evidence implements Store.
func (s *PGStore) Evidence(ctx context.Context, device string, of outbox.ID) (*EvidenceInfo, []byte, error) {
	info := EvidenceInfo{Device: device, Of: of, Complete: true}
	var id string
	var data []byte
	err := s.pool.QueryRow(ctx, `SELECT id::text, content_type, size, sha256, have, received, data FROM evidence
		WHERE device = $1 AND of = $2::uuid AND complete`, device, of.String()).
		Scan(&id, &info.ContentType, &info.Size, &info.SHA256, &info.Have, &info.Received, &data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("hub: evidence: %w", err)
	}
	info.ID, _ = outbox.ParseID(id)
	return &info, data, nil
}

// EvidenceList implements Store.
func (s *PGStore) EvidenceList(ctx context.Context) ([]EvidenceInfo, error) {
	rows, err := s.pool.Query(ctx, `SELECT device, id::text, of::text, content_type, size, sha256, have, received
		FROM evidence WHERE complete ORDER BY received`)
	if err != nil {
		return nil, fmt.Errorf("hub: evidence: %w", err)
	}
	defer rows.Close()
	var out []EvidenceInfo
	for rows.Next() {
		e := EvidenceInfo{Complete: true}
		var id, of string
		if err := rows.Scan(&e.Device, &id, &of, &e.ContentType, &e.Size, &e.SHA256, &e.Have, &e.Received); err != nil {
			return nil, err
		}
		e.ID, _ = outbox.ParseID(id)
		e.Of, _ = outbox.ParseID(of)
		e.Received = e.Received.UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// Result implements Store.
func (s *PGStore) Result(ctx context.Context, device string, id outbox.ID) (*StoredResult, error) {
	var rcv time.Time
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT received, record FROM results WHERE device = $1 AND id = $2::uuid`, device, id.String()).Scan(&rcv, &raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hub: result: %w", err)
	}
	r, err := outbox.DecodeRecord(raw)
	if err != nil {
		return nil, fmt.Errorf("hub: stored record: %w", err)
	}
	return &StoredResult{Received: rcv.UTC(), Record: r}, nil
}

// PutReview implements Store.
func (s *PGStore) PutReview(ctx context.Context, r *osync.Review) error {
	tag, err := s.pool.Exec(ctx, `INSERT INTO reviews (device, of, review, created) VALUES ($1, $2::uuid, $3, $4) ON CONFLICT DO NOTHING`,
		r.Device, r.Of.String(), r, r.Time)
	if err != nil {
		return fmt.Errorf("hub: review: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrReviewed
	}
	return nil
}

// ReviewOf implements Store.
func (s *PGStore) ReviewOf(ctx context.Context, device string, of outbox.ID) (*StoredReview, error) {
	var out StoredReview
	err := s.pool.QueryRow(ctx, `SELECT review, delivered FROM reviews WHERE device = $1 AND of = $2::uuid`, device, of.String()).
		Scan(&out.Review, &out.Delivered)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hub: review: %w", err)
	}
	return &out, nil
}

// Reviews implements Store.
func (s *PGStore) Reviews(ctx context.Context, device string, undelivered bool) ([]StoredReview, error) {
	rows, err := s.pool.Query(ctx, `SELECT review, delivered FROM reviews
		WHERE ($1 = '' OR device = $1) AND NOT ($2 AND delivered) ORDER BY created`, device, undelivered)
	if err != nil {
		return nil, fmt.Errorf("hub: reviews: %w", err)
	}
	defer rows.Close()
	var out []StoredReview
	for rows.Next() {
		var r StoredReview
		if err := rows.Scan(&r.Review, &r.Delivered); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// MarkDelivered implements Store.
func (s *PGStore) MarkDelivered(ctx context.Context, device string, of outbox.ID) error {
	tag, err := s.pool.Exec(ctx, `UPDATE reviews SET delivered = true WHERE device = $1 AND of = $2::uuid`, device, of.String())
	if err == nil && tag.RowsAffected() == 0 {
		err = fmt.Errorf("no review of %s %s", device, of)
	}
	return err
}

// PutWarning implements Store.
func (s *PGStore) PutWarning(ctx context.Context, w *osync.Warning) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO warnings (id, region, until, issued, warning) VALUES ($1::uuid, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET region = $2, until = $3, issued = $4, warning = $5`,
		w.ID.String(), w.Region, w.Until, w.Issued, w)
	if err != nil {
		return fmt.Errorf("hub: warning: %w", err)
	}
	return nil
}

// Warnings implements Store.
func (s *PGStore) Warnings(ctx context.Context, at time.Time) ([]StoredWarning, error) {
	rows, err := s.pool.Query(ctx, `SELECT w.warning, d.device, d.at FROM warnings w
		LEFT JOIN warning_deliveries d ON d.id = w.id
		WHERE $1::timestamptz IS NULL OR w.until > $1 ORDER BY w.issued DESC, w.id`, nullTime(at))
	if err != nil {
		return nil, fmt.Errorf("hub: warnings: %w", err)
	}
	defer rows.Close()
	var out []StoredWarning
	for rows.Next() {
		var w osync.Warning
		var dev *string
		var when *time.Time
		if err := rows.Scan(&w, &dev, &when); err != nil {
			return nil, err
		}
		if len(out) == 0 || out[len(out)-1].ID != w.ID {
			out = append(out, StoredWarning{Warning: w, Delivered: map[string]time.Time{}})
		}
		if dev != nil && when != nil {
			out[len(out)-1].Delivered[*dev] = when.UTC()
		}
	}
	return out, rows.Err()
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// MarkWarningDelivered implements Store.
func (s *PGStore) MarkWarningDelivered(ctx context.Context, id outbox.ID, device string, at time.Time) error {
	tag, err := s.pool.Exec(ctx, `INSERT INTO warning_deliveries (id, device, at)
		SELECT id, $2, $3 FROM warnings WHERE id = $1::uuid ON CONFLICT DO NOTHING`, id.String(), device, at.UTC())
	if err != nil {
		return fmt.Errorf("hub: warning delivery: %w", err)
	}
	if tag.RowsAffected() == 0 {
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM warnings WHERE id = $1::uuid`, id.String()).Scan(&n); err == nil && n == 0 {
			return fmt.Errorf("no warning %s", id)
		}
	}
	return nil
}

package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/outbox"
)

// OutboxFile is the outbox's file name inside --data-dir.
const OutboxFile = "outbox.db"

// dataFlags are shared by device-side commands that touch the outbox.
type dataFlags struct {
	dir string
}

func (d *dataFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&d.dir, "data-dir", "", "device data directory holding the outbox (env OUTPOST_DATA_DIR; default "+defaultDataDirDoc+")")
}

const defaultDataDirDoc = "$STATE_DIRECTORY or /var/lib/outpost under systemd, else ./outpost-data"

// path resolves the data directory: flag, env, systemd's StateDirectory,
// /var/lib/outpost under systemd, else ./outpost-data.
func (d *dataFlags) path() string {
	switch {
	case d.dir != "":
		return d.dir
	case os.Getenv("OUTPOST_DATA_DIR") != "":
		return os.Getenv("OUTPOST_DATA_DIR")
	case os.Getenv("STATE_DIRECTORY") != "":
		return strings.Split(os.Getenv("STATE_DIRECTORY"), ":")[0]
	case os.Getenv("INVOCATION_ID") != "":
		return "/var/lib/outpost"
	}
	return "outpost-data"
}

// mustExist fails when the data dir holds no outbox yet.
func (d *dataFlags) mustExist() error {
	p := filepath.Join(d.path(), OutboxFile)
	if _, err := os.Stat(p); err != nil {
		return fmt.Errorf("no outbox at %s (is --data-dir right? nothing has been stored there yet)", p)
	}
	return nil
}

func (d *dataFlags) open(stderr io.Writer) (*outbox.Outbox, error) {
	p := filepath.Join(d.path(), OutboxFile)
	ob, err := outbox.Open(p, outbox.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		if strings.Contains(err.Error(), "timeout") {
			return nil, fmt.Errorf("%w (another outpost process — the daemon? — has it open)", err)
		}
		return nil, err
	}
	return ob, nil
}

const queueExamples = `  outpost queue stats                        # counts, bytes, oldest per priority
  outpost queue list --limit 20
  outpost queue show 019a6f0e-5c2b-7000-8d1e-2f4b1c9a0e11
  outpost queue export > results.jsonl         # JSON Lines: one result per line
  outpost queue export --out /media/usb/results.jsonl
  outpost queue compact                      # give free pages back to the disk
`

func runQueue(ctx context.Context, std IO, args []string) error {
	var (
		dflags deviceFlags
		asJSON bool
		limit  int
		out    string
	)
	fs := newFlags(std, "queue", "outpost queue stats|list|show ID|export|compact [--config FILE] [--data-dir DIR] [--json]", queueExamples)
	dflags.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print JSON (stats, list)")
	fs.IntVar(&limit, "limit", 50, "list: at most this many records (0 = all)")
	fs.StringVar(&out, "out", "", "export: write to this file (atomically) instead of stdout")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("want stats, list, show ID, export or compact")
	}
	sub := fs.Arg(0)
	switch sub {
	case "stats", "list", "export", "compact":
		if fs.NArg() != 1 {
			return usagef("%s takes no arguments", sub)
		}
	case "show":
		if fs.NArg() != 2 {
			return usagef("show takes one record ID")
		}
	default:
		return usagef("unknown queue command %q (want stats, list, show, export, compact)", sub)
	}
	cfg, _, err := dflags.config()
	if err != nil {
		return err
	}
	df := dataFlags{dir: cfg.DataDir}
	// Looking must not create: a mistyped --data-dir would otherwise show
	// an empty queue (and leave an outbox behind).
	if err := df.mustExist(); err != nil {
		return err
	}
	ob, err := df.open(std.Err)
	if err != nil {
		return err
	}
	defer ob.Close()
	switch sub {
	case "stats":
		return queueStats(std.Out, ob, asJSON)
	case "list":
		return queueList(std.Out, ob, limit, asJSON)
	case "show":
		id, err := outbox.ParseID(fs.Arg(1))
		if err != nil {
			return usagef("%v", err)
		}
		r, err := ob.Get(id)
		if err != nil {
			return err
		}
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintf(std.Out, "%s\n", b)
		return nil
	case "export":
		return queueExport(std, ob, out)
	case "compact":
		before, after, err := ob.Compact()
		if err != nil {
			return err
		}
		fmt.Fprintf(std.Out, "compacted %s: %s -> %s\n", ob.Path(), humanBytes(before), humanBytes(after))
	}
	return nil
}

func queueStats(w io.Writer, ob *outbox.Outbox, asJSON bool) error {
	st, err := ob.Stats()
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(w).Encode(st)
	}
	fmt.Fprintf(w, "outbox %s\n", ob.Path())
	fmt.Fprintf(w, "  records   %d of %d  (%s of %s, policy %s)\n", st.Count, st.MaxRecords, humanBytes(st.Bytes), humanBytes(st.MaxBytes), st.Policy)
	fmt.Fprintf(w, "  evidence  %s\n  file      %s\n", humanBytes(st.EvidenceBytes), humanBytes(st.FileBytes))
	if st.Count > 0 {
		fmt.Fprintf(w, "  oldest    %s ago\n", st.OldestAge.Round(time.Second))
	}
	fmt.Fprintf(w, "  totals    appended %d, acked %d, evicted %d, expired %d\n", st.Appended, st.Acked, st.Evicted, st.Expired)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PRIORITY\tCOUNT\tBYTES\tOLDEST\tEVICTED\tEXPIRED")
	for p := outbox.Priority(0); p < outbox.NumPriorities; p++ {
		ps := st.Priorities[p.String()]
		oldest := "-"
		if ps.Count > 0 {
			oldest = ps.Oldest.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%d\t%d\n", p, ps.Count, humanBytes(ps.Bytes), oldest, ps.Evicted, ps.Expired)
	}
	return tw.Flush()
}

var errStop = errors.New("stop")

func queueList(w io.Writer, ob *outbox.Outbox, limit int, asJSON bool) error {
	enc := json.NewEncoder(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if !asJSON {
		fmt.Fprintln(tw, "ID\tCREATED\tPRIORITY\tMODEL\tOUTPUT")
	}
	n := 0
	err := ob.Each(func(r *outbox.Record) error {
		if limit > 0 && n >= limit {
			return errStop
		}
		n++
		if asJSON {
			return enc.Encode(r)
		}
		o := string(r.Output)
		if len(o) > 60 {
			o = o[:57] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\n", r.ID, r.Created.Local().Format("2006-01-02 15:04:05"), r.Priority, r.Model, r.Version, o)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	if !asJSON {
		tw.Flush()
		if errors.Is(err, errStop) {
			fmt.Fprintf(w, "(first %d shown; --limit 0 for all)\n", limit)
		}
	}
	return nil
}

// queueExport writes every record as JSON Lines. To a file it goes through
// temp → fsync → rename, so a pulled USB stick never holds half a file
// under the final name.
func queueExport(std IO, ob *outbox.Outbox, path string) error {
	write := func(w io.Writer) (int, error) {
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		n := 0
		err := ob.Each(func(r *outbox.Record) error { n++; return enc.Encode(r) })
		if err != nil {
			return n, err
		}
		return n, bw.Flush()
	}
	if path == "" || path == "-" {
		_, err := write(std.Out)
		return err
	}
	n, err := atomicfile.Write(path, 0o644, write)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fmt.Fprintf(std.Err, "exported %d records to %s\n", n, path)
	return nil
}

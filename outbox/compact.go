package outbox

import (
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// maybeCompact compacts at Open when free pages are a large share of a
// large file: bbolt files never shrink on their own, and an SD card's
// outbox that once held a month of backlog should not stay that size.
func (o *Outbox) maybeCompact() error {
	if o.opts.CompactRatio < 0 {
		return nil
	}
	size := o.fileSize()
	if size < o.opts.CompactMinBytes {
		return nil
	}
	st := o.db.Stats()
	free := int64(st.FreePageN+st.PendingPageN) * int64(o.db.Info().PageSize)
	if float64(free)/float64(size) < o.opts.CompactRatio {
		return nil
	}
	return o.compactLocked()
}

// Compact rewrites the database without its free pages, safely: into a
// temporary file, fsynced, renamed over the original, directory fsynced.
// Appends wait while it runs. It returns the sizes before and after.
func (o *Outbox) Compact() (before, after int64, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	before = o.fileSize()
	err = o.compactLocked()
	return before, o.fileSize(), err
}

// compactLocked needs o.mu held for writing (or no other users, at Open).
func (o *Outbox) compactLocked() error {
	before := o.fileSize()
	tmp := o.path + ".compact"
	_ = os.Remove(tmp) // a leftover from a crash mid-compaction is garbage
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: o.boltOptions().Timeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("outbox: compact: %w", err)
	}
	if err := bolt.Compact(dst, o.db, 64<<20); err != nil {
		dst.Close()
		os.Remove(tmp)
		return fmt.Errorf("outbox: compact: %w", err)
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		os.Remove(tmp)
		return fmt.Errorf("outbox: compact: sync: %w", err)
	}
	if err := dst.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("outbox: compact: %w", err)
	}
	if err := o.db.Close(); err != nil {
		return fmt.Errorf("outbox: compact: close: %w", err)
	}
	// From here a crash leaves either the old file or the new one at o.path,
	// both complete: rename is atomic and both files were fsynced.
	if err := os.Rename(tmp, o.path); err != nil {
		db, oerr := bolt.Open(o.path, 0o600, o.boltOptions())
		if oerr == nil {
			o.db = db
		}
		return fmt.Errorf("outbox: compact: rename: %w", err)
	}
	syncDir(filepath.Dir(o.path))
	db, err := bolt.Open(o.path, 0o600, o.boltOptions())
	if err != nil {
		return fmt.Errorf("outbox: compact: reopen: %w", err)
	}
	o.db = db
	o.log.Info("outbox: compacted", "path", o.path, "before_bytes", before, "after_bytes", o.fileSize())
	return nil
}

// Trim compacts when the file has grown past a quarter over the caps
// (records plus evidence): under drop-lowest, evicting and adding large
// evidence in the same commits leaves bbolt unable to reuse the freed
// pages at once, and the file would outgrow its cap. The daemon calls it
// every minute; it does nothing most of the time.
func (o *Outbox) Trim() (bool, error) {
	limit := (o.opts.MaxBytes + o.opts.EvidenceMaxBytes) * 5 / 4
	if o.fileSize() <= limit {
		return false, nil
	}
	_, _, err := o.Compact()
	return err == nil, err
}

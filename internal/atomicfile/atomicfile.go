// Package atomicfile replaces a file so that a crash or a power cut leaves
// either the old content or the new, never a mix or nothing: write a
// temporary file in the same directory, fsync it, rename it over the
// target, fsync the directory (without that last step the rename itself
// can be lost — proved by TestPowerCut_AtomicWriteMutation).
//
// It imports nothing from outpost, so any package may use it.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// noDirSync is a test hook: the mutation check turns the directory fsync
// off and the power-cut harness must then see writes go back.
var noDirSync bool

// Write replaces path with what write produces, with mode perm. It returns
// write's count. On any error the target is untouched and the temporary
// file removed.
func Write(path string, perm os.FileMode, write func(io.Writer) (int, error)) (int, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("atomic write %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := write(tmp)
	if err != nil {
		return n, fmt.Errorf("atomic write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		return n, fmt.Errorf("atomic write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return n, fmt.Errorf("atomic write %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("atomic write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		done = true
		return n, fmt.Errorf("atomic write %s: %w", path, err)
	}
	done = true
	if noDirSync {
		return n, nil
	}
	if err := SyncDir(dir); err != nil {
		return n, fmt.Errorf("atomic write %s: %w", path, err)
	}
	return n, nil
}

// WriteBytes replaces path with data.
func WriteBytes(path string, data []byte, perm os.FileMode) error {
	_, err := Write(path, perm, func(w io.Writer) (int, error) { return w.Write(data) })
	return err
}

// SyncDir fsyncs a directory, making the names created, renamed or removed
// in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

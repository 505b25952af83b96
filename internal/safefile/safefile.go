// Package safefile is the one way outpost opens a file that someone else
// may have put there — a USB stick, the watch folder, its own state files
// after a crash or an edit: never through a final symlink, never blocking
// on a FIFO, regular files with one link only, and never more than a
// stated number of bytes. It imports nothing from outpost.
package safefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotRegular: a symlink, folder, FIFO, device, socket or hard link.
var ErrNotRegular = errors.New("not a plain file")

// ErrTooLarge: over the caller's byte limit.
var ErrTooLarge = errors.New("over the size limit")

// Open opens path for reading after checking, on the open file, that it
// is a regular file with one link and at most max bytes. Errors name the
// path and wrap ErrNotRegular, ErrTooLarge or the open error.
func Open(path string, max int64) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, nil, fmt.Errorf("%s: %w (a symlink; never followed)", path, ErrNotRegular)
		}
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w (a %s)", path, ErrNotRegular, Kind(info.Mode()))
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		// A hard link may be another file of the system's under a new name.
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w (%d hard links: only plain copied files are read)", path, ErrNotRegular, st.Nlink)
	}
	if info.Size() > max {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w: %d bytes, at most %d", path, ErrTooLarge, info.Size(), max)
	}
	return f, info, nil
}

// ReadFile reads a whole file under Open's rules; a file that grows past
// max while being read is refused too.
func ReadFile(path string, max int64) ([]byte, error) {
	f, _, err := Open(path, max)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: %w: grew past %d bytes while read", path, ErrTooLarge, max)
	}
	return data, nil
}

// Kind names a file mode's type for messages.
func Kind(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "folder"
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeDevice != 0:
		return "device"
	case m&os.ModeSocket != 0:
		return "socket"
	}
	return m.Type().String()
}

// ErrDamaged: a state file that could not be read as what it should be;
// LoadJSON has moved it aside.
var ErrDamaged = errors.New("damaged state file moved aside")

// LoadJSON reads a state file of at most max bytes into v. A missing file
// leaves v as it is and returns nil. A file that is not a plain file, is
// too large or does not decode is renamed to PATH.damaged-UNIXTIME (kept
// for a person to look at) and an error wrapping ErrDamaged says so: the
// caller logs it and starts from its defaults — a torn or hostile state
// file never stops a daemon from starting.
func LoadJSON(path string, max int64, v any) error {
	b, err := ReadFile(path, max)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		if err = json.Unmarshal(b, v); err == nil {
			return nil
		}
	}
	aside := fmt.Sprintf("%s.damaged-%d", path, time.Now().Unix())
	if rerr := os.Rename(path, aside); rerr != nil {
		return fmt.Errorf("%w: %s: %v (and moving it aside failed: %v)", ErrDamaged, path, err, rerr)
	}
	return fmt.Errorf("%w: %s: %v; kept as %s", ErrDamaged, path, err, aside)
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/internal/device"
	osync "github.com/outpost-edge/outpost/sync"
)

const bundleExamples = `  outpost bundle export --out /media/usb          # every result not yet at the hub, on the stick
  outpost bundle receipt /media/usb/outpost-kiosk-12-….receipt   # delete what the hub confirmed
  outpost bundle receipt /media/usb                # every receipt for this device on the stick
  outpost collect import /media/usb                # at the district office: store, write receipts
`

// runBundle is the device side of sneakernet (docs/OUTBOX.md, "Bundles").
func runBundle(ctx context.Context, std IO, args []string) error {
	var (
		dflags deviceFlags
		out    string
	)
	fs := newFlags(std, "bundle", "outpost bundle export --out DIR | bundle receipt PATH [--config FILE] [--data-dir DIR]", bundleExamples)
	dflags.register(fs)
	fs.StringVar(&out, "out", "", "export: the folder to write the bundle to (a mounted USB stick)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, _, err := dflags.config()
	if err != nil {
		return err
	}
	df := dataFlags{dir: cfg.DataDir}
	if err := df.mustExist(); err != nil {
		return err
	}
	cfg.DataDir = df.path()
	dev, err := device.Open(cfg, device.Options{NoModels: true, NoUplink: true})
	if err != nil {
		return err
	}
	defer dev.Close()
	switch {
	case fs.Arg(0) == "export" && fs.NArg() == 1:
		if out == "" {
			return usagef("bundle export needs --out DIR")
		}
		m, file, err := dev.ExportBundle(out)
		if errors.Is(err, device.ErrNothingToExport) {
			fmt.Fprintln(std.Out, err)
			return nil
		}
		if err != nil {
			return err
		}
		fi, err := os.Stat(file)
		if err != nil {
			// The stick went away right after the write (it panicked here).
			return fmt.Errorf("wrote %s, but it is gone now (%v): the stick was removed? the results stay on this device; export again", file, err)
		}
		fmt.Fprintf(std.Out, "wrote %s: %d results, %d photos/recordings, %d bytes; they stay on this device until its receipt comes back\n",
			file, m.Records-m.Evidence, m.Evidence, fi.Size())
		return nil
	case fs.Arg(0) == "receipt" && fs.NArg() == 2:
		return applyReceipts(std, dev, fs.Arg(1))
	}
	return usagef("want: bundle export --out DIR, or bundle receipt PATH")
}

// applyReceipts applies one receipt, or every receipt for this device in
// a folder.
func applyReceipts(std IO, dev *device.Device, path string) error {
	files := []string{path}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		files, _ = filepath.Glob(filepath.Join(path, "outpost-"+dev.Config().DeviceID+"-*"+osync.ReceiptExt))
		if len(files) == 0 {
			fmt.Fprintf(std.Out, "no receipts for %s in %s\n", dev.Config().DeviceID, path)
			return nil
		}
	}
	var failed []string
	for _, f := range files {
		n, r, err := dev.ApplyReceipt(f)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		fmt.Fprintf(std.Out, "%s: the hub has %d records of bundle %s (%d rejected); %d deleted here\n",
			filepath.Base(f), len(r.Stored), r.Bundle, len(r.Rejected), n)
	}
	if failed != nil {
		return fmt.Errorf("receipt refused, nothing deleted for it:\n  %s", strings.Join(failed, "\n  "))
	}
	return nil
}

// bundleFiles: the bundle files named, or found in the folders named.
func bundleFiles(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			m, _ := filepath.Glob(filepath.Join(p, "*"+osync.BundleExt))
			files = append(files, m...)
		} else {
			files = append(files, p)
		}
	}
	if len(files) == 0 {
		return nil, usagef("collect import: no %s files in %s", osync.BundleExt, strings.Join(paths, ", "))
	}
	return files, nil
}

// collectImport is `collect import PATH...`: bundles from sticks.
func collectImport(ctx context.Context, std IO, st hub.Store, key []byte, reg hub.Registry, paths []string) error {
	files, err := bundleFiles(paths)
	if err != nil {
		return err
	}
	var failed int
	for _, f := range files {
		r, out, c, err := hub.ImportBundle(ctx, st, f, key, reg, time.Now())
		if err != nil {
			failed++
			fmt.Fprintf(std.Err, "%v\n", err)
			continue
		}
		fmt.Fprintf(std.Out, "%s: %s, %d new, %d already here, %d rejected; receipt %s\n", filepath.Base(f), r.Device, c.New, c.Duplicate, len(r.Rejected), out)
	}
	if failed > 0 {
		return fmt.Errorf("collect import: %d of %d bundles refused", failed, len(files))
	}
	return nil
}

package daemon

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/outpost-edge/outpost/internal/device"
	osync "github.com/outpost-edge/outpost/sync"
)

// usbPresent: the configured stick folder is there and on another
// filesystem than the device's own data: an empty mount point (no stick
// in) sits on the device's disk, and bundles written there never left it.
func (d *Daemon) usbPresent() bool {
	if d.cfg.USBDir == "" {
		return false
	}
	var stick, own unix.Stat_t
	if unix.Stat(d.cfg.USBDir, &stick) != nil || stick.Mode&unix.S_IFMT != unix.S_IFDIR {
		return false
	}
	if unix.Stat(d.cfg.DataDir, &own) != nil {
		return true
	}
	return stick.Dev != own.Dev
}

// handleUSB: GET /v1/usb — is a stick there, and what is waiting for it.
func (d *Daemon) handleUSB(w http.ResponseWriter, r *http.Request) {
	receipts, _ := filepath.Glob(filepath.Join(d.cfg.USBDir, "outpost-"+d.cfg.DeviceID+"-*"+osync.ReceiptExt))
	st, _ := d.dev.Outbox().Stats()
	writeJSON(w, 200, map[string]any{"configured": d.cfg.USBDir != "", "present": d.usbPresent(), "dir": d.cfg.USBDir,
		"receipts": len(receipts), "waiting": st.Count, "bundles_out": len(d.dev.Bundles())})
}

// handleUSBExport: POST /v1/usb/export — apply the hub's receipts found on
// the stick (the last trip), then write a bundle of what is still here.
func (d *Daemon) handleUSBExport(w http.ResponseWriter, r *http.Request) {
	if !d.usbPresent() {
		fail(w, http.StatusConflict, "no_usb", errors.New("no USB stick mounted at "+d.cfg.USBDir+" (an empty folder on the device's own disk is not a stick)"))
		return
	}
	receipts, _ := filepath.Glob(filepath.Join(d.cfg.USBDir, "outpost-"+d.cfg.DeviceID+"-*"+osync.ReceiptExt))
	deleted, applied := 0, 0
	var refused []string
	for _, f := range receipts {
		n, _, err := d.dev.ApplyReceipt(f)
		if err != nil {
			refused = append(refused, filepath.Base(f)+": "+err.Error())
			continue
		}
		deleted += n
		applied++
		// Done with: the stick should not carry it back and forth.
		os.Remove(f)
	}
	out := map[string]any{"receipts_applied": applied, "deleted": deleted, "receipts_refused": refused}
	m, file, err := d.dev.ExportBundle(d.cfg.USBDir)
	switch {
	case errors.Is(err, device.ErrNothingToExport):
		out["bundle"] = nil
	case err != nil:
		fail(w, http.StatusInsufficientStorage, "export_failed", err)
		return
	default:
		fi, _ := os.Stat(file)
		out["bundle"] = map[string]any{"file": filepath.Base(file), "records": m.Records - m.Evidence, "evidence": m.Evidence, "bytes": fi.Size()}
	}
	writeJSON(w, 200, out)
}

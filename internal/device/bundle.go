package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// BundlesDir (in the data dir) remembers each bundle written: its ID and
// the records it carried, so a receipt can delete only those.
const BundlesDir = "bundles"

// MaxReceiptBytes bounds a receipt (and the device's own record of a
// bundle): 100,000 records named by ID and sum fit in about 9 MiB.
const MaxReceiptBytes = 32 << 20

// ExportedBundle is what the device remembers of a bundle it wrote.
type ExportedBundle struct {
	ID      outbox.ID   `json:"id"`
	File    string      `json:"file"`
	Created time.Time   `json:"created"`
	IDs     []outbox.ID `json:"ids"` // records and evidence records carried
	// Sums, parallel to IDs: the bytes written for each record. A receipt
	// deletes a record only when it names these bytes.
	Sums []osync.Sum `json:"sums"`
}

// ErrNothingToExport: the outbox is empty.
var ErrNothingToExport = errors.New("nothing to export: every result has reached the hub")

// ExportBundle writes every record still on the device (and the evidence
// the sharing policy allows) as one bundle file in dir — written to a
// temp file, fsynced and renamed, so a stick pulled out mid-write leaves
// nothing that looks complete. The records stay until a receipt names
// them.
func (d *Device) ExportBundle(dir string) (*osync.BundleManifest, string, error) {
	if d.ob == nil {
		return nil, "", errors.New("device: no outbox")
	}
	var recs []*outbox.Record
	var evIDs []outbox.ID
	err := d.ob.Each(func(r *outbox.Record) error {
		if r.Tier == outbox.TierEvidence {
			if d.cfg.Policy(r.Model).Evidence == ShareNever {
				return nil // the policy no longer lets it go
			}
			evIDs = append(evIDs, r.ID)
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	if len(recs) == 0 {
		return nil, "", ErrNothingToExport
	}
	evidence := map[outbox.ID][]byte{}
	for _, id := range evIDs {
		b, err := d.ob.Evidence(id)
		if err != nil {
			return nil, "", err
		}
		if b != nil {
			evidence[id] = b
		}
	}
	// Temp files of an export interrupted before (a stick pulled out) go.
	if stale, _ := filepath.Glob(filepath.Join(dir, ".outpost-"+d.cfg.DeviceID+"-*"+osync.BundleExt+".tmp-*")); len(stale) > 0 {
		for _, f := range stale {
			os.Remove(f)
		}
		d.log.Info("bundle: removed the temp files of an interrupted export", "count", len(stale))
	}
	id := outbox.NewIDGen().New()
	file := filepath.Join(dir, fmt.Sprintf("outpost-%s-%s%s", d.cfg.DeviceID, id, osync.BundleExt))
	var m *osync.BundleManifest
	_, err = atomicfile.Write(file, 0o644, func(w io.Writer) (int, error) {
		var werr error
		m, werr = osync.WriteBundle(w, id, d.cfg.DeviceID, time.Now(), recs, evidence, d.key)
		return 0, werr
	})
	if err != nil {
		return nil, "", fmt.Errorf("bundle: write %s: %w", file, err)
	}
	eb := ExportedBundle{ID: id, File: file, Created: m.Created}
	var enc []byte
	for _, r := range recs {
		eb.IDs = append(eb.IDs, r.ID)
		enc = r.Encode(enc[:0])
		eb.Sums = append(eb.Sums, osync.RecordSum(enc))
	}
	b, _ := json.Marshal(eb)
	if err := os.MkdirAll(filepath.Join(d.cfg.DataDir, BundlesDir), 0o750); err != nil {
		return nil, "", err
	}
	if err := atomicfile.WriteBytes(filepath.Join(d.cfg.DataDir, BundlesDir, id.String()+".json"), b, 0o640); err != nil {
		return nil, "", fmt.Errorf("bundle: %w", err)
	}
	d.log.Info("bundle written", "file", file, "records", m.Records, "evidence", m.Evidence)
	return m, file, nil
}

// Bundles lists the bundles written and not yet receipted.
func (d *Device) Bundles() []ExportedBundle {
	files, _ := filepath.Glob(filepath.Join(d.cfg.DataDir, BundlesDir, "*.json"))
	var out []ExportedBundle
	for _, f := range files {
		b, err := safefile.ReadFile(f, MaxReceiptBytes)
		var eb ExportedBundle
		if err == nil && json.Unmarshal(b, &eb) == nil {
			out = append(out, eb)
		}
	}
	return out
}

// ApplyReceipt deletes exactly the records a hub's receipt names, after
// checking it: this device's, signed by a pinned hub key (if any), for a
// bundle this device wrote, naming only records that bundle carried. A
// record already gone (synced over MQTT meanwhile) is simply not there.
func (d *Device) ApplyReceipt(path string) (int, *osync.Receipt, error) {
	b, err := safefile.ReadFile(path, MaxReceiptBytes)
	if err != nil {
		return 0, nil, fmt.Errorf("receipt: %w", err)
	}
	r, err := osync.DecodeReceiptFile(b, d.cfg.DeviceID, d.cfg.PinnedHubKeys())
	if err != nil {
		return 0, nil, err
	}
	d.receiptWarnings(r)
	local := filepath.Join(d.cfg.DataDir, BundlesDir, r.Bundle.String()+".json")
	lb, err := safefile.ReadFile(local, MaxReceiptBytes)
	if err != nil {
		return 0, r, fmt.Errorf("%w: receipt for bundle %s, which this device did not write or has already applied", osync.ErrBundle, r.Bundle)
	}
	var eb ExportedBundle
	if err := json.Unmarshal(lb, &eb); err != nil {
		return 0, r, fmt.Errorf("bundle record %s: %w", local, err)
	}
	if len(eb.Sums) != len(eb.IDs) {
		return 0, r, fmt.Errorf("%w: bundle %s was written before record sums; export a new bundle: nothing deleted", osync.ErrBundle, r.Bundle)
	}
	carried := map[outbox.ID]osync.Sum{}
	for i, id := range eb.IDs {
		carried[id] = eb.Sums[i]
	}
	var foreign, mismatched int
	var named []outbox.ID
	for _, l := range []struct {
		ids  []outbox.ID
		sums []osync.Sum
	}{{r.Stored, r.StoredSums}, {r.Rejected, r.RejectedSums}} {
		for i, id := range l.ids {
			sum, ok := carried[id]
			switch {
			case !ok:
				foreign++
			case sum != l.sums[i]:
				mismatched++ // the hub read other bytes than this device wrote
			default:
				named = append(named, id)
			}
		}
	}
	if foreign > 0 {
		return 0, r, fmt.Errorf("%w: the receipt names %d records bundle %s did not carry: nothing deleted", osync.ErrBundle, foreign, r.Bundle)
	}
	n, err := d.ob.Ack(named)
	if err != nil {
		return 0, r, fmt.Errorf("receipt: deleting: %w", err)
	}
	if mismatched > 0 {
		// The bundle record stays: a receipt for the true bundle may follow.
		return n, r, fmt.Errorf("%w: the receipt names %d records of bundle %s by other bytes than this device wrote (the bundle was altered on the way): those are kept, %d deleted",
			osync.ErrBundle, mismatched, r.Bundle, n)
	}
	os.Remove(local)
	d.log.Info("bundle receipt applied", "bundle", r.Bundle.String(), "deleted", n, "named", len(named))
	return n, r, nil
}

package hub

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// MaxBundleBytes bounds a bundle file the hub opens.
const MaxBundleBytes = 4 << 30

// ImportBundle stores a bundle carried by hand (a USB stick) exactly as
// the collector stores batches from MQTT — same store, same dedup by
// record ID, evidence by the same rule — and writes a receipt beside it
// (signed with key when set) naming what the hub now has and what it
// rejected for good. Importing the same bundle again stores nothing new
// and writes the same receipt. The receipt also carries the regional
// warnings (reg places the device) the device has not confirmed.
func ImportBundle(ctx context.Context, st Store, path string, key ed25519.PrivateKey, reg Registry, now time.Time) (*osync.Receipt, string, Counts, error) {
	f, _, err := safefile.Open(path, MaxBundleBytes)
	if err != nil {
		return nil, "", Counts{}, err
	}
	defer f.Close()
	r, file, total, err := ImportBundleFrom(ctx, st, path, f, key, reg, now)
	if err != nil {
		return nil, "", total, err
	}
	out := strings.TrimSuffix(path, osync.BundleExt) + osync.ReceiptExt
	if err := atomicfile.WriteBytes(out, file, 0o644); err != nil {
		return nil, "", total, fmt.Errorf("receipt: %w (the bundle is stored; import it again to write the receipt)", err)
	}
	return r, out, total, nil
}

// ImportBundleFrom stores a bundle read from r (named name in errors) and
// returns its receipt and the receipt file's bytes, signed by key; the
// caller puts them beside the bundle. A running collector imports through
// it for `collect import` (the CLI streams the stick's file over the
// collector's socket: the hub's sandbox need not see the stick).
func ImportBundleFrom(ctx context.Context, st Store, name string, rd io.Reader, key ed25519.PrivateKey, reg Registry, now time.Time) (*osync.Receipt, []byte, Counts, error) {
	var total Counts
	path := name
	b, err := osync.ReadBundle(rd)
	if err != nil {
		return nil, nil, total, fmt.Errorf("%s: %w", path, err)
	}
	m := b.Manifest
	// The same rule as MQTT: a bundle is stored only under the device
	// whose key signed it (one for a device that never wrote it was stored
	// before).
	if _, err := Enrol(ctx, st, m.Device, b.Key, now); err != nil {
		return nil, nil, total, fmt.Errorf("%s: %w: nothing stored", path, err)
	}
	r := &osync.Receipt{Bundle: m.ID, Device: m.Device, Time: now.UTC(), StoredSums: []osync.Sum{}, RejectedSums: []osync.Sum{}}
	stored := func(id outbox.ID) {
		r.Stored = append(r.Stored, id)
		r.StoredSums = append(r.StoredSums, b.Sums[id])
	}
	for _, id := range b.Bad {
		r.Rejected = append(r.Rejected, id)
		r.RejectedSums = append(r.RejectedSums, b.Sums[id])
	}
	var labels []*outbox.Record // evidence records are stored as evidence, not results
	for _, rec := range b.Records {
		if rec.Tier != outbox.TierEvidence {
			labels = append(labels, rec)
		}
	}
	conflicts := map[outbox.ID]bool{}
	for i := 0; i < len(labels); i += 5000 {
		part := labels[i:min(len(labels), i+5000)]
		c, err := st.Commit(ctx, []*osync.Batch{{ID: m.ID, Device: m.Device, Sent: m.Created, Records: part}}, now)
		if err != nil {
			return nil, nil, total, fmt.Errorf("%s: storing: %w", path, err)
		}
		total.New += c[0].New
		total.Duplicate += c[0].Duplicate
		for id := range c[0].Conflicts {
			conflicts[id] = true
			total.conflict(id)
		}
	}
	for _, rec := range b.Records {
		data, isEvidence := b.Evidence[rec.ID]
		if rec.Tier != outbox.TierEvidence {
			if !conflicts[rec.ID] { // held with other bytes: not named, the device keeps it
				stored(rec.ID)
			}
			continue
		}
		if !isEvidence || rec.Evidence == nil {
			// Not named: the device keeps what the bundle lacked and may
			// send it again (over MQTT or on the next stick).
			continue
		}
		var of struct {
			Of string `json:"of"`
		}
		json.Unmarshal(rec.Output, &of)
		ofID, _ := outbox.ParseID(of.Of)
		c := &osync.EvidenceChunk{ID: rec.ID, Of: ofID, Size: int64(len(data)), ContentType: rec.Evidence.ContentType, Data: data}
		sum, _ := hex.DecodeString(rec.Evidence.SHA256)
		copy(c.SHA256[:], sum)
		info, err := st.PutEvidence(ctx, m.Device, c, now)
		if err != nil {
			return nil, nil, total, fmt.Errorf("%s: evidence: %w", path, err)
		}
		if info.Complete {
			stored(rec.ID)
		}
		// Not complete: not named, so the device keeps the photo.
	}
	// The stick carries the region's warnings back, each signed for this
	// device as over MQTT (a device that never comes online still hears).
	ws, err := pendingWarnings(ctx, st, reg, m.Device, now)
	if err != nil {
		return nil, nil, total, fmt.Errorf("%s: warnings: %w", path, err)
	}
	for i := range ws {
		r.Warnings = append(r.Warnings, osync.EncodeWarning(&ws[i], m.Device, key))
	}
	return r, osync.EncodeReceiptFile(r, key), total, nil
}

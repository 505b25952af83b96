package sync

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

// Bundles carry records by hand where no link reaches (docs/PROTOCOL.md,
// "Bundles"): one tar file holding manifest.json (device, bundle ID, ID
// range, counts, the size and SHA-256 of every other part), the records as
// wire-format batches (records-NNNN.bin: zstd, versioned, the collector's
// own decoder) and evidence blobs (evidence/<record id>). The hub answers
// with a receipt, a signed JSON file written beside the bundle; the
// device deletes exactly what the receipt names.

const (
	bundleFormat   = "outpost-bundle/1"
	receiptFormat  = "outpost-receipt/1"
	receiptLabel   = "outpost receipt v1\x00"
	bundlePerBatch = 10_000
	// BundleExt and ReceiptExt name bundle and receipt files.
	BundleExt = ".obundle"
	// manifestSig holds the device's key and signature over the manifest.
	manifestSig     = "manifest.sig"
	bundleSignLabel = "outpost bundle v1\x00"
	ReceiptExt      = ".receipt"
	// maxManifest bounds manifest.json; maxEvidencePart one photo or
	// recording (the hub's evidence limit).
	maxManifest     = 16 << 20
	maxEvidencePart = 16 << 20
)

// ErrBundle wraps every reason a bundle or receipt is not taken.
var ErrBundle = errors.New("bundle")

// BundleManifest is a bundle's manifest.json.
type BundleManifest struct {
	Format   string       `json:"format"`
	ID       outbox.ID    `json:"id"`
	Device   string       `json:"device"`
	Created  time.Time    `json:"created"`
	First    outbox.ID    `json:"first"` // lowest record ID
	Last     outbox.ID    `json:"last"`  // highest record ID
	Records  int          `json:"records"`
	Evidence int          `json:"evidence"`
	Parts    []BundlePart `json:"parts"`
}

// BundlePart is one file of a bundle.
type BundlePart struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Bundle is what a bundle carries.
type Bundle struct {
	Manifest BundleManifest
	Records  []*outbox.Record
	Bad      []outbox.ID          // records framed but not decodable (rejected for good)
	Sums     map[outbox.ID]Sum    // of every record's bytes as read, good and bad
	Key      ed25519.PublicKey    // the device key that signed the manifest; nil if unsigned
	Evidence map[outbox.ID][]byte // by evidence record ID
}

// WriteBundle writes records (and the evidence of evidence records) as a
// bundle. The caller writes w to a temp file and renames it, so a stick
// pulled mid-write leaves nothing complete-looking.
//
// With key set, manifest.sig follows the manifest: the device's public key
// and its signature over "outpost bundle v1\0" + manifest.json, which lists
// every part's SHA-256 — so the whole bundle is the device's word.
func WriteBundle(w io.Writer, id outbox.ID, device string, now time.Time, recs []*outbox.Record, evidence map[outbox.ID][]byte, key ed25519.PrivateKey) (*BundleManifest, error) {
	m := &BundleManifest{Format: bundleFormat, ID: id, Device: device, Created: now.UTC(), Records: len(recs), Evidence: len(evidence)}
	sort.Slice(recs, func(i, j int) bool { return bytes.Compare(recs[i].ID[:], recs[j].ID[:]) < 0 })
	if len(recs) > 0 {
		m.First, m.Last = recs[0].ID, recs[len(recs)-1].ID
	}
	parts := map[string][]byte{}
	for i := 0; i*bundlePerBatch < len(recs); i++ {
		chunk := recs[i*bundlePerBatch : min(len(recs), (i+1)*bundlePerBatch)]
		parts[fmt.Sprintf("records-%04d.bin", i+1)] = EncodeBatch(&Batch{ID: id, Device: device, Sent: now, Records: chunk})
	}
	for eid, b := range evidence {
		parts["evidence/"+eid.String()] = b
	}
	names := make([]string, 0, len(parts))
	for n := range parts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sum := sha256.Sum256(parts[n])
		m.Parts = append(m.Parts, BundlePart{Name: n, Size: int64(len(parts[n])), SHA256: hex.EncodeToString(sum[:])})
	}
	man, _ := json.MarshalIndent(m, "", "  ")
	tw := tar.NewWriter(w)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, ModTime: now}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := put("manifest.json", man); err != nil {
		return nil, err
	}
	if key != nil {
		sig := ed25519.Sign(key, append([]byte(bundleSignLabel), man...))
		if err := put(manifestSig, append(append([]byte(nil), key.Public().(ed25519.PublicKey)...), sig...)); err != nil {
			return nil, err
		}
	}
	for _, n := range names {
		if err := put(n, parts[n]); err != nil {
			return nil, err
		}
	}
	return m, tw.Close()
}

// ReadBundle reads and checks a bundle: every part listed, present once,
// of its size and SHA-256; records that decode and belong to the
// manifest's device. Errors wrap ErrBundle and name the part.
func ReadBundle(r io.Reader) (*Bundle, error) {
	tr := tar.NewReader(r)
	// manifest.json comes first (WriteBundle writes it so): every later
	// entry is checked against its listed size before a byte of it is
	// read, so a stick cannot make the hub hold a part it never listed.
	h, err := tr.Next()
	if err != nil || h.Name != "manifest.json" || h.Typeflag != tar.TypeReg || h.Size > maxManifest {
		return nil, fmt.Errorf("%w: no manifest.json of at most %d MiB first (truncated, or not a bundle)", ErrBundle, maxManifest>>20)
	}
	man, err := io.ReadAll(io.LimitReader(tr, h.Size))
	if err != nil {
		return nil, fmt.Errorf("%w: manifest.json truncated: %v", ErrBundle, err)
	}
	var m BundleManifest
	if err := json.Unmarshal(man, &m); err != nil || m.Format != bundleFormat || !ValidDeviceID(m.Device) {
		return nil, fmt.Errorf("%w: manifest (format %q, device %q): %v", ErrBundle, m.Format, m.Device, err)
	}
	var key ed25519.PublicKey
	listed := map[string]int64{manifestSig: batchTrailer}
	for _, p := range m.Parts {
		limit := int64(maxDecoded) // a records part is a batch
		if strings.HasPrefix(p.Name, "evidence/") {
			limit = maxEvidencePart
		}
		if p.Size < 0 || p.Size > limit {
			return nil, fmt.Errorf("%w: part %s of %d bytes (at most %d)", ErrBundle, p.Name, p.Size, limit)
		}
		listed[p.Name] = p.Size
	}
	parts := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: truncated or not a bundle: %v", ErrBundle, err)
		}
		size, ok := listed[h.Name]
		if !ok || h.Typeflag != tar.TypeReg || h.Size != size {
			return nil, fmt.Errorf("%w: entry %q (%d bytes) is not a part the manifest lists with that size", ErrBundle, h.Name, h.Size)
		}
		if _, dup := parts[h.Name]; dup || (h.Name == manifestSig && key != nil) {
			return nil, fmt.Errorf("%w: %s twice", ErrBundle, h.Name)
		}
		b, err := io.ReadAll(io.LimitReader(tr, h.Size))
		if err != nil || int64(len(b)) != h.Size {
			return nil, fmt.Errorf("%w: %s truncated: %v", ErrBundle, h.Name, err)
		}
		if h.Name == manifestSig {
			pub := ed25519.PublicKey(b[:ed25519.PublicKeySize])
			if !ed25519.Verify(pub, append([]byte(bundleSignLabel), man...), b[ed25519.PublicKeySize:]) {
				return nil, fmt.Errorf("%w: manifest signature does not verify (altered on the way?)", ErrBundle)
			}
			key = pub
			continue
		}
		parts[h.Name] = b
	}
	if len(parts) != len(m.Parts) {
		return nil, fmt.Errorf("%w: %d parts listed, %d present (truncated?)", ErrBundle, len(m.Parts), len(parts))
	}
	b := &Bundle{Manifest: m, Key: key, Evidence: map[outbox.ID][]byte{}, Sums: map[outbox.ID]Sum{}}
	for _, p := range m.Parts {
		data, ok := parts[p.Name]
		sum := sha256.Sum256(data)
		if !ok || int64(len(data)) != p.Size || hex.EncodeToString(sum[:]) != p.SHA256 {
			return nil, fmt.Errorf("%w: part %s missing or does not match its SHA-256 (tampered or damaged)", ErrBundle, p.Name)
		}
		switch {
		case strings.HasPrefix(p.Name, "records-") && path.Ext(p.Name) == ".bin":
			batch, err := DecodeBatch(data)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrBundle, p.Name, err)
			}
			if batch.Device != m.Device {
				return nil, fmt.Errorf("%w: %s holds records of %q, the manifest says %q", ErrBundle, p.Name, batch.Device, m.Device)
			}
			b.Records = append(b.Records, batch.Records...)
			for i, r := range batch.Records {
				b.Sums[r.ID] = batch.Sums[i]
			}
			for _, bad := range batch.Bad {
				b.Bad = append(b.Bad, bad.ID)
				b.Sums[bad.ID] = bad.Sum
			}
		case strings.HasPrefix(p.Name, "evidence/"):
			id, err := outbox.ParseID(strings.TrimPrefix(p.Name, "evidence/"))
			if err != nil {
				return nil, fmt.Errorf("%w: evidence part %q", ErrBundle, p.Name)
			}
			b.Evidence[id] = data
		default:
			return nil, fmt.Errorf("%w: unexpected part %q", ErrBundle, p.Name)
		}
	}
	if len(b.Records)+len(b.Bad) != m.Records || len(b.Evidence) != m.Evidence {
		return nil, fmt.Errorf("%w: %d records and %d evidence, the manifest says %d and %d", ErrBundle, len(b.Records)+len(b.Bad), len(b.Evidence), m.Records, m.Evidence)
	}
	return b, nil
}

// Receipt is the hub's answer to an imported bundle: what it stored (or
// had already) and what it rejected for good. Signed by the hub's key
// like acks when it has one.
type Receipt struct {
	Format   string      `json:"format"`
	Bundle   outbox.ID   `json:"bundle"`
	Device   string      `json:"device"`
	Stored   []outbox.ID `json:"stored"`
	Rejected []outbox.ID `json:"rejected"`
	// StoredSums and RejectedSums, parallel to Stored and Rejected, name
	// the bytes the hub read for each record; the device deletes only
	// records whose sum matches what it wrote.
	StoredSums   []Sum     `json:"stored_sums"`
	RejectedSums []Sum     `json:"rejected_sums"`
	Time         time.Time `json:"time"`
	// Warnings: regional warnings for the device, each a cmd-topic
	// message signed for it (EncodeWarning), so the stick carries them
	// as MQTT would.
	Warnings [][]byte `json:"warnings,omitempty"`
	KeyHint  string   `json:"key_hint,omitempty"`
	Sig      []byte   `json:"sig,omitempty"`
}

func (r *Receipt) signed() []byte {
	c := *r
	c.Sig, c.KeyHint = nil, ""
	b, _ := json.Marshal(c)
	return append([]byte(receiptLabel), b...)
}

// receiptFile is the receipt file (format outpost-receipt/2): the receipt
// as a JSON object and the hub's signature over exactly those bytes, so a
// hub written in another language signs what it wrote and a device checks
// what it read (receipt/1 was verified over outpost's own re-serialisation:
// a time written ".120Z" or "+00:00" failed as unsigned).
type receiptFile struct {
	Format  string          `json:"format"`
	Receipt json.RawMessage `json:"receipt"`
	KeyHint string          `json:"key_hint,omitempty"`
	Sig     []byte          `json:"sig,omitempty"`
}

const receiptFormat2 = "outpost-receipt/2"

// EncodeReceiptFile returns the receipt file's bytes, signed when key is set.
func EncodeReceiptFile(r *Receipt, key ed25519.PrivateKey) []byte {
	r.Format = receiptFormat
	r.Sig, r.KeyHint = nil, ""
	body, _ := json.MarshalIndent(r, "  ", "  ")
	f := receiptFile{Format: receiptFormat2, Receipt: body}
	if key != nil {
		h := KeyHint(key.Public().(ed25519.PublicKey))
		f.KeyHint = hex.EncodeToString(h[:])
		f.Sig = ed25519.Sign(key, append([]byte(receiptLabel), body...))
	}
	b, _ := json.MarshalIndent(f, "", "  ")
	return b
}

// decodeReceipt2 checks a receipt/2 signature over the exact bytes of its
// receipt member, then reads it.
func decodeReceipt2(f *receiptFile, device string, hubKeys []ed25519.PublicKey) (*Receipt, error) {
	if len(hubKeys) > 0 {
		ok := false
		for _, k := range hubKeys {
			ok = ok || (len(f.Sig) == ed25519.SignatureSize && ed25519.Verify(k, append([]byte(receiptLabel), f.Receipt...), f.Sig))
		}
		if !ok {
			return nil, fmt.Errorf("%w: receipt %w", ErrBundle, ErrForged)
		}
	}
	var r Receipt
	if err := json.Unmarshal(f.Receipt, &r); err != nil {
		return nil, fmt.Errorf("%w: receipt: %v", ErrBundle, err)
	}
	r.Format = receiptFormat
	return checkReceipt(&r, device)
}

func checkReceipt(r *Receipt, device string) (*Receipt, error) {
	if r.Device != device {
		return nil, fmt.Errorf("%w: receipt for device %q, this is %q", ErrBundle, r.Device, device)
	}
	if len(r.StoredSums) != len(r.Stored) || len(r.RejectedSums) != len(r.Rejected) {
		return nil, fmt.Errorf("%w: receipt does not name the bytes of each record (%d/%d stored, %d/%d rejected sums): from a hub before record sums? nothing deleted",
			ErrBundle, len(r.StoredSums), len(r.Stored), len(r.RejectedSums), len(r.Rejected))
	}
	return r, nil
}

// DecodeReceiptFile parses a receipt and checks it is for device and, when
// hub keys are pinned, signed by one of them. It reads receipt/2 (signed
// over the exact bytes) and, as before, receipt/1.
func DecodeReceiptFile(b []byte, device string, hubKeys []ed25519.PublicKey) (*Receipt, error) {
	var f receiptFile
	if err := json.Unmarshal(b, &f); err == nil && f.Format == receiptFormat2 {
		return decodeReceipt2(&f, device, hubKeys)
	}
	var r Receipt
	if err := json.Unmarshal(b, &r); err != nil || r.Format != receiptFormat {
		return nil, fmt.Errorf("%w: not a receipt (format %q): %v", ErrBundle, r.Format, err)
	}
	if r.Device != device {
		return nil, fmt.Errorf("%w: receipt for device %q, this is %q", ErrBundle, r.Device, device)
	}
	if len(r.StoredSums) != len(r.Stored) || len(r.RejectedSums) != len(r.Rejected) {
		return nil, fmt.Errorf("%w: receipt does not name the bytes of each record (%d/%d stored, %d/%d rejected sums): from a hub before record sums? nothing deleted",
			ErrBundle, len(r.StoredSums), len(r.Stored), len(r.RejectedSums), len(r.Rejected))
	}
	if len(hubKeys) > 0 {
		ok := false
		for _, k := range hubKeys {
			ok = ok || (len(r.Sig) == ed25519.SignatureSize && ed25519.Verify(k, r.signed(), r.Sig))
		}
		if !ok {
			return nil, fmt.Errorf("%w: receipt %w", ErrBundle, ErrForged)
		}
	}
	return &r, nil
}

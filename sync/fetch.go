package sync

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/counter"
	"github.com/outpost-edge/outpost/internal/safefile"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrAlreadyInstalled, from FetcherOptions.Accept: the offered version is
// the one installed (e.g. a download finished and was swapped in just
// before a crash); nothing to fetch, and not a refusal.
var ErrAlreadyInstalled = errors.New("already installed")

// FetcherOptions configure a Fetcher.
type FetcherOptions struct {
	Dir     string              // where offers and partial downloads live (created)
	Device  string              // this device's ID (offers are signed for it)
	HubKeys []ed25519.PublicKey // pinned: offers must be signed by one
	// MaxBytes caps a package's size; default 64 MiB.
	MaxBytes int64
	// Accept decides whether to download an offer at all: the program's
	// signature over its metadata, a model this device has, a sequence
	// number above the installed one. Its error is the refusal's reason.
	Accept func(*Offer) error
	// Install verifies, installs and activates a downloaded package file;
	// its error is the refusal's reason. Called from its own goroutine.
	Install func(path string, o *Offer) error
	// Timeout: a chunk not received this long after its request is asked
	// for again; default 30s.
	Timeout time.Duration
	// Context names what the device's accept and install decisions depend
	// on (its configuration, its models folder). Refusals remembered under
	// another context are forgotten at open, so an offer refused for a
	// cause since fixed (keys, permissions) is taken again when the hub
	// offers it — refused offers were never offered again before.
	Context string
	// Free reports the space left where downloads go; default statfs.
	Free   func(dir string) (int64, bool)
	Logger *slog.Logger
	Now    func() time.Time
}

// UpdateStatus is the state of the latest model update, as the device
// reports it (status message, /v1/status, /metrics).
type UpdateStatus struct {
	Offer   string    `json:"offer"`
	Model   string    `json:"model"`
	Version string    `json:"version,omitempty"`
	Seq     int64     `json:"seq"`
	State   string    `json:"state"` // downloading | installing | installed | refused | rolled_back
	Have    int       `json:"have"`  // chunks stored
	Chunks  int       `json:"chunks"`
	Size    int64     `json:"size"`
	Reason  string    `json:"reason,omitempty"`
	Resent  int64     `json:"resent_chunks,omitempty"` // chunks asked for more than once
	Time    time.Time `json:"time,omitzero"`
}

// Update states.
const (
	UpdateDownloading = "downloading"
	UpdateInstalling  = "installing"
	UpdateInstalled   = "installed"
	UpdateRefused     = "refused"
	UpdateRolledBack  = "rolled_back"
)

// FetchStats count what the fetcher did in this process.
type FetchStats struct {
	Offers     int64 `json:"offers" metric:"outpost_update_offers_total" help:"Model update offers received (valid)."`
	Refused    int64 `json:"refused" metric:"outpost_update_refused_total" help:"Model updates refused (signature, digest, downgrade, size, health check, crash loop)."`
	Chunks     int64 `json:"chunks" metric:"outpost_update_chunks_total" help:"Model package chunks downloaded and stored."`
	Bytes      int64 `json:"bytes" metric:"outpost_update_bytes_total" help:"Model package bytes downloaded and stored."`
	Resent     int64 `json:"resent" metric:"outpost_update_resent_chunks_total" help:"Model package chunks asked for again (lost link, timeout)."`
	Duplicates int64 `json:"duplicates"` // chunks received that were already stored
	BadChunks  int64 `json:"bad_chunks" metric:"outpost_update_bad_chunks_total" help:"Chunks whose hash or length did not match the offer."`
	Stray      int64 `json:"stray"` // chunks for another offer, or offers that were not for us
	Installed  int64 `json:"installed" metric:"outpost_update_installed_total" help:"Model updates installed by this process."`
	Requests   int64 `json:"requests"` // chunk requests sent
	WireBytes  int64 `json:"wire_bytes" metric:"outpost_update_wire_bytes_total" help:"Estimated bytes on the wire for model updates, both directions."`
	Malformed  int64 `json:"malformed"` // undecodable cmd messages
	Forged     int64 `json:"forged" metric:"outpost_update_forged_offers_total" help:"Offers not signed by a pinned hub key; ignored."`
	OfferBytes int64 `json:"offer_bytes"` // bytes of offers received
}

// Fetcher downloads one model package at a time, chunk by chunk, into
// Dir: the offer as <id>.offer, the chunks received so far, in order, as
// <id>.part (fsynced per chunk), so a reboot resumes at the first missing
// chunk. state.json keeps the latest outcome and the offers refused for
// good, so the hub is told and does not offer them again.
type Fetcher struct {
	o   FetcherOptions
	log *slog.Logger

	mu      gosync.Mutex
	cur     *download
	last    UpdateStatus
	refused map[string]string // offer id -> reason
	changed chan struct{}     // the state to report changed

	n counter.Set[FetchStats] // declared once: JSON and Prometheus
}

type download struct {
	offer    *Offer
	f        *os.File
	have     int
	asked    int // index of the outstanding request, -1 none
	askedAt  time.Time
	lastAsk  int // last index ever requested (repeat = resent)
	resent   int64
	finished bool // all chunks in; installing
}

type fetchState struct {
	Last    UpdateStatus      `json:"last"`
	Refused map[string]string `json:"refused"`
	Context string            `json:"context,omitempty"`
}

// OpenFetcher restores the state in Dir, including a download in progress
// (its chunks re-verified; a torn last chunk is dropped).
func OpenFetcher(o FetcherOptions) (*Fetcher, error) {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 64 << 20
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Free == nil {
		o.Free = freeBytes
	}
	if o.Accept == nil || o.Install == nil {
		return nil, errors.New("sync: fetcher needs Accept and Install")
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("sync: updates dir: %w", err)
	}
	f := &Fetcher{o: o, log: o.Logger, refused: map[string]string{}, changed: make(chan struct{}, 1)}
	f.n.Init("")
	var st fetchState
	if err := safefile.LoadJSON(filepath.Join(o.Dir, "state.json"), 1<<20, &st); err != nil {
		f.log.Warn("updates: download state damaged; starting over", "err", err)
	} else if st.Context != o.Context && len(st.Refused) > 0 {
		f.log.Info("updates: the configuration changed since offers were refused; they will be considered again", "refused", len(st.Refused))
	} else {
		f.last = st.Last
		if st.Refused != nil {
			f.refused = st.Refused
		}
	}
	offers, _ := filepath.Glob(filepath.Join(o.Dir, "*.offer"))
	for _, p := range offers {
		msg, err := safefile.ReadFile(p, 1<<20)
		id := strings.TrimSuffix(filepath.Base(p), ".offer")
		var off *Offer
		if err == nil {
			// Signed offers were checked on arrival; the file is ours.
			off, err = DecodeOffer(msg, o.Device, nil)
		}
		if err != nil || off.ID != id || f.cur != nil {
			f.log.Warn("updates: dropping a stored offer", "file", p, "err", err)
			f.discard(id)
			continue
		}
		if err := f.o.Accept(off); err != nil {
			if errors.Is(err, ErrAlreadyInstalled) {
				f.finish(&download{offer: off}, UpdateInstalled, "")
			} else {
				f.finish(&download{offer: off}, UpdateRefused, err.Error())
			}
			continue
		}
		d, err := f.resume(off)
		if err != nil {
			f.log.Warn("updates: cannot resume a download; starting it over", "offer", id, "err", err)
			f.discard(id)
			continue
		}
		f.cur = d
		f.setLast(d, UpdateDownloading, "")
		f.log.Info("updates: resuming a download", "model", off.Model, "version", off.Version, "have", d.have, "chunks", off.NumChunks())
	}
	if f.cur != nil && f.cur.have == f.cur.offer.NumChunks() {
		f.complete(f.cur)
	}
	return f, nil
}

// resume opens <id>.part and keeps the chunks that verify, in order.
func (f *Fetcher) resume(off *Offer) (*download, error) {
	fh, err := os.OpenFile(f.path(off.ID, ".part"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	d := &download{offer: off, f: fh, asked: -1, lastAsk: -1}
	buf := make([]byte, off.ChunkSize)
	for d.have < off.NumChunks() {
		b := buf[:off.ChunkLen(d.have)]
		if _, err := fh.ReadAt(b, int64(d.have)*int64(off.ChunkSize)); err != nil || !off.ChunkOK(d.have, b) {
			break
		}
		d.have++
	}
	if err := fh.Truncate(min(int64(d.have)*int64(off.ChunkSize), off.Size)); err != nil {
		fh.Close()
		return nil, err
	}
	return d, nil
}

func (f *Fetcher) path(id, ext string) string { return filepath.Join(f.o.Dir, id+ext) }

func (f *Fetcher) discard(id string) {
	os.Remove(f.path(id, ".part"))
	os.Remove(f.path(id, ".offer"))
}

// HandleOffer takes an offer from the cmd topic. It never blocks on the
// network; a refused offer is remembered with its reason.
func (f *Fetcher) HandleOffer(msg []byte) {
	atomic.AddInt64(&f.n.C.OfferBytes, int64(len(msg)))
	atomic.AddInt64(&f.n.C.WireBytes, WireCost(CmdTopic(f.o.Device), len(msg), 0)-ackOverhead)
	off, err := DecodeOffer(msg, f.o.Device, f.o.HubKeys)
	if err != nil {
		if errors.Is(err, ErrForged) {
			atomic.AddInt64(&f.n.C.Forged, 1)
		} else {
			atomic.AddInt64(&f.n.C.Malformed, 1)
		}
		f.log.Warn("updates: offer ignored", "err", err, "bytes", len(msg))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.refused[off.ID]; ok {
		return // told the hub already (status)
	}
	if f.cur != nil && f.cur.offer.ID == off.ID {
		// The hub offers again (it restarted, or our status was stale):
		// ask for the next chunk now rather than after a timeout.
		if f.cur.asked >= 0 {
			f.cur.asked = -1
		}
		return
	}
	if f.last.Offer == off.ID && f.last.State == UpdateInstalled {
		return
	}
	atomic.AddInt64(&f.n.C.Offers, 1)
	if f.cur != nil {
		if f.cur.offer.Model != off.Model || off.Seq <= f.cur.offer.Seq || f.cur.finished {
			f.log.Info("updates: busy with another download; offer left for later", "offer", off.ID, "model", off.Model, "busy_with", f.cur.offer.Model)
			return
		}
		// A newer version of the same model supersedes the download.
		f.log.Info("updates: a newer version supersedes the download", "model", off.Model, "old_seq", f.cur.offer.Seq, "seq", off.Seq)
		f.cur.f.Close()
		f.discard(f.cur.offer.ID)
		f.cur = nil
	}
	d := &download{offer: off}
	if err := f.check(off); err != nil {
		if errors.Is(err, ErrAlreadyInstalled) {
			f.finish(d, UpdateInstalled, "")
			return
		}
		f.refuse(d, err.Error())
		return
	}
	if err := atomicfile.WriteBytes(f.path(off.ID, ".offer"), msg, 0o640); err != nil {
		f.log.Error("updates: cannot store the offer; not downloading", "err", err)
		return
	}
	nd, err := f.resume(off)
	if err != nil {
		f.log.Error("updates: cannot start the download", "err", err)
		f.discard(off.ID)
		return
	}
	f.cur = nd
	f.setLast(nd, UpdateDownloading, "")
	f.log.Info("updates: downloading", "model", off.Model, "version", off.Version, "seq", off.Seq, "bytes", off.Size, "chunks", off.NumChunks())
}

// check is everything that refuses an offer before any download.
func (f *Fetcher) check(off *Offer) error {
	if off.Size > f.o.MaxBytes {
		return fmt.Errorf("package of %d bytes is over the cap of %d (update_max_bytes)", off.Size, f.o.MaxBytes)
	}
	// The download, then the unpacked copy beside the installed model.
	if free, ok := f.o.Free(f.o.Dir); ok && free < 2*off.Size+(8<<20) {
		return fmt.Errorf("package of %d bytes does not fit: %d bytes free in %s", off.Size, free, f.o.Dir)
	}
	return f.o.Accept(off)
}

// HandleChunk stores chunk i if it is the next one the download needs
// and matches the offer.
func (f *Fetcher) HandleChunk(msg []byte) {
	id, i, data, err := DecodeChunk(msg)
	if err != nil {
		atomic.AddInt64(&f.n.C.Malformed, 1)
		f.log.Warn("updates: chunk ignored", "err", err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.cur
	switch {
	case d == nil || d.offer.ID != id:
		atomic.AddInt64(&f.n.C.Stray, 1)
		f.log.Warn("updates: chunk for another offer ignored", "offer", id, "chunk", i)
		return
	case i < d.have || d.finished:
		atomic.AddInt64(&f.n.C.Duplicates, 1)
		return
	case i > d.have:
		atomic.AddInt64(&f.n.C.Stray, 1) // we ask in order: not an answer to us
		return
	case !d.offer.ChunkOK(i, data):
		atomic.AddInt64(&f.n.C.BadChunks, 1)
		d.asked = -1 // ask again now
		f.log.Warn("updates: chunk does not match the offer; asking again", "offer", id, "chunk", i, "bytes", len(data))
		return
	}
	if _, err := d.f.WriteAt(data, int64(i)*int64(d.offer.ChunkSize)); err != nil {
		f.log.Error("updates: writing a chunk failed", "err", err)
		d.asked = -1
		return
	}
	// Durable before counted: a reboot resumes after this chunk, never
	// before a chunk it thinks it has.
	if err := d.f.Sync(); err != nil {
		f.log.Error("updates: fsync of a chunk failed", "err", err)
		d.asked = -1
		return
	}
	d.have++
	d.asked = -1
	atomic.AddInt64(&f.n.C.Chunks, 1)
	atomic.AddInt64(&f.n.C.Bytes, int64(len(data)))
	f.last.Have = d.have
	if d.have == d.offer.NumChunks() {
		f.complete(d)
	} else if d.have%16 == 0 {
		f.saveState()
	}
}

// complete checks the whole file and hands it to Install (mu held).
func (f *Fetcher) complete(d *download) {
	d.finished = true
	if _, err := d.f.Seek(0, io.SeekStart); err != nil {
		f.refuse(d, err.Error())
		return
	}
	h := sha256.New()
	if _, err := io.Copy(h, d.f); err != nil || hex.EncodeToString(h.Sum(nil)) != d.offer.SHA256 {
		// Every chunk matched its hash, so the offer lied about the whole.
		f.refuse(d, fmt.Sprintf("downloaded package does not match the offer's sha256 (%v)", err))
		return
	}
	f.setLast(d, UpdateInstalling, "")
	path := d.f.Name()
	go func() {
		err := f.o.Install(path, d.offer)
		f.mu.Lock()
		defer f.mu.Unlock()
		if err != nil {
			f.refuse(d, err.Error())
			return
		}
		atomic.AddInt64(&f.n.C.Installed, 1)
		f.finish(d, UpdateInstalled, "")
		f.log.Info("updates: installed", "model", d.offer.Model, "version", d.offer.Version, "seq", d.offer.Seq)
	}()
}

// refuse ends a download (or an offer) for good (mu held).
func (f *Fetcher) refuse(d *download, reason string) {
	atomic.AddInt64(&f.n.C.Refused, 1)
	f.refused[d.offer.ID] = reason
	f.log.Error("updates: refused", "model", d.offer.Model, "version", d.offer.Version, "seq", d.offer.Seq, "reason", reason)
	f.finish(d, UpdateRefused, reason)
}

func (f *Fetcher) finish(d *download, state, reason string) {
	if d.f != nil {
		d.f.Close()
	}
	f.discard(d.offer.ID)
	if f.cur == d {
		f.cur = nil
	}
	f.setLast(d, state, reason)
}

func (f *Fetcher) setLast(d *download, state, reason string) {
	o := d.offer
	f.last = UpdateStatus{Offer: o.ID, Model: o.Model, Version: o.Version, Seq: o.Seq, State: state, Have: d.have,
		Chunks: o.NumChunks(), Size: o.Size, Reason: reason, Resent: d.resent, Time: f.o.Now().UTC()}
	if state == UpdateInstalled {
		f.last.Have = f.last.Chunks
	}
	f.saveState()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// Changed is signalled when the update's state changes (worth a status).
func (f *Fetcher) Changed() <-chan struct{} { return f.changed }

func (f *Fetcher) saveState() {
	f.last.Resent = 0
	if f.cur != nil {
		f.last.Resent = f.cur.resent
	}
	b, _ := json.Marshal(fetchState{Last: f.last, Refused: f.refused, Context: f.o.Context})
	if err := atomicfile.WriteBytes(filepath.Join(f.o.Dir, "state.json"), b, 0o640); err != nil {
		f.log.Warn("updates: cannot save state", "err", err)
	}
}

// Next says which chunk to ask for now, if any: none while a request is
// outstanding and not yet timed out.
func (f *Fetcher) Next(now time.Time) (offerID string, i, size int, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.cur
	if d == nil || d.finished || d.have >= d.offer.NumChunks() {
		return "", 0, 0, false
	}
	if d.asked >= 0 && now.Sub(d.askedAt) < f.o.Timeout {
		return "", 0, 0, false
	}
	return d.offer.ID, d.have, d.offer.ChunkLen(d.have), true
}

// Requested records that chunk i was asked for.
func (f *Fetcher) Requested(now time.Time, offerID string, i int, cost int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	atomic.AddInt64(&f.n.C.Requests, 1)
	atomic.AddInt64(&f.n.C.WireBytes, cost)
	d := f.cur
	if d == nil || d.offer.ID != offerID {
		return
	}
	if d.lastAsk == i {
		d.resent++
		atomic.AddInt64(&f.n.C.Resent, 1)
		f.last.Resent = d.resent
	}
	d.asked, d.askedAt, d.lastAsk = i, now, i
}

// Disconnected forgets the outstanding request: its answer, if any, went
// with the connection. The next session asks again at once.
func (f *Fetcher) Disconnected() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur != nil {
		f.cur.asked = -1
	}
}

// Note records an outcome decided outside the fetcher (a rollback after a
// crash loop): reported like any other, and that offer is not taken again.
func (f *Fetcher) Note(u UpdateStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u.State != UpdateInstalled && u.Offer != "" {
		f.refused[u.Offer] = u.Reason
	}
	f.last = u
	f.saveState()
}

// Status is the latest update's state; nil before any.
func (f *Fetcher) Status() *UpdateStatus {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last.Offer == "" {
		return nil
	}
	s := f.last
	return &s
}

// Stats returns the counters.
func (f *Fetcher) Stats() FetchStats {
	if f == nil {
		return FetchStats{}
	}
	return f.n.Snapshot()
}

// Counters are the fetcher's counters for a Prometheus registry.
func (f *Fetcher) Counters() prometheus.Collector { return &f.n }

// Close closes the partial download's file (kept on disk).
func (f *Fetcher) Close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur != nil && f.cur.f != nil {
		f.cur.f.Close()
	}
}

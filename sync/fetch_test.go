package sync

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

type fetchRig struct {
	t          *testing.T
	dir        string
	hub        ed25519.PrivateKey
	accept     error
	context    string
	installed  chan []byte
	installErr error
	max        int64
	free       int64
}

func (r *fetchRig) open() *Fetcher {
	r.t.Helper()
	f, err := OpenFetcher(FetcherOptions{Dir: r.dir, Device: "dev-1", HubKeys: []ed25519.PublicKey{r.hub.Public().(ed25519.PublicKey)},
		MaxBytes: r.max, Free: func(string) (int64, bool) { return r.free, r.free > 0 }, Accept: func(*Offer) error { return r.accept },
		Context: r.context,
		Install: func(path string, o *Offer) error {
			b, _ := os.ReadFile(path)
			r.installed <- b
			return r.installErr
		}})
	if err != nil {
		r.t.Fatal(err)
	}
	return f
}

func testPackage(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func offerFor(pkg []byte, chunk int) *Offer {
	return NewOffer(pkg, "crop-disease", "9.9", 9, false, []byte(`{"name":"crop-disease"}`), make([]byte, 64), chunk)
}

// feed asks for and delivers chunks until n are stored.
func feed(t *testing.T, f *Fetcher, o *Offer, pkg []byte, n int) {
	t.Helper()
	for k := 0; k < 10*n; k++ {
		if st := f.Status(); st != nil && st.Have >= n {
			return
		}
		id, i, size, ok := f.Next(time.Now())
		if !ok {
			t.Fatalf("nothing to ask for at %+v", f.Status())
		}
		f.Requested(time.Now(), id, i, int64(size))
		f.HandleChunk(EncodeChunk(id, i, pkg[i*o.ChunkSize:i*o.ChunkSize+o.ChunkLen(i)]))
	}
	t.Fatalf("stuck at %+v", f.Status())
}

// TestFetcher_ResumeAndBadInput: offers must be signed by the pinned hub
// for this device; chunks for another offer, out of order, damaged or
// truncated change nothing; a torn .part resumes at the first chunk that
// does not verify; the finished file is exactly the package; refusals are
// remembered across restarts.
func TestFetcher_ResumeAndBadInput(t *testing.T) {
	_, hubKey, _ := ed25519.GenerateKey(rand.Reader)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	r := &fetchRig{t: t, dir: t.TempDir(), hub: hubKey, installed: make(chan []byte, 1)}
	f := r.open()
	pkg := testPackage(10*1024 + 123)
	o := offerFor(pkg, 1024)

	f.HandleOffer(EncodeOffer(o, "dev-1", nil))
	f.HandleOffer(EncodeOffer(o, "dev-1", stranger))
	f.HandleOffer(EncodeOffer(o, "dev-2", hubKey)) // signed for another device
	if st := f.Stats(); st.Forged != 3 || f.Status() != nil {
		t.Fatalf("unsigned/foreign offers: forged %d, status %+v", st.Forged, f.Status())
	}
	f.HandleOffer([]byte("OM\x01\x00{not json"))
	if f.Stats().Forged != 4 {
		t.Fatalf("an unsigned garbage offer is not counted as forged: %+v", f.Stats())
	}
	f.HandleOffer(EncodeOffer(o, "dev-1", hubKey))
	if st := f.Status(); st == nil || st.State != UpdateDownloading || st.Chunks != 11 {
		t.Fatalf("valid offer: %+v", st)
	}
	other := offerFor(testPackage(5000), 1024)
	f.HandleChunk(EncodeChunk(other.ID, 0, pkg[:1024]))                // another offer
	f.HandleChunk(EncodeChunk(o.ID, 1, pkg[1024:2048]))                // out of order
	f.HandleChunk(EncodeChunk(o.ID, 0, bytes.Repeat([]byte{1}, 1024))) // damaged
	f.HandleChunk(EncodeChunk(o.ID, 0, pkg[:1000]))                    // short
	f.HandleChunk([]byte("OK\x01\x00short"))                           // truncated message
	st := f.Stats()
	if st.Stray != 2 || st.BadChunks != 2 || st.Malformed != 1 || f.Status().Have != 0 {
		t.Fatalf("bad chunks: %+v have %d", st, f.Status().Have)
	}
	feed(t, f, o, pkg, 5)
	f.Close()
	// A power cut tore the sixth chunk: half of it is on disk.
	part := filepath.Join(r.dir, o.ID+".part")
	fh, _ := os.OpenFile(part, os.O_WRONLY|os.O_APPEND, 0)
	fh.Write(pkg[5*1024 : 5*1024+500])
	fh.Close()
	f = r.open()
	if st := f.Status(); st == nil || st.Have != 5 || st.State != UpdateDownloading {
		t.Fatalf("resume after a torn chunk: %+v", st)
	}
	if _, i, _, _ := f.Next(time.Now()); i != 5 {
		t.Fatalf("resumes at chunk %d, want 5", i)
	}
	// A lost link: the chunk in flight is asked for again, and counted.
	id, i, size, _ := f.Next(time.Now())
	f.Requested(time.Now(), id, i, int64(size))
	f.Disconnected()
	feed(t, f, o, pkg, 11)
	select {
	case got := <-r.installed:
		if !bytes.Equal(got, pkg) {
			t.Fatalf("installed %d bytes, not the package", len(got))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Install was not called")
	}
	waitState(t, f, UpdateInstalled)
	if st := f.Status(); st.Resent != 0 || f.Stats().Resent != 1 {
		t.Fatalf("resent: status %d, stats %d (want the one chunk lost with the link)", st.Resent, f.Stats().Resent)
	}
	if _, err := os.Stat(part); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the download is left behind after install: %v", err)
	}
	// Killed after the last chunk, before the install finished: the
	// whole file verifies on restart and is installed.
	f.Close()
	os.WriteFile(filepath.Join(r.dir, o.ID+".offer"), EncodeOffer(o, "dev-1", hubKey), 0o640)
	os.WriteFile(part, pkg, 0o640)
	f = r.open()
	if got := <-r.installed; !bytes.Equal(got, pkg) {
		t.Fatalf("a complete download found at start installed %d bytes, not the package", len(got))
	}
	waitState(t, f, UpdateInstalled)
	f.HandleOffer(EncodeOffer(o, "dev-1", hubKey))
	if f.Status().State != UpdateInstalled {
		t.Fatalf("an installed offer started again: %+v", f.Status())
	}

	// Refusals: over the cap, not accepted, install failing — each with a
	// reason, remembered after a restart.
	f.Close()
	r.max = 4096
	f = r.open()
	big := offerFor(testPackage(8192), 1024)
	f.HandleOffer(EncodeOffer(big, "dev-1", hubKey))
	if st := f.Status(); st.State != UpdateRefused || !strings.Contains(st.Reason, "update_max_bytes") {
		t.Fatalf("over the cap: %+v", st)
	}
	r.max, r.free = 0, 9<<20
	f.Close()
	f = r.open()
	disk := offerFor(testPackage(600<<10), 32<<10)
	f.HandleOffer(EncodeOffer(disk, "dev-1", hubKey))
	if st := f.Status(); st.State != UpdateRefused || !strings.Contains(st.Reason, "does not fit") {
		t.Fatalf("larger than the free disk: %+v", st)
	}
	r.free = 0
	r.accept = errors.New("model package: not signed by a trusted key")
	bad := offerFor(testPackage(3000), 1024)
	f.HandleOffer(EncodeOffer(bad, "dev-1", hubKey))
	if st := f.Status(); st.State != UpdateRefused || !strings.Contains(st.Reason, "trusted key") {
		t.Fatalf("not accepted: %+v", st)
	}
	f.Close()
	r.accept = nil
	f = r.open()
	f.HandleOffer(EncodeOffer(bad, "dev-1", hubKey))
	if st := f.Status(); st.Offer != bad.ID || st.State != UpdateRefused {
		t.Fatalf("a refused offer was taken after a restart: %+v", st)
	}

	r.installErr = errors.New("health check failed: crop-disease on golden-1.jpg")
	sickPkg := testPackage(2048)
	sick := offerFor(sickPkg, 1024)
	f.HandleOffer(EncodeOffer(sick, "dev-1", hubKey))
	feed(t, f, sick, sickPkg, 2)
	<-r.installed
	waitState(t, f, UpdateRefused)
	if st := f.Status(); !strings.Contains(st.Reason, "health check") || f.Stats().Refused != 1 {
		t.Fatalf("install failure: %+v, refused %d", st, f.Stats().Refused)
	}
	// The cause fixed (issue 26: a key pinned, a models folder made
	// writable): a restart under a changed configuration considers a
	// refused offer again.
	f.Close()
	r.context = "keys pinned"
	f = r.open()
	if st := f.Status(); st != nil && st.State == UpdateRefused {
		t.Fatalf("the old refusal is still reported after the configuration changed: %+v", st)
	}
	r.free = 9 << 20
	f.HandleOffer(EncodeOffer(bad, "dev-1", hubKey))
	if st := f.Status(); st == nil || st.Offer != bad.ID || st.State == UpdateRefused {
		t.Fatalf("the offer refused under the old configuration was not taken again: %+v", st)
	}
}

func waitState(t *testing.T, f *Fetcher, state string) {
	t.Helper()
	for k := 0; k < 500; k++ {
		if st := f.Status(); st != nil && st.State == state {
			return
		}
		time.Sleep(10 * time.Millisecond) // package sync's own tests cannot import testutil (it imports sync)
	}
	t.Fatalf("state %+v, want %s", f.Status(), state)
}

// FuzzDecodeCmd: offers, chunks and fetch requests from the network never
// panic the decoders, and an offer that decodes is consistent.
func FuzzDecodeCmd(f *testing.F) {
	o := offerFor(testPackage(3000), 1024)
	f.Add(EncodeOffer(o, "d", nil))
	f.Add(EncodeChunk(o.ID, 2, []byte("abc")))
	f.Add(FetchRequest(o.ID, 7))
	f.Add(EncodeEvidenceChunk(&EvidenceChunk{Size: 10, Offset: 2, ContentType: "image/jpeg", Data: []byte("abc")}))
	f.Add(EncodeEvidenceAck(&EvidenceAck{Have: 5, State: EvidencePartial, Reason: "x"}, "d", nil))
	f.Add(EncodeReview(&Review{Device: "d", Of: outbox.ID{1}, Label: "rust"}, nil))
	f.Add(EncodeReviewReceipt(outbox.ID{2}, "d", nil))
	f.Add(EncodeReviewReceipt(outbox.ID{2}, "d", fuzzDevice))
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	f.Add(EncodeWarning(&Warning{ID: outbox.ID{3}, Region: "Kisumu", Disease: "rust", Advice: map[string]string{"en": "x"},
		From: now, Until: now.Add(time.Hour), Issued: now}, "d", nil))
	f.Add(EncodeWarningReceipt(outbox.ID{3}, "d", fuzzDevice))
	f.Fuzz(func(t *testing.T, msg []byte) {
		if off, err := DecodeOffer(msg, "d", nil); err == nil {
			if off.NumChunks()*ChunkHashLen != len(off.Chunks) || off.ChunkLen(off.NumChunks()-1) <= 0 {
				t.Fatalf("inconsistent offer decoded: %+v", off)
			}
		}
		DecodeChunk(msg)
		DecodeFetch(msg)
		if c, err := DecodeEvidenceChunk(msg); err == nil && (c.Offset+int64(len(c.Data)) > c.Size || c.Size > MaxEvidenceBytes) {
			t.Fatalf("evidence chunk out of bounds decoded: %d+%d of %d", c.Offset, len(c.Data), c.Size)
		}
		DecodeEvidenceAck(msg, "d", nil)
		if r, err := DecodeReview(msg, "d", nil); err == nil && r.Device != "d" {
			t.Fatalf("a review for %q decoded for d", r.Device)
		}
		if _, key, err := DecodeReviewReceipt(msg, "d"); err == nil && key != nil && !key.Equal(fuzzDevice.Public()) && len(msg) != 20+96 {
			t.Fatalf("a signed receipt of %d bytes decoded", len(msg))
		}
		if w, err := DecodeWarning(msg, "d", nil); err == nil && (w.Validate() != nil || !w.Until.After(w.From)) {
			t.Fatalf("an invalid warning decoded: %+v", w)
		}
		DecodeWarningReceipt(msg, "d")
		if _, _, err := DecodeReviewReceipt(EncodeReviewReceipt(outbox.ID{2}, "d", fuzzDevice), "e"); err == nil {
			t.Fatal("a receipt signed for device d verified for e")
		}
	})
}

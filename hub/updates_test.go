package hub

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/models/pkg"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestShelf: a published package is offered only to the devices and
// regions it targets, only when their status shows an older version of a
// model they have and they are not already handling it; chunks go only to
// targeted devices; garbage is not published.
func TestShelf(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "manifest.json"), []byte(`{"name":"crop-disease"}`), 0o644)
	model := make([]byte, 5000)
	rand.Read(model)
	os.WriteFile(filepath.Join(src, "model.onnx"), model, 0o644)
	var buf bytes.Buffer
	if _, err := pkg.Pack(&buf, src, "crop-disease", "2.0", 2, false, key, nil); err != nil {
		t.Fatal(err)
	}
	s, err := OpenShelf(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish([]byte("random bytes, not a package"), []string{"all"}, 1024); err == nil {
		t.Fatal("garbage published")
	}
	p, err := s.Publish(buf.Bytes(), []string{"kiosk-1", "Kisumu"}, 1024)
	if err != nil {
		t.Fatal(err)
	}
	id := p.Offer.ID
	st := func(seq int64, u *osync.UpdateStatus) *osync.Status {
		return &osync.Status{Models: map[string]int64{"crop-disease": seq}, Update: u}
	}
	for _, c := range []struct {
		name, device, region string
		st                   *osync.Status
		want                 bool
	}{
		{"targeted, older", "kiosk-1", "", st(1, nil), true},
		{"targeted by region", "kiosk-9", "kisumu", st(0, nil), true},
		{"not targeted", "kiosk-2", "Nakuru", st(1, nil), false},
		{"same version", "kiosk-1", "", st(2, nil), false},
		{"newer installed", "kiosk-1", "", st(3, nil), false},
		{"no such model", "kiosk-1", "", &osync.Status{Models: map[string]int64{"kws": 0}}, false},
		{"downloading it", "kiosk-1", "", st(1, &osync.UpdateStatus{Offer: id, State: osync.UpdateDownloading}), false},
		{"refused it", "kiosk-1", "", st(1, &osync.UpdateStatus{Offer: id, State: osync.UpdateRefused}), false},
		{"busy with an older offer", "kiosk-1", "", st(1, &osync.UpdateStatus{Offer: "0123", State: osync.UpdateInstalled}), true},
	} {
		if got := s.For(c.device, c.region, c.st); (got != nil) != c.want {
			t.Errorf("%s: offered %v, want %v", c.name, got != nil, c.want)
		}
	}
	data := buf.Bytes()
	for i := 0; i < p.Offer.NumChunks(); i++ {
		b, err := s.Chunk(id, "kiosk-1", "", i)
		if err != nil || !p.Offer.ChunkOK(i, b) || !bytes.Equal(b, data[i*1024:i*1024+len(b)]) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if _, err := s.Chunk(id, "kiosk-2", "Nakuru", 0); err == nil {
		t.Error("a chunk went to a device the package is not for")
	}
	if _, err := s.Chunk(id, "kiosk-1", "", p.Offer.NumChunks()); err == nil {
		t.Error("a chunk past the end was served")
	}
	if _, err := s.Chunk("00112233445566778899aabbccddeeff", "kiosk-1", "", 0); err == nil {
		t.Error("a chunk of an unknown package was served")
	}
	// A second shelf on the same directory (the CLI while a collector runs) sees it.
	s2, _ := OpenShelf(s.dir)
	if l, _ := s2.List(); len(l) != 1 || l[0].Offer.ID != id {
		t.Fatalf("reopened shelf lists %v", l)
	}
}

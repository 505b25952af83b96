package sync

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"testing"
	"time"

	"github.com/klauspost/compress/dict"

	"github.com/outpost-edge/outpost/outbox"
)

var updateDict = flag.Bool("update-dict", false, "rebuild sync/zstd-v1.dict from synthetic records")

// trainingBatches makes batch bodies shaped like real traffic: one to a few
// records of the bundled models' outputs, with advice in five languages.
func trainingBatches(seed int64, n int) [][]byte {
	rng := rand.New(rand.NewSource(seed))
	labels := []string{"healthy", "leaf_spot", "rust", "blight", "mosaic"}
	advice := []string{
		"Rust: orange pustules spread by wind. Remove infected leaves early, do not move plant material from this field, and plant a resistant variety next season.",
		"Kutu: vijipele vya rangi ya machungwa vinavyoenezwa na upepo. Ondoa majani yaliyoathirika mapema, usihamishe mabaki ya mimea kutoka shamba hili, na panda aina inayostahimili msimu ujao.",
		"Taches foliaires : enlevez et brûlez les feuilles très tachées, évitez de mouiller les feuilles en arrosant et espacez les plants pour l'aération.",
		"Tsatsa: ƙuraje masu launin lemu da iska ke yaɗawa. Cire ganyayen da suka kamu da wuri.",
		"ዝገት፦ በነፋስ የሚዛመቱ ብርቱካናማ ቁስሎች። የተበከሉ ቅጠሎችን ቀድመው ያስወግዱ።",
		"No disease seen. Keep checking the crop every week and remove weeds around the plants.",
	}
	keywords := []string{"yes", "no", "help", "repeat", "outpost"}
	g := NewIDGenForTest(seed)
	var out [][]byte
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("pi-field-%02d", rng.Intn(40))
		b := &Batch{ID: g.New(), Device: dev, Sent: time.Unix(1_764_000_000+int64(i)*37, 0)}
		for k := 0; k < 1+rng.Intn(3); k++ {
			var r outbox.Record
			r.ID, r.Seq, r.Device, r.Created = g.New(), uint64(rng.Intn(100000)), dev, b.Sent.Add(-time.Duration(rng.Intn(3600))*time.Second)
			switch rng.Intn(3) {
			case 0:
				l := labels[rng.Intn(len(labels))]
				s := 0.5 + rng.Float64()/2
				o, _ := json.Marshal(map[string]any{"label": l, "score": s, "uncertain": false,
					"top":    []map[string]any{{"label": l, "score": s}, {"label": labels[rng.Intn(5)], "score": (1 - s) / 2}},
					"advice": advice[rng.Intn(len(advice))], "lang": []string{"en", "sw", "fr", "ha", "am"}[rng.Intn(5)]})
				r.Model, r.Version, r.Task, r.Output = "crop-disease", "0.1.0-demo", "image-classification", o
			case 1:
				o, _ := json.Marshal(map[string]any{"keywords": []map[string]any{{"keyword": keywords[rng.Intn(5)],
					"start": float64(rng.Intn(3000)) / 1000, "end": float64(rng.Intn(3000)+500) / 1000, "score": 0.6 + rng.Float64()*0.4}},
					"segments": 1 + rng.Intn(3), "duration": float64(rng.Intn(5000)) / 1000})
				r.Model, r.Version, r.Task, r.Output = "kws", "0.1.0-demo", "keyword-spotting", o
			default:
				o, _ := json.Marshal(map[string]any{"segments": []map[string]any{{"start": 0.51, "end": float64(rng.Intn(4000)) / 1000,
					"probability": 0.9}}, "duration": 5.7, "speech_ratio": rng.Float64()})
				r.Model, r.Version, r.Task, r.Output = "silero-vad", "5.0.0", "vad", o
			}
			r.Priority = outbox.Priority(rng.Intn(3))
			b.Records = append(b.Records, &r)
		}
		out = append(out, batchBody(b))
	}
	return out
}

// NewIDGenForTest: deterministic IDs for reproducible training data.
func NewIDGenForTest(seed int64) *detIDs { return &detIDs{rng: rand.New(rand.NewSource(seed))} }

type detIDs struct{ rng *rand.Rand }

func (d *detIDs) New() outbox.ID {
	var id outbox.ID
	d.rng.Read(id[:])
	id[0], id[1] = 0x01, 0x9a
	return id
}

func TestZstdDict(t *testing.T) {
	if *updateDict {
		// A published dictionary is never rebuilt under the same ID:
		// receivers decode old frames with it. A new one gets a new ID
		// and file (zstd-v2.dict), and the old one stays embedded.
		if _, err := os.Stat("zstd-v1.dict"); err == nil {
			t.Fatal("zstd-v1.dict is published (dictionary ID 0x6f700001); train a v2 under a new ID instead of overwriting it")
		}
		samples := trainingBatches(1, 4000)
		d, err := dict.BuildZstdDict(samples, dict.Options{MaxDictSize: 16 << 10, HashBytes: 6, ZstdDictID: dictID})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("zstd-v1.dict", d, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote zstd-v1.dict, %d bytes", len(d))
		return
	}
	// docs/PROTOCOL.md publishes the dictionary's checksum: it must not drift.
	if sum := sha256.Sum256(dictV1); hex.EncodeToString(sum[:]) != DictV1SHA256 {
		t.Fatalf("zstd-v1.dict sha256 %x, published %s", sum, DictV1SHA256)
	}
	// Held-out traffic (another seed): the dictionary must pay for itself
	// on the messages it exists for, single-record batches.
	var plain, zstdOnly, withDict int
	for _, body := range trainingBatches(2, 300) {
		codecs()
		plain += len(body)
		zstdOnly += min(len(body), len(encPlain.EncodeAll(body, nil)))
		withDict += len(encDict.EncodeAll(body, nil))
	}
	t.Logf("300 small batches: %d bytes raw, %d with zstd, %d with zstd + dictionary v1", plain, zstdOnly, withDict)
	if withDict*10 > zstdOnly*7 { // at least 30 % below zstd alone
		t.Fatalf("dictionary saves too little: %d vs %d", withDict, zstdOnly)
	}
	if withDict*2 > plain {
		t.Fatalf("small batches not halved: %d of %d", withDict, plain)
	}
}

package sync

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/outbox"
)

// docDumps reads the hex dumps in docs/PROTOCOL.md (lines "OFFSET  hex
// bytes  |ascii|"), one []byte per dump.
func docDumps(t *testing.T) [][]byte {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "PROTOCOL.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^([0-9a-f]{8})  ((?:[0-9a-f]{2} {1,2})+)`)
	var dumps [][]byte
	for _, m := range re.FindAllStringSubmatch(string(doc), -1) {
		b, err := hex.DecodeString(strings.ReplaceAll(m[2], " ", ""))
		if err != nil {
			t.Fatalf("dump line %q: %v", m[0], err)
		}
		if m[1] == "00000000" {
			dumps = append(dumps, nil)
		}
		dumps[len(dumps)-1] = append(dumps[len(dumps)-1], b...)
	}
	return dumps
}

// TestConformance_Doc (issue 26): the messages docs/PROTOCOL.md shows,
// decoded with what the doc says they hold — a hub written from the doc
// and this build agree byte for byte. The ack is the one this hub sends
// for the batch shown: the record named with the sum of its bytes.
func TestConformance_Doc(t *testing.T) {
	dumps := docDumps(t)
	if len(dumps) < 2 {
		t.Fatalf("%d dumps in PROTOCOL.md, want the batch and its ack", len(dumps))
	}
	b, err := DecodeBatch(dumps[0])
	if err != nil {
		t.Fatalf("the doc's batch: %v", err)
	}
	r := b.Records[0]
	if b.Device != "pi-07" || len(b.Records) != 1 || r.Seq != 42 || r.Model != "silero-vad" || r.Version != "5.0.0" ||
		r.Task != "vad" || string(r.Output) != `{"segments":[{"start":1.03,"end":2.62,"probability":0.93}]}` || r.Evidence != nil {
		t.Fatalf("the doc's batch decodes to %+v / %+v", b, r)
	}
	want := EncodeAck(&Ack{Batch: b.ID, Stored: []outbox.ID{r.ID}, StoredSums: b.Sums, RejectedSums: []Sum{}})
	t.Logf("this hub's ack for the doc's batch (%d bytes):\n%s", len(want), hex.Dump(want))
	if string(dumps[1]) != string(want) {
		t.Fatalf("the doc's ack is not what this hub sends for the batch shown:\ndoc  %x\nhub  %x", dumps[1], want)
	}
	a, err := DecodeAck(dumps[1])
	if err != nil || a.Batch != b.ID || len(a.Stored) != 1 || a.Stored[0] != r.ID || a.StoredSums[0] != RecordSum(r.Encode(nil)) {
		t.Fatalf("the doc's ack decodes to %+v, %v", a, err)
	}
}

package hub_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// TestFleetView_NeedsHistoryAndMeaningfulColours (issue 29): a kiosk on its
// first day (3 of 4 rust, no history) was flagged "×15"; the chart had no
// dates and drew healthy red, blight green.
func TestFleetView_NeedsHistoryAndMeaningfulColours(t *testing.T) {
	st, err := hub.OpenBolt(filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g := outbox.NewIDGen()
	now := time.Now().UTC()
	var recs []*outbox.Record
	for _, l := range []string{"rust", "rust", "rust", "healthy", "blight"} {
		recs = append(recs, &outbox.Record{ID: g.New(), Device: "new-kiosk", Model: "crop", Version: "1", Task: "image_classification",
			Output: []byte(`{"outcome":"diagnosis","label":"` + l + `"}`)})
	}
	if _, err := st.Commit(context.Background(), []*osync.Batch{{ID: g.New(), Device: "new-kiosk", Sent: now, Records: recs}}, now); err != nil {
		t.Fatal(err)
	}
	counts, obs, err := hub.FleetView(context.Background(), st, now, 30)
	if err != nil || len(obs) != 0 {
		t.Fatalf("a kiosk without history flagged: %+v %v", obs, err)
	}
	svg := hub.DailySVG(counts, 30, now)
	for _, want := range []string{`fill="#2e7d32"><title>` + now.Format("2006-01-02") + ` healthy`, `fill="#b71c1c"><title>` + now.Format("2006-01-02") + ` blight`, `class="day">` + now.Format("01-02")} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

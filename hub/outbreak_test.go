package hub_test

import (
	"context"
	"encoding/csv"
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

// TestExportCSV_FlatColumns (issues 29 and 25): the answer and its review
// as flat columns, and device text that a spreadsheet would run as a
// formula neutralised.
func TestExportCSV_FlatColumns(t *testing.T) {
	st, err := hub.OpenBolt(filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	g := outbox.NewIDGen()
	now := time.Now().UTC()
	a := &outbox.Record{ID: g.New(), Device: "kiosk-1", Model: "crop", Version: "1", Task: "image_classification",
		Output: []byte(`{"outcome":"diagnosis","label":"rust","score":0.87,"uncertain":false,"lang":"sw"}`)}
	b := &outbox.Record{ID: g.New(), Device: "kiosk-1", Model: "crop", Version: "1", Task: "image_classification",
		Output: []byte(`{"outcome":"diagnosis","label":"=HYPERLINK(\"http://x\",\"click\")","score":0.5}`)}
	if _, err := st.Commit(ctx, []*osync.Batch{{ID: g.New(), Device: "kiosk-1", Sent: now, Records: []*outbox.Record{a, b}}}, now); err != nil {
		t.Fatal(err)
	}
	if err := st.PutReview(ctx, &osync.Review{Device: "kiosk-1", Of: a.ID, Label: "mosaic", Advice: "Pull out sick plants.", Lang: "sw", Reviewer: "A. Agronomist", Time: now}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if _, err := hub.ExportCSV(ctx, st, nil, &out); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(out.String())).ReadAll()
	if err != nil || len(rows) != 3 {
		t.Fatalf("csv: %v\n%s", err, out.String())
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	byLabel := map[string][]string{}
	for _, r := range rows[1:] {
		byLabel[r[col["label"]]] = r
	}
	r := byLabel["rust"]
	if r == nil || r[col["score"]] != "0.870" || r[col["lang"]] != "sw" || r[col["review_label"]] != "mosaic" || r[col["reviewer"]] != "A. Agronomist" {
		t.Fatalf("flat columns of the reviewed result: %v", r)
	}
	if byLabel[`'=HYPERLINK("http://x","click")`] == nil {
		t.Fatalf("a formula label was not neutralised: %v", rows)
	}
}

package hub_test

import (
	"context"
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
)

// cell is one spreadsheet cell as LibreOffice typed it.
type cell struct{ typ, value, text string }

// readFODS reads the first table of a flat OpenDocument spreadsheet.
func readFODS(t *testing.T, path string) [][]cell {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	var rows [][]cell
	var cur *cell
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			switch e.Name.Local {
			case "table-row":
				rows = append(rows, nil)
			case "table-cell":
				c := cell{}
				repeat := 1
				for _, a := range e.Attr {
					switch a.Name.Local {
					case "value-type":
						if a.Name.Space != "" && strings.HasSuffix(a.Name.Space, "office:1.0") {
							c.typ = a.Value
						}
					case "date-value", "value":
						c.value = a.Value
					case "number-columns-repeated":
						repeat, _ = strconv.Atoi(a.Value)
					}
				}
				r := &rows[len(rows)-1]
				for range min(repeat, 64) { // trailing empty cells repeat to column 1024
					*r = append(*r, c)
				}
				cur = &(*r)[len(*r)-1]
			}
		case xml.CharData:
			if cur != nil {
				cur.text += string(e)
			}
		case xml.EndElement:
			if e.Name.Local == "table-cell" && cur != nil {
				cur.text = strings.TrimSpace(cur.text) // the file is indented
				cur = nil
			}
		}
	}
	return rows
}

// TestExportCSV_SpreadsheetReadsDates (issue 29): the CSV a program officer
// opens is read by LibreOffice — headless, the real program — with its
// times as dates (sortable, chartable), the score as a number and the
// device's registry name and region beside it.
func TestExportCSV_SpreadsheetReadsDates(t *testing.T) {
	soffice, err := exec.LookPath("soffice")
	if err != nil {
		t.Fatal("soffice not found: scripts/sysdeps.sh test installs libreoffice-calc-nogui")
	}
	dir := t.TempDir()
	st, err := hub.OpenBolt(filepath.Join(dir, "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	g := outbox.NewIDGen()
	created := time.Date(2026, 11, 3, 7, 45, 12, 345678901, time.FixedZone("EAT", 3*3600))
	received := created.Add(26 * time.Hour)
	rec := &outbox.Record{ID: g.New(), Device: "kiosk-1", Model: "crop-disease", Version: "0.3.0", Task: "image_classification", Created: created,
		Output: []byte(`{"outcome":"diagnosis","label":"rust","score":0.87,"uncertain":false,"lang":"sw"}`)}
	if _, err := st.Commit(ctx, []*osync.Batch{{ID: g.New(), Device: "kiosk-1", Sent: received, Records: []*outbox.Record{rec}}}, received); err != nil {
		t.Fatal(err)
	}
	reviewed := received.Add(3 * time.Hour)
	if err := st.PutReview(ctx, &osync.Review{Device: "kiosk-1", Of: rec.ID, Label: "leaf_spot", Lang: "sw", Reviewer: "A. Agronomist", Time: reviewed}); err != nil {
		t.Fatal(err)
	}
	reg := hub.Registry{"kiosk-1": {Name: "Kibera kiosk", Region: "Nairobi"}}
	csvPath := filepath.Join(dir, "results.csv")
	f, err := os.Create(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := hub.ExportCSV(ctx, st, reg, f); err != nil || n != 1 {
		t.Fatalf("export: %d, %v", n, err)
	}
	f.Close()
	// Comma-separated, double-quoted, UTF-8 (76), first line a header: the
	// import a user gets by opening the file.
	cmd := exec.Command(soffice, "--headless", "-env:UserInstallation=file://"+filepath.Join(dir, "lo-profile"),
		"--convert-to", "fods", "--infilter=CSV:44,34,76,1", "--outdir", dir, csvPath)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("soffice: %v\n%s", err, out)
	}
	rows := readFODS(t, filepath.Join(dir, "results.fods"))
	if len(rows) < 2 {
		t.Fatalf("LibreOffice read %d rows", len(rows))
	}
	col := map[string]cell{}
	for i, h := range rows[0] {
		if i < len(rows[1]) && h.text != "" {
			col[h.text] = rows[1][i]
		}
	}
	for name, want := range map[string]time.Time{"created_utc": created, "received_utc": received, "reviewed_at_utc": reviewed} {
		c := col[name]
		got, err := time.Parse(hub.CSVTime, c.value)
		if c.typ != "date" || err != nil || !got.Equal(want.UTC().Truncate(time.Second)) {
			t.Errorf("%s: LibreOffice read %q as %s %q, want the date %s", name, c.text, c.typ, c.value, want.UTC().Format(hub.CSVTime))
		}
	}
	if c := col["score"]; c.typ != "float" || c.value != "0.87" {
		t.Errorf("score: LibreOffice read %+v, want the number 0.87", c)
	}
	for name, want := range map[string]string{"name": "Kibera kiosk", "region": "Nairobi", "label": "rust", "review_label": "leaf_spot", "outcome": "diagnosis"} {
		if c := col[name]; c.text != want {
			t.Errorf("%s: %q, want %q", name, c.text, want)
		}
	}
}

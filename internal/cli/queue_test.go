package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
)

func TestInferQueuesAndQueueCommands(t *testing.T) {
	wav := speechWAV(t)
	data := t.TempDir()
	md := testutil.ModelsDir(t)
	out, errOut, code := run(t, nil, "infer", "--models-dir", md, "-m", "silero-vad", "--data-dir", data,
		"--device-id", "kiosk-3", "--priority", "alert", wav, wav)
	if code != ExitOK {
		t.Fatalf("code %d: %s", code, errOut)
	}
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct{ ID string }
		if err := json.Unmarshal([]byte(line), &r); err != nil || len(r.ID) != 36 {
			t.Fatalf("result without a stored id: %s", line)
		}
		ids = append(ids, r.ID)
	}

	out, _, code = run(t, nil, "queue", "stats", "--json", "--data-dir", data)
	var st struct {
		Count      int64
		Priorities map[string]struct{ Count int64 }
	}
	if code != ExitOK || json.Unmarshal([]byte(out), &st) != nil || st.Count != 2 || st.Priorities["alert"].Count != 2 {
		t.Fatalf("stats (code %d): %s", code, out)
	}
	out, _, code = run(t, nil, "queue", "show", "--data-dir", data, ids[1])
	if code != ExitOK || !strings.Contains(out, `"device": "kiosk-3"`) || !strings.Contains(out, `"segments"`) {
		t.Fatalf("show (code %d): %s", code, out)
	}
	export := filepath.Join(t.TempDir(), "results.jsonl")
	if _, errOut, code = run(t, nil, "queue", "export", "--data-dir", data, "--out", export); code != ExitOK {
		t.Fatalf("export: %s", errOut)
	}
	b, _ := os.ReadFile(export)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], ids[0]) || !strings.Contains(lines[0], `"output":{"segments":[`) {
		t.Fatalf("export:\n%s", b)
	}
	out, _, code = run(t, nil, "queue", "list", "--data-dir", data)
	if code != ExitOK || strings.Count(out, "silero-vad") != 2 {
		t.Fatalf("list: %s", out)
	}
	if out, _, code = run(t, nil, "queue", "compact", "--data-dir", data); code != ExitOK || !strings.Contains(out, "compacted") {
		t.Fatalf("compact: %s", out)
	}
	_, errOut, code = run(t, nil, "queue", "show", "--data-dir", data, "01a212db-0000-7000-8000-000000000000")
	if code != ExitFailure || !strings.Contains(errOut, "not found") {
		t.Fatalf("show unknown: %d %s", code, errOut)
	}
	_, errOut, code = run(t, nil, "queue", "show", "--data-dir", data, "xyz")
	if code != ExitUsage || !strings.Contains(errOut, "32 hex digits") {
		t.Fatalf("show bad id: %d %s", code, errOut)
	}
	_, errOut, code = run(t, nil, "queue", "frob", "--data-dir", data)
	if code != ExitUsage {
		t.Fatalf("unknown subcommand: %d %s", code, errOut)
	}
}

func TestInfer_NoQueueWithoutDataDir(t *testing.T) {
	md, wav := testutil.ModelsDir(t), speechWAV(t)
	dir := t.TempDir()
	t.Chdir(dir)
	out, _, code := run(t, nil, "infer", "--models-dir", md, "-m", "silero-vad", wav)
	if code != ExitOK || strings.Contains(out, `"id"`) {
		t.Fatalf("code %d: %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "outpost-data")); !os.IsNotExist(err) {
		t.Fatal("infer without --data-dir created a data directory")
	}
}

func TestQueue_MissingDataDirNotCreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	_, errOut, code := run(t, nil, "queue", "stats", "--data-dir", dir)
	if code == ExitOK || !strings.Contains(errOut, "no outbox at") {
		t.Fatalf("code %d: %s", code, errOut)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("queue stats created the data dir")
	}
}

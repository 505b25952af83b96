package device

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/models/pkg"
)

// TestGuard_CountsCrashesNotStarts (issue 27): three clean restarts within
// ten minutes of an activation rolled back a healthy, golden-checked model
// (reproduced 4 times). Clean stops now clear the running mark; only
// starts that find it set — crashes — count.
func TestGuard_CountsCrashesNotStarts(t *testing.T) {
	data, models := t.TempDir(), t.TempDir()
	for _, dir := range []string{"m", ".m.prev"} {
		os.MkdirAll(filepath.Join(models, dir), 0o755)
		os.WriteFile(filepath.Join(models, dir, "manifest.json"), []byte(`{"name":"m"}`), 0o644)
	}
	os.WriteFile(filepath.Join(models, "m", ".package.json"), []byte(`{"name":"m","version":"2","seq":2}`), 0o644)
	cfg := Config{DataDir: data, ModelsDir: models, UpdateCrashRestarts: 3, UpdateCrashWindow: "10m"}
	newDev := func() *Device {
		return &Device{cfg: cfg, o: Options{Guard: true}, log: slog.New(slog.DiscardHandler)}
	}
	os.MkdirAll(filepath.Join(data, UpdatesDir), 0o750)
	b, _ := json.Marshal(activation{Model: "m", Version: "2", Seq: 2, At: time.Now(), Running: true})
	os.WriteFile(filepath.Join(data, UpdatesDir, "activation.json"), b, 0o640)
	first := newDev() // the daemon that installed it stops cleanly
	first.guarded = true
	first.stoppedCleanly()
	for i := 0; i < 5; i++ { // five clean restarts
		d := newDev()
		d.guard()
		d.stoppedCleanly()
		if d.rolledBack != nil {
			t.Fatalf("clean restart %d rolled the model back: %+v", i+1, d.rolledBack)
		}
	}
	for i := 0; i < 3; i++ { // then three crashes: no stoppedCleanly
		d := newDev()
		d.guard()
		if i < 2 && d.rolledBack != nil {
			t.Fatalf("rolled back after %d crashes", i)
		}
	}
	d := newDev()
	d.guard()
	if d.rolledBack == nil {
		t.Fatal("three crashes in the window did not roll the model back")
	}
	if m, _ := pkg.Installed(filepath.Join(models, "m")); m != nil {
		t.Fatalf("after the rollback the installed model is still %+v", m)
	}
}

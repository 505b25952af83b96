package device

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
	"github.com/outpost-edge/outpost/models"
)

func openWithModels(t *testing.T, modelsDir, dataDir string) *Device {
	t.Helper()
	testutil.SileroPath(t)
	c := Defaults()
	c.DataDir, c.ModelsDir, c.ORTLib, c.DeviceID = dataDir, modelsDir, testutil.LibPath(t), "variant-test"
	d, err := Open(c, Options{NoUplink: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestVariants_ChosenOnTheDevice (issue 31): the crop model's INT8 and FP32
// twins are timed on this machine's samples and both answer alike; the
// faster is recorded and requests naming crop-disease run it, the result
// still the model's (its sharing policy, its series at the hub) and saying
// which variant answered. A different network declared a variant (a
// smaller keyword model) answers differently and is never chosen.
func TestVariants_ChosenOnTheDevice(t *testing.T) {
	// A copy of the bundled models where the DS-CNN keyword model claims to
	// be the embedding head's twin: it is not, and the samples show it.
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-r", filepath.Join(testutil.ModelsDir(t), "crop-disease"), filepath.Join(testutil.ModelsDir(t), "kws"),
		filepath.Join(testutil.ModelsDir(t), "silero-vad"), filepath.Join(testutil.ModelsDir(t), "speech-embedding"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copy models: %v %s", err, out)
	}
	for _, f := range []string{"manifest-dscnn.json", "manifest-fp32.json"} {
		p := filepath.Join(dir, "kws", f)
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.Replace(string(b), "{", `{"variant_of": "kws",`, 1)), 0o644)
	}
	data := t.TempDir()
	d := openWithModels(t, dir, data)
	ch, err := d.BenchVariants(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	crop := ch["crop-disease"]
	if len(crop.Millis) != 2 || len(crop.Disagree) != 0 || crop.Inputs < 3 {
		t.Fatalf("crop-disease: %+v", crop)
	}
	faster := "crop-disease"
	if crop.Millis["crop-disease-fp32"] < crop.Millis["crop-disease"] {
		faster = "crop-disease-fp32"
	}
	if crop.Use != faster {
		t.Fatalf("chose %s, the faster here is %s: %v", crop.Use, faster, crop.Millis)
	}
	if d.Variants()["crop-disease"].Use != faster {
		t.Fatalf("the device reports %+v in force", d.Variants())
	}
	if kws := ch["kws"]; len(kws.Disagree) == 0 || kws.Use == "" {
		t.Fatalf("kws: a different network passed as a twin: %+v", kws)
	}
	// Recorded, and read by the next start; a forced choice shows routing.
	var onDisk map[string]VariantChoice
	b, _ := os.ReadFile(filepath.Join(data, VariantsFile))
	if err := json.Unmarshal(b, &onDisk); err != nil || onDisk["crop-disease"].Use != faster {
		t.Fatalf("%s: %s (%v)", VariantsFile, b, err)
	}
	onDisk["crop-disease"] = VariantChoice{Use: "crop-disease-fp32"}
	b, _ = json.Marshal(onDisk)
	os.WriteFile(filepath.Join(data, VariantsFile), b, 0o640)
	d.Close()
	d = openWithModels(t, dir, data)
	photo, _ := os.ReadFile(filepath.Join(dir, "crop-disease", "samples", "rust.jpg"))
	res, err := d.Infer(context.Background(), "crop-disease", models.Input{Name: "rust.jpg", Data: photo}, "")
	if err != nil || res.Model != "crop-disease" || res.Variant != "crop-disease-fp32" {
		t.Fatalf("routed answer: %+v, %v", res, err)
	}
	// A choice naming a model that is not a variant here is ignored.
	os.WriteFile(filepath.Join(data, VariantsFile), []byte(`{"crop-disease": {"use": "kws"}}`), 0o640)
	d.Close()
	d = openWithModels(t, dir, data)
	if res, err := d.Infer(context.Background(), "crop-disease", models.Input{Name: "rust.jpg", Data: photo}, ""); err != nil || res.Variant != "" {
		t.Fatalf("a bogus choice was followed: %+v, %v", res, err)
	}
}

package powercut

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func syncDir(t *testing.T, dir string) {
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestCut: synced data and names survive a cut; unsynced writes, files
// whose directory was never synced, and renames do not.
func TestCut(t *testing.T) {
	f := MountT(t)
	dir := f.Dir()
	a := filepath.Join(dir, "a")
	fa, err := os.Create(a)
	if err != nil {
		t.Fatal(err)
	}
	fa.Write(bytes.Repeat([]byte("1"), 5000))
	fa.Sync()
	syncDir(t, dir)
	fa.WriteAt(bytes.Repeat([]byte("2"), 3000), 5000) // unsynced growth
	fa.WriteAt([]byte("X"), 0)                        // unsynced overwrite
	fa.Close()
	os.WriteFile(filepath.Join(dir, "b"), []byte("never synced"), 0o644)
	fc, _ := os.Create(filepath.Join(dir, "c"))
	fc.Write([]byte("data synced, name not"))
	fc.Sync()
	fc.Close()
	os.Rename(a, filepath.Join(dir, "a2"))
	got, _ := os.ReadFile(filepath.Join(dir, "a2"))
	if len(got) != 8000 || got[0] != 'X' {
		t.Fatalf("before the cut the writes are visible: %d bytes, %q", len(got), got[:1])
	}
	st, err := f.Cut(false, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err = os.ReadFile(a)
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte("1"), 5000)) {
		t.Fatalf("after the cut a is %d bytes (%v), want the 5000 synced", len(got), err)
	}
	for _, n := range []string{"a2", "b", "c"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			t.Errorf("%s survived the cut without a directory fsync", n)
		}
	}
	if st.DirtyFiles == 0 || st.DirsChanged != 1 {
		t.Fatalf("cut stats %+v", st)
	}
}

// TestCut_Torn: a torn cut keeps some unsynced pages and not others.
func TestCut_Torn(t *testing.T) {
	f := MountT(t)
	p := filepath.Join(f.Dir(), "t")
	fh, _ := os.Create(p)
	fh.Write(make([]byte, 64*PageSize))
	fh.Sync()
	fh.Close()
	syncDir(t, f.Dir())
	rng := rand.New(rand.NewPCG(1, 2))
	kept, dropped := 0, 0
	for round := 0; round < 5; round++ {
		fh, _ := os.OpenFile(p, os.O_RDWR, 0)
		fh.WriteAt(bytes.Repeat([]byte{0xFF}, 64*PageSize), 0)
		fh.Close()
		if _, err := f.Cut(true, rng); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		for i := 0; i < 64; i++ {
			if got[i*PageSize] == 0xFF {
				kept++
			} else {
				dropped++
			}
			// Pages are whole: never half old, half new.
			if !bytes.Equal(got[i*PageSize:(i+1)*PageSize], bytes.Repeat(got[i*PageSize:i*PageSize+1], PageSize)) {
				t.Fatalf("page %d torn inside", i)
			}
		}
		os.WriteFile(p, make([]byte, 64*PageSize), 0o644)
		fh, _ = os.OpenFile(p, os.O_RDWR, 0)
		fh.Sync()
		fh.Close()
	}
	if kept == 0 || dropped == 0 {
		t.Fatalf("torn cuts kept %d and dropped %d pages; want some of each", kept, dropped)
	}
}

package main

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
)

// TestRun_Protocol: two clips in, their embedding counts and 96 numbers
// each out, in order, as train_emb.py reads them; a clip over the cap is
// refused by size.
func TestRun_Protocol(t *testing.T) {
	var in bytes.Buffer
	for _, n := range []int{32000, 16000} {
		binary.Write(&in, binary.LittleEndian, uint32(n))
		for i := 0; i < n; i++ {
			binary.Write(&in, binary.LittleEndian, float32(0.1*math.Sin(float64(i)/8)))
		}
	}
	var out bytes.Buffer
	if err := run(testutil.ModelsDir(t), testutil.LibPath(t), &in, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint32{16, 3} {
		var n uint32
		if err := binary.Read(&out, binary.LittleEndian, &n); err != nil || n != want {
			t.Fatalf("%d embeddings (%v), want %d", n, err, want)
		}
		vals := make([]float32, n*96)
		if err := binary.Read(&out, binary.LittleEndian, vals); err != nil {
			t.Fatal(err)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("%d bytes left over", out.Len())
	}
	var big bytes.Buffer
	binary.Write(&big, binary.LittleEndian, uint32(maxSamples+1))
	if err := run(testutil.ModelsDir(t), testutil.LibPath(t), &big, &bytes.Buffer{}); err == nil {
		t.Fatal("a clip over the cap was read")
	}
}

package onnx

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// OpTime is one operator type's share of a profiled session: how many
// nodes of it the optimised graph has, how often they ran, and for how long
// in all.
type OpTime struct {
	Op       string        `json:"op"`
	Provider string        `json:"provider"`
	Nodes    int           `json:"nodes"`
	Calls    int           `json:"calls"`
	Total    time.Duration `json:"total_ns"`
}

// NodeTime is one node of a profiled session, in the order nodes first ran.
type NodeTime struct {
	Name   string
	Op     string
	Inputs [][]int64 // input shapes as the node saw them first
	Calls  int
	Total  time.Duration
}

// Profile is a profiled session summed by operator type (slowest first)
// and by node (in execution order).
type Profile struct {
	Ops   []OpTime
	Nodes []NodeTime
}

// maxProfileBytes bounds a profile read: 200 runs of a 100-node graph are
// a few MB.
const maxProfileBytes = 256 << 20

// ReadProfile sums an ONNX Runtime profile (the Chrome trace Close writes
// with SessionOptions.ProfilePrefix) by operator type and by node.
func ReadProfile(r io.Reader) (*Profile, error) {
	var events []struct {
		Cat  string `json:"cat"`
		Name string `json:"name"`
		Dur  int64  `json:"dur"` // µs
		Args struct {
			Op       string               `json:"op_name"`
			Provider string               `json:"provider"`
			Inputs   []map[string][]int64 `json:"input_type_shape"`
		} `json:"args"`
	}
	if err := json.NewDecoder(io.LimitReader(r, maxProfileBytes)).Decode(&events); err != nil {
		return nil, fmt.Errorf("onnx: profile: %w", err)
	}
	by := map[string]*OpTime{}
	nodes := map[string]map[string]bool{}
	p := &Profile{}
	at := map[string]int{}
	for _, e := range events {
		node, ok := strings.CutSuffix(e.Name, "_kernel_time")
		if e.Cat != "Node" || !ok || e.Args.Op == "" {
			continue // fences, session events
		}
		i, seen := at[node]
		if !seen {
			var shapes [][]int64
			for _, in := range e.Args.Inputs {
				for _, sh := range in {
					shapes = append(shapes, sh)
				}
			}
			i, at[node] = len(p.Nodes), len(p.Nodes)
			p.Nodes = append(p.Nodes, NodeTime{Name: node, Op: e.Args.Op, Inputs: shapes})
		}
		p.Nodes[i].Calls++
		p.Nodes[i].Total += time.Duration(e.Dur) * time.Microsecond
		t := by[e.Args.Op]
		if t == nil {
			t = &OpTime{Op: e.Args.Op, Provider: e.Args.Provider}
			by[e.Args.Op], nodes[e.Args.Op] = t, map[string]bool{}
		}
		t.Calls++
		t.Total += time.Duration(e.Dur) * time.Microsecond
		nodes[e.Args.Op][node] = true
	}
	for op, t := range by {
		t.Nodes = len(nodes[op])
		p.Ops = append(p.Ops, *t)
	}
	sortOps(p.Ops)
	return p, nil
}

func sortOps(ops []OpTime) {
	slices.SortFunc(ops, func(a, b OpTime) int { return cmp.Or(cmp.Compare(b.Total, a.Total), strings.Compare(a.Op, b.Op)) })
}

// ReadProfiles reads and removes the profile files written under prefix
// (one per closed session) and sums them.
func ReadProfiles(prefix string) (*Profile, error) {
	files, err := filepath.Glob(prefix + "*.json")
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("onnx: no profile written under %s", prefix)
	}
	slices.Sort(files)
	sum := &Profile{}
	ops := map[string]OpTime{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("onnx: profile: %w", err)
		}
		p, err := ReadProfile(fh)
		fh.Close()
		os.Remove(f)
		if err != nil {
			return nil, fmt.Errorf("%w (%s)", err, f)
		}
		for _, o := range p.Ops {
			t := ops[o.Op]
			t.Op, t.Provider = o.Op, o.Provider
			t.Nodes, t.Calls, t.Total = max(t.Nodes, o.Nodes), t.Calls+o.Calls, t.Total+o.Total
			ops[o.Op] = t
		}
		sum.Nodes = append(sum.Nodes, p.Nodes...)
	}
	for _, t := range ops {
		sum.Ops = append(sum.Ops, t)
	}
	sortOps(sum.Ops)
	return sum, nil
}

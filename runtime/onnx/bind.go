package onnx

import (
	"context"
	"fmt"
	gosync "sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/outpost-edge/outpost/runtime"
)

// bound is Session.Bind's binding: ORT values over the caller's tensors,
// which it keeps referenced until Close. Not pinned: a runtime.Pinner
// still pinned when it is collected panics, and a binding whose session
// is dropped without Close (a one-shot tool, a test) must not bring the
// process down; Go's collector does not move heap memory, which is what
// onnxruntime_go's own tensors rely on too.
type bound struct {
	s       *Session
	inputs  map[string]*runtime.Tensor
	outputs map[string]*runtime.Tensor
	ins     []ort.Value
	outs    []ort.Value
	fill    []fillFunc // rank-0 inputs, refreshed from the caller's value each run
	once    gosync.Once
}

// Bind implements runtime.Binder. Inputs of rank 0 (Silero's sample rate)
// are read again at each run, every other tensor is bound in place.
func (s *Session) Bind(inputs, outputs map[string]*runtime.Tensor) (runtime.Bound, error) {
	if err := runtime.Validate(s.inputs, inputs); err != nil {
		return nil, fmt.Errorf("onnx: bind: %w", err)
	}
	if len(outputs) != len(s.outputs) {
		return nil, fmt.Errorf("onnx: bind: %w: %d outputs given, the model has %d (%s)", runtime.ErrBadInput, len(outputs), len(s.outputs), infoNames(s.outputs))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("onnx: %w", runtime.ErrClosed)
	}
	b := &bound{s: s, inputs: inputs, outputs: outputs}
	fail := func(err error) (runtime.Bound, error) {
		b.Close()
		return nil, fmt.Errorf("onnx: bind: %w", err)
	}
	for _, in := range s.inputs {
		t := inputs[in.Name]
		if len(t.Shape) == 0 {
			var v ort.Value
			var fill fillFunc
			var err error
			switch t.DType {
			case runtime.Float32:
				v, fill, err = newScalar((*runtime.Tensor).Float32)
			case runtime.Int64:
				v, fill, err = newScalar((*runtime.Tensor).Int64)
			default:
				err = fmt.Errorf("%w: rank-0 input %q of dtype %s", runtime.ErrBadInput, in.Name, t.DType)
			}
			if err != nil {
				return fail(err)
			}
			b.ins, b.fill = append(b.ins, v), append(b.fill, fill)
			continue
		}
		v, err := bind(t, ort.NewShape(t.Shape...), nil)
		if err != nil {
			return fail(fmt.Errorf("input %q: %w", in.Name, err))
		}
		b.ins, b.fill = append(b.ins, v), append(b.fill, nil)
	}
	for _, out := range s.outputs {
		t := outputs[out.Name]
		switch {
		case t == nil:
			return fail(fmt.Errorf("%w: no tensor for output %q", runtime.ErrBadInput, out.Name))
		case t.DType != out.DType:
			return fail(fmt.Errorf("%w: output %q is %s, the model produces %s", runtime.ErrBadInput, out.Name, t.DType, out.DType))
		case len(t.Shape) == 0 || !out.Shape.Accepts(t.Shape):
			return fail(fmt.Errorf("%w: output %q has shape %s, the model produces %s", runtime.ErrBadInput, out.Name, t.Shape, out.Shape))
		}
		v, err := bind(t, ort.NewShape(t.Shape...), nil)
		if err != nil {
			return fail(fmt.Errorf("output %q: %w", out.Name, err))
		}
		b.outs = append(b.outs, v)
	}
	s.freeMu.Lock()
	if s.bounds == nil {
		s.bounds = map[*bound]struct{}{}
	}
	s.bounds[b] = struct{}{}
	s.freeMu.Unlock()
	return b, nil
}

// Run implements runtime.Bound.
func (b *bound) Run(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("onnx: run: %w", err)
	}
	s := b.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("onnx: %w", runtime.ErrClosed)
	}
	if b.outs == nil {
		return fmt.Errorf("onnx: run: %w (the binding)", runtime.ErrClosed)
	}
	for i, fill := range b.fill {
		if fill != nil {
			if err := fill(b.inputs[s.inputs[i].Name], &b.ins[i]); err != nil {
				return fmt.Errorf("onnx: input %q: %w", s.inputs[i].Name, err)
			}
		}
	}
	opts, done := s.runOptions(ctx)
	defer done()
	if err := s.s.RunWithOptions(b.ins, b.outs, opts); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("onnx: run: %w", cerr)
		}
		return fmt.Errorf("onnx: run: %w", err)
	}
	return nil
}

// Close implements runtime.Bound.
func (b *bound) Close() error {
	b.s.freeMu.Lock()
	delete(b.s.bounds, b)
	b.s.freeMu.Unlock()
	b.release()
	return nil
}

// release frees the ORT values, once. A run
// in flight holds the session's read lock, and Session.Close (which calls
// this) its write lock; Bound.Close must not race the binding's own Run.
func (b *bound) release() {
	b.once.Do(func() {
		destroyAll(b.ins)
		destroyAll(b.outs)
		b.ins, b.outs = nil, nil
		b.inputs, b.outputs = nil, nil
	})
}

// Package runtime is outpost's inference seam: tensors, shapes, and the small
// Session interface that pipelines run models through. It knows nothing about
// HTTP, MQTT or storage; runtime/onnx implements Session with ONNX Runtime.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors. Test for them with errors.Is; the wrapping error names the
// tensor and the shapes involved.
var (
	// ErrBadInput means the inputs given to Run do not match what the model
	// declares: a missing or unknown name, a wrong dtype or a wrong shape.
	ErrBadInput = errors.New("bad input")
	// ErrClosed is returned by Run after Close.
	ErrClosed = errors.New("session closed")
)

// DType is a tensor element type.
type DType uint8

// The element types outpost moves across the seam.
const (
	Invalid DType = iota
	Float32
	Int64
	Uint8
	Int8
)

var dtypeNames = [...]string{Invalid: "invalid", Float32: "float32", Int64: "int64", Uint8: "uint8", Int8: "int8"}

func (d DType) String() string {
	if int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return "dtype(" + strconv.Itoa(int(d)) + ")"
}

// ParseDType maps a manifest spelling ("float32", "f32", "int64", ...) to a DType.
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "float32", "f32", "float":
		return Float32, nil
	case "int64", "i64":
		return Int64, nil
	case "uint8", "u8":
		return Uint8, nil
	case "int8", "i8":
		return Int8, nil
	}
	return Invalid, fmt.Errorf("unknown dtype %q (want float32, int64, uint8 or int8)", s)
}

// MarshalText makes DType readable in JSON.
func (d DType) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses the names ParseDType accepts.
func (d *DType) UnmarshalText(b []byte) error {
	v, err := ParseDType(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Shape is a tensor shape. In a model's declared shape a dimension below zero
// is dynamic (any size); in a concrete tensor every dimension is >= 0.
type Shape []int64

// Size is the number of elements of a concrete shape.
func (s Shape) Size() int64 {
	n := int64(1)
	for _, d := range s {
		n *= d
	}
	return n
}

// String renders the shape as [1 512], with "?" for dynamic dimensions.
func (s Shape) String() string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		if d < 0 {
			b.WriteByte('?')
		} else {
			b.WriteString(strconv.FormatInt(d, 10))
		}
	}
	b.WriteByte(']')
	return b.String()
}

// Accepts reports whether concrete shape c fits declared shape s.
func (s Shape) Accepts(c Shape) bool {
	if len(s) != len(c) {
		return false
	}
	for i := range s {
		if c[i] < 0 || (s[i] >= 0 && s[i] != c[i]) {
			return false
		}
	}
	return true
}

// TensorInfo describes one named input or output of a model.
type TensorInfo struct {
	Name  string `json:"name"`
	DType DType  `json:"dtype"`
	Shape Shape  `json:"shape"`
}

func (t TensorInfo) String() string { return fmt.Sprintf("%s %s%s", t.Name, t.DType, t.Shape) }

// Tensor is a dense, row-major tensor owned by Go. Exactly one of the data
// slices is set, matching DType.
type Tensor struct {
	DType DType
	Shape Shape
	f32   []float32
	i64   []int64
	u8    []uint8
	i8    []int8
}

func newTensor(dt DType, shape Shape, n int) (*Tensor, error) {
	for i, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("%w: dimension %d of shape %s is negative", ErrBadInput, i, shape)
		}
	}
	if int64(n) != shape.Size() {
		return nil, fmt.Errorf("%w: %s tensor of shape %s needs %d elements, got %d", ErrBadInput, dt, shape, shape.Size(), n)
	}
	return &Tensor{DType: dt, Shape: append(Shape(nil), shape...)}, nil
}

// NewFloat32 wraps data (not copied) as a float32 tensor of the given shape.
func NewFloat32(shape Shape, data []float32) (*Tensor, error) {
	t, err := newTensor(Float32, shape, len(data))
	if t != nil {
		t.f32 = data
	}
	return t, err
}

// NewInt64 wraps data (not copied) as an int64 tensor.
func NewInt64(shape Shape, data []int64) (*Tensor, error) {
	t, err := newTensor(Int64, shape, len(data))
	if t != nil {
		t.i64 = data
	}
	return t, err
}

// NewUint8 wraps data (not copied) as a uint8 tensor.
func NewUint8(shape Shape, data []uint8) (*Tensor, error) {
	t, err := newTensor(Uint8, shape, len(data))
	if t != nil {
		t.u8 = data
	}
	return t, err
}

// NewInt8 wraps data (not copied) as an int8 tensor.
func NewInt8(shape Shape, data []int8) (*Tensor, error) {
	t, err := newTensor(Int8, shape, len(data))
	if t != nil {
		t.i8 = data
	}
	return t, err
}

// Float32 returns the data of a float32 tensor, nil for other dtypes.
func (t *Tensor) Float32() []float32 { return t.f32 }

// Int64 returns the data of an int64 tensor, nil for other dtypes.
func (t *Tensor) Int64() []int64 { return t.i64 }

// Uint8 returns the data of a uint8 tensor, nil for other dtypes.
func (t *Tensor) Uint8() []uint8 { return t.u8 }

// Int8 returns the data of an int8 tensor, nil for other dtypes.
func (t *Tensor) Int8() []int8 { return t.i8 }

// Session runs one loaded model. Implementations are safe for concurrent Run.
type Session interface {
	// Inputs and Outputs describe the model's declared tensors, in model order.
	Inputs() []TensorInfo
	Outputs() []TensorInfo
	// Run validates inputs against Inputs() and returns every output by name.
	Run(ctx context.Context, inputs map[string]*Tensor) (map[string]*Tensor, error)
	// Close frees the model; it is safe to call twice.
	Close() error
}

// IntoRunner is a Session that can write its outputs into the caller's
// tensors: a loop that runs a model thousands of times (voice activity
// detection, chunk by chunk) reuses its output tensors instead of
// receiving new ones each call. RunInto validates inputs as Run does; each
// tensor in outputs must have the dtype and shape the model produces for
// these inputs (names it does not produce are an error; outputs left out
// are not returned).
type IntoRunner interface {
	RunInto(ctx context.Context, inputs, outputs map[string]*Tensor) error
}

// Binder is a Session that binds a caller's tensors for repeated runs:
// the model reads its inputs from, and writes its outputs into, the
// caller's own memory, so a run copies nothing (the VAD loop: thousands
// of chunks, each a few hundred floats in and out).
type Binder interface {
	// Bind validates inputs as Run does; outputs must name every output
	// the model has, each with its dtype and the shape it will produce.
	Bind(inputs, outputs map[string]*Tensor) (Bound, error)
}

// Bound runs a model over tensors bound by Binder.Bind. Between runs the
// caller may change the bound tensors' values, never their shapes or
// memory. One Bound is not for concurrent use; several may share tensors
// (one's output the next one's input).
type Bound interface {
	Run(ctx context.Context) error
	// Close releases the binding (not the caller's tensors); safe twice.
	Close() error
}

// Validate checks inputs against the declared infos: every declared input is
// present exactly, no unknown names, dtypes equal and shapes accepted. The
// error names the input and both shapes, and wraps ErrBadInput.
func Validate(declared []TensorInfo, inputs map[string]*Tensor) error {
	for _, in := range declared {
		t, ok := inputs[in.Name]
		if !ok || t == nil {
			return fmt.Errorf("%w: missing input %q (model wants %s%s)", ErrBadInput, in.Name, in.DType, in.Shape)
		}
		if t.DType != in.DType {
			return fmt.Errorf("%w: input %q is %s, model wants %s", ErrBadInput, in.Name, t.DType, in.DType)
		}
		if !in.Shape.Accepts(t.Shape) {
			return fmt.Errorf("%w: input %q has shape %s, model wants %s", ErrBadInput, in.Name, t.Shape, in.Shape)
		}
	}
	if len(inputs) != len(declared) {
		for name := range inputs {
			if !hasName(declared, name) {
				return fmt.Errorf("%w: unknown input %q (model inputs: %s)", ErrBadInput, name, names(declared))
			}
		}
	}
	return nil
}

func hasName(infos []TensorInfo, name string) bool {
	for _, i := range infos {
		if i.Name == name {
			return true
		}
	}
	return false
}

func names(infos []TensorInfo) string {
	s := make([]string, len(infos))
	for i, in := range infos {
		s[i] = in.Name
	}
	return strings.Join(s, ", ")
}

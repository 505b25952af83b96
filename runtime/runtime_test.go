package runtime

import (
	"errors"
	"strings"
	"testing"
)

func TestShape_Accepts(t *testing.T) {
	tests := []struct {
		decl, conc Shape
		want       bool
	}{
		{Shape{-1, 4}, Shape{3, 4}, true},
		{Shape{-1, 4}, Shape{3, 5}, false},
		{Shape{2, 1, 128}, Shape{2, 1, 128}, true},
		{Shape{2, -1, 128}, Shape{2, 128}, false},
		{Shape{}, Shape{}, true},
		{Shape{-1}, Shape{-1}, false},
	}
	for _, tt := range tests {
		if got := tt.decl.Accepts(tt.conc); got != tt.want {
			t.Errorf("%s.Accepts(%s) = %v, want %v", tt.decl, tt.conc, got, tt.want)
		}
	}
}

func TestShape_String(t *testing.T) {
	if got := (Shape{-1, 512}).String(); got != "[? 512]" {
		t.Fatalf("got %q", got)
	}
}

func TestParseDType(t *testing.T) {
	for in, want := range map[string]DType{"float32": Float32, "F32": Float32, "int64": Int64, "uint8": Uint8, "int8": Int8} {
		got, err := ParseDType(in)
		if err != nil || got != want {
			t.Errorf("ParseDType(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseDType("float16"); err == nil || !strings.Contains(err.Error(), "float16") {
		t.Fatalf("float16: err = %v", err)
	}
}

func TestNewFloat32_SizeMismatch(t *testing.T) {
	_, err := NewFloat32(Shape{2, 3}, make([]float32, 5))
	if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), "needs 6 elements, got 5") {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewInt64(Shape{-1}, nil); !errors.Is(err, ErrBadInput) {
		t.Fatalf("negative dim: err = %v", err)
	}
}

func TestValidate(t *testing.T) {
	decl := []TensorInfo{{Name: "x", DType: Float32, Shape: Shape{-1, 4}}, {Name: "sr", DType: Int64, Shape: Shape{}}}
	x, _ := NewFloat32(Shape{1, 4}, make([]float32, 4))
	xBad, _ := NewFloat32(Shape{1, 5}, make([]float32, 5))
	sr, _ := NewInt64(Shape{}, []int64{16000})
	srF, _ := NewFloat32(Shape{}, []float32{1})
	tests := []struct {
		name string
		in   map[string]*Tensor
		want string // substring of the error; "" = ok
	}{
		{"ok", map[string]*Tensor{"x": x, "sr": sr}, ""},
		{"missing", map[string]*Tensor{"x": x}, `missing input "sr"`},
		{"shape", map[string]*Tensor{"x": xBad, "sr": sr}, `input "x" has shape [1 5], model wants [? 4]`},
		{"dtype", map[string]*Tensor{"x": x, "sr": srF}, `input "sr" is float32, model wants int64`},
		{"unknown", map[string]*Tensor{"x": x, "sr": sr, "y": x}, `unknown input "y"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(decl, tt.in)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

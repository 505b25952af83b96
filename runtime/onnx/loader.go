package onnx

import "github.com/outpost-edge/outpost/runtime"

// Loader adapts Load to the func(model []byte) (runtime.Session, error) shape
// that models.Model.Open takes, without models importing this package.
func (e *Env) Loader(opts SessionOptions) func([]byte) (runtime.Session, error) {
	return func(b []byte) (runtime.Session, error) {
		s, err := e.Load(b, opts)
		if err != nil {
			return nil, err // a nil *Session must not become a non-nil interface
		}
		return s, nil
	}
}

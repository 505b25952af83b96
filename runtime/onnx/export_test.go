package onnx

import ort "github.com/yalue/onnxruntime_go"

// Raw is the onnxruntime_go session under s: the benchmarks' anchor calls
// it directly, so both sides share one session (its arena, its weights in
// the same cache lines) and only outpost's wrapper differs.
func Raw(s *Session) *ort.DynamicAdvancedSession { return s.s }

// BindMin is the input size from which Run binds the caller's memory.
const BindMin = bindMin

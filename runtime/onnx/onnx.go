// Package onnx implements runtime.Session with ONNX Runtime through
// github.com/yalue/onnxruntime_go.
//
// ONNX Runtime has one environment per process, so this package keeps exactly
// one: NewEnv loads the shared library the first time and counts references;
// the last Close tears it down. Everything else (thread counts, sessions) is
// per Env or per Session, with no package-level configuration.
package onnx

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	gosync "sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/outpost-edge/outpost/runtime"
)

// LibraryName is the file name of the ONNX Runtime shared library outpost ships.
const LibraryName = "libonnxruntime.so.1"

// Version of ONNX Runtime this build pins (see scripts/deps.sh).
const Version = "1.24.1"

// ErrLibraryNotFound is returned by FindLibrary when no candidate exists.
var ErrLibraryNotFound = errors.New("onnxruntime library not found")

// ErrBadModel means the bytes given as a model are not a model ONNX Runtime can load.
var ErrBadModel = errors.New("bad model")

// Options configure an Env. The zero value is valid.
type Options struct {
	// LibraryPath is the ONNX Runtime shared library. Empty means FindLibrary("").
	LibraryPath string
}

// SessionOptions configure one model's session. The zero value is valid.
type SessionOptions struct {
	// IntraOpThreads is the number of threads one Run may use. Default 1: on a
	// 4-core Pi the daemon runs several models side by side, and spinning up
	// a pool per model costs more than it gains on small models.
	IntraOpThreads int
	// InterOpThreads is the number of threads for parallel graph branches. Default 1.
	InterOpThreads int
	// ProfilePrefix, if set, turns on ONNX Runtime's profiler: every node's
	// run is timed, and Close writes PREFIX_<time>.json (ReadProfile
	// sums it by operator). For measuring, never in the daemon.
	ProfilePrefix string
}

var (
	envMu   gosync.Mutex
	envRefs int
	envLib  string
)

// Env is a handle on the process-wide ONNX Runtime environment.
type Env struct {
	once gosync.Once
	lib  string
}

// NewEnv loads the library (first call only) and returns a handle. A second
// NewEnv with a different library path fails: one process, one library.
func NewEnv(opts Options) (*Env, error) {
	lib := opts.LibraryPath
	if lib == "" {
		var err error
		if lib, err = FindLibrary(""); err != nil {
			return nil, err
		}
	}
	if abs, err := filepath.Abs(lib); err == nil {
		lib = abs
	}
	envMu.Lock()
	defer envMu.Unlock()
	if envRefs > 0 {
		if lib != envLib {
			return nil, fmt.Errorf("onnx: environment already uses %s, cannot also load %s", envLib, lib)
		}
		envRefs++
		return &Env{lib: lib}, nil
	}
	if _, err := os.Stat(lib); err != nil {
		return nil, fmt.Errorf("onnx: library %s: %w", lib, err)
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelFatal()); err != nil { // errors come back as Go errors; no duplicate console lines
		return nil, fmt.Errorf("onnx: load %s: %w", lib, err)
	}
	_ = ort.DisableTelemetry() // telemetry is a no-op on Linux builds; an error here is harmless
	envRefs, envLib = 1, lib
	return &Env{lib: lib}, nil
}

// Library is the path of the loaded shared library.
func (e *Env) Library() string { return e.lib }

// RuntimeVersion reports the version string of the loaded library.
func (e *Env) RuntimeVersion() string { return ort.GetVersion() }

// Close releases this handle; the last one destroys the environment. Safe to call twice.
func (e *Env) Close() error {
	var err error
	e.once.Do(func() {
		envMu.Lock()
		defer envMu.Unlock()
		envRefs--
		if envRefs == 0 {
			if derr := ort.DestroyEnvironment(); derr != nil {
				err = fmt.Errorf("onnx: destroy environment: %w", derr)
			}
			envLib = ""
		}
	})
	return err
}

// FindLibrary returns the first existing ONNX Runtime library among: explicit
// (if set, and then only it), next to the executable (dir and dir/lib), the
// repository's .cache from `make deps`, and system library paths. The error
// names every place it looked.
func FindLibrary(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("%w: %s: %v", ErrLibraryNotFound, explicit, err)
		}
		return explicit, nil
	}
	cands := Candidates()
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w: looked in %s; run 'make deps' or pass --ort-lib / OUTPOST_ORT_LIB", ErrLibraryNotFound, strings.Join(cands, ", "))
}

// Candidates lists where FindLibrary looks, in order.
func Candidates() []string {
	arch := "linux-" + goruntime.GOARCH
	var c []string
	if exe, err := os.Executable(); err == nil {
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		d := filepath.Dir(exe)
		c = append(c, filepath.Join(d, "lib", LibraryName), filepath.Join(d, LibraryName),
			filepath.Join(d, "..", "lib", "outpost", LibraryName),
			// bin/outpost inside a checkout after `make build`
			filepath.Join(d, "..", ".cache", "onnxruntime", Version, arch, LibraryName))
	}
	if wd, err := os.Getwd(); err == nil {
		// walk up from the working directory to a checkout's .cache (tests, go run)
		for d := wd; ; d = filepath.Dir(d) {
			p := filepath.Join(d, ".cache", "onnxruntime", Version, arch, LibraryName)
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				c = append(c, p)
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return append(c, "/usr/lib/outpost/"+LibraryName, "/usr/local/lib/"+LibraryName,
		"/usr/lib/"+LibraryName, "/usr/lib/"+multiarch()+"/"+LibraryName)
}

func multiarch() string {
	if goruntime.GOARCH == "arm64" {
		return "aarch64-linux-gnu"
	}
	return "x86_64-linux-gnu"
}

// Session is one model loaded into ONNX Runtime. Run is safe for concurrent use.
type Session struct {
	s       *ort.DynamicAdvancedSession
	inputs  []runtime.TensorInfo
	outputs []runtime.TensorInfo

	mu     gosync.RWMutex // Close waits for in-flight Runs
	closed bool

	// Free ORT input tensors keyed by the concrete input shapes, so a stream
	// of same-shaped calls (VAD chunks) reuses its OrtValues. all holds every
	// set ever made so Close can free them; its size is bounded by the peak
	// number of concurrent Runs per shape.
	freeMu gosync.Mutex
	free   map[uint64][]*inputSet
	all    []*inputSet
	runs   gosync.Pool
	// bounds are the bindings not yet closed: Close releases them, so a
	// binding kept by a pipeline lives exactly as long as its session.
	bounds map[*bound]struct{}
}

type inputSet struct {
	vals   []ort.Value
	fill   []fillFunc // nil for an input bound to the caller's memory each run
	shapes []ort.Shape
	// outs are ORT-allocated outputs from this set's first run, reused as
	// preallocated outputs after, so a repeated shape costs no allocation in
	// ORT. noReuse is set when a model's output shapes vary with the data.
	outs    []ort.Value
	noReuse bool
}

// fillFunc copies a Go tensor into the ORT value in *slot, replacing the
// value when it cannot be updated in place.
type fillFunc func(src *runtime.Tensor, slot *ort.Value) error

// Load creates a session from model bytes (already checksum-verified by the
// caller, so the bytes checked are the bytes run).
func (e *Env) Load(model []byte, opts SessionOptions) (*Session, error) {
	if len(model) == 0 {
		return nil, fmt.Errorf("onnx: %w: empty model (0 bytes)", ErrBadModel)
	}
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return nil, fmt.Errorf("onnx: %w: %v", ErrBadModel, err)
	}
	s := &Session{}
	if s.inputs, err = convertInfos(ins); err != nil {
		return nil, fmt.Errorf("onnx: model inputs: %w", err)
	}
	if s.outputs, err = convertInfos(outs); err != nil {
		return nil, fmt.Errorf("onnx: model outputs: %w", err)
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("onnx: session options: %w", err)
	}
	defer so.Destroy()
	intra, inter := max(opts.IntraOpThreads, 1), max(opts.InterOpThreads, 1)
	if err := so.SetIntraOpNumThreads(intra); err != nil {
		return nil, fmt.Errorf("onnx: intra-op threads: %w", err)
	}
	if err := so.SetInterOpNumThreads(inter); err != nil {
		return nil, fmt.Errorf("onnx: inter-op threads: %w", err)
	}
	// Spinning threads burn a Pi's battery and steal cores from the other
	// models; outpost's requests are sparse, so sleep instead of spin.
	for _, k := range []string{"session.intra_op.allow_spinning", "session.inter_op.allow_spinning"} {
		if err := so.AddSessionConfigEntry(k, "0"); err != nil {
			return nil, fmt.Errorf("onnx: %s: %w", k, err)
		}
	}
	if opts.ProfilePrefix != "" {
		if err := so.EnableProfiling(opts.ProfilePrefix); err != nil {
			return nil, fmt.Errorf("onnx: profiling: %w", err)
		}
	}
	s.s, err = ort.NewDynamicAdvancedSessionWithONNXData(model, infoNames(s.inputs), infoNames(s.outputs), so)
	if err != nil {
		return nil, fmt.Errorf("onnx: %w: %v", ErrBadModel, err)
	}
	s.runs.New = func() any {
		o, err := ort.NewRunOptions()
		if err != nil {
			return nil
		}
		return o
	}
	return s, nil
}

// Inputs implements runtime.Session.
func (s *Session) Inputs() []runtime.TensorInfo { return s.inputs }

// Outputs implements runtime.Session.
func (s *Session) Outputs() []runtime.TensorInfo { return s.outputs }

// Run implements runtime.Session. Inputs are validated first, so a shape
// mistake is an error naming the input rather than an ORT message.
func (s *Session) Run(ctx context.Context, inputs map[string]*runtime.Tensor) (map[string]*runtime.Tensor, error) {
	return s.run(ctx, inputs, nil)
}

// RunInto implements runtime.IntoRunner: outputs are copied into the
// caller's tensors, nothing is allocated for the answer (allocating it
// right after the run cost ~2 µs per Silero chunk, 2 % of the run: the
// allocator's caches are cold after ORT's).
func (s *Session) RunInto(ctx context.Context, inputs, outputs map[string]*runtime.Tensor) error {
	for name := range outputs {
		if !slices.ContainsFunc(s.outputs, func(o runtime.TensorInfo) bool { return o.Name == name }) {
			return fmt.Errorf("onnx: %w: the model has no output %q", runtime.ErrBadInput, name)
		}
	}
	_, err := s.run(ctx, inputs, outputs)
	return err
}

// run is Run, or with into set RunInto.
func (s *Session) run(ctx context.Context, inputs, into map[string]*runtime.Tensor) (map[string]*runtime.Tensor, error) {
	if err := runtime.Validate(s.inputs, inputs); err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("onnx: run: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("onnx: %w", runtime.ErrClosed)
	}
	key := shapeKey(s.inputs, inputs)
	set, err := s.getSet(key, inputs)
	if err != nil {
		return nil, err
	}
	// Deferred in this order so they run as: release this run's bound
	// inputs, unpin their memory, and only then hand the set to the next
	// run. The set went back first before, and a concurrent run that took
	// it had its own bound input destroyed under it (found by -race with
	// four photos at a time: TestCropDisease_ScratchReuse).
	defer s.putSet(key, set)
	// Large inputs are not copied: ORT reads the caller's own slice, pinned
	// for the call (a crop photo's 110 KB copy was most of the gap to
	// onnxruntime_go called directly). Small ones are copied into pooled
	// buffers: wrapping costs a cgo round trip each, more than the copy.
	var pin goruntime.Pinner
	defer pin.Unpin()
	var bound []int
	defer func() { destroyBound(set, bound) }()
	for i, in := range s.inputs {
		if set.fill[i] == nil {
			v, err := bind(inputs[in.Name], set.shapes[i], &pin)
			if err != nil {
				return nil, fmt.Errorf("onnx: input %q: %w", in.Name, err)
			}
			set.vals[i] = v
			bound = append(bound, i)
			continue
		}
		if err := set.fill[i](inputs[in.Name], &set.vals[i]); err != nil {
			return nil, fmt.Errorf("onnx: input %q: %w", in.Name, err)
		}
	}
	opts, done := s.runOptions(ctx)
	defer done()
	outs := make([]ort.Value, len(s.outputs))
	copy(outs, set.outs)
	err = s.s.RunWithOptions(set.vals, outs, opts)
	if err != nil && set.outs != nil && ctx.Err() == nil {
		// The outputs' shapes changed with the data: stop reusing them.
		destroyAll(set.outs)
		set.outs, set.noReuse = nil, true
		clear(outs)
		err = s.s.RunWithOptions(set.vals, outs, opts)
	}
	if err != nil {
		if set.outs == nil {
			destroyAll(outs)
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("onnx: run: %w", cerr)
		}
		return nil, fmt.Errorf("onnx: run: %w", err)
	}
	var res map[string]*runtime.Tensor
	if into == nil {
		res = make(map[string]*runtime.Tensor, len(outs))
	}
	for i, v := range outs {
		if into != nil {
			if t := into[s.outputs[i].Name]; t != nil {
				if err = copyInto(t, v); err != nil {
					err = fmt.Errorf("onnx: output %q: %w", s.outputs[i].Name, err)
					break
				}
			}
			continue
		}
		t, terr := toTensor(v) // copies: the ORT buffers are reused next call
		if terr != nil {
			err = fmt.Errorf("onnx: output %q: %w", s.outputs[i].Name, terr)
			break
		}
		res[s.outputs[i].Name] = t
	}
	switch {
	case set.outs != nil:
	case err == nil && !set.noReuse:
		// Kept as Go-backed tensors of the same shapes, as a direct caller
		// preallocates them.
		set.outs = goOutputs(outs)
	default:
		destroyAll(outs)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// runOptions returns the options for one run under ctx (nil when ctx
// cannot end) and what to call once the run is over. Cancellation reaches
// into ORT through RunOptions.Terminate.
func (s *Session) runOptions(ctx context.Context) (*ort.RunOptions, func()) {
	if ctx.Done() == nil {
		return nil, func() {}
	}
	o, _ := s.runs.Get().(*ort.RunOptions)
	if o == nil {
		return nil, func() {}
	}
	stop := context.AfterFunc(ctx, func() { _ = o.Terminate() })
	return o, func() {
		if !stop() {
			_ = o.UnsetTerminate()
		}
		s.runs.Put(o)
	}
}

func (s *Session) getSet(key uint64, inputs map[string]*runtime.Tensor) (*inputSet, error) {
	s.freeMu.Lock()
	if l := s.free[key]; len(l) > 0 {
		set := l[len(l)-1]
		s.free[key] = l[:len(l)-1]
		s.freeMu.Unlock()
		return set, nil
	}
	s.freeMu.Unlock()
	set, err := s.newInputSet(inputs)
	if err != nil {
		return nil, err
	}
	s.freeMu.Lock()
	s.all = append(s.all, set)
	s.freeMu.Unlock()
	return set, nil
}

func (s *Session) putSet(key uint64, set *inputSet) {
	s.freeMu.Lock()
	if s.free == nil {
		s.free = make(map[uint64][]*inputSet)
	}
	s.free[key] = append(s.free[key], set)
	s.freeMu.Unlock()
}

// bindMin is the input size from which Run binds the caller's memory
// instead of copying it (measured: below it the copy is cheaper than the
// cgo calls that create and destroy a tensor).
const bindMin = 16 << 10

func tensorBytes(t *runtime.Tensor) int {
	return 4*len(t.Float32()) + 8*len(t.Int64()) + len(t.Uint8()) + len(t.Int8())
}

// bind wraps t's own data as an ORT tensor, pinned until pin is unpinned
// (nil pin: not pinned; the caller keeps the data referenced while the
// tensor lives, as onnxruntime_go's own tensors do).
func bind(t *runtime.Tensor, shape ort.Shape, pin *goruntime.Pinner) (ort.Value, error) {
	switch t.DType {
	case runtime.Float32:
		return bindData(t.Float32(), shape, pin)
	case runtime.Int64:
		return bindData(t.Int64(), shape, pin)
	case runtime.Uint8:
		return bindData(t.Uint8(), shape, pin)
	case runtime.Int8:
		return bindData(t.Int8(), shape, pin)
	}
	return nil, fmt.Errorf("%w: unsupported dtype %s", runtime.ErrBadInput, t.DType)
}

func bindData[T ort.TensorData](data []T, shape ort.Shape, pin *goruntime.Pinner) (ort.Value, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: an empty tensor (shape %v) cannot be bound", runtime.ErrBadInput, shape)
	}
	if pin != nil {
		pin.Pin(&data[0])
	}
	return ort.NewTensor(shape, data)
}

// destroyBound releases the run's bound inputs (never the caller's data).
func destroyBound(set *inputSet, bound []int) {
	for _, i := range bound {
		if set.vals[i] != nil {
			_ = set.vals[i].Destroy()
			set.vals[i] = nil
		}
	}
}

func (s *Session) newInputSet(inputs map[string]*runtime.Tensor) (*inputSet, error) {
	set := &inputSet{}
	for _, in := range s.inputs {
		t := inputs[in.Name]
		shape := ort.NewShape(t.Shape...)
		set.shapes = append(set.shapes, shape)
		if len(shape) > 0 && tensorBytes(t) >= bindMin {
			set.vals = append(set.vals, nil)
			set.fill = append(set.fill, nil)
			continue
		}
		var (
			v   ort.Value
			cp  fillFunc
			err error
		)
		switch t.DType {
		case runtime.Float32:
			v, cp, err = newBuf(shape, (*runtime.Tensor).Float32)
		case runtime.Int64:
			v, cp, err = newBuf(shape, (*runtime.Tensor).Int64)
		case runtime.Uint8:
			v, cp, err = newBuf(shape, (*runtime.Tensor).Uint8)
		case runtime.Int8:
			v, cp, err = newBuf(shape, (*runtime.Tensor).Int8)
		default:
			err = fmt.Errorf("%w: input %q has unsupported dtype %s", runtime.ErrBadInput, in.Name, t.DType)
		}
		if err != nil {
			destroyAll(set.vals)
			return nil, fmt.Errorf("onnx: input %q: %w", in.Name, err)
		}
		set.vals = append(set.vals, v)
		set.fill = append(set.fill, cp)
	}
	return set, nil
}

func newBuf[T ort.TensorData](shape ort.Shape, get func(*runtime.Tensor) []T) (ort.Value, fillFunc, error) {
	if len(shape) == 0 {
		return newScalar(get)
	}
	t, err := ort.NewEmptyTensor[T](shape)
	if err != nil {
		return nil, nil, err
	}
	dst := t.GetData()
	return t, func(src *runtime.Tensor, _ *ort.Value) error { copy(dst, get(src)); return nil }, nil
}

// newScalar handles rank-0 inputs (Silero's "sr"). onnxruntime_go's
// Scalar.Set swaps its Go slice without updating the OrtValue, so a changed
// value needs a new OrtValue; an unchanged one (the common case) is reused.
func newScalar[T ort.TensorData](get func(*runtime.Tensor) []T) (ort.Value, fillFunc, error) {
	var cur T
	sc, err := ort.NewScalar(cur)
	if err != nil {
		return nil, nil, err
	}
	return sc, func(src *runtime.Tensor, slot *ort.Value) error {
		v := get(src)[0]
		if v == cur {
			return nil
		}
		n, err := ort.NewScalar(v)
		if err != nil {
			return err
		}
		_ = (*slot).Destroy()
		*slot, cur = n, v
		return nil
	}, nil
}

// shapeKey identifies the concrete input shapes without allocating: FNV-1a
// over every dimension, with a separator per input.
func shapeKey(infos []runtime.TensorInfo, inputs map[string]*runtime.Tensor) uint64 {
	h := uint64(14695981039346656037)
	for _, in := range infos {
		for _, d := range inputs[in.Name].Shape {
			h = (h ^ uint64(d)) * 1099511628211
		}
		h = (h ^ 0xff) * 1099511628211
	}
	return h
}

func toTensor(v ort.Value) (*runtime.Tensor, error) {
	shape := runtime.Shape(v.GetShape())
	switch t := v.(type) {
	case *ort.Tensor[float32]:
		return runtime.NewFloat32(shape, slices.Clone(t.GetData()))
	case *ort.Tensor[int64]:
		return runtime.NewInt64(shape, slices.Clone(t.GetData()))
	case *ort.Tensor[uint8]:
		return runtime.NewUint8(shape, slices.Clone(t.GetData()))
	case *ort.Tensor[int8]:
		return runtime.NewInt8(shape, slices.Clone(t.GetData()))
	case *ort.Scalar[float32]:
		return runtime.NewFloat32(runtime.Shape{}, []float32{t.GetData()})
	case *ort.Scalar[int64]:
		return runtime.NewInt64(runtime.Shape{}, []int64{t.GetData()})
	}
	return nil, fmt.Errorf("unsupported output type %T", v)
}

// copyInto copies v into the caller's tensor t, which must have its dtype
// and shape.
func copyInto(t *runtime.Tensor, v ort.Value) error {
	shape := runtime.Shape(v.GetShape())
	if !slices.Equal(t.Shape, shape) {
		return fmt.Errorf("%w: the caller's tensor is %s, the model produced %s", runtime.ErrBadInput, t.Shape, shape)
	}
	var ok bool
	switch o := v.(type) {
	case *ort.Tensor[float32]:
		ok = t.DType == runtime.Float32 && copy(t.Float32(), o.GetData()) == len(o.GetData())
	case *ort.Tensor[int64]:
		ok = t.DType == runtime.Int64 && copy(t.Int64(), o.GetData()) == len(o.GetData())
	case *ort.Tensor[uint8]:
		ok = t.DType == runtime.Uint8 && copy(t.Uint8(), o.GetData()) == len(o.GetData())
	case *ort.Tensor[int8]:
		ok = t.DType == runtime.Int8 && copy(t.Int8(), o.GetData()) == len(o.GetData())
	case *ort.Scalar[float32]:
		ok = t.DType == runtime.Float32 && len(t.Float32()) == 1
		if ok {
			t.Float32()[0] = o.GetData()
		}
	case *ort.Scalar[int64]:
		ok = t.DType == runtime.Int64 && len(t.Int64()) == 1
		if ok {
			t.Int64()[0] = o.GetData()
		}
	}
	if !ok {
		return fmt.Errorf("%w: the caller's tensor is %s, the model produced %T", runtime.ErrBadInput, t.DType, v)
	}
	return nil
}

// goOutputs replaces ORT-allocated outputs by Go-backed tensors of the
// same shapes (what the first run returned stays valid: it was copied).
func goOutputs(outs []ort.Value) []ort.Value {
	res := make([]ort.Value, len(outs))
	for i, v := range outs {
		var n ort.Value
		var err error
		switch v.(type) {
		case *ort.Tensor[float32]:
			n, err = ort.NewEmptyTensor[float32](v.GetShape())
		case *ort.Tensor[int64]:
			n, err = ort.NewEmptyTensor[int64](v.GetShape())
		case *ort.Tensor[uint8]:
			n, err = ort.NewEmptyTensor[uint8](v.GetShape())
		case *ort.Tensor[int8]:
			n, err = ort.NewEmptyTensor[int8](v.GetShape())
		default:
			err = fmt.Errorf("kept as is")
		}
		if err != nil {
			res[i] = v
			continue
		}
		_ = v.Destroy()
		res[i] = n
	}
	return res
}

func destroyAll(vs []ort.Value) {
	for _, v := range vs {
		if v != nil {
			_ = v.Destroy()
		}
	}
}

// Close frees the session after in-flight Runs finish. Safe to call twice.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, set := range s.all {
		destroyAll(set.vals)
		destroyAll(set.outs)
	}
	s.all, s.free = nil, nil
	s.freeMu.Lock()
	bounds := s.bounds
	s.bounds = nil
	s.freeMu.Unlock()
	for b := range bounds {
		b.release()
	}
	if err := s.s.Destroy(); err != nil {
		return fmt.Errorf("onnx: close session: %w", err)
	}
	return nil
}

func convertInfos(in []ort.InputOutputInfo) ([]runtime.TensorInfo, error) {
	out := make([]runtime.TensorInfo, len(in))
	for i, x := range in {
		if x.OrtValueType != ort.ONNXTypeTensor {
			return nil, fmt.Errorf("%q is a %s; outpost supports tensors only", x.Name, x.OrtValueType)
		}
		dt, err := fromORT(x.DataType)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", x.Name, err)
		}
		out[i] = runtime.TensorInfo{Name: x.Name, DType: dt, Shape: runtime.Shape(x.Dimensions)}
	}
	return out, nil
}

func fromORT(t ort.TensorElementDataType) (runtime.DType, error) {
	switch t {
	case ort.TensorElementDataTypeFloat:
		return runtime.Float32, nil
	case ort.TensorElementDataTypeInt64:
		return runtime.Int64, nil
	case ort.TensorElementDataTypeUint8:
		return runtime.Uint8, nil
	case ort.TensorElementDataTypeInt8:
		return runtime.Int8, nil
	}
	return runtime.Invalid, fmt.Errorf("element type %s is not supported (float32, int64, uint8, int8)", t)
}

func infoNames(infos []runtime.TensorInfo) []string {
	n := make([]string, len(infos))
	for i, x := range infos {
		n[i] = x.Name
	}
	return n
}

var _ runtime.Session = (*Session)(nil)

package gpu

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// Sentinel errors.
var (
	// ErrNoAdapter: no WebGPU adapter is available at all.
	ErrNoAdapter = errors.New("gpu: no WebGPU adapter found: install a Vulkan driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1 for a CPU adapter, or your GPU vendor's driver)")
	// ErrAdapterNotFound: --adapter / LOMO_ADAPTER named none of the adapters.
	ErrAdapterNotFound = errors.New("gpu: no adapter matches")
	// ErrDeviceLost: the device was lost (driver reset, destroyed, ...).
	ErrDeviceLost = errors.New("gpu: device lost")
	// ErrOutOfMemory: the adapter could not allocate what was asked.
	ErrOutOfMemory = errors.New("gpu: out of device memory")
	// ErrReleased: a buffer was used after Release.
	ErrReleased = errors.New("gpu: buffer used after release")
	// ErrClosed: the device was used after Close.
	ErrClosed = errors.New("gpu: device closed")
)

// Error is a failure that WebGPU reported, with the operation lomo was
// doing when it surfaced (the kernel, the batch of dispatches, the buffer).
type Error struct {
	Op   string // what lomo was doing, e.g. `compile kernel "matmul/f32"`
	Kind string // validation, out-of-memory, internal, device-lost
	Msg  string // the message of WebGPU's implementation
}

func (e *Error) Error() string {
	return fmt.Sprintf("gpu: %s: %s error: %s", e.Op, e.Kind, strings.TrimSpace(e.Msg))
}

// Unwrap lets errors.Is match ErrDeviceLost and ErrOutOfMemory.
func (e *Error) Unwrap() error {
	switch e.Kind {
	case "device-lost":
		return ErrDeviceLost
	case "out-of-memory":
		return ErrOutOfMemory
	}
	return nil
}

// Caps are the optional capabilities lomo's kernels can use, as the
// adapter offers them through the binding (and the device then enables).
type Caps struct {
	F16        bool `json:"f16"`        // WGSL `enable f16;` (shader-f16)
	Subgroups  bool `json:"subgroups"`  // subgroup builtins
	Timestamps bool `json:"timestamps"` // GPU timestamp queries
}

// CooperativeMatrixFeature is the adapter feature of WGSL's cooperative
// matrices (tensor cores, simdgroup matrices) as AdapterInfo.Features names
// it. lomo does not enable it (see features in platform_native.go).
const CooperativeMatrixFeature = "native-feature-cooperative-matrix"

func (c Caps) String() string {
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	return fmt.Sprintf("f16 %s, subgroups %s, timestamps %s", yn(c.F16), yn(c.Subgroups), yn(c.Timestamps))
}

// AdapterInfo describes one adapter, as `lomo devices` prints it.
type AdapterInfo struct {
	Index    int      `json:"index"`
	Name     string   `json:"name"`
	Type     string   `json:"type"`    // discrete, integrated, cpu, unknown
	Backend  string   `json:"backend"` // vulkan, metal, d3d12, webgpu
	Driver   string   `json:"driver,omitempty"`
	Software bool     `json:"software"`
	Caps     Caps     `json:"caps"`     // what lomo can use
	Features []string `json:"features"` // every feature the adapter offers
	Limits   Limits   `json:"limits"`   // the adapter's own limits
}

// Limits are the adapter or device limits lomo cares about.
type Limits struct {
	MaxBufferSize                  uint64 `json:"max_buffer_size"`
	MaxStorageBufferBindingSize    uint64 `json:"max_storage_buffer_binding_size"`
	MaxStorageBuffersPerStage      uint32 `json:"max_storage_buffers_per_stage"`
	MaxComputeWorkgroupStorageSize uint32 `json:"max_compute_workgroup_storage_size"`
	MaxComputeInvocations          uint32 `json:"max_compute_invocations_per_workgroup"`
	MaxComputeWorkgroupSizeX       uint32 `json:"max_compute_workgroup_size_x"`
	MaxComputeWorkgroupSizeY       uint32 `json:"max_compute_workgroup_size_y"`
	MaxWorkgroupsPerDimension      uint32 `json:"max_compute_workgroups_per_dimension"`
	MinUniformBufferOffsetAlign    uint32 `json:"min_uniform_buffer_offset_alignment"`
}

// Options choose and configure the device.
type Options struct {
	// Adapter picks an adapter by index (as listed by Adapters) or by a
	// case-insensitive substring of its name, type or backend. Empty means
	// LOMO_ADAPTER, and if that is empty too, the first of: discrete GPU,
	// integrated GPU, other, software (CPU) adapter.
	Adapter string
	// Tune says whether kernels time their variants on first use (see
	// Tuning); empty means LOMO_TUNE, else auto.
	Tune Tuning
	// TuneCache is the folder that keeps tuning choices between runs (see
	// TuningCache), or "off"; empty means LOMO_TUNE_CACHE, else lomo/tuning
	// in the user's cache folder.
	TuneCache string
}

// Device is an open WebGPU device with lomo's accounting and kernel cache.
// It is safe for use by one goroutine at a time, except Stats, which may be
// called from any goroutine.
type Device struct {
	Info AdapterInfo
	// Caps enabled on the device: kernels may rely on them.
	Caps Caps

	inst    *wgpu.Instance
	adapter *wgpu.Adapter
	dev     *wgpu.Device
	queue   *wgpu.Queue
	plat    *platform // errors and loss as the platform reports them
	limits  Limits

	mu      sync.Mutex // guards acct, cache, choices
	acct    accountant
	cache   map[cacheKey][]*devBuf
	choices map[string]Choice // tuned kernel variants by call (tuning.go)
	// The tuning cache file (tuning.go): its path, how many choices came
	// from it, why it was ignored, and whether choices were made since.
	tuneFile   string
	tuneLoaded int
	tuneErr    error
	tuneNew    bool
	closed     bool
	tune       bool // kernels time their variants on first use

	kernels map[string]*Kernel
	rec     *recorder
	prof    *profiler // non-nil between StartProfile and StopProfile
	// dry: a planning device that runs no kernels and holds no memory but
	// keeps the same exact accounting (see OpenDry).
	dry bool
}

// devBuf is one WebGPU buffer with the state that decides whether work
// using it may still be submitted: a submit that uses a destroyed or mapped
// buffer is a validation error, which wgpu-native turns into an abort of the
// process, so lomo checks it before every submit (recorder.flush).
type devBuf struct {
	b         *wgpu.Buffer // nil on a dry device
	size      int64
	usage     wgpu.BufferUsage
	mapped    bool   // between MapAsync and Unmap
	destroyed bool   // Destroy was called
	batch     uint64 // the last batch that recorded a use of it
}

// OpenDry returns a device that allocates nothing and runs nothing: buffers
// are only accounted, kernels are not compiled, reads return zeros. Running
// a training step on it gives the exact memory table of that step on a
// real adapter with these limits and shader-f16 (which every current GPU
// has: 16-bit models then keep 16-bit activations), from the model config
// alone: `lomo plan` is built on it.
func OpenDry(name string, limits Limits) *Device {
	if limits.MinUniformBufferOffsetAlign == 0 {
		limits.MinUniformBufferOffsetAlign = 256
	}
	d := &Device{
		Info:    AdapterInfo{Name: name, Type: "dry", Backend: "none", Limits: limits, Caps: Caps{F16: true}},
		Caps:    Caps{F16: true},
		cache:   map[cacheKey][]*devBuf{},
		kernels: map[string]*Kernel{},
		limits:  limits,
		dry:     true,
	}
	d.rec, _ = newRecorder(d) // a dry allocation cannot fail
	return d
}

// UnlimitedLimits are limits for a dry device that refuses no size.
func UnlimitedLimits() Limits {
	return Limits{
		MaxBufferSize: 1 << 50, MaxStorageBufferBindingSize: 1 << 50, MaxStorageBuffersPerStage: 16,
		MaxComputeWorkgroupStorageSize: 32768, MaxComputeInvocations: 1024,
		MaxComputeWorkgroupSizeX: 1024, MaxComputeWorkgroupSizeY: 1024, MaxWorkgroupsPerDimension: 65535,
		MinUniformBufferOffsetAlign: 256,
	}
}

// Dry reports whether the device only plans.
func (d *Device) Dry() bool { return d.dry }

type cacheKey struct {
	size  int64
	usage wgpu.BufferUsage
}

// Adapters lists the adapters of this machine in preference order.
func Adapters() ([]AdapterInfo, error) {
	inst := newInstance()
	if inst == nil {
		return nil, ErrNoAdapter
	}
	defer inst.Release()
	ads := enumerate(inst)
	infos := make([]AdapterInfo, len(ads))
	for i, a := range ads {
		infos[i] = a.info
		a.adapter.Release()
	}
	return infos, nil
}

type candidate struct {
	adapter *wgpu.Adapter
	info    AdapterInfo
	rank    int
}

func rankOf(typ string) int {
	switch typ {
	case "discrete":
		return 0
	case "integrated":
		return 1
	case "cpu":
		return 3
	}
	return 2
}

func sortCandidates(cs []candidate) {
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].rank < cs[j].rank })
	for i := range cs {
		cs[i].info.Index = i
	}
}

func limitsOf(l wgpu.Limits) Limits {
	return Limits{
		MaxBufferSize:                  l.MaxBufferSize,
		MaxStorageBufferBindingSize:    l.MaxStorageBufferBindingSize,
		MaxStorageBuffersPerStage:      l.MaxStorageBuffersPerShaderStage,
		MaxComputeWorkgroupStorageSize: l.MaxComputeWorkgroupStorageSize,
		MaxComputeInvocations:          l.MaxComputeInvocationsPerWorkgroup,
		MaxComputeWorkgroupSizeX:       l.MaxComputeWorkgroupSizeX,
		MaxComputeWorkgroupSizeY:       l.MaxComputeWorkgroupSizeY,
		MaxWorkgroupsPerDimension:      l.MaxComputeWorkgroupsPerDimension,
		MinUniformBufferOffsetAlign:    l.MinUniformBufferOffsetAlignment,
	}
}

// requiredLimits are the limits lomo asks the device for: WebGPU's defaults
// with what lomo needs raised to what the adapter allows. Copying every
// adapter limit makes device creation fail on some drivers.
func requiredLimits(al wgpu.Limits) wgpu.Limits {
	req := wgpu.DefaultLimits()
	req.MaxBufferSize = al.MaxBufferSize
	req.MaxStorageBufferBindingSize = al.MaxStorageBufferBindingSize
	req.MaxStorageBuffersPerShaderStage = al.MaxStorageBuffersPerShaderStage
	req.MaxComputeWorkgroupStorageSize = al.MaxComputeWorkgroupStorageSize
	req.MaxComputeInvocationsPerWorkgroup = al.MaxComputeInvocationsPerWorkgroup
	req.MaxComputeWorkgroupSizeX = al.MaxComputeWorkgroupSizeX
	req.MaxComputeWorkgroupSizeY = al.MaxComputeWorkgroupSizeY
	return req
}

// choose picks the adapter that sel names, or the preferred one.
func choose(cs []candidate, sel string) (int, error) {
	if len(cs) == 0 {
		return -1, ErrNoAdapter
	}
	if sel == "" {
		return 0, nil
	}
	if i, err := strconv.Atoi(sel); err == nil {
		if i < 0 || i >= len(cs) {
			return -1, fmt.Errorf("%w %q: index out of range (%d adapters: %s)", ErrAdapterNotFound, sel, len(cs), names(cs))
		}
		return i, nil
	}
	s := strings.ToLower(sel)
	for i, c := range cs {
		if strings.Contains(strings.ToLower(c.info.Name), s) || c.info.Type == s || c.info.Backend == s {
			return i, nil
		}
	}
	return -1, fmt.Errorf("%w %q (adapters: %s)", ErrAdapterNotFound, sel, names(cs))
}

func names(cs []candidate) string {
	var ns []string
	for i, c := range cs {
		ns = append(ns, fmt.Sprintf("%d=%q", i, c.info.Name))
	}
	return strings.Join(ns, ", ")
}

// Open opens a device on the chosen adapter, with every capability of Caps
// that the adapter offers enabled.
func Open(opt Options) (*Device, error) {
	sel := opt.Adapter
	if sel == "" {
		sel = os.Getenv("LOMO_ADAPTER")
	}
	tune := opt.Tune
	if tune == "" {
		var err error
		if tune, err = ParseTuning(""); err != nil {
			return nil, err
		}
	}
	inst := newInstance()
	if inst == nil {
		return nil, ErrNoAdapter
	}
	cs := enumerate(inst)
	idx, err := choose(cs, sel)
	if err != nil {
		for _, c := range cs {
			c.adapter.Release()
		}
		inst.Release()
		return nil, err
	}
	for i, c := range cs {
		if i != idx {
			c.adapter.Release()
		}
	}
	c := cs[idx]
	d := &Device{
		Info:    c.info,
		Caps:    c.info.Caps,
		inst:    inst,
		adapter: c.adapter,
		cache:   map[cacheKey][]*devBuf{},
		kernels: map[string]*Kernel{},
		tune:    tune.tunes(c.info),
	}
	if err := d.openPlatform(c); err != nil {
		c.adapter.Release()
		inst.Release()
		return nil, fmt.Errorf("gpu: request device on %q: %w", c.info.Name, err)
	}
	if d.limits.MinUniformBufferOffsetAlign == 0 {
		d.limits.MinUniformBufferOffsetAlign = 256
	}
	if d.rec, err = newRecorder(d); err != nil {
		d.Close()
		return nil, err
	}
	d.openTuningCache(tuningCacheDir(opt.TuneCache))
	return d, nil
}

// Limits returns the limits the device was opened with.
func (d *Device) Limits() Limits { return d.limits }

// Stats returns a snapshot of the memory accounting.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acct.s
}

// ResetPeak sets every peak to the current live value.
func (d *Device) ResetPeak() {
	d.mu.Lock()
	d.acct.resetPeak()
	d.mu.Unlock()
}

// Err reports why the device cannot take work (ErrClosed, or a device-lost
// *Error), or nil: with several devices, which one failed.
func (d *Device) Err() error { return d.usable() }

// usable reports why the device cannot take work: closed or lost.
func (d *Device) usable() error {
	if d.closed {
		return ErrClosed
	}
	if d.dry {
		return nil
	}
	return d.plat.lostError()
}

// Close waits for the device to finish its work, then releases everything
// it holds. Buffers not yet released become invalid; releasing them later
// only updates the accounting.
func (d *Device) Close() {
	if d.closed {
		return
	}
	if d.dry {
		d.cache = map[cacheKey][]*devBuf{}
		d.closed = true
		return
	}
	if err := d.saveTuningCache(); err != nil {
		// Only the next run's speed depends on it: say so and go on.
		fmt.Fprintf(os.Stderr, "lomo: tuning cache %s: %v (the next run tunes again)\n", d.tuneFile, err)
	}
	// Teardown order: nothing is destroyed while queued work may still read
	// it, so submit what is recorded and wait for the queue first.
	_ = d.rec.flush()
	d.waitIdle()
	d.rec.release()
	for _, k := range d.kernels {
		k.release()
	}
	d.kernels = nil
	d.destroyCache()
	d.closed = true
	d.queue.Release()
	d.dev.Release()
	d.adapter.Release()
	d.inst.Release()
	d.plat.close()
}

// guard runs fn and reports its error, or any error WebGPU raised meanwhile
// (in the browser, through an error scope around fn), as an *Error naming op.
func (d *Device) guard(op string, fn func() error) error {
	if err := d.usable(); err != nil {
		return err
	}
	d.plat.pushScope()
	return d.plat.popScope(op, fn())
}

// bindingError turns an error of a binding call into an *Error naming op,
// without the binding's own context (the name of its Go method).
func bindingError(op string, err error) *Error {
	msg := err.Error()
	var we wgpu.Error
	if errors.As(err, &we) && we.Wrapped != nil {
		msg = we.Wrapped.Error()
	}
	return &Error{Op: op, Kind: errorKind(msg), Msg: msg}
}

// errorKind classifies an error of the binding by its message, which starts
// with the error type ("Validation Error", "Out of Memory", ...).
func errorKind(msg string) string {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "out of memory") || strings.Contains(m, "outofmemory"):
		return "out-of-memory"
	case strings.Contains(m, "device is lost") || strings.Contains(m, "device lost"):
		return "device-lost"
	case strings.HasPrefix(m, "internal"):
		return "internal"
	}
	return "validation"
}

// Buffer is a device buffer with a tag. Its size is a multiple of 4 bytes.
type Buffer struct {
	d     *Device
	buf   *devBuf
	size  int64
	tag   Tag
	freed bool
}

// Size in bytes.
func (b *Buffer) Size() int64 { return b.size }

// Tag of the buffer.
func (b *Buffer) Tag() Tag { return b.tag }

// Device is the device the buffer lives on (a model split across devices
// has buffers on several).
func (b *Buffer) Device() *Device { return b.d }

const storageUsage = wgpu.BufferUsageStorage | wgpu.BufferUsageCopySrc | wgpu.BufferUsageCopyDst

// NewBuffer allocates a storage buffer of at least n bytes (rounded up to a
// multiple of 4) with the given tag. Its contents are undefined: reused
// buffers keep what they held.
func (d *Device) NewBuffer(tag Tag, n int64) (*Buffer, error) {
	return d.newBuffer(tag, n, storageUsage)
}

func (d *Device) newBuffer(tag Tag, n int64, usage wgpu.BufferUsage) (*Buffer, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	if n <= 0 {
		n = 4
	}
	n = AlignedSize(n)
	if uint64(n) > d.limits.MaxBufferSize {
		return nil, fmt.Errorf("gpu: create %s buffer of %d bytes: above the adapter's max buffer size %d", tag, n, d.limits.MaxBufferSize)
	}
	key := cacheKey{n, usage}
	d.mu.Lock()
	var db *devBuf
	if l := d.cache[key]; len(l) > 0 {
		db = l[len(l)-1]
		d.cache[key] = l[:len(l)-1]
	}
	d.mu.Unlock()
	if db == nil {
		db = &devBuf{size: n, usage: usage}
		if !d.dry {
			var wb *wgpu.Buffer
			err := d.guard(fmt.Sprintf("create %s buffer of %d bytes", tag, n), func() (err error) {
				wb, err = d.dev.TryCreateBuffer(&wgpu.BufferDescriptor{Label: tag.String(), Size: uint64(n), Usage: usage})
				return err
			})
			if err != nil {
				if wb != nil {
					wb.Release()
				}
				return nil, err
			}
			db.b = wb
		}
		d.mu.Lock()
		d.acct.reserve(n)
		d.mu.Unlock()
	}
	d.mu.Lock()
	d.acct.add(tag, n)
	d.mu.Unlock()
	return &Buffer{d: d, buf: db, size: n, tag: tag}, nil
}

// Release returns the buffer to the device. Dispatches already recorded
// that use it stay valid: the memory goes to a cache of the device and is
// reused only by later allocations, which are ordered after them.
// Releasing twice is a no-op.
func (b *Buffer) Release() {
	if b == nil || b.freed {
		return
	}
	b.freed = true
	d := b.d
	d.mu.Lock()
	d.acct.sub(b.tag, b.size)
	if !d.closed && !b.buf.destroyed {
		key := cacheKey{b.size, b.buf.usage}
		d.cache[key] = append(d.cache[key], b.buf)
	} else {
		d.acct.s.Reserved.Live -= b.size
	}
	d.mu.Unlock()
	b.buf = nil
}

// Retag moves the buffer's bytes from one tag to another (an activation
// gradient that becomes a parameter gradient, for instance).
func (b *Buffer) Retag(t Tag) {
	d := b.d
	d.mu.Lock()
	d.acct.sub(b.tag, b.size)
	d.acct.add(t, b.size)
	d.mu.Unlock()
	b.tag = t
}

// TrimCache destroys the cached (released) buffers. Recorded work is
// submitted and the queue drained first: submitted work may still use them.
func (d *Device) TrimCache() {
	if d.closed {
		return
	}
	if !d.dry {
		_ = d.rec.flush()
		d.waitIdle()
	}
	d.destroyCache()
}

// destroyCache destroys every cached buffer; the queue must be idle.
func (d *Device) destroyCache() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, l := range d.cache {
		for _, db := range l {
			db.destroy()
			d.acct.s.Reserved.Live -= k.size
		}
	}
	d.cache = map[cacheKey][]*devBuf{}
}

func (db *devBuf) destroy() {
	if db.b != nil && !db.destroyed {
		db.b.Destroy()
		db.b.Release()
	}
	db.destroyed = true
}

func (b *Buffer) check(op string) error {
	if b == nil {
		return fmt.Errorf("gpu: %s: nil buffer", op)
	}
	if b.freed {
		return fmt.Errorf("gpu: %s: %w", op, ErrReleased)
	}
	return nil
}

// Write copies data into the buffer at byte offset off. Work recorded before
// is submitted first, so the write lands after it.
func (d *Device) Write(b *Buffer, off int64, data []byte) error {
	if err := b.check("write buffer"); err != nil {
		return err
	}
	if off < 0 || off+int64(len(data)) > b.size || off%4 != 0 {
		return fmt.Errorf("gpu: write %d bytes at %d into a %d-byte buffer: out of range or unaligned", len(data), off, b.size)
	}
	if len(data)%4 != 0 {
		padded := make([]byte, AlignedSize(int64(len(data))))
		copy(padded, data)
		data = padded
	}
	if d.dry {
		return d.usable()
	}
	if err := d.rec.flush(); err != nil {
		return err
	}
	op := fmt.Sprintf("write %d bytes into a %s buffer", len(data), b.tag)
	if b.buf.destroyed || b.buf.mapped {
		return fmt.Errorf("gpu: %s: the buffer is destroyed or mapped", op)
	}
	return d.guard(op, func() error { return d.queue.TryWriteBuffer(b.buf.b, uint64(off), data) })
}

// Read copies n bytes from byte offset off of the buffer back to the host,
// after all recorded work. n <= 0 reads to the end.
func (d *Device) Read(b *Buffer, off, n int64) ([]byte, error) {
	if err := b.check("read buffer"); err != nil {
		return nil, err
	}
	if n <= 0 {
		n = b.size - off
	}
	if off < 0 || off%4 != 0 || off+n > b.size {
		return nil, fmt.Errorf("gpu: read %d bytes at %d from a %d-byte buffer: out of range or unaligned", n, off, b.size)
	}
	an := AlignedSize(n)
	if off+an > b.size {
		return nil, fmt.Errorf("gpu: read %d bytes at %d from a %d-byte buffer: out of range", an, off, b.size)
	}
	st, err := d.newBuffer(TagStaging, an, wgpu.BufferUsageMapRead|wgpu.BufferUsageCopyDst)
	if err != nil {
		return nil, err
	}
	if d.dry {
		st.Release()
		return make([]byte, n), nil
	}
	if err := d.rec.copy(b, off, st, 0, an); err != nil {
		st.Release()
		return nil, err
	}
	if err := d.rec.flush(); err != nil {
		st.Release()
		return nil, err
	}
	db := st.buf
	db.mapped = true
	out, err := d.mapRead(db.b, uint64(an))
	if err != nil {
		// The buffer may be left mapped or pending: never reuse it.
		d.waitIdle()
		db.destroy()
		st.Release()
		return nil, fmt.Errorf("gpu: read %d bytes from a %s buffer: %w", n, b.tag, err)
	}
	db.mapped = false
	st.Release()
	return out[:n], nil
}

// Copy records a buffer-to-buffer copy of n bytes.
func (d *Device) Copy(src *Buffer, srcOff int64, dst *Buffer, dstOff int64, n int64) error {
	if err := src.check("copy buffer"); err != nil {
		return err
	}
	if err := dst.check("copy buffer"); err != nil {
		return err
	}
	if srcOff+n > src.size || dstOff+n > dst.size || n%4 != 0 || srcOff%4 != 0 || dstOff%4 != 0 {
		return fmt.Errorf("gpu: copy %d bytes from %d/%d to %d/%d: out of range or unaligned", n, srcOff, src.size, dstOff, dst.size)
	}
	if d.dry {
		return nil
	}
	return d.rec.copy(src, srcOff, dst, dstOff, n)
}

// Flush submits all recorded work.
func (d *Device) Flush() error { return d.rec.flush() }

// Sync submits all recorded work and waits until the device has finished it.
func (d *Device) Sync() error {
	if err := d.rec.flush(); err != nil {
		return err
	}
	if d.dry {
		return d.usable()
	}
	return d.guard("wait for the queue", func() error { d.waitIdle(); return nil })
}

// Dispatches returns how many kernel dispatches were recorded since the
// device opened: a figure to report per training step.
func (d *Device) Dispatches() int64 { return d.rec.total }

package gpu

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cogentcore/webgpu/wgpu"
)

// Sentinel errors.
var (
	// ErrNoAdapter: no WebGPU adapter is available at all.
	ErrNoAdapter = errors.New("gpu: no WebGPU adapter found: install a Vulkan driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1 for a CPU adapter, or your GPU vendor's driver)")
	// ErrAdapterNotFound: --adapter / LOMO_ADAPTER named none of the adapters.
	ErrAdapterNotFound = errors.New("gpu: no adapter matches")
	// ErrDeviceLost: the device was lost (driver reset, out of memory, ...).
	ErrDeviceLost = errors.New("gpu: device lost")
	// ErrReleased: a buffer was used after Release.
	ErrReleased = errors.New("gpu: buffer used after release")
)

// AdapterInfo describes one adapter, as `lomo devices` prints it.
type AdapterInfo struct {
	Index    int      `json:"index"`
	Name     string   `json:"name"`
	Type     string   `json:"type"`    // discrete, integrated, cpu, unknown
	Backend  string   `json:"backend"` // vulkan, metal, d3d12, webgpu
	Software bool     `json:"software"`
	Features []string `json:"features"`
	Limits   Limits   `json:"limits"`
}

// Limits are the adapter limits lomo cares about.
type Limits struct {
	MaxBufferSize                  uint64 `json:"max_buffer_size"`
	MaxStorageBufferBindingSize    uint64 `json:"max_storage_buffer_binding_size"`
	MaxStorageBuffersPerStage      uint32 `json:"max_storage_buffers_per_stage"`
	MaxComputeWorkgroupStorageSize uint32 `json:"max_compute_workgroup_storage_size"`
	MaxComputeInvocations          uint32 `json:"max_compute_invocations_per_workgroup"`
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
}

// Device is an open WebGPU device with lomo's accounting and kernel cache.
// It is safe for use by one goroutine at a time, except Stats, which may be
// called from any goroutine.
type Device struct {
	Info AdapterInfo
	// Features enabled on the device (shader-f16, timestamp-query when offered).
	Features map[string]bool

	inst    *wgpu.Instance
	adapter *wgpu.Adapter
	dev     *wgpu.Device
	queue   *wgpu.Queue
	limits  Limits

	mu    sync.Mutex // guards acct, cache, lost
	acct  accountant
	cache map[cacheKey][]*wgpu.Buffer
	lost  string

	kernels map[string]*Kernel
	rec     *recorder
	// dry: a planning device that runs no kernels and holds no memory but
	// keeps the same exact accounting (see OpenDry).
	dry bool
}

// OpenDry returns a device that allocates nothing and runs nothing: buffers
// are only accounted, kernels are not compiled, reads return zeros. Running
// a training step on it gives the exact memory table of that step on a
// real adapter with these limits, from the model config alone: `lomo plan`
// is built on it.
func OpenDry(name string, limits Limits) *Device {
	if limits.MinUniformBufferOffsetAlign == 0 {
		limits.MinUniformBufferOffsetAlign = 256
	}
	d := &Device{
		Info:     AdapterInfo{Name: name, Type: "dry", Backend: "none", Limits: limits},
		Features: map[string]bool{},
		cache:    map[cacheKey][]*wgpu.Buffer{},
		kernels:  map[string]*Kernel{},
		limits:   limits,
		dry:      true,
	}
	d.rec, _ = newRecorder(d) // a dry allocation cannot fail
	return d
}

// UnlimitedLimits are limits for a dry device that refuses no size.
func UnlimitedLimits() Limits {
	return Limits{
		MaxBufferSize: 1 << 50, MaxStorageBufferBindingSize: 1 << 50, MaxStorageBuffersPerStage: 16,
		MaxComputeWorkgroupStorageSize: 32768, MaxComputeInvocations: 1024, MaxWorkgroupsPerDimension: 65535,
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
	inst := wgpu.CreateInstance(instanceDescriptor())
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
		MaxWorkgroupsPerDimension:      l.MaxComputeWorkgroupsPerDimension,
		MinUniformBufferOffsetAlign:    l.MinUniformBufferOffsetAlignment,
	}
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

// Open opens a device on the chosen adapter.
func Open(opt Options) (*Device, error) {
	sel := opt.Adapter
	if sel == "" {
		sel = os.Getenv("LOMO_ADAPTER")
	}
	inst := wgpu.CreateInstance(instanceDescriptor())
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
		Info:     c.info,
		Features: map[string]bool{},
		inst:     inst,
		adapter:  c.adapter,
		cache:    map[cacheKey][]*wgpu.Buffer{},
		kernels:  map[string]*Kernel{},
	}
	var feats []wgpu.FeatureName
	for _, f := range c.info.Features {
		if f == "shader-f16" || f == "timestamp-query" {
			feats = append(feats, featureByName(f))
			d.Features[f] = true
		}
	}
	al := c.adapter.GetLimits().Limits
	req := wgpu.DefaultLimits()
	// Raise only what lomo needs to what the adapter allows; copying every
	// adapter limit makes RequestDevice fail on some drivers.
	req.MaxBufferSize = al.MaxBufferSize
	req.MaxStorageBufferBindingSize = al.MaxStorageBufferBindingSize
	req.MaxStorageBuffersPerShaderStage = al.MaxStorageBuffersPerShaderStage
	req.MaxComputeWorkgroupStorageSize = al.MaxComputeWorkgroupStorageSize
	req.MaxComputeInvocationsPerWorkgroup = al.MaxComputeInvocationsPerWorkgroup
	req.MaxComputeWorkgroupSizeX = al.MaxComputeWorkgroupSizeX
	req.MaxComputeWorkgroupSizeY = al.MaxComputeWorkgroupSizeY
	dev, err := c.adapter.RequestDevice(&wgpu.DeviceDescriptor{
		RequiredFeatures: feats,
		RequiredLimits:   &wgpu.RequiredLimits{Limits: req},
		// No DeviceLostCallback: the native binding passes it to C inside a
		// Go-allocated descriptor, which cgo's pointer check rejects. Loss
		// is detected where it surfaces, in mapping a buffer.
	})
	if err != nil {
		c.adapter.Release()
		inst.Release()
		return nil, fmt.Errorf("gpu: request device on %q: %w", c.info.Name, err)
	}
	d.dev = dev
	d.queue = dev.GetQueue()
	d.limits = limitsOf(dev.GetLimits().Limits)
	if d.limits.MinUniformBufferOffsetAlign == 0 {
		d.limits.MinUniformBufferOffsetAlign = 256
	}
	if d.rec, err = newRecorder(d); err != nil {
		d.queue.Release()
		dev.Release()
		c.adapter.Release()
		inst.Release()
		return nil, err
	}
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

func (d *Device) markLost(why string) {
	d.mu.Lock()
	d.lost = why
	d.mu.Unlock()
}

func (d *Device) checkLost() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lost != "" {
		return fmt.Errorf("%w: %s", ErrDeviceLost, d.lost)
	}
	return nil
}

// Close releases everything the device holds. Buffers not yet released
// become invalid.
func (d *Device) Close() {
	if d.dry {
		d.cache = map[cacheKey][]*wgpu.Buffer{}
		return
	}
	if d.dev == nil {
		return
	}
	_ = d.rec.flush()
	d.rec.release()
	for _, k := range d.kernels {
		k.release()
	}
	d.kernels = nil
	d.TrimCache()
	d.queue.Release()
	d.dev.Release()
	d.adapter.Release()
	d.inst.Release()
	d.dev = nil
}

// Buffer is a device buffer with a tag. Its size is a multiple of 4 bytes.
type Buffer struct {
	d     *Device
	buf   *wgpu.Buffer
	size  int64
	tag   Tag
	usage wgpu.BufferUsage
	freed bool
}

// Size in bytes.
func (b *Buffer) Size() int64 { return b.size }

// Tag of the buffer.
func (b *Buffer) Tag() Tag { return b.tag }

const storageUsage = wgpu.BufferUsageStorage | wgpu.BufferUsageCopySrc | wgpu.BufferUsageCopyDst

// NewBuffer allocates a storage buffer of at least n bytes (rounded up to a
// multiple of 4) with the given tag. Its contents are undefined: reused
// buffers keep what they held.
func (d *Device) NewBuffer(tag Tag, n int64) (*Buffer, error) {
	return d.newBuffer(tag, n, storageUsage)
}

func (d *Device) newBuffer(tag Tag, n int64, usage wgpu.BufferUsage) (*Buffer, error) {
	if err := d.checkLost(); err != nil {
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
	var wb *wgpu.Buffer
	fresh := true
	if l := d.cache[key]; len(l) > 0 {
		wb = l[len(l)-1]
		d.cache[key] = l[:len(l)-1]
		fresh = false
	}
	d.mu.Unlock()
	if wb == nil && !d.dry {
		var err error
		wb, err = d.dev.CreateBuffer(&wgpu.BufferDescriptor{Size: uint64(n), Usage: usage})
		if err != nil {
			return nil, fmt.Errorf("gpu: create %s buffer of %d bytes: %w", tag, n, err)
		}
	}
	if fresh {
		d.mu.Lock()
		d.acct.reserve(n)
		d.mu.Unlock()
	}
	d.mu.Lock()
	d.acct.add(tag, n)
	d.mu.Unlock()
	return &Buffer{d: d, buf: wb, size: n, tag: tag, usage: usage}, nil
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
	key := cacheKey{b.size, b.usage}
	d.cache[key] = append(d.cache[key], b.buf)
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

// TrimCache destroys the cached (released) buffers. Pending work is flushed
// first, since recorded dispatches may still use them.
func (d *Device) TrimCache() {
	_ = d.rec.flush()
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, l := range d.cache {
		for _, b := range l {
			if b != nil {
				b.Destroy()
				b.Release()
			}
			d.acct.s.Reserved.Live -= k.size
		}
	}
	d.cache = map[cacheKey][]*wgpu.Buffer{}
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
		return nil
	}
	if err := d.rec.flush(); err != nil {
		return err
	}
	if err := d.queue.WriteBuffer(b.buf, uint64(off), data); err != nil {
		return fmt.Errorf("gpu: write buffer: %w", err)
	}
	return d.checkLost()
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
	defer st.Release()
	if d.dry {
		return make([]byte, n), nil
	}
	if err := d.rec.copy(b, off, st, 0, an); err != nil {
		return nil, err
	}
	if err := d.rec.flush(); err != nil {
		return nil, err
	}
	out, err := mapRead(d, st.buf, uint64(an))
	if err != nil {
		return nil, fmt.Errorf("gpu: read buffer: %w", err)
	}
	if err := d.checkLost(); err != nil {
		return nil, err
	}
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
		return nil
	}
	waitIdle(d)
	return d.checkLost()
}

// Dispatches returns how many kernel dispatches were recorded since the
// device opened: a figure to report per training step.
func (d *Device) Dispatches() int64 { return d.rec.total }

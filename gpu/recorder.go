package gpu

import (
	"fmt"
	"strings"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// maxBatch is how many dispatches one command buffer holds before it is
// submitted by itself. Dispatches cost ~100 µs each when submitted alone on
// lavapipe and far less in a batch (DESIGN.md), so a step records many.
const maxBatch = 512

// recorder packs dispatches and copies into one command buffer. The Params
// of each dispatch go to one uniform arena at aligned offsets, written with
// a single WriteBuffer just before the submit; the queue orders that write
// after the previous submit, so the arena is reused safely.
//
// Lifetimes: bind groups are released after the submit (WebGPU keeps what a
// submitted command buffer uses alive); buffers released by their owners
// meanwhile go to the device's cache and are reused only by work recorded
// later, and nothing is destroyed before the queue is drained (TrimCache,
// Close). Before each submit, every buffer the batch uses is checked to be
// neither destroyed nor mapped: wgpu-native aborts the process on such a
// submit instead of reporting an error.
type recorder struct {
	d       *Device
	enc     *wgpu.CommandEncoder
	pass    *wgpu.ComputePassEncoder
	groups  []*wgpu.BindGroup
	arena   *Buffer
	staging []byte
	n       int
	total   int64
	stride  int
	batch   uint64    // id of the batch being recorded
	used    []*devBuf // buffers the batch uses, each once
	kernels []string  // names of the kernels it dispatches, each once
	copies  int
}

// newRecorder allocates the uniform arena up front (tag scratch), on real
// and dry devices alike, so both account the same bytes from the start.
func newRecorder(d *Device) (*recorder, error) {
	r := &recorder{d: d, stride: int(d.limits.MinUniformBufferOffsetAlign), batch: 1}
	b, err := d.newBuffer(TagScratch, int64(maxBatch*r.stride), wgpu.BufferUsageUniform|wgpu.BufferUsageCopyDst)
	if err != nil {
		return nil, err
	}
	r.arena = b
	return r, nil
}

// begin opens a command encoder (and, in the browser, the error scope of
// the batch).
func (r *recorder) begin() error {
	if r.enc != nil {
		return nil
	}
	if err := r.d.usable(); err != nil {
		return err
	}
	r.d.plat.pushScope()
	enc, err := r.d.dev.TryCreateCommandEncoder(&wgpu.CommandEncoderDescriptor{Label: "lomo batch"})
	if err != nil {
		err = r.d.plat.popScope("create command encoder", err)
		return err
	}
	r.enc = enc
	r.staging = r.staging[:0]
	return nil
}

func (r *recorder) use(b *Buffer) {
	if b.buf.batch != r.batch {
		b.buf.batch = r.batch
		r.used = append(r.used, b.buf)
	}
}

func (r *recorder) dispatch(k *Kernel, params []byte, bufs []*Buffer, x, y, z uint32) error {
	if r.n >= maxBatch || len(r.staging)+len(params) > int(r.arena.size) {
		if err := r.flush(); err != nil {
			return err
		}
	}
	if r.d.dry {
		r.n++
		r.total++
		return r.d.usable()
	}
	if err := r.begin(); err != nil {
		return err
	}
	off := len(r.staging)
	r.staging = append(r.staging, params...)
	for len(r.staging)%r.stride != 0 {
		r.staging = append(r.staging, 0)
	}
	entries := make([]wgpu.BindGroupEntry, 0, len(bufs)+1)
	for i, b := range bufs {
		entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(i), Buffer: b.buf.b, Size: uint64(b.size)})
		r.use(b)
	}
	entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(len(bufs)), Buffer: r.arena.buf.b, Offset: uint64(off), Size: uint64(len(params))})
	bg, err := r.d.dev.TryCreateBindGroup(&wgpu.BindGroupDescriptor{Label: k.Spec.Name, Layout: k.layout, Entries: entries})
	if err != nil {
		r.abort()
		return bindingError(fmt.Sprintf("dispatch %q: create bind group", k.Spec.Name), err)
	}
	r.groups = append(r.groups, bg)
	if !contains(r.kernels, k.Spec.Name) {
		r.kernels = append(r.kernels, k.Spec.Name)
	}
	if r.pass == nil {
		r.pass = r.enc.BeginComputePass(&wgpu.ComputePassDescriptor{Label: "lomo kernels"})
	}
	r.pass.SetPipeline(k.pipeline)
	r.pass.SetBindGroup(0, bg, nil)
	r.pass.DispatchWorkgroups(x, y, z)
	r.n++
	r.total++
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func (r *recorder) endPass() error {
	if r.pass == nil {
		return nil
	}
	err := r.pass.TryEnd()
	r.pass.Release()
	r.pass = nil
	return err
}

func (r *recorder) copy(src *Buffer, srcOff int64, dst *Buffer, dstOff int64, n int64) error {
	if err := r.begin(); err != nil {
		return err
	}
	r.use(src)
	r.use(dst)
	r.copies++
	if err := r.endPass(); err != nil {
		r.abort()
		return bindingError(r.what()+": end compute pass", err)
	}
	if err := r.enc.TryCopyBufferToBuffer(src.buf.b, uint64(srcOff), dst.buf.b, uint64(dstOff), uint64(n)); err != nil {
		r.abort()
		return bindingError(fmt.Sprintf("copy %d bytes from a %s to a %s buffer", n, src.tag, dst.tag), err)
	}
	return nil
}

// what names the batch for error messages: its dispatch count and kernels.
func (r *recorder) what() string {
	ks := r.kernels
	more := ""
	if len(ks) > 8 {
		ks, more = ks[:8], fmt.Sprintf(", and %d more", len(r.kernels)-8)
	}
	s := fmt.Sprintf("submit a batch of %d dispatches", r.n)
	if len(ks) > 0 {
		s += " (kernels " + strings.Join(ks, ", ") + more + ")"
	}
	if r.copies > 0 {
		s += fmt.Sprintf(" and %d copies", r.copies)
	}
	return s
}

// flush submits what was recorded. On error the recorded work is dropped
// and the error names the batch and its kernels.
func (r *recorder) flush() error {
	if r.enc == nil {
		r.n = 0
		return nil
	}
	what := r.what()
	defer r.reset()
	if err := r.endPass(); err != nil {
		return r.d.plat.popScope(what+": end compute pass", err)
	}
	cb, err := r.enc.TryFinish(nil)
	if err != nil {
		return r.d.plat.popScope(what+": finish command buffer", err)
	}
	defer cb.Release()
	for _, db := range r.used {
		if db.destroyed || db.mapped {
			state := "destroyed"
			if db.mapped {
				state = "mapped"
			}
			return r.d.plat.popScope(what, &Error{Op: what, Kind: "validation", Msg: fmt.Sprintf("a %d-byte buffer it uses is %s (lomo checks this before submitting)", db.size, state)})
		}
	}
	if err := r.d.usable(); err != nil {
		return r.d.plat.popScope(what, err)
	}
	if len(r.staging) > 0 {
		if err := r.d.queue.TryWriteBuffer(r.arena.buf.b, 0, r.staging); err != nil {
			return r.d.plat.popScope(what+": write kernel params", err)
		}
	}
	r.d.queue.Submit(cb)
	return r.d.plat.popScope(what, nil)
}

// abort drops what was recorded after an error in recording, closing the
// batch's error scope.
func (r *recorder) abort() {
	if r.enc != nil {
		_ = r.d.plat.popScope("", nil)
	}
	r.reset()
}

func (r *recorder) reset() {
	if r.pass != nil {
		r.pass.Release()
		r.pass = nil
	}
	for _, g := range r.groups {
		g.Release()
	}
	r.groups = r.groups[:0]
	if r.enc != nil {
		r.enc.Release()
		r.enc = nil
	}
	r.n = 0
	r.copies = 0
	r.used = r.used[:0]
	r.kernels = r.kernels[:0]
	r.batch++
}

func (r *recorder) release() {
	r.reset()
	if r.arena != nil {
		r.arena.Release()
		r.arena = nil
	}
}

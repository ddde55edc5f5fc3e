package gpu

import (
	"fmt"

	"github.com/cogentcore/webgpu/wgpu"
)

// maxBatch is how many dispatches one command buffer holds before it is
// submitted by itself. Dispatches cost ~100 µs each when submitted alone on
// lavapipe and far less in a batch (DESIGN.md), so a step records many.
const maxBatch = 512

// recorder packs dispatches and copies into one command buffer. The Params
// of each dispatch go to one uniform arena at aligned offsets, written with
// a single WriteBuffer just before the submit; the queue orders that write
// after the previous submit, so the arena is reused safely.
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
}

// newRecorder allocates the uniform arena up front (tag scratch), on real
// and dry devices alike, so both account the same bytes from the start.
func newRecorder(d *Device) (*recorder, error) {
	r := &recorder{d: d, stride: int(d.limits.MinUniformBufferOffsetAlign)}
	b, err := d.newBuffer(TagScratch, int64(maxBatch*r.stride), wgpu.BufferUsageUniform|wgpu.BufferUsageCopyDst)
	if err != nil {
		return nil, err
	}
	r.arena = b
	return r, nil
}

func (r *recorder) begin() error {
	if r.enc != nil {
		return nil
	}
	enc, err := r.d.dev.CreateCommandEncoder(nil)
	if err != nil {
		return fmt.Errorf("gpu: create command encoder: %w", err)
	}
	r.enc = enc
	r.staging = r.staging[:0]
	return nil
}

func (r *recorder) dispatch(k *Kernel, params []byte, bufs []*Buffer, x, y, z uint32) error {
	if r.n >= maxBatch {
		if err := r.flush(); err != nil {
			return err
		}
	}
	if r.d.dry {
		r.n++
		r.total++
		return nil
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
		entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(i), Buffer: b.buf, Size: uint64(b.size)})
	}
	entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(len(bufs)), Buffer: r.arena.buf, Offset: uint64(off), Size: uint64(len(params))})
	bg, err := r.d.dev.CreateBindGroup(&wgpu.BindGroupDescriptor{Layout: k.layout, Entries: entries})
	if err != nil {
		return fmt.Errorf("gpu: dispatch %q: create bind group: %w", k.Spec.Name, err)
	}
	r.groups = append(r.groups, bg)
	if r.pass == nil {
		r.pass = r.enc.BeginComputePass(nil)
	}
	r.pass.SetPipeline(k.pipeline)
	r.pass.SetBindGroup(0, bg, nil)
	r.pass.DispatchWorkgroups(x, y, z)
	r.n++
	r.total++
	return nil
}

func (r *recorder) endPass() error {
	if r.pass == nil {
		return nil
	}
	err := endPass(r.pass)
	r.pass.Release()
	r.pass = nil
	if err != nil {
		return fmt.Errorf("gpu: end compute pass: %w", err)
	}
	return nil
}

func (r *recorder) copy(src *Buffer, srcOff int64, dst *Buffer, dstOff int64, n int64) error {
	if err := r.begin(); err != nil {
		return err
	}
	if err := r.endPass(); err != nil {
		return err
	}
	if err := r.enc.CopyBufferToBuffer(src.buf, uint64(srcOff), dst.buf, uint64(dstOff), uint64(n)); err != nil {
		return fmt.Errorf("gpu: copy buffer: %w", err)
	}
	return nil
}

// flush submits what was recorded. On error the recorded work is dropped
// and the error names the operation.
func (r *recorder) flush() error {
	if r.enc == nil {
		r.n = 0
		return nil
	}
	defer r.reset()
	if err := r.endPass(); err != nil {
		return err
	}
	cb, err := r.enc.Finish(nil)
	if err != nil {
		return fmt.Errorf("gpu: finish command buffer of %d dispatches: %w", r.n, err)
	}
	defer cb.Release()
	if len(r.staging) > 0 {
		if err := r.d.queue.WriteBuffer(r.arena.buf, 0, r.staging); err != nil {
			return fmt.Errorf("gpu: write kernel params: %w", err)
		}
	}
	r.d.queue.Submit(cb)
	return r.d.checkLost()
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
}

func (r *recorder) release() {
	r.reset()
	if r.arena != nil {
		r.arena.Release()
		r.arena = nil
	}
}

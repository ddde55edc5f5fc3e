// Package gpu is lomo's small layer over WebGPU: a Device that opens an
// adapter, Buffers tagged by purpose with exact live/peak accounting, Kernels
// compiled once from WGSL with explicit bind group layouts, and a recording
// queue that packs many dispatches into one command buffer.
//
// The kernel ABI (DESIGN.md, contract 3): storage buffers at bindings 0..n-1,
// then one uniform Params struct at binding n. Offsets and strides travel in
// Params, in elements; bindings are always whole buffers.
//
// Platform code (native wgpu-native vs the browser) lives only in the
// build-tagged files platform_native.go and platform_js.go.
package gpu

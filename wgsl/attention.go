package wgsl

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

// AttentionParams mirrors Params in attention.wgsl (shared by its kernels).
type AttentionParams struct {
	B, T, H, KV uint32
	D, G        uint32 // G = H/KV query heads per KV head
	Scale       float32
	TK          uint32 // key rows per batch (= T except when decoding)
	Q0          uint32 // position of query row 0 (0 except when decoding)
	_, _, _     uint32
}

// attentionMaxD is the largest head size the kernels handle (WG*NR in
// attention.wgsl: each of 64 threads owns up to 4 elements of a row).
const attentionMaxD = 256

// attentionWG is WG in attention.wgsl: threads per workgroup, keys per
// block, and query (or key) rows per workgroup of the block kernels.
const attentionWG = 64

// AttentionRowKernels makes attention use the row kernels everywhere, as
// before the block kernels existed (same results, bit for bit): for
// benchmarks that compare the two on a card (lomo bench
// --attention-kernels rows). Set it before any work, not concurrently.
var AttentionRowKernels bool

// attentionBlocked reports whether the backward's block kernels (entry
// point "blocked" of the dq section; of dkdv too up to dh = 64) run a head
// size dh of dtype xt over t rows on d: their tile of attentionWG rows must
// fit the workgroup memory, and their per-thread arrays stay reasonable
// (dh <= 128). Elsewhere the row kernels run (same results, bit for bit).
// The tiled kernels (forward, dq, dkdv) have their own (attentionTiled).
func attentionBlocked(d *gpu.Device, xt gpu.DType, dh, t int) bool {
	if AttentionRowKernels {
		return false
	}
	if strings.Contains(d.Info.Name, "llvmpipe") && mesaMajor(d.Info.Driver) < 25 && (dh > 8 || t > 4096) {
		// Mesa 22's llvmpipe (lavapipe 22.3.6, LLVM 15) computes the
		// block kernels (one row per thread, arrays of DH and WG floats
		// per thread) wrongly beyond small shapes, more the longer
		// their loops (head size 64 from 255 rows, 16 at 4096; SwiftShader
		// and the row kernels are exact there: wgsl/TestAttention* with
		// B1_T256_D64 runs both in e2e/kernels.test.mjs). Head size 8,
		// the built-in model's, was checked up to 4096 rows. Lavapipe
		// 25.0.7 (LLVM 15) and 26.1.6 (LLVM 19) give the row kernels'
		// bits; 23 and 24 were not tried.
		return false
	}
	limit := d.Limits().MaxComputeWorkgroupStorageSize
	if limit == 0 {
		limit = 16384 // WebGPU's default; a dry device reports no limits
	}
	elem := 4 // bf16 tiles are f32: bf16 has no WGSL type
	if xt == gpu.F16 && d.Caps.F16 {
		elem = 2
	} else if xt == gpu.F16 {
		return false // f16 as u32 pairs cannot fill a tile element by element
	}
	return dh <= 128 && attentionWG*dh*elem <= int(limit)
}

// mesaMajor is the major version in a Mesa driver's description ("Mesa
// 22.3.6 (LLVM 15.0.6)" gives 22), 0 if it names none.
func mesaMajor(driver string) int {
	_, rest, ok := strings.Cut(driver, "Mesa ")
	if !ok {
		return 0
	}
	n := 0
	for _, c := range rest {
		if c < '0' || c > '9' {
			break
		}
		n = 10*n + int(c-'0')
	}
	return n
}

// attentionSource returns the shared part of attention.wgsl followed by one
// of its sections ("// ==== section NAME ===="). The sections declare
// different bindings under the same numbers, so each kernel is compiled from
// the shared part and its own section only.
func attentionSource(section string, subst map[string]string) string {
	const marker = "// ==== section "
	src := Source("attention", subst)
	parts := strings.Split(src, marker)
	for _, part := range parts[1:] {
		name, _, _ := strings.Cut(part, " ====")
		if name == section {
			return parts[0] + marker + part // `enable f16;`, if any, is in parts[0]
		}
	}
	panic(fmt.Sprintf("wgsl: attention.wgsl has no section %q", section)) // programmer error
}

// attentionKernel builds a section's row kernel (dh = 0, entry point
// main), its block kernel for head size dh (entry point blocked, the dq and
// dkdv sections), whose tile is of the activations' dtype, or its tiled
// kernel for head size dh with rq rows per thread (entry point tiled, the
// forward, dq and dkdv sections).
func attentionKernel(d *gpu.Device, section string, xt gpu.DType, dh, rq int, bindings []gpu.Access) (*gpu.Kernel, error) {
	switch {
	case dh > 0 && rq > 0:
		return attentionEntry(d, section, "tiled", fmt.Sprintf("tiled/d%d/rq%d", dh, rq), xt, dh, rq, bindings)
	case dh > 0:
		return attentionEntry(d, section, "blocked", fmt.Sprintf("blocked/d%d", dh), xt, dh, 0, bindings)
	}
	return attentionEntry(d, section, "main", "", xt, 0, 0, bindings)
}

// attentionEntry is the kernel of entry point entry in section, named
// attention/section/variant (and the dtype when not f32).
func attentionEntry(d *gpu.Device, section, entry, variant string, xt gpu.DType, dh, rq int, bindings []gpu.Access) (*gpu.Kernel, error) {
	name := "attention/" + section
	if variant != "" {
		name += "/" + variant
	}
	if xt != gpu.F32 {
		name += "/" + xt.String()
	}
	if k, ok := d.CachedKernel(name); ok {
		return k, nil
	}
	return d.Kernel(attentionSpec(d, name, entry, section, xt, dh, rq, bindings))
}

// attentionSpec is the kernel attentionKernel builds, named name with entry
// point entry.
func attentionSpec(d *gpu.Device, name, entry, section string, xt gpu.DType, dh, rq int, bindings []gpu.Access) gpu.KernelSpec {
	subst := dtypeSubst(d, nil, "X", "x", xt)
	written := map[string][]string{"forward": {"out"}, "dq": {"dq"}, "dkdv": {"dk", "dv"}}[section]
	for _, v := range []string{"out", "q", "k", "v", "dout", "dq", "dk", "dv"} {
		if slices.Contains(written, v) {
			outSubst(d, subst, strings.ToUpper(v), v, xt)
		} else {
			dtypeSubst(d, subst, strings.ToUpper(v), v, xt)
		}
	}
	subst["DH"], subst["TILE_T"], subst["TILE_LEN"] = "1", "f32", "1"
	// The source is substituted whole before its section is cut out: the
	// tiled kernel's placeholders need values (any valid tiling) for every
	// kernel.
	tiling := attentionTiling{dh: 8, rq: 8, ch: 8}
	if rq > 0 {
		tiling = attentionTiling{dh: dh, rq: rq, ch: attentionChunk(d, dh)}
	}
	tiling.subst(subst)
	if dh > 0 && rq == 0 {
		subst["DH"], subst["TILE_T"], subst["TILE_LEN"] = fmt.Sprint(dh), "f32", fmt.Sprint(attentionWG*dh)
		if subst["X_T"] == "f16" {
			subst["TILE_T"] = "f16"
		}
	}
	return gpu.KernelSpec{
		Name:       name,
		Entry:      entry,
		Source:     attentionSource(section, subst),
		Bindings:   bindings,
		ParamsSize: gpu.ParamsSize(AttentionParams{}),
	}
}

// attentionCheck validates the shape and the buffer sizes (elements of
// their dtypes: activations xt, lse f32, start u32) and returns the Params.
func attentionCheck(op string, b, t, h, kv, dh int, scale float32, bufs []attentionBuf) (AttentionParams, error) {
	if b <= 0 || t <= 0 || h <= 0 || kv <= 0 || dh <= 0 {
		return AttentionParams{}, fmt.Errorf("wgsl: %s: empty shape B=%d T=%d H=%d KV=%d D=%d", op, b, t, h, kv, dh)
	}
	if h%kv != 0 {
		return AttentionParams{}, fmt.Errorf("wgsl: %s: H=%d is not a multiple of KV=%d", op, h, kv)
	}
	if dh > attentionMaxD {
		return AttentionParams{}, fmt.Errorf("wgsl: %s: head size D=%d above %d", op, dh, attentionMaxD)
	}
	// One workgroup per row along x, per head along y, per batch along z.
	if t > 65535 || h > 65535 || b > 65535 {
		return AttentionParams{}, fmt.Errorf("wgsl: %s: grid (T=%d, H=%d, B=%d) beyond 65535 per dimension", op, t, h, b)
	}
	if int64(b)*int64(t)*int64(h)*int64(dh) >= 1<<32 {
		return AttentionParams{}, fmt.Errorf("wgsl: %s: %d elements overflow u32 indices", op, int64(b)*int64(t)*int64(h)*int64(dh))
	}
	for _, x := range bufs {
		if x.buf == nil {
			return AttentionParams{}, fmt.Errorf("wgsl: %s: %s is nil", op, x.name)
		}
		if x.dt.Bytes(x.n) > x.buf.Size() {
			return AttentionParams{}, fmt.Errorf("wgsl: %s: %s needs %d %v elements, buffer holds %d bytes", op, x.name, x.n, x.dt, x.buf.Size())
		}
	}
	return AttentionParams{
		B: uint32(b), T: uint32(t), H: uint32(h), KV: uint32(kv),
		D: uint32(dh), G: uint32(h / kv), Scale: scale, TK: uint32(t),
	}, nil
}

// attentionBuf is a buffer argument with the elements it must hold.
type attentionBuf struct {
	name string
	buf  *gpu.Buffer
	n    int
	dt   gpu.DType
}

// AttentionForward records causal GQA self-attention:
// out = softmax(scale * q·kᵀ + mask) · v per (batch, head), and saves lse,
// the log-sum-exp of each row of scaled scores, for AttentionBackward.
// Layouts: q, out (B,T,H,D); k, v (B,T,KV,D); lse (B,H,T); start (B) u32
// (left padding: query t attends keys start[b] <= s <= t, a query before
// start[b] only itself). Head h uses KV head h/(H/KV). D <= 256. out, q, k
// and v are of dtype xt, lse f32.
func AttentionForward(d *gpu.Device, out, lse, q, k, v, start *gpu.Buffer, xt gpu.DType, b, t, h, kv, dh int, scale float32) error {
	nq, nk := b*t*h*dh, b*t*kv*dh
	p, err := attentionCheck("attention forward", b, t, h, kv, dh, scale, []attentionBuf{
		{"out", out, nq, xt}, {"lse", lse, b * h * t, gpu.F32}, {"q", q, nq, xt}, {"k", k, nk, xt}, {"v", v, nk, xt}, {"start", start, b, gpu.F32},
	})
	if err != nil {
		return err
	}
	if err := f16Writable(d, "attention forward", "out", xt); err != nil {
		return err
	}
	// The tiled kernels, then the row kernel (rq = 0).
	rqs := append(attentionTiled(d, dh), 0)
	variants := make([]string, len(rqs))
	for i, rq := range rqs {
		variants[i] = fmt.Sprintf("tiled/rq%d", rq)
	}
	variants[len(rqs)-1] = "rows"
	key := fmt.Sprintf("attention/forward/%s/B%dT%dH%dKV%dD%d", dtypeName("x", xt), b, t, h, kv, dh)
	return tuned(d, key, variants, true, attentionFlops(b, t, h, dh), func(i int) error {
		return attentionForward(d, rqs[i], out, lse, q, k, v, start, xt, p)
	})
}

// attentionFlops is the multiply-adds of causal attention's two products,
// as floating-point operations: about 2 * B*H*T²*D.
func attentionFlops(b, t, h, dh int) float64 {
	return 2 * float64(b) * float64(h) * float64(t) * float64(t) * float64(dh)
}

// attentionForward dispatches the tiled kernel with rq rows per thread, or
// the row kernel (rq = 0).
func attentionForward(d *gpu.Device, rq int, out, lse, q, k, v, start *gpu.Buffer, xt gpu.DType, p AttentionParams) error {
	kern, gx, err := attentionPick(d, "forward", false, rq, xt, int(p.D), int(p.T), []gpu.Access{rw, rw, ro, ro, ro, ro})
	if err != nil {
		return err
	}
	// out (B,T,H,D), lse (B,H,T) <- q (B,T,H,D), k, v (B,T,KV,D)
	return d.Dispatch(kern, gpu.Params(p), []*gpu.Buffer{out, lse, q, k, v, start}, gx, p.H, p.B)
}

// attentionPick returns a section's tiled kernel with rq rows per thread
// (rq > 0), its block kernel for head size dh, or its row kernel, and the x
// of its grid over t rows: blocks of attentionWG rows, or rows.
func attentionPick(d *gpu.Device, section string, blocked bool, rq int, xt gpu.DType, dh, t int, access []gpu.Access) (*gpu.Kernel, uint32, error) {
	if rq > 0 || blocked {
		k, err := attentionKernel(d, section, xt, dh, rq, access)
		return k, uint32((t + attentionWG - 1) / attentionWG), err
	}
	k, err := attentionKernel(d, section, xt, 0, 0, access)
	return k, uint32(t), err
}

// AttentionDecode records the forward for decoding with a KV cache: tq new
// query rows per batch at positions q0..q0+tq-1 attend the cached keys and
// values, k and v laid out (B,TK,KV,D) with rows 0..q0+tq-1 filled (the new
// ones included). q, out (B,tq,H,D); lse (B,H,tq) is written too (not needed
// by decoding, kept so the kernel is the forward's).
func AttentionDecode(d *gpu.Device, out, lse, q, k, v, start *gpu.Buffer, xt gpu.DType, b, tq, tk, q0, h, kv, dh int, scale float32) error {
	if q0 < 0 || q0+tq > tk {
		return fmt.Errorf("wgsl: attention decode: positions %d..%d beyond the cache of %d", q0, q0+tq-1, tk)
	}
	nq, nk := b*tq*h*dh, b*tk*kv*dh
	p, err := attentionCheck("attention decode", b, tq, h, kv, dh, scale, []attentionBuf{
		{"out", out, nq, xt}, {"lse", lse, b * h * tq, gpu.F32}, {"q", q, nq, xt}, {"k", k, nk, xt}, {"v", v, nk, xt}, {"start", start, b, gpu.F32},
	})
	if err != nil {
		return err
	}
	if err := f16Writable(d, "attention decode", "out", xt); err != nil {
		return err
	}
	p.TK, p.Q0 = uint32(tk), uint32(q0)
	kern, err := attentionKernel(d, "forward", xt, 0, 0, []gpu.Access{rw, rw, ro, ro, ro, ro})
	if err != nil {
		return err
	}
	return d.Dispatch(kern, gpu.Params(p), []*gpu.Buffer{out, lse, q, k, v, start}, uint32(tq), uint32(h), uint32(b))
}

// AttentionBackward records the gradients of AttentionForward. dq (B,T,H,D)
// and dk, dv (B,T,KV,D) are overwritten; dout is like out; out and lse are
// what the forward saved. With delta = rowsum(dout*out),
// P = exp(scale*q·k - lse) and dS = P*(dout·v - delta):
// dq = scale*dS·k, dk = scale * Σ_group dSᵀ·q, dv = Σ_group Pᵀ·dout.
// Three dispatches, deterministic (each output element is written by one
// thread, no atomics). A scratch of B*H*T*2 f32 holds (lse, delta) per row.
// All but lse (f32) and start are of dtype xt.
func AttentionBackward(d *gpu.Device, dq, dk, dv, dout, q, k, v, out, lse, start *gpu.Buffer, xt gpu.DType, b, t, h, kv, dh int, scale float32) error {
	variants := attentionBackwardVariants(d, xt, dh, t)
	key := fmt.Sprintf("attention/backward/%s/B%dT%dH%dKV%dD%d", dtypeName("x", xt), b, t, h, kv, dh)
	// dq, dk and dv are overwritten, from inputs they alias none of.
	repeat := dq != dout && dk != dout && dv != dout
	return tuned(d, key, variants, repeat, 2.5*attentionFlops(b, t, h, dh), func(i int) error {
		return attentionBackward(d, variants[i], dq, dk, dv, dout, q, k, v, out, lse, start, xt, b, t, h, kv, dh, scale)
	})
}

// attentionBackwardVariants are the kernels of the backward that run head
// size dh of dtype xt over t rows on d, the first one first: the tiled
// kernels ("tiled/rq8", "tiled/rq4"), the block kernels ("blocked"), the
// row kernels ("rows"). Tuning times them on first use; they give the same
// bits.
func attentionBackwardVariants(d *gpu.Device, xt gpu.DType, dh, t int) []string {
	var vs []string
	for _, rq := range attentionTiled(d, dh) {
		vs = append(vs, fmt.Sprintf("tiled/rq%d", rq))
	}
	if attentionBlocked(d, xt, dh, t) {
		vs = append(vs, "blocked")
	}
	return append(vs, "rows")
}

// attentionBackward is AttentionBackward with dq and dk, dv from the
// kernels of variant (attentionBackwardVariants; the block kernels for dk,
// dv only up to D = 64): the same bits.
func attentionBackward(d *gpu.Device, variant string, dq, dk, dv, dout, q, k, v, out, lse, start *gpu.Buffer, xt gpu.DType, b, t, h, kv, dh int, scale float32) error {
	nq, nk := b*t*h*dh, b*t*kv*dh
	p, err := attentionCheck("attention backward", b, t, h, kv, dh, scale, []attentionBuf{
		{"dq", dq, nq, xt}, {"dk", dk, nk, xt}, {"dv", dv, nk, xt}, {"dout", dout, nq, xt}, {"q", q, nq, xt}, {"k", k, nk, xt},
		{"v", v, nk, xt}, {"out", out, nq, xt}, {"lse", lse, b * h * t, gpu.F32}, {"start", start, b, gpu.F32},
	})
	if err != nil {
		return err
	}
	if err := f16Writable(d, "attention backward", "dq", xt); err != nil {
		return err
	}
	if dk == dv {
		return fmt.Errorf("wgsl: attention backward: dk and dv are the same buffer")
	}
	rq := 0
	fmt.Sscanf(variant, "tiled/rq%d", &rq)
	blocked := variant == "blocked"
	kDQ, dqGrid, err := attentionPick(d, "dq", blocked, rq, xt, dh, t, []gpu.Access{rw, ro, ro, ro, ro, ro, ro})
	if err != nil {
		return err
	}
	// dk, dv: per thread four rows of DH in registers, so the block kernel
	// only up to DH = 64.
	kDKDV, dkdvGrid, err := attentionPick(d, "dkdv", blocked && dh <= 64, rq, xt, dh, t, []gpu.Access{rw, rw, ro, ro, ro, ro, ro, ro})
	if err != nil {
		return err
	}
	// stats (B,H,T,2): lse and delta side by side, so that the dk/dv kernel
	// stays within 8 storage bindings (the WebGPU default limit).
	stats, err := d.NewBuffer(gpu.TagScratch, int64(8*b*h*t))
	if err != nil {
		return fmt.Errorf("wgsl: attention backward: %w", err)
	}
	// Released once recorded: the recorded dispatches keep it valid
	// (gpu.Buffer.Release).
	defer stats.Release()
	pb := gpu.Params(p)
	// stats (B,H,T,2) <- dout, out (B,T,H,D), lse (B,H,T)
	if err := attentionDelta(d, rowPerThread(d), pb, stats, dout, out, lse, xt, b, h, t); err != nil {
		return err
	}
	// dq (B,T,H,D) <- dout, q (B,T,H,D), k, v (B,T,KV,D), stats
	if err := d.Dispatch(kDQ, pb, []*gpu.Buffer{dq, dout, q, k, v, stats, start}, dqGrid, uint32(h), uint32(b)); err != nil {
		return err
	}
	// dk, dv (B,T,KV,D) <- dout, q (B,T,H,D), k, v (B,T,KV,D), stats
	return d.Dispatch(kDKDV, pb, []*gpu.Buffer{dk, dv, dout, q, k, v, stats, start}, dkdvGrid, uint32(kv), uint32(b))
}

// attentionDelta records stats (B,H,T,2) = (lse, rowsum(dout*out)) per
// row: one workgroup per row, or with byRows one thread per row (CPU
// adapters, where a workgroup's barriers cost more than a row's
// arithmetic; the same bits).
func attentionDelta(d *gpu.Device, byRows bool, pb []byte, stats, dout, out, lse *gpu.Buffer, xt gpu.DType, b, h, t int) error {
	bindings := []gpu.Access{rw, ro, ro, ro}
	bufs := []*gpu.Buffer{stats, dout, out, lse}
	if !byRows {
		k, err := attentionKernel(d, "delta", xt, 0, 0, bindings)
		if err != nil {
			return err
		}
		return d.Dispatch(k, pb, bufs, uint32(t), uint32(h), uint32(b))
	}
	k, err := attentionEntry(d, "delta", "rows", "rows", xt, 0, 0, bindings)
	if err != nil {
		return err
	}
	x, y, z := d.Grid(b*h*t, 64)
	return d.Dispatch(k, pb, bufs, x, y, z)
}

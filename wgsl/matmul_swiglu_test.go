package wgsl

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/internal/half"
)

// swigluCase is a LLaMA MLP's down projection at a small size: n tokens,
// f FFN features, c model features (each off its tiles somewhere).
type swigluCase struct{ n, f, c int }

var swigluCases = []swigluCase{{37, 70, 19}, {128, 128, 128}}

// swigluTiles are the tilings a case runs: in f32 those ChooseTile picks
// from, and for whole tiles also one that prefetches with wide loads; in
// 16 bits the one ChooseTile picks here (as in TestMatmul: the loads are
// the operand's only use of the tiling, load_a and load_b read through
// a_at and b_at in every one, and each tiling is a pipeline to compile,
// which takes seconds in the browser's SwiftShader).
func swigluTiles(tc swigluCase, dt gpu.DType) []Tile {
	if dt != gpu.F32 {
		return []Tile{ChooseTile(dev, tc.n, tc.f, tc.c)}
	}
	tiles := []Tile{Tile64, Tile128, Tile64x8}
	if tc.n%128 == 0 {
		tiles = append(tiles, Tile{BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, Prefetch: true, Wide: true})
	}
	return tiles
}

// swigluInputs makes g, u (n,f), W (c,f) and dy (n,c) of dtype dt.
func swigluInputs(seed uint64, tc swigluCase, dt gpu.DType) (g, u, w, dy []float64) {
	r := rng(seed)
	return roundTo(randn(r, tc.n*tc.f, 2), dt), roundTo(randn(r, tc.n*tc.f, 1), dt),
		roundTo(randn(r, tc.c*tc.f, 0.3), dt), roundTo(randn(r, tc.n*tc.c, 1), dt)
}

// TestMatmulSwiGLUOperand: a matmul whose A or B is SwiGLU's output
// silu(g)·u, computed as its tiles are loaded (Mat.Up), gives the bits of
// SwiGLU stored and then multiplied, in the forward x·Wᵀ and the weight
// gradient dyᵀ·x of a down projection, with every tiling; and the float64
// product of the rounded SwiGLU output.
func TestMatmulSwiGLUOperand(t *testing.T) {
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for ci, tc := range swigluCases {
			t.Run(fmt.Sprintf("%v_N%d_F%d_C%d", dt, tc.n, tc.f, tc.c), func(t *testing.T) {
				needF16(t, dt)
				g, u, w, dy := swigluInputs(uint64(40+ci), tc, dt)
				gb, ub, wb, dyb := upload(t, g, dt), upload(t, u, dt), upload(t, w, dt), upload(t, dy, dt)
				h := outputOf(t, tc.n*tc.f, dt)
				if err := SwiGLU(dev, h, gb, ub, tc.n*tc.f, dt); err != nil {
					t.Fatal(err)
				}
				hv := download(t, h, tc.n*tc.f, dt)
				tiles := swigluTiles(tc, dt)
				sw := Mat{Buf: gb, Up: ub, DType: dt}
				for _, p := range []struct {
					name         string
					m, nn, k     int
					a, b, ha, hb Mat // the fused call's operands, and the separate one's
					ref          []float64
				}{
					// y (N,C) = h (N,F) · Wᵀ
					{"x·Wᵀ", tc.n, tc.c, tc.f, sw, Mat{Buf: wb, DType: dt, T: true}, Mat{Buf: h, DType: dt}, Mat{Buf: wb, DType: dt, T: true},
						refMatmul(hv, w, nil, tc.n, tc.c, tc.f, false, true, 1, 0)},
					// dW (C,F) = dyᵀ (C,N) · h (N,F)
					{"dyᵀ·x", tc.c, tc.f, tc.n, Mat{Buf: dyb, DType: dt, T: true}, sw, Mat{Buf: dyb, DType: dt, T: true}, Mat{Buf: h, DType: dt},
						refMatmul(dy, hv, nil, tc.c, tc.f, tc.n, true, false, 1, 0)},
				} {
					want := outputOf(t, p.m*p.nn, dt)
					if err := MatmulTiled(dev, tiles[0], Mat{Buf: want, DType: dt}, p.ha, p.hb, p.m, p.nn, p.k, 1, 1, 0); err != nil {
						t.Fatal(err)
					}
					wantV := download(t, want, p.m*p.nn, dt)
					for _, tile := range tiles {
						c := outputOf(t, p.m*p.nn, dt)
						if err := MatmulTiled(dev, tile, Mat{Buf: c, DType: dt}, p.a, p.b, p.m, p.nn, p.k, 1, 1, 0); err != nil {
							t.Fatal(err)
						}
						assertSameBits(t, fmt.Sprintf("%s with SwiGLU's output loaded, %v, against stored", p.name, tile), download(t, c, p.m*p.nn, dt), wantV)
					}
					assertClose(t, p.name, wantV, p.ref, tol{Atol: 2e-6 * float64(p.k), Rtol: 1e-5 + rounding(dt)})
				}
			})
		}
	}
	// A SwiGLU operand checks its up buffer's size too.
	a, short := upload(t, make([]float64, 8), gpu.F32), upload(t, make([]float64, 7), gpu.F32)
	if err := Matmul(dev, Mat{Buf: output(t, 4)}, Mat{Buf: a, Up: short}, Mat{Buf: a}, 2, 2, 4, 1, 1, 0); err == nil {
		t.Error("a SwiGLU operand whose u is shorter than A succeeded")
	}
}

// TestMatmulSwiGLUGrad: SwiGLU's backward in the epilogue of the down
// projection's dy·W (MatmulSwiGLUGrad) writes over g and u the bits of dh
// = dy·W stored and then SwiGLUBackwardInPlace, with every tiling; and
// the float64 gradients of sum(silu(g)·u·dh) by central differences.
func TestMatmulSwiGLUGrad(t *testing.T) {
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for ci, tc := range swigluCases {
			t.Run(fmt.Sprintf("%v_N%d_F%d_C%d", dt, tc.n, tc.f, tc.c), func(t *testing.T) {
				needF16(t, dt)
				g, u, w, dy := swigluInputs(uint64(60+ci), tc, dt)
				nf := tc.n * tc.f
				wb, dyb := upload(t, w, dt), upload(t, dy, dt)
				A, B := Mat{Buf: dyb, DType: dt}, Mat{Buf: wb, DType: dt} // dy (N,C) · W (C,F)
				tiles := swigluTiles(tc, dt)
				// Separately: dh, then the in-place backward.
				dh := outputOf(t, nf, dt)
				if err := MatmulTiled(dev, tiles[0], Mat{Buf: dh, DType: dt}, A, B, tc.n, tc.f, tc.c, 1, 1, 0); err != nil {
					t.Fatal(err)
				}
				gs, us := upload(t, g, dt), upload(t, u, dt)
				if err := SwiGLUBackwardInPlace(dev, gs, us, dh, nf, dt); err != nil {
					t.Fatal(err)
				}
				wantG, wantU := download(t, gs, nf, dt), download(t, us, nf, dt)
				for _, tile := range tiles {
					gb, ub := upload(t, g, dt), upload(t, u, dt)
					if err := MatmulSwiGLUGradTiled(dev, tile, Mat{Buf: gb, DType: dt}, Mat{Buf: ub, DType: dt}, A, B, tc.n, tc.f, tc.c); err != nil {
						t.Fatal(err)
					}
					assertSameBits(t, fmt.Sprintf("dg, %v", tile), download(t, gb, nf, dt), wantG)
					assertSameBits(t, fmt.Sprintf("du, %v", tile), download(t, ub, nf, dt), wantU)
				}
				if tc.n*tc.f > 4096 {
					return // central differences cost (N·F)² here; the small case has them
				}
				// float64: dh = dy·W (unrounded), L = sum(silu(g)·u·dh).
				dh64 := refMatmul(dy, w, nil, tc.n, tc.f, tc.c, false, false, 1, 0)
				loss := func(g, u []float64) float64 {
					s := 0.0
					for i := range g {
						s += silu64(g[i]) * u[i] * dh64[i]
					}
					return s
				}
				refG := centralDiff(func(x []float64) float64 { return loss(x, u) }, g, 1e-5)
				refU := centralDiff(func(x []float64) float64 { return loss(g, x) }, u, 1e-5)
				// dh's f32 sum of c products, then its rounding to dt, and
				// the gradient's own rounding.
				tl := tol{Atol: 1e-5 * math.Sqrt(float64(tc.c)), Rtol: 1e-5 + 2*rounding(dt)}
				assertClose(t, "dg", wantG, refG, tl)
				assertClose(t, "du", wantU, refU, tl)
			})
		}
	}
	x := upload(t, make([]float64, 4), gpu.F32)
	if err := MatmulSwiGLUGrad(dev, Mat{Buf: x}, Mat{Buf: x}, Mat{Buf: upload(t, make([]float64, 4), gpu.F32)}, Mat{Buf: upload(t, make([]float64, 4), gpu.F32)}, 2, 2, 2); err == nil {
		t.Error("SwiGLU's backward with g and u one buffer succeeded")
	}
	if err := MatmulSwiGLUGrad(dev, Mat{Buf: x}, Mat{Buf: upload(t, make([]float64, 3), gpu.F32)}, Mat{Buf: upload(t, make([]float64, 4), gpu.F32)}, Mat{Buf: upload(t, make([]float64, 4), gpu.F32)}, 2, 2, 2); err == nil {
		t.Error("SwiGLU's backward with u shorter than g succeeded")
	}
}

// TestMatmulSwiGLUGradTuned: tuning times SwiGLU's backward epilogue
// without writing (its timed runs probe), then runs the choice once: g and
// u get the untuned call's bits, not the backward applied again and again.
func TestMatmulSwiGLUGradTuned(t *testing.T) {
	tuning(t)
	// Three tilings to time: each is a pipeline to compile.
	defer func(all []Tile) { Tiles = all }(Tiles)
	Tiles = []Tile{Tile64, Tile128, Tile64x8}
	const dt = gpu.F32
	tc := swigluCase{67, 130, 36}
	g, u, w, dy := swigluInputs(80, tc, dt)
	nf := tc.n * tc.f
	A, B := Mat{Buf: upload(t, dy, dt), DType: dt}, Mat{Buf: upload(t, w, dt), DType: dt}
	gs, us := upload(t, g, dt), upload(t, u, dt)
	if err := MatmulSwiGLUGradTiled(dev, ChooseTile(dev, tc.n, tc.f, tc.c), Mat{Buf: gs, DType: dt}, Mat{Buf: us, DType: dt}, A, B, tc.n, tc.f, tc.c); err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("matmul/%s/nn+sg/%dx%dx%d/1", dtypeName("a", dt, "b", dt, "c", dt), tc.n, tc.f, tc.c)
	if _, ok := dev.Choice(key); ok {
		t.Fatalf("%s tuned before any call", key)
	}
	for call := 0; call < 2; call++ {
		gb, ub := upload(t, g, dt), upload(t, u, dt)
		d0 := dev.Dispatches()
		if err := MatmulSwiGLUGrad(dev, Mat{Buf: gb, DType: dt}, Mat{Buf: ub, DType: dt}, A, B, tc.n, tc.f, tc.c); err != nil {
			t.Fatal(err)
		}
		runs := dev.Dispatches() - d0
		c, ok := dev.Choice(key)
		if !ok {
			t.Fatalf("call %d: %s not tuned", call, key)
		}
		if call == 0 && (len(c.Timed) < 2 || runs != runsOf(c)+1) {
			t.Errorf("tuning call: %d dispatches for %d variants timed (%d runs), want those runs and one more", runs, len(c.Timed), runsOf(c))
		}
		if call == 1 && runs != 1 {
			t.Errorf("call after tuning: %d dispatches, want 1", runs)
		}
		assertSameBits(t, fmt.Sprintf("dg of call %d", call), download(t, gb, nf, dt), download(t, gs, nf, dt))
		assertSameBits(t, fmt.Sprintf("du of call %d", call), download(t, ub, nf, dt), download(t, us, nf, dt))
	}
}

// TestRoundF16: round_f16 (roundF16Lib), the f16 rounding of values that a
// fused kernel uses as if stored, is Go's f32 -> f16 conversion (to
// nearest, ties to even, subnormals kept, ±Inf past 65504) for every
// class of value; and so is the adapter's f16 store (dtypeSubst's
// writer), so fused and separate kernels round alike.
func TestRoundF16(t *testing.T) {
	xs := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 65504, 65519.99, 65520, -65520, 1e6, float32(math.Inf(1)), float32(math.Inf(-1)),
		0x1p-14, 0x1p-15, 0x1p-24, 0x1p-25, 0x1.8p-25, 0x1p-26, 6.1e-5, -3e-6, 1 + 0x1p-11, 1 + 0x3p-11, 2049, 2051, 0.1, -0.3333}
	r := rng(3)
	for i := 0; i < 4000; i++ {
		// Exponents from below f16's subnormals to beyond its range.
		xs = append(xs, float32(r.NormFloat64()*math.Ldexp(1, r.IntN(46)-28)))
	}
	n := len(xs)
	v := make([]float64, n)
	want := make([]float64, n)
	for i, x := range xs {
		v[i] = float64(x)
		want[i] = float64(half.F16ToF32(half.F32ToF16(x)))
	}
	in := upload(t, v, gpu.F32)
	run := func(name, src string, out *gpu.Buffer) {
		t.Helper()
		k, err := dev.Kernel(gpu.KernelSpec{Name: name, Source: src, Bindings: []gpu.Access{rw, ro}, ParamsSize: 16})
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.Dispatch(k, gpu.Params([4]uint32{uint32(n)}), []*gpu.Buffer{out, in}, uint32((n+63)/64), 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	const body = `
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> n: vec4<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
	let i = gid.x;
	if (i < n.x) { out[i] = VALUE; }
}`
	m := map[string]string{}
	rounded := output(t, n)
	run("test/round_f16", roundF16Lib+"@group(0) @binding(0) var<storage, read_write> out: array<f32>;"+strings.Replace(body, "VALUE", roundAs(m, gpu.F16, "x[i]"), 1), rounded)
	assertSameBits(t, "round_f16 against Go's conversion", download(t, rounded, n, gpu.F32), want)
	if !dev.Caps.F16 {
		t.Logf("adapter %q has no shader-f16: its f16 store is not checked (activations stay f32 there)", dev.Info.Name)
		return
	}
	stored := outputOf(t, n, gpu.F16)
	run("test/store_f16", "enable f16;\n@group(0) @binding(0) var<storage, read_write> out: array<f16>;"+strings.Replace(body, "VALUE", "f16(x[i])", 1), stored)
	assertSameBits(t, "the adapter's f16 store against Go's conversion", download(t, stored, n, gpu.F16), want)
}

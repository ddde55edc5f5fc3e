package wgsl

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
)

// TestEveryKernelBuilds runs every launcher in every dtype variant the
// device supports, on tiny shapes, so that each kernel source the Go code
// can build is compiled and gets a pipeline; then every kernel family
// (*.wgsl) must have been built. In the browser this is Tint's check, which
// is stricter than naga's (e2e/kernels.test.mjs runs it in Chromium). The
// numbers are not checked here: each kernel's own test does that.
func TestEveryKernelBuilds(t *testing.T) {
	d := dev
	buf := func() *gpu.Buffer {
		b, err := d.NewBuffer(gpu.TagScratch, 64<<10) // zeros: larger than any shape below
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Release)
		return b
	}
	both := []gpu.DType{gpu.F32, gpu.F16, gpu.BF16}
	// writable: f16 outputs need shader-f16 (the launchers refuse them
	// elsewhere, and lomo then keeps activations in f32); bf16 is written
	// everywhere.
	writable := func(dt gpu.DType) bool { return dt != gpu.F16 || d.Caps.F16 }
	run := func(name string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	const n, rows, cols = 64, 4, 16
	for _, a := range both {
		for _, b := range both {
			for _, c := range both {
				if writable(c) {
					run("matmul", Matmul(d, Mat{Buf: buf(), DType: c}, Mat{Buf: buf(), DType: a}, Mat{Buf: buf(), DType: b, T: true}, 4, 4, 4, 1, 1, 0))
					run("matmul 128", MatmulTiled(d, Tile128, Mat{Buf: buf(), DType: c}, Mat{Buf: buf(), DType: a}, Mat{Buf: buf(), DType: b, T: true}, 4, 4, 4, 1, 1, 0))
				}
				// The SwiGLU fusions run in a model's MLP: activations (A
				// and C) of one dtype, weights (B) of theirs or f16 under
				// f32 activations (no shader-f16).
				if a == c && writable(c) && (b == a || a == gpu.F32 && b == gpu.F16) {
					run("matmul, SwiGLU operand", Matmul(d, Mat{Buf: buf(), DType: c}, Mat{Buf: buf(), Up: buf(), DType: a}, Mat{Buf: buf(), DType: b, T: true}, 4, 4, 4, 1, 1, 0))
					run("matmul, SwiGLU backward", MatmulSwiGLUGrad(d, Mat{Buf: buf(), DType: c}, Mat{Buf: buf(), DType: c}, Mat{Buf: buf(), DType: a}, Mat{Buf: buf(), DType: b}, 4, 4, 4))
					if writable(b) { // the weight gradient, of the weights' dtype
						run("matmul, SwiGLU operand B", Matmul(d, Mat{Buf: buf(), DType: b}, Mat{Buf: buf(), DType: a, T: true}, Mat{Buf: buf(), Up: buf(), DType: a}, 4, 4, 4, 1, 1, 0))
					}
				}
			}
		}
	}
	for _, x := range both {
		if !writable(x) {
			continue
		}
		// B=1 T=4 H=2 KV=1 D=8
		run("attention forward", AttentionForward(d, buf(), buf(), buf(), buf(), buf(), buf(), x, 1, 4, 2, 1, 8, 0.35))
		run("attention decode", AttentionDecode(d, buf(), buf(), buf(), buf(), buf(), buf(), x, 1, 1, 4, 3, 2, 1, 8, 0.35))
		run("attention backward", AttentionBackward(d, buf(), buf(), buf(), buf(), buf(), buf(), buf(), buf(), buf(), buf(), x, 1, 4, 2, 1, 8, 0.35))
		for _, v := range attentionBackwardVariants(d, x, 8, 4) {
			run("attention backward "+v, attentionBackward(d, v, buf(), buf(), buf(), buf(), buf(), buf(), buf(), buf(), buf(), buf(), x, 1, 4, 2, 1, 8, 0.35))
		}
		pd, _ := attentionCheck("test", 1, 4, 2, 2, 8, 0.35, nil)
		for _, byRows := range []bool{false, true} {
			run(fmt.Sprintf("attention delta, by rows %v", byRows), attentionDelta(d, byRows, gpu.Params(pd), buf(), buf(), buf(), buf(), x, 1, 2, 4))
		}
		if rqs := attentionTiled(d, 8); len(rqs) > 1 {
			p, _ := attentionCheck("test", 1, 4, 2, 1, 8, 0.35, nil)
			run("attention forward tiled/rq4", attentionForward(d, rqs[1], buf(), buf(), buf(), buf(), buf(), buf(), x, p))
		}
		if len(attentionTiled(d, 8)) == 0 {
			// The adapter runs no tiled kernels (SwiftShader): their
			// sources must still compile for the adapters that do.
			for _, sec := range []string{"forward", "dq", "dkdv"} {
				for _, rq := range []int{8, 4} {
					spec := attentionSpec(d, fmt.Sprintf("attention/%s/tiled/d8/rq%d/%v", sec, rq, x), "tiled", sec, x, 8, rq, nil)
					run(spec.Name+" (compiled only)", d.CheckSource(spec.Name, spec.Source))
				}
			}
		}
		run("attention backward, row dq", attentionBackward(d, "rows", buf(), buf(), buf(), buf(), buf(), buf(), buf(), buf(), buf(), buf(), x, 1, 4, 2, 1, 8, 0.35))
		run("add", Add(d, buf(), buf(), buf(), n, x))
		run("swiglu", SwiGLU(d, buf(), buf(), buf(), n, x))
		run("swiglu backward", SwiGLUBackward(d, buf(), buf(), buf(), buf(), buf(), n, x, true, false))
		run("swiglu backward in place", SwiGLUBackwardInPlace(d, buf(), buf(), buf(), n, x))
		run("axpy", Axpy(d, buf(), buf(), n, x, 1, 0.5))
		run("dropout", Dropout(d, buf(), buf(), n, x, 0.25, 7, 4.0/3, 1))
		run("embedding backward", EmbeddingBackward(d, buf(), buf(), buf(), x, 4, 8, 16, false))
		run("rope", RoPE(d, buf(), buf(), x, rows, 2, 8, 10000, false))
		for _, w := range both {
			run("rmsnorm forward", RMSNormForward(d, buf(), buf(), buf(), buf(), x, w, rows, cols, 1e-5))
			run("rmsnorm backward", RMSNormBackward(d, buf(), buf(), buf(), buf(), buf(), buf(), x, w, rows, cols, true))
			run("rmsnorm forward, by rows", rmsnormForward(d, true, buf(), buf(), buf(), buf(), x, w, rows, cols, 1e-5))
			run("rmsnorm backward, by rows", rmsnormBackward(d, true, buf(), buf(), buf(), buf(), buf(), buf(), x, w, rows, cols, true, true))
		}
		for _, table := range both {
			run("embedding forward", EmbeddingForward(d, buf(), buf(), buf(), table, x, 4, 8, 16))
		}
	}
	for _, x := range both {
		run("sum of squares", SumSquares(d, buf(), 0, buf(), x, n, 1))
		run("check finite", CheckFinite(d, buf(), 0, buf(), x, n, 1, 65504))
	}
	run("fill", Fill(d, buf(), 0, n, 0))
	run("cross-entropy", crossEntropy(d, false, buf(), buf(), buf(), 0, 4, 16, 1, 0, true))
	run("cross-entropy, by rows", crossEntropy(d, true, buf(), buf(), buf(), 0, 4, 16, 1, 0, true))
	run("cross-entropy stats", CrossEntropyStats(d, buf(), buf(), buf(), buf(), 0, 4, 16, 1, 0))
	run("cross-entropy block gradient", CrossEntropyBlockGrad(d, buf(), buf(), buf(), 0, 4, 8, 8))
	for _, p := range both {
		for _, g := range both {
			run("lomo", LomoUpdate(d, buf(), buf(), p, g, n, LomoStep{LR: 0.1, InvScale: 1, ClipCoef: 1}))
			run("lomo rows", LomoUpdateRows(d, buf(), buf(), buf(), 0, p, g, rows, cols, 1, LomoStep{LR: 0.1, InvScale: 1, ClipCoef: 1}))
			if g == gpu.F32 {
				// An embedding's gradient by rows under weight decay, as
				// the optimizer runs it.
				run("lomo rows, weight decay", LomoUpdateRows(d, buf(), buf(), buf(), 0, p, g, rows, cols, 1, LomoStep{LR: 0.1, WeightDecay: 0.1, InvScale: 1, ClipCoef: 1, Check: &WeightCheck{Flags: buf()}}))
			}
			run("adalomo matrix", AdaLomoUpdate(d, buf(), buf(), buf(), buf(), p, g, rows, cols, AdaLomoStep{LR: 0.1, Beta: 0.9, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, InvScale: 1, ClipCoef: 1}))
			run("adalomo vector", AdaLomoUpdate(d, buf(), buf(), buf(), nil, p, g, 1, cols, AdaLomoStep{LR: 0.1, Beta: 0.9, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, InvScale: 1, ClipCoef: 1}))
			if g == gpu.F32 {
				// An embedding's gradient by rows, as the optimizer runs it.
				run("adalomo matrix, gradient by rows", AdaLomoUpdate(d, buf(), buf(), buf(), buf(), p, g, rows, cols, AdaLomoStep{LR: 0.1, Beta: 0.9, Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, InvScale: 1, ClipCoef: 1,
					Check: &WeightCheck{Flags: buf()}, Rows: &TableRows{IDs: buf(), N: 1}}))
			}
			var master *gpu.Buffer
			if p.Half() {
				master = buf()
			}
			run("adamw", AdamWUpdate(d, buf(), master, buf(), buf(), buf(), p, g, n, AdamWStep{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, BC1: 1, BC2: 1, GradScale: 1}))
		}
		if p != gpu.BF16 && writable(p) {
			run("probe fma", ProbeFMA(d, buf(), p, 64, 2, 1, 1))
		}
	}
	run("probe copy", ProbeCopy(d, buf(), buf(), n))
	if err := d.Sync(); err != nil {
		t.Fatalf("running the kernels: %v", err)
	}

	names := d.KernelNames()
	families, err := files.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		fam := strings.TrimSuffix(f.Name(), ".wgsl")
		built := false
		for _, n := range names {
			built = built || n == fam || strings.HasPrefix(n, fam+"/")
		}
		if !built {
			t.Errorf("no kernel of %s was built", f.Name())
		}
	}
	t.Logf("%d kernels built on %q (f16 storage: %v): %s", len(names), d.Info.Name, d.Caps.F16, strings.Join(names, " "))
}

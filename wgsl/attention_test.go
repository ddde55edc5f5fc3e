package wgsl

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"
	"time"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

// attnShape is one attention problem: q (B,T,H,D), k, v (B,T,KV,D), and the
// first unpadded position of each batch (nil: no padding).
type attnShape struct {
	B, T, H, KV, D int
	start          []int
}

func (s attnShape) startOf(b int) int {
	if s.start == nil {
		return 0
	}
	return s.start[b]
}

// attends reports whether query t of batch b sees key s (attention.wgsl).
func (s attnShape) attends(b, t, k int) bool {
	st := s.startOf(b)
	if t < st {
		return k == t
	}
	return k >= st && k <= t
}

func (s attnShape) qi(b, t, h, d int) int  { return ((b*s.T+t)*s.H+h)*s.D + d }
func (s attnShape) ki(b, t, kh, d int) int { return ((b*s.T+t)*s.KV+kh)*s.D + d }

// refAttentionForward is the float64 forward: out (B,T,H,D) and lse (B,H,T).
func refAttentionForward(sh attnShape, q, k, v []float64, scale float64) (out, lse []float64) {
	out = make([]float64, sh.B*sh.T*sh.H*sh.D)
	lse = make([]float64, sh.B*sh.H*sh.T)
	g := sh.H / sh.KV
	for b := 0; b < sh.B; b++ {
		for h := 0; h < sh.H; h++ {
			kh := h / g
			for t := 0; t < sh.T; t++ {
				scores := make([]float64, sh.T)
				m := math.Inf(-1)
				for s := 0; s < sh.T; s++ {
					if !sh.attends(b, t, s) {
						continue
					}
					x := 0.0
					for d := 0; d < sh.D; d++ {
						x += q[sh.qi(b, t, h, d)] * k[sh.ki(b, s, kh, d)]
					}
					scores[s] = scale * x
					m = math.Max(m, scores[s])
				}
				sum := 0.0
				for s := 0; s < sh.T; s++ {
					if sh.attends(b, t, s) {
						sum += math.Exp(scores[s] - m)
					}
				}
				for s := 0; s < sh.T; s++ {
					if !sh.attends(b, t, s) {
						continue
					}
					pr := math.Exp(scores[s]-m) / sum
					for d := 0; d < sh.D; d++ {
						out[sh.qi(b, t, h, d)] += pr * v[sh.ki(b, s, kh, d)]
					}
				}
				lse[(b*sh.H+h)*sh.T+t] = m + math.Log(sum)
			}
		}
	}
	return out, lse
}

// refAttentionBackward is the float64 backward from first principles
// (softmax recomputed here, not taken from the forward): the gradients of
// L with dL/dout = dout.
func refAttentionBackward(sh attnShape, q, k, v, dout []float64, scale float64) (dq, dk, dv []float64) {
	out, lse := refAttentionForward(sh, q, k, v, scale)
	dq = make([]float64, len(q))
	dk = make([]float64, len(k))
	dv = make([]float64, len(v))
	g := sh.H / sh.KV
	for b := 0; b < sh.B; b++ {
		for h := 0; h < sh.H; h++ {
			kh := h / g
			for t := 0; t < sh.T; t++ {
				delta := 0.0
				for d := 0; d < sh.D; d++ {
					delta += dout[sh.qi(b, t, h, d)] * out[sh.qi(b, t, h, d)]
				}
				for s := 0; s < sh.T; s++ {
					if !sh.attends(b, t, s) {
						continue
					}
					qk, dp := 0.0, 0.0
					for d := 0; d < sh.D; d++ {
						qk += q[sh.qi(b, t, h, d)] * k[sh.ki(b, s, kh, d)]
						dp += dout[sh.qi(b, t, h, d)] * v[sh.ki(b, s, kh, d)]
					}
					pr := math.Exp(scale*qk - lse[(b*sh.H+h)*sh.T+t])
					ds := pr * (dp - delta)
					for d := 0; d < sh.D; d++ {
						dq[sh.qi(b, t, h, d)] += scale * ds * k[sh.ki(b, s, kh, d)]
						dk[sh.ki(b, s, kh, d)] += scale * ds * q[sh.qi(b, t, h, d)]
						dv[sh.ki(b, s, kh, d)] += pr * dout[sh.qi(b, t, h, d)]
					}
				}
			}
		}
	}
	return dq, dk, dv
}

// attentionStart uploads the start positions as u32.
func attentionStart(t testing.TB, sh attnShape) *gpu.Buffer {
	t.Helper()
	buf, err := dev.NewBuffer(gpu.TagScratch, int64(4*sh.B))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(buf.Release)
	raw := make([]byte, 4*sh.B)
	for b := 0; b < sh.B; b++ {
		binary.LittleEndian.PutUint32(raw[4*b:], uint32(sh.startOf(b)))
	}
	if err := dev.Write(buf, 0, raw); err != nil {
		t.Fatal(err)
	}
	return buf
}

// attentionGPUForward runs AttentionForward on q, k, v of dtype xt and
// reads back out (xt) and lse (f32).
func attentionGPUForward(t testing.TB, sh attnShape, q, k, v []float64, scale float64, xt gpu.DType) (out, lse []float64) {
	t.Helper()
	nq := sh.B * sh.T * sh.H * sh.D
	ob, lb := outputOf(t, nq, xt), output(t, sh.B*sh.H*sh.T)
	err := AttentionForward(dev, ob, lb, upload(t, q, xt), upload(t, k, xt), upload(t, v, xt),
		attentionStart(t, sh), xt, sh.B, sh.T, sh.H, sh.KV, sh.D, float32(scale))
	if err != nil {
		t.Fatal(err)
	}
	return download(t, ob, nq, xt), download(t, lb, sh.B*sh.H*sh.T, gpu.F32)
}

// attentionGPUBackward runs AttentionBackward with out and lse given, all
// but lse of dtype xt.
func attentionGPUBackward(t testing.TB, sh attnShape, q, k, v, out, lse, dout []float64, scale float64, xt gpu.DType) (dq, dk, dv []float64) {
	t.Helper()
	nq, nk := sh.B*sh.T*sh.H*sh.D, sh.B*sh.T*sh.KV*sh.D
	dqb, dkb, dvb := outputOf(t, nq, xt), outputOf(t, nk, xt), outputOf(t, nk, xt)
	err := AttentionBackward(dev, dqb, dkb, dvb, upload(t, dout, xt), upload(t, q, xt), upload(t, k, xt),
		upload(t, v, xt), upload(t, out, xt), upload(t, lse, gpu.F32), attentionStart(t, sh),
		xt, sh.B, sh.T, sh.H, sh.KV, sh.D, float32(scale))
	if err != nil {
		t.Fatal(err)
	}
	return download(t, dqb, nq, xt), download(t, dkb, nk, xt), download(t, dvb, nk, xt)
}

// TestMesaMajor: the driver descriptions lavapipe gives, and others.
func TestMesaMajor(t *testing.T) {
	for in, want := range map[string]int{
		"Mesa 22.3.6 (LLVM 15.0.6)":           22,
		"Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)": 25,
		"Mesa 26.1.6-1~bpo13+1 (LLVM 19.1.7)": 26,
		"580.159.04":                          0,
		"":                                    0,
	} {
		if got := mesaMajor(in); got != want {
			t.Errorf("mesaMajor(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestAttentionParamsLayout(t *testing.T) {
	// Params in attention.wgsl: 12 scalars of 4 bytes, scale the 7th, Q0 the 9th.
	if got := unsafe.Sizeof(AttentionParams{}); got != 48 {
		t.Errorf("AttentionParams is %d bytes, WGSL Params is 48", got)
	}
	if got := unsafe.Offsetof(AttentionParams{}.Q0); got != 32 {
		t.Errorf("Q0 at %d, WGSL at 32", got)
	}
	if got := unsafe.Offsetof(AttentionParams{}.G); got != 20 {
		t.Errorf("G at %d, WGSL at 20", got)
	}
	if got := unsafe.Offsetof(AttentionParams{}.Scale); got != 24 {
		t.Errorf("Scale at %d, WGSL at 24", got)
	}
}

// attentionCases: T=1, T across the 64-wide key/query blocks and not a
// multiple of them, MHA and GQA (G = 2, 4), D below, at and above the 64
// threads of a row up to the 256 maximum, left padding (including a batch
// that is all padding), and peaky softmax (q scaled by 4).
var attentionCases = []struct {
	sh     attnShape
	qScale float64
}{
	{attnShape{B: 1, T: 1, H: 1, KV: 1, D: 4}, 1},
	{attnShape{B: 2, T: 5, H: 2, KV: 2, D: 6}, 1},
	{attnShape{B: 1, T: 70, H: 4, KV: 1, D: 40}, 1},
	{attnShape{B: 2, T: 33, H: 4, KV: 2, D: 64, start: []int{0, 5}}, 1},
	{attnShape{B: 3, T: 20, H: 2, KV: 1, D: 6, start: []int{0, 7, 25}}, 1},
	{attnShape{B: 2, T: 130, H: 2, KV: 1, D: 8, start: []int{70, 0}}, 4},
	{attnShape{B: 1, T: 256, H: 2, KV: 1, D: 64}, 1}, // four blocks of 64 rows at TinyLlama's head size
	{attnShape{B: 1, T: 9, H: 2, KV: 1, D: 130}, 1},
	{attnShape{B: 1, T: 66, H: 1, KV: 1, D: 256, start: []int{1}}, 1},
}

func (s attnShape) String() string {
	return fmt.Sprintf("B%d_T%d_H%d_KV%d_D%d_start%v", s.B, s.T, s.H, s.KV, s.D, s.start)
}

func TestAttentionForward(t *testing.T) {
	for ci, tc := range attentionCases {
		t.Run(tc.sh.String(), func(t *testing.T) {
			sh := tc.sh
			r := rng(uint64(100 + ci))
			scale := 1 / math.Sqrt(float64(sh.D))
			q := roundTo(randn(r, sh.B*sh.T*sh.H*sh.D, tc.qScale), gpu.F32)
			k := roundTo(randn(r, sh.B*sh.T*sh.KV*sh.D, 1), gpu.F32)
			v := roundTo(randn(r, sh.B*sh.T*sh.KV*sh.D, 1), gpu.F32)
			out, lse := attentionGPUForward(t, sh, q, k, v, float64(float32(scale)), gpu.F32)
			wantOut, wantLse := refAttentionForward(sh, q, k, v, float64(float32(scale)))
			// out is a convex combination of unit-normal v: its error is the
			// f32 error of the scores (D products: ~sqrt(D)*2^-24 times the
			// score scale qScale) carried through exp, plus the rounding of
			// the weighted sum. 4e-6 * qScale * sqrt(D) absolute, 1e-5
			// relative; the worst errors seen here are 10-30x smaller.
			at := 4e-6 * tc.qScale * math.Sqrt(float64(sh.D))
			assertClose(t, "out", out, wantOut, tol{Atol: at, Rtol: 1e-5})
			// lse ~ max score + log(T): the same score error, relative to its size.
			assertClose(t, "lse", lse, wantLse, tol{Atol: at, Rtol: 1e-5})
		})
	}
}

// TestAttentionBlockKernels: the tiled kernels (forward, dq, dk/dv, each
// number of rows per thread) and the backward's block kernels (dq with a
// query row per thread, dk/dv with a key row per thread up to D = 64) give
// the row kernels' bits, out, lse, dq, dk and dv, on every case they run (head
// sizes up to 128, the tiles within the workgroup memory), f32 and f16.
// TestAttentionForward and TestAttentionBackward check the chosen kernels
// against float64.
func TestAttentionBlockKernels(t *testing.T) {
	type kernels struct {
		rq       int    // the forward's tiled kernel with rq rows per thread; 0: rows
		backward string // the backward's kernels (attentionBackwardVariants)
	}
	ran := 0
	for ci, tc := range attentionCases {
		for _, xt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
			sh := tc.sh
			if xt == gpu.F16 && !dev.Caps.F16 {
				continue
			}
			runs := []kernels{{0, "rows"}}
			for _, rq := range attentionTiled(dev, sh.D) {
				runs = append(runs, kernels{rq, fmt.Sprintf("tiled/rq%d", rq)})
			}
			if attentionBlocked(dev, xt, sh.D, sh.T) {
				runs = append(runs, kernels{0, "blocked"})
			}
			if len(runs) == 1 {
				continue
			}
			ran++
			t.Run(fmt.Sprintf("%v/%v", sh, xt), func(t *testing.T) {
				r := rng(uint64(300 + ci))
				scale := float32(1 / math.Sqrt(float64(sh.D)))
				nq, nk, nr := sh.B*sh.T*sh.H*sh.D, sh.B*sh.T*sh.KV*sh.D, sh.B*sh.H*sh.T
				q := roundTo(randn(r, nq, tc.qScale), xt)
				k := roundTo(randn(r, nk, 1), xt)
				v := roundTo(randn(r, nk, 1), xt)
				dout := roundTo(randn(r, nq, 1), xt)
				qb, kb, vb, doutb, st := upload(t, q, xt), upload(t, k, xt), upload(t, v, xt), upload(t, dout, xt), attentionStart(t, sh)
				p, err := attentionCheck("test", sh.B, sh.T, sh.H, sh.KV, sh.D, scale, nil)
				if err != nil {
					t.Fatal(err)
				}
				got := make([][5][]float64, len(runs)) // out, lse, dq, dk, dv
				for i, run := range runs {
					ob, lb := outputOf(t, nq, xt), output(t, nr)
					if err := attentionForward(dev, run.rq, ob, lb, qb, kb, vb, st, xt, p); err != nil {
						t.Fatal(err)
					}
					dqb, dkb, dvb := outputOf(t, nq, xt), outputOf(t, nk, xt), outputOf(t, nk, xt)
					if err := attentionBackward(dev, run.backward, dqb, dkb, dvb, doutb, qb, kb, vb, ob, lb, st,
						xt, sh.B, sh.T, sh.H, sh.KV, sh.D, scale); err != nil {
						t.Fatal(err)
					}
					got[i] = [5][]float64{download(t, ob, nq, xt), download(t, lb, nr, gpu.F32),
						download(t, dqb, nq, xt), download(t, dkb, nk, xt), download(t, dvb, nk, xt)}
				}
				for i, run := range runs[1:] {
					for g, name := range []string{"out", "lse", "dq", "dk", "dv"} {
						assertSameBits(t, fmt.Sprintf("%s by %+v against by rows", name, run), got[i+1][g], got[0][g])
					}
				}
			})
		}
	}
	if ran == 0 {
		t.Fatalf("adapter %q runs no tiled or block kernels on any of the cases", dev.Info.Name)
	}
}

func TestAttentionBackward(t *testing.T) {
	for ci, tc := range attentionCases {
		t.Run(tc.sh.String(), func(t *testing.T) {
			sh := tc.sh
			r := rng(uint64(200 + ci))
			scale := float64(float32(1 / math.Sqrt(float64(sh.D))))
			q := roundTo(randn(r, sh.B*sh.T*sh.H*sh.D, tc.qScale), gpu.F32)
			k := roundTo(randn(r, sh.B*sh.T*sh.KV*sh.D, 1), gpu.F32)
			v := roundTo(randn(r, sh.B*sh.T*sh.KV*sh.D, 1), gpu.F32)
			dout := roundTo(randn(r, len(q), 1), gpu.F32)
			out, lse := refAttentionForward(sh, q, k, v, scale)
			dq, dk, dv := attentionGPUBackward(t, sh, q, k, v, roundTo(out, gpu.F32), roundTo(lse, gpu.F32), dout, scale, gpu.F32)
			wq, wk, wv := refAttentionBackward(sh, q, k, v, dout, scale)
			// Each gradient is a sum of products of unit-scale terms (D for
			// the dot products, then up to G*T terms for dk, dv): f32 error
			// ~ 2^-24 * sqrt(terms) * term size, with terms up to qScale*sqrt(D)
			// (dout·v, q·k). 4e-6 * qScale * sqrt(D*G*T) absolute, 1e-4
			// relative; the worst errors seen here are over 10x smaller.
			at := 4e-6 * tc.qScale * math.Sqrt(float64(sh.D*sh.T*sh.H/sh.KV))
			tl := tol{Atol: at, Rtol: 1e-4}
			assertClose(t, "dq", dq, wq, tl)
			assertClose(t, "dk", dk, wk, tl)
			assertClose(t, "dv", dv, wv, tl)
		})
	}
}

// TestAttention16 runs forward and backward with 16-bit activations (f16,
// bf16) on some of the cases: inputs in 16 bits, arithmetic in f32, each
// output rounded once (e = 2^-11 relative for f16, 2^-8 for bf16). The
// backward also reads out in 16 bits, which moves delta = rowsum(dout*out)
// by up to e * sum|dout*out|, and that error reaches dq and dk through
// dS = P*(dout·v - delta).
func TestAttention16(t *testing.T) {
	for _, dt := range []gpu.DType{gpu.F16, gpu.BF16} {
		for _, ci := range []int{1, 3, 5, 7} {
			tc := attentionCases[ci]
			t.Run(tc.sh.String()+"_"+dt.String(), func(t *testing.T) {
				needF16(t, dt)
				sh := tc.sh
				r := rng(uint64(700 + ci))
				e := rounding(dt)

				scale := float64(float32(1 / math.Sqrt(float64(sh.D))))
				q := roundTo(randn(r, sh.B*sh.T*sh.H*sh.D, tc.qScale), dt)
				k := roundTo(randn(r, sh.B*sh.T*sh.KV*sh.D, 1), dt)
				v := roundTo(randn(r, sh.B*sh.T*sh.KV*sh.D, 1), dt)
				dout := roundTo(randn(r, len(q), 1), dt)

				out, lse := attentionGPUForward(t, sh, q, k, v, scale, dt)
				wantOut, wantLse := refAttentionForward(sh, q, k, v, scale)
				at := 4e-6 * tc.qScale * math.Sqrt(float64(sh.D))
				assertClose(t, "out", out, wantOut, tol{Atol: at + 0x1p-25, Rtol: 1e-5 + e})
				assertClose(t, "lse", lse, wantLse, tol{Atol: at, Rtol: 1e-5})

				dq, dk, dv := attentionGPUBackward(t, sh, q, k, v, roundTo(wantOut, dt), roundTo(wantLse, gpu.F32), dout, scale, dt)
				wq, wk, wv := refAttentionBackward(sh, q, k, v, dout, scale)
				// delta's error: e * sum over D of |dout*out| (|out| <= max
				// |v| ~ 4), carried by scale*|k| (dq) or scale*|q| (dk) over
				// the attended rows, whose probabilities sum to 1 (dq) or,
				// for dk, over up to G*T queries.
				de := e * 4 * 4 * float64(sh.D) * scale * 4 * tc.qScale
				at = 4e-6*tc.qScale*math.Sqrt(float64(sh.D*sh.T*sh.H/sh.KV)) + 0x1p-25
				assertClose(t, "dq", dq, wq, tol{Atol: at + de, Rtol: 1e-4 + e})
				assertClose(t, "dk", dk, wk, tol{Atol: at + de*float64(sh.T*sh.H/sh.KV), Rtol: 1e-4 + e})
				assertClose(t, "dv", dv, wv, tol{Atol: at, Rtol: 1e-4 + e})
			})
		}
	}
}

// TestAttentionBackwardCentralDiff checks the kernels (and the float64
// reference backward) against central differences of the float64 forward
// with L = sum(out * w), so dout = w, on B=2, T=3, H=2, KV=1, D=4 with the
// second batch left-padded by one (its first query attends only itself).
func TestAttentionBackwardCentralDiff(t *testing.T) {
	sh := attnShape{B: 2, T: 3, H: 2, KV: 1, D: 4, start: []int{0, 1}}
	r := rng(7)
	scale := float64(float32(0.5))
	nq, nk := sh.B*sh.T*sh.H*sh.D, sh.B*sh.T*sh.KV*sh.D
	q := roundTo(randn(r, nq, 1), gpu.F32)
	k := roundTo(randn(r, nk, 1), gpu.F32)
	v := roundTo(randn(r, nk, 1), gpu.F32)
	w := roundTo(randn(r, nq, 1), gpu.F32)
	loss := func(q, k, v []float64) float64 {
		out, _ := refAttentionForward(sh, q, k, v, scale)
		return dot(out, w)
	}
	const step = 1e-5 // float64 central differences: error ~ step^2 + 1e-16/step
	numQ := centralDiff(func(x []float64) float64 { return loss(x, k, v) }, q, step)
	numK := centralDiff(func(x []float64) float64 { return loss(q, x, v) }, k, step)
	numV := centralDiff(func(x []float64) float64 { return loss(q, k, x) }, v, step)

	rq, rk, rv := refAttentionBackward(sh, q, k, v, w, scale)
	// float64 against float64: only the differencing error, ~1e-10.
	ref := tol{Atol: 1e-8, Rtol: 1e-6}
	assertClose(t, "ref dq", rq, numQ, ref)
	assertClose(t, "ref dk", rk, numK, ref)
	assertClose(t, "ref dv", rv, numV, ref)

	out, lse := attentionGPUForward(t, sh, q, k, v, scale, gpu.F32)
	dq, dk, dv := attentionGPUBackward(t, sh, q, k, v, out, lse, w, scale, gpu.F32)
	// f32 kernels (fed the f32 forward's out and lse) on O(1) values with a
	// handful of terms each: ~1e-7 error; 1e-5 leaves room and still catches
	// any wrong term (each contributes O(0.1)).
	gpuTol := tol{Atol: 1e-5, Rtol: 1e-5}
	assertClose(t, "dq", dq, numQ, gpuTol)
	assertClose(t, "dk", dk, numK, gpuTol)
	assertClose(t, "dv", dv, numV, gpuTol)
}

func TestAttentionRejectsBadShapes(t *testing.T) {
	sh := attnShape{B: 1, T: 4, H: 2, KV: 1, D: 8}
	buf := output(t, 64)
	small := output(t, 8)
	st := attentionStart(t, sh)
	if err := AttentionForward(dev, buf, buf, buf, buf, buf, st, gpu.F32, 1, 4, 3, 2, 8, 1); err == nil {
		t.Error("forward with H=3 not a multiple of KV=2 succeeded")
	}
	if err := AttentionForward(dev, buf, buf, buf, buf, buf, st, gpu.F32, 1, 1, 1, 1, 257, 1); err == nil {
		t.Error("forward with D=257 succeeded")
	}
	if err := AttentionForward(dev, buf, buf, small, buf, buf, st, gpu.F32, 1, 4, 2, 1, 8, 1); err == nil {
		t.Error("forward with q too small for (1,4,2,8) succeeded")
	}
	if err := AttentionBackward(dev, buf, small, buf, buf, buf, buf, buf, buf, buf, st, gpu.F32, 1, 4, 2, 1, 8, 1); err == nil {
		t.Error("backward with dk too small succeeded")
	}
	if err := AttentionBackward(dev, buf, buf, buf, buf, buf, buf, buf, buf, buf, st, gpu.F32, 0, 4, 2, 1, 8, 1); err == nil {
		t.Error("backward with B=0 succeeded")
	}
}

// BenchmarkAttentionForward reports GFLOP/s of the causal forward: per
// (batch, head) 2*D flops for q·k and 2*D for P·v over T(T+1)/2 pairs.
// Shapes above `cpuMax` flops skip on CPU adapters (lavapipe runs ~1 GFLOP/s).
func BenchmarkAttentionForward(b *testing.B) {
	const cpuMax = 2e8
	for _, sh := range []attnShape{
		{B: 1, T: 128, H: 8, KV: 2, D: 64},
		{B: 1, T: 256, H: 8, KV: 2, D: 64},
		{B: 1, T: 256, H: 4, KV: 4, D: 128},
		{B: 4, T: 1024, H: 32, KV: 8, D: 128}, // LLaMA-3-8B heads
		{B: 1, T: 4096, H: 32, KV: 8, D: 128},
	} {
		flops := 4 * float64(sh.B*sh.H*sh.D) * float64(sh.T) * float64(sh.T+1) / 2
		b.Run(fmt.Sprintf("%s/%s", dev.Info.Name, sh), func(b *testing.B) {
			if dev.Info.Type == "cpu" && flops > cpuMax {
				b.Skipf("%.1e flops per call: too slow for the CPU adapter %q", flops, dev.Info.Name)
			}
			r := rng(1)
			nq, nk := sh.B*sh.T*sh.H*sh.D, sh.B*sh.T*sh.KV*sh.D
			q, k, v := upload(b, randn(r, nq, 1), gpu.F32), upload(b, randn(r, nk, 1), gpu.F32), upload(b, randn(r, nk, 1), gpu.F32)
			out, lse, st := output(b, nq), output(b, sh.B*sh.H*sh.T), attentionStart(b, sh)
			scale := float32(1 / math.Sqrt(float64(sh.D)))
			run := func() {
				if err := AttentionForward(dev, out, lse, q, k, v, st, gpu.F32, sh.B, sh.T, sh.H, sh.KV, sh.D, scale); err != nil {
					b.Fatal(err)
				}
			}
			run() // compile
			sync(b)
			b.ResetTimer()
			begin := time.Now()
			for range b.N {
				run()
			}
			sync(b)
			sec := time.Since(begin).Seconds()
			b.ReportMetric(flops*float64(b.N)/sec/1e9, "GFLOP/s")
			b.Logf("adapter %q (%s): %.2f GFLOP/s", dev.Info.Name, dev.Info.Type, flops*float64(b.N)/sec/1e9)
		})
	}
}

// BenchmarkAttentionBackward reports GFLOP/s of the backward, counted as
// 2.5x the forward's flops (q·k, dout·v, dS·k, dSᵀ·q, Pᵀ·dout: five
// products against two); the kernels recompute q·k twice, which is not
// counted.
func BenchmarkAttentionBackward(b *testing.B) {
	const cpuMax = 2e8
	for _, sh := range []attnShape{
		{B: 1, T: 128, H: 8, KV: 2, D: 64},
		{B: 4, T: 1024, H: 32, KV: 8, D: 128},
		{B: 1, T: 4096, H: 32, KV: 8, D: 128},
	} {
		flops := 2.5 * 4 * float64(sh.B*sh.H*sh.D) * float64(sh.T) * float64(sh.T+1) / 2
		b.Run(fmt.Sprintf("%s/%s", dev.Info.Name, sh), func(b *testing.B) {
			if dev.Info.Type == "cpu" && flops > cpuMax {
				b.Skipf("%.1e flops per call: too slow for the CPU adapter %q", flops, dev.Info.Name)
			}
			r := rng(2)
			nq, nk := sh.B*sh.T*sh.H*sh.D, sh.B*sh.T*sh.KV*sh.D
			q, k, v := upload(b, randn(r, nq, 1), gpu.F32), upload(b, randn(r, nk, 1), gpu.F32), upload(b, randn(r, nk, 1), gpu.F32)
			dout := upload(b, randn(r, nq, 1), gpu.F32)
			out, lse, st := output(b, nq), output(b, sh.B*sh.H*sh.T), attentionStart(b, sh)
			dq, dk, dv := output(b, nq), output(b, nk), output(b, nk)
			scale := float32(1 / math.Sqrt(float64(sh.D)))
			if err := AttentionForward(dev, out, lse, q, k, v, st, gpu.F32, sh.B, sh.T, sh.H, sh.KV, sh.D, scale); err != nil {
				b.Fatal(err)
			}
			run := func() {
				if err := AttentionBackward(dev, dq, dk, dv, dout, q, k, v, out, lse, st, gpu.F32, sh.B, sh.T, sh.H, sh.KV, sh.D, scale); err != nil {
					b.Fatal(err)
				}
			}
			run() // compile
			sync(b)
			b.ResetTimer()
			begin := time.Now()
			for range b.N {
				run()
			}
			sync(b)
			sec := time.Since(begin).Seconds()
			b.ReportMetric(flops*float64(b.N)/sec/1e9, "GFLOP/s")
			b.Logf("adapter %q (%s): %.2f GFLOP/s", dev.Info.Name, dev.Info.Type, flops*float64(b.N)/sec/1e9)
		})
	}
}

// TestAttentionDecode: queries at positions q0..T-1 attending a KV cache of
// capacity TK > T give the rows q0..T-1 of the full causal forward (float64
// reference); cache rows past T hold NaN, so reading them would show.
func TestAttentionDecode(t *testing.T) {
	for ci, tc := range []struct {
		sh     attnShape
		q0, tk int
	}{
		{attnShape{B: 1, T: 9, H: 4, KV: 2, D: 8}, 8, 16},   // one new token
		{attnShape{B: 1, T: 70, H: 2, KV: 1, D: 40}, 0, 80}, // prefill
		{attnShape{B: 2, T: 7, H: 4, KV: 4, D: 6, start: []int{0, 3}}, 5, 12},
	} {
		t.Run(fmt.Sprintf("%v/q0=%d/tk=%d", tc.sh, tc.q0, tc.tk), func(t *testing.T) {
			sh := tc.sh
			r := rng(uint64(900 + ci))
			scale := float64(float32(1 / math.Sqrt(float64(sh.D))))
			q := roundTo(randn(r, sh.B*sh.T*sh.H*sh.D, 1), gpu.F32)
			k := roundTo(randn(r, sh.B*sh.T*sh.KV*sh.D, 1), gpu.F32)
			v := roundTo(randn(r, sh.B*sh.T*sh.KV*sh.D, 1), gpu.F32)
			want, _ := refAttentionForward(sh, q, k, v, scale)
			// The cache (B,TK,KV,D): rows 0..T-1 from k and v, the rest NaN.
			row := sh.KV * sh.D
			kc, vc := make([]float64, sh.B*tc.tk*row), make([]float64, sh.B*tc.tk*row)
			for i := range kc {
				kc[i], vc[i] = math.NaN(), math.NaN()
			}
			for b := 0; b < sh.B; b++ {
				copy(kc[b*tc.tk*row:], k[b*sh.T*row:(b+1)*sh.T*row])
				copy(vc[b*tc.tk*row:], v[b*sh.T*row:(b+1)*sh.T*row])
			}
			tq := sh.T - tc.q0
			qrow := sh.H * sh.D
			qn := make([]float64, 0, sh.B*tq*qrow)
			var wantRows []float64
			for b := 0; b < sh.B; b++ {
				qn = append(qn, q[(b*sh.T+tc.q0)*qrow:(b+1)*sh.T*qrow]...)
				wantRows = append(wantRows, want[(b*sh.T+tc.q0)*qrow:(b+1)*sh.T*qrow]...)
			}
			ob, lb := output(t, len(qn)), output(t, sh.B*sh.H*tq)
			if err := AttentionDecode(dev, ob, lb, upload(t, qn, gpu.F32), upload(t, kc, gpu.F32), upload(t, vc, gpu.F32),
				attentionStart(t, sh), gpu.F32, sh.B, tq, tc.tk, tc.q0, sh.H, sh.KV, sh.D, float32(scale)); err != nil {
				t.Fatal(err)
			}
			// Same tolerance as TestAttentionForward (unit-scale q).
			assertClose(t, "out", download(t, ob, len(qn), gpu.F32), wantRows, tol{Atol: 4e-6 * math.Sqrt(float64(sh.D)), Rtol: 1e-5})
		})
	}
	if err := AttentionDecode(dev, output(t, 8), output(t, 1), output(t, 8), output(t, 8), output(t, 8), output(t, 1), gpu.F32, 1, 1, 1, 1, 1, 1, 8, 1); err == nil {
		t.Error("decode at a position past the cache was accepted")
	}
}

// TestAttentionDeltaRows: the one-thread-per-row delta kernel (CPU
// adapters) gives the workgroup kernel's bits, lse copied and
// rowsum(dout*out), for head sizes under, at and past its 64 partial sums,
// in f32 and f16.
func TestAttentionDeltaRows(t *testing.T) {
	for ci, tc := range []struct {
		b, tt, h, dh int
		xt           gpu.DType
	}{
		{1, 3, 1, 8, gpu.F32}, {2, 34, 4, 16, gpu.F32}, {1, 9, 2, 64, gpu.F32}, {2, 5, 3, 130, gpu.F32}, {3, 20, 2, 64, gpu.F16},
	} {
		t.Run(fmt.Sprintf("B%d_T%d_H%d_D%d_%v", tc.b, tc.tt, tc.h, tc.dh, tc.xt), func(t *testing.T) {
			needF16(t, tc.xt)
			r := rng(uint64(1300 + ci))
			n, rows := tc.b*tc.tt*tc.h*tc.dh, tc.b*tc.h*tc.tt
			dout, out := upload(t, randn(r, n, 1), tc.xt), upload(t, randn(r, n, 1), tc.xt)
			lse := upload(t, randn(r, rows, 3), gpu.F32)
			p, err := attentionCheck("delta", tc.b, tc.tt, tc.h, tc.h, tc.dh, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got [2][]float64
			for i, byRows := range []bool{false, true} {
				stats := output(t, 2*rows)
				if err := attentionDelta(dev, byRows, gpu.Params(p), stats, dout, out, lse, tc.xt, tc.b, tc.h, tc.tt); err != nil {
					t.Fatal(err)
				}
				got[i] = download(t, stats, 2*rows, gpu.F32)
			}
			assertSameBits(t, "stats by rows against by workgroups", got[1], got[0])
			if math.Abs(got[0][1]) == 0 && math.Abs(got[0][3]) == 0 {
				t.Error("delta is zero: the kernels computed nothing")
			}
		})
	}
}

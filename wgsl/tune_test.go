package wgsl

import (
	"fmt"
	"math"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
)

// tuning turns tuning on for the test, for calls of any size.
func tuning(t *testing.T) {
	t.Helper()
	was, minFlops := dev.Tunes(), TuneMinFlops
	dev.SetTuning(true)
	TuneMinFlops = 0
	t.Cleanup(func() { dev.SetTuning(was); TuneMinFlops = minFlops })
}

// runsOf is how many times tuning ran a call: each variant once untimed,
// then its timed runs.
func runsOf(c gpu.Choice) int64 {
	var n int64
	for _, tm := range c.Timed {
		n += 1 + int64(tm.Runs)
	}
	return n
}

// TestMatmulTuned: the first call of a key times every tiling and keeps the
// fastest, leaving the result of one call; later calls run the choice once;
// a call that accumulates (beta != 0) is never repeated to time it.
func TestMatmulTuned(t *testing.T) {
	tuning(t)
	// f32 only: the choice does not depend on the dtype, which is part of the
	// key, and each dtype compiles every tiling again.
	for _, dt := range []gpu.DType{gpu.F32} {
		t.Run(dt.String(), func(t *testing.T) {
			m, n, k := 67, 130, 36 // x·Wᵀ, bounds checks in M and N
			r := rng(7)
			a := roundTo(randn(r, m*k, 1), dt)
			b := roundTo(randn(r, n*k, 1), dt)
			c0 := roundTo(randn(r, m*n, 1), dt)
			ab, bb := upload(t, a, dt), upload(t, b, dt)
			A, B := Mat{Buf: ab, DType: dt}, Mat{Buf: bb, DType: dt, T: true}
			key := fmt.Sprintf("matmul/%s/nt/%dx%dx%d/1", dtypeName("a", dt, "b", dt, "c", dt), m, n, k)

			// The untuned tiling's result, to compare bits with.
			cs := outputOf(t, m*n, dt)
			if err := MatmulTiled(dev, ChooseTile(dev, m, n, k), Mat{Buf: cs, DType: dt}, A, B, m, n, k, 1, 1, 0); err != nil {
				t.Fatal(err)
			}
			want := download(t, cs, m*n, dt)

			// Accumulating into C with no choice made yet: one run.
			if _, ok := dev.Choice(key); ok {
				t.Fatalf("%s tuned before any call", key)
			}
			cacc := upload(t, c0, dt)
			d0 := dev.Dispatches()
			if err := Matmul(dev, Mat{Buf: cacc, DType: dt}, A, B, m, n, k, 1, 1, 1); err != nil {
				t.Fatal(err)
			}
			if got := dev.Dispatches() - d0; got != 1 {
				t.Errorf("accumulating call before tuning: %d dispatches, want 1", got)
			}
			if _, ok := dev.Choice(key); ok {
				t.Errorf("an accumulating call tuned %s: its timing runs would add A·B more than once", key)
			}
			wantAcc := refMatmul(a, b, c0, m, n, k, false, true, 1, 1)
			tl := tol{Atol: 2e-6 * float64(k), Rtol: 1e-5 + rounding(dt)}
			assertClose(t, "C += A·Bᵀ before tuning", download(t, cacc, m*n, dt), wantAcc, tl)

			// The first overwriting call tunes.
			c := outputOf(t, m*n, dt)
			d0 = dev.Dispatches()
			if err := Matmul(dev, Mat{Buf: c, DType: dt}, A, B, m, n, k, 1, 1, 0); err != nil {
				t.Fatal(err)
			}
			tuningRuns := dev.Dispatches() - d0
			assertSameBits(t, "C of the tuning call", download(t, c, m*n, dt), want)
			ch, ok := dev.Choice(key)
			if !ok {
				t.Fatalf("no choice for %s; choices %v", key, dev.Choices())
			}
			if len(ch.Timed) < 2 || tuningRuns != runsOf(ch) {
				t.Errorf("%d tilings timed in %d dispatches, want at least 2 in %d (%+v)", len(ch.Timed), tuningRuns, runsOf(ch), ch.Timed)
			}
			if ch.Timed[0].Variant != ChooseTile(dev, m, n, k).String() {
				t.Errorf("first tiling timed %s, want ChooseTile's %v", ch.Timed[0].Variant, ChooseTile(dev, m, n, k))
			}
			best := ch.Timed[0]
			for _, tm := range ch.Timed {
				if tm.Seconds <= 0 || tm.Runs < 1 || tm.Runs > tuneReps {
					t.Errorf("tiling %s timed %g s in %d runs", tm.Variant, tm.Seconds, tm.Runs)
				}
				if tm.Seconds < best.Seconds {
					best = tm
				}
			}
			if ch.Chosen != best.Variant {
				t.Errorf("chose %s, the fastest was %s (%v)", ch.Chosen, best.Variant, ch.Timed)
			}

			// Later calls, overwriting or accumulating, run the choice once.
			for _, beta := range []float32{0, 1} {
				cb := upload(t, c0, dt)
				d0 = dev.Dispatches()
				if err := Matmul(dev, Mat{Buf: cb, DType: dt}, A, B, m, n, k, 1, 1, beta); err != nil {
					t.Fatal(err)
				}
				if got := dev.Dispatches() - d0; got != 1 {
					t.Errorf("beta %g after tuning: %d dispatches, want 1", beta, got)
				}
				if got := download(t, cb, m*n, dt); beta == 0 {
					assertSameBits(t, "C after tuning", got, want)
				} else {
					assertClose(t, "C += A·Bᵀ after tuning", got, wantAcc, tl)
				}
			}
		})
	}
}

// TestMatmulTunesOnlyWhere: no tuning on a device that does not tune, for
// calls below TuneMinFlops, or when C is also an input.
func TestMatmulTunesOnlyWhere(t *testing.T) {
	m, n, k := 33, 20, 12
	r := rng(8)
	ab := upload(t, randn(r, m*k, 1), gpu.F32)
	bb := upload(t, randn(r, n*k, 1), gpu.F32)
	for _, tc := range []struct {
		name     string
		tune     bool
		minFlops float64
	}{{"device does not tune", false, 0}, {"below TuneMinFlops", true, 2*float64(m*n*k) + 1}} {
		t.Run(tc.name, func(t *testing.T) {
			tuning(t)
			dev.SetTuning(tc.tune)
			TuneMinFlops = tc.minFlops
			before := len(dev.Choices())
			d0 := dev.Dispatches()
			if err := Matmul(dev, Mat{Buf: output(t, m*n)}, Mat{Buf: ab}, Mat{Buf: bb, T: true}, m, n, k, 1, 1, 0); err != nil {
				t.Fatal(err)
			}
			if got := dev.Dispatches() - d0; got != 1 || len(dev.Choices()) != before {
				t.Errorf("%d dispatches and %d new choices, want 1 and none", got, len(dev.Choices())-before)
			}
		})
	}
}

// TestAttentionTuned: the forward (its tiled kernels and the row kernel)
// and the backward (its tiled, block and row kernels) each time their kernels on
// their first call, keep the fastest and leave the bits of the untuned
// kernels.
func TestAttentionTuned(t *testing.T) {
	sh := attnShape{B: 2, T: 40, H: 2, KV: 1, D: 8}
	xt := gpu.F32
	if len(attentionBackwardVariants(dev, xt, sh.D, sh.T)) < 2 {
		t.Skipf("adapter %q runs only the row kernels at %v: nothing to choose from", dev.Info.Name, sh)
	}
	r := rng(9)
	scale := 1 / math.Sqrt(float64(sh.D))
	nq, nk := sh.B*sh.T*sh.H*sh.D, sh.B*sh.T*sh.KV*sh.D
	q, k, v, dout := randn(r, nq, 1), randn(r, nk, 1), randn(r, nk, 1), randn(r, nq, 1)
	out, lse := attentionGPUForward(t, sh, q, k, v, scale, xt)
	dq, dk, dv := attentionGPUBackward(t, sh, q, k, v, out, lse, dout, scale, xt)

	tuning(t)
	d0 := dev.Dispatches()
	out2, lse2 := attentionGPUForward(t, sh, q, k, v, scale, xt)
	dq2, dk2, dv2 := attentionGPUBackward(t, sh, q, k, v, out, lse, dout, scale, xt)
	var want int64
	for _, pass := range []struct {
		name       string
		dispatches int64
		variants   int
	}{{"forward", 1, len(attentionTiled(dev, sh.D)) + 1}, {"backward", 3, len(attentionBackwardVariants(dev, xt, sh.D, sh.T))}} {
		key := fmt.Sprintf("attention/%s/x32/B%dT%dH%dKV%dD%d", pass.name, sh.B, sh.T, sh.H, sh.KV, sh.D)
		c, ok := dev.Choice(key)
		if pass.variants == 1 {
			// One kernel: nothing to time, it runs once.
			if ok {
				t.Errorf("%s: %+v; want no choice (one kernel)", key, c)
			}
			want += pass.dispatches
			continue
		}
		if !ok || len(c.Timed) != pass.variants {
			t.Errorf("%s: %+v, %v; want a choice among %d kernels", key, c, ok, pass.variants)
		}
		want += pass.dispatches * runsOf(c)
	}
	if got := dev.Dispatches() - d0; got != want {
		t.Errorf("%d dispatches, want %d: each variant's runs of the forward (1 dispatch) and the backward (3)", got, want)
	}
	for _, g := range []struct {
		name      string
		got, want []float64
	}{{"out", out2, out}, {"lse", lse2, lse}, {"dq", dq2, dq}, {"dk", dk2, dk}, {"dv", dv2, dv}} {
		assertSameBits(t, g.name+" tuned", g.got, g.want)
	}
}

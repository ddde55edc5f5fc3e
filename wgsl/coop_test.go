package wgsl

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
)

// TestSubgroupSize: the probe behind the cooperative-matrix kernels gives
// one power-of-two size for a workgroup's subgroups.
func TestSubgroupSize(t *testing.T) {
	if !dev.Caps.Subgroups {
		t.Skipf("adapter %q offers no subgroups", dev.Info.Name)
	}
	s, err := subgroupSize(dev)
	if err != nil {
		t.Fatal(err)
	}
	if s < 1 || s > 64 || s&(s-1) != 0 {
		t.Errorf("subgroup size %d", s)
	}
	t.Logf("subgroup size %d on %s", s, dev.Info.Name)
}

// TestCoopUnavailable: on an adapter without cooperative matrices the device
// starts with a reason and matmul keeps matmul.wgsl; checking the kernels
// anyway fails each configuration with a Go error naming it, and the device
// stays usable.
func TestCoopUnavailable(t *testing.T) {
	if dev.Caps.CooperativeMatrix {
		t.Skipf("adapter %q offers cooperative matrices (TestMatmulCoop checks them)", dev.Info.Name)
	}
	st := dev.Coop()
	if !st.Checked || st.Usable || !strings.Contains(st.Reason, "no cooperative matrices") {
		t.Errorf("device's cooperative-matrix state %+v, want checked and unusable for want of the feature", st)
	}
	if dry := gpu.OpenDry("dry", gpu.UnlimitedLimits()); dry.Coop().Usable || !dry.Coop().Checked {
		t.Errorf("dry device's cooperative-matrix state %+v", dry.Coop())
	}
	if !dev.Caps.Subgroups {
		return
	}
	got := checkCoop(dev)
	if got.Usable || got.Subgroup == 0 {
		t.Fatalf("checkCoop on an adapter without cooperative matrices: %+v", got)
	}
	for _, cfg := range []string{"16x16 fragments, coopLoadT row-major", "16x16 fragments, coopLoad row-major"} {
		if !strings.Contains(got.Reason, cfg) {
			t.Errorf("reason %q does not name %q", got.Reason, cfg)
		}
	}
	// matmul still runs, on matmul.wgsl, with f16 operands whose shape fits
	// the cooperative tiling.
	m, n, k := 64, 128, 32
	r := rng(900)
	a := roundTo(randn(r, m*k, 1), gpu.F16)
	b := roundTo(randn(r, n*k, 1), gpu.F16)
	c := outputOf(t, m*n, gpu.F32)
	if err := Matmul(dev, Mat{Buf: c}, Mat{Buf: upload(t, a, gpu.F16), DType: gpu.F16}, Mat{Buf: upload(t, b, gpu.F16), DType: gpu.F16, T: true}, m, n, k, 1, 1, 0); err != nil {
		t.Fatal(err)
	}
	assertClose(t, "C", download(t, c, m*n, gpu.F32), refMatmul(a, b, nil, m, n, k, false, true, 1, 0), tol{Atol: 2e-6 * float64(k), Rtol: 1e-5})
}

// TestMatmulCoop: on an adapter whose cooperative matrices pass lomo's check,
// f16 matmuls of whole tiles run on them in every layout, with C f32 or
// f16, accumulating, batched and with a residual, within f32 accumulation's
// error of float64; every tiling gives the same bits; a shape off the tile
// falls back to matmul.wgsl.
func TestMatmulCoop(t *testing.T) {
	st := coopReady(dev)
	if !st.Usable {
		t.Skipf("cooperative-matrix matmul not usable on %q: %s", dev.Info.Name, st.Reason)
	}
	t.Logf("cooperative matrices on %s: %+v", dev.Info.Name, st)
	s := st.Fragment
	for ci, tc := range []struct {
		m, n, k, batches int
		ta, tb           bool
		ct, rt           gpu.DType // C; R (F32 with residual set)
		beta             float64
		residual         bool
	}{
		{4 * s, 8 * s, 6 * s, 1, false, true, gpu.F32, 0, 0, false},  // x·Wᵀ
		{4 * s, 8 * s, 6 * s, 1, false, false, gpu.F16, 0, 0, false}, // dy·W
		{8 * s, 8 * s, 4 * s, 1, true, false, gpu.F32, 0, 1, false},  // dyᵀ·x, accumulating
		{4 * s, 4 * s, 2 * s, 2, true, true, gpu.F16, 0, 0, false},
		{4 * s, 8 * s, 6 * s, 1, false, true, gpu.F16, gpu.F16, 0, true}, // o_proj with the residual
	} {
		t.Run(fmt.Sprintf("M%d_N%d_K%d_b%d_%s_c%v_beta%v_r%v", tc.m, tc.n, tc.k, tc.batches, layouts(tc.ta, tc.tb), tc.ct, tc.beta, tc.residual), func(t *testing.T) {
			r := rng(uint64(910 + ci))
			m, n, k, nb := tc.m, tc.n, tc.k, tc.batches
			a := roundTo(randn(r, nb*m*k, 1), gpu.F16)
			b := roundTo(randn(r, nb*n*k, 1), gpu.F16)
			c0 := roundTo(randn(r, nb*m*n, 1), tc.ct)
			A := Mat{Buf: upload(t, a, gpu.F16), DType: gpu.F16, Batch: m * k, T: tc.ta}
			B := Mat{Buf: upload(t, b, gpu.F16), DType: gpu.F16, Batch: n * k, T: tc.tb}
			var R *Mat
			if tc.residual {
				R = &Mat{Buf: upload(t, c0, tc.rt), DType: tc.rt}
			}
			var got []float64
			for ti, tile := range CoopTiles {
				var cb *gpu.Buffer
				if tc.beta != 0 {
					cb = upload(t, c0, tc.ct)
				} else {
					cb = outputOf(t, nb*m*n, tc.ct)
				}
				C := Mat{Buf: cb, DType: tc.ct, Batch: m * n}
				if err := matmulCoop(dev, st, tile, C, A, B, R, m, n, k, nb, 1, float32(tc.beta)); err != nil {
					t.Fatal(err)
				}
				c := download(t, cb, nb*m*n, tc.ct)
				if ti == 0 {
					got = c
					continue
				}
				assertSameBits(t, fmt.Sprintf("C of %s against %s", tile.Name(s), CoopTiles[0].Name(s)), c, got)
			}
			beta := tc.beta
			if tc.residual {
				beta = 1
			}
			var want []float64
			for z := 0; z < nb; z++ {
				want = append(want, refMatmul(a[z*m*k:], b[z*k*n:], c0[z*m*n:], m, n, k, tc.ta, tc.tb, 1, beta)...)
			}
			// The products of f16 values are exact in f32; the sums are f32
			// in the hardware's order, as matmul.wgsl's error bound; a 16-bit
			// C adds its rounding.
			tl := tol{Atol: 2e-6 * float64(k), Rtol: 1e-5}
			if tc.ct != gpu.F32 {
				tl.Rtol += rounding(tc.ct)
			}
			assertClose(t, "C", got, want, tl)

			// Matmul routes the call to the cooperative kernel.
			cb := outputOf(t, nb*m*n, tc.ct)
			if tc.beta != 0 {
				cb = upload(t, c0, tc.ct)
			}
			C := Mat{Buf: cb, DType: tc.ct, Batch: m * n}
			var err error
			if tc.residual {
				err = MatmulAdd(dev, C, A, B, *R, m, n, k, nb, 1)
			} else {
				err = Matmul(dev, C, A, B, m, n, k, nb, 1, float32(tc.beta))
			}
			if err != nil {
				t.Fatal(err)
			}
			assertSameBits(t, "C of Matmul against the cooperative kernel", download(t, cb, nb*m*n, tc.ct), got)
		})
	}
	// A shape off the tile runs on matmul.wgsl: the bits of its tiling.
	m, n, k := 4*s+1, 8*s, 4*s
	r := rng(930)
	a, b := roundTo(randn(r, m*k, 1), gpu.F16), roundTo(randn(r, n*k, 1), gpu.F16)
	A, B := Mat{Buf: upload(t, a, gpu.F16), DType: gpu.F16}, Mat{Buf: upload(t, b, gpu.F16), DType: gpu.F16, T: true}
	c1, c2 := outputOf(t, m*n, gpu.F32), outputOf(t, m*n, gpu.F32)
	if err := Matmul(dev, Mat{Buf: c1}, A, B, m, n, k, 1, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := MatmulTiled(dev, ChooseTile(dev, m, n, k), Mat{Buf: c2}, A, B, m, n, k, 1, 1, 0); err != nil {
		t.Fatal(err)
	}
	assertSameBits(t, "C of a shape off the cooperative tile", download(t, c1, m*n, gpu.F32), download(t, c2, m*n, gpu.F32))
}

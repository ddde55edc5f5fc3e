package wgsl

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

// refMatmul: C = alpha*op(A)·op(B) + beta*C0 in float64, one batch, with the
// storage layouts of matmul.wgsl.
func refMatmul(a, b, c0 []float64, m, n, k int, ta, tb bool, alpha, beta float64) []float64 {
	c := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			s := 0.0
			for l := 0; l < k; l++ {
				av := a[i*k+l]
				if ta {
					av = a[l*m+i]
				}
				bv := b[l*n+j]
				if tb {
					bv = b[j*k+l]
				}
				s += av * bv
			}
			c[i*n+j] = alpha * s
			if beta != 0 {
				c[i*n+j] += beta * c0[i*n+j]
			}
		}
	}
	return c
}

func TestMatmulParamsLayout(t *testing.T) {
	// Params in matmul.wgsl: 16 scalars of 4 bytes.
	if got := unsafe.Sizeof(MatmulParams{}); got != 64 {
		t.Errorf("MatmulParams is %d bytes, WGSL Params is 64", got)
	}
	if got := unsafe.Offsetof(MatmulParams{}.Alpha); got != 48 {
		t.Errorf("Alpha at %d, WGSL at 48", got)
	}
}

func TestMatmul(t *testing.T) {
	cases := []struct {
		m, n, k, batches int
		ta, tb           bool
		bt               gpu.DType
		alpha, beta      float64
		at, ct           gpu.DType // A and C (f32 unless given)
	}{
		{1, 1, 1, 1, false, false, gpu.F32, 1, 0, gpu.F32, gpu.F32},
		{3, 5, 7, 1, false, false, gpu.F32, 1, 0, gpu.F32, gpu.F32},
		{64, 64, 16, 1, false, false, gpu.F32, 1, 0, gpu.F32, gpu.F32},
		{65, 33, 17, 1, false, true, gpu.F32, 1, 0, gpu.F32, gpu.F32},   // x·Wᵀ
		{17, 70, 65, 1, true, false, gpu.F32, 1, 0, gpu.F32, gpu.F32},   // dyᵀ·x
		{31, 9, 40, 1, false, false, gpu.F32, 0.5, 1, gpu.F32, gpu.F32}, // accumulate
		{13, 29, 11, 3, false, false, gpu.F32, 1, 0, gpu.F32, gpu.F32},  // batched
		{20, 37, 23, 1, false, true, gpu.F16, 1, 0, gpu.F32, gpu.F32},   // f16 weights
		{21, 6, 19, 2, false, false, gpu.F16, 2, 0.5, gpu.F32, gpu.F32},
		{130, 70, 100, 1, true, true, gpu.F32, 1, 0, gpu.F32, gpu.F32},
		// 16-bit activations: A, C or all three f16.
		{65, 33, 17, 1, false, true, gpu.F16, 1, 0, gpu.F16, gpu.F16},   // x·Wᵀ
		{17, 70, 65, 1, true, false, gpu.F32, 1, 0, gpu.F16, gpu.F32},   // dyᵀ·x, f32 result
		{31, 9, 40, 1, false, false, gpu.F16, 0.5, 1, gpu.F32, gpu.F16}, // accumulate into f16
		{13, 29, 11, 3, false, false, gpu.F16, 1, 0, gpu.F16, gpu.F16},  // batched
		// Whole tiles of every tiling (no bounds checks compiled), in the
		// three layouts of a linear layer's forward and backward.
		{128, 128, 16, 1, false, true, gpu.F16, 1, 0, gpu.F16, gpu.F16},  // x·Wᵀ
		{128, 128, 32, 1, false, false, gpu.F16, 1, 0, gpu.F16, gpu.F16}, // dy·W
		{128, 256, 16, 1, true, false, gpu.F16, 1, 1, gpu.F16, gpu.F16},  // dyᵀ·x, accumulating
		{256, 128, 16, 2, true, true, gpu.F32, 1, 0, gpu.F32, gpu.F32},
		// Whole tiles in M and N, not in K; and in K only.
		{128, 128, 13, 1, false, true, gpu.F32, 1, 0, gpu.F32, gpu.F32},
		{100, 60, 32, 1, false, true, gpu.F32, 1, 0, gpu.F32, gpu.F32},
		// bf16 models: weights, activations and results; odd N puts two
		// threads' elements in one u32 pair of C.
		{65, 33, 17, 1, false, true, gpu.BF16, 1, 0, gpu.BF16, gpu.BF16},   // x·Wᵀ
		{17, 70, 65, 1, true, false, gpu.BF16, 1, 0, gpu.BF16, gpu.BF16},   // dyᵀ·x
		{31, 9, 40, 1, false, false, gpu.BF16, 0.5, 1, gpu.BF16, gpu.BF16}, // accumulate into bf16
		{13, 29, 11, 3, false, false, gpu.BF16, 1, 0, gpu.F32, gpu.BF16},   // batched
		{128, 256, 16, 1, true, false, gpu.BF16, 1, 1, gpu.BF16, gpu.BF16}, // whole tiles, accumulating
	}
	// Every case runs the tilings ChooseTile picks from; every tiling runs
	// the f32 cases (every layout, with and without bounds checks) and the
	// cases of whole 128 x 128 tiles. The tilings differ only in how the
	// loop nest is blocked (the loads and stores of each dtype are the same
	// functions in all), and their pipelines take most of this test's time,
	// in the browser above all. With -short (the browser's run,
	// e2e/kernels.test.mjs) every tiling runs only the f32 case of whole
	// tiles: CPU adapters, SwiftShader among them, run ChooseTile's
	// tilings unless tuned, and the native runs check them all.
	chosen := []Tile{Tile64, Tile128, Tile64x8} // what ChooseTile returns on some adapter
	for ci, tc := range cases {
		tiles := chosen
		f32 := tc.at == gpu.F32 && tc.bt == gpu.F32 && tc.ct == gpu.F32
		whole := tc.m%128 == 0 && tc.n%128 == 0
		if !testing.Short() && (f32 || whole) || f32 && whole {
			tiles = Tiles
		}
		name := fmt.Sprintf("M%d_N%d_K%d_b%d_ta%v_tb%v_%v_beta%v_a%v_c%v", tc.m, tc.n, tc.k, tc.batches, tc.ta, tc.tb, tc.bt, tc.beta, tc.at, tc.ct)
		t.Run(name, func(t *testing.T) {
			needF16(t, tc.ct)
			r := rng(uint64(ci))
			m, n, k, nb := tc.m, tc.n, tc.k, tc.batches
			a := roundTo(randn(r, nb*m*k, 1), tc.at)
			b := roundTo(randn(r, nb*n*k, 1), tc.bt)
			c0 := roundTo(randn(r, nb*m*n, 1), tc.ct)
			ab := upload(t, a, tc.at)
			bb := upload(t, b, tc.bt)
			// Every tiling gives the same bits (one fma per k, in order);
			// the first is checked against float64.
			var got []float64
			for ti, tile := range tiles {
				var cb *gpu.Buffer
				if tc.beta != 0 {
					cb = upload(t, c0, tc.ct)
				} else {
					cb = outputOf(t, nb*m*n, tc.ct)
				}
				err := MatmulTiled(dev, tile, Mat{Buf: cb, DType: tc.ct, Batch: m * n}, Mat{Buf: ab, DType: tc.at, Batch: m * k, T: tc.ta},
					Mat{Buf: bb, DType: tc.bt, Batch: k * n, T: tc.tb}, m, n, k, nb, float32(tc.alpha), float32(tc.beta))
				if err != nil {
					t.Fatal(err)
				}
				c := download(t, cb, nb*m*n, tc.ct)
				if ti == 0 {
					got = c
					continue
				}
				assertSameBits(t, fmt.Sprintf("C of tiling %v against %v", tile, tiles[0]), c, got)
			}
			var want []float64
			for z := 0; z < nb; z++ {
				want = append(want, refMatmul(a[z*m*k:], b[z*k*n:], c0[z*m*n:], m, n, k, tc.ta, tc.tb, tc.alpha, tc.beta)...)
			}
			// f32 accumulation of k products of unit normals: error grows
			// like sqrt(k) * 2^-24 * |terms|; 1e-5 relative + 1e-5*sqrt(k).
			// A 16-bit C adds its one rounding (f16 2^-11, bf16 2^-8
			// relative).
			tl := tol{Atol: 2e-6 * float64(k), Rtol: 1e-5}
			if tc.ct != gpu.F32 {
				tl.Rtol += rounding(tc.ct)
			}
			assertClose(t, "C", got, want, tl)
		})
	}
}

func TestMatmulTiles(t *testing.T) {
	for _, tile := range Tiles {
		if got, err := ParseTile(tile.String()); err != nil || got != tile {
			t.Errorf("ParseTile(%q) = %v, %v", tile, got, err)
		}
	}
	for _, s := range []string{"128x128x8", "128x128x8/6x8", "64x64x8/8x12", "512x256x8/8x8", "axb", "128x128x12/8x8w", "64x48x16/4x4w", "256x256x64/8x8"} {
		if _, err := ParseTile(s); err == nil {
			t.Errorf("ParseTile(%q) accepted a tiling matmul.wgsl cannot run", s)
		}
	}
}

// TestMatmulAdd: C = alpha·op(A)·op(B) + R, the residual added in the
// epilogue, in the dtypes of a linear layer's forward; every tiling the
// same bits.
func TestMatmulAdd(t *testing.T) {
	for ci, tc := range []struct {
		m, n, k, batches int
		dt, rt           gpu.DType // A, B and C; R
		alpha            float64
	}{
		{33, 20, 17, 1, gpu.F32, gpu.F32, 1},
		{65, 130, 24, 2, gpu.F32, gpu.F32, 0.5},
		{20, 37, 23, 1, gpu.F16, gpu.F16, 1},
		{65, 33, 17, 1, gpu.BF16, gpu.BF16, 1},
		{128, 128, 16, 1, gpu.BF16, gpu.F32, 1},
	} {
		t.Run(fmt.Sprintf("M%d_N%d_K%d_b%d_%v_r%v", tc.m, tc.n, tc.k, tc.batches, tc.dt, tc.rt), func(t *testing.T) {
			needF16(t, tc.dt, tc.rt)
			r := rng(uint64(500 + ci))
			m, n, k, nb := tc.m, tc.n, tc.k, tc.batches
			a := roundTo(randn(r, nb*m*k, 1), tc.dt)
			b := roundTo(randn(r, nb*n*k, 1), tc.dt)
			res := roundTo(randn(r, nb*m*n, 1), tc.rt)
			ab, bb, rb := upload(t, a, tc.dt), upload(t, b, tc.dt), upload(t, res, tc.rt)
			var got []float64
			for ti, tile := range []Tile{Tile64, Tile128} {
				cb := outputOf(t, nb*m*n, tc.dt)
				err := matmul(dev, tile, Mat{Buf: cb, DType: tc.dt}, Mat{Buf: ab, DType: tc.dt, Batch: m * k}, Mat{Buf: bb, DType: tc.dt, Batch: n * k, T: true},
					fusion{r: &Mat{Buf: rb, DType: tc.rt}}, m, n, k, nb, float32(tc.alpha), 0)
				if err != nil {
					t.Fatal(err)
				}
				c := download(t, cb, nb*m*n, tc.dt)
				if ti == 0 {
					got = c
					continue
				}
				assertSameBits(t, fmt.Sprintf("C of tiling %v against %v", tile, Tile64), c, got)
			}
			var want []float64
			for z := 0; z < nb; z++ {
				want = append(want, refMatmul(a[z*m*k:], b[z*k*n:], res[z*m*n:], m, n, k, false, true, tc.alpha, 1)...)
			}
			tl := tol{Atol: 2e-6 * float64(k), Rtol: 1e-5}
			if tc.dt != gpu.F32 {
				tl.Rtol += rounding(tc.dt)
			}
			assertClose(t, "C", got, want, tl)
		})
	}
	c, a := output(t, 4), upload(t, make([]float64, 4), gpu.F32)
	if err := MatmulAdd(dev, Mat{Buf: c}, Mat{Buf: a}, Mat{Buf: a}, Mat{Buf: c}, 2, 2, 2, 1, 1); err == nil {
		t.Error("MatmulAdd with R = C succeeded")
	}
	if err := MatmulAdd(dev, Mat{Buf: c}, Mat{Buf: a}, Mat{Buf: a}, Mat{Buf: output(t, 3)}, 2, 2, 2, 1, 1); err == nil {
		t.Error("MatmulAdd with R shorter than C succeeded")
	}
}

func TestMatmulRejectsShortBuffers(t *testing.T) {
	a := upload(t, make([]float64, 6), gpu.F32)
	c := output(t, 4)
	if err := Matmul(dev, Mat{Buf: c}, Mat{Buf: a}, Mat{Buf: a}, 2, 2, 4, 1, 1, 0); err == nil {
		t.Error("matmul with A too small for (2,4) succeeded")
	}
}

// TestMatmulLeadingDimension: operands that are blocks of wider stored
// matrices (Mat.LD, with an offset) give the product of the blocks, in both
// layouts of each operand, with every tiling (with -short, as in
// TestMatmul, those ChooseTile picks from: each is a pipeline that takes
// seconds to compile in the browser's SwiftShader).
func TestMatmulLeadingDimension(t *testing.T) {
	const m, n, k = 70, 9, 13
	const wide = 150 // stored width of the wider matrices
	tiles := Tiles
	if testing.Short() {
		tiles = []Tile{Tile64, Tile128, Tile64x8}
	}
	for _, ta := range []bool{false, true} {
		for _, tb := range []bool{false, true} {
			r := rng(91)
			// A's block: op(A) (m,k) at offset 3 of a stored matrix whose
			// rows are wide apart; the same for B at offset 5.
			aRows, aW, bRows, bW := m, k, k, n
			if ta {
				aRows, aW = k, m
			}
			if tb {
				bRows, bW = n, k
			}
			aStore := randn(r, aRows*wide, 1)
			bStore := randn(r, bRows*wide, 1)
			aBlock, bBlock := make([]float64, aRows*aW), make([]float64, bRows*bW)
			for i := 0; i < aRows; i++ {
				copy(aBlock[i*aW:(i+1)*aW], aStore[i*wide+3:])
			}
			for i := 0; i < bRows; i++ {
				copy(bBlock[i*bW:(i+1)*bW], bStore[i*wide+5:])
			}
			want := refMatmul(aBlock, bBlock, nil, m, n, k, ta, tb, 1, 0)
			for _, tile := range tiles {
				cb := outputOf(t, m*n, gpu.F32)
				if err := MatmulTiled(dev, tile, Mat{Buf: cb}, Mat{Buf: upload(t, aStore, gpu.F32), Off: 3, LD: wide, T: ta},
					Mat{Buf: upload(t, bStore, gpu.F32), Off: 5, LD: wide, T: tb}, m, n, k, 1, 1, 0); err != nil {
					t.Fatal(err)
				}
				assertClose(t, fmt.Sprintf("C ta=%v tb=%v %v", ta, tb, tile), download(t, cb, m*n, gpu.F32), want, tol{Atol: 2e-6 * k, Rtol: 1e-5})
			}
		}
	}
	a := upload(t, make([]float64, 40), gpu.F32)
	if err := Matmul(dev, Mat{Buf: output(t, 4)}, Mat{Buf: a, LD: 3}, Mat{Buf: a}, 2, 2, 4, 1, 1, 0); err == nil {
		t.Error("A with rows 3 apart for a width of 4 accepted")
	}
	if err := Matmul(dev, Mat{Buf: output(t, 4)}, Mat{Buf: a, LD: 38}, Mat{Buf: a}, 2, 2, 4, 1, 1, 0); err == nil {
		t.Error("A whose second row (at 38) runs past its 40-element buffer accepted")
	}
}

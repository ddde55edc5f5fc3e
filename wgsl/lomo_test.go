package wgsl

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

// refLomo is REFERENCE §1.4 in float64: the new parameter values (before
// rounding to the storage dtype).
func refLomo(param, grad []float64, s LomoStep) []float64 {
	lr, wd := float64(s.LR), float64(s.WeightDecay)
	out := make([]float64, len(param))
	for i := range param {
		g := grad[i] * float64(s.InvScale)
		if s.ClipValue > 0 {
			c := float64(s.ClipValue)
			g = math.Max(-c, math.Min(c, g))
		}
		g *= float64(s.ClipCoef)
		p := param[i]
		if wd > 0 {
			p *= 1 - lr*wd
		}
		out[i] = p - lr*g
	}
	return out
}

func TestLomoParamsLayout(t *testing.T) {
	// Params in lomo.wgsl: n, lr, weight_decay, inv_scale, clip_value,
	// clip_coef, cols, rows_off, seed, 3 pads.
	if got := unsafe.Sizeof(LomoParams{}); got != 48 {
		t.Errorf("LomoParams is %d bytes, WGSL Params is 48", got)
	}
	if got := unsafe.Offsetof(LomoParams{}.Seed); got != 32 {
		t.Errorf("Seed at %d, WGSL at 32", got)
	}
	if got := unsafe.Offsetof(LomoParams{}.ClipValue); got != 16 {
		t.Errorf("ClipValue at %d, WGSL at 16", got)
	}
	if got := unsafe.Offsetof(LomoParams{}.ClipCoef); got != 20 {
		t.Errorf("ClipCoef at %d, WGSL at 20", got)
	}
}

func TestLomoUpdate(t *testing.T) {
	plain := LomoStep{LR: 0.01, InvScale: 1, ClipCoef: 1}
	// Loss scale 1024, value clip active on about a third of the elements,
	// decoupled weight decay and a norm-clip coefficient.
	all := LomoStep{LR: 0.03, WeightDecay: 0.1, InvScale: 1.0 / 1024, ClipValue: 1, ClipCoef: 0.7}
	cases := []struct {
		pt    gpu.DType
		n     int
		gs    float64 // gradient scale (the loss scale the gradient carries)
		step  LomoStep
		label string
	}{
		{gpu.F32, 1, 1, plain, "plain"},
		{gpu.F32, 257, 1, plain, "plain"},
		{gpu.F32, 4097, 1024, all, "all"},
		{gpu.F32, 1000, 1024, LomoStep{LR: 0.05, InvScale: 1.0 / 1024, ClipValue: 0.5, ClipCoef: 1}, "clip_only"},
		{gpu.F32, 999, 1, LomoStep{LR: 0.02, WeightDecay: 0.5, InvScale: 1, ClipCoef: 0.25}, "wd_coef"},
		{gpu.F16, 1, 1, plain, "plain"},
		{gpu.F16, 2, 1, plain, "plain"},
		{gpu.F16, 257, 1024, all, "all"},
		{gpu.F16, 4096, 1024, all, "all"},
		{gpu.F16, 1001, 1, LomoStep{LR: 0.02, WeightDecay: 0.5, InvScale: 1, ClipCoef: 0.25}, "wd_coef"},
		{gpu.BF16, 1, 1, plain, "plain"},
		{gpu.BF16, 2, 1, plain, "plain"},
		{gpu.BF16, 257, 1, all, "all"},
		{gpu.BF16, 4096, 1, LomoStep{LR: 0.02, WeightDecay: 0.5, InvScale: 1, ClipCoef: 0.25}, "wd_coef"},
	}
	// Each case with an f32 gradient, then with an f16 one (the gradients
	// of f16 models' matrices): the reference takes the f16 values, which
	// the kernel reads exactly, so the tolerances are the same.
	for _, gt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for ci, tc := range cases {
			name := fmt.Sprintf("%v_n%d_%s", tc.pt, tc.n, tc.label)
			if gt != gpu.F32 {
				name += "_g" + gt.String()
			}
			t.Run(name, func(t *testing.T) { testLomoUpdate(t, tc.pt, gt, tc.n, tc.gs, tc.step, uint64(400+ci)) })
		}
	}
}

// testLomoUpdate checks one LomoUpdate of n elements against refLomo.
func testLomoUpdate(t *testing.T, pt, gt gpu.DType, n int, gs float64, step LomoStep, seed uint64) {
	r := rng(seed)
	param := roundTo(randn(r, n, 1), pt)
	grad := roundTo(randn(r, n, gs), gt)
	stored := param
	if pt.Half() && n%2 == 1 {
		// The padding half of the last pair must keep its bits.
		stored = append(append([]float64(nil), param...), 7)
	}
	pb := upload(t, stored, pt)
	if err := LomoUpdate(dev, pb, upload(t, grad, gt), pt, gt, n, step); err != nil {
		t.Fatal(err)
	}
	got := download(t, pb, len(stored), pt)
	if len(stored) > n && got[n] != 7 {
		t.Errorf("padding half changed to %v", got[n])
	}
	want := refLomo(param, grad, step)
	if pt == gpu.F32 {
		// A handful of f32 roundings (g*inv, *coef, 1-lr*wd, products,
		// the difference) on a result dominated by p: ≤ ~5 ulp =
		// 3e-7 relative; atol 1e-8 covers p ≈ lr*g cancelling to ~0
		// (a few ulp of lr*g ≈ 0.01).
		assertClose(t, "param", got[:n], want, tol{Atol: 1e-8, Rtol: 1e-6})
		return
	}
	if pt == gpu.BF16 {
		// A handful of f32 roundings, as for f32 above: 1e-6 relative.
		assertBF16Neighbour(t, "param", got[:n], want, 1e-6)
		return
	}
	// f16: the f32 result is within ~1e-7 of the float64 one, then
	// pack2x16float may round to either neighbour (WGSL leaves the
	// direction to the implementation): 1 f16 ulp = 2^-10 relative
	// for normals, 2^-24 absolute for subnormals.
	assertClose(t, "param", got[:n], want, tol{Atol: math.Ldexp(1, -24), Rtol: math.Ldexp(1, -10)})
	nearest := roundTo(want, gpu.F16)
	same := 0
	for i := range nearest {
		if nearest[i] == got[i] {
			same++
		}
	}
	t.Logf("f16: %d of %d elements equal the round-to-nearest value", same, n)
}

func TestLomoUpdateRejectsBadSizes(t *testing.T) {
	p := upload(t, make([]float64, 10), gpu.F16) // 20 bytes
	g := upload(t, make([]float64, 10), gpu.F32)
	s := LomoStep{LR: 1, InvScale: 1, ClipCoef: 1}
	if err := LomoUpdate(dev, p, g, gpu.F16, gpu.F32, 11, s); err == nil {
		t.Error("11 f16 elements in a 10-element buffer accepted")
	}
	if err := LomoUpdate(dev, upload(t, make([]float64, 12), gpu.F32), p, gpu.F32, gpu.F16, 12, s); err == nil {
		t.Error("an f16 gradient of 10 elements for 12 accepted")
	}
	if err := LomoUpdate(dev, p, g, gpu.F32, gpu.F32, 10, s); err == nil {
		t.Error("10 f32 elements in a 20-byte buffer accepted")
	}
	if err := LomoUpdate(dev, g, g, gpu.F32, gpu.F32, 10, s); err == nil {
		t.Error("param aliasing grad accepted")
	}
}

// TestLomoUpdateRows: the row-sparse update equals the dense update of the
// same gradient scattered into a zero (vocab, cols) gradient, bit for bit,
// rows without a gradient included, with the row ids at an offset of their
// buffer: without weight decay (only the rows with a gradient change) and
// with it (every row decays: the whole table through the row map, where
// 16-bit rows of an odd length are allowed, since pairs need not be
// within a row; without weight decay they are refused).
func TestLomoUpdateRows(t *testing.T) {
	const vocab = 37
	rows := []uint32{0, 3, 4, 20, 36}
	for _, pt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for _, gt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
			for _, c := range []struct {
				cols int
				wd   float32
			}{{6, 0}, {6, 0.1}, {5, 0.1}} {
				t.Run(fmt.Sprintf("%v_g%v_cols%d_wd%v", pt, gt, c.cols, c.wd), func(t *testing.T) {
					cols := c.cols
					step := LomoStep{LR: 0.03, WeightDecay: c.wd, InvScale: 1.0 / 1024, ClipValue: 1, ClipCoef: 0.7, Seed: 3}
					r := rng(77)
					param := roundTo(randn(r, vocab*cols, 1), pt)
					compact := roundTo(randn(r, len(rows)*cols, 1024), gt)
					dense := make([]float64, vocab*cols)
					for i, row := range rows {
						copy(dense[int(row)*cols:(int(row)+1)*cols], compact[i*cols:(i+1)*cols])
					}
					// The rows at an offset, after two ids the update must not read.
					rb := uploadU32(t, append([]uint32{vocab + 5, 1}, rows...))
					sparse, full := upload(t, param, pt), upload(t, param, pt)
					if err := LomoUpdateRows(dev, sparse, upload(t, compact, gt), rb, 2, pt, gt, vocab, cols, len(rows), step); err != nil {
						t.Fatal(err)
					}
					if err := LomoUpdate(dev, full, upload(t, dense, gt), pt, gt, vocab*cols, step); err != nil {
						t.Fatal(err)
					}
					got := download(t, sparse, vocab*cols, pt)
					assertSameBits(t, "rows update against the dense update", got, download(t, full, vocab*cols, pt))
					changed := 0
					for i := range got {
						if got[i] != param[i] {
							changed++
						}
					}
					// Without weight decay the rows with a gradient, most
					// of their elements; with it most of the table.
					if want := len(rows) * cols / 2; c.wd > 0 {
						if want = vocab * cols / 2; changed < want {
							t.Errorf("the update with weight decay changed %d weights, want at least %d", changed, want)
						}
					} else if changed == 0 || changed > len(rows)*cols {
						t.Errorf("the update changed %d weights, want 1 to %d", changed, len(rows)*cols)
					}
					if pt.Half() && c.wd == 0 {
						if err := LomoUpdateRows(dev, sparse, upload(t, compact, gt), rb, 2, pt, gt, vocab, cols-1, len(rows), step); err == nil {
							t.Error("16-bit rows of an odd length accepted without weight decay")
						}
					}
				})
			}
		}
	}
}

// TestLomoUpdateBlock: blocks of rows that cover the table once (an LM
// head's gradient by blocks), each updated by LomoUpdateBlock with weight
// decay, give the dense update of the whole gradient, bit for bit.
func TestLomoUpdateBlock(t *testing.T) {
	const vocab, cols = 37, 6
	blocks := [][2]int{{0, 12}, {12, 30}, {30, vocab}}
	step := LomoStep{LR: 0.03, WeightDecay: 0.1, InvScale: 1.0 / 1024, ClipValue: 1, ClipCoef: 0.7, Seed: 5}
	ids := make([]uint32, vocab)
	for i := range ids {
		ids[i] = uint32(i)
	}
	rb := uploadU32(t, ids)
	for _, pt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for _, gt := range []gpu.DType{gpu.F32, gpu.F16} {
			t.Run(fmt.Sprintf("%v_g%v", pt, gt), func(t *testing.T) {
				needF16(t, pt, gt)
				r := rng(78)
				param := roundTo(randn(r, vocab*cols, 1), pt)
				grad := roundTo(randn(r, vocab*cols, 1024), gt)
				byBlocks, full := upload(t, param, pt), upload(t, param, pt)
				for _, b := range blocks {
					g := upload(t, grad[b[0]*cols:b[1]*cols], gt)
					if err := LomoUpdateBlock(dev, byBlocks, g, rb, b[0], pt, gt, vocab, cols, b[1]-b[0], step); err != nil {
						t.Fatal(err)
					}
				}
				if err := LomoUpdate(dev, full, upload(t, grad, gt), pt, gt, vocab*cols, step); err != nil {
					t.Fatal(err)
				}
				assertSameBits(t, "blocks against the dense update", download(t, byBlocks, vocab*cols, pt), download(t, full, vocab*cols, pt))
			})
		}
	}
}

// bf16Neighbours returns the bf16 values just below and just above x
// (equal when x is one), by truncating and rounding away from zero.
func bf16Neighbours(x float64) (lo, hi float64) {
	u := math.Float32bits(float32(x))
	t := float64(math.Float32frombits(u &^ 0xffff))
	if u&0xffff == 0 {
		return t, t
	}
	a := float64(math.Float32frombits((u &^ 0xffff) + 0x10000))
	return min(t, a), max(t, a)
}

// assertBF16Neighbour checks that got is one of the two bf16 neighbours of
// want (stochastic rounding picks one): the kernel's f32 result is within
// rel of the float64 want, so the neighbours of want*(1±rel) are allowed
// too.
func assertBF16Neighbour(t *testing.T, what string, got, want []float64, rel float64) {
	t.Helper()
	for i := range got {
		lo, _ := bf16Neighbours(min(want[i]*(1-rel), want[i]*(1+rel)))
		_, hi := bf16Neighbours(max(want[i]*(1-rel), want[i]*(1+rel)))
		if !(got[i] >= lo && got[i] <= hi) {
			t.Fatalf("%s[%d] = %v, want a bf16 neighbour of %v (%v..%v)", what, i, got[i], want[i], lo, hi)
		}
	}
}

// TestLomoStochasticRounding: a LOMO update of bf16 weights too small to
// survive rounding to nearest (0.3 of a bf16 ulp) moves each weight down
// by one ulp with probability 0.3, so the mean moves by the update: the
// fraction moved is within 5 standard deviations of 0.3. One seed gives
// the same weights twice; another seed other weights. The row-sparse
// update rounds the same way.
func TestLomoStochasticRounding(t *testing.T) {
	const n = 1 << 17
	const ulp = 0x1p-7 // bf16 spacing in [1, 2)
	param := slices.Repeat([]float64{1.5}, n)
	grad := slices.Repeat([]float64{1}, n)
	step := LomoStep{LR: 0.3 * ulp, InvScale: 1, ClipCoef: 1, Seed: RoundingSeed(1, 0)}
	run := func(s LomoStep, rows bool) []float64 {
		pb := upload(t, param, gpu.BF16)
		var err error
		if rows {
			// The table as n/64 rows of 64, every row in the gradient, in order.
			ids := make([]uint32, n/64)
			for i := range ids {
				ids[i] = uint32(i)
			}
			err = LomoUpdateRows(dev, pb, upload(t, grad, gpu.F32), uploadU32(t, ids), 0, gpu.BF16, gpu.F32, n/64, 64, n/64, s)
		} else {
			err = LomoUpdate(dev, pb, upload(t, grad, gpu.F32), gpu.BF16, gpu.F32, n, s)
		}
		if err != nil {
			t.Fatal(err)
		}
		return download(t, pb, n, gpu.BF16)
	}
	for _, rows := range []bool{false, true} {
		got := run(step, rows)
		down := 0
		for i, x := range got {
			switch x {
			case 1.5 - ulp:
				down++
			case 1.5:
			default:
				t.Fatalf("rows %v: param[%d] = %v, want 1.5 or 1.5 - 2^-7", rows, i, x)
			}
		}
		frac, sd := float64(down)/n, math.Sqrt(0.3*0.7/n)
		t.Logf("rows %v: %d of %d weights moved down (%.4f, expected 0.3 ± %.4f)", rows, down, n, frac, sd)
		if math.Abs(frac-0.3) > 5*sd {
			t.Errorf("rows %v: %.4f of the weights moved down, want 0.3 (± %.4f): biased rounding", rows, frac, 5*sd)
		}
		assertSameBits(t, "the same seed again", run(step, rows), got)
		other := step
		other.Seed = RoundingSeed(2, 0)
		if slices.Equal(run(other, rows), got) {
			t.Errorf("rows %v: seeds %d and %d round the same way", rows, step.Seed, other.Seed)
		}
	}
}

// TestLomoWeightCheck: with a weight check, LomoUpdate and LomoUpdateRows
// write the unchecked update's bits and flag what CheckFinite finds in the
// updated weights: nothing on a clean update, a NaN or an infinity it made
// (a NaN gradient; in f16 a weight pushed past 65504). The padding half of
// an odd-length 16-bit parameter (a NaN here) is not checked; the flag is
// never cleared.
func TestLomoWeightCheck(t *testing.T) {
	step := LomoStep{LR: 0.5, InvScale: 1, ClipCoef: 1, Seed: 3}
	for _, pt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		for _, tc := range []struct {
			name string
			n    int
			bad  float64 // a gradient value at element 4 (0: none)
			pre  uint32  // the flag before
		}{{"clean", 257, 0, 0}, {"clean_flag_set", 64, 0, 1}, {"nan_grad", 257, math.NaN(), 0}, {"overflow", 64, -1e5 * 2, 0}} {
			t.Run(fmt.Sprintf("%v_%s", pt, tc.name), func(t *testing.T) {
				r := rng(99)
				param := roundTo(randn(r, tc.n, 1), pt)
				param[4] = roundTo([]float64{65000}, pt)[0]
				grad := randn(r, tc.n, 1)
				if tc.bad != 0 {
					grad[4] = tc.bad
				}
				grad = roundTo(grad, gpu.F32)
				stored := param
				if pt.Half() && tc.n%2 == 1 {
					stored = append(append([]float64(nil), param...), math.NaN())
				}
				gb := upload(t, grad, gpu.F32)
				plain, checked := upload(t, stored, pt), upload(t, stored, pt)
				if err := LomoUpdate(dev, plain, gb, pt, gpu.F32, tc.n, step); err != nil {
					t.Fatal(err)
				}
				flags := uploadU32(t, []uint32{5, tc.pre, 6})
				cs := step
				cs.Check = &WeightCheck{Flags: flags, Index: 1}
				if err := LomoUpdate(dev, checked, gb, pt, gpu.F32, tc.n, cs); err != nil {
					t.Fatal(err)
				}
				assertSameBits(t, "checked update against unchecked", download(t, checked, tc.n, pt), download(t, plain, tc.n, pt))
				ref := uploadU32(t, []uint32{5, tc.pre, 6})
				if err := CheckFinite(dev, ref, 1, plain, pt, tc.n, 1, float32(math.Inf(1))); err != nil {
					t.Fatal(err)
				}
				got, want := reduceReadFlags(t, flags, 3), reduceReadFlags(t, ref, 3)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("flags %v, CheckFinite on the updated weights %v", got, want)
				}
				if wantBad := tc.pre == 1 || tc.name == "nan_grad" || tc.name == "overflow" && pt == gpu.F16; (got[1] == 1) != wantBad {
					t.Errorf("flag %d, want set: %v", got[1], wantBad)
				}

				// The rows update of rows 0 and 2 of a (n/cols, cols) table.
				const cols = 4
				rows := uploadU32(t, []uint32{0, 2})
				compact := append(append([]float64(nil), grad[:cols]...), grad[4:4+cols]...)
				rflags := uploadU32(t, []uint32{5, tc.pre, 6})
				rs := step
				rs.Check = &WeightCheck{Flags: rflags, Index: 1}
				table := upload(t, stored, pt)
				if err := LomoUpdateRows(dev, table, upload(t, compact, gpu.F32), rows, 0, pt, gpu.F32, tc.n/cols, cols, 2, rs); err != nil {
					t.Fatal(err)
				}
				if got := reduceReadFlags(t, rflags, 3); (got[1] == 1) != (tc.pre == 1 || tc.name == "nan_grad" || tc.name == "overflow" && pt == gpu.F16) {
					t.Errorf("rows update: flags %v", got)
				}
			})
		}
	}
	p, g := upload(t, make([]float64, 4), gpu.F32), upload(t, make([]float64, 4), gpu.F32)
	if err := LomoUpdate(dev, p, g, gpu.F32, gpu.F32, 4, LomoStep{LR: 1, InvScale: 1, ClipCoef: 1, Check: &WeightCheck{Flags: g, Index: 0}}); err == nil {
		t.Error("a weight check into the gradient's buffer succeeded")
	}
}

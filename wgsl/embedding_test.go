package wgsl

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

// refEmbedding: out row i = table row ids[i], zeros for ids >= vocab.
func refEmbedding(table []float64, ids []uint32, c, vocab int) []float64 {
	out := make([]float64, len(ids)*c)
	for i, id := range ids {
		if int(id) < vocab {
			copy(out[i*c:(i+1)*c], table[int(id)*c:(int(id)+1)*c])
		}
	}
	return out
}

// refEmbeddingBackward: dtable = dtable0 (or zeros if nil) + the rows of
// dout summed into the rows their ids name; ids >= vocab skipped.
func refEmbeddingBackward(dout []float64, ids []uint32, c, vocab int, dtable0 []float64) []float64 {
	dt := make([]float64, vocab*c)
	copy(dt, dtable0)
	for i, id := range ids {
		if int(id) >= vocab {
			continue
		}
		for j := 0; j < c; j++ {
			dt[int(id)*c+j] += dout[i*c+j]
		}
	}
	return dt
}

// embeddingIDs draws n ids below vocab (so repeats when n > vocab or by
// chance), then replaces every 7th by an out-of-range id if oob.
func embeddingIDs(seed uint64, n, vocab int, oob bool) []uint32 {
	r := rng(seed)
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = uint32(r.IntN(vocab))
		if oob && i%7 == 3 {
			ids[i] = []uint32{uint32(vocab), math.MaxUint32}[i%2]
		}
	}
	return ids
}

func TestEmbeddingParamsLayout(t *testing.T) {
	// Params in embedding.wgsl: n, c, vocab, padding; 4 bytes each.
	if got := unsafe.Sizeof(EmbeddingParams{}); got != 16 {
		t.Errorf("EmbeddingParams is %d bytes, WGSL Params is 16", got)
	}
	if got := unsafe.Offsetof(EmbeddingParams{}.Vocab); got != 8 {
		t.Errorf("Vocab at %d, WGSL at 8", got)
	}
}

var embeddingCases = []struct {
	n, c, vocab int
	tt          gpu.DType
	oob         bool
	xt          gpu.DType // out and dout
}{
	{1, 1, 1, gpu.F32, false, gpu.F32},
	{5, 7, 3, gpu.F16, false, gpu.F32},   // odd c: f16 pairs straddle rows
	{37, 64, 50, gpu.F32, true, gpu.F32}, // out-of-range ids
	{300, 3, 11, gpu.F16, true, gpu.F32}, // 900 elements; 300 ids: 4 full tiles + 44
	{20, 130, 1000, gpu.F32, false, gpu.F32},
	{130, 65, 9, gpu.F32, false, gpu.F32}, // many repeats, columns past one workgroup
	{5, 7, 3, gpu.F16, false, gpu.F16},    // 16-bit activations
	{130, 65, 9, gpu.F16, true, gpu.F16},
	{5, 7, 3, gpu.BF16, false, gpu.BF16}, // bf16 models: odd c, pairs straddle rows
	{130, 65, 9, gpu.BF16, true, gpu.BF16},
	{300, 3, 11, gpu.BF16, true, gpu.F32},
}

func TestEmbeddingForward(t *testing.T) {
	for ci, tc := range embeddingCases {
		t.Run(fmt.Sprintf("N%d_C%d_V%d_%v_oob%v_x%v", tc.n, tc.c, tc.vocab, tc.tt, tc.oob, tc.xt), func(t *testing.T) {
			needF16(t, tc.xt)
			r := rng(uint64(800 + ci))
			table := roundTo(randn(r, tc.vocab*tc.c, 1), tc.tt)
			ids := embeddingIDs(uint64(ci), tc.n, tc.vocab, tc.oob)
			// The buffer holds one more row than the table, of ones: an id
			// of vocab would read it rather than a zero of robust access.
			guard := append(slices.Clone(table), slices.Repeat([]float64{1}, tc.c)...)
			tb, ib := upload(t, guard, tc.tt), uploadU32(t, ids)
			ob := outputOf(t, tc.n*tc.c, tc.xt)
			if err := EmbeddingForward(dev, ob, tb, ib, tc.tt, tc.xt, tc.n, tc.c, tc.vocab); err != nil {
				t.Fatal(err)
			}
			// A copy (f16 -> f32 widening is exact; the f16 tables of the
			// f16 cases round to f16 exactly): equal, no tolerance.
			assertClose(t, "out", download(t, ob, tc.n*tc.c, tc.xt), refEmbedding(table, ids, tc.c, tc.vocab), tol{})
		})
	}
}

func TestEmbeddingBackward(t *testing.T) {
	for ci, tc := range embeddingCases {
		for _, acc := range []bool{false, true} {
			t.Run(fmt.Sprintf("N%d_C%d_V%d_oob%v_acc%v_x%v", tc.n, tc.c, tc.vocab, tc.oob, acc, tc.xt), func(t *testing.T) {
				needF16(t, tc.xt)
				r := rng(uint64(900 + ci))
				ids := embeddingIDs(uint64(ci), tc.n, tc.vocab, tc.oob)
				dout := roundTo(randn(r, tc.n*tc.c, 1), tc.xt)
				var dt0 []float64
				if acc {
					dt0 = roundTo(randn(r, tc.vocab*tc.c, 1), gpu.F32)
				}
				// dtable's buffer holds one guard row of sevens past the
				// table, which an id of vocab would hit (robust access
				// would silently drop a write outside the buffer).
				initial := slices.Repeat([]float64{math.NaN()}, tc.vocab*tc.c) // the zeroing must clear it
				if acc {
					initial = slices.Clone(dt0)
				}
				initial = append(initial, slices.Repeat([]float64{7}, tc.c)...)
				db := outputWith(t, initial)
				ob, ib := upload(t, dout, tc.xt), uploadU32(t, ids)
				if err := EmbeddingBackward(dev, db, ob, ib, tc.xt, tc.n, tc.c, tc.vocab, acc); err != nil {
					t.Fatal(err)
				}
				got := download(t, db, (tc.vocab+1)*tc.c, gpu.F32)
				want := append(refEmbeddingBackward(dout, ids, tc.c, tc.vocab, dt0), initial[tc.vocab*tc.c:]...)
				// Element (v, j) is a chain of f32 adds, one per occurrence
				// m of v in ids: the error is at most m roundings of the
				// running sum, bounded by m * 2^-24 * (|dt0| + sum |terms|).
				count := make([]int, tc.vocab+1)
				for _, id := range ids {
					if int(id) < tc.vocab {
						count[id]++
					}
				}
				abs := refEmbeddingBackward(embeddingAbs(dout), ids, tc.c, tc.vocab, embeddingAbs(dt0))
				bound := make([]float64, len(want)) // 0 on the guard row
				for i := range abs {
					bound[i] = float64(count[i/tc.c]) * 0x1p-24 * abs[i]
				}
				rmsnormWithin(t, "dtable", got, want, bound)

				// Run again on the same input: bitwise the same result.
				db = outputWith(t, initial)
				if err := EmbeddingBackward(dev, db, ob, ib, tc.xt, tc.n, tc.c, tc.vocab, acc); err != nil {
					t.Fatal(err)
				}
				if again := download(t, db, tc.vocab*tc.c, gpu.F32); !slices.Equal(again, got[:tc.vocab*tc.c]) {
					t.Error("dtable differs between two runs on the same input")
				}
			})
		}
	}
}

func embeddingAbs(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Abs(x)
	}
	return out
}

// TestEmbeddingBackwardCentralDiff: with L = sum(embedding(table) * g),
// dL/dtable by central differences of the float64 forward equals the
// scatter-add of g (repeated ids included), and so does the kernel.
func TestEmbeddingBackwardCentralDiff(t *testing.T) {
	n, c, vocab := 6, 3, 4
	r := rng(1000)
	table := randn(r, vocab*c, 1)
	g := roundTo(randn(r, n*c, 1), gpu.F32)
	ids := []uint32{2, 0, 2, 3, 2, 7} // 2 three times, 1 never, 7 out of range
	num := centralDiff(func(tt []float64) float64 { return dot(refEmbedding(tt, ids, c, vocab), g) }, table, 1e-3)
	// L is linear in the table: exact up to float64 cancellation (~1e-12).
	assertClose(t, "ref backward vs central diff", refEmbeddingBackward(g, ids, c, vocab, nil), num, tol{Atol: 1e-9, Rtol: 1e-9})
	db := output(t, vocab*c)
	if err := EmbeddingBackward(dev, db, upload(t, g, gpu.F32), uploadU32(t, ids), gpu.F32, n, c, vocab, false); err != nil {
		t.Fatal(err)
	}
	// Sums of at most three f32 terms of unit scale: 3 roundings, < 1e-6.
	assertClose(t, "kernel backward vs central diff", download(t, db, vocab*c, gpu.F32), num, tol{Atol: 1e-6, Rtol: 1e-6})
}

func TestEmbeddingRejects(t *testing.T) {
	table := output(t, 12)
	ids := uploadU32(t, []uint32{0, 1, 2})
	out := output(t, 9)
	if err := EmbeddingForward(dev, out, table, ids, gpu.F32, gpu.F32, 3, 4, 3); err == nil {
		t.Error("forward with out too small for (3,4) succeeded")
	}
	if err := EmbeddingForward(dev, out, table, ids, gpu.F32, gpu.F32, 3, 3, 5); err == nil {
		t.Error("forward with table too small for (5,3) succeeded")
	}
	if err := EmbeddingForward(dev, out, table, ids, gpu.F32, gpu.F32, 4, 2, 3); err == nil {
		t.Error("forward with ids too short for 4 succeeded")
	}
	if err := EmbeddingBackward(dev, table, out, ids, gpu.F32, 3, 3, 5, false); err == nil {
		t.Error("backward with dtable too small for (5,3) succeeded")
	}
	if err := EmbeddingBackward(dev, table, table, ids, gpu.F32, 3, 3, 4, true); err == nil {
		t.Error("backward with dtable == dout succeeded")
	}
	sync(t)
}

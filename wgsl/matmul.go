package wgsl

import (
	"fmt"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

// MatmulParams mirrors Params in matmul.wgsl.
type MatmulParams struct {
	M, N, K, LDA, LDB, AOff, BOff, COff uint32
	ABatch, BBatch, CBatch, _           uint32
	Alpha, Beta                         float32
	_, _                                uint32
}

// Mat describes how an operand is laid out in its buffer.
type Mat struct {
	Buf   *gpu.Buffer
	DType gpu.DType // F16 for A and C needs shader-f16 (see dtypeSubst)
	Off   int       // element offset of the first batch
	Batch int       // elements between batches (0: the same matrix for all)
	T     bool      // stored transposed (see matmul.wgsl)
	// LD is the number of elements between stored rows, for A and B: 0 for
	// the stored width (K, or M transposed, for A; N, or K transposed,
	// for B), more for a block of a wider matrix. C is always dense.
	LD int
}

// ld returns x's leading dimension for a stored width w, and checks it.
func (x Mat) ld(name string, w int) (int, error) {
	if x.LD == 0 {
		return w, nil
	}
	if x.LD < w {
		return 0, fmt.Errorf("wgsl: matmul: %s's rows are %d apart, narrower than its %d columns", name, x.LD, w)
	}
	return x.LD, nil
}

// Tile is a tiling of matmul.wgsl: a workgroup computes a BM x BN tile of
// C stepping K by BK, each thread a TM x TN block in registers; with
// Prefetch, each thread loads its share of the next step's tiles into
// registers during the current step's arithmetic. Every tiling gives the
// same bits (one fma per k, in order); they differ in speed only.
type Tile struct {
	BM, BN, BK, TM, TN int
	Prefetch           bool
}

// The tilings lomo chooses from (ChooseTile). Tile64 (4x4 results per
// thread) suits small matrices; Tile128 gives each thread 8x8 results, twice
// the arithmetic per value read from workgroup memory.
var (
	Tile64  = Tile{BM: 64, BN: 64, BK: 16, TM: 4, TN: 4}
	Tile128 = Tile{BM: 128, BN: 128, BK: 16, TM: 8, TN: 8}
	// Tiles lists the tilings benchmarks compare (lomo bench --matmul-tiles
	// all) and tests check, ChooseTile's first.
	Tiles = []Tile{Tile64, Tile128, {BM: 128, BN: 128, BK: 8, TM: 8, TN: 8}, {BM: 128, BN: 64, BK: 16, TM: 8, TN: 4}, {BM: 64, BN: 128, BK: 8, TM: 4, TN: 8},
		{BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, Prefetch: true}, {BM: 64, BN: 64, BK: 16, TM: 4, TN: 4, Prefetch: true}}
)

func (t Tile) String() string {
	s := fmt.Sprintf("%dx%dx%d/%dx%d", t.BM, t.BN, t.BK, t.TM, t.TN)
	if t.Prefetch {
		s += "p"
	}
	return s
}

// ParseTile is the inverse of Tile.String.
func ParseTile(s string) (Tile, error) {
	var t Tile
	spec, prefetch := strings.CutSuffix(s, "p")
	var rest string
	if n, _ := fmt.Sscanf(spec+"$", "%dx%dx%d/%dx%d%s", &t.BM, &t.BN, &t.BK, &t.TM, &t.TN, &rest); n != 6 || rest != "$" {
		return Tile{}, fmt.Errorf("wgsl: matmul tile %q: want BMxBNxBK/TMxTN, p appended for prefetch, e.g. %v", s, Tile128)
	}
	t.Prefetch = prefetch
	return t, t.check(256)
}

// check reports whether the tiling is valid for a device allowing
// maxThreads invocations per workgroup.
func (t Tile) check(maxThreads int) error {
	bad := func(why string) error { return fmt.Errorf("wgsl: matmul tile %v: %s", t, why) }
	switch {
	case t.TM <= 0 || t.TN <= 0 || t.BK <= 0 || t.TM%4 != 0 || t.TN%4 != 0:
		return bad("TM and TN must be positive multiples of 4")
	case t.BM <= 0 || t.BN <= 0 || t.BM%t.TM != 0 || t.BN%t.TN != 0:
		return bad("BM and BN must be multiples of TM and TN")
	}
	nt := (t.BM / t.TM) * (t.BN / t.TN)
	if nt > maxThreads {
		return bad(fmt.Sprintf("%d threads per workgroup, the device allows %d", nt, maxThreads))
	}
	if t.Prefetch && (t.BM*t.BK%nt != 0 || t.BN*t.BK%nt != 0) {
		return bad(fmt.Sprintf("prefetch needs the %d threads to share each tile evenly", nt))
	}
	return nil
}

// ChooseTile is the tiling Matmul uses for an (M,K)·(K,N) product on d:
// Tile128 where both output dimensions fill its tiles, Tile64 for smaller
// products (a LoRA rank, a decoding step), where most of a 128 x 128 tile
// would compute nothing. On lavapipe Tile128 runs at 3.7-4.6x the first
// kernel's speed at 512³ (bench/results/README.md).
func ChooseTile(d *gpu.Device, m, n, k int) Tile {
	if m >= 128 && n >= 128 {
		return Tile128
	}
	return Tile64
}

// Matmul records C = alpha * op(A)·op(B) + beta*C for `batches` batches,
// with op(A) (M,K), op(B) (K,N) and C (M,N) row-major. Each operand is f32
// or f16; arithmetic and accumulation are f32, C is rounded once. The
// tiling is ChooseTile's.
func Matmul(d *gpu.Device, c, a, b Mat, m, n, k, batches int, alpha, beta float32) error {
	return MatmulTiled(d, ChooseTile(d, m, n, k), c, a, b, m, n, k, batches, alpha, beta)
}

// MatmulTiled is Matmul with a given tiling (benchmarks and tests).
func MatmulTiled(d *gpu.Device, tile Tile, c, a, b Mat, m, n, k, batches int, alpha, beta float32) error {
	if err := f16Writable(d, "matmul", "C", c.DType); err != nil {
		return err
	}
	if m <= 0 || n <= 0 || k <= 0 || batches <= 0 {
		return fmt.Errorf("wgsl: matmul: empty shape M=%d N=%d K=%d batches=%d", m, n, k, batches)
	}
	maxThreads := int(d.Limits().MaxComputeInvocations)
	if maxThreads == 0 {
		maxThreads = 256 // WebGPU's default; a dry device reports no limits
	}
	if err := tile.check(maxThreads); err != nil {
		return err
	}
	cBatch := c.Batch
	if cBatch == 0 {
		cBatch = m * n
	}
	// Stored shapes (rows x width): A (M,K) or (K,M), B (K,N) or (N,K).
	aRows, aW, bRows, bW := m, k, k, n
	if a.T {
		aRows, aW = k, m
	}
	if b.T {
		bRows, bW = n, k
	}
	lda, err := a.ld("A", aW)
	if err != nil {
		return err
	}
	ldb, err := b.ld("B", bW)
	if err != nil {
		return err
	}
	last := func(x Mat, rows, w, ld int) int64 { return int64(x.Off + (batches-1)*x.Batch + (rows-1)*ld + w) }
	if x := last(a, aRows, aW, lda); a.DType.Bytes(int(x)) > a.Buf.Size() {
		return fmt.Errorf("wgsl: matmul: A needs %d %v elements, buffer holds fewer", x, a.DType)
	}
	if x := last(b, bRows, bW, ldb); b.DType.Bytes(int(x)) > b.Buf.Size() {
		return fmt.Errorf("wgsl: matmul: B needs %d elements, buffer holds fewer", x)
	}
	if x := int64(c.Off + (batches-1)*cBatch + m*n); c.DType.Bytes(int(x)) > c.Buf.Size() {
		return fmt.Errorf("wgsl: matmul: C needs %d %v elements, buffer holds fewer", x, c.DType)
	}
	p := MatmulParams{
		M: uint32(m), N: uint32(n), K: uint32(k), LDA: uint32(lda), LDB: uint32(ldb),
		AOff: uint32(a.Off), BOff: uint32(b.Off), COff: uint32(c.Off),
		ABatch: uint32(a.Batch), BBatch: uint32(b.Batch), CBatch: uint32(cBatch),
		Alpha: alpha, Beta: beta,
	}
	guardM, guardN, guardK := m%tile.BM != 0, n%tile.BN != 0, k%tile.BK != 0
	subst := dtypeSubst(d, nil, "A", "a", a.DType)
	dtypeSubst(d, subst, "B", "b", b.DType)
	outSubst(d, subst, "C", "c", c.DType)
	for key, v := range matmulSource(tile, a.T, b.T, guardM, guardN, guardK) {
		subst[key] = v
	}
	layout := func(t bool) string {
		if t {
			return "t"
		}
		return "n"
	}
	guards := ""
	for _, g := range []struct {
		on bool
		s  string
	}{{guardM, "m"}, {guardN, "n"}, {guardK, "k"}} {
		if g.on {
			guards += g.s
		}
	}
	if guards == "" {
		guards = "full"
	}
	variant := fmt.Sprintf("%s/%s%s/%s/%s", dtypeName("a", a.DType, "b", b.DType, "c", c.DType), layout(a.T), layout(b.T), guards, tile)
	kern, err := kernel(d, "matmul", variant, subst, []gpu.Access{rw, ro, ro}, p)
	if err != nil {
		return err
	}
	return d.Dispatch(kern, gpu.Params(p), []*gpu.Buffer{c.Buf, a.Buf, b.Buf}, uint32((n+tile.BN-1)/tile.BN), uint32((m+tile.BM-1)/tile.BM), uint32(batches))
}

// matmulSource specializes matmul.wgsl for a tiling, the layouts of A and
// B, and the dimensions that need bounds checks.
func matmulSource(t Tile, ta, tb, guardM, guardN, guardK bool) map[string]string {
	wx, wy := t.BN/t.TN, t.BM/t.TM
	s := map[string]string{
		"BM": fmt.Sprint(t.BM), "BN": fmt.Sprint(t.BN), "BK": fmt.Sprint(t.BK),
		"WX": fmt.Sprint(wx), "WY": fmt.Sprint(wy),
		"AS_LEN": fmt.Sprint(t.BK * t.BM / 4), "BS_LEN": fmt.Sprint(t.BK * t.BN / 4),
	}
	guard := func(conds ...string) string {
		if len(conds) == 0 {
			return ""
		}
		return fmt.Sprintf("if (%s) { return 0.0; }", strings.Join(conds, " || "))
	}
	var ga, gb []string
	if guardM {
		ga = append(ga, "m >= p.M")
	}
	if guardN {
		gb = append(gb, "n >= p.N")
	}
	if guardK {
		ga = append(ga, "k >= p.K")
		gb = append(gb, "k >= p.K")
	}
	s["GUARD_A"], s["GUARD_B"] = guard(ga...), guard(gb...)
	// Neighbouring threads take neighbouring elements of the stored
	// layout: along K for A (M,K) and B (N,K), along M or N otherwise.
	if ta {
		s["A_INDEX"] = "k * p.lda + m"
		s["LOAD_A"] = "\t\t\tlet kk = e / BM;\n\t\t\tlet mm = e % BM;"
	} else {
		s["A_INDEX"] = "m * p.lda + k"
		s["LOAD_A"] = "\t\t\tlet mm = e / BK;\n\t\t\tlet kk = e % BK;"
	}
	if tb {
		s["B_INDEX"] = "n * p.ldb + k"
		s["LOAD_B"] = "\t\t\tlet nn = e / BK;\n\t\t\tlet kk = e % BK;"
	} else {
		s["B_INDEX"] = "k * p.ldb + n"
		s["LOAD_B"] = "\t\t\tlet kk = e / BN;\n\t\t\tlet nn = e % BN;"
	}
	ig, jg := t.TM/4, t.TN/4
	comp := "xyzw"
	var decl, inner, store strings.Builder
	for i := 0; i < t.TM; i++ {
		for j := 0; j < jg; j++ {
			fmt.Fprintf(&decl, "\tvar acc%d_%d = vec4<f32>(0.0);\n", i, j)
		}
	}
	for i := 0; i < ig; i++ {
		fmt.Fprintf(&inner, "\t\t\tlet a%d = as_[kk * (BM / 4u) + ty + %du];\n", i, wy*i)
	}
	for j := 0; j < jg; j++ {
		fmt.Fprintf(&inner, "\t\t\tlet b%d = bs_[kk * (BN / 4u) + tx + %du];\n", j, wx*j)
	}
	for i := 0; i < t.TM; i++ {
		for j := 0; j < jg; j++ {
			fmt.Fprintf(&inner, "\t\t\tacc%d_%d = fma(vec4<f32>(a%d.%c), b%d, acc%d_%d);\n", i, j, i/4, comp[i%4], j, i, j)
		}
	}
	for i := 0; i < t.TM; i++ {
		// row (ty + WY*(i/4))*4 + i%4 of the tile
		for j := 0; j < jg; j++ {
			fmt.Fprintf(&store, "\tstore4(cbase, m0 + (ty + %du) * 4u + %du, n0 + (tx + %du) * 4u, acc%d_%d);\n", wy*(i/4), i%4, wx*j, i, j)
		}
	}
	s["ACC_DECL"], s["STORE"] = decl.String(), store.String()
	s["MAIN_LOOP"] = matmulLoop(t, s["LOAD_A"], s["LOAD_B"], inner.String())
	return s
}

// matmulLoop is the K loop: each step, the threads load the BM x BK tile
// of A and the BK x BN tile of B into workgroup memory and multiply them;
// with prefetch, a step's tiles come from registers that the previous step
// filled from global memory before its arithmetic.
func matmulLoop(t Tile, loadA, loadB, inner string) string {
	if !t.Prefetch {
		return fmt.Sprintf(`	for (var k0 = 0u; k0 < p.K; k0 += BK) {
		// NT threads load the BM x BK tile of A and the BK x BN tile of B.
		for (var e = tid; e < BM * BK; e += NT) {
%s
			as_[kk * (BM / 4u) + mm / 4u][mm %% 4u] = load_a(abase, m0 + mm, k0 + kk);
		}
		for (var e = tid; e < BN * BK; e += NT) {
%s
			bs_[kk * (BN / 4u) + nn / 4u][nn %% 4u] = load_b(bbase, k0 + kk, n0 + nn);
		}
		workgroupBarrier();
		for (var kk = 0u; kk < BK; kk++) {
%s
		}
		workgroupBarrier();
	}`, loadA, loadB, inner)
	}
	nt := (t.BM / t.TM) * (t.BN / t.TN)
	ra, rb := t.BM*t.BK/nt, t.BN*t.BK/nt
	return fmt.Sprintf(`	// Thread tid's share of a tile: elements e = tid + r*NT.
	var ra: array<f32, %[1]d>;
	var rb: array<f32, %[2]d>;
	for (var r = 0u; r < %[1]du; r++) {
		let e = tid + r * NT;
%[3]s
		ra[r] = load_a(abase, m0 + mm, kk);
	}
	for (var r = 0u; r < %[2]du; r++) {
		let e = tid + r * NT;
%[4]s
		rb[r] = load_b(bbase, kk, n0 + nn);
	}
	for (var k0 = 0u; k0 < p.K; k0 += BK) {
		for (var r = 0u; r < %[1]du; r++) {
			let e = tid + r * NT;
%[3]s
			as_[kk * (BM / 4u) + mm / 4u][mm %% 4u] = ra[r];
		}
		for (var r = 0u; r < %[2]du; r++) {
			let e = tid + r * NT;
%[4]s
			bs_[kk * (BN / 4u) + nn / 4u][nn %% 4u] = rb[r];
		}
		workgroupBarrier();
		// The next step's tiles, read while this one is multiplied.
		if (k0 + BK < p.K) {
			for (var r = 0u; r < %[1]du; r++) {
				let e = tid + r * NT;
%[3]s
				ra[r] = load_a(abase, m0 + mm, k0 + BK + kk);
			}
			for (var r = 0u; r < %[2]du; r++) {
				let e = tid + r * NT;
%[4]s
				rb[r] = load_b(bbase, k0 + BK + kk, n0 + nn);
			}
		}
		for (var kk = 0u; kk < BK; kk++) {
%[5]s
		}
		workgroupBarrier();
	}`, ra, rb, loadA, loadB, inner)
}

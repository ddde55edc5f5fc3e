package wgsl

import (
	"fmt"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

// MatmulParams mirrors Params in matmul.wgsl.
type MatmulParams struct {
	M, N, K, LDA, LDB, AOff, BOff, COff uint32
	ABatch, BBatch, CBatch, ROff        uint32
	Alpha, Beta                         float32
	Probe                               uint32 // MatmulSwiGLUGrad's epilogue writes nothing (tuning's timed runs)
	_                                   uint32
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
	// Up, for A or B, makes the operand SwiGLU's output silu(Buf)·Up
	// (Buf the gate projection g, Up the up projection u, laid out alike,
	// of dtype DType), computed as the tiles are loaded and rounded to
	// DType as SwiGLU's stored output is: the same bits as Matmul of that
	// output, which a LLaMA MLP's down projection then never stores. A
	// 16-bit DType needs the adapter to write it (shader-f16 for F16).
	Up *gpu.Buffer
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
// C stepping K by BK, each thread a TM x TN block in registers. With
// Prefetch, each thread loads its share of the next step's tiles into
// registers during the current step's arithmetic. With Wide, each thread
// loads runs of four neighbouring elements of the stored rows, and operands
// stored along K (x in x·Wᵀ, and W) are laid out in workgroup memory with
// their columns of four swizzled by k, so that the threads of a 32-wide
// warp write to 32 different banks instead of 16 threads to one. Every
// tiling gives the same bits (one fma per k, in order); they differ in
// speed only.
type Tile struct {
	BM, BN, BK, TM, TN int
	Prefetch, Wide     bool
}

// The tilings lomo chooses from (ChooseTile). Tile64 (4x4 results per
// thread) suits small matrices; Tile128 gives each thread 8x8 results, twice
// the arithmetic per value read from workgroup memory.
var (
	Tile64  = Tile{BM: 64, BN: 64, BK: 16, TM: 4, TN: 4}
	Tile128 = Tile{BM: 128, BN: 128, BK: 16, TM: 8, TN: 8}
	// Tile64x8 is Tile64 with 8x8 results per thread, 64 threads: what
	// CPU adapters get for small products (ChooseTile).
	Tile64x8 = Tile{BM: 64, BN: 64, BK: 16, TM: 8, TN: 8}
	// Tiles lists the tilings that tuning times (see tune.go; the first
	// is ChooseTile's), benchmarks compare (lomo bench --matmul-tiles all)
	// and tests check.
	Tiles = []Tile{Tile64, Tile128, {BM: 128, BN: 128, BK: 8, TM: 8, TN: 8},
		{BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, Prefetch: true}, {BM: 64, BN: 64, BK: 16, TM: 4, TN: 4, Prefetch: true},
		{BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, Wide: true}, {BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, Prefetch: true, Wide: true},
		{BM: 64, BN: 64, BK: 16, TM: 4, TN: 4, Wide: true}, Tile64x8}
)

func (t Tile) String() string {
	s := fmt.Sprintf("%dx%dx%d/%dx%d", t.BM, t.BN, t.BK, t.TM, t.TN)
	if t.Prefetch {
		s += "p"
	}
	if t.Wide {
		s += "w"
	}
	return s
}

// ParseTile is the inverse of Tile.String. It accepts the tilings that
// matmul.wgsl runs within WebGPU's largest limits (1024 threads, 64 KiB of
// workgroup memory); whether an adapter runs one is Fits.
func ParseTile(s string) (Tile, error) {
	var t Tile
	spec, wide := strings.CutSuffix(s, "w")
	spec, prefetch := strings.CutSuffix(spec, "p")
	var rest string
	if n, _ := fmt.Sscanf(spec+"$", "%dx%dx%d/%dx%d%s", &t.BM, &t.BN, &t.BK, &t.TM, &t.TN, &rest); n != 6 || rest != "$" {
		return Tile{}, fmt.Errorf("wgsl: matmul tile %q: want BMxBNxBK/TMxTN, then p for prefetch and w for wide loads, e.g. %v", s, Tile128)
	}
	t.Prefetch, t.Wide = prefetch, wide
	if err := t.check(1024, 65536); err != nil {
		return Tile{}, fmt.Errorf("%w (WebGPU's largest)", err)
	}
	return t, nil
}

// Fits says why d cannot run the tiling (nil if it can): too many threads
// or too much workgroup memory for its limits.
func (t Tile) Fits(d *gpu.Device) error {
	if err := t.check(tileLimits(d)); err != nil {
		return fmt.Errorf("%w on %s", err, d.Info.Name)
	}
	return nil
}

// check reports whether the tiling is valid for a device allowing
// maxThreads invocations and wgBytes bytes of workgroup memory per
// workgroup.
func (t Tile) check(maxThreads, wgBytes int) error {
	bad := func(why string) error { return fmt.Errorf("wgsl: matmul tile %v: %s", t, why) }
	switch {
	case t.TM <= 0 || t.TN <= 0 || t.BK <= 0 || t.TM%4 != 0 || t.TN%4 != 0:
		return bad("TM and TN must be positive multiples of 4")
	case t.BM <= 0 || t.BN <= 0 || t.BM%t.TM != 0 || t.BN%t.TN != 0:
		return bad("BM and BN must be multiples of TM and TN")
	case t.Wide && (t.BM%32 != 0 || t.BN%32 != 0 || t.BK%4 != 0 || 32%t.BK != 0):
		return bad("wide loads need BM and BN multiples of 32 and BK one of 4, 8, 16, 32")
	}
	nt := (t.BM / t.TM) * (t.BN / t.TN)
	if nt > maxThreads {
		return bad(fmt.Sprintf("%d threads per workgroup, above the limit of %d", nt, maxThreads))
	}
	if b := 4 * t.BK * (t.BM + t.BN); b > wgBytes {
		return bad(fmt.Sprintf("%d bytes of workgroup memory, above the limit of %d", b, wgBytes))
	}
	if t.Prefetch && (t.loads(t.BM)*nt*t.run() != t.BM*t.BK || t.loads(t.BN)*nt*t.run() != t.BN*t.BK) {
		return bad(fmt.Sprintf("prefetch needs the %d threads to share each tile evenly", nt))
	}
	return nil
}

// run is the elements of one load: four with Wide, else one.
func (t Tile) run() int {
	if t.Wide {
		return 4
	}
	return 1
}

// loads is how many loads each thread makes of a tile with `rows` rows of
// the output, rounded down.
func (t Tile) loads(rows int) int {
	nt := (t.BM / t.TM) * (t.BN / t.TN)
	return rows * t.BK / t.run() / nt
}

// ChooseTile is the tiling Matmul uses for an (M,K)·(K,N) product on d:
// Tile128 where both output dimensions fill its tiles, Tile64 for smaller
// products (a LoRA rank, a decoding step), where most of a 128 x 128 tile
// would compute nothing. On lavapipe Tile128 runs at 3.7-4.6x the first
// kernel's speed at 512³ (bench/results/README.md).
//
// A CPU adapter runs a workgroup's threads one SIMD group after another on
// one core: there 64 threads of 8x8 results (Tile64x8), which read half
// the workgroup memory per fma of 256 threads of 4x4 and are a quarter of
// the threads to step through, beat Tile64 everywhere (at the built-in
// model's shapes, 544 rows by 64 to 640 columns: 1.3-1.9x on lavapipe,
// 2-2.7x on Chromium's SwiftShader) and Tile128 up to 2^19 results (544 x
// 640: as fast on lavapipe, 1.5x on SwiftShader; 2048 x 256: lavapipe runs
// Tile128 1.2x faster).
func ChooseTile(d *gpu.Device, m, n, k int) Tile {
	big := m >= 128 && n >= 128
	switch {
	case d.Info.Software && !(big && m*n >= 1<<19):
		return Tile64x8
	case big:
		return Tile128
	}
	return Tile64
}

// Matmul records C = alpha * op(A)·op(B) + beta*C for `batches` batches,
// with op(A) (M,K), op(B) (K,N) and C (M,N) row-major. Each operand is f32
// or f16; arithmetic and accumulation are f32, C is rounded once. The
// tiling is ChooseTile's, or on a device that tunes, the fastest of Tiles
// for this call's dtypes, layouts and shape (tune.go); all give the same
// bits.
func Matmul(d *gpu.Device, c, a, b Mat, m, n, k, batches int, alpha, beta float32) error {
	return matmulTuned(d, c, a, b, fusion{}, m, n, k, batches, alpha, beta)
}

// MatmulAdd records C = alpha * op(A)·op(B) + R, R laid out as C (the
// residual stream added in a linear layer's epilogue: one dispatch and one
// pass over memory fewer than a matmul and an add), as Matmul otherwise.
// R and C are distinct buffers.
func MatmulAdd(d *gpu.Device, c, a, b, r Mat, m, n, k, batches int, alpha float32) error {
	if r.Buf == c.Buf {
		return fmt.Errorf("wgsl: matmul: R and C are the same buffer (add in place with beta = 1)")
	}
	return matmulTuned(d, c, a, b, fusion{r: &r}, m, n, k, batches, alpha, 0)
}

// MatmulSwiGLUGrad records the backward of h = silu(g)·u (all (M,N))
// where h's gradient dh is op(A)·op(B) (a LLaMA MLP's dy·W of the down
// projection): dg written over g and du over u, u laid out as g (its own
// Off), both of g.DType. Each dh is rounded to that dtype as a stored
// gradient is, so the results are those of Matmul into a buffer dh and
// then SwiGLUBackwardInPlace, bit for bit, without dh's M x N elements in
// memory or the two passes over them.
func MatmulSwiGLUGrad(d *gpu.Device, g, u, a, b Mat, m, n, k int) error {
	if err := checkSwiGLUGrad(g, u, a, b); err != nil {
		return err
	}
	return matmulTuned(d, g, a, b, fusion{up: &u}, m, n, k, 1, 1, 0)
}

// checkSwiGLUGrad checks MatmulSwiGLUGrad's operands.
func checkSwiGLUGrad(g, u, a, b Mat) error {
	switch {
	case g.Buf == u.Buf:
		return fmt.Errorf("wgsl: matmul: SwiGLU's g and u are one buffer")
	case u.DType != g.DType || u.T || g.T || u.LD != 0 || g.LD != 0 || u.Batch != 0 || g.Batch != 0 || u.Up != nil || g.Up != nil:
		return fmt.Errorf("wgsl: matmul: SwiGLU's u must be laid out as g, and both dense")
	case g.Buf == a.Buf || g.Buf == b.Buf || u.Buf == a.Buf || u.Buf == b.Buf:
		return fmt.Errorf("wgsl: matmul: SwiGLU's g or u is also an operand")
	}
	return nil
}

// fusion is what a matmul computes besides C = alpha*op(A)·op(B) + beta*C
// (at most one of r and up).
type fusion struct {
	r     *Mat // R added to each result (MatmulAdd)
	up    *Mat // C is g and its results dh: SwiGLU's backward (MatmulSwiGLUGrad)
	probe bool // with up: a timed run of tuning, which writes nothing
}

// matmulTuned runs matmul with ChooseTile's tiling, or on a device that
// tunes, the fastest of Tiles for this call's dtypes, layouts, fusions and
// shape (tune.go).
func matmulTuned(d *gpu.Device, c, a, b Mat, f fusion, m, n, k, batches int, alpha, beta float32) error {
	first := ChooseTile(d, m, n, k)
	if !d.Tunes() {
		return matmul(d, first, c, a, b, f, m, n, k, batches, alpha, beta)
	}
	tiles := []Tile{first}
	names := []string{first.String()}
	for _, t := range Tiles {
		if t != first && t.check(tileLimits(d)) == nil {
			tiles = append(tiles, t)
			names = append(names, t.String())
		}
	}
	key := fmt.Sprintf("matmul/%s/%s/%dx%dx%d/%d", matmulDTypes(c, a, b, f), matmulLayouts(a, b, f), m, n, k, batches)
	flops := 2 * float64(m) * float64(n) * float64(k) * float64(batches)
	run := func(i int) error { return matmul(d, tiles[i], c, a, b, f, m, n, k, batches, alpha, beta) }
	if f.up != nil {
		// The epilogue overwrites its inputs g and u: timed runs probe
		// (compute everything, write nothing), then the chosen one runs.
		probe := f
		probe.probe = true
		return tunedProbed(d, key, names, flops, func(i int) error {
			return matmul(d, tiles[i], c, a, b, probe, m, n, k, batches, alpha, beta)
		}, run, true)
	}
	// With beta = 0, C's old contents do not matter: each timed run
	// writes the same C.
	repeat := beta == 0 && c.Buf != a.Buf && c.Buf != b.Buf
	return tuned(d, key, names, repeat, flops, run)
}

// matmulDTypes names a call's dtypes for kernel variants and tuning keys.
func matmulDTypes(c, a, b Mat, f fusion) string {
	s := dtypeName("a", a.DType, "b", b.DType, "c", c.DType)
	if f.r != nil {
		s += dtypeName("r", f.r.DType)
	}
	return s
}

// matmulLayouts names the layouts of A and B (layouts) and the fusions:
// "sa" or "sb" for a SwiGLU operand, "+sg" for SwiGLU's backward.
func matmulLayouts(a, b Mat, f fusion) string {
	s := layouts(a.T, b.T)
	if a.Up != nil {
		s += "sa"
	}
	if b.Up != nil {
		s += "sb"
	}
	if f.up != nil {
		s += "+sg"
	}
	return s
}

// layouts names the layouts of A and B: n (as stored) or t (transposed).
func layouts(ta, tb bool) string {
	l := func(t bool) string {
		if t {
			return "t"
		}
		return "n"
	}
	return l(ta) + l(tb)
}

// MatmulTiled is Matmul with a given tiling (benchmarks and tests).
func MatmulTiled(d *gpu.Device, tile Tile, c, a, b Mat, m, n, k, batches int, alpha, beta float32) error {
	return matmul(d, tile, c, a, b, fusion{}, m, n, k, batches, alpha, beta)
}

// MatmulSwiGLUGradTiled is MatmulSwiGLUGrad with a given tiling (tests).
func MatmulSwiGLUGradTiled(d *gpu.Device, tile Tile, g, u, a, b Mat, m, n, k int) error {
	if err := checkSwiGLUGrad(g, u, a, b); err != nil {
		return err
	}
	return matmul(d, tile, g, a, b, fusion{up: &u}, m, n, k, 1, 1, 0)
}

// matmul records C = alpha * op(A)·op(B) + beta*C and f's fusions with the
// given tiling.
func matmul(d *gpu.Device, tile Tile, c, a, b Mat, f fusion, m, n, k, batches int, alpha, beta float32) error {
	if err := f16Writable(d, "matmul", "C", c.DType); err != nil {
		return err
	}
	if m <= 0 || n <= 0 || k <= 0 || batches <= 0 {
		return fmt.Errorf("wgsl: matmul: empty shape M=%d N=%d K=%d batches=%d", m, n, k, batches)
	}
	if err := tile.check(tileLimits(d)); err != nil {
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
	for _, x := range []struct {
		name        string
		mat         Mat
		rows, w, ld int
	}{{"A", a, aRows, aW, lda}, {"B", b, bRows, bW, ldb}} {
		e := last(x.mat, x.rows, x.w, x.ld)
		if x.mat.DType.Bytes(int(e)) > x.mat.Buf.Size() || x.mat.Up != nil && x.mat.DType.Bytes(int(e)) > x.mat.Up.Size() {
			return fmt.Errorf("wgsl: matmul: %s needs %d %v elements, buffer holds fewer", x.name, e, x.mat.DType)
		}
		if x.mat.Up != nil {
			if err := f16Writable(d, "matmul", x.name+"'s SwiGLU output", x.mat.DType); err != nil {
				return err
			}
		}
	}
	if x := int64(c.Off + (batches-1)*cBatch + m*n); c.DType.Bytes(int(x)) > c.Buf.Size() {
		return fmt.Errorf("wgsl: matmul: C needs %d %v elements, buffer holds fewer", x, c.DType)
	}
	for _, x := range []struct {
		name string
		mat  *Mat
	}{{"R", f.r}, {"SwiGLU's u", f.up}} {
		if x.mat == nil {
			continue
		}
		if x.mat.T || x.mat.LD != 0 || x.mat.Batch != 0 && x.mat.Batch != cBatch {
			return fmt.Errorf("wgsl: matmul: %s must be laid out as C", x.name)
		}
		if e := int64(x.mat.Off + (batches-1)*cBatch + m*n); x.mat.DType.Bytes(int(e)) > x.mat.Buf.Size() {
			return fmt.Errorf("wgsl: matmul: %s needs %d %v elements, buffer holds fewer", x.name, e, x.mat.DType)
		}
	}
	if f.up != nil && (f.r != nil || beta != 0 || f.up.DType != c.DType) {
		return fmt.Errorf("wgsl: matmul: SwiGLU's backward adds nothing to its results and needs u of g's dtype")
	}
	p := MatmulParams{
		M: uint32(m), N: uint32(n), K: uint32(k), LDA: uint32(lda), LDB: uint32(ldb),
		AOff: uint32(a.Off), BOff: uint32(b.Off), COff: uint32(c.Off),
		ABatch: uint32(a.Batch), BBatch: uint32(b.Batch), CBatch: uint32(cBatch),
		Alpha: alpha, Beta: beta, Probe: b2u(f.probe),
	}
	bufs := []*gpu.Buffer{c.Buf, a.Buf, b.Buf}
	access := []gpu.Access{rw, ro, ro}
	guardM, guardN, guardK := m%tile.BM != 0, n%tile.BN != 0, k%tile.BK != 0
	subst := dtypeSubst(d, nil, "A", "a", a.DType)
	dtypeSubst(d, subst, "B", "b", b.DType)
	outSubst(d, subst, "C", "c", c.DType)
	for key, v := range matmulSource(tile, a.T, b.T, guardM, guardN, guardK) {
		subst[key] = v
	}
	// The fusions' bindings follow B's, then Params.
	var decl strings.Builder
	bind := func(buf *gpu.Buffer, acc gpu.Access, name, key string, dt gpu.DType) {
		ext := map[string]string{}
		if acc == rw {
			outSubst(d, ext, key, name, dt)
		} else {
			dtypeSubst(d, ext, key, name, dt)
		}
		for k, v := range ext {
			if strings.HasPrefix(k, "\x00") {
				subst[k] = v
			}
		}
		mode := "read"
		if acc == rw {
			mode = "read_write"
		}
		fmt.Fprintf(&decl, "@group(0) @binding(%d) var<storage, %s> %s: array<%s>;\n%s\n", len(bufs), mode, name, ext[key+"_T"], ext[key+"_AT"])
		if acc == rw {
			fmt.Fprintf(&decl, "%s\n", ext[key+"_ST"])
		}
		bufs, access = append(bufs, buf), append(access, acc)
	}
	store := "var x = p.alpha * v[j];\n\t\t\tif (p.beta != 0.0) { x += p.beta * c_at(idx); }\n\t\t\t"
	switch {
	case f.r != nil:
		p.ROff = uint32(f.r.Off)
		bind(f.r.Buf, ro, "r", "R", f.r.DType)
		store += "x += r_at(idx - p.c_off + p.r_off);\n\t\t\tc_st(idx, x);"
	case f.up != nil:
		p.ROff = uint32(f.up.Off)
		bind(f.up.Buf, rw, "cu", "CU", f.up.DType)
		subst[useSwiGLU] = "1"
		store = fmt.Sprintf(`if (p.probe != 0u) { continue; }
			let ui = idx - p.c_off + p.r_off;
			let gr = swiglu_grads(c_at(idx), cu_at(ui), %s);
			c_st(idx, gr.x);
			cu_st(ui, gr.y);`, roundAs(subst, c.DType, "p.alpha * v[j]"))
	default:
		store += "c_st(idx, x);"
	}
	for _, x := range []struct {
		mat        Mat
		v, up, key string
	}{{a, "a", "au", "A"}, {b, "b", "bu", "B"}} {
		if x.mat.Up == nil {
			continue
		}
		bind(x.mat.Up, ro, x.up, strings.ToUpper(x.up), x.mat.DType)
		subst[useSwiGLU] = "1"
		// The operand's reader reads g; its SwiGLU output is what the
		// tiles load.
		subst[x.key+"_AT"] = strings.Replace(subst[x.key+"_AT"], "fn "+x.v+"_at(", "fn "+x.v+"_gate(", 1) +
			fmt.Sprintf("\nfn %s_at(i: u32) -> f32 { return %s; }", x.v, roundAs(subst, x.mat.DType, fmt.Sprintf("swiglu(%s_gate(i), %s_at(i))", x.v, x.up)))
	}
	subst["EXTRA_DECL"], subst["STORE_ELEM"] = decl.String(), store
	subst["PARAMS_BINDING"] = fmt.Sprint(len(bufs))
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
	variant := fmt.Sprintf("%s/%s/%s/%s", matmulDTypes(c, a, b, f), matmulLayouts(a, b, f), guards, tile)
	kern, err := kernel(d, "matmul", variant, subst, access, p)
	if err != nil {
		return err
	}
	return d.Dispatch(kern, gpu.Params(p), bufs, uint32((n+tile.BN-1)/tile.BN), uint32((m+tile.BM-1)/tile.BM), uint32(batches))
}

// roundAs is the WGSL expression x (an f32) rounded to dtype t as a store
// of t rounds it (dtypeSubst, outSubst: to nearest, ties to even), for a
// value a kernel uses as if it had been stored and read back; it sets in m
// what the expression needs.
func roundAs(m map[string]string, t gpu.DType, x string) string {
	switch t {
	case gpu.F16:
		m[useRoundF16] = "1"
		return fmt.Sprintf("round_f16(%s)", x)
	case gpu.BF16:
		m[useBF16] = "1"
		return fmt.Sprintf("bitcast<f32>(f32_to_bf16(%s) << 16u)", x)
	}
	return x
}

// tileLimits are the device's limits that a tiling must respect: the
// invocations and the bytes of workgroup memory per workgroup.
func tileLimits(d *gpu.Device) (maxThreads, wgBytes int) {
	l := d.Limits()
	maxThreads, wgBytes = int(l.MaxComputeInvocations), int(l.MaxComputeWorkgroupStorageSize)
	if maxThreads == 0 {
		maxThreads = 256 // WebGPU's default; a dry device reports no limits
	}
	if wgBytes == 0 {
		wgBytes = 16384
	}
	return maxThreads, wgBytes
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
	if ta {
		s["A_INDEX"] = "k * p.lda + m"
	} else {
		s["A_INDEX"] = "m * p.lda + k"
	}
	if tb {
		s["B_INDEX"] = "n * p.ldb + k"
	} else {
		s["B_INDEX"] = "k * p.ldb + n"
	}
	// A is stored along K unless transposed, B only when transposed.
	a := tileLoad{x: "a", ws: "as_", rows: "BM", org: "m0", alongK: !ta, t: t}
	b := tileLoad{x: "b", ws: "bs_", rows: "BN", org: "n0", alongK: tb, t: t}
	s["SLOTS"] = a.slot() + b.slot()
	ig, jg := t.TM/4, t.TN/4
	comp := "xyzw"
	var decl, inner, store strings.Builder
	for i := 0; i < t.TM; i++ {
		for j := 0; j < jg; j++ {
			fmt.Fprintf(&decl, "\tvar acc%d_%d = vec4<f32>(0.0);\n", i, j)
		}
	}
	for i := 0; i < ig; i++ {
		fmt.Fprintf(&inner, "\t\t\tlet a%d = as_[a_slot(kk, ty + %du)];\n", i, wy*i)
	}
	for j := 0; j < jg; j++ {
		fmt.Fprintf(&inner, "\t\t\tlet b%d = bs_[b_slot(kk, tx + %du)];\n", j, wx*j)
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
	s["MAIN_LOOP"] = matmulLoop(t, a, b, inner.String())
	return s
}

// tileLoad generates how the threads of a workgroup copy one operand's tile
// (BK values of k by `rows` values of m or n) from global to workgroup
// memory, where it is laid out [BK][rows/4] in vec4s, and how the
// arithmetic finds its columns there (x_slot).
type tileLoad struct {
	x, ws  string // a or b; its workgroup array
	rows   string // BM or BN
	org    string // the tile's first row (m0) or column (n0) of C
	alongK bool   // the operand's stored rows run along K
	t      Tile
}

// slot is the WGSL function x_slot(kk, c4): the vec4 of workgroup memory
// holding row kk's column c4 (elements 4*c4..4*c4+3). With Wide, an
// operand stored along K has c4 XOR-swizzled by kk/4: the four-element runs
// a warp writes, 32/BK rows by BK/4 runs, then fall on 32 distinct banks.
func (l tileLoad) slot() string {
	c4 := "c4"
	if l.t.Wide && l.alongK {
		c4 = fmt.Sprintf("(c4 ^ ((kk / 4u) * %du))", 32/l.t.BK)
	}
	return fmt.Sprintf("fn %s_slot(kk: u32, c4: u32) -> u32 { return kk * (%s / 4u) + %s; }\n", l.x, l.rows, c4)
}

// load returns the statements for load number e of the tile (an element,
// or with Wide four neighbouring ones), k0 being the tile's first k: pos
// finds its place, read reads it into `v` (f32 or vec4) and write stores v
// into workgroup memory. Neighbouring e read neighbouring addresses of the
// stored layout.
func (l tileLoad) load(e, k0 string) (pos, read, write string) {
	at := func(row, k string) string {
		if l.x == "a" {
			return fmt.Sprintf("load_a(abase, %s, %s)", row, k)
		}
		return fmt.Sprintf("load_b(bbase, %s, %s)", k, row)
	}
	switch {
	case !l.t.Wide && l.alongK:
		return fmt.Sprintf("let r = %s / BK; let kk = %s %% BK;", e, e),
			fmt.Sprintf("let v = %s;", at(l.org+" + r", k0+" + kk")),
			fmt.Sprintf("%s[%s_slot(kk, r / 4u)][r %% 4u] = v;", l.ws, l.x)
	case !l.t.Wide:
		return fmt.Sprintf("let kk = %s / %s; let r = %s %% %s;", e, l.rows, e, l.rows),
			fmt.Sprintf("let v = %s;", at(l.org+" + r", k0+" + kk")),
			fmt.Sprintf("%s[%s_slot(kk, r / 4u)][r %% 4u] = v;", l.ws, l.x)
	case l.alongK:
		// four k of one row: one component of four rows of workgroup memory
		var vs, ws []string
		for c := 0; c < 4; c++ {
			vs = append(vs, at(l.org+" + r", fmt.Sprintf("%s + kq + %du", k0, c)))
			ws = append(ws, fmt.Sprintf("%s[%s_slot(kq + %du, r / 4u)][r %% 4u] = v[%d];", l.ws, l.x, c, c))
		}
		return fmt.Sprintf("let r = %s / (BK / 4u); let kq = (%s %% (BK / 4u)) * 4u;", e, e),
			fmt.Sprintf("let v = vec4<f32>(%s);", strings.Join(vs, ", ")), strings.Join(ws, " ")
	default:
		// four rows of one k: one vec4 of workgroup memory
		var vs []string
		for c := 0; c < 4; c++ {
			vs = append(vs, at(fmt.Sprintf("%s + r + %du", l.org, c), k0+" + kk"))
		}
		return fmt.Sprintf("let kk = %s / (%s / 4u); let r = (%s %% (%s / 4u)) * 4u;", e, l.rows, e, l.rows),
			fmt.Sprintf("let v = vec4<f32>(%s);", strings.Join(vs, ", ")),
			fmt.Sprintf("%s[%s_slot(kk, r / 4u)] = v;", l.ws, l.x)
	}
}

// count is the number of loads that fill the tile; vtype is v's type.
func (l tileLoad) count() (string, string) {
	if l.t.Wide {
		return fmt.Sprintf("(%s * BK / 4u)", l.rows), "vec4<f32>"
	}
	return fmt.Sprintf("(%s * BK)", l.rows), "f32"
}

// matmulLoop is the K loop: each step, the threads load the BM x BK tile
// of A and the BK x BN tile of B into workgroup memory and multiply them;
// with prefetch, a step's tiles come from registers that the previous step
// filled from global memory before its arithmetic.
func matmulLoop(t Tile, a, b tileLoad, inner string) string {
	if !t.Prefetch {
		ca, _ := a.count()
		cb, _ := b.count()
		pa, ra, wa := a.load("e", "k0")
		pb, rb, wb := b.load("e", "k0")
		return fmt.Sprintf(`	for (var k0 = 0u; k0 < p.K; k0 += BK) {
		// NT threads load the BM x BK tile of A and the BK x BN tile of B.
		for (var e = tid; e < %s; e += NT) {
			%s %s
			%s
		}
		for (var e = tid; e < %s; e += NT) {
			%s %s
			%s
		}
		workgroupBarrier();
		for (var kk = 0u; kk < BK; kk++) {
%s
		}
		workgroupBarrier();
	}`, ca, pa, ra, wa, cb, pb, rb, wb, inner)
	}
	na, nb := t.loads(t.BM), t.loads(t.BN)
	_, vt := a.count()
	reg := func(l tileLoad, n int, k0 string) string {
		p, r, _ := l.load("e", k0)
		return fmt.Sprintf(`for (var i = 0u; i < %du; i++) {
			let e = tid + i * NT;
			%s %s
			r%s[i] = v;
		}`, n, p, r, l.x)
	}
	put := func(l tileLoad, n int) string {
		p, _, w := l.load("e", "")
		return fmt.Sprintf(`for (var i = 0u; i < %du; i++) {
			let e = tid + i * NT;
			%s let v = r%s[i];
			%s
		}`, n, p, l.x, w)
	}
	return fmt.Sprintf(`	// Thread tid's share of a tile: loads e = tid + i*NT.
	var ra: array<%[1]s, %[2]d>;
	var rb: array<%[1]s, %[3]d>;
	%[4]s
	%[5]s
	for (var k0 = 0u; k0 < p.K; k0 += BK) {
		%[6]s
		%[7]s
		workgroupBarrier();
		// The next step's tiles, read while this one is multiplied.
		if (k0 + BK < p.K) {
			%[8]s
			%[9]s
		}
		for (var kk = 0u; kk < BK; kk++) {
%[10]s
		}
		workgroupBarrier();
	}`, vt, na, nb, reg(a, na, "0u"), reg(b, nb, "0u"), put(a, na), put(b, nb), reg(a, na, "k0 + BK"), reg(b, nb, "k0 + BK"), inner)
}

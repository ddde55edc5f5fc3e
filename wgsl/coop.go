package wgsl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/internal/half"
)

// The cooperative-matrix matmul (matmul_coop.wgsl). Where the adapter
// offers cooperative matrices (gpu.Caps.CooperativeMatrix: tensor cores
// through Vulkan's VK_KHR_cooperative_matrix, simdgroup matrices on Metal),
// a matmul whose A and B are f16 runs on them: the way to the tensor cores'
// throughput, several times the f32 FMAs that matmul.wgsl is bound by.
//
// wgpu 29 lists few configurations (square fragments of 8 or 16, f16 or f32),
// says which the driver offers only in its log, and reads WGSL's `coopLoad`
// and `coopLoadT` as column- and row-major or the other way depending on
// its version. So before the first use on a device, checkCoop measures the
// subgroup size (a workgroup is one subgroup) and runs the kernels, every
// layout, on small integers, whose products and sums every correct kernel
// gives exactly, trying 16x16 then 8x8 fragments under both readings of the
// loads; the first that is exact in every layout is used (gpu.Coop says
// which, or why none was). A kernel that fails to compile is a Go error
// there, and lomo keeps matmul.wgsl.

// CoopTile is a tiling of matmul_coop.wgsl: a workgroup computes FM x FN
// fragments of C. Every tiling gives the same bits (each result is the same
// multiply-adds in the same order); they differ in speed only.
type CoopTile struct{ FM, FN int }

// CoopTiles are the tilings tuning chooses from; the first is the default.
// 2x4 fragments hold 8 f32 accumulators of S x S per subgroup (64 registers
// a thread at S = 16 on a 32-wide subgroup), 4x4 twice that.
var CoopTiles = []CoopTile{{2, 4}, {4, 4}}

// Name is the tiling's name with fragments of side s: coop<BM>x<BN>.
func (t CoopTile) Name(s int) string { return fmt.Sprintf("coop%dx%d", t.FM*s, t.FN*s) }

// coopAlign is the element alignment matmul_coop needs of A's and B's
// offsets and row strides: 8 f16 are 16 bytes, what cooperative loads
// require of a pointer and a stride on Vulkan.
const coopAlign = 8

// coopFits reports whether a matmul can run on the cooperative-matrix kernel
// of fragment side s and tiling t: f16 operands, a shape that is a multiple
// of the tile (the kernel has no bounds checks) and aligned operands.
func coopFits(s int, t CoopTile, a, b Mat, m, n, k, lda, ldb int) bool {
	if a.DType != gpu.F16 || b.DType != gpu.F16 {
		return false
	}
	if m%(t.FM*s) != 0 || n%(t.FN*s) != 0 || k%s != 0 {
		return false
	}
	for _, v := range []int{a.Off, a.Batch, b.Off, b.Batch, lda, ldb} {
		if v%coopAlign != 0 {
			return false
		}
	}
	return true
}

// coopTilesFor returns the device's cooperative-matrix configuration and the
// tilings of CoopTiles that a matmul fits, none where it cannot run on
// cooperative matrices. The first call on a device that offers them checks
// them (checkCoop).
func coopTilesFor(d *gpu.Device, c, a, b Mat, m, n, k int) (gpu.Coop, []CoopTile) {
	if !d.Caps.CooperativeMatrix || a.DType != gpu.F16 || b.DType != gpu.F16 {
		return gpu.Coop{}, nil
	}
	aW, bW := k, n
	if a.T {
		aW = m
	}
	if b.T {
		bW = k
	}
	lda, ldb := a.stride(aW), b.stride(bW)
	st := coopReady(d)
	if !st.Usable {
		return st, nil
	}
	var tiles []CoopTile
	for _, t := range CoopTiles {
		if coopFits(st.Fragment, t, a, b, m, n, k, lda, ldb) {
			tiles = append(tiles, t)
		}
	}
	return st, tiles
}

// stride is x's leading dimension for a stored width w (Mat.LD, unchecked).
func (x Mat) stride(w int) int {
	if x.LD == 0 {
		return w
	}
	return x.LD
}

// coopReady returns the device's cooperative-matrix state, checking it on
// first use.
func coopReady(d *gpu.Device) gpu.Coop {
	st := d.Coop()
	if !st.Checked {
		st = checkCoop(d)
		d.SetCoop(st)
	}
	return st
}

// checkCoop finds a configuration of the cooperative-matrix kernels that
// computes exact products in every layout (see above). 8x8 fragments are
// tried only where no 16x16 kernel compiled: a driver that runs 16x16
// fragments but gives them wrong products has something else wrong.
func checkCoop(d *gpu.Device) gpu.Coop {
	sg, err := subgroupSize(d)
	if err != nil {
		return gpu.Coop{Reason: "measuring the subgroup size: " + briefError(err)}
	}
	var fails []string
	for _, s := range []int{16, 8} {
		compiled := false
		for _, row := range []string{"coopLoadT", "coopLoad"} {
			st := gpu.Coop{Subgroup: sg, Fragment: s, RowLoad: row}
			err := coopSelfCheck(d, st)
			if err == nil {
				st.Usable = true
				return st
			}
			var wrong *coopWrong
			compiled = compiled || errors.As(err, &wrong)
			fails = append(fails, fmt.Sprintf("%dx%d fragments, %s row-major: %s", s, s, row, briefError(err)))
		}
		if compiled {
			break
		}
	}
	return gpu.Coop{Subgroup: sg, Reason: strings.Join(fails, "; ")}
}

// coopWrong is a cooperative-matrix kernel that ran and gave a wrong product.
type coopWrong struct{ msg string }

func (e *coopWrong) Error() string { return e.msg }

// briefError is the line of a (multi-line, wgpu) error that says what is
// wrong: the last one that mentions an error, else the first.
func briefError(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.Contains(l, "error") {
			return l
		}
	}
	return strings.TrimSpace(lines[0])
}

// SubgroupParams mirrors Params in subgroup_size.wgsl.
type SubgroupParams struct {
	N    uint32
	_, _ uint32
	_    uint32
}

// subgroupSize measures the subgroup size of a 64-thread workgroup.
func subgroupSize(d *gpu.Device) (int, error) {
	if !d.Caps.Subgroups {
		return 0, fmt.Errorf("the adapter offers no subgroups")
	}
	// The browser's compiler (Tint) wants the WGSL directive for subgroup
	// builtins, which naga 29 (native) rejects as not yet supported.
	subst := map[string]string{"ENABLE": ""}
	if d.Info.Backend == "webgpu" {
		subst["ENABLE"] = "enable subgroups;"
	}
	k, err := kernel(d, "subgroup_size", "", subst, []gpu.Access{rw}, SubgroupParams{})
	if err != nil {
		return 0, err
	}
	out, err := d.NewBuffer(gpu.TagScratch, 4*64)
	if err != nil {
		return 0, err
	}
	defer out.Release()
	if err := d.Dispatch(k, gpu.Params(SubgroupParams{N: 64}), []*gpu.Buffer{out}, 1, 1, 1); err != nil {
		return 0, err
	}
	raw, err := d.Read(out, 0, 4*64)
	if err != nil {
		return 0, err
	}
	s := int(binary.LittleEndian.Uint32(raw))
	for i := 1; i < 64; i++ {
		if v := int(binary.LittleEndian.Uint32(raw[4*i:])); v != s {
			return 0, fmt.Errorf("subgroups of %d and %d threads in one workgroup", s, v)
		}
	}
	if s < 1 || s > 64 || s&(s-1) != 0 {
		return 0, fmt.Errorf("subgroup size %d", s)
	}
	return s, nil
}

// coopSelfCheck runs the kernels of configuration st on integer matrices
// in each layout and compares with the exact product.
func coopSelfCheck(d *gpu.Device, st gpu.Coop) error {
	t := CoopTiles[0]
	s := st.Fragment
	m, n, k := 2*t.FM*s, 2*t.FN*s, 4*s
	// Small integers: f16 holds them exactly, and every partial sum is an
	// integer far below 2^24, exact in f32 whatever the order.
	av := make([]float32, m*k)
	bv := make([]float32, k*n)
	for i := range av {
		av[i] = float32((i*7+3)%5 - 2)
	}
	for i := range bv {
		bv[i] = float32((i*5+1)%7 - 3)
	}
	ab, err := coopUpload(d, av)
	if err != nil {
		return err
	}
	defer ab.Release()
	bb, err := coopUpload(d, bv)
	if err != nil {
		return err
	}
	defer bb.Release()
	cb, err := d.NewBuffer(gpu.TagScratch, int64(4*m*n))
	if err != nil {
		return err
	}
	defer cb.Release()
	for _, lay := range []struct{ ta, tb bool }{{false, true}, {false, false}, {true, false}, {true, true}} {
		// op(A)(i, j) is av[i*k+j] stored as is or transposed, and so for B.
		a, b := av, bv
		if lay.ta {
			a = transpose(av, m, k)
		}
		if lay.tb {
			b = transpose(bv, k, n)
		}
		if err := d.Write(ab, 0, f16Bytes(a)); err != nil {
			return err
		}
		if err := d.Write(bb, 0, f16Bytes(b)); err != nil {
			return err
		}
		nan := make([]byte, 4*m*n)
		for i := 0; i < m*n; i++ {
			binary.LittleEndian.PutUint32(nan[4*i:], math.Float32bits(float32(math.NaN())))
		}
		if err := d.Write(cb, 0, nan); err != nil {
			return err
		}
		err := matmulCoop(d, st, t, Mat{Buf: cb}, Mat{Buf: ab, DType: gpu.F16, T: lay.ta}, Mat{Buf: bb, DType: gpu.F16, T: lay.tb},
			nil, m, n, k, 1, 1, 0)
		if err != nil {
			return err
		}
		raw, err := d.Read(cb, 0, int64(4*m*n))
		if err != nil {
			return err
		}
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				var want float32
				for l := 0; l < k; l++ {
					want += av[i*k+l] * bv[l*n+j]
				}
				if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(i*n+j):])); got != want {
					return &coopWrong{fmt.Sprintf("layout %s: C[%d][%d] = %v, want %v", layouts(lay.ta, lay.tb), i, j, got, want)}
				}
			}
		}
	}
	return nil
}

// transpose returns the (c, r) transpose of an r x c row-major matrix.
func transpose(v []float32, r, c int) []float32 {
	t := make([]float32, len(v))
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			t[j*r+i] = v[i*c+j]
		}
	}
	return t
}

func f16Bytes(v []float32) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], half.F32ToF16(x))
	}
	return b
}

func coopUpload(d *gpu.Device, v []float32) (*gpu.Buffer, error) {
	b, err := d.NewBuffer(gpu.TagScratch, int64(2*len(v)))
	if err != nil {
		return nil, err
	}
	if err := d.Write(b, 0, f16Bytes(v)); err != nil {
		b.Release()
		return nil, err
	}
	return b, nil
}

// CoopReady returns the device's cooperative-matrix state (gpu.Coop),
// checking the kernels on the first call where the adapter offers them.
func CoopReady(d *gpu.Device) gpu.Coop { return coopReady(d) }

// MatmulCoop is Matmul on the cooperative-matrix kernel with a given tiling
// (benchmarks and tests); it fails where CoopReady is not usable or the call
// does not fit the tiling.
func MatmulCoop(d *gpu.Device, t CoopTile, c, a, b Mat, m, n, k, batches int, alpha, beta float32) error {
	st := coopReady(d)
	if !st.Usable {
		return fmt.Errorf("wgsl: matmul: no cooperative-matrix kernel on this device: %s", st.Reason)
	}
	return matmulCoop(d, st, t, c, a, b, nil, m, n, k, batches, alpha, beta)
}

// matmulCoop records the matmul on matmul_coop.wgsl with configuration st
// and tiling t; the caller has checked that it fits (coopFits).
func matmulCoop(d *gpu.Device, st gpu.Coop, t CoopTile, c, a, b Mat, r *Mat, m, n, k, batches int, alpha, beta float32) error {
	p, bufs, access, err := matmulArgs(d, c, a, b, r, m, n, k, batches, alpha, beta)
	if err != nil {
		return err
	}
	s := st.Fragment
	if !coopFits(s, t, a, b, m, n, k, int(p.LDA), int(p.LDB)) {
		return fmt.Errorf("wgsl: matmul: %dx%dx%d does not fit the cooperative-matrix tiling %s", m, n, k, t.Name(s))
	}
	col := "coopLoad"
	if st.RowLoad == "coopLoad" {
		col = "coopLoadT"
	}
	store := strings.Replace(st.RowLoad, "Load", "Store", 1)
	bm, bn := t.FM*s, t.FN*s
	frag := fmt.Sprintf("coop_mat%dx%d", s, s)
	subst := map[string]string{
		"S": fmt.Sprint(s), "BM": fmt.Sprint(bm), "BN": fmt.Sprint(bn), "WG": fmt.Sprint(st.Subgroup),
		"CS_LEN": fmt.Sprint(bm * bn),
	}
	outSubst(d, subst, "C", "c", c.DType)
	subst[enableF16] = "1"
	var decl, step, spill strings.Builder
	for i := 0; i < t.FM; i++ {
		for j := 0; j < t.FN; j++ {
			fmt.Fprintf(&decl, "\tvar acc%d_%d = %s<f32, C>();\n", i, j, frag)
		}
	}
	// op(A)(m, k) is a[m*lda + k] (row-major) or a[k*lda + m]; op(B)(k, n)
	// is b[k*ldb + n] or b[n*ldb + k].
	for i := 0; i < t.FM; i++ {
		if a.T {
			fmt.Fprintf(&step, "\t\tlet a%d = %s<%s<f16, A>>(&a[abase + k * p.lda + m0 + %du], p.lda);\n", i, col, frag, i*s)
		} else {
			fmt.Fprintf(&step, "\t\tlet a%d = %s<%s<f16, A>>(&a[abase + (m0 + %du) * p.lda + k], p.lda);\n", i, st.RowLoad, frag, i*s)
		}
	}
	for j := 0; j < t.FN; j++ {
		if b.T {
			fmt.Fprintf(&step, "\t\tlet b%d = %s<%s<f16, B>>(&b[bbase + (n0 + %du) * p.ldb + k], p.ldb);\n", j, col, frag, j*s)
		} else {
			fmt.Fprintf(&step, "\t\tlet b%d = %s<%s<f16, B>>(&b[bbase + k * p.ldb + n0 + %du], p.ldb);\n", j, st.RowLoad, frag, j*s)
		}
	}
	for i := 0; i < t.FM; i++ {
		for j := 0; j < t.FN; j++ {
			fmt.Fprintf(&step, "\t\tacc%d_%d = coopMultiplyAdd(a%d, b%d, acc%d_%d);\n", i, j, i, j, i, j)
			fmt.Fprintf(&spill, "\t%s(acc%d_%d, &cs[%du], BN);\n", store, i, j, i*s*bn+j*s)
		}
	}
	subst["ACC_DECL"], subst["STEP"], subst["SPILL"] = decl.String(), step.String(), spill.String()
	dts := dtypeName("c", c.DType)
	dts += residualSubst(d, subst, r)
	variant := fmt.Sprintf("%s/%s/%s/wg%d/%s", dts, layouts(a.T, b.T), t.Name(s), st.Subgroup, st.RowLoad)
	kern, err := kernel(d, "matmul_coop", variant, subst, access, p)
	if err != nil {
		return err
	}
	return d.Dispatch(kern, gpu.Params(p), bufs, uint32(n/bn), uint32(m/bm), uint32(batches))
}

package wgsl

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

// AdaLomoParams mirrors Params in adalomo.wgsl (shared by its kernels).
type AdaLomoParams struct {
	Rows, Cols, N, ChunkRows                       uint32
	Chunks, Groups, Seed, Flag                     uint32
	LR, Beta, Eps1, Eps2                           float32
	ClipThreshold, WeightDecay, InvScale, ClipCoef float32
}

// AdaLomoStep holds the scalars of one AdaLomo update (REFERENCE §3): LR,
// Beta = 1 - t^-0.8 (0 at t=1; the caller counts t), Eps1 (1e-30), Eps2
// (1e-3), ClipThreshold (1), decoupled WeightDecay, the inverse loss scale
// and the norm-clipping coefficient (1: off).
type AdaLomoStep struct {
	LR, Beta, Eps1, Eps2, ClipThreshold, WeightDecay, InvScale, ClipCoef float32
	Seed                                                                 uint32 // bf16 stochastic rounding (LomoStep)
	// Check, if not nil, has the update flag weights it made NaN or
	// infinite (LomoStep.Check).
	Check *WeightCheck
	// Rows, if not nil, says that grad holds only those rows of a
	// matrix's gradient, the others being zero. The update is the one the
	// whole gradient gives, bit for bit: every row's state decays, every
	// row is scaled by the weight decay, and the rows without a gradient
	// count in the means and the RMS as the zeros they are.
	Rows *TableRows
}

// adalomoMaxChunks caps the row chunks of the column sums, so that their
// scratch is at most adalomoMaxChunks*cols floats; adalomoMinChunkRows keeps
// each chunk's 4 row lanes busy on short matrices.
const (
	adalomoMaxChunks    = 64
	adalomoMinChunkRows = 16
)

// AdaLomoUpdate records the AdaLomo update of one parameter, in place
// (adalomo.wgsl), from its gradient grad (rows, cols), f32 or f16 by gt
// (read in f32); the gradient is first multiplied by InvScale and ClipCoef.
//
// c != nil: factored (matrix) state, r (rows) and c (cols) f32, updated in
// place: r = beta*r + (1-beta)*mean_cols(G), c = beta*c + (1-beta)*mean_rows(G),
// G = g^2 + Eps1, u = g * rsqrt(r_i/mean(r)) * rsqrt(c_j).
// c == nil: unfactored (vector) state v = r, of rows*cols f32 elements:
// v = beta*v + (1-beta)*G, u = g*rsqrt(v). (A factored state of a single row
// or column gives the same u as the vector state, so the choice for such
// shapes only decides the state's size.)
// Then u /= max(1, RMS(u)/ClipThreshold), lr_t = LR*max(Eps2, RMS(param)),
// param = param*(1 - lr_t*WeightDecay) - lr_t*u, stored in pt (f32 or f16).
//
// All reductions run on the device in one recorded sequence (7 dispatches for
// a matrix, 9 with Rows, 3 for a vector; no read-back); scratch buffers are
// tagged gpu.TagScratch and released once recorded.
func AdaLomoUpdate(d *gpu.Device, param, grad, r, c *gpu.Buffer, pt, gt gpu.DType, rows, cols int, s AdaLomoStep) error {
	const op = "adalomo update"
	if rows <= 0 || cols <= 0 || int64(rows)*int64(cols) >= math.MaxUint32 {
		return fmt.Errorf("wgsl: %s: shape (%d,%d)", op, rows, cols)
	}
	n := rows * cols
	vector := c == nil
	stateN := rows
	if vector {
		stateN = n
	}
	if err := reduceNeed(op, "param", param, pt.Bytes(n)); err != nil {
		return err
	}
	gradRows := rows
	if s.Rows != nil {
		if vector {
			return fmt.Errorf("wgsl: %s: a gradient by rows needs a matrix's factored state", op)
		}
		if err := s.Rows.check(op, rows); err != nil {
			return err
		}
		gradRows = s.Rows.N
	}
	if err := reduceNeed(op, "grad", grad, gt.Bytes(gradRows*cols)); err != nil {
		return err
	}
	if err := reduceNeed(op, "r", r, int64(4*stateN)); err != nil {
		return err
	}
	if !vector {
		if err := reduceNeed(op, "c", c, int64(4*cols)); err != nil {
			return err
		}
		if (cols+63)/64 > 65535 {
			return fmt.Errorf("wgsl: %s: %d columns beyond the column-sum grid", op, cols)
		}
	}
	if param == grad || param == r || param == c || grad == r || grad == c || r == c ||
		s.Rows != nil && (s.Rows.IDs == param || s.Rows.IDs == r || s.Rows.IDs == c) {
		return fmt.Errorf("wgsl: %s: param, grad, r, c and rows must be distinct buffers", op)
	}
	if err := checkNeed(op, s.Check, param, grad, r, c); err != nil {
		return err
	}

	chunkRows := max(adalomoMinChunkRows, (rows+adalomoMaxChunks-1)/adalomoMaxChunks)
	chunks := (rows + chunkRows - 1) / chunkRows
	groups := reduceGroups(n)
	p := AdaLomoParams{
		Rows: uint32(rows), Cols: uint32(cols), N: uint32(n), ChunkRows: uint32(chunkRows),
		Chunks: uint32(chunks), Groups: uint32(groups), Seed: s.Seed,
		LR: s.LR, Beta: s.Beta, Eps1: s.Eps1, Eps2: s.Eps2,
		ClipThreshold: s.ClipThreshold, WeightDecay: s.WeightDecay, InvScale: s.InvScale, ClipCoef: s.ClipCoef,
	}
	partN := 2 * groups
	if !vector {
		partN = max(partN, chunks*cols)
	}
	part, err := d.NewBuffer(gpu.TagScratch, int64(4*partN))
	if err != nil {
		return fmt.Errorf("wgsl: %s: %w", op, err)
	}
	// Released once recorded: the dispatches keep their order on the queue.
	defer part.Release()
	// stats: sum(r), sum(u^2), sum(param^2).
	stats, err := d.NewBuffer(gpu.TagScratch, 16)
	if err != nil {
		return fmt.Errorf("wgsl: %s: %w", op, err)
	}
	defer stats.Release()

	// A stage is one dispatch: the kernel made of `sections`, its buffers in
	// binding order (the first one written), and its grid.
	type stage struct {
		variant  string
		sections []string
		bufs     []*gpu.Buffer
		grid     [3]uint32
	}
	grid := func(x, y, z uint32) [3]uint32 { return [3]uint32{x, y, z} }
	updateThreads := n
	upd := "update_f32"
	if pt.Half() {
		updateThreads = (n + 1) / 2
		upd = "update_pairs"
	}
	update := grid(d.Grid(updateThreads, 256))
	var stages []stage
	if vector {
		// grad, v (N) -> v, part (2*groups) -> stats -> param (N)
		stages = []stage{
			{"vec_partial_" + pt.String(), []string{"vec_partial"}, []*gpu.Buffer{part, r, grad, param}, grid(uint32(groups), 1, 1)},
			{"sq_fold", []string{"sq_fold"}, []*gpu.Buffer{stats, part}, grid(1, 1, 1)},
			{"update_" + pt.String() + "_vec", []string{upd, "u_vec"}, []*gpu.Buffer{param, stats, grad, r}, update},
		}
	} else {
		// grad (R,C) -> r (R); grad -> part (chunks,C) -> c (C); r -> stats[0];
		// grad, r, c, param -> part (2*groups) -> stats[1:3] -> param (R,C)
		stages = []stage{
			{"row_state", []string{"row_state"}, []*gpu.Buffer{r, grad}, grid(d.Grid(rows, 1))},
			{"col_partial", []string{"col_partial"}, []*gpu.Buffer{part, grad}, grid(uint32((cols+63)/64), uint32(chunks), 1)},
			{"col_state", []string{"col_state"}, []*gpu.Buffer{c, part}, grid(d.Grid(cols, 256))},
			{"r_sum", []string{"r_sum"}, []*gpu.Buffer{stats, r}, grid(1, 1, 1)},
			{"mat_partial_" + pt.String(), []string{"mat_partial"}, []*gpu.Buffer{part, stats, grad, r, c, param}, grid(uint32(groups), 1, 1)},
			{"sq_fold", []string{"sq_fold"}, []*gpu.Buffer{stats, part}, grid(1, 1, 1)},
			{"update_" + pt.String() + "_mat", []string{upd, "u_mat"}, []*gpu.Buffer{param, stats, grad, r, c}, update},
		}
	}
	subst := pairSubst(pairSubst(nil, "P", "param", pt), "G", "grad", gt)
	checkSubst(subst, s.Check, pt)
	// Each stage's bindings after its own buffers: the row map where it
	// reads the gradient by rows, then the weight check's flags.
	readsRows := func(st stage) bool { return s.Rows != nil && slices.Contains(st.bufs, grad) }
	checks := func(i int) bool { return s.Check != nil && i == len(stages)-1 }
	if s.Rows != nil {
		// The gradient as the kernels read it: row by row through slot,
		// the rows without one zero.
		rowSlotsGradAt(subst)
	}
	if s.Check != nil {
		p.Flag = uint32(s.Check.Index)
	}
	kernels := make([]*gpu.Kernel, len(stages))
	for i, st := range stages {
		variant := st.variant
		if slices.Contains(st.bufs, grad) {
			variant += gradVariant(gt)
		}
		access := make([]gpu.Access, len(st.bufs))
		for j := range access {
			access[j] = ro
		}
		access[0] = rw
		if st.sections[0] == "vec_partial" {
			access[1] = rw // v
		}
		var decl []string
		if readsRows(st) {
			variant += "_rows"
			decl = append(decl, fmt.Sprintf("@group(0) @binding(%d) var<storage, read> slot: array<u32>;", len(access)))
			access = append(access, ro)
		}
		if checks(i) {
			variant += checkVariant(s.Check)
			decl = append(decl, fmt.Sprintf("@group(0) @binding(%d) var<storage, read_write> flags: array<atomic<u32>>;", len(access)))
			access = append(access, rw)
		}
		subst["EXTRA_DECL"], subst["PB"] = strings.Join(decl, "\n"), fmt.Sprint(len(access))
		if kernels[i], err = sectionKernel(d, "adalomo", variant, subst, st.sections, access, p); err != nil {
			return err
		}
	}
	// Every kernel compiled and every size checked: record them all, after
	// the row map where the gradient comes by rows.
	var slot *gpu.Buffer
	if s.Rows != nil {
		if slot, err = rowSlots(d, op, rows, s.Rows); err != nil {
			return err
		}
		// Released once recorded, as part and stats.
		defer slot.Release()
	}
	params := gpu.Params(p)
	for i, st := range stages {
		bufs := slices.Clip(st.bufs)
		if readsRows(st) {
			bufs = append(bufs, slot)
		}
		if checks(i) {
			bufs = append(bufs, s.Check.Flags)
		}
		if err := d.Dispatch(kernels[i], params, bufs, st.grid[0], st.grid[1], st.grid[2]); err != nil {
			return err
		}
	}
	return nil
}

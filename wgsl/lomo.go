package wgsl

import (
	"fmt"
	"math"

	"github.com/lomo-dev/lomo/gpu"
)

// LomoParams mirrors Params in lomo.wgsl.
type LomoParams struct {
	N                                              uint32
	LR, WeightDecay, InvScale, ClipValue, ClipCoef float32
	Cols, RowsOff                                  uint32 // rows sections only
	Seed                                           uint32 // bf16 stochastic rounding
	Flag, _, _                                     uint32 // the weight check's flag
}

// LomoStep holds the scalars of one LOMO update (REFERENCE §1.4): the
// learning rate, decoupled weight decay, the inverse of the loss scale, the
// gradient value clip (0: off) and the norm-clipping coefficient (1: off);
// Seed drives the stochastic rounding of bf16 weights (a new one for every
// step and parameter: RoundingSeed).
type LomoStep struct {
	LR, WeightDecay, InvScale, ClipValue, ClipCoef float32
	Seed                                           uint32
	// Check, if not nil, has the update flag weights it made NaN or
	// infinite, as CheckFinite would on the updated parameter.
	Check *WeightCheck
}

// WeightCheck is where an update kernel records that a weight it wrote is
// NaN or infinite: Flags[Index] = 1 (u32), never cleared.
type WeightCheck struct {
	Flags *gpu.Buffer
	Index int
}

// lomoCheck sets the weight check's substitutions of lomo.wgsl (its
// binding, the given first binding after the kernel's buffers, Params'
// binding, the flag functions and their calls) and returns the extra
// binding, if any.
func lomoCheck(m map[string]string, c *WeightCheck, pt gpu.DType, p *LomoParams, first int) []*gpu.Buffer {
	m["CHECK_DECL"], m["PB"] = "", fmt.Sprint(first)
	if c == nil {
		checkSubst(m, nil, pt)
		return nil
	}
	p.Flag = uint32(c.Index)
	m["PB"] = fmt.Sprint(first + 1)
	m["CHECK_DECL"] = fmt.Sprintf("@group(0) @binding(%d) var<storage, read_write> flags: array<atomic<u32>>;", first)
	checkSubst(m, c, pt)
	return []*gpu.Buffer{c.Flags}
}

// checkSubst sets the functions and calls of an update kernel's weight
// check, empty without one: CHECK_FNS (flag_if, bad_f32, bad_half, on
// `flags` and p.flag), CHECK_F32 (of an f32 weight v), CHECK_PAIR and
// CHECK_LOW (of a stored pair nw, both halves or the low one).
func checkSubst(m map[string]string, c *WeightCheck, pt gpu.DType) {
	for _, k := range []string{"CHECK_FNS", "CHECK_F32", "CHECK_PAIR", "CHECK_LOW"} {
		m[k] = ""
	}
	if c == nil {
		return
	}
	exp := "0x7c00u" // f16
	if pt == gpu.BF16 {
		exp = "0x7f80u"
	}
	m["CHECK_FNS"] = fmt.Sprintf(`fn flag_if(bad: bool) { if (bad) { atomicStore(&flags[p.flag], 1u); } }
fn bad_f32(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) >= 0x7f800000u; }
fn bad_half(h: u32) -> bool { return (h & %[1]s) == %[1]s; }`, exp)
	m["CHECK_F32"] = "flag_if(bad_f32(v));"
	m["CHECK_PAIR"] = "flag_if(bad_half(nw & 0xffffu) || bad_half(nw >> 16u));"
	m["CHECK_LOW"] = "flag_if(bad_half(nw & 0xffffu));"
}

// checkVariant is the suffix of a LOMO kernel's variant with a check.
func checkVariant(c *WeightCheck) string {
	if c != nil {
		return "_checked"
	}
	return ""
}

// LomoUpdate records the LOMO update in place on param (n elements, f32,
// f16 or bf16 by pt) from its gradient grad (n elements, f32, f16 or bf16
// by gt, read in f32):
//
//	g = grad*InvScale; if ClipValue > 0 { g = clamp(g, ±ClipValue) }; g *= ClipCoef
//	p = float32(param); if WeightDecay > 0 { p *= 1 - LR*WeightDecay }; p -= LR*g
//
// and stores p back in pt: f16 rounds to nearest, bf16 stochastically
// (bf16Lib), unbiased, so that updates below half a bf16 ulp still move
// the weights in expectation. 16-bit parameters are updated one pair per
// thread and written whole.
func LomoUpdate(d *gpu.Device, param, grad *gpu.Buffer, pt, gt gpu.DType, n int, s LomoStep) error {
	const op = "lomo update"
	if n <= 0 || n > math.MaxUint32-1 {
		return fmt.Errorf("wgsl: %s: %d elements", op, n)
	}
	if err := reduceNeed(op, "param", param, pt.Bytes(n)); err != nil {
		return err
	}
	if err := reduceNeed(op, "grad", grad, gt.Bytes(n)); err != nil {
		return err
	}
	if param == grad {
		return fmt.Errorf("wgsl: %s: param and grad must be distinct buffers", op)
	}
	if err := checkNeed(op, s.Check, param, grad); err != nil {
		return err
	}
	p := LomoParams{N: uint32(n), LR: s.LR, WeightDecay: s.WeightDecay, InvScale: s.InvScale, ClipValue: s.ClipValue, ClipCoef: s.ClipCoef, Seed: s.Seed}
	subst := lomoSubst(pt, gt)
	bufs := append([]*gpu.Buffer{param, grad}, lomoCheck(subst, s.Check, pt, &p, 2)...)
	access := []gpu.Access{rw, ro, rw}[:len(bufs)]
	k, err := sectionKernel(d, "lomo", pt.String()+gradVariant(gt)+checkVariant(s.Check), subst, []string{lomoSection(pt)}, access, p)
	if err != nil {
		return err
	}
	threads := n
	if pt.Half() {
		threads = (n + 1) / 2
	}
	// param (n) -= lr * clipped grad (n), in place.
	x, y, z := d.Grid(threads, 256)
	return d.Dispatch(k, gpu.Params(p), bufs, x, y, z)
}

// LomoUpdateRows records LomoUpdate of a (vocab, cols) table param from a
// row-sparse gradient: grad (nRows x cols, f32 or f16 by gt) is the
// gradient of table rows rows[off..off+nRows-1] (u32, distinct, each <
// vocab), and every other row's gradient is zero. The result is
// LomoUpdate's with the whole gradient, bit for bit. Without weight decay
// only those rows are updated (LomoUpdateBlock: a zero gradient leaves a
// row as it is). With weight decay, which moves every row, the update runs
// over the whole table and reads the gradient through the map from table
// rows to gradient rows (rowSlots: two more dispatches, 4 bytes a table
// row of scratch).
func LomoUpdateRows(d *gpu.Device, param, grad, rows *gpu.Buffer, off int, pt, gt gpu.DType, vocab, cols, nRows int, s LomoStep) error {
	if s.WeightDecay == 0 {
		return lomoUpdateRows(d, "lomo update rows", param, grad, rows, off, pt, gt, vocab, cols, nRows, s)
	}
	if err := lomoRowsNeed("lomo update rows", false, param, grad, rows, off, pt, gt, vocab, cols, nRows, s); err != nil {
		return err
	}
	return lomoUpdateTable(d, param, grad, &TableRows{IDs: rows, Off: off, N: nRows}, pt, gt, vocab, cols, s)
}

// LomoUpdateBlock records the LOMO update, weight decay included, of the
// rows of a (vocab, cols) table param that grad holds: the gradient rows
// of table rows rows[off..off+nRows-1] (as in LomoUpdateRows), and no
// other rows. A gradient delivered in blocks of rows that cover the table
// once (an LM head's, nn.Tape.HeadBlocks) thus gets LomoUpdate's result
// with the whole gradient, bit for bit, one block at a time. One thread
// per element or pair of the block's; 16-bit weights need an even cols.
func LomoUpdateBlock(d *gpu.Device, param, grad, rows *gpu.Buffer, off int, pt, gt gpu.DType, vocab, cols, nRows int, s LomoStep) error {
	return lomoUpdateRows(d, "lomo update block", param, grad, rows, off, pt, gt, vocab, cols, nRows, s)
}

// lomoRowsNeed checks the arguments of LomoUpdateRows and LomoUpdateBlock;
// byRows: for the kernel that updates the rows grad holds, whose 16-bit
// pairs must lie within a row.
func lomoRowsNeed(op string, byRows bool, param, grad, rows *gpu.Buffer, off int, pt, gt gpu.DType, vocab, cols, nRows int, s LomoStep) error {
	n := nRows * cols
	if nRows <= 0 || cols <= 0 || nRows > vocab || int64(vocab)*int64(cols) > math.MaxUint32-1 {
		return fmt.Errorf("wgsl: %s: %d rows of %d columns of a table of %d", op, nRows, cols, vocab)
	}
	if pt.Half() && cols%2 != 0 && byRows {
		return fmt.Errorf("wgsl: %s: %v rows of %d columns split u32 pairs", op, pt, cols)
	}
	if err := reduceNeed(op, "param", param, pt.Bytes(vocab*cols)); err != nil {
		return err
	}
	if err := reduceNeed(op, "grad", grad, gt.Bytes(n)); err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("wgsl: %s: rows offset %d", op, off)
	}
	if err := reduceNeed(op, "rows", rows, 4*int64(off+nRows)); err != nil {
		return err
	}
	if param == grad || param == rows {
		return fmt.Errorf("wgsl: %s: param must be distinct from grad and rows", op)
	}
	return checkNeed(op, s.Check, param, grad, rows)
}

// lomoUpdateRows updates the rows grad holds (lomo.wgsl's rows sections).
func lomoUpdateRows(d *gpu.Device, op string, param, grad, rows *gpu.Buffer, off int, pt, gt gpu.DType, vocab, cols, nRows int, s LomoStep) error {
	if err := lomoRowsNeed(op, true, param, grad, rows, off, pt, gt, vocab, cols, nRows, s); err != nil {
		return err
	}
	n := nRows * cols
	p := LomoParams{N: uint32(n), LR: s.LR, WeightDecay: s.WeightDecay, InvScale: s.InvScale, ClipValue: s.ClipValue, ClipCoef: s.ClipCoef, Cols: uint32(cols), RowsOff: uint32(off), Seed: s.Seed}
	subst := lomoSubst(pt, gt)
	bufs := append([]*gpu.Buffer{param, grad, rows}, lomoCheck(subst, s.Check, pt, &p, 3)...)
	access := []gpu.Access{rw, ro, ro, rw}[:len(bufs)]
	k, err := sectionKernel(d, "lomo", "rows_"+pt.String()+gradVariant(gt)+checkVariant(s.Check), subst, []string{"rows_" + lomoSection(pt)}, access, p)
	if err != nil {
		return err
	}
	threads := n
	if pt.Half() {
		threads = n / 2
	}
	// param rows[r] (cols) -= lr * clipped grad row r, in place.
	x, y, z := d.Grid(threads, 256)
	return d.Dispatch(k, gpu.Params(p), bufs, x, y, z)
}

// lomoUpdateTable is LomoUpdateRows over the whole table: LomoUpdate's
// kernel, reading the gradient through the row map (rowSlotsGradAt).
func lomoUpdateTable(d *gpu.Device, param, grad *gpu.Buffer, t *TableRows, pt, gt gpu.DType, vocab, cols int, s LomoStep) error {
	const op = "lomo update rows"
	n := vocab * cols
	p := LomoParams{N: uint32(n), LR: s.LR, WeightDecay: s.WeightDecay, InvScale: s.InvScale, ClipValue: s.ClipValue, ClipCoef: s.ClipCoef, Cols: uint32(cols), Seed: s.Seed}
	subst := lomoSubst(pt, gt)
	rowSlotsGradAt(subst)
	subst["SLOT_DECL"] = "@group(0) @binding(2) var<storage, read> slot: array<u32>;"
	check := lomoCheck(subst, s.Check, pt, &p, 3)
	access := []gpu.Access{rw, ro, ro, rw}[:3+len(check)]
	k, err := sectionKernel(d, "lomo", "table_"+pt.String()+gradVariant(gt)+checkVariant(s.Check), subst, []string{lomoSection(pt)}, access, p)
	if err != nil {
		return err
	}
	slot, err := rowSlots(d, op, vocab, t)
	if err != nil {
		return err
	}
	// Released once recorded: the dispatches keep their order.
	defer slot.Release()
	threads := n
	if pt.Half() {
		threads = (n + 1) / 2
	}
	x, y, z := d.Grid(threads, 256)
	return d.Dispatch(k, gpu.Params(p), append([]*gpu.Buffer{param, grad, slot}, check...), x, y, z)
}

// checkNeed checks a weight check's flags buffer: large enough, and none
// of the update's other buffers.
func checkNeed(op string, c *WeightCheck, others ...*gpu.Buffer) error {
	if c == nil {
		return nil
	}
	if c.Index < 0 {
		return fmt.Errorf("wgsl: %s: weight check flag %d", op, c.Index)
	}
	if err := reduceNeed(op, "flags", c.Flags, int64(4*(c.Index+1))); err != nil {
		return err
	}
	for _, b := range others {
		if b == c.Flags {
			return fmt.Errorf("wgsl: %s: the weight check's flags must be a buffer of their own", op)
		}
	}
	return nil
}

// lomoSection is the section of lomo.wgsl updating parameters of dtype pt.
func lomoSection(pt gpu.DType) string {
	if pt.Half() {
		return "pairs"
	}
	return "f32"
}

// lomoSubst reads the gradient and packs the parameter's pairs; no row
// map bound (SLOT_DECL, lomoUpdateTable's).
func lomoSubst(pt, gt gpu.DType) map[string]string {
	m := pairSubst(pairSubst(nil, "P", "param", pt), "G", "grad", gt)
	m["SLOT_DECL"] = ""
	return m
}

// RoundingSeed is the seed of the stochastic rounding of parameter
// `param` (any stable number: its index) at optimizer step `step`:
// distinct for every step and parameter.
func RoundingSeed(step, param int) uint32 {
	return uint32(step)*0x9e3779b9 ^ uint32(param)*0x85ebca6b
}

// gradVariant is the suffix of an optimizer kernel's variant for its
// gradient's dtype: none for f32 (the names kernels had before f16
// gradients), "_g16" for f16, "_gb16" for bf16.
func gradVariant(gt gpu.DType) string {
	switch gt {
	case gpu.F16:
		return "_g16"
	case gpu.BF16:
		return "_gb16"
	}
	return ""
}

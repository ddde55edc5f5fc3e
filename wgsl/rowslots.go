package wgsl

import (
	"fmt"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

// RowSlotsParams mirrors Params in rowslots.wgsl.
type RowSlotsParams struct {
	Rows, Off, N, _ uint32
}

// TableRows says that a gradient holds only some rows of a table's (an
// embedding's gradient by rows, nn.Tape.RowGrads): N rows, the gradients
// of table rows IDs[Off+k] (u32, distinct, each below the table's rows),
// in that order; every other row's gradient is zero.
type TableRows struct {
	IDs    *gpu.Buffer
	Off, N int
}

// check checks t against a table of `rows` rows.
func (t *TableRows) check(op string, rows int) error {
	if t.N <= 0 || t.N > rows || t.Off < 0 {
		return fmt.Errorf("wgsl: %s: %d gradient rows from %d of a table of %d rows", op, t.N, t.Off, rows)
	}
	return reduceNeed(op, "rows", t.IDs, 4*int64(t.Off+t.N))
}

// rowSlots records the map from the table's rows to t's gradient rows
// (Fill, then rowslots.wgsl: two dispatches) into a new scratch buffer (u32 per
// table row, gpu.TagScratch) and returns it; the caller binds it where it
// reads the gradient (rowSlotsGradAt) and releases it once recorded.
func rowSlots(d *gpu.Device, op string, rows int, t *TableRows) (*gpu.Buffer, error) {
	if err := t.check(op, rows); err != nil {
		return nil, err
	}
	slot, err := d.NewBuffer(gpu.TagScratch, 4*int64(rows))
	if err != nil {
		return nil, fmt.Errorf("wgsl: %s: %w", op, err)
	}
	p := RowSlotsParams{Rows: uint32(rows), Off: uint32(t.Off), N: uint32(t.N)}
	set, err := kernel(d, "rowslots", "", nil, []gpu.Access{rw, ro}, p)
	if err == nil {
		if err = Fill(d, slot, 0, rows, 0xffffffff); err == nil { // NO_SLOT
			x, y, z := d.Grid(t.N, 256)
			err = d.Dispatch(set, gpu.Params(p), []*gpu.Buffer{slot, t.IDs}, x, y, z)
		}
	}
	if err != nil {
		slot.Release()
		return nil, err
	}
	return slot, nil
}

// rowSlotsGradAt turns a kernel's grad_at (pairSubst's G_AT, of the
// gradient's own elements) into that of the whole table's gradient read
// through `slot` (rowSlots; the kernel binds it as slot: array<u32> and has
// p.cols): a zero where a row has no gradient row.
func rowSlotsGradAt(m map[string]string) {
	m["G_AT"] = strings.Replace(m["G_AT"], "fn grad_at(", "fn grad_raw(", 1) + `
fn grad_at(i: u32) -> f32 {
	let row = i / p.cols;
	let k = slot[row];
	if (k == 0xffffffffu) { return 0.0; }
	return grad_raw(k * p.cols + (i - row * p.cols));
}`
}

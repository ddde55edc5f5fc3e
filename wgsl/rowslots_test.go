package wgsl

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/lomo-dev/lomo/gpu"
)

func TestRowSlotsParamsLayout(t *testing.T) {
	// Params in rowslots.wgsl: 4 u32 (rows, off, n, _p0).
	if got := unsafe.Sizeof(RowSlotsParams{}); got != 16 {
		t.Errorf("RowSlotsParams is %d bytes, WGSL Params is 16", got)
	}
}

// TestRowSlots: the row map gives each table row its gradient row, and
// 0xffffffff to the rows without one, over more rows than a workgroup,
// from ids at an offset of their buffer (the ids before it unread); a bad
// range is refused; the map is scratch, released once recorded.
func TestRowSlots(t *testing.T) {
	const rows = 700
	present := []uint32{1, 5, 255, 256, 257, 699}
	ids := uploadU32(t, append([]uint32{3, 4}, present...))
	scratch := dev.Stats().Tag(gpu.TagScratch).Live
	slot, err := rowSlots(dev, "test", rows, &TableRows{IDs: ids, Off: 2, N: len(present)})
	if err != nil {
		t.Fatal(err)
	}
	got := reduceReadFlags(t, slot, rows)
	slot.Release()
	want := make([]uint32, rows)
	for i := range want {
		want[i] = 0xffffffff
	}
	for k, row := range present {
		want[row] = uint32(k)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("slot[%d] = %#x, want %#x", i, got[i], want[i])
			}
		}
	}
	if live := dev.Stats().Tag(gpu.TagScratch).Live; live != scratch {
		t.Errorf("%d scratch bytes live after release, %d before", live, scratch)
	}
	for _, bad := range []TableRows{{IDs: ids, Off: 3, N: len(present)}, {IDs: ids, N: 0}, {IDs: ids, Off: -1, N: 1}, {IDs: ids, N: rows + 1}} {
		if s, err := rowSlots(dev, "test", rows, &bad); err == nil {
			s.Release()
			t.Errorf("rows %d..%d of %d ids accepted", bad.Off, bad.Off+bad.N, 2+len(present))
		}
	}
}

package gpu

import (
	"fmt"
	"strings"
)

// Tag says what a buffer holds. Every device byte carries one, so that the
// memory table of a training step can be measured per purpose.
type Tag int

const (
	TagParam      Tag = iota // model weights
	TagGrad                  // parameter gradients
	TagActivation            // activations saved for backward, and their gradients
	TagOptimizer             // optimizer state (AdaLomo factors, AdamW moments)
	TagScratch               // temporaries of one op, uniforms, reductions
	TagStaging               // host-visible buffers for read-back
	NumTags
)

var tagNames = [NumTags]string{"param", "grad", "activation", "optimizer", "scratch", "staging"}

func (t Tag) String() string {
	if t < 0 || t >= NumTags {
		return fmt.Sprintf("tag(%d)", int(t))
	}
	return tagNames[t]
}

// ParseTag is the inverse of Tag.String.
func ParseTag(s string) (Tag, error) {
	for i, n := range tagNames {
		if n == s {
			return Tag(i), nil
		}
	}
	return 0, fmt.Errorf("gpu: unknown buffer tag %q", s)
}

// MemStat is the live and peak byte count of one tag (or of all).
type MemStat struct {
	Live int64 `json:"live"`
	Peak int64 `json:"peak"`
}

// Stats is the device's memory accounting. Live bytes are those held by
// buffers not yet released; Peak is the high-water mark of Live since the
// device opened or ResetPeak. Total.Peak is the peak of the sum, not the sum
// of the per-tag peaks. Reserved also counts released buffers kept in the
// device's cache for reuse, which is what the driver actually holds.
type Stats struct {
	ByTag    [NumTags]MemStat `json:"by_tag"`
	Total    MemStat          `json:"total"`
	Reserved MemStat          `json:"reserved"`
}

// Tag returns the stat of one tag.
func (s Stats) Tag(t Tag) MemStat { return s.ByTag[t] }

// Map returns the per-tag stats keyed by tag name, with "total" added.
func (s Stats) Map() map[string]MemStat {
	m := make(map[string]MemStat, NumTags+1)
	for i := range s.ByTag {
		m[Tag(i).String()] = s.ByTag[i]
	}
	m["total"] = s.Total
	return m
}

func (s Stats) String() string {
	var b strings.Builder
	for i, m := range s.ByTag {
		fmt.Fprintf(&b, "%s %d/%d ", Tag(i), m.Live, m.Peak)
	}
	fmt.Fprintf(&b, "total %d/%d reserved %d/%d", s.Total.Live, s.Total.Peak, s.Reserved.Live, s.Reserved.Peak)
	return b.String()
}

// accountant keeps Stats exact. It is only touched under Device.mu.
type accountant struct{ s Stats }

func (a *accountant) add(t Tag, n int64) {
	m := &a.s.ByTag[t]
	m.Live += n
	m.Peak = max(m.Peak, m.Live)
	a.s.Total.Live += n
	a.s.Total.Peak = max(a.s.Total.Peak, a.s.Total.Live)
}

func (a *accountant) sub(t Tag, n int64) {
	a.s.ByTag[t].Live -= n
	a.s.Total.Live -= n
}

func (a *accountant) reserve(n int64) {
	a.s.Reserved.Live += n
	a.s.Reserved.Peak = max(a.s.Reserved.Peak, a.s.Reserved.Live)
}

func (a *accountant) resetPeak() {
	for i := range a.s.ByTag {
		a.s.ByTag[i].Peak = a.s.ByTag[i].Live
	}
	a.s.Total.Peak = a.s.Total.Live
	a.s.Reserved.Peak = a.s.Reserved.Live
}

// AlignedSize is the number of bytes a buffer of n bytes occupies: WebGPU
// copies and mappings need sizes that are multiples of 4.
func AlignedSize(n int64) int64 { return (n + 3) &^ 3 }

// DType is the storage type of a tensor's elements. Arithmetic is always
// f32; the 16-bit types (f16, bf16) are stored as pairs packed in u32 and
// read with unpack2x16float or shifts, which works on every adapter
// (DESIGN.md, contract 5).
type DType int

const (
	F32 DType = iota
	F16
	BF16
)

func (t DType) String() string {
	switch t {
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	}
	return "f32"
}

// DTypeNames are the names ParseDType accepts, in order.
var DTypeNames = []string{"f32", "f16", "bf16"}

// ParseDType returns the dtype named s (DTypeNames).
func ParseDType(s string) (DType, error) {
	for i, n := range DTypeNames {
		if s == n {
			return DType(i), nil
		}
	}
	return F32, fmt.Errorf("gpu: dtype %q is not one of f32, f16, bf16", s)
}

// Half reports a 16-bit type (f16 or bf16).
func (t DType) Half() bool { return t == F16 || t == BF16 }

// Bytes is the buffer size for n elements: 16-bit pairs share one u32, so
// an odd count is padded by one element.
func (t DType) Bytes(n int) int64 {
	if t.Half() {
		return int64((n+1)/2) * 4
	}
	return int64(n) * 4
}

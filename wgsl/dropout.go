package wgsl

import (
	"fmt"
	"math"

	"github.com/lomo-dev/lomo/gpu"
)

// DropoutParams mirrors Params in dropout.wgsl.
type DropoutParams struct {
	N, Seed, Threshold uint32
	Scale, Beta        float32
	_, _, _            uint32
}

// DropoutThreshold is the hash threshold below which an element is
// dropped with probability p (0 <= p < 1).
func DropoutThreshold(p float64) uint32 {
	return uint32(math.Min(math.Round(p*(1<<32)), math.MaxUint32))
}

// mix32 is the kernel's integer finalizer.
func mix32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x7feb352d
	h ^= h >> 15
	h *= 0x846ca68b
	h ^= h >> 16
	return h
}

// DropoutKeep reports whether the dropout kernel keeps element i for this
// seed and threshold (the host's copy of the mask, for tests and
// references).
func DropoutKeep(seed, threshold uint32, i int) bool {
	return mix32(uint32(i)+mix32(seed)) >= threshold
}

// Dropout records y = scale * keep(i) * x + beta * y over n elements of
// dtype dt, keep(i) being a pure function of (seed, i) with
// P(keep) = 1 - p (DropoutKeep). The forward of dropout with probability p
// is scale = 1/(1-p), beta = 0; its backward is the same call on the
// gradients (beta = 1 to add onto an existing one).
func Dropout(d *gpu.Device, y, x *gpu.Buffer, n int, dt gpu.DType, p float64, seed uint32, scale, beta float32) error {
	if err := checkLen("dropout", n, dt, y, x); err != nil {
		return err
	}
	if !(p >= 0 && p < 1) {
		return fmt.Errorf("wgsl: dropout: probability %v outside [0, 1)", p)
	}
	if err := f16Writable(d, "dropout", "y", dt); err != nil {
		return err
	}
	pr := DropoutParams{N: uint32(n), Seed: seed, Threshold: DropoutThreshold(p), Scale: scale, Beta: beta}
	subst := elementSubst(d, nil, dt, []string{"y"})
	dtypeSubst(d, subst, "XX", "x", dt)
	subst[useHash] = "1"
	k, err := kernel(d, "dropout", dt.String(), subst, []gpu.Access{rw, ro}, pr)
	if err != nil {
		return err
	}
	gx, gy, gz := d.Grid(n, 256)
	return d.Dispatch(k, gpu.Params(pr), []*gpu.Buffer{y, x}, gx, gy, gz)
}
